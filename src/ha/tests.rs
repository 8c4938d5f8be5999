//! Table tests of the HA decision: one row per scenario, named after Patroni's test_ha cases
//! where one exists, each with the expected actions and sentence.

use std::time::Duration;
use std::time::SystemTime;

use super::decide::decide;
use super::types::*;
use crate::dcs::view::ClusterView;
use crate::dcs::view::FailoverData;
use crate::dcs::view::LeaderKey;
use crate::dcs::view::MemberData;
use crate::dcs::view::StatusData;
use crate::dcs::view::Versioned;
use crate::postgres::types::Lsn;
use crate::postgres::types::SystemId;
use crate::postgres::types::TimelineId;
use crate::status::PgState;
use crate::status::PgStatus;
use crate::status::Role;
use crate::status::WalPosition;

const SYSID: u64 = 7277694203142172922;

/// The policy most table tests start from (also `handover`'s).
pub(super) fn cfg() -> HaConfig {
    HaConfig {
        name: "pg1".into(),
        ttl: Duration::from_secs(5),
        paused: false,
        nofailover: false,
        failover_priority: 1,
        maximum_lag_on_failover: 1 << 20,
        use_pg_rewind: true,
        remove_data_directory_on_rewind_failure: false,
        check_timeline: false,
        synchronous_mode: crate::config::SynchronousMode::Off,
        replicatefrom: None,
        standby_cluster: false,
        clone_without_leader: false,
        primary_start_timeout: Duration::from_secs(300),
    }
}

fn pg(role: Role, wal: u64) -> PgProcess {
    let wal = match role {
        Role::Primary => WalPosition::Primary { location: Lsn(wal) },
        _ => WalPosition::Replica {
            received: Some(Lsn(wal)),
            replayed: Some(Lsn(wal)),
            replayed_timestamp: None,
            paused: false,
            latest_end: None,
        },
    };
    PgProcess::Running(Box::new(PgStatus {
        state: PgState::Running,
        role,
        timeline: Some(TimelineId(1)),
        system_identifier: Some(SystemId(SYSID)),
        wal,
        ..PgStatus::default()
    }))
}

fn initialized(was_primary: bool) -> DataDir {
    DataDir::Initialized { system_id: SystemId(SYSID), was_primary, timeline: TimelineId(1), position: None }
}

fn obs(pg: PgProcess) -> Observation {
    Observation {
        data_dir: initialized(false),
        pg,
        holds_lease: false,
        leader_key_is_mine: false,
        dcs_ok: true,
        action: None,
        peers: vec![],
        following: None,
        rewind_failed: false,
        rewind_incomplete: false,
        race_backoff: None,
        restore_incomplete: false,
        watchdog_usable: true,
        primary_down_for: None,
        primary_start_failed: false,
    }
}

fn member(role: &str, state: &str, wal: u64) -> MemberData {
    MemberData {
        conn_url: "postgres://127.0.0.1:5432/postgres".into(),
        state: state.into(),
        role: role.into(),
        xlog_location: Some(wal),
        ..MemberData::default()
    }
}

fn view(leader: Option<&str>) -> ClusterView {
    let mut view = ClusterView { initialize: Some(SYSID.to_string()), ..ClusterView::default() };
    if let Some(name) = leader {
        view.leader =
            Some(LeaderKey { name: name.into(), session: None, create_rev: 1, mod_rev: 1, ..LeaderKey::default() });
        view.members.insert(name.into(), member("primary", "running", 100));
    }
    view
}

fn peer(name: &str, is_primary: bool, wal: u64) -> PeerReport {
    let role = if is_primary { "primary" } else { "replica" };
    PeerReport {
        name: name.into(),
        member: member(role, "running", wal),
        reachable: true,
        is_primary,
        wal: Some(Lsn(wal)),
        watchdog_failed: false,
    }
}

#[track_caller]
fn check(obs: Observation, view: ClusterView, cfg: HaConfig, actions: Vec<Action>, reason: &str) {
    let decision = decide(&obs, &view, &cfg, SystemTime::UNIX_EPOCH);
    assert_eq!(decision.actions, actions, "reason was: {}", decision.reason);
    let sentence = decision.reason.to_string();
    assert!(sentence.starts_with(reason), "sentence {sentence:?} does not start with {reason:?}");
}

#[test]
fn leader_with_lock_renews() {
    let o = Observation { holds_lease: true, leader_key_is_mine: true, ..obs(pg(Role::Primary, 100)) };
    check(o, view(Some("pg1")), cfg(), vec![Action::RenewLease], "no action. I am the leader with the lock");
}

#[test]
fn follows_the_leader() {
    let o = Observation { following: Some("pg2".into()), ..obs(pg(Role::Replica, 90)) };
    check(o, view(Some("pg2")), cfg(), vec![], "no action. I am a secondary, and following a leader (pg2)");
}

#[test]
fn follow_new_leader_after_failover() {
    let o = Observation { following: Some("pg3".into()), ..obs(pg(Role::Replica, 90)) };
    check(o, view(Some("pg2")), cfg(), vec![Action::Follow("pg2".into())], "no action. I am a secondary");
}

#[test]
fn interrupted_rewind_is_never_started_only_cloned() {
    let o = |was_primary| Observation {
        data_dir: initialized(was_primary),
        rewind_incomplete: true,
        ..obs(PgProcess::Stopped)
    };
    let reason = "an interrupted pg_rewind left the data directory unusable";
    check(o(false), view(Some("pg2")), cfg(), vec![], reason);
    check(o(true), view(Some("pg2")), cfg(), vec![], reason);
    let wipe = HaConfig { remove_data_directory_on_rewind_failure: true, ..cfg() };
    check(
        o(false),
        view(Some("pg2")),
        wipe.clone(),
        vec![Action::WipeAndClone("pg2".into())],
        "trying to bootstrap from leader",
    );
    check(o(false), view(None), wipe, vec![], "waiting for a leader to follow");
}

#[test]
fn unresponsive_postgres_rows() {
    let unresponsive = |following: Option<&str>, mine: bool| Observation {
        following: following.map(str::to_string),
        leader_key_is_mine: mine,
        holds_lease: mine,
        ..obs(PgProcess::Unresponsive)
    };
    let follow = |name: &str| vec![Action::Follow(name.into())];
    let stop = vec![Action::Demote(DemoteMode::ImmediateNoLock)];
    let rows: Vec<(Observation, Option<&str>, Vec<Action>, &str)> = vec![
        (unresponsive(None, true), Some("pg1"), vec![Action::RenewLease], "no action. I am the leader with the lock"),
        (
            unresponsive(Some("pg2"), false),
            Some("pg2"),
            vec![],
            "no action. I am a secondary, and following a leader (pg2)",
        ),
        (
            unresponsive(Some("pg3"), false),
            Some("pg2"),
            follow("pg2"),
            "no action. I am a secondary, and following a leader (pg2)",
        ),
        (unresponsive(None, false), Some("pg2"), stop, "stopping postgres: it does not answer"),
        (unresponsive(Some("pg3"), false), None, vec![], "waiting for a leader to follow"),
        (unresponsive(None, false), Some("pg1"), vec![], "waiting for a leader to follow"),
    ];
    for (o, leader, actions, reason) in rows {
        check(o, view(leader), cfg(), actions, reason);
    }
    let paused = HaConfig { paused: true, ..cfg() };
    check(unresponsive(Some("pg3"), false), view(Some("pg2")), paused, vec![], "PAUSE: waiting for a leader to follow");
}

#[test]
fn demote_because_not_having_lock() {
    check(
        obs(pg(Role::Primary, 100)),
        view(Some("pg2")),
        cfg(),
        vec![Action::Demote(DemoteMode::ImmediateNoLock)],
        "demoting self because i do not have the lock and i was a leader",
    );
}

#[test]
fn promote_because_have_lock() {
    let o = Observation { leader_key_is_mine: true, holds_lease: true, ..obs(pg(Role::Replica, 100)) };
    check(
        o,
        view(Some("pg1")),
        cfg(),
        vec![Action::RenewLease, Action::Promote],
        "promoted self to leader because I had the session lock",
    );
}

#[test]
fn acquire_lock_as_healthiest_replica() {
    let o = Observation { peers: vec![peer("pg2", false, 100), peer("pg3", false, 90)], ..obs(pg(Role::Replica, 100)) };
    check(o, view(None), cfg(), vec![Action::AcquireLease, Action::Promote], "promoted self to leader by acquiring");
}

#[test]
fn not_healthiest_when_a_peer_is_ahead() {
    let o = Observation { peers: vec![peer("pg2", false, 200)], ..obs(pg(Role::Replica, 100)) };
    check(
        o,
        view(None),
        cfg(),
        vec![],
        "following a different leader because i am not the healthiest node (pg2 has a higher WAL",
    );
}

#[test]
fn not_healthiest_when_the_primary_is_still_alive() {
    let o = Observation { peers: vec![peer("pg2", true, 100)], ..obs(pg(Role::Replica, 100)) };
    check(
        o,
        view(None),
        cfg(),
        vec![],
        "following a different leader because i am not the healthiest node (primary pg2 is still alive)",
    );
}

#[test]
fn equal_wal_higher_priority_wins() {
    let mut better = peer("pg2", false, 100);
    better.member.tags.insert("failover_priority".into(), 5.into());
    let o = Observation { peers: vec![better], ..obs(pg(Role::Replica, 100)) };
    check(o, view(None), cfg(), vec![], "following a different leader because i am not the healthiest node (pg2 has the same WAL position and a higher failover_priority)");
}

#[test]
fn nofailover_peer_ahead_is_ignored() {
    let mut ahead = peer("pg2", false, 500);
    ahead.member.tags.insert("nofailover".into(), true.into());
    let o = Observation { peers: vec![ahead], ..obs(pg(Role::Replica, 100)) };
    check(o, view(None), cfg(), vec![Action::AcquireLease, Action::Promote], "promoted self");
}

#[test]
fn nofailover_node_never_races() {
    let c = HaConfig { nofailover: true, ..cfg() };
    check(
        obs(pg(Role::Replica, 100)),
        view(None),
        c,
        vec![],
        "following a different leader because I am not allowed to promote",
    );
}

#[test]
fn replica_skips_the_race_after_its_pre_promote_failed() {
    // Patroni: `_released_leader_key_timestamp` less than a ttl ago (`is_healthiest_node`).
    let o = Observation { race_backoff: Some(RaceBackoff::PrePromoteFailed), ..obs(pg(Role::Replica, 100)) };
    check(o, view(None), cfg(), vec![], "backoff: skip leader race after pre_promote script failure");
}

#[test]
fn primary_in_pre_promote_backoff_still_takes_the_vacant_lock() {
    // A running primary is not racing to promote: it keeps its data writable only with the key.
    let o = Observation { race_backoff: Some(RaceBackoff::PrePromoteFailed), ..obs(pg(Role::Primary, 100)) };
    check(o, view(None), cfg(), vec![Action::AcquireLease], "acquired session lock as a leader");
}

#[test]
fn lagging_replica_does_not_race() {
    let mut v = view(None);
    v.status = Some(StatusData { optime: 10 << 20, ..StatusData::default() });
    check(
        obs(pg(Role::Replica, 100)),
        v,
        cfg(),
        vec![],
        "following a different leader because i am not the healthiest node (my WAL is",
    );
}

#[test]
fn running_primary_takes_the_vacant_lock() {
    check(
        obs(pg(Role::Primary, 100)),
        view(None),
        cfg(),
        vec![Action::AcquireLease],
        "acquired session lock as a leader",
    );
}

#[test]
fn bootstrap_when_cluster_is_new() {
    let o = Observation { data_dir: DataDir::Empty, ..obs(PgProcess::Stopped) };
    let v = ClusterView::default();
    check(o, v, cfg(), vec![Action::Bootstrap], "trying to bootstrap a new cluster");
}

#[test]
fn nofailover_node_waits_for_bootstrap() {
    let o = Observation { data_dir: DataDir::Empty, ..obs(PgProcess::Stopped) };
    check(o, ClusterView::default(), HaConfig { nofailover: true, ..cfg() }, vec![], "waiting for leader to bootstrap");
}

#[test]
fn wait_while_another_node_bootstraps() {
    let o = Observation { data_dir: DataDir::Empty, ..obs(PgProcess::Stopped) };
    let v = ClusterView { initialize: Some(String::new()), ..ClusterView::default() };
    check(o, v, cfg(), vec![], "waiting for leader to bootstrap");
}

#[test]
fn restore_without_leader_when_a_replica_method_has_no_leader() {
    let o = Observation { data_dir: DataDir::Empty, ..obs(PgProcess::Stopped) };
    let initialized = ClusterView { initialize: Some("7000".into()), ..ClusterView::default() };
    let can = HaConfig { clone_without_leader: true, ..cfg() };
    check(
        o.clone(),
        initialized.clone(),
        can.clone(),
        vec![Action::CloneWithoutLeader],
        "trying to bootstrap (without leader)",
    );
    check(o.clone(), initialized, cfg(), vec![], "waiting for a leader to follow");
    // Not while another node bootstraps the cluster (initialize empty), as in Patroni.
    let racing = ClusterView { initialize: Some(String::new()), ..ClusterView::default() };
    check(o, racing, can, vec![], "waiting for leader to bootstrap");
}

#[test]
fn clone_from_leader_when_data_dir_is_empty() {
    let o = Observation { data_dir: DataDir::Empty, ..obs(PgProcess::Stopped) };
    check(o, view(Some("pg2")), cfg(), vec![Action::CloneFrom("pg2".into())], "trying to bootstrap from leader 'pg2'");
}

#[test]
fn clone_from_a_running_replica_tagged_clonefrom() {
    // Patroni's get_clone_member: a running clonefrom member other than me and the leader, else the leader.
    let mut v = view(Some("pg2"));
    let mut tagged = member("replica", "running", 90);
    tagged.tags.insert("clonefrom".into(), true.into());
    v.members.insert("pg3".into(), tagged.clone());
    let o = Observation { data_dir: DataDir::Empty, ..obs(PgProcess::Stopped) };
    check(o.clone(), v.clone(), cfg(), vec![Action::CloneFrom("pg3".into())], "trying to bootstrap from replica 'pg3'");
    tagged.state = "stopped".into();
    v.members.insert("pg3".into(), tagged);
    check(o, v, cfg(), vec![Action::CloneFrom("pg2".into())], "trying to bootstrap from leader 'pg2'");
}

#[test]
fn replica_streams_from_its_replicatefrom_member_while_it_has_a_member_key() {
    let cascading = HaConfig { replicatefrom: Some("pg3".into()), ..cfg() };
    let mut v = view(Some("pg2"));
    v.members.insert("pg3".into(), member("replica", "running", 90));
    let o = Observation { following: Some("pg2".into()), ..obs(pg(Role::Replica, 90)) };
    check(
        o,
        v.clone(),
        cascading.clone(),
        vec![Action::Follow("pg3".into())],
        "no action. I am a secondary, and following a leader (pg3)",
    );
    // The member went away (its key expired): back to the leader.
    v.members.remove("pg3");
    let o = Observation { following: Some("pg3".into()), ..obs(pg(Role::Replica, 90)) };
    check(
        o,
        v.clone(),
        cascading.clone(),
        vec![Action::Follow("pg2".into())],
        "no action. I am a secondary, and following a leader (pg2)",
    );
    // A stopped replica starts towards its upstream; one that needs pg_rewind rewinds from the leader first.
    v.members.insert("pg3".into(), member("replica", "running", 90));
    let o = Observation { data_dir: initialized(false), ..obs(PgProcess::Stopped) };
    check(
        o,
        v.clone(),
        cascading.clone(),
        vec![Action::StartReplica { leader: Some("pg3".into()), rewind: false }],
        "starting as a secondary",
    );
    let o = Observation { data_dir: initialized(true), ..obs(PgProcess::Stopped) };
    check(
        o,
        v,
        cascading,
        vec![Action::StartReplica { leader: Some("pg2".into()), rewind: true }],
        "running pg_rewind from pg2",
    );
}

#[test]
fn standby_leader_follows_the_remote_primary_and_is_never_promoted() {
    use crate::ha::types::REMOTE_PRIMARY;
    let standby = HaConfig { standby_cluster: true, ..cfg() };
    let remote = || Action::Follow(REMOTE_PRIMARY.into());
    let holder = |following: &str| Observation {
        leader_key_is_mine: true,
        holds_lease: true,
        following: Some(following.into()),
        ..obs(pg(Role::Replica, 100))
    };
    check(
        holder("pg2"),
        view(Some("pg1")),
        standby.clone(),
        vec![Action::RenewLease, remote()],
        "no action. I am the standby leader",
    );
    check(
        holder(REMOTE_PRIMARY),
        view(Some("pg1")),
        standby.clone(),
        vec![Action::RenewLease],
        "no action. I am the standby leader",
    );
    // The race is won by following the remote primary, not by promoting.
    check(
        obs(pg(Role::Replica, 100)),
        view(None),
        standby.clone(),
        vec![Action::AcquireLease, remote()],
        "promoted self to a standby leader",
    );
    // Stopped while holding the key: start as a standby of the remote primary.
    let stopped = Observation {
        data_dir: initialized(false),
        leader_key_is_mine: true,
        holds_lease: true,
        ..obs(PgProcess::Stopped)
    };
    let start = Action::StartReplica { leader: Some(REMOTE_PRIMARY.into()), rewind: false };
    check(stopped, view(Some("pg1")), standby.clone(), vec![Action::RenewLease, start], "starting as a standby leader");
    // A new standby cluster is bootstrapped from the remote primary.
    let empty = Observation { data_dir: DataDir::Empty, ..obs(PgProcess::Stopped) };
    check(
        empty,
        ClusterView::default(),
        standby.clone(),
        vec![Action::Bootstrap],
        "trying to bootstrap a new standby leader",
    );
    // Without standby_cluster the same holder is promoted.
    check(
        holder(REMOTE_PRIMARY),
        view(Some("pg1")),
        cfg(),
        vec![Action::RenewLease, Action::Promote],
        "promoted self to leader because I had the session lock",
    );
}

#[test]
fn an_interrupted_custom_bootstrap_is_started_over_never_promoted() {
    // Even a running replica with the key vacant (it would win the race) is reset instead.
    let o = Observation { restore_incomplete: true, ..obs(pg(Role::Replica, 100)) };
    check(
        o,
        view(None),
        cfg(),
        vec![Action::ResetBootstrap],
        "removing the data directory of an interrupted custom bootstrap",
    );
    let o = Observation { restore_incomplete: true, leader_key_is_mine: true, ..obs(pg(Role::Primary, 100)) };
    check(o, view(Some("pg1")), cfg(), vec![Action::ResetBootstrap], "removing the data directory");
}

#[test]
fn start_primary_after_crash_while_holding_the_lock() {
    let o = Observation {
        data_dir: initialized(true),
        leader_key_is_mine: true,
        holds_lease: true,
        ..obs(PgProcess::Stopped)
    };
    check(
        o,
        view(Some("pg1")),
        cfg(),
        vec![Action::RenewLease, Action::StartPrimary { within: Some(Duration::from_secs(300)) }],
        "starting primary after failure",
    );
}

#[test]
fn old_primary_rejoins_with_rewind() {
    let o = Observation { data_dir: initialized(true), ..obs(PgProcess::Stopped) };
    check(
        o,
        view(Some("pg2")),
        cfg(),
        vec![Action::StartReplica { leader: Some("pg2".into()), rewind: true }],
        "running pg_rewind from pg2",
    );
}

#[test]
fn old_primary_without_rewind_starts_anyway() {
    let o = Observation { data_dir: initialized(true), ..obs(PgProcess::Stopped) };
    let c = HaConfig { use_pg_rewind: false, ..cfg() };
    check(
        o,
        view(Some("pg2")),
        c,
        vec![Action::StartReplica { leader: Some("pg2".into()), rewind: false }],
        "starting as a secondary",
    );
}

#[test]
fn failed_rewind_keeps_data_unless_allowed() {
    let o = Observation { data_dir: initialized(true), rewind_failed: true, ..obs(PgProcess::Stopped) };
    check(o.clone(), view(Some("pg2")), cfg(), vec![], "pg_rewind from pg2 failed; will retry");
    let c = HaConfig { remove_data_directory_on_rewind_failure: true, ..cfg() };
    check(
        o.clone(),
        view(Some("pg2")),
        c.clone(),
        vec![Action::WipeAndClone("pg2".into())],
        "trying to bootstrap from leader 'pg2'",
    );
    // A leader that took the key but still promotes would fail the base backup: the data stays until it runs as
    // the primary.
    let mut promoting = view(Some("pg2"));
    promoting.members.insert("pg2".into(), member("replica", "running", 100));
    check(o, promoting, c, vec![], "waiting for a leader to follow");
}

#[test]
fn stopped_replica_without_leader_starts_read_only() {
    check(
        obs(PgProcess::Stopped),
        view(None),
        cfg(),
        vec![Action::StartReplica { leader: None, rewind: false }],
        "starting as a secondary",
    );
}

#[test]
fn restarted_manager_takes_over_its_own_lease() {
    check(
        obs(pg(Role::Primary, 100)),
        view(Some("pg1")),
        cfg(),
        vec![Action::TakeOverLease],
        "taking over the leader lock",
    );
}

#[test]
fn long_action_renews_the_lease() {
    let o = Observation { action: Some(ActionKind::Promote), leader_key_is_mine: true, ..obs(pg(Role::Replica, 1)) };
    check(o, view(Some("pg1")), cfg(), vec![Action::RenewLease], "updated leader lock during promote");
}

#[test]
fn long_action_blocks_other_decisions() {
    let o = Observation { action: Some(ActionKind::Clone), data_dir: DataDir::Empty, ..obs(PgProcess::Stopped) };
    check(o, view(Some("pg2")), cfg(), vec![], "clone from leader in progress");
}

#[test]
fn primary_without_lease_demotes_when_store_is_unreachable() {
    let o = Observation { dcs_ok: false, ..obs(pg(Role::Primary, 100)) };
    check(
        o,
        view(Some("pg1")),
        cfg(),
        vec![Action::Demote(DemoteMode::ImmediateNoLock)],
        "demoted self because DCS is not accessible and I was a leader",
    );
}

#[test]
fn replica_waits_when_store_is_unreachable() {
    let o = Observation { dcs_ok: false, ..obs(pg(Role::Replica, 100)) };
    check(o, view(Some("pg2")), cfg(), vec![], "DCS is not accessible");
}

#[test]
fn system_id_mismatch_refuses_to_act() {
    let mut v = view(Some("pg2"));
    v.initialize = Some("1".into());
    check(obs(pg(Role::Replica, 100)), v, cfg(), vec![], "system ID mismatch");
}

#[test]
fn paused_primary_without_lock_is_left_alone() {
    let c = HaConfig { paused: true, ..cfg() };
    check(obs(pg(Role::Primary, 100)), view(Some("pg2")), c, vec![], "PAUSE: demoting self");
}

#[test]
fn paused_replica_does_not_race() {
    let c = HaConfig { paused: true, ..cfg() };
    check(obs(pg(Role::Replica, 100)), view(None), c, vec![], "PAUSE: waiting for a leader");
}

#[test]
fn paused_stopped_postgres_is_not_started() {
    let c = HaConfig { paused: true, ..cfg() };
    check(obs(PgProcess::Stopped), view(Some("pg2")), c, vec![], "PAUSE: ");
}

fn with_failover(mut v: ClusterView, leader: Option<&str>, member: Option<&str>) -> ClusterView {
    let value = FailoverData { leader: leader.map(Into::into), member: member.map(Into::into), scheduled_at: None };
    v.failover = Some(Versioned { value, mod_rev: 7 });
    v
}

#[test]
fn switchover_demotes_the_leader_gracefully() {
    let mut v = with_failover(view(Some("pg1")), Some("pg1"), Some("pg2"));
    v.members.insert("pg2".into(), member("replica", "running", 100));
    let o = Observation { holds_lease: true, leader_key_is_mine: true, ..obs(pg(Role::Primary, 100)) };
    check(o, v, cfg(), vec![Action::Demote(DemoteMode::Graceful)], "manual failover: demoting myself in favour of pg2");
}

#[test]
fn switchover_to_an_unhealthy_candidate_is_dropped() {
    let mut v = with_failover(view(Some("pg1")), Some("pg1"), Some("pg2"));
    v.members.insert("pg2".into(), member("replica", "stopped", 100));
    let o = Observation { holds_lease: true, leader_key_is_mine: true, ..obs(pg(Role::Primary, 100)) };
    check(o, v, cfg(), vec![Action::RenewLease, Action::ClearFailover], "no action. I am the leader");
}

#[test]
fn switchover_candidate_takes_the_lock_at_once() {
    let c = HaConfig { name: "pg2".into(), ..cfg() };
    let v = with_failover(view(None), Some("pg1"), Some("pg2"));
    check(
        obs(pg(Role::Replica, 50)),
        v,
        c,
        vec![Action::AcquireLease, Action::Promote, Action::ClearFailover],
        "promoted self to leader by acquiring",
    );
}

#[test]
fn other_replicas_wait_for_the_switchover_candidate() {
    let c = HaConfig { name: "pg3".into(), ..cfg() };
    let mut v = with_failover(view(None), Some("pg1"), Some("pg2"));
    v.members.insert("pg2".into(), member("replica", "running", 100));
    check(
        obs(pg(Role::Replica, 100)),
        v,
        c,
        vec![],
        "following a different leader because i am not the healthiest node (waiting for the failover candidate pg2)",
    );
}

#[test]
fn old_leader_stays_out_when_the_candidate_vanished() {
    let v = with_failover(view(None), Some("pg1"), Some("pg2"));
    check(
        obs(pg(Role::Replica, 100)),
        v,
        cfg(),
        vec![],
        "following a different leader because i am not the healthiest node (I am the former leader",
    );
}

#[test]
fn only_the_synchronous_standby_races_in_sync_mode() {
    let c = HaConfig { name: "pg3".into(), synchronous_mode: crate::config::SynchronousMode::On, ..cfg() };
    let mut v = view(None);
    let value = crate::dcs::view::SyncData { leader: Some("pg1".into()), sync_standby: Some("pg2".into()), quorum: 0 };
    v.sync = Some(Versioned { value, mod_rev: 4 });
    check(
        obs(pg(Role::Replica, 100)),
        v.clone(),
        c.clone(),
        vec![],
        "following a different leader because i am not the healthiest node (not a synchronous standby)",
    );
    let named = HaConfig { name: "pg2".into(), ..c };
    check(obs(pg(Role::Replica, 100)), v, named, vec![Action::AcquireLease, Action::Promote], "promoted self");
}

#[test]
fn the_synchronous_standby_does_not_wait_for_a_replica_outside_the_sync_key_that_is_ahead() {
    // pg1 (the old primary) is down; pg3, not synchronous, received more WAL than pg2, the synchronous standby.
    // pg3 may not race, so pg2 must not wait for it (Patroni compares only the members the sync key names).
    let c = HaConfig { name: "pg2".into(), synchronous_mode: crate::config::SynchronousMode::On, ..cfg() };
    let mut v = view(None);
    let value = crate::dcs::view::SyncData { leader: Some("pg1".into()), sync_standby: Some("pg2".into()), quorum: 0 };
    v.sync = Some(Versioned { value, mod_rev: 4 });
    let o = Observation { peers: vec![peer("pg3", false, 200)], ..obs(pg(Role::Replica, 100)) };
    check(o, v.clone(), c.clone(), vec![Action::AcquireLease, Action::Promote], "promoted self");
    // Without synchronous mode the replica ahead wins, as before.
    let o = Observation { peers: vec![peer("pg3", false, 200)], ..obs(pg(Role::Replica, 100)) };
    let off = HaConfig { synchronous_mode: crate::config::SynchronousMode::Off, ..c };
    check(o, v, off, vec![], "following a different leader because i am not the healthiest node (pg3 has a higher WAL");
}

/// A replica on timeline 1 that replayed up to `replayed` and streams or not; the cluster's
/// history says timeline 1 ended at 150 (the leader forked timeline 2 off there).
fn diverged_case(
    replayed: u64,
    streaming: bool,
    use_pg_rewind: bool,
    paused: bool,
) -> (Observation, ClusterView, HaConfig) {
    let mut process = pg(Role::Replica, replayed);
    if let PgProcess::Running(status) = &mut process {
        status.replication_state = Some(if streaming { "streaming" } else { "in archive recovery" }.into());
    }
    let o = Observation { following: Some("pg2".into()), ..obs(process) };
    let mut v = view(Some("pg2"));
    v.history = vec![crate::dcs::view::HistoryLine {
        timeline: 1,
        switch_lsn: 150,
        reason: "no recovery target specified".into(),
        timestamp: String::new(),
        new_leader: "pg2".into(),
    }];
    (o, v, HaConfig { use_pg_rewind, paused, ..cfg() })
}

#[test]
fn replica_that_replayed_past_the_fork_point_is_rewound() {
    let (o, v, c) = diverged_case(200, false, true, false);
    check(
        o,
        v,
        c,
        vec![Action::RewindReplica("pg2".into())],
        "replayed past the point where pg2's timeline forked off",
    );
}

#[test]
fn replica_behind_the_fork_point_or_streaming_just_follows() {
    for (replayed, streaming, use_pg_rewind, paused) in [
        (150, false, true, false),
        (100, false, true, false),
        (200, true, true, false),
        (200, false, false, false),
        (200, false, true, true),
    ] {
        let (o, v, c) = diverged_case(replayed, streaming, use_pg_rewind, paused);
        let decision = decide(&o, &v, &c, SystemTime::UNIX_EPOCH);
        assert!(
            !decision.actions.contains(&Action::RewindReplica("pg2".into())),
            "replayed {replayed} streaming {streaming} use_pg_rewind {use_pg_rewind} paused {paused}: {:?}",
            decision.actions
        );
    }
}

mod start_timeout;
mod stopped_past_fork;
mod watchdog;
