//! Failing long actions are retried with a growing pause, never in a tight loop.
//!
//! A bootstrap, a clone, a start as a replica or a rewind that fails is retried when the loop decides it again;
//! without a pause that is every cycle (a bootstrap that cannot write its pgpass failed 35 times a second). The
//! loop keeps the last failure here ([`Failing`]): the same kind of action is held back until its pause is over
//! (5 s, doubling up to 5 min for a bootstrap or a clone, up to 1 min for a start or a rewind), the node
//! reports itself failing (`state` as Patroni names it, `failing` with the
//! error in `GET /patroni`, the member key and `raftgres list`), and the first success of any retried action
//! clears it.
//!
//! Starting as the primary, promoting, demoting and following are never held back: the leader must act on its
//! key at once, and those actions keep their own short pauses. How long a primary that keeps failing to start
//! may keep the key is `primary_start_timeout`'s business (`decide::start_deadline`), not this pause's.
//!
//! PURE: no I/O and no clock reads; the caller passes `now`.

use std::time::Duration;
use std::time::SystemTime;

use tokio::time::Instant;

use super::types::Action;
use super::types::ActionKind;
use crate::status::FailingAction;
use crate::status::PgState;

/// The first pause after a failure.
pub const FIRST_PAUSE: Duration = Duration::from_secs(5);
/// The longest pause of a bootstrap or a clone: each writes a whole data directory, a clone reads the source's.
pub const MAX_PAUSE: Duration = Duration::from_secs(300);
/// The longest pause of a start as a replica or a rewind: local and cheap, and what an operator who fixed the
/// cause (freed the disk, mended a parameter) waits for; Patroni tries again every cycle.
pub const MAX_START_PAUSE: Duration = Duration::from_secs(60);

/// The last failure of a retried long action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    /// What failed.
    pub kind: ActionKind,
    /// Failures in a row of this kind.
    pub attempts: u32,
    /// The error of the last attempt, with its causes.
    pub error: String,
    /// Not retried before then.
    pub retry_at: Instant,
    /// `retry_at` on the wall clock, for reports.
    pub retry_at_wall: SystemTime,
}

impl Failing {
    /// Records a failure of `kind` after `previous` (a failure of another kind starts counting again).
    pub fn after(previous: Option<&Failing>, kind: ActionKind, error: String, now: Instant, wall: SystemTime) -> Self {
        let attempts = previous.filter(|p| p.kind == kind).map_or(1, |p| p.attempts.saturating_add(1));
        let pause = pause_after(kind, attempts);
        Failing { kind, attempts, error, retry_at: now + pause, retry_at_wall: wall + pause }
    }

    /// Whether `action` must wait: it is of the failing kind and the pause is not over.
    pub fn holds_back(&self, action: &Action, now: Instant) -> bool {
        now < self.retry_at && retried_kind(action) == Some(self.kind)
    }

    /// The HA sentence while an action is held back.
    pub fn sentence(&self, now: Instant) -> String {
        let left = self.retry_at.saturating_duration_since(now).as_secs_f64().ceil();
        let times = if self.attempts == 1 { "once".to_string() } else { format!("{} times", self.attempts) };
        format!("{} failed {times}, retrying in {left:.0} s: {}", self.kind.describe(), self.error)
    }

    /// What `GET /patroni` and the member key report.
    pub fn report(&self) -> FailingAction {
        FailingAction {
            action: self.kind.describe().to_string(),
            attempts: self.attempts,
            error: self.error.clone(),
            retry_at: self.retry_at_wall,
        }
    }

    /// Patroni's state of a stopped PostgreSQL after this failure (`custom`: the bootstrap is `bootstrap.method`).
    pub fn pg_state(&self, custom: bool) -> PgState {
        match self.kind {
            ActionKind::Bootstrap if custom => PgState::CustomBootstrapFailed,
            ActionKind::Bootstrap => PgState::InitdbFailed,
            ActionKind::Start | ActionKind::Rewind => PgState::StartFailed,
            _ => PgState::Stopped,
        }
    }
}

/// The pause after `attempts` failures in a row of `kind`: 5 s, 10 s, 20 s, … up to 5 min (1 min for a start or
/// a rewind).
pub fn pause_after(kind: ActionKind, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    let longest = match kind {
        ActionKind::Start | ActionKind::Rewind => MAX_START_PAUSE,
        _ => MAX_PAUSE,
    };
    FIRST_PAUSE.saturating_mul(1 << doublings).min(longest)
}

/// The kind of a long action that is retried with a pause when it fails; `None` for every other action.
pub fn retried_kind(action: &Action) -> Option<ActionKind> {
    match action {
        Action::Bootstrap => Some(ActionKind::Bootstrap),
        Action::CloneFrom(_) | Action::WipeAndClone(_) | Action::CloneWithoutLeader => Some(ActionKind::Clone),
        Action::StartReplica { rewind: true, .. } | Action::RewindReplica(_) => Some(ActionKind::Rewind),
        Action::StartReplica { rewind: false, .. } => Some(ActionKind::Start),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(previous: Option<&Failing>, kind: ActionKind, now: Instant) -> Failing {
        Failing::after(previous, kind, "write pgpass: /tmp/x: permission denied".into(), now, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn pauses_of_a_bootstrap_or_clone_double_from_five_seconds_up_to_five_minutes() {
        for kind in [ActionKind::Bootstrap, ActionKind::Clone] {
            let pauses: Vec<u64> = (1..=9).map(|n| pause_after(kind, n).as_secs()).collect();
            assert_eq!(pauses, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
            assert_eq!(pause_after(kind, u32::MAX), MAX_PAUSE);
        }
    }

    #[test]
    fn pauses_of_a_start_or_rewind_double_from_five_seconds_up_to_one_minute() {
        for kind in [ActionKind::Start, ActionKind::Rewind] {
            let pauses: Vec<u64> = (1..=6).map(|n| pause_after(kind, n).as_secs()).collect();
            assert_eq!(pauses, vec![5, 10, 20, 40, 60, 60]);
            assert_eq!(pause_after(kind, u32::MAX), MAX_START_PAUSE);
        }
    }

    #[test]
    fn a_failed_bootstrap_holds_back_the_next_bootstrap_until_the_pause_is_over() {
        let now = Instant::now();
        let first = failing(None, ActionKind::Bootstrap, now);
        assert!(first.holds_back(&Action::Bootstrap, now));
        assert!(first.holds_back(&Action::Bootstrap, now + Duration::from_secs(4)));
        assert!(!first.holds_back(&Action::Bootstrap, now + FIRST_PAUSE));
    }

    #[test]
    fn failures_of_the_same_kind_count_up_and_another_kind_starts_over() {
        let now = Instant::now();
        let first = failing(None, ActionKind::Clone, now);
        let second = failing(Some(&first), ActionKind::Clone, now);
        assert_eq!(second.attempts, 2);
        assert_eq!(second.retry_at, now + Duration::from_secs(10));
        let other = failing(Some(&second), ActionKind::Start, now);
        assert_eq!(other.attempts, 1);
    }

    #[test]
    fn only_the_failing_kind_is_held_back_and_never_the_leaders_actions() {
        let now = Instant::now();
        let start = failing(None, ActionKind::Start, now);
        assert!(start.holds_back(&Action::StartReplica { leader: Some("node1".into()), rewind: false }, now));
        assert!(!start.holds_back(&Action::StartPrimary { within: None }, now));
        assert!(!start.holds_back(&Action::Promote, now));
        assert!(!start.holds_back(&Action::CloneFrom("node1".into()), now));
        let rewind = failing(None, ActionKind::Rewind, now);
        assert!(rewind.holds_back(&Action::RewindReplica("node1".into()), now));
        assert!(rewind.holds_back(&Action::StartReplica { leader: Some("node1".into()), rewind: true }, now));
    }

    #[test]
    fn the_state_is_patronis_for_the_failed_action() {
        let now = Instant::now();
        assert_eq!(failing(None, ActionKind::Bootstrap, now).pg_state(false), PgState::InitdbFailed);
        assert_eq!(failing(None, ActionKind::Bootstrap, now).pg_state(true), PgState::CustomBootstrapFailed);
        assert_eq!(failing(None, ActionKind::Start, now).pg_state(false), PgState::StartFailed);
        assert_eq!(failing(None, ActionKind::Clone, now).pg_state(false), PgState::Stopped);
    }

    #[test]
    fn the_sentence_names_the_action_the_count_the_wait_and_the_error() {
        let now = Instant::now();
        let first = failing(None, ActionKind::Bootstrap, now);
        let second = failing(Some(&first), ActionKind::Bootstrap, now);
        assert_eq!(
            second.sentence(now + Duration::from_millis(2500)),
            "bootstrap failed 2 times, retrying in 8 s: write pgpass: /tmp/x: permission denied"
        );
    }
}
