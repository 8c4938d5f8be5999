//! Leases that cannot overlap: the holder's view of its own lease, and the Raft leader's lease
//! keeper that expires sessions.
//!
//! Holder side: a lease is valid until the *send* time of its last successful renewal plus the
//! TTL minus a safety margin ([`HolderLease`]), on the holder's monotonic clock.
//! Keeper side: only the current Raft leader expires sessions, on its own monotonic clock, by
//! proposing a conditional `ExpireSession`. Every deadline it derives from a renewal is at least
//! `apply-observed time + ttl`, which is later than the holder's `send time + ttl - margin`, so
//! the holder always knows it lost the lease before anyone else can take it. After a Raft
//! leader change the new keeper grants every session a full TTL (strict mode) or the stamped
//! remaining time plus the configured clock skew (stamped mode).
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
use crate::command::SessionId;
use crate::config::LeaseMode;
use crate::node::Inner;
use crate::state::ClusterState;

/// The holder's safety margin: renewals must succeed this long before the keeper could expire.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(500))
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
    /// Create revision of the `leader` key while we hold it: the fencing token.
    pub fencing_token: Option<u64>,
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
fn takeover_deadline(mode: LeaseMode, now: Instant, wall_now_ms: u64, renewed_stamp_ms: u64, ttl: Duration) -> Instant {
    match mode {
        LeaseMode::Strict => now + ttl,
        LeaseMode::Stamped { max_clock_skew_ms } => {
            let ttl_ms = ttl.as_millis() as u64;
            let remaining_ms = (renewed_stamp_ms + ttl_ms).saturating_sub(wall_now_ms).min(ttl_ms);
            now + Duration::from_millis(remaining_ms + max_clock_skew_ms)
        }
    }
}

/// Runs the lease keeper until `inner` is cancelled: idle while this node is not the Raft
/// leader, expiring overdue sessions while it is.
pub(crate) async fn run_keeper(inner: Arc<Inner>) {
    let cancel = inner.cancel_token();
    let mut metrics = inner.raft().metrics();
    loop {
        let leading_term = {
            let m = metrics.borrow_and_update();
            (m.state == ServerState::Leader).then_some(m.current_term)
        };
        let Some(term) = leading_term else {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
            continue;
        };
        // Our state machine must include every entry committed by earlier leaders before we
        // trust its sessions: ensure_linearizable commits a blank entry of our term and waits.
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
        keep_leases(&inner, term).await;
        info!(term, "lease keeper stopped");
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// Tracks deadlines while this node leads `term`.
async fn keep_leases(inner: &Arc<Inner>, term: u64) {
    let cancel = inner.cancel_token();
    let mode = inner.config().lease_mode;
    let mut metrics = inner.raft().metrics();
    let mut view = inner.subscribe();
    let mut deadlines: HashMap<SessionId, Deadline> = HashMap::new();
    let now = Instant::now();
    let wall = wall_ms();
    for (id, session) in view.borrow_and_update().sessions.iter() {
        let at = takeover_deadline(mode, now, wall, session.renewed_stamp_ms, Duration::from_millis(session.ttl_ms));
        deadlines.insert(*id, Deadline { at, renewed_rev: session.renewed_rev, proposed_at: None });
    }
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
                observe(&mut deadlines, &state, Instant::now());
            }
            _ = tick.tick() => {
                if !expire_overdue(inner, &mut deadlines).await { return; }
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
        let cmd = Command::ExpireSession { session, expected_renewed_rev };
        match inner.propose_as_keeper(cmd, retry_after).await {
            Ok(res) => debug!(%session, ?res, "expire proposed"),
            Err(crate::RaftError::NotLeader { .. }) => return false,
            Err(e) => warn!(%session, error = %e, "expire not committed yet; will retry"),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(mode: LeaseMode, renewed_stamp_ms: u64, wall_now_ms: u64, want_ms: u64) {
        let now = Instant::now();
        let at = takeover_deadline(mode, now, wall_now_ms, renewed_stamp_ms, Duration::from_secs(5));
        assert_eq!(at.duration_since(now), Duration::from_millis(want_ms));
    }

    #[test]
    fn strict_takeover_grants_a_full_ttl() {
        check(LeaseMode::Strict, 0, 1_000_000, 5000);
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
    fn margin_is_a_tenth_of_ttl_but_at_least_half_a_second() {
        assert_eq!(margin(Duration::from_secs(5)), Duration::from_millis(500));
        assert_eq!(margin(Duration::from_secs(30)), Duration::from_secs(3));
    }
}
