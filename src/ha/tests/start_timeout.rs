//! Table rows of `primary_start_timeout` (Patroni's `recover`, `handle_starting_instance` and
//! `is_failover_possible`): a key holder whose PostgreSQL has not run as a primary for longer than the timeout
//! gives the key to a member that can take over, and keeps trying when none can. Crashes, failed starts and a
//! start still in progress all count, from the last cycle that saw the primary run.

use super::*;
use crate::config::SynchronousMode;
use crate::dcs::view::SyncData;
use crate::ha::observe::primary_clock;

const STARTING_AGAIN: &str = "starting primary after failure";
const FAILING_OVER_AFTER_CRASH: &str = "stopped PostgreSQL to fail over after a crash";
const TIMED_OUT: &str = "stopped PostgreSQL because of startup timeout";
const NO_FAILOVER: &str = "primary start has timed out, but continuing to wait because failover is not possible";
const BACKOFF: &str = "backoff: skip leader race after releasing the lock voluntarily because PostgreSQL did not start";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// This node (pg1) holds the key; its PostgreSQL is `pg` and has not run as a primary for `down` seconds.
fn holder(pg: PgProcess, down: u64) -> Observation {
    Observation {
        data_dir: initialized(true),
        leader_key_is_mine: true,
        holds_lease: true,
        primary_down_for: Some(secs(down)),
        ..obs(pg)
    }
}

/// pg1 leads, its last published position 100 MiB; `others` are the other members' keys.
fn cluster(others: &[(&str, MemberData)]) -> ClusterView {
    let mut v = view(Some("pg1"));
    v.status = Some(StatusData { optime: 100 << 20, ..StatusData::default() });
    for (name, member) in others {
        v.members.insert(name.to_string(), member.clone());
    }
    v
}

/// A running replica at `wal` MiB (the leader is at 100).
fn replica(wal_mib: u64) -> MemberData {
    member("replica", "running", wal_mib << 20)
}

fn timeout(seconds: u64) -> HaConfig {
    HaConfig { primary_start_timeout: secs(seconds), ..cfg() }
}

fn start_within(left: Option<u64>) -> Vec<Action> {
    vec![Action::RenewLease, Action::StartPrimary { within: left.map(secs) }]
}

#[test]
fn crashed_with_timeout_zero_and_a_healthy_replica_releases_the_key() {
    let v = cluster(&[("pg2", replica(100))]);
    for down in [0, 1] {
        check(
            holder(PgProcess::Stopped, down),
            v.clone(),
            timeout(0),
            vec![Action::GiveUpLease],
            FAILING_OVER_AFTER_CRASH,
        );
    }
    let decision = decide(&holder(PgProcess::Stopped, 0), &v, &timeout(0), SystemTime::UNIX_EPOCH);
    assert_eq!(
        decision.reason.to_string(),
        "stopped PostgreSQL to fail over after a crash (primary_start_timeout is 0; can take over: pg2)"
    );
}

#[test]
fn crashed_with_timeout_zero_and_no_candidate_starts_again() {
    let nofailover = MemberData {
        tags: serde_json::json!({"nofailover": true}).as_object().cloned().unwrap_or_default(),
        ..replica(100)
    };
    let rows: Vec<(&str, ClusterView)> = vec![
        ("no other member", cluster(&[])),
        ("the replica is stopped", cluster(&[("pg2", member("replica", "stopped", 100 << 20))])),
        ("the replica is tagged nofailover", cluster(&[("pg2", nofailover)])),
        ("the replica lags beyond maximum_lag_on_failover", cluster(&[("pg2", replica(98))])),
        ("the other member is no replica", cluster(&[("pg2", member("uninitialized", "stopped", 0))])),
    ];
    for (why, v) in rows {
        let decision = decide(&holder(PgProcess::Stopped, 0), &v, &timeout(0), SystemTime::UNIX_EPOCH);
        assert_eq!(decision.actions, start_within(None), "{why}");
        assert_eq!(decision.reason.to_string(), NO_FAILOVER, "{why}");
    }
}

#[test]
fn failing_starts_within_the_timeout_start_again() {
    let v = cluster(&[("pg2", replica(100))]);
    // Each failed start is decided again with what is left of the timeout as the longest wait for readiness.
    check(holder(PgProcess::Stopped, 0), v.clone(), timeout(5), start_within(Some(5)), STARTING_AGAIN);
    check(holder(PgProcess::Stopped, 3), v.clone(), timeout(5), start_within(Some(2)), STARTING_AGAIN);
    // The default 300 s leaves pg_ctl_timeout as the bound (the executor takes the shorter).
    check(holder(PgProcess::Stopped, 60), v, cfg(), start_within(Some(240)), STARTING_AGAIN);
}

#[test]
fn beyond_the_timeout_with_a_candidate_releases() {
    let v = cluster(&[("pg2", replica(100)), ("pg3", member("replica", "stopped", 0))]);
    for down in [5, 6, 3600] {
        check(holder(PgProcess::Stopped, down), v.clone(), timeout(5), vec![Action::GiveUpLease], TIMED_OUT);
    }
    let decision = decide(&holder(PgProcess::Stopped, 6), &v, &timeout(5), SystemTime::UNIX_EPOCH);
    assert_eq!(
        decision.reason.to_string(),
        "stopped PostgreSQL because of startup timeout (not running as primary for 6 s, primary_start_timeout 5 s; \
         can take over: pg2)"
    );
    // A replica within maximum_lag_on_failover qualifies.
    check(
        holder(PgProcess::Stopped, 6),
        cluster(&[("pg2", replica(99))]),
        timeout(5),
        vec![Action::GiveUpLease],
        TIMED_OUT,
    );
}

#[test]
fn beyond_the_timeout_without_a_candidate_keeps_trying() {
    let v = cluster(&[("pg2", member("replica", "stopped", 0)), ("pg3", replica(10))]);
    check(holder(PgProcess::Stopped, 6), v.clone(), timeout(5), start_within(None), NO_FAILOVER);
    // A start still in progress is left to finish, and the key kept.
    check(holder(PgProcess::Starting, 6), v, timeout(5), vec![Action::RenewLease], NO_FAILOVER);
}

#[test]
fn sync_mode_with_only_a_non_sync_replica_keeps_trying() {
    let c = HaConfig { synchronous_mode: SynchronousMode::On, ..timeout(5) };
    let with_sync = |others: &[(&str, MemberData)]| {
        let mut v = cluster(others);
        let value = SyncData { leader: Some("pg1".into()), sync_standby: Some("pg3".into()), quorum: 0 };
        v.sync = Some(Versioned { value, mod_rev: 4 });
        v
    };
    let v = with_sync(&[("pg2", replica(100)), ("pg3", member("replica", "stopped", 0))]);
    check(holder(PgProcess::Stopped, 6), v, c.clone(), start_within(None), NO_FAILOVER);
    // The synchronous standby running: it takes over, and only it is named.
    let v = with_sync(&[("pg2", replica(100)), ("pg3", replica(100))]);
    let decision = decide(&holder(PgProcess::Stopped, 6), &v, &c, SystemTime::UNIX_EPOCH);
    assert_eq!(decision.actions, vec![Action::GiveUpLease]);
    assert!(decision.reason.to_string().ends_with("can take over: pg3)"), "{}", decision.reason);
}

#[test]
fn quorum_mode_needs_quorum_plus_one_running_voters() {
    let c = HaConfig { synchronous_mode: SynchronousMode::Quorum, ..timeout(5) };
    let with_key = |others: &[(&str, MemberData)]| {
        let mut v = cluster(others);
        let value = SyncData { leader: Some("pg1".into()), sync_standby: Some("pg2,pg3".into()), quorum: 1 };
        v.sync = Some(Versioned { value, mod_rev: 4 });
        v
    };
    // One voter left: it would need a vote from the other, which is down (and pg4 is no voter).
    let one = with_key(&[("pg2", replica(100)), ("pg3", member("replica", "stopped", 0)), ("pg4", replica(100))]);
    check(holder(PgProcess::Stopped, 6), one, c.clone(), start_within(None), NO_FAILOVER);
    let two = with_key(&[("pg2", replica(100)), ("pg3", replica(100)), ("pg4", replica(100))]);
    let decision = decide(&holder(PgProcess::Stopped, 6), &two, &c, SystemTime::UNIX_EPOCH);
    assert_eq!(decision.actions, vec![Action::GiveUpLease]);
    assert!(decision.reason.to_string().ends_with("can take over: pg2, pg3)"), "{}", decision.reason);
}

#[test]
fn check_timeline_keeps_a_replica_on_an_old_timeline_out() {
    let mut old_timeline = replica(100);
    old_timeline.timeline = Some(1);
    let mut v = cluster(&[("pg2", old_timeline)]);
    v.history = vec![crate::dcs::view::HistoryLine { timeline: 1, switch_lsn: 10, ..Default::default() }];
    let c = HaConfig { check_timeline: true, ..timeout(5) };
    check(holder(PgProcess::Stopped, 6), v.clone(), c, start_within(None), NO_FAILOVER);
    check(holder(PgProcess::Stopped, 6), v, timeout(5), vec![Action::GiveUpLease], TIMED_OUT);
}

#[test]
fn a_start_still_in_progress_is_timed_and_a_server_that_stopped_answering_is_not() {
    let v = cluster(&[("pg2", replica(100))]);
    let rows: Vec<(PgProcess, u64, Vec<Action>, &str)> = vec![
        (
            PgProcess::Starting,
            2,
            vec![Action::RenewLease],
            "PostgreSQL is still starting up, within primary_start_timeout (5 s)",
        ),
        (PgProcess::Starting, 5, vec![Action::Demote(DemoteMode::ImmediateNoLock), Action::GiveUpLease], TIMED_OUT),
        // Started, then stopped answering (a slow probe): never failed over for that.
        (PgProcess::Unresponsive, 600, vec![Action::RenewLease], "no action. I am the leader with the lock"),
    ];
    for (pg, down, actions, reason) in rows {
        check(holder(pg, down), v.clone(), timeout(5), actions, reason);
    }
    let paused = HaConfig { paused: true, ..timeout(5) };
    check(holder(PgProcess::Starting, 600), v, paused, vec![Action::RenewLease], "PAUSE: no action. I am the leader");
}

#[test]
fn a_primary_seen_running_again_resets_the_clock() {
    let v = cluster(&[("pg2", replica(100))]);
    let t0 = tokio::time::Instant::now();
    // (seconds after t0, PostgreSQL runs as primary, expected actions, reason)
    let steps: Vec<(u64, bool, Vec<Action>, &str)> = vec![
        (0, true, vec![Action::RenewLease], "no action. I am the leader with the lock"),
        (4, false, start_within(Some(1)), STARTING_AGAIN),
        (5, true, vec![Action::RenewLease], "no action. I am the leader with the lock"),
        // 9 s after the first crash, but 4 s after the primary last ran: start again.
        (9, false, start_within(Some(1)), STARTING_AGAIN),
        (10, false, vec![Action::GiveUpLease], TIMED_OUT),
    ];
    let mut seen_at = None;
    for (at, primary, actions, reason) in steps {
        let now = t0 + secs(at);
        seen_at = primary_clock(seen_at, true, primary, now);
        let o = if primary {
            Observation { holds_lease: true, leader_key_is_mine: true, ..obs(pg(Role::Primary, 100 << 20)) }
        } else {
            let down = seen_at.map(|seen| now.saturating_duration_since(seen)).unwrap_or_default();
            Observation { primary_down_for: Some(down), ..holder(PgProcess::Stopped, 0) }
        };
        check(o, v.clone(), timeout(5), actions, reason);
    }
}

#[test]
fn our_previous_process_key_is_taken_over_to_be_given_up() {
    let o = Observation { data_dir: initialized(true), primary_down_for: Some(secs(6)), ..obs(PgProcess::Stopped) };
    let v = cluster(&[("pg2", replica(100))]);
    check(o.clone(), v.clone(), timeout(5), vec![Action::TakeOverLease, Action::GiveUpLease], TIMED_OUT);
    let within = Observation { primary_down_for: Some(secs(1)), ..o };
    let take_over = vec![Action::TakeOverLease, Action::StartPrimary { within: Some(secs(4)) }];
    check(within, v, timeout(5), take_over, "taking over the leader lock of my previous process");
}

#[test]
fn the_old_primary_stays_out_after_giving_the_key_up() {
    let gave_up = |pg: PgProcess| Observation {
        data_dir: initialized(true),
        race_backoff: Some(RaceBackoff::GaveUpKey),
        ..obs(pg)
    };
    // Nobody holds the key yet: PostgreSQL stays stopped (it might start as a standby, with the most WAL).
    check(gave_up(PgProcess::Stopped), view(None), cfg(), vec![], BACKOFF);
    // Started anyway (adopted, say): it does not race.
    check(gave_up(pg(Role::Replica, 100)), view(None), cfg(), vec![], BACKOFF);
    // Another member took the key: like any member that lost it, rewind and follow.
    check(
        gave_up(PgProcess::Stopped),
        view(Some("pg2")),
        cfg(),
        vec![Action::StartReplica { leader: Some("pg2".into()), rewind: true }],
        "running pg_rewind from pg2",
    );
}

#[test]
fn a_standby_leader_is_never_timed() {
    let c = HaConfig { standby_cluster: true, ..timeout(0) };
    let start = vec![Action::RenewLease, Action::StartReplica { leader: Some(REMOTE_PRIMARY.into()), rewind: false }];
    check(holder(PgProcess::Stopped, 600), cluster(&[("pg2", replica(100))]), c, start, "starting as a standby leader");
}

#[test]
fn a_start_that_failed_outright_gives_the_key_up_at_once_when_a_replica_can_take_over() {
    // Patroni's post_recover: "removed leader key after trying and failing to start postgres", well within the
    // default 300 s.
    let failed = Observation { primary_start_failed: true, ..holder(PgProcess::Stopped, 2) };
    let decision = decide(&failed, &cluster(&[("pg2", replica(100))]), &timeout(300), SystemTime::UNIX_EPOCH);
    assert_eq!(decision.actions, vec![Action::GiveUpLease]);
    assert_eq!(
        decision.reason.to_string(),
        "removed leader key after trying and failing to start postgres (can take over: pg2)"
    );
    // Nobody to take over: it starts again within what is left of the timeout.
    let decision = decide(&failed, &cluster(&[]), &timeout(300), SystemTime::UNIX_EPOCH);
    assert_eq!(decision.actions, start_within(Some(298)));
}
