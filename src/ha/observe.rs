//! Observation: one cycle's [`Snapshot`] — the cluster view read once, the policy, and what this
//! node read of its data directory, its PostgreSQL, its lease, its watchdog and (for a leader race) its peers.
//!
//! I/O lives here (SQL probe, pg_controldata, the watchdog device's file, the peers' race through
//! [`super::peers`]); the
//! conversions are pure.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::candidate;
use super::peers;
use super::publish;
use super::types::DataDir;
use super::types::HaConfig;
use super::types::Observation;
use super::types::PgProcess;
use super::HaLoop;
use crate::dcs::view::ClusterView;
use crate::postgres::controldata::ClusterState as PgClusterState;
use crate::postgres::supervisor::DataDirState;
use crate::postgres::supervisor::Supervisor;
use crate::status::PgState;
use crate::status::PgStatus;
use crate::status::Role;

/// One cycle's snapshot: decide and execute see this view and nothing read later.
pub struct Snapshot {
    /// The cluster view, read once at the start of the cycle.
    pub view: ClusterView,
    /// The policy (dynamic config and tags) for this cycle.
    pub cfg: HaConfig,
    /// What this node observed.
    pub obs: Observation,
}

impl HaLoop {
    /// Reads everything one cycle decides on, against `view`.
    pub(super) async fn observe(&mut self, view: ClusterView) -> Snapshot {
        let now = Instant::now();
        let dcs_ok = self.dcs_ok(now);
        let data_dir = data_dir(&self.pg).await;
        let process = pg_process(&self.pg).await;
        if let Some(primary) = fenced_as_primary(&process) {
            self.is_primary.store(primary, Ordering::SeqCst);
        }
        if let PgProcess::Running(status) = &process {
            self.pg.observed_running(status.role == Role::Primary);
        }
        self.adopt_following(&view, &process).await;
        let cfg = self.ha_config();
        let watchdog = self.settings.watchdog.check(self.timing.ttl);
        self.state.watchdog_failed = !watchdog.allows_leading();
        let race_backoff = self.state.race_backoff.filter(|(until, _)| now < *until).map(|(_, why)| why);
        let racing = race_backoff.is_none() && candidate::races_for_vacant_key(&view, &process, &cfg, dcs_ok);
        let primary_down_for = self.primary_clock(&view, &process, now);
        let primary_start_failed = primary_down_for.is_some()
            && self.state.failing.as_ref().is_some_and(|failing| failing.kind == super::types::ActionKind::Start);
        if racing {
            // Peers racing at the same instant ask us too: they must read this probe, taken after the key
            // went vacant, not the status of our previous cycle (which they would not count as a vote).
            let probed = publish::status_without_probe(&process, &data_dir, PgState::Running);
            let mode = self.dynamic.view().synchronous_mode;
            self.status_tx.send_modify(|status| publish::publish_race_probe(status, probed, &view, dcs_ok, mode));
        }
        let query = peers::PeerQuery {
            http: &self.peer_http,
            timeout: self.timing.retry_timeout.min(peers::PEER_STATUS_TIMEOUT),
            view: &view,
            cfg: &cfg,
        };
        let peers = peers::race_peers(&query, &process, racing).await;
        let obs = Observation {
            data_dir,
            pg: process,
            holds_lease: self.dcs.lease().holds_leader(now),
            leader_key_is_mine: self.dcs.leader_key_is_mine(&view),
            dcs_ok,
            action: None,
            peers,
            following: self.state.following.clone(),
            rewind_failed: self.state.rewind_failed,
            rewind_incomplete: self.pg.rewind_incomplete(),
            race_backoff,
            restore_incomplete: self.pg.restore_incomplete(),
            watchdog_usable: watchdog.allows_leading(),
            primary_down_for,
            primary_start_failed,
        };
        Snapshot { view, cfg, obs }
    }

    /// Moves the `primary_start_timeout` clock on by this cycle's observation and returns how long the key holder's
    /// PostgreSQL has not run as a primary (see `LoopState::primary_seen_at`); the restart's own timeout is
    /// forgotten once the clock stops. Not called while a long action runs: a start or restart in progress keeps
    /// counting from the last cycle that saw the primary.
    fn primary_clock(&mut self, view: &ClusterView, process: &PgProcess, now: Instant) -> Option<std::time::Duration> {
        let holder = view.leader.as_ref().is_some_and(|leader| leader.name == self.settings.name);
        let primary = process.role() == Some(Role::Primary);
        self.state.primary_seen_at = primary_clock(self.state.primary_seen_at, holder, primary, now);
        if !holder || primary {
            self.state.start_timeout_override = None;
        }
        let seen_at = self.state.primary_seen_at.filter(|_| holder && !primary)?;
        Some(now.saturating_duration_since(seen_at))
    }

    /// Once, on the first cycle that sees a running replica and a leader: if this raftgres restarted while
    /// PostgreSQL kept running already configured to follow that leader, note so, and the replica keeps
    /// running (and streaming, and acknowledging synchronous commits) instead of being restarted to follow it.
    async fn adopt_following(&mut self, view: &ClusterView, process: &PgProcess) {
        if self.state.adopted_checked || self.state.following.is_some() {
            return;
        }
        let PgProcess::Running(status) = process else { return };
        let Some(leader) = view.leader.as_ref().filter(|l| l.name != self.settings.name) else { return };
        self.state.adopted_checked = true;
        if status.role != Role::Replica {
            return;
        }
        let Some(target) = super::execute::target_of(view, &leader.name) else { return };
        let slot = crate::postgres::slots::slot_name(&self.settings.name);
        match self.pg.follows(&target, &slot).await {
            Ok(true) => {
                tracing::info!(leader = %leader.name, "the running replica already follows the leader; keeping it running");
                self.state.following = Some(leader.name.clone());
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "could not read the running replica's recovery settings"),
        }
    }
}

/// Reads the data directory through pg_controldata.
pub async fn data_dir(pg: &Supervisor) -> DataDir {
    match pg.data_dir_state().await {
        DataDirState::Missing => DataDir::Empty,
        DataDirState::Invalid(why) => DataDir::Invalid(why),
        // A base backup never started carries its source's pg_control (`in production` when cloned from a
        // primary). Failure scenario without the check: (1) a new replica is cloned; (2) its first start is
        // killed (load, a stop of raftgres) before recovery began; (3) pg_control says `in production`, so the
        // node looks like a crashed old primary and is sent to pg_rewind; (4) pg_rewind's single-user crash
        // recovery refuses `standby.signal`, and the replica never starts. It is a replica to start instead.
        DataDirState::Initialized { controldata, unfinished_backup } => DataDir::Initialized {
            system_id: controldata.system_id,
            was_primary: !unfinished_backup
                && matches!(
                    controldata.state,
                    PgClusterState::InProduction
                        | PgClusterState::ShutDown
                        | PgClusterState::ShuttingDown
                        | PgClusterState::InCrashRecovery
                ),
            timeline: controldata.checkpoint_timeline,
            position: controldata.local_position(),
        },
    }
}

/// Probes the running PostgreSQL.
pub async fn pg_process(pg: &Supervisor) -> PgProcess {
    if !pg.is_running() {
        return PgProcess::Stopped;
    }
    match pg.probe().await {
        Ok(probe) => PgProcess::Running(Box::new(PgStatus::from(probe))),
        Err(e) => {
            tracing::debug!(error = %e, "postgres probe failed");
            if pg.is_starting().await {
                PgProcess::Starting
            } else {
                PgProcess::Unresponsive
            }
        }
    }
}

/// PURE: what one observation says about whether the fence must treat PostgreSQL as a primary: yes or no when it
/// answered or is down, nothing (keep the last answer) when it runs but does not answer or is still starting. A
/// primary whose status probe times out on a loaded host still takes writes; had that observation cleared the
/// flag, a server this process did not start itself (adopted after a restart of raftgres, so
/// `Supervisor::may_accept_writes` is false) would have been neither stopped by the fence nor named in the guard
/// file when its lease ran out.
pub fn fenced_as_primary(process: &PgProcess) -> Option<bool> {
    match process {
        PgProcess::Running(status) => Some(status.role == Role::Primary),
        PgProcess::Stopped => Some(false),
        PgProcess::Unresponsive | PgProcess::Starting => None,
    }
}

/// PURE: the `primary_start_timeout` clock after one observation (`LoopState::primary_seen_at`): reset to `now`
/// whenever PostgreSQL runs as a primary under the key, started at `now` when the key names this member without a
/// primary and the clock is not running, kept while it runs, and dropped when the key names someone else or nobody.
pub fn primary_clock(seen_at: Option<Instant>, holder: bool, primary: bool, now: Instant) -> Option<Instant> {
    match (holder, primary) {
        (false, _) => None,
        (true, true) => Some(now),
        (true, false) => Some(seen_at.unwrap_or(now)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_start_clock_counts_from_the_last_primary_seen_and_resets_when_it_runs_again() {
        let t0 = Instant::now();
        let later = |secs| t0 + Duration::from_secs(secs);
        // Running as a primary under the key: the clock follows it.
        assert_eq!(primary_clock(None, true, true, t0), Some(t0));
        // Crashed: the clock keeps the last instant the primary ran, through failed starts.
        assert_eq!(primary_clock(Some(t0), true, false, later(5)), Some(t0));
        assert_eq!(primary_clock(Some(t0), true, false, later(9)), Some(t0));
        // Seen running again: it starts over.
        assert_eq!(primary_clock(Some(t0), true, true, later(10)), Some(later(10)));
        // Holding the key without ever seeing a primary (a new process, a promotion): counts from now.
        assert_eq!(primary_clock(None, true, false, later(3)), Some(later(3)));
        // The key names another member or nobody: no clock.
        assert_eq!(primary_clock(Some(t0), false, false, later(3)), None);
        assert_eq!(primary_clock(Some(t0), false, true, later(3)), None);
    }

    #[test]
    fn a_primary_that_does_not_answer_stays_fenced_as_a_primary() {
        let running = |role| PgProcess::Running(Box::new(crate::status::PgStatus { role, ..Default::default() }));
        assert_eq!(fenced_as_primary(&running(Role::Primary)), Some(true));
        assert_eq!(fenced_as_primary(&running(Role::Replica)), Some(false));
        assert_eq!(fenced_as_primary(&PgProcess::Stopped), Some(false));
        // A probe that timed out or a server still starting leaves the last answer in place.
        assert_eq!(fenced_as_primary(&PgProcess::Unresponsive), None);
        assert_eq!(fenced_as_primary(&PgProcess::Starting), None);
    }
}
