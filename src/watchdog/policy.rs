//! PURE: the watchdog's rules without the device: whether this node may lead as far as its watchdog goes
//! ([`verdict`]), whether a keepalive now is safe ([`may_feed`]), whether the timeout the device took is
//! ([`judge_timeout`]), and whether the watchdog stays armed after a cycle ([`keep_armed`]).
//!
//! No I/O, no clock reads: instants and what the shell found arrive as parameters.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::WatchdogMode;

/// What the shell found at `watchdog.device` without opening it (opening a watchdog arms it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceProbe {
    /// It exists and this user may write it.
    Writable,
    /// It cannot be used; the sentence says why.
    Unusable(String),
}

/// The facts [`verdict`] judges.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// `watchdog.mode`.
    pub mode: WatchdogMode,
    /// `WatchdogConfig::timeout` for the current `ttl`.
    pub timeout: &'a Result<Duration, String>,
    /// The device is open (armed) now.
    pub armed: bool,
    /// An earlier arming failed in this process; it is not tried again until raftgres restarts (Patroni also
    /// stops using a watchdog whose activation failed until its configuration changes).
    pub failed: Option<&'a str>,
    /// The device file, as the shell found it.
    pub device: &'a DeviceProbe,
}

/// Whether the watchdog lets this node take the leader key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `off` or `automatic`: leading does not depend on the watchdog.
    NotRequired,
    /// `required`, and the watchdog is armed or can be armed.
    Usable,
    /// `required`, and it cannot be armed: this node must not take the leader key, and its `GET /patroni`
    /// says `watchdog_failed` so that no switchover picks it. The sentence says why.
    Unusable(String),
}

impl Verdict {
    /// This node may race for, take and keep the leader key (the observation's `watchdog_usable`).
    pub fn allows_leading(&self) -> bool {
        !matches!(self, Verdict::Unusable(_))
    }
}

/// Judges the facts (Patroni's `Watchdog.is_healthy`, with the timing rule of `WatchdogConfig::timeout`).
pub fn verdict(facts: &Facts<'_>) -> Verdict {
    if facts.mode != WatchdogMode::Required {
        return Verdict::NotRequired;
    }
    if facts.armed {
        // A leader keeps its watchdog through a `ttl` change that leaves no usable timeout: it keeps the timeout
        // it runs with, fed by the same rule (Patroni does not demote an active watchdog's leader either).
        return Verdict::Usable;
    }
    if let Err(why) = facts.timeout {
        return Verdict::Unusable(why.clone());
    }
    if let Some(why) = facts.failed {
        return Verdict::Unusable(format!("arming it failed: {why}"));
    }
    match facts.device {
        DeviceProbe::Writable => Verdict::Usable,
        DeviceProbe::Unusable(why) => Verdict::Unusable(why.clone()),
    }
}

/// Whether a keepalive at `now` is safe: it lets the watchdog run until `now + timeout`, which must not be
/// later than `floor`, the earliest instant another node can take the leader key (`HolderLease::
/// leader_expiry_floor`; `None` while this node holds no lease).
///
/// So the watchdog is fed only within `safety_margin` of the send of the last successful renewal, however late
/// its answer came, and fires at the latest when the key can expire. Failure scenario this prevents: (1) a
/// renewal is answered 2 s after it was sent; (2) a keepalive then would let a 1 s watchdog run 3 s past the
/// send; (3) the host freezes; (4) the key expires 3 s after the send and a replica promotes while the frozen
/// host's watchdog has not fired yet.
pub fn may_feed(now: Instant, timeout: Duration, floor: Option<Instant>) -> bool {
    floor.is_some_and(|floor| now + timeout <= floor)
}

/// What the timeout the device took means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutCheck {
    /// At most the timeout asked for.
    Safe,
    /// The file takes no timeout (not a watchdog device: a stand-in for tests); nothing to check.
    Unverified,
    /// Longer than asked: it may fire after the leader key expired.
    TooLong(Duration),
}

/// Judges the timeout the device took (`None`: it takes none) against the one asked for.
pub fn judge_timeout(wanted: Duration, taken: Option<Duration>) -> TimeoutCheck {
    match taken {
        None => TimeoutCheck::Unverified,
        Some(taken) if taken > wanted => TimeoutCheck::TooLong(taken),
        Some(_) => TimeoutCheck::Safe,
    }
}

/// Whether the watchdog stays armed after a cycle: while this node holds the leader key, or still runs
/// PostgreSQL as a primary (a primary that could not be stopped is exactly what it guards against); never in
/// maintenance mode (Patroni disables it while paused).
pub fn keep_armed(holds_key: bool, runs_primary: bool, paused: bool) -> bool {
    !paused && (holds_key || runs_primary)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Result<Duration, String> = Ok(Duration::from_secs(1));

    fn facts<'a>(
        mode: WatchdogMode,
        timeout: &'a Result<Duration, String>,
        armed: bool,
        failed: Option<&'a str>,
        device: &'a DeviceProbe,
    ) -> Facts<'a> {
        Facts { mode, timeout, armed, failed, device }
    }

    #[track_caller]
    fn check(facts: Facts<'_>, expected: Verdict) {
        assert_eq!(verdict(&facts), expected, "{facts:?}");
    }

    #[test]
    fn verdict_rows() {
        use WatchdogMode::*;
        let writable = DeviceProbe::Writable;
        let missing = DeviceProbe::Unusable("/dev/watchdog does not exist".into());
        let no_timeout: Result<Duration, String> = Err("no timeout".into());
        let unusable = |why: &str| Verdict::Unusable(why.to_string());
        // off_and_automatic_never_hold_a_node_back
        check(facts(Off, &no_timeout, false, Some("busy"), &missing), Verdict::NotRequired);
        check(facts(Automatic, &no_timeout, false, Some("busy"), &missing), Verdict::NotRequired);
        // required_with_a_writable_device_is_usable
        check(facts(Required, &OK, false, None, &writable), Verdict::Usable);
        // required_without_the_device_is_unusable
        check(facts(Required, &OK, false, None, &missing), unusable("/dev/watchdog does not exist"));
        // required_after_a_failed_arming_stays_unusable
        check(facts(Required, &OK, false, Some("EBUSY"), &writable), unusable("arming it failed: EBUSY"));
        // required_armed_is_usable_whatever_the_file_looks_like_now
        check(facts(Required, &OK, true, None, &missing), Verdict::Usable);
        // required_without_a_usable_timeout_is_unusable
        check(facts(Required, &no_timeout, false, None, &writable), unusable("no timeout"));
        // required_armed_keeps_leading_through_a_ttl_change
        check(facts(Required, &no_timeout, true, None, &writable), Verdict::Usable);
    }

    #[test]
    fn only_an_unusable_required_watchdog_holds_a_node_back() {
        assert!(Verdict::NotRequired.allows_leading());
        assert!(Verdict::Usable.allows_leading());
        assert!(!Verdict::Unusable("x".into()).allows_leading());
    }

    #[test]
    fn feeding_never_lets_the_watchdog_outlive_the_expiry_floor() {
        let now = Instant::now();
        let second = Duration::from_secs(1);
        assert!(may_feed(now, second, Some(now + 2 * second)), "well within the floor");
        assert!(may_feed(now, second, Some(now + second)), "firing exactly at the floor");
        assert!(!may_feed(now, second, Some(now + second / 2)), "the renewal was answered too late");
        assert!(!may_feed(now, second, None), "no lease, no keepalive");
    }

    #[test]
    fn a_longer_timeout_than_asked_is_flagged() {
        let second = Duration::from_secs(1);
        assert_eq!(judge_timeout(2 * second, Some(2 * second)), TimeoutCheck::Safe);
        assert_eq!(judge_timeout(2 * second, Some(second)), TimeoutCheck::Safe);
        assert_eq!(judge_timeout(2 * second, Some(60 * second)), TimeoutCheck::TooLong(60 * second));
        assert_eq!(judge_timeout(2 * second, None), TimeoutCheck::Unverified);
    }

    #[test]
    fn armed_while_leading_or_primary_never_paused() {
        assert!(keep_armed(true, false, false), "holds the key, promoting");
        assert!(keep_armed(false, true, false), "a primary that lost the key and could not be stopped");
        assert!(!keep_armed(false, false, false), "a replica");
        assert!(!keep_armed(true, true, true), "maintenance mode");
    }
}
