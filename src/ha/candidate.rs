//! PURE: the leader race (is this node the healthiest eligible one?), the leader's handling
//! of a requested switchover, and who could take over from a leader that cannot start its primary.
//! Patroni's `is_healthiest_node`, `process_manual_failover_from_leader` and `is_failover_possible`,
//! without I/O: in the race, peer positions arrive in the observation, asked live from each peer's
//! REST API by the shell before the race (`observe::race_peers`), never read from member keys that
//! may be up to `ttl` old.

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::types::Action;
use super::types::Decision;
use super::types::DemoteMode;
use super::types::HaConfig;
use super::types::Observation;
use super::types::PgProcess;
use super::types::Reason;
use super::types::REMOTE_PRIMARY;
use crate::config::SynchronousMode;
use crate::dcs::view::ClusterView;
use crate::dcs::view::MemberData;
use crate::postgres::types::Lsn;
use crate::status::Role;

/// Why a node whose required watchdog cannot be armed stays out of the race (Patroni logs "Watchdog device is
/// not usable" and counts itself not the healthiest).
pub const WATCHDOG_NOT_USABLE: &str = "the required watchdog is not usable";

/// The required watchdog cannot be armed, so this node must not take the leader key or promote: never in
/// maintenance mode (the watchdog is off then) or in a standby cluster (its leader is never a primary).
pub fn watchdog_blocks_leading(obs: &Observation, cfg: &HaConfig) -> bool {
    !obs.watchdog_usable && !cfg.paused && !cfg.standby_cluster
}

/// The leader key is vacant: race for it when eligible and healthiest.
pub fn race(obs: &Observation, view: &ClusterView, cfg: &HaConfig, role: Role) -> Decision {
    if role == Role::Primary {
        if watchdog_blocks_leading(obs, cfg) {
            return Decision::new(vec![Action::Demote(DemoteMode::ImmediateNoLock)], Reason::DemotingWithoutWatchdog);
        }
        // Already primary (e.g. our previous process's lease lapsed while PostgreSQL ran on):
        // take the lock; the executor demotes at once if someone else got it first.
        return Decision::new(vec![Action::AcquireLease], Reason::AcquiredLockAsLeader);
    }
    if cfg.paused {
        return Decision::idle(Reason::WaitingForLeader);
    }
    if watchdog_blocks_leading(obs, cfg) {
        // Before the failover key: a switchover naming this node waits for it in vain otherwise (peers see its
        // `watchdog_failed` and race without it).
        return Decision::idle(Reason::NotHealthiest(WATCHDOG_NOT_USABLE.into()));
    }
    if let Some(backoff) = obs.race_backoff {
        return Decision::idle(Reason::RaceBackoff(backoff));
    }
    // In a standby cluster the winner becomes the standby leader: it follows the remote primary, never promotes.
    let race_actions = || {
        let then = if cfg.standby_cluster { Action::Follow(REMOTE_PRIMARY.to_owned()) } else { Action::Promote };
        vec![Action::AcquireLease, then]
    };
    let won = if cfg.standby_cluster { Reason::StandbyLeaderByAcquiringLock } else { Reason::PromotedByAcquiringLock };
    if let Some(failover) = view.failover.as_ref().map(|f| &f.value) {
        match failover.member.as_deref() {
            Some(candidate) if candidate == cfg.name => {
                let mut actions = race_actions();
                actions.push(Action::ClearFailover);
                return Decision::new(actions, won.clone());
            }
            Some(candidate) => {
                // A candidate whose watchdog failed never takes the key: race without it.
                let report = obs.peers.iter().find(|p| p.name == candidate);
                let candidate_healthy = !report.is_some_and(|p| p.watchdog_failed)
                    && (report.is_some_and(|p| p.reachable && !p.is_primary)
                        || view.members.get(candidate).is_some_and(healthy_replica));
                if candidate_healthy {
                    return Decision::idle(Reason::NotHealthiest(format!(
                        "waiting for the failover candidate {candidate}"
                    )));
                }
            }
            None => {}
        }
        if failover.leader.as_deref() == Some(cfg.name.as_str()) {
            return Decision::idle(Reason::NotHealthiest("I am the former leader of the requested switchover".into()));
        }
        // The candidate is gone: everybody but the old leader races, without the lag check.
        return match healthiest(obs, cfg, view, false).and_then(|()| quorum_votes(obs, view, cfg)) {
            Ok(()) => Decision::new(race_actions(), won.clone()),
            Err(why) => Decision::idle(Reason::NotHealthiest(why)),
        };
    }
    if cfg.nofailover {
        return Decision::idle(Reason::NotAllowedToPromote);
    }
    if !super::sync::may_race(view, &cfg.name, cfg.synchronous_mode) {
        return Decision::idle(Reason::NotSynchronous);
    }
    match healthiest(obs, cfg, view, true).and_then(|()| quorum_votes(obs, view, cfg)) {
        Ok(()) => Decision::new(race_actions(), won.clone()),
        Err(why) => Decision::idle(Reason::NotHealthiest(why)),
    }
}

/// Whether this cycle may end in [`race`] judging peers: the leader key is vacant, the store is trusted, and
/// this node runs PostgreSQL as a replica that is allowed to promote (not paused; a `nofailover` node only
/// when a `failover` key may name it). The shell then asks every peer live for its status
/// (`observe::race_peers`) instead of trusting member keys; outside a race no peer is asked. The candidate a
/// `failover` key names takes the key without judging its peers ([`race`]), so it asks nobody: the former
/// primary of a hand-over (`ha::handover`) publishes no fresh status while it waits, and asking it would cost
/// the candidate the whole peer timeout.
pub fn races_for_vacant_key(view: &ClusterView, pg: &PgProcess, cfg: &HaConfig, dcs_ok: bool) -> bool {
    let replica = matches!(pg, PgProcess::Running(status) if status.role != Role::Primary);
    let named = view.failover.as_ref().is_some_and(|f| f.value.member.as_deref() == Some(cfg.name.as_str()));
    view.leader.is_none() && dcs_ok && replica && !cfg.paused && !named && (!cfg.nofailover || view.failover.is_some())
}

/// Quorum mode (`synchronous_mode: quorum`): Ok when this node provably holds every acknowledged commit.
///
/// A commit is acknowledged by the primary and any `n` standbys of `synchronous_standby_names`, and the
/// primary keeps the `sync` key such that any `quorum + 1` members of its voting set (`sync_standby` plus
/// `leader`) include one of them (see `sync::quorum`). So a member of the set that sees `quorum` other members
/// of the set, none ahead of it, holds every acknowledged commit; an outsider needs `quorum + 1` such votes.
/// Votes come only from members that reported a running PostgreSQL (a WAL position) and are not primaries.
/// The former leader is the exception Patroni makes: it holds every commit it acknowledged, so it may race
/// when nobody is ahead of it.
/// Failure scenario this prevents: (1) `ANY 1 (b,c)`, key `{b,c}`, quorum 1; (2) a commit is acknowledged by
/// the primary and c; (3) the primary and c die; (4) b alone would promote without that commit, but it has
/// no vote (c is gone), so it waits until c or the old primary returns.
pub fn quorum_votes(obs: &Observation, view: &ClusterView, cfg: &HaConfig) -> Result<(), String> {
    if cfg.synchronous_mode != SynchronousMode::Quorum {
        return Ok(());
    }
    let Some(key) = view.sync.as_ref().map(|s| &s.value).filter(|key| key.leader.is_some()) else {
        // No quorum state was ever published: the ordinary race rules apply.
        return Ok(());
    };
    let PgProcess::Running(status) = &obs.pg else {
        return Err("postgres is not running".into());
    };
    let my_wal = status.wal.furthest().unwrap_or_default();
    let leader = key.leader.as_deref().unwrap_or_default();
    let mut voting_set: BTreeSet<String> = key.members().into_iter().collect();
    voting_set.insert(leader.to_string());
    let mut votes: i64 = if voting_set.contains(&cfg.name) { 0 } else { -1 };
    let mut n_ahead = 0;
    let voters = obs.peers.iter().filter(|p| p.name != cfg.name && p.reachable && voting_set.contains(&p.name));
    for peer in voters.filter(|p| !p.is_primary) {
        match peer.wal.filter(|wal| wal.0 > 0) {
            None => {}
            Some(wal) if wal > my_wal => n_ahead += usize::from(peer.name != leader),
            Some(_) => votes += 1,
        }
    }
    let is_former_leader = cfg.name == leader && n_ahead == 0;
    if votes >= i64::from(key.quorum) || is_former_leader {
        return Ok(());
    }
    Err(format!("{} of the {} quorum votes needed from {voting_set:?}", votes.max(0), key.quorum))
}

/// Ok when no eligible peer is better; the error says who is.
/// `lag_checks`: the lag and timeline checks apply (not for manual failover).
///
/// Under synchronous replication (`on`/strict, a `sync` key with a leader) only the members the key names are
/// compared, as in Patroni's `is_healthiest_node`: a replica outside it may have received more WAL than the
/// synchronous standby, but it may not take the key, so waiting for it would leave the key vacant until the old
/// primary (perhaps the very one that could not start) took it back.
fn healthiest(obs: &Observation, cfg: &HaConfig, view: &ClusterView, lag_checks: bool) -> Result<(), String> {
    let PgProcess::Running(status) = &obs.pg else {
        return Err("postgres is not running".into());
    };
    let my_wal = status.wal.furthest().unwrap_or_default();
    let unfit = lag_checks.then(|| unfit_to_take_over(view, cfg, my_wal, status.timeline.map(|t| t.0))).flatten();
    if let Some(why) = unfit {
        return Err(format!("my {why}"));
    }
    for peer in obs.peers.iter().filter(|p| p.name != cfg.name && p.reachable) {
        // Members that cannot lead neither block nor are waited for (Patroni's `failover_limitation`).
        if peer.member.failover_priority() <= 0 || peer.watchdog_failed {
            continue;
        }
        if !peer.is_primary && !super::sync::may_race(view, &peer.name, cfg.synchronous_mode) {
            continue;
        }
        if peer.is_primary {
            return Err(format!("primary {} is still alive", peer.name));
        }
        let peer_wal = peer.wal.unwrap_or_default();
        if peer_wal > my_wal {
            return Err(format!("{} has a higher WAL position ({peer_wal} > {my_wal})", peer.name));
        }
        if peer_wal == my_wal && peer.member.failover_priority() > cfg.failover_priority {
            return Err(format!("{} has the same WAL position and a higher failover_priority", peer.name));
        }
    }
    Ok(())
}

/// Why a member at `wal` on `timeline` may not take over from the last leader: further behind its last published
/// position than `maximum_lag_on_failover`, or (with `check_timeline`) on an older timeline than the cluster's.
/// The rules a racing replica applies to itself and the leader applies in [`failover_candidates`].
fn unfit_to_take_over(view: &ClusterView, cfg: &HaConfig, wal: Lsn, timeline: Option<u32>) -> Option<String> {
    if let Some(optime) = view.leader_optime() {
        let lag = optime.saturating_sub(wal);
        if lag > cfg.maximum_lag_on_failover {
            return Some(format!("WAL is {lag} bytes behind the last leader position, above maximum_lag_on_failover"));
        }
    }
    let mine = timeline.unwrap_or(0);
    if cfg.check_timeline && mine < view.timeline() {
        return Some(format!("timeline {mine} is behind the cluster timeline {}", view.timeline()));
    }
    None
}

/// A member key that says: running replica allowed to fail over.
pub fn healthy_replica(member: &MemberData) -> bool {
    member.is_running() && member.role() == Some(Role::Replica) && member.failover_priority() > 0
}

/// The members that could take the key over from this holder if it gave the key up (Patroni's
/// `is_failover_possible`), by name; empty when a failover is not possible.
///
/// A member qualifies by the rules it would itself apply in the leader race ([`race`]), read from its member key
/// (published every cycle; the holder's PostgreSQL is down, so no member streams and no peer is asked live): a
/// running replica ([`healthy_replica`]: not `nofailover`, `failover_priority` above 0), within
/// `maximum_lag_on_failover` of the leader's last published position, on the cluster's timeline when
/// `check_timeline` is on, and in synchronous mode named in the `sync` key (`sync::may_race`). In quorum mode
/// the qualifying members of the key's voting set must be at least `quorum + 1`, as many as a candidate needs
/// votes from besides itself ([`quorum_votes`]: the holder, down, gives none).
/// Failure scenario this prevents: (1) the primary's disk fills and it cannot start; (2) its only replica lags
/// 1 GB behind; (3) the holder gives the key up; (4) nobody may race, and the cluster has no leader until the
/// old primary's disk is fixed, where keeping the key would have brought it back as primary at once.
pub fn failover_candidates(view: &ClusterView, cfg: &HaConfig) -> Vec<String> {
    let qualifies = |name: &str, member: &MemberData| {
        let wal = Lsn(member.xlog_location.unwrap_or(0));
        name != cfg.name
            && healthy_replica(member)
            && unfit_to_take_over(view, cfg, wal, member.timeline).is_none()
            && super::sync::may_race(view, name, cfg.synchronous_mode)
    };
    let mut candidates: Vec<String> =
        view.members.iter().filter(|(name, member)| qualifies(name, member)).map(|(name, _)| name.clone()).collect();
    if cfg.synchronous_mode == SynchronousMode::Quorum {
        if let Some(key) = view.sync.as_ref().map(|s| &s.value).filter(|key| key.leader.is_some()) {
            let voters = key.members();
            candidates.retain(|name| voters.contains(name));
            if candidates.len() < key.quorum as usize + 1 {
                candidates.clear();
            }
        }
    }
    candidates
}

/// On the leader: a `failover` key asks for a switchover. `None` means keep leading normally.
pub fn manual_failover_from_leader(view: &ClusterView, cfg: &HaConfig, now: SystemTime) -> Option<Decision> {
    let failover = &view.failover.as_ref()?.value;
    match due(failover, now, cfg.ttl) {
        Due::Now => {}
        // Patroni: "Awaiting switchover at …"; keep leading until then.
        Due::Later => return None,
        // Patroni: "Found a stale switchover, deleting" (missed by more than the grace, e.g. while down).
        Due::Stale => {
            return Some(Decision::new(vec![Action::RenewLease, Action::ClearFailover], Reason::LeaderWithLock))
        }
    }
    if failover.leader.as_deref().is_some_and(|l| l != cfg.name) || failover.member.as_deref() == Some(&cfg.name) {
        return Some(Decision::new(vec![Action::RenewLease, Action::ClearFailover], Reason::LeaderWithLock));
    }
    let target = match failover.member.as_deref() {
        Some(candidate) => view.members.get(candidate).filter(|m| healthy_replica(m)).map(|_| candidate.to_string()),
        None => view
            .members
            .iter()
            .filter(|(name, m)| *name != &cfg.name && healthy_replica(m))
            .max_by_key(|(_, m)| m.xlog_location.unwrap_or(0))
            .map(|(name, _)| name.clone()),
    };
    match target {
        Some(to) => Some(Decision::new(vec![Action::Demote(DemoteMode::Graceful)], Reason::ManualFailoverDemoting(to))),
        None => Some(Decision::new(vec![Action::RenewLease, Action::ClearFailover], Reason::LeaderWithLock)),
    }
}

/// Whether a `failover` key's switchover may run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Not scheduled, or its time has come.
    Now,
    /// Scheduled in the future.
    Later,
    /// Its time passed more than `grace` ago, or the timestamp is unreadable: delete it.
    Stale,
}

/// PURE: when a scheduled switchover (`scheduled_at`, ISO 8601 with offset) runs, given `now` and how late it may
/// still run (`grace`, the leader's `ttl`: a cycle runs at least every `loop_wait`, which is shorter).
pub fn due(failover: &crate::dcs::view::FailoverData, now: SystemTime, grace: std::time::Duration) -> Due {
    let Some(text) = failover.scheduled_at.as_deref() else { return Due::Now };
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(text.trim()) else { return Due::Stale };
    let now = chrono::DateTime::<chrono::Utc>::from(now);
    let late = now.signed_duration_since(at);
    match late.to_std() {
        Err(_) => Due::Later,
        Ok(late) if late > grace => Due::Stale,
        Ok(_) => Due::Now,
    }
}

#[cfg(test)]
mod due_tests {
    use std::time::Duration;

    use super::*;
    use crate::dcs::view::FailoverData;

    #[track_caller]
    fn check(scheduled_at: Option<&str>, now: &str, expected: Due) {
        let failover =
            FailoverData { leader: Some("pg0".into()), member: None, scheduled_at: scheduled_at.map(Into::into) };
        let now = SystemTime::from(chrono::DateTime::parse_from_rfc3339(now).expect("valid now"));
        assert_eq!(due(&failover, now, Duration::from_secs(30)), expected, "{scheduled_at:?} at {now:?}");
    }

    #[test]
    fn scheduled_switchover_rows() {
        check(None, "2025-06-01T12:00:00Z", Due::Now);
        check(Some("2025-06-01T12:05:00+00:00"), "2025-06-01T12:00:00Z", Due::Later);
        check(Some("2025-06-01T14:05:00+02:00"), "2025-06-01T12:00:00Z", Due::Later);
        check(Some("2025-06-01T12:00:00+00:00"), "2025-06-01T12:00:00Z", Due::Now);
        check(Some("2025-06-01T11:59:40+00:00"), "2025-06-01T12:00:00Z", Due::Now);
        check(Some("2025-06-01T13:59:00+02:00"), "2025-06-01T12:00:00Z", Due::Stale);
        check(Some("next tuesday"), "2025-06-01T12:00:00Z", Due::Stale);
    }
}

#[cfg(test)]
mod quorum_tests {
    use super::*;
    use crate::dcs::view::SyncData;
    use crate::dcs::view::Versioned;
    use crate::ha::types::DataDir;
    use crate::ha::types::PeerReport;
    use crate::postgres::types::Lsn;
    use crate::status::PgState;
    use crate::status::PgStatus;
    use crate::status::WalPosition;

    /// A peer as (name, is_primary, reachable, wal; 0 = PostgreSQL not running).
    type Peer = (&'static str, bool, bool, u64);

    /// Node `me` at WAL 100; the key `{leader: pg1, sync_standby: voters, quorum}`.
    #[track_caller]
    fn check(me: &str, voters: &str, quorum: u32, peers: &[Peer], expected: Result<(), &str>) {
        let cfg = HaConfig {
            name: me.into(),
            ttl: std::time::Duration::from_secs(30),
            paused: false,
            nofailover: false,
            failover_priority: 1,
            maximum_lag_on_failover: 1 << 20,
            use_pg_rewind: false,
            remove_data_directory_on_rewind_failure: false,
            check_timeline: false,
            synchronous_mode: SynchronousMode::Quorum,
            replicatefrom: None,
            standby_cluster: false,
            clone_without_leader: false,
            primary_start_timeout: std::time::Duration::from_secs(300),
        };
        let wal = WalPosition::Replica {
            received: Some(Lsn(100)),
            replayed: Some(Lsn(100)),
            replayed_timestamp: None,
            paused: false,
            latest_end: None,
        };
        let status = PgStatus { state: PgState::Running, role: Role::Replica, wal, ..PgStatus::default() };
        let obs = Observation {
            data_dir: DataDir::Empty,
            pg: PgProcess::Running(Box::new(status)),
            holds_lease: false,
            leader_key_is_mine: false,
            dcs_ok: true,
            action: None,
            peers: peers
                .iter()
                .map(|(name, is_primary, reachable, wal)| PeerReport {
                    name: name.to_string(),
                    member: MemberData::default(),
                    reachable: *reachable,
                    is_primary: *is_primary,
                    wal: Some(Lsn(*wal)),
                    watchdog_failed: false,
                })
                .collect(),
            following: None,
            rewind_failed: false,
            rewind_incomplete: false,
            race_backoff: None,
            restore_incomplete: false,
            watchdog_usable: true,
            primary_down_for: None,
            primary_start_failed: false,
        };
        let mut view = ClusterView::default();
        let value = SyncData {
            leader: Some("pg1".into()),
            sync_standby: (!voters.is_empty()).then(|| voters.to_string()),
            quorum,
        };
        view.sync = Some(Versioned { value, mod_rev: 5 });
        let res = quorum_votes(&obs, &view, &cfg);
        match expected {
            Ok(()) => assert_eq!(res, Ok(()), "{me} with {peers:?}"),
            Err(text) => {
                let why = res.expect_err("the candidate must refuse");
                assert!(why.starts_with(text), "{why:?} does not start with {text:?}");
            }
        }
    }

    #[test]
    fn voter_with_a_vote_from_the_other_voter_may_promote() {
        check("pg2", "pg2,pg3", 1, &[("pg3", false, true, 100)], Ok(()));
        check("pg2", "pg2,pg3", 1, &[("pg3", false, true, 90)], Ok(()));
    }

    #[test]
    fn voter_refuses_without_enough_votes() {
        // pg3 is gone: it may hold a commit pg2 lacks.
        check("pg2", "pg2,pg3", 1, &[], Err("0 of the 1 quorum votes"));
        check("pg2", "pg2,pg3", 1, &[("pg3", false, false, 100)], Err("0 of the 1 quorum votes"));
        // Member key without a running PostgreSQL: no position, no vote.
        check("pg2", "pg2,pg3", 1, &[("pg3", false, true, 0)], Err("0 of the 1 quorum votes"));
        // A voter ahead of us is no vote.
        check("pg2", "pg2,pg3", 1, &[("pg3", false, true, 200)], Err("0 of the 1 quorum votes"));
        // A still-running primary is no vote.
        check("pg2", "pg2,pg3", 1, &[("pg3", true, true, 100)], Err("0 of the 1 quorum votes"));
        check("pg2", "pg2,pg3,pg4", 2, &[("pg3", false, true, 100)], Err("1 of the 2 quorum votes"));
    }

    #[test]
    fn non_voters_never_vote() {
        check("pg2", "pg2,pg3", 1, &[("pg4", false, true, 50)], Err("0 of the 1 quorum votes"));
    }

    #[test]
    fn former_leader_running_as_replica_votes() {
        check("pg2", "pg2,pg3", 1, &[("pg1", false, true, 100)], Ok(()));
    }

    #[test]
    fn outsider_needs_one_more_vote() {
        check("pg4", "pg2,pg3", 1, &[("pg2", false, true, 100)], Err("0 of the 1 quorum votes"));
        check("pg4", "pg2,pg3", 1, &[("pg2", false, true, 100), ("pg3", false, true, 100)], Ok(()));
        // With only the old primary in the set, an outsider needs the old primary's vote.
        check("pg4", "", 0, &[], Err("0 of the 0 quorum votes"));
        check("pg4", "", 0, &[("pg1", false, true, 100)], Ok(()));
    }

    #[test]
    fn sole_voter_with_quorum_zero_promotes_alone() {
        check("pg2", "pg2", 0, &[], Ok(()));
    }

    #[test]
    fn former_leader_needs_nobody_unless_someone_is_ahead() {
        check("pg1", "pg2,pg3", 1, &[], Ok(()));
        check("pg1", "pg2,pg3", 1, &[("pg2", false, true, 200)], Err("0 of the 1 quorum votes"));
    }
}

#[cfg(test)]
mod race_peers_tests {
    use super::*;
    use crate::dcs::view::FailoverData;
    use crate::dcs::view::LeaderKey;
    use crate::dcs::view::Versioned;
    use crate::status::PgState;
    use crate::status::PgStatus;

    /// Who asks peers live: (leader key held by someone, our role or None when stopped, paused, nofailover,
    /// failover key present, store trusted).
    #[track_caller]
    fn check(
        leader: bool,
        role: Option<Role>,
        paused: bool,
        nofailover: bool,
        failover: Option<Option<&str>>,
        dcs_ok: bool,
        want: bool,
    ) {
        let mut view = ClusterView::default();
        if leader {
            view.leader = Some(LeaderKey {
                name: "pg1".into(),
                session: None,
                create_rev: 1,
                mod_rev: 1,
                ..LeaderKey::default()
            });
        }
        if let Some(member) = failover {
            let value = FailoverData { leader: None, member: member.map(str::to_string), scheduled_at: None };
            view.failover = Some(Versioned { value, mod_rev: 4 });
        }
        let pg = match role {
            Some(role) => {
                PgProcess::Running(Box::new(PgStatus { state: PgState::Running, role, ..PgStatus::default() }))
            }
            None => PgProcess::Stopped,
        };
        let cfg = HaConfig {
            name: "pg2".into(),
            ttl: std::time::Duration::from_secs(30),
            paused,
            nofailover,
            failover_priority: if nofailover { 0 } else { 1 },
            maximum_lag_on_failover: 1 << 20,
            use_pg_rewind: false,
            remove_data_directory_on_rewind_failure: false,
            check_timeline: false,
            synchronous_mode: SynchronousMode::Quorum,
            replicatefrom: None,
            standby_cluster: false,
            clone_without_leader: false,
            primary_start_timeout: std::time::Duration::from_secs(300),
        };
        assert_eq!(races_for_vacant_key(&view, &pg, &cfg, dcs_ok), want);
    }

    #[test]
    fn only_a_replica_about_to_race_asks_its_peers() {
        let replica = Some(Role::Replica);
        check(false, replica, false, false, None, true, true);
        // A leader exists: follow it, no race.
        check(true, replica, false, false, None, true, false);
        // Already primary: takes the key without judging peers; stopped: starts first.
        check(false, Some(Role::Primary), false, false, None, true, false);
        check(false, None, false, false, None, true, false);
        // Paused, or a store we do not trust: nobody races.
        check(false, replica, true, false, None, true, false);
        check(false, replica, false, false, None, false, false);
        // nofailover races only where a failover key may name it.
        check(false, replica, false, true, None, true, false);
        check(false, replica, false, true, Some(Some("pg3")), true, true);
        check(false, replica, false, true, Some(None), true, true);
        // The named candidate takes the key without judging its peers: it asks nobody.
        check(false, replica, false, false, Some(Some("pg2")), true, false);
        check(false, replica, false, true, Some(Some("pg2")), true, false);
    }
}
