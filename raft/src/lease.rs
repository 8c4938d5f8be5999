//! Leases that cannot overlap: the holder's view of its own lease, and the Raft leader's lease
//! keeper that expires sessions.
//!
//! Holder side: a lease is valid until the *send* time of its last successful renewal plus the
//! TTL minus a safety margin ([`HolderLease`]), on the holder's monotonic clock.
//! Keeper side: only the current Raft leader expires sessions, on its own monotonic clock, by
//! proposing a conditional `ExpireSession`. Every deadline it derives from a renewal is at least
//! `apply-observed time + ttl`, which is later than the holder's `send time + ttl - margin`, so
//! the holder always knows it lost the lease before anyone else can take it. Every node, leader
//! or follower, notes when it saw each renewal applied; after a Raft leader change the new
//! keeper keeps those deadlines (strict mode: a renewal is applied after it was sent, so this
//! needs no clock sync; a session it never saw renewed gets a full TTL from now), or uses the
//! stamped remaining time plus the configured clock skew (stamped mode).
//! This module must not read PostgreSQL state or decide anything about promotion.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use openraft::ServerState;
use tokio::time::Instant;
use tracing::debug;
use tracing::info;
use tracing::warn;

use crate::command::Command;
use crate::command::ExpiryRecord;
use crate::command::SessionId;
use crate::config::LeaseMode;
use crate::node::Inner;
use crate::state::ClusterState;

/// The holder's safety margin: renewals must succeed this long before the keeper could expire.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(500))
}

/// The longest Raft outage a lease holder is sure to ride out when it renews every
/// `renew_every`: its lease holds `ttl - margin` after the send of its last successful renewal,
/// and that renewal may be up to `renew_every` old when the outage begins. A renewal must commit
/// through a Raft leader within this window, or the holder fences itself.
pub fn survivable_outage(ttl: Duration, renew_every: Duration) -> Duration {
    ttl.saturating_sub(margin(ttl)).saturating_sub(renew_every)
}

/// The longest a cluster goes without a Raft leader after losing it (no split vote): openraft's
/// followers wait out its leader lease (`election_timeout_max`) plus a randomized election
/// timeout (below `election_timeout_max`) after the last heartbeat, then run one vote round and
/// commit a first entry (bounded by `heartbeat_interval`, the RPC timeout). A split vote adds
/// another election timeout.
pub fn longest_election(heartbeat_interval: Duration, election_timeout_max: Duration) -> Duration {
    election_timeout_max * 2 + heartbeat_interval
}

/// Milliseconds since the epoch on this node's wall clock (stamps only; never for safety).
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What this node knows about its own session and leader lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HolderLease {
    /// The session is alive at least until then (own monotonic clock).
    pub session_valid_until: Option<Instant>,
    /// This node holds the `leader` key at least until then.
    pub leader_valid_until: Option<Instant>,
    /// No other node can take the `leader` key before then: the send time of the last successful renewal plus
    /// `ttl` in strict mode (the keeper expires a session no earlier than `ttl` after it applied the renewal,
    /// which came after the send), `leader_valid_until` in stamped mode (where clock skew eats into the margin).
    /// Later than `leader_valid_until` by the margin in strict mode: a host watchdog fed up to here fires only
    /// after the fence had its chance to stop PostgreSQL at `leader_valid_until`.
    pub leader_expiry_floor: Option<Instant>,
    /// Create revision of the `leader` key while we hold it, as our last write of it reported it
    /// (`CommandResult::Applied::create_rev`): the fencing token.
    pub fencing_token: Option<u64>,
    /// How many times this node gave its lease up (a release of the key, a revocation of the session). A lease write
    /// whose answer comes back after a release that began while it was in flight leaves the lease given up: its
    /// answer may be older than the release, and a holder that believes it still leads would answer `/primary`
    /// and feed the watchdog on a key it already deleted.
    pub releases: u64,
}

impl HolderLease {
    /// True while the leader lease is valid at `now`.
    pub fn holds_leader(&self, now: Instant) -> bool {
        self.leader_valid_until.is_some_and(|until| now < until)
    }

    /// Time left on the leader lease at `now` (zero when not held).
    pub fn leader_remaining(&self, now: Instant) -> Duration {
        self.leader_valid_until.map(|until| until.saturating_duration_since(now)).unwrap_or_default()
    }
}

/// Keeper bookkeeping for one session.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    renewed_rev: u64,
    proposed_at: Option<Instant>,
}

/// Deadline for a session when a keeper takes over.
///
/// `observed` is the deadline this node derived from the last renewal it saw applied (as a
/// follower or in an earlier term): that renewal was sent before it was applied here, so
/// `applied + ttl` is later than the holder's own `sent + ttl - margin` and needs no clock sync,
/// only clocks that advance at the same rate — the assumption strict mode always made.
fn takeover_deadline(
    mode: LeaseMode,
    now: Instant,
    wall_now_ms: u64,
    renewed_stamp_ms: u64,
    ttl: Duration,
    observed: Option<Instant>,
) -> Instant {
    match mode {
        LeaseMode::Strict => observed.map_or(now + ttl, |at| at.min(now + ttl)),
        LeaseMode::Stamped { max_clock_skew_ms } => {
            let ttl_ms = ttl.as_millis() as u64;
            let remaining_ms = (renewed_stamp_ms + ttl_ms).saturating_sub(wall_now_ms).min(ttl_ms);
            now + Duration::from_millis(remaining_ms + max_clock_skew_ms)
        }
    }
}

/// Runs the lease keeper until `inner` is cancelled. On every node it notes when each session's
/// latest renewal was applied locally; while this node is the Raft leader it also expires
/// overdue sessions.
pub(crate) async fn run_keeper(inner: Arc<Inner>) {
    let cancel = inner.cancel_token();
    let mut metrics = inner.raft().metrics();
    let mut view = inner.subscribe();
    let mut seen: HashMap<SessionId, Deadline> = HashMap::new();
    let state = view.borrow_and_update().clone();
    observe(&mut seen, &state, Instant::now());
    loop {
        let leading_term = {
            let m = metrics.borrow_and_update();
            (m.state == ServerState::Leader).then_some(m.current_term)
        };
        let Some(term) = leading_term else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
                changed = view.changed() => {
                    if changed.is_err() { return; }
                    let state = view.borrow_and_update().clone();
                    observe(&mut seen, &state, Instant::now());
                }
            }
            continue;
        };
        // Our state machine must include every entry committed by earlier leaders before we
        // trust its sessions: ensure_linearizable commits a blank entry of our term and waits.
        // Renewals applied meanwhile are observed afterwards, later than they happened: safe.
        let confirm = tokio::time::timeout(inner.config().election_timeout_max * 2, inner.raft().ensure_linearizable());
        match tokio::select! { _ = cancel.cancelled() => return, res = confirm => res } {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "lease keeper: leadership not confirmed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(_) => continue,
        }
        info!(term, "lease keeper active");
        keep_leases(&inner, term, &mut seen, &mut view).await;
        info!(term, "lease keeper stopped");
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// Tracks deadlines while this node leads `term`, starting from the renewals it has `seen`.
async fn keep_leases(
    inner: &Arc<Inner>,
    term: u64,
    seen: &mut HashMap<SessionId, Deadline>,
    view: &mut tokio::sync::watch::Receiver<Arc<ClusterState>>,
) {
    let cancel = inner.cancel_token();
    let mode = inner.config().lease_mode;
    let mut metrics = inner.raft().metrics();
    let now = Instant::now();
    let state = view.borrow_and_update().clone();
    observe(seen, &state, now);
    let wall = wall_ms();
    for (id, session) in state.sessions.iter() {
        let ttl = Duration::from_millis(session.ttl_ms);
        let observed = seen.get(id).filter(|d| d.renewed_rev == session.renewed_rev).map(|d| d.at);
        let at = takeover_deadline(mode, now, wall, session.renewed_stamp_ms, ttl, observed);
        seen.insert(*id, Deadline { at, renewed_rev: session.renewed_rev, proposed_at: None });
    }
    let deadlines = seen;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = metrics.changed() => {
                if changed.is_err() { return; }
                let m = metrics.borrow_and_update();
                if m.state != ServerState::Leader || m.current_term != term { return; }
            }
            changed = view.changed() => {
                if changed.is_err() { return; }
                let state = view.borrow_and_update().clone();
                observe(deadlines, &state, Instant::now());
            }
            _ = tick.tick() => {
                if !expire_overdue(inner, deadlines).await { return; }
            }
        }
    }
}

/// Pushes deadlines for renewed or new sessions and forgets vanished ones.
fn observe(deadlines: &mut HashMap<SessionId, Deadline>, state: &ClusterState, now: Instant) {
    deadlines.retain(|id, _| state.sessions.contains_key(id));
    for (id, session) in state.sessions.iter() {
        let ttl = Duration::from_millis(session.ttl_ms);
        match deadlines.get_mut(id) {
            Some(d) if session.renewed_rev > d.renewed_rev => {
                *d = Deadline { at: now + ttl, renewed_rev: session.renewed_rev, proposed_at: None };
            }
            Some(_) => {}
            None => {
                deadlines.insert(*id, Deadline { at: now + ttl, renewed_rev: session.renewed_rev, proposed_at: None });
            }
        }
    }
}

/// Proposes expiry of overdue sessions; returns false when this node is no longer leader.
async fn expire_overdue(inner: &Arc<Inner>, deadlines: &mut HashMap<SessionId, Deadline>) -> bool {
    let now = Instant::now();
    let retry_after = inner.config().election_timeout_max;
    let overdue: Vec<(SessionId, u64)> = deadlines
        .iter()
        .filter(|(_, d)| d.at <= now && d.proposed_at.is_none_or(|p| now.duration_since(p) > retry_after))
        .map(|(id, d)| (*id, d.renewed_rev))
        .collect();
    for (session, expected_renewed_rev) in overdue {
        if let Some(d) = deadlines.get_mut(&session) {
            d.proposed_at = Some(now);
        }
        let owner = inner.view().sessions.get(&session).map(|s| s.owner.clone()).unwrap_or_default();
        info!(%session, owner, expected_renewed_rev, "session deadline passed on the raft leader; expiring it");
        let cmd = expire_command(session, expected_renewed_rev, inner.config().expiry_record.clone());
        match inner.propose_as_keeper(cmd, retry_after).await {
            Ok(res) => debug!(%session, ?res, "expire proposed"),
            Err(crate::RaftError::NotLeader { .. }) => return false,
            Err(e) => warn!(%session, error = %e, "expire not committed yet; will retry"),
        }
    }
    true
}

/// PURE: the command that expires `session`. When the record is the one [`Command::ExpireSession`] implies, that
/// older command is proposed: it applies identically (the record's holder field is read under both names), and
/// a node of the previous version, which cannot decode [`Command::Expire`], keeps applying the log during a
/// rolling upgrade.
pub(crate) fn expire_command(session: SessionId, expected_renewed_rev: u64, record: Option<ExpiryRecord>) -> Command {
    let legacy = crate::state::LEGACY_EXPIRY_RECORD;
    match record {
        Some(r) if r.held_key == legacy.0 && r.record_key == legacy.1 => {
            Command::ExpireSession { session, expected_renewed_rev }
        }
        record => Command::Expire { session, expected_renewed_rev, record },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_records_expiry_keeps_the_command_older_nodes_decode() {
        let session = SessionId(7);
        let record = |held: &str, key: &str| Some(ExpiryRecord { held_key: held.into(), record_key: key.into() });
        assert_eq!(
            expire_command(session, 3, record("leader", "last_leader_expiry")),
            Command::ExpireSession { session, expected_renewed_rev: 3 }
        );
        let other = record("lock", "lock_expiry");
        assert_eq!(
            expire_command(session, 3, other.clone()),
            Command::Expire { session, expected_renewed_rev: 3, record: other }
        );
        assert_eq!(
            expire_command(session, 3, None),
            Command::Expire { session, expected_renewed_rev: 3, record: None }
        );
    }

    #[track_caller]
    fn check(mode: LeaseMode, renewed_stamp_ms: u64, wall_now_ms: u64, want_ms: u64) {
        let now = Instant::now();
        let at = takeover_deadline(mode, now, wall_now_ms, renewed_stamp_ms, Duration::from_secs(5), None);
        assert_eq!(at.duration_since(now), Duration::from_millis(want_ms));
    }

    #[test]
    fn strict_takeover_without_an_observed_renewal_grants_a_full_ttl() {
        check(LeaseMode::Strict, 0, 1_000_000, 5000);
    }

    #[test]
    fn strict_takeover_keeps_the_deadline_of_a_renewal_seen_as_follower() {
        let now = Instant::now();
        let seen = now + Duration::from_millis(1200);
        let at = takeover_deadline(LeaseMode::Strict, now, 0, 0, Duration::from_secs(5), Some(seen));
        assert_eq!(at, seen, "applied 3.8 s ago: 1.2 s left, not a fresh ttl");
        let past = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let at = takeover_deadline(LeaseMode::Strict, now, 0, 0, Duration::from_secs(5), Some(past));
        assert_eq!(at, past, "an overdue session is expired at once");
    }

    #[test]
    fn observe_restarts_the_deadline_only_on_a_newer_renewal() {
        use crate::state::Session;
        let t0 = Instant::now();
        let mut state = ClusterState::default();
        let session =
            Session { node: 1, owner: "pg1".into(), ttl_ms: 5000, granted_rev: 7, renewed_rev: 7, renewed_stamp_ms: 0 };
        state.sessions.insert(SessionId(1), session);
        let mut seen = HashMap::new();
        observe(&mut seen, &state, t0);
        let later = t0 + Duration::from_secs(2);
        observe(&mut seen, &state, later);
        assert_eq!(seen[&SessionId(1)].at, t0 + Duration::from_secs(5), "same renewal: deadline unchanged");
        if let Some(s) = state.sessions.get_mut(&SessionId(1)) {
            s.renewed_rev = 8;
        }
        observe(&mut seen, &state, later);
        assert_eq!(seen[&SessionId(1)].at, later + Duration::from_secs(5));
        state.sessions.clear();
        observe(&mut seen, &state, later);
        assert!(seen.is_empty(), "vanished sessions are forgotten");
    }

    #[test]
    fn stamped_takeover_carries_the_remaining_time_plus_skew() {
        check(LeaseMode::Stamped { max_clock_skew_ms: 500 }, 10_000, 12_000, 3500);
    }

    #[test]
    fn stamped_takeover_of_an_overdue_session_still_waits_the_skew() {
        check(LeaseMode::Stamped { max_clock_skew_ms: 500 }, 10_000, 99_000, 500);
    }

    #[test]
    fn stamped_takeover_never_exceeds_ttl_plus_skew() {
        check(LeaseMode::Stamped { max_clock_skew_ms: 500 }, 50_000, 10_000, 5500);
    }

    #[test]
    fn the_defaults_survive_the_longest_election() {
        let outage = survivable_outage(Duration::from_secs(3), Duration::from_secs(1));
        assert_eq!(outage, Duration::from_millis(1500));
        let election = longest_election(Duration::from_millis(100), Duration::from_millis(600));
        assert!(election < outage, "{election:?} >= {outage:?}");
        assert_eq!(survivable_outage(Duration::from_secs(1), Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn margin_is_a_tenth_of_ttl_but_at_least_half_a_second() {
        assert_eq!(margin(Duration::from_secs(5)), Duration::from_millis(500));
        assert_eq!(margin(Duration::from_secs(30)), Duration::from_secs(3));
    }
}
