//! Raft leadership hand-over, built from what openraft 0.9 offers (its `transfer_leader` arrives
//! only in the 0.10 line), and the task that keeps leadership on the node owning a chosen key.
//!
//! Why the placement matters: the owner of the `leader` key renews its lease through the Raft
//! leader. When another node leads Raft and stops or dies, followers wait out openraft's leader
//! lease plus an election timeout (1.5–2 s at the defaults, more on a loaded host) before anyone
//! campaigns, and the key owner's lease, good for `ttl - margin` after its last renewal, may run
//! out first: the fence then stops a healthy primary. With leadership on the key owner's node,
//! losing any other node costs no election at all, and renewals commit locally.
//!
//! How a hand-over works (leader L to target T):
//! 1. L waits until it has led for longer than openraft's leader lease (`election_timeout_max`).
//!    openraft refuses a vote request while the receiver's committed vote is younger than that
//!    lease; on a leader the vote was last touched when it was elected, so after the lease L
//!    itself grants a vote to a candidate whose log is at least as long as its own.
//! 2. L waits until T has caught up once (so an unreachable T never stalls writes), then closes its
//!    write gate: new writes wait, writes in flight finish (or the hand-over gives up).
//! 3. L waits until T's matched log index equals its own last index, so T's log is as long as L's.
//! 4. L asks T (`POST /raft/elect`, mutual TLS) to campaign; T checks the request comes from the
//!    leader it follows and that its log has caught up, then calls `trigger().elect()`.
//! 5. T's vote request reaches L, which grants it (step 1) and steps down; with its own vote T has
//!    a quorum of three, wins the term and replicates its first entry. L waits until it sees T as
//!    leader, then opens the gate; the waiting writes find L a follower and go to T.
//!
//! Safety is Raft's own: T wins only with a quorum of votes for an up-to-date log, and nothing here
//! bypasses openraft's checks. What can go wrong is liveness: if L appended after step 3 or its
//! lease had not run out, T's campaign fails, its higher term makes L step down, and the cluster
//! elects again after one uncommitted-vote election timeout. Every step is bounded, the gate stays
//! shut for at most [`GATE_BUDGET`], and a failed hand-over is retried with a growing pause.
//! This module must not know what the key means: the caller names it.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use serde::Deserialize;
use serde::Serialize;
use tokio::time::Instant;
use tracing::debug;
use tracing::info;
use tracing::warn;

use super::Inner;
use crate::error::RaftError;
use crate::network::ForwardError;
use crate::state::ClusterState;
use crate::typ::RaftMetrics;
use crate::NodeId;

/// The longest the write gate stays shut during one hand-over.
pub const GATE_BUDGET: Duration = Duration::from_millis(1000);
/// First pause after a failed hand-over; it doubles up to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause between hand-over attempts.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(30);

/// Body of `POST /raft/elect`: the leader's last log index, which the target must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectRequest {
    /// Index of the leader's last log entry when it asked.
    pub leader_last_index: u64,
}

/// Answer of `POST /raft/elect`.
pub type ElectReply = Result<(), ForwardError>;

/// Hand-over bookkeeping shared by the writers, the hand-over and the placement task.
#[derive(Default)]
pub(crate) struct Handover {
    /// Writes hold it shared while they propose; a hand-over holds it exclusively.
    gate: tokio::sync::RwLock<()>,
    /// One hand-over at a time (the placement task and shutdown may both want one).
    running: tokio::sync::Mutex<()>,
    /// The term this node leads and when it first saw itself leading it.
    leading_since: std::sync::Mutex<Option<(u64, Instant)>>,
}

impl Handover {
    /// Waits until no hand-over holds the gate; the guard keeps one from starting.
    pub(crate) async fn open(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Notes leadership from a metrics update.
    fn note(&self, metrics: &RaftMetrics) {
        let mut since = self.leading_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match (metrics.state, *since) {
            (ServerState::Leader, Some((term, _))) if term == metrics.current_term => {}
            (ServerState::Leader, _) => *since = Some((metrics.current_term, Instant::now())),
            _ => *since = None,
        }
    }

    fn leading_since(&self, term: u64) -> Option<Instant> {
        let since = *self.leading_since.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        since.filter(|(t, _)| *t == term).map(|(_, at)| at)
    }
}

/// The node whose session owns `key` in `state`, if any.
pub fn key_owner(state: &ClusterState, key: &str) -> Option<NodeId> {
    let session = state.get(key)?.session?;
    state.sessions.get(&session).map(|s| s.node)
}

/// Where leadership should go from `me`, given metrics and the state: the owner of `key` when it
/// is another voter and this node leads. PURE.
pub fn wanted_leader(metrics: &RaftMetrics, state: &ClusterState, key: &str) -> Option<NodeId> {
    if metrics.state != ServerState::Leader {
        return None;
    }
    let owner = key_owner(state, key)?;
    let is_voter = metrics.membership_config.membership().voter_ids().any(|id| id == owner);
    (owner != metrics.id && is_voter).then_some(owner)
}

/// The voter other than `me` whose log is longest, from the leader's replication progress. PURE.
pub fn best_successor(metrics: &RaftMetrics) -> Option<NodeId> {
    let replication = metrics.replication.as_ref()?;
    let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
    voters
        .into_iter()
        .filter(|id| *id != metrics.id)
        .max_by_key(|id| replication.get(id).copied().flatten().map(|log_id| log_id.index))
}

impl Inner {
    /// Hands Raft leadership to `target` (steps 1–5 of the module doc) within `timeout`.
    pub(crate) async fn transfer_leadership(&self, target: NodeId, timeout: Duration) -> Result<(), RaftError> {
        let _one_at_a_time = self.handover.running.lock().await;
        let deadline = Instant::now() + timeout;
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            return Err(RaftError::NotLeader { leader_hint: self.leader_hint() });
        }
        if target == self.cfg.node_id {
            return Ok(());
        }
        if !metrics.membership_config.membership().voter_ids().any(|id| id == target) {
            return Err(RaftError::Protocol(format!("node {target} is not a voter; leadership goes to voters only")));
        }
        // Step 1: our vote must be older than openraft's leader lease, or we refuse the target's vote.
        let since = self.handover.leading_since(metrics.current_term).unwrap_or_else(Instant::now);
        let lease_over = since + self.cfg.election_timeout_max + self.cfg.heartbeat_interval;
        if lease_over > deadline {
            return Err(RaftError::Unavailable(format!(
                "leading for less than raft.election_timeout_max ({:?}); hand-over not possible within {timeout:?}",
                self.cfg.election_timeout_max
            )));
        }
        tokio::time::sleep_until(lease_over).await;
        // Before shutting anyone out: a target that is not keeping up (or not reachable) fails
        // here, without stalling writes.
        self.caught_up(target, deadline).await?;
        // Step 2: close the gate, bounded so that writes never wait longer than GATE_BUDGET.
        let gate_deadline = (Instant::now() + GATE_BUDGET).min(deadline);
        let Ok(_closed) = tokio::time::timeout_at(gate_deadline, self.handover.gate.write()).await else {
            return Err(RaftError::Unavailable("writes still in flight; hand-over postponed".into()));
        };
        let last_index = self.caught_up(target, gate_deadline).await?;
        self.ask_to_campaign(target, last_index, gate_deadline).await?;
        self.wait_leader_is(target, gate_deadline).await
    }

    /// Step 3: waits until `target` has our whole log; returns our last index.
    async fn caught_up(&self, target: NodeId, deadline: Instant) -> Result<u64, RaftError> {
        let mut metrics = self.raft.metrics();
        loop {
            let (last, matched, leading) = {
                let m = metrics.borrow_and_update();
                let matched = m.replication.as_ref().and_then(|r| r.get(&target).copied().flatten()).map(|l| l.index);
                (m.last_log_index.unwrap_or(0), matched, m.state == ServerState::Leader)
            };
            if !leading {
                return Err(RaftError::NotLeader { leader_hint: self.leader_hint() });
            }
            if matched == Some(last) {
                return Ok(last);
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(RaftError::Stopped("raft metrics closed".into())),
                Err(_) => {
                    return Err(RaftError::Unavailable(format!(
                        "node {target} did not catch up with the log (matched {matched:?}, last {last}) in time"
                    )))
                }
            }
        }
    }

    /// Step 4: asks `target` to campaign now.
    async fn ask_to_campaign(&self, target: NodeId, last_index: u64, deadline: Instant) -> Result<(), RaftError> {
        let metrics = self.raft.metrics().borrow().clone();
        let node = metrics
            .membership_config
            .membership()
            .get_node(&target)
            .cloned()
            .ok_or_else(|| RaftError::Protocol(format!("node {target} has no address in the membership")))?;
        let addr = self.addr_of(target, &node);
        let request = ElectRequest { leader_last_index: last_index };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match self.client.call::<_, ElectReply>(target, &addr, "/raft/elect", request, remaining).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RaftError::Unavailable(format!("node {target} refused to campaign: {e}"))),
            Err(e) => Err(RaftError::Unavailable(format!("ask node {target} to campaign: {e}"))),
        }
    }

    /// Step 5: waits until this node sees `target` lead.
    async fn wait_leader_is(&self, target: NodeId, deadline: Instant) -> Result<(), RaftError> {
        let mut metrics = self.raft.metrics();
        loop {
            if metrics.borrow_and_update().current_leader == Some(target) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(RaftError::Stopped("raft metrics closed".into())),
                Err(_) => {
                    return Err(RaftError::Unavailable(format!("node {target} did not win the election in time")))
                }
            }
        }
    }

    /// `POST /raft/elect` on the target: campaign at once when the leader we follow asks and our
    /// log has everything it had.
    pub(crate) async fn serve_elect(&self, from: NodeId, request: ElectRequest) -> ElectReply {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(from) {
            return Err(ForwardError::Refused(format!(
                "node {from} asked for a campaign but this node follows {:?}",
                metrics.current_leader
            )));
        }
        if !metrics.membership_config.membership().voter_ids().any(|id| id == self.cfg.node_id) {
            return Err(ForwardError::Refused("this node is not a voter".into()));
        }
        let last = metrics.last_log_index.unwrap_or(0);
        if last < request.leader_last_index {
            return Err(ForwardError::Refused(format!(
                "log not caught up: last index {last}, leader has {}",
                request.leader_last_index
            )));
        }
        info!(from, term = metrics.current_term, "raft leader hands leadership over; campaigning");
        self.raft.trigger().elect().await.map_err(|e| ForwardError::Unavailable(format!("trigger election: {e}")))
    }

    /// Before a clean stop: hand leadership to the owner of the followed key, else to the voter
    /// with the longest log, so the others need no election. Best effort, bounded.
    pub(crate) async fn hand_over_before_stop(&self) {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            return;
        }
        let owner =
            self.cfg.leadership_follows_key.as_deref().and_then(|key| wanted_leader(&metrics, &self.view(), key));
        let Some(target) = owner.or_else(|| best_successor(&metrics)) else { return };
        let budget = self.cfg.election_timeout_max * 2 + GATE_BUDGET;
        match self.transfer_leadership(target, budget).await {
            Ok(()) => info!(to = target, "handed raft leadership over before stopping"),
            Err(e) => {
                warn!(to = target, error = %e, "could not hand raft leadership over before stopping; the others elect a leader")
            }
        }
    }
}

/// Runs until `inner` is cancelled: notes when this node started leading, and while it leads,
/// hands leadership to the owner of `raft.leadership_follows_key` when that is another voter.
pub(crate) async fn run_placement(inner: Arc<Inner>) {
    let cancel = inner.cancel_token();
    let mut metrics = inner.raft().metrics();
    let mut view = inner.subscribe();
    let mut retry_at: Option<Instant> = None;
    let mut pause = FIRST_RETRY_PAUSE;
    loop {
        let snapshot = metrics.borrow_and_update().clone();
        inner.handover.note(&snapshot);
        let state = view.borrow_and_update().clone();
        let wanted =
            inner.config().leadership_follows_key.as_deref().and_then(|key| wanted_leader(&snapshot, &state, key));
        let due = retry_at.is_none_or(|at| Instant::now() >= at);
        if let (Some(target), true) = (wanted, due) {
            let budget = inner.config().election_timeout_max * 2 + GATE_BUDGET;
            match inner.transfer_leadership(target, budget).await {
                Ok(()) => {
                    info!(to = target, "raft leadership handed to the leader key's owner");
                    (retry_at, pause) = (None, FIRST_RETRY_PAUSE);
                }
                Err(RaftError::NotLeader { .. }) => debug!("no longer the raft leader; nothing to hand over"),
                Err(e) => {
                    warn!(to = target, error = %e, retry_in = ?pause, "raft leadership hand-over failed");
                    retry_at = Some(Instant::now() + pause);
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
            }
            continue;
        }
        let retry = async {
            match retry_at.filter(|_| wanted.is_some()) {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            changed = view.changed() => if changed.is_err() { return },
            _ = retry => {}
        }
    }
}
