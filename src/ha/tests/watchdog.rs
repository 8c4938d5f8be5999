//! Table rows of the HA decision for `watchdog.mode: required` (`Observation::watchdog_usable`): a node whose
//! watchdog cannot be armed never bootstraps, races, takes over or promotes, and gives a key it holds up.

use super::*;
use crate::ha::types::REMOTE_PRIMARY;

const NOT_USABLE: &str =
    "following a different leader because i am not the healthiest node (the required watchdog is not usable)";

/// An observation of this node with a required watchdog it cannot arm.
fn unusable(pg: PgProcess) -> Observation {
    Observation { watchdog_usable: false, ..obs(pg) }
}

fn holding(o: Observation) -> Observation {
    Observation { leader_key_is_mine: true, holds_lease: true, ..o }
}

#[test]
fn required_watchdog_unusable_never_races() {
    let v = view(None);
    check(unusable(pg(Role::Replica, 100)), v.clone(), cfg(), vec![], NOT_USABLE);
    // The same node with a usable watchdog would have won (no peer is ahead).
    check(obs(pg(Role::Replica, 100)), v, cfg(), vec![Action::AcquireLease, Action::Promote], "promoted self");
}

#[test]
fn required_watchdog_unusable_never_races_even_as_the_named_candidate() {
    let v = with_failover(view(None), Some("pg2"), Some("pg1"));
    check(unusable(pg(Role::Replica, 100)), v, cfg(), vec![], NOT_USABLE);
}

#[test]
fn required_watchdog_unusable_never_bootstraps() {
    let o = Observation { data_dir: DataDir::Empty, ..unusable(PgProcess::Stopped) };
    let v = ClusterView::default();
    check(o, v, cfg(), vec![], "waiting for leader to bootstrap");
}

#[test]
fn holder_without_watchdog_releases_the_key_instead_of_promoting() {
    let o = holding(unusable(pg(Role::Replica, 100)));
    check(
        o,
        view(Some("pg1")),
        cfg(),
        vec![Action::ReleaseLease],
        "Not promoting self because watchdog could not be activated",
    );
}

#[test]
fn primary_holder_without_watchdog_demotes_and_releases() {
    let o = holding(unusable(pg(Role::Primary, 100)));
    let actions = vec![Action::Demote(DemoteMode::ImmediateNoLock), Action::ReleaseLease];
    check(o, view(Some("pg1")), cfg(), actions, "Demoting self because watchdog could not be activated");
}

#[test]
fn primary_without_watchdog_does_not_take_the_vacant_key() {
    let o = unusable(pg(Role::Primary, 100));
    let actions = vec![Action::Demote(DemoteMode::ImmediateNoLock)];
    check(o, view(None), cfg(), actions, "Demoting self because watchdog could not be activated");
}

#[test]
fn stopped_holder_without_watchdog_releases_instead_of_starting_as_primary() {
    let o = holding(Observation { data_dir: initialized(true), ..unusable(PgProcess::Stopped) });
    check(
        o,
        view(Some("pg1")),
        cfg(),
        vec![Action::ReleaseLease],
        "Not promoting self because watchdog could not be activated",
    );
}

#[test]
fn own_stale_key_is_not_taken_over_without_watchdog() {
    // The key of our previous process (not this session's): it is left to expire.
    check(unusable(pg(Role::Replica, 100)), view(Some("pg1")), cfg(), vec![], NOT_USABLE);
    let stopped = Observation { data_dir: initialized(true), ..unusable(PgProcess::Stopped) };
    check(stopped, view(Some("pg1")), cfg(), vec![], NOT_USABLE);
    let primary = unusable(pg(Role::Primary, 100));
    let actions = vec![Action::Demote(DemoteMode::ImmediateNoLock)];
    check(primary, view(Some("pg1")), cfg(), actions, "Demoting self because watchdog could not be activated");
}

#[test]
fn paused_leader_ignores_the_watchdog() {
    let paused = HaConfig { paused: true, ..cfg() };
    let o = holding(unusable(pg(Role::Primary, 100)));
    check(o, view(Some("pg1")), paused, vec![Action::RenewLease], "PAUSE: no action. I am the leader with the lock");
}

#[test]
fn standby_leader_needs_no_watchdog() {
    let standby = HaConfig { standby_cluster: true, ..cfg() };
    let o = Observation { following: Some(REMOTE_PRIMARY.into()), ..holding(unusable(pg(Role::Replica, 100))) };
    check(o, view(Some("pg1")), standby, vec![Action::RenewLease], "no action. I am the standby leader with the lock");
}

#[test]
fn a_peer_whose_watchdog_failed_neither_blocks_nor_is_waited_for() {
    let ahead = PeerReport { watchdog_failed: true, ..peer("pg2", false, 500) };
    let o = Observation { peers: vec![ahead.clone()], ..obs(pg(Role::Replica, 100)) };
    check(o, view(None), cfg(), vec![Action::AcquireLease, Action::Promote], "promoted self");
    // A switchover named it: the others race without it (the former leader excepted).
    let mut v = with_failover(view(None), Some("pg3"), Some("pg2"));
    v.members.insert("pg2".into(), member("replica", "running", 500));
    let o = Observation { peers: vec![ahead], ..obs(pg(Role::Replica, 100)) };
    check(o, v, cfg(), vec![Action::AcquireLease, Action::Promote], "promoted self");
}
