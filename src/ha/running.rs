//! A long action in progress: what the loop keeps of it ([`Running`]), what it reports back
//! ([`ActionOutcome`]), and the two things the loop does about it, finishing it
//! ([`HaLoop::finish_action`]) and keeping the lease and the member key alive while it runs
//! ([`HaLoop::renew_during_action`]).
//!
//! The actions themselves live in [`super::long`].

use std::time::SystemTime;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::info;
use tracing::warn;

use super::requests::Refusal;
use super::requests::Reply;
use super::retry::Failing;
use super::types::ActionKind;
use super::types::Reason;
use super::HaLoop;
use crate::dcs::view::ClusterView;

/// A long action running in the background.
pub(super) struct Running {
    /// What it is.
    pub kind: ActionKind,
    /// Its task.
    pub handle: JoinHandle<ActionOutcome>,
    /// The API request waiting for this action to finish, if any.
    pub reply: Option<Reply>,
}

/// Whom PostgreSQL follows after an action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Following {
    /// The action did not change it.
    #[default]
    Unchanged,
    /// PostgreSQL follows nobody (a primary, a standalone standby, stopped).
    Nobody,
    /// PostgreSQL is configured to follow this member.
    Member(String),
}

impl Following {
    /// Applies the change to the loop's record of whom PostgreSQL follows.
    pub fn apply(self, following: &mut Option<String>) {
        match self {
            Following::Unchanged => {}
            Following::Nobody => *following = None,
            Following::Member(name) => *following = Some(name),
        }
    }
}

/// What a long action reports back to the loop.
#[derive(Debug, Clone, Default)]
pub struct ActionOutcome {
    /// Whom PostgreSQL follows now.
    pub following: Following,
    /// Rewind from the current leader failed.
    pub rewind_failed: bool,
    /// The action failed; the text is reported to a waiting API request.
    pub failed: Option<String>,
    /// The `pre_promote` script refused this promotion and the leader key was released.
    pub pre_promote_failed: bool,
    /// The action did not run (another node won the `initialize` race): neither a success nor a failure.
    pub skipped: bool,
    /// A promotion whose `history` line could not be written (the store did not answer in time): the loop writes
    /// it on a later cycle while this node holds the key.
    pub unrecorded_history: Option<(crate::dcs::view::HistoryLine, crate::dcs::view::FailoverTimeline)>,
}

impl HaLoop {
    /// Takes the finished action's outcome into the loop's state and answers a waiting request.
    pub(super) fn finish_action(&mut self, joined: Result<ActionOutcome, tokio::task::JoinError>) {
        let Some(running) = self.state.running.take() else { return };
        let answer = match joined {
            Ok(outcome) => {
                if !outcome.skipped {
                    self.record_attempt(running.kind, outcome.failed.as_deref());
                }
                outcome.following.apply(&mut self.state.following);
                if outcome.unrecorded_history.is_some() {
                    self.state.unrecorded_history = outcome.unrecorded_history.clone();
                }
                self.state.rewind_failed = outcome.rewind_failed;
                self.state.rewind_failed_at = outcome.rewind_failed.then(Instant::now);
                if outcome.pre_promote_failed {
                    let until = Instant::now() + self.timing.ttl;
                    self.state.race_backoff = Some((until, super::types::RaceBackoff::PrePromoteFailed));
                }
                info!(action = running.kind.describe(), "long action finished");
                outcome.failed.map_or_else(|| Ok("restarted successfully".to_string()), |e| Err(Refusal::Failed(e)))
            }
            Err(e) => {
                warn!(action = running.kind.describe(), error = %e, "long action task failed");
                Err(Refusal::Failed(format!("{} failed", running.kind.describe())))
            }
        };
        if let Some(reply) = running.reply {
            let _ = reply.send(answer);
        }
    }

    /// Keeps the failure of a retried action (bootstrap, clone, start, rewind) so the next attempt waits; the
    /// first success of any of them clears it.
    fn record_attempt(&mut self, kind: ActionKind, failed: Option<&str>) {
        if !matches!(kind, ActionKind::Bootstrap | ActionKind::Clone | ActionKind::Start | ActionKind::Rewind) {
            return;
        }
        match failed {
            Some(error) => {
                let failing = Failing::after(
                    self.state.failing.as_ref(),
                    kind,
                    error.to_string(),
                    Instant::now(),
                    SystemTime::now(),
                );
                let pause = failing.retry_at.saturating_duration_since(Instant::now());
                warn!(
                    action = kind.describe(),
                    attempts = failing.attempts,
                    retry_in_s = pause.as_secs(),
                    error,
                    "long action failed; retrying after a pause"
                );
                self.state.failing = Some(failing);
            }
            None => {
                if let Some(previous) = self.state.failing.take() {
                    info!(
                        action = kind.describe(),
                        after = previous.kind.describe(),
                        attempts = previous.attempts,
                        "long action succeeded after failures"
                    );
                }
            }
        }
    }

    /// One cycle while a long action runs: renew the lease when we hold the key (else keep the
    /// member key alive), publish the sentence.
    pub(super) async fn renew_during_action(&mut self, view: &ClusterView, kind: ActionKind) {
        let pg_status = self.status_tx.borrow().pg.clone();
        let reason = if self.dcs.leader_key_is_mine(view) {
            let member = self.settings.member_data(&pg_status, self.dynamic.view().pause);
            let lease_left = self.dcs.lease().leader_remaining(Instant::now());
            let timeout = self.timing.renewal_timeout(lease_left);
            match self.dcs.renew_leader(&member, None, self.timing.ttl, timeout).await {
                Ok(true) => {
                    self.state.last_dcs_ok = Some(Instant::now());
                    self.state.last_dcs_seen_wall = Some(SystemTime::now());
                }
                Ok(false) => warn!(action = kind.describe(), "lost the leader lock during a long action"),
                Err(e) => {
                    warn!(action = kind.describe(), error = %e, "leader lock renewal during a long action failed")
                }
            }
            Reason::InProgressRenewing(kind)
        } else {
            // Keep our session and member key alive through a long action (a clone, a rewind
            // and restart): without them the primary would take us for gone and drop our
            // replication slot, and the replica we are starting could not stream.
            self.touch_member(&pg_status).await;
            Reason::InProgress(kind)
        };
        let sentence = reason.to_string();
        if sentence != self.state.last_reason {
            info!(reason = %sentence, "ha decision");
            self.state.last_reason = sentence.clone();
        }
        let lease = self.dcs.lease();
        let loop_wait = self.timing.loop_wait;
        // A clone or a rewind is when a disk fills up: keep the filesystem metrics current through it.
        let filesystems = self.disk.latest().to_vec();
        self.status_tx.send_modify(|status| {
            status.reason = sentence;
            status.leader_until = lease.leader_valid_until;
            status.fencing_token = lease.fencing_token;
            status.next_cycle_at = Instant::now() + loop_wait;
            status.filesystems = filesystems;
        });
    }
}
