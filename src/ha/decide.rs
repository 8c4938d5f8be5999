//! PURE: the HA decision. Given what this cycle observed, the cluster view and the policy,
//! say what to do and why, in Patroni's words.
//!
//! No I/O, no async, no clock reads: `now` is a parameter. Safety rules encoded here:
//! 1. Only the holder of the leader key runs PostgreSQL as a writable primary: a primary that
//!    sees another member's key demotes immediately, without touching the lock.
//! 2. The vacant key is raced for only by the healthiest eligible replica (not `nofailover`, not
//!    lagging beyond `maximum_lag_on_failover`, nobody reachable ahead of it, no live primary).
//! 3. A long action never runs twice; while it runs the holder keeps renewing its lease.
//! 4. With `watchdog.mode: required`, a node whose watchdog cannot be armed (`Observation::watchdog_usable`)
//!    never bootstraps, races, takes over or promotes; holding the key, it releases it (and stops first if it
//!    is a primary). The executor arms the watchdog after each key write before a promotion runs on it.
//! 5. A key holder whose PostgreSQL has not run as a primary for longer than `primary_start_timeout` (at once
//!    with 0; crashes, failed starts and a start still in progress all count) gives the key up when another
//!    member can take over (`candidate::failover_candidates`), stopping a start in progress first, and keeps
//!    trying otherwise; it then stays out of the race for a ttl (see [`start_deadline`]).
//!
//! The lease itself is enforced outside this function as well: the executor's fence demotes
//! a primary when its lease runs out even if no cycle runs (see `ha::fence`).

use std::time::Duration;
use std::time::SystemTime;

use super::candidate;
use super::types::Action;
use super::types::DataDir;
use super::types::Decision;
use super::types::DemoteMode;
use super::types::HaConfig;
use super::types::Observation;
use super::types::PgProcess;
use super::types::RaceBackoff;
use super::types::Reason;
use super::types::REMOTE_PRIMARY;
use crate::dcs::view::ClusterView;
use crate::status::Role;
use crate::status::WalPosition;

/// Decides one HA cycle.
pub fn decide(obs: &Observation, view: &ClusterView, cfg: &HaConfig, now: SystemTime) -> Decision {
    let decision = decide_inner(obs, view, cfg, now);
    if cfg.paused && !matches!(decision.reason, Reason::Paused(_)) {
        return Decision { actions: decision.actions, reason: Reason::Paused(Box::new(decision.reason)) };
    }
    decision
}

fn decide_inner(obs: &Observation, view: &ClusterView, cfg: &HaConfig, now: SystemTime) -> Decision {
    if let Some(kind) = obs.action {
        if obs.leader_key_is_mine {
            return Decision::new(vec![Action::RenewLease], Reason::InProgressRenewing(kind));
        }
        return Decision::idle(Reason::InProgress(kind));
    }
    if obs.restore_incomplete {
        // Never race, promote or serve a half-recovered restore: start the bootstrap over.
        return Decision::new(vec![Action::ResetBootstrap], Reason::ResettingBootstrap);
    }
    if !obs.dcs_ok {
        let primary = obs.pg.role() == Some(Role::Primary);
        if primary && !obs.holds_lease && !cfg.paused {
            return Decision::new(vec![Action::Demote(DemoteMode::ImmediateNoLock)], Reason::DemotingDcsNotAccessible);
        }
        return Decision::idle(Reason::DcsNotAccessible);
    }
    match &obs.data_dir {
        DataDir::Empty => return empty_data_dir(obs, view, cfg),
        DataDir::Invalid(why) => return Decision::idle(Reason::InvalidDataDir(why.clone())),
        DataDir::Initialized { system_id, .. } => {
            if let Some(init) = view.initialize.as_deref().filter(|i| !i.is_empty()) {
                if init != system_id.to_string() {
                    return Decision::idle(Reason::SystemIdMismatch(system_id.to_string(), init.to_string()));
                }
            }
        }
    }
    match &obs.pg {
        PgProcess::Stopped => stopped(obs, view, cfg),
        PgProcess::Unresponsive | PgProcess::Starting => unresponsive(obs, view, cfg),
        PgProcess::Running(status) => running(obs, view, cfg, status.role, now),
    }
}

/// PostgreSQL runs but does not answer (still recovering towards a consistent state, or hung).
/// With another member holding the leader key, a server that does not follow that leader is
/// dealt with as if it answered: a replica configured for a former leader is restarted to follow
/// the current one (streaming from a former leader it might never reach consistency and would
/// wait forever), and a server we do not know to be a replica (a former primary, or one adopted
/// after a restart of raftgres) is stopped, so the next cycle starts it as a replica, with
/// pg_rewind if its control file says it was a primary.
fn unresponsive(obs: &Observation, view: &ClusterView, cfg: &HaConfig) -> Decision {
    if obs.leader_key_is_mine {
        // Only a server still starting (crash recovery) is timed: one that started and stopped answering is not
        // failed over for a slow probe.
        if obs.pg == PgProcess::Starting && !cfg.paused && !cfg.standby_cluster {
            return match start_deadline(obs, view, cfg) {
                StartDeadline::Left(_) => {
                    Decision::new(vec![Action::RenewLease], Reason::StillStarting(cfg.primary_start_timeout))
                }
                StartDeadline::FailOver(candidates) => Decision::new(
                    vec![Action::Demote(DemoteMode::ImmediateNoLock), Action::GiveUpLease],
                    timed_out(obs, cfg, candidates),
                ),
                StartDeadline::NoFailover => Decision::new(vec![Action::RenewLease], Reason::StartTimedOutNoFailover),
            };
        }
        return Decision::new(vec![Action::RenewLease], Reason::LeaderWithLock);
    }
    let Some(leader) = view.leader.as_ref().filter(|l| l.name != cfg.name && !cfg.paused) else {
        return Decision::idle(Reason::WaitingForLeader);
    };
    let name = upstream(view, cfg, &leader.name);
    match obs.following.as_deref() {
        Some(following) if following == name => Decision::idle(Reason::FollowingLeader(name)),
        Some(_) => Decision::new(vec![Action::Follow(name.clone())], Reason::FollowingLeader(name)),
        None => Decision::new(vec![Action::Demote(DemoteMode::ImmediateNoLock)], Reason::StoppingUnresponsive(name)),
    }
}

/// No data yet: bootstrap a new cluster or clone from the leader.
fn empty_data_dir(obs: &Observation, view: &ClusterView, cfg: &HaConfig) -> Decision {
    if cfg.paused {
        return Decision::idle(Reason::WaitingForLeader);
    }
    let mut actions = Vec::new();
    if obs.leader_key_is_mine {
        actions.push(Action::ReleaseLease);
    }
    match (&view.initialize, &view.leader) {
        // A node that may not lead (nofailover, a required watchdog it cannot arm) waits for another to bootstrap.
        (None, None) if !cfg.nofailover && !candidate::watchdog_blocks_leading(obs, cfg) => {
            actions.push(Action::Bootstrap);
            let reason = if cfg.standby_cluster { Reason::BootstrappingStandby } else { Reason::Bootstrapping };
            Decision::new(actions, reason)
        }
        (Some(init), Some(leader)) if !init.is_empty() && leader.name != cfg.name => {
            if view.members.contains_key(&leader.name) {
                let source = clone_source(view, &cfg.name, &leader.name);
                let reason = if source == leader.name {
                    Reason::CloningFrom(source.clone())
                } else {
                    Reason::CloningFromReplica(source.clone())
                };
                actions.push(Action::CloneFrom(source));
                Decision::new(actions, reason)
            } else {
                without_leader(actions, cfg)
            }
        }
        (Some(init), _) if !init.is_empty() => without_leader(actions, cfg),
        _ => Decision::new(actions, Reason::WaitingForBootstrap),
    }
}

/// An initialized cluster with no member to clone from: a `no_leader` replica method restores the data directory
/// from a backup (Patroni's "bootstrap (without leader)"); otherwise wait for a leader.
fn without_leader(mut actions: Vec<Action>, cfg: &HaConfig) -> Decision {
    if !cfg.clone_without_leader {
        return Decision::new(actions, Reason::WaitingForLeader);
    }
    actions.push(Action::CloneWithoutLeader);
    Decision::new(actions, Reason::CloningWithoutLeader)
}

/// Data directory present, PostgreSQL not running.
fn stopped(obs: &Observation, view: &ClusterView, cfg: &HaConfig) -> Decision {
    let was_primary = matches!(obs.data_dir, DataDir::Initialized { was_primary: true, .. });
    // A former primary, or a stopped replica whose data went past the point where the cluster's timeline forked
    // off its own: either must be rewound before it can follow.
    let needs_rewind = was_primary || stopped_past_fork(&obs.data_dir, view);
    if cfg.paused {
        let actions = if obs.leader_key_is_mine { vec![Action::ReleaseLease] } else { vec![] };
        return Decision::new(actions, Reason::WaitingForLeader);
    }
    let leader = view.leader.as_ref();
    if obs.rewind_incomplete {
        return rewind_incomplete(obs, view, cfg);
    }
    if obs.leader_key_is_mine {
        if cfg.standby_cluster {
            return Decision::new(vec![Action::RenewLease, start_standby_leader()], Reason::StartingStandbyLeader);
        }
        if candidate::watchdog_blocks_leading(obs, cfg) {
            return Decision::new(vec![Action::ReleaseLease], Reason::NotPromotingWithoutWatchdog);
        }
        let reason =
            if was_primary { Reason::StartingPrimaryAfterFailure } else { Reason::PromotingBecauseIHoldTheLock };
        return start_primary(obs, view, cfg, Action::RenewLease, reason);
    }
    match leader {
        Some(l) if l.name == cfg.name && cfg.standby_cluster => {
            Decision::new(vec![Action::TakeOverLease, start_standby_leader()], Reason::StartingStandbyLeader)
        }
        // Our previous process's key, which we may not take over: it expires, then the node starts as a replica.
        Some(l) if l.name == cfg.name && candidate::watchdog_blocks_leading(obs, cfg) => {
            Decision::idle(Reason::NotHealthiest(candidate::WATCHDOG_NOT_USABLE.into()))
        }
        Some(l) if l.name == cfg.name => {
            start_primary(obs, view, cfg, Action::TakeOverLease, Reason::TakingOverOwnLease)
        }
        Some(l) => {
            let name = l.name.clone();
            if obs.rewind_failed && needs_rewind {
                if cfg.remove_data_directory_on_rewind_failure {
                    // A leader still promoting fails the base backup ("the standby was promoted during online
                    // backup"): wipe only once its member key says it runs as the primary.
                    if !leader_serves(view, &name, cfg) {
                        return Decision::idle(Reason::WaitingForLeader);
                    }
                    return Decision::new(vec![Action::WipeAndClone(name.clone())], Reason::CloningFrom(name));
                }
                return Decision::idle(Reason::RewindFailed(name));
            }
            let rewind = needs_rewind && cfg.use_pg_rewind;
            // pg_rewind runs from the leader (the source of the new timeline); a plain start follows the upstream.
            let (reason, source) = if rewind {
                (Reason::Rewinding(name.clone()), name)
            } else {
                (Reason::StartingAsSecondary, upstream(view, cfg, &name))
            };
            Decision::new(vec![Action::StartReplica { leader: Some(source), rewind }], reason)
        }
        // Gave the key up because PostgreSQL would not start as primary: as a standby it might start (a full disk
        // stops a primary's end-of-recovery checkpoint, not a standby's replay) and, with the most WAL, make the
        // healthy replicas wait for it. It stays stopped until another member leads or the backoff ends.
        None if obs.race_backoff == Some(RaceBackoff::GaveUpKey) => {
            Decision::idle(Reason::RaceBackoff(RaceBackoff::GaveUpKey))
        }
        None => Decision::new(vec![Action::StartReplica { leader: None, rewind: false }], Reason::StartingAsSecondary),
    }
}

/// What `primary_start_timeout` allows a key holder whose PostgreSQL does not run as a primary.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StartDeadline {
    /// Time is left: start, or wait for the start, at most this long.
    Left(Duration),
    /// The time is up and these members can take over: give the key up.
    FailOver(Vec<String>),
    /// The time is up but nobody can take over: keep the key and keep trying (a primary that comes back is
    /// better than none).
    NoFailover,
}

/// Patroni's `primary_start_timeout`, counted from the last time this holder's PostgreSQL ran as a primary
/// (`Observation::primary_down_for`). Unlike Patroni, failed starts count as well as a start in progress: a
/// primary whose disk is full fails every start at once and would otherwise keep the key forever (Patroni gives
/// the key up after the first failed start instead, even when no member can take over). With 0 the time is up
/// at the first crash, as in Patroni ("Primary crashed. Failing over.").
///
/// A start that failed outright (PostgreSQL exited: a full disk, a broken configuration) ends the time at once when
/// another member can take over, as Patroni's `post_recover` does; waiting out the timeout would only prolong the
/// outage. Patroni gives the key up even when nobody can take over; here the holder keeps it and keeps trying,
/// which ends the same way (the key is raced for again by the only member able to start) without the churn.
fn start_deadline(obs: &Observation, view: &ClusterView, cfg: &HaConfig) -> StartDeadline {
    let down_for = obs.primary_down_for.unwrap_or_default();
    let left = cfg.primary_start_timeout.checked_sub(down_for).filter(|left| !left.is_zero());
    if let Some(left) = left.filter(|_| !obs.primary_start_failed) {
        return StartDeadline::Left(left);
    }
    if obs.primary_start_failed && !candidate::failover_candidates(view, cfg).is_empty() {
        return StartDeadline::FailOver(candidate::failover_candidates(view, cfg));
    }
    if let Some(left) = left {
        return StartDeadline::Left(left);
    }
    let candidates = candidate::failover_candidates(view, cfg);
    if candidates.is_empty() {
        StartDeadline::NoFailover
    } else {
        StartDeadline::FailOver(candidates)
    }
}

/// The reason for giving the key up after `primary_start_timeout`.
fn timed_out(obs: &Observation, cfg: &HaConfig, candidates: Vec<String>) -> Reason {
    if obs.primary_start_failed && !cfg.primary_start_timeout.is_zero() {
        return Reason::StartFailedFailingOver(candidates);
    }
    if cfg.primary_start_timeout.is_zero() {
        return Reason::FailingOverAfterCrash(candidates);
    }
    let down_for = obs.primary_down_for.unwrap_or_default();
    Reason::StartTimedOut { down_for, timeout: cfg.primary_start_timeout, candidates }
}

/// A key holder (`lease` renews or takes over its key) whose PostgreSQL is stopped starts it as the primary while
/// `primary_start_timeout` allows, gives the key up when it passed and another member can take over, and
/// otherwise keeps trying.
fn start_primary(obs: &Observation, view: &ClusterView, cfg: &HaConfig, lease: Action, reason: Reason) -> Decision {
    match start_deadline(obs, view, cfg) {
        StartDeadline::Left(left) => Decision::new(vec![lease, Action::StartPrimary { within: Some(left) }], reason),
        // Our previous process's key is taken over first, so it can be released rather than left to expire.
        StartDeadline::FailOver(candidates) => {
            let actions = if lease == Action::TakeOverLease {
                vec![Action::TakeOverLease, Action::GiveUpLease]
            } else {
                vec![Action::GiveUpLease]
            };
            Decision::new(actions, timed_out(obs, cfg, candidates))
        }
        StartDeadline::NoFailover => {
            Decision::new(vec![lease, Action::StartPrimary { within: None }], Reason::StartTimedOutNoFailover)
        }
    }
}

/// An interrupted pg_rewind replaced some files with the source's and not others: the data directory is neither
/// the old history nor the new one. Starting it could serve or stream corrupt pages, and a second pg_rewind
/// might no longer find the target's own WAL past the fork. Only a new clone repairs it.
fn rewind_incomplete(obs: &Observation, view: &ClusterView, cfg: &HaConfig) -> Decision {
    let mut actions = if obs.leader_key_is_mine { vec![Action::ReleaseLease] } else { vec![] };
    match view.leader.as_ref().filter(|l| l.name != cfg.name) {
        Some(leader) if cfg.remove_data_directory_on_rewind_failure => {
            actions.push(Action::WipeAndClone(leader.name.clone()));
            Decision::new(actions, Reason::CloningFrom(leader.name.clone()))
        }
        Some(leader) => Decision::new(actions, Reason::RewindIncomplete(leader.name.clone())),
        None => Decision::new(actions, Reason::WaitingForLeader),
    }
}

/// PostgreSQL running and answering.
fn running(obs: &Observation, view: &ClusterView, cfg: &HaConfig, role: Role, now: SystemTime) -> Decision {
    let Some(leader) = view.leader.as_ref() else {
        return candidate::race(obs, view, cfg, role);
    };
    if obs.leader_key_is_mine {
        if cfg.paused {
            if role != Role::Primary {
                return Decision::new(vec![Action::ReleaseLease], Reason::WaitingForLeader);
            }
            return Decision::new(vec![Action::RenewLease], Reason::LeaderWithLock);
        }
        if role != Role::Primary && cfg.standby_cluster {
            // A standby leader: it follows the remote primary and is never promoted while standby_cluster is set.
            if obs.following.as_deref() == Some(REMOTE_PRIMARY) {
                return Decision::new(vec![Action::RenewLease], Reason::StandbyLeaderWithLock);
            }
            let follow = Action::Follow(REMOTE_PRIMARY.to_owned());
            return Decision::new(vec![Action::RenewLease, follow], Reason::StandbyLeaderWithLock);
        }
        if candidate::watchdog_blocks_leading(obs, cfg) {
            return without_watchdog(role);
        }
        if role != Role::Primary {
            return Decision::new(vec![Action::RenewLease, Action::Promote], Reason::PromotingBecauseIHoldTheLock);
        }
        if let Some(decision) = candidate::manual_failover_from_leader(view, cfg, now) {
            return decision;
        }
        return Decision::new(vec![Action::RenewLease], Reason::LeaderWithLock);
    }
    if leader.name == cfg.name {
        if candidate::watchdog_blocks_leading(obs, cfg) {
            // Our previous process's key, which we may not take over: it expires and the others race.
            return match role {
                Role::Primary => {
                    Decision::new(vec![Action::Demote(DemoteMode::ImmediateNoLock)], Reason::DemotingWithoutWatchdog)
                }
                _ => Decision::idle(Reason::NotHealthiest(candidate::WATCHDOG_NOT_USABLE.into())),
            };
        }
        let mut actions = vec![Action::TakeOverLease];
        if role != Role::Primary && !cfg.paused {
            if !cfg.standby_cluster {
                actions.push(Action::Promote);
            } else if obs.following.as_deref() != Some(REMOTE_PRIMARY) {
                actions.push(Action::Follow(REMOTE_PRIMARY.to_owned()));
            }
        }
        return Decision::new(actions, Reason::TakingOverOwnLease);
    }
    if role == Role::Primary {
        if cfg.paused {
            return Decision::idle(Reason::DemotingNotLeader);
        }
        return Decision::new(vec![Action::Demote(DemoteMode::ImmediateNoLock)], Reason::DemotingNotLeader);
    }
    if !cfg.paused && cfg.use_pg_rewind && diverged(&obs.pg, view) {
        let name = leader.name.clone();
        return Decision::new(vec![Action::RewindReplica(name.clone())], Reason::ReplicaDiverged(name));
    }
    let source = upstream(view, cfg, &leader.name);
    if obs.following.as_deref() != Some(source.as_str()) && !cfg.paused {
        return Decision::new(vec![Action::Follow(source.clone())], Reason::FollowingLeader(source));
    }
    Decision::idle(Reason::FollowingLeader(source))
}

/// A node whose required watchdog cannot be armed gives up leading (Patroni's `enforce_primary_role`): a
/// primary stops at once, a replica does not promote, and the key it holds is released for another member.
fn without_watchdog(role: Role) -> Decision {
    match role {
        Role::Primary => Decision::new(
            vec![Action::Demote(DemoteMode::ImmediateNoLock), Action::ReleaseLease],
            Reason::DemotingWithoutWatchdog,
        ),
        _ => Decision::new(vec![Action::ReleaseLease], Reason::NotPromotingWithoutWatchdog),
    }
}

/// Starting the standby leader: as a replica of the remote primary.
fn start_standby_leader() -> Action {
    Action::StartReplica { leader: Some(REMOTE_PRIMARY.to_owned()), rewind: false }
}

/// The member a replica streams from: the one its `replicatefrom` tag names while that member has a member key
/// (cascading replication), else the leader (Patroni's `_get_node_to_follow`).
pub fn upstream(view: &ClusterView, cfg: &HaConfig, leader: &str) -> String {
    upstream_of(view, &cfg.name, cfg.replicatefrom.as_deref(), leader)
}

/// [`upstream`] from the parts (the executor and the API requests have the tags, not an [`HaConfig`]).
pub fn upstream_of(view: &ClusterView, me: &str, replicatefrom: Option<&str>, leader: &str) -> String {
    match replicatefrom {
        Some(from) if from != me && view.members.contains_key(from) => from.to_owned(),
        _ => leader.to_owned(),
    }
}

/// The member a new replica clones from: a running member tagged `clonefrom` other than this one and the leader
/// (the first by name), else the leader (Patroni's `get_clone_member`, which picks one of them at random).
/// Whether the leader's member key says it runs as what a clone may be taken from: a primary (a standby leader
/// in a standby cluster).
fn leader_serves(view: &ClusterView, leader: &str, cfg: &HaConfig) -> bool {
    view.members
        .get(leader)
        .is_some_and(|member| member.is_running() && (cfg.standby_cluster || member.role() == Some(Role::Primary)))
}

pub fn clone_source(view: &ClusterView, me: &str, leader: &str) -> String {
    view.members
        .iter()
        .find(|(name, member)| {
            name.as_str() != me && name.as_str() != leader && member.tag_bool("clonefrom") && member.is_running()
        })
        .map_or_else(|| leader.to_owned(), |(name, _)| name.clone())
}

/// A stopped data directory on an older timeline than the cluster's that holds WAL past the point where the
/// cluster's history forked off its timeline (Patroni's `_check_timeline_and_lsn`): a standby whose minimum
/// recovery point lies past the switch (its start fails with "requested timeline N does not contain minimum
/// recovery point"), a stopped primary whose last checkpoint is at or past it, or a timeline the history does not
/// lead through. Example: a primary fenced after a partition starts as a standby without a leader, replays its
/// own WAL, and is stopped to follow the new leader; pg_control no longer says it was a primary.
fn stopped_past_fork(data_dir: &DataDir, view: &ClusterView) -> bool {
    let DataDir::Initialized { position: Some(position), .. } = data_dir else { return false };
    let (local_timeline, local_lsn) = (position.timeline.0, position.lsn.0);
    if view.history.is_empty() || local_timeline >= view.timeline() {
        return false;
    }
    match view.history.iter().find(|line| line.timeline >= local_timeline) {
        Some(line) if line.timeline == local_timeline && line.switch_lsn > 0 => {
            if position.in_recovery {
                local_lsn > line.switch_lsn
            } else {
                local_lsn >= line.switch_lsn
            }
        }
        // The history leads from an older timeline straight past ours: ours is not on the cluster's path.
        Some(line) if line.timeline > local_timeline => true,
        _ => false,
    }
}

/// A replica that cannot stream because it replayed WAL past the point where the cluster's
/// current timeline forked off its own (after a restart of every node, a lagging replica may
/// have won the race): `history` says timeline `tl` ended at `switch`, and we replayed beyond.
fn diverged(pg: &PgProcess, view: &ClusterView) -> bool {
    let PgProcess::Running(status) = pg else { return false };
    if status.replication_state.as_deref() == Some("streaming") {
        return false;
    }
    let (Some(timeline), WalPosition::Replica { replayed: Some(replayed), .. }) = (status.timeline, &status.wal) else {
        return false;
    };
    if timeline.0 >= view.timeline() {
        return false;
    }
    view.history.iter().any(|line| line.timeline == timeline.0 && line.switch_lsn > 0 && replayed.0 > line.switch_lsn)
}
