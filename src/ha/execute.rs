//! The executor: carries out a [`Decision`](super::types::Decision)'s actions in order.
//!
//! Short actions (lease writes, demotion without the lock, clearing the failover key) run
//! inline; long ones (bootstrap, clone, start, rewind, promote, graceful demote) run as
//! spawned tasks so a dropped future can never leave them half done, and the loop sees them
//! as "in progress". The first failing action stops the rest.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::error;
use tracing::info;
use tracing::warn;
use tracing::Instrument;

use super::publish;
use super::types::Action;
use super::types::ActionKind;
use super::types::DemoteMode;
use super::types::Observation;
use super::types::REMOTE_PRIMARY;
use super::ActionOutcome;
use super::Following;
use super::HaSettings;
use crate::config::dynamic::Timing;
use crate::dcs::view::ClusterView;
use crate::dcs::view::MemberData;
use crate::dcs::Dcs;
use crate::postgres::slots::desired_slots;
use crate::postgres::slots::slot_name;
use crate::postgres::slots::IgnoreMatcher;
use crate::postgres::slots::LeaderSlots;
use crate::postgres::slots::PermanentSlot;
use crate::postgres::slots::SlotKind;
use crate::postgres::slots::SlotMember;
use crate::postgres::slots::SlotPlanInput;
use crate::postgres::slots::SlotRetention;
use crate::postgres::slots::SlotRole;
use crate::postgres::supervisor::ConnTarget;
use crate::postgres::supervisor::StartRole;
use crate::postgres::supervisor::StopMode;
use crate::postgres::supervisor::Supervisor;
use crate::status::PgStatus;
use crate::status::Role;

/// What the executor needs.
pub struct Context<'a> {
    /// Local settings.
    pub settings: &'a HaSettings,
    /// The store.
    pub dcs: &'a Dcs,
    /// PostgreSQL.
    pub pg: &'a Supervisor,
    /// The view the decision was made on: the only view the executor reads.
    pub view: &'a ClusterView,
    /// Maintenance mode (published in the member key).
    pub paused: bool,
    /// Timers.
    pub timing: Timing,
    /// Synchronous replication policy.
    pub sync_policy: super::sync::SyncPolicy,
    /// The dynamic `slots:` (valid entries; the configuration refuses invalid ones).
    pub permanent_slots: Vec<PermanentSlot>,
    /// The dynamic `ignore_slots`.
    pub ignore_slots: Vec<IgnoreMatcher>,
    /// The dynamic `standby_cluster`: this cluster's leader follows that remote primary.
    pub standby: Option<crate::config::StandbyCluster>,
    /// `slots`/`ignore_slots` in the store could not be read: keep unknown slots (see `DynamicView`).
    pub slots_unreadable: bool,
}

/// What happened.
#[derive(Default)]
pub struct ExecResult {
    /// A store write succeeded.
    pub dcs_contacted: bool,
    /// The member key was written (no separate touch needed).
    pub member_touched: bool,
    /// Whom PostgreSQL follows now.
    pub following: Following,
    /// This node holds the leader key after the actions: the snapshot's answer, updated by this
    /// cycle's own lease writes (the snapshot predates them).
    pub holds_key: bool,
    /// A long action was started.
    pub spawned: Option<(ActionKind, JoinHandle<ActionOutcome>)>,
    /// PostgreSQL stopped being primary.
    pub demoted: bool,
    /// Forget an earlier rewind failure.
    pub clear_rewind_failed: bool,
}

/// Runs `actions` in order, against the snapshot the decision saw.
pub async fn run(ctx: &Context<'_>, actions: &[Action], obs: &Observation) -> ExecResult {
    let mut res = ExecResult { holds_key: obs.leader_key_is_mine, ..ExecResult::default() };
    let pg_status = publish::status_without_probe(&obs.pg, &obs.data_dir, crate::status::PgState::Running);
    let pg_status = publish::standby_leader_role(pg_status, ctx.standby.is_some(), obs.leader_key_is_mine);
    let member = ctx.settings.member_data(&pg_status, ctx.paused);
    let is_primary = obs.pg.role() == Some(Role::Primary);
    for action in actions {
        if res.spawned.is_some() && is_long(action) {
            break;
        }
        let ok = match action {
            Action::RenewLease => lease_write(ctx, &mut res, LeaseWrite::Renew, &member, &pg_status, is_primary).await,
            Action::AcquireLease => {
                lease_write(ctx, &mut res, LeaseWrite::Acquire, &member, &pg_status, is_primary).await
            }
            Action::TakeOverLease => {
                lease_write(ctx, &mut res, LeaseWrite::TakeOver, &member, &pg_status, is_primary).await
            }
            Action::ReleaseLease => match ctx.dcs.release_leader(None, ctx.timing.retry_timeout).await {
                Ok(_) => {
                    res.dcs_contacted = true;
                    res.holds_key = false;
                    true
                }
                Err(e) => {
                    warn!(error = %e, "failed to release the leader lock");
                    false
                }
            },
            Action::Demote(DemoteMode::ImmediateNoLock) => {
                demote_now(ctx.pg).await;
                res.demoted = true;
                true
            }
            Action::ResetBootstrap => {
                reset_bootstrap(ctx).await;
                res.holds_key = false;
                true
            }
            Action::ClearFailover => {
                if let Some(failover) = ctx.view.failover.as_ref() {
                    if let Err(e) = ctx.dcs.clear_failover(failover.mod_rev, ctx.timing.retry_timeout).await {
                        warn!(error = %e, "failed to clear the failover key");
                    }
                }
                true
            }
            long => {
                match spawn_long(ctx, long, &pg_status) {
                    Some(spawned) => {
                        if matches!(long, Action::Demote(DemoteMode::Graceful)) {
                            res.demoted = true;
                        }
                        if matches!(long, Action::WipeAndClone(_) | Action::StartReplica { .. }) {
                            res.clear_rewind_failed = true;
                        }
                        res.spawned = Some(spawned);
                    }
                    None => warn!(?long, "cannot run this action now"),
                }
                true
            }
        };
        if !ok {
            break;
        }
    }
    let standby_leader = ctx.standby.is_some() && obs.pg.role() == Some(Role::Replica) && res.holds_key;
    if is_primary && res.dcs_contacted && !res.demoted && res.holds_key {
        ensure_member_slots(ctx).await;
        maintain_sync(ctx, &pg_status).await;
    } else if standby_leader && res.dcs_contacted && res.spawned.is_none() {
        // The standby leader keeps its members' slots, as a primary does (physical permanent slots only).
        ensure_member_slots(ctx).await;
    } else if obs.pg.role() == Some(Role::Replica) && res.spawned.is_none() && !res.demoted {
        drop_replica_slots(ctx).await;
    }
    res
}

/// Carries out this cycle's synchronous replication plan in Patroni's order: narrow the `sync`
/// key, then change `synchronous_standby_names`, then widen the key (see `ha::sync`).
async fn maintain_sync(ctx: &Context<'_>, pg_status: &PgStatus) {
    let current_guc = match ctx.pg.synchronous_standby_names().await {
        Ok(value) => value,
        Err(e) => {
            warn!(error = %e, "failed to read synchronous_standby_names");
            return;
        }
    };
    let primary_lsn = pg_status.wal.furthest().map(|l| l.0).unwrap_or(0);
    let plan = super::sync::plan(
        ctx.view,
        &ctx.settings.name,
        &pg_status.replication,
        primary_lsn,
        &current_guc,
        &ctx.sync_policy,
    );
    if plan.is_empty() {
        return;
    }
    info!(?plan, "synchronous replication change");
    let timeout = ctx.timing.retry_timeout;
    let mut mod_rev = ctx.view.sync.as_ref().map(|s| s.mod_rev);
    if let Some(key) = &plan.key_before {
        match ctx.dcs.write_sync(key.as_ref(), mod_rev, timeout).await {
            // Our own write is the key's version now (a delete leaves it absent).
            Ok(Some(rev)) => mod_rev = key.as_ref().map(|_| rev),
            Ok(None) => {
                warn!("sync key changed concurrently; retrying next cycle");
                return;
            }
            Err(e) => {
                warn!(error = %e, "failed to write the sync key; keeping synchronous_standby_names as is");
                return;
            }
        }
    }
    if let Some(guc) = &plan.guc {
        if let Err(e) = ctx.pg.set_synchronous_standby_names(guc.as_deref()).await {
            warn!(error = %e, "failed to set synchronous_standby_names");
            return;
        }
    }
    if let Some(key) = &plan.key_after {
        if let Err(e) = ctx.dcs.write_sync(Some(key), mod_rev, timeout).await {
            warn!(error = %e, "failed to publish the confirmed synchronous standby");
        }
    }
}

fn is_long(action: &Action) -> bool {
    !matches!(
        action,
        Action::RenewLease
            | Action::AcquireLease
            | Action::TakeOverLease
            | Action::ReleaseLease
            | Action::ClearFailover
            | Action::Demote(DemoteMode::ImmediateNoLock)
    )
}

#[derive(Debug, Clone, Copy)]
enum LeaseWrite {
    Renew,
    Acquire,
    TakeOver,
}

/// A lease write; when the lock turns out to be someone else's while we run a primary, we
/// demote at once (Patroni: "demoted self because failed to update leader lock in DCS").
async fn lease_write(
    ctx: &Context<'_>,
    res: &mut ExecResult,
    kind: LeaseWrite,
    member: &MemberData,
    pg_status: &PgStatus,
    is_primary: bool,
) -> bool {
    let (ttl, timeout) = (ctx.timing.ttl, ctx.timing.retry_timeout);
    let outcome = match kind {
        LeaseWrite::Renew => {
            let status = publish::status_data(pg_status, ctx.view.status.as_ref());
            let lease_left = ctx.dcs.lease().leader_remaining(tokio::time::Instant::now());
            ctx.dcs.renew_leader(member, status.as_ref(), ttl, ctx.timing.renewal_timeout(lease_left)).await
        }
        LeaseWrite::Acquire => ctx.dcs.acquire_leader(member, ttl, timeout).await,
        LeaseWrite::TakeOver => ctx.dcs.take_over_leader(member, ttl, timeout).await,
    };
    match outcome {
        Ok(true) => {
            res.dcs_contacted = true;
            res.member_touched = true;
            res.holds_key = true;
            if !matches!(kind, LeaseWrite::Renew) {
                info!(?kind, fencing_token = ?ctx.dcs.lease().fencing_token, "holding the leader lock");
            }
            true
        }
        Ok(false) => {
            res.dcs_contacted = true;
            res.holds_key = false;
            if is_primary {
                error!(?kind, "the leader lock belongs to someone else; demoting self now");
                demote_now(ctx.pg).await;
                res.demoted = true;
            } else {
                info!(?kind, "did not get the leader lock");
            }
            false
        }
        Err(e) => {
            warn!(?kind, error = %e, "leader lock write not confirmed; the lease runs out on its own");
            false
        }
    }
}

/// Stops a primary that may no longer write: immediate mode, the lock is not touched.
pub async fn demote_now(pg: &Supervisor) {
    // UNSAFE CHAOS BREAK (test only, `raftgres chaos --break no-demote`): skip the demotion.
    if crate::chaos::unsafe_break_no_demote() {
        return;
    }
    match pg.stop(StopMode::Immediate).await {
        Ok(()) => pg.mark_demoted(),
        Err(e) => error!(error = %e, "failed to stop postgres while demoting; a human must check this node"),
    }
}

async fn ensure_member_slots(ctx: &Context<'_>) {
    let members = member_slots(ctx, SlotRole::Leader);
    let own = slot_name(&ctx.settings.name);
    let permanent: Vec<PermanentSlot> = match ctx.standby {
        Some(_) => ctx.permanent_slots.iter().filter(|slot| slot.kind == SlotKind::Physical).cloned().collect(),
        None => ctx.permanent_slots.clone(),
    };
    let wanted = LeaderSlots {
        own: &own,
        members: &members,
        permanent: &permanent,
        ignore: &ctx.ignore_slots,
        paused: ctx.paused || ctx.slots_unreadable,
    };
    if let Err(e) = ctx.pg.maintain_slots(&wanted).await {
        warn!(error = %e, "failed to maintain replication slots");
    }
}

/// The physical slots of the members that stream from this node: on the leader every member not tagged `nostream`
/// whose `replicatefrom` does not name another existing member; on a replica the members whose `replicatefrom`
/// names it (cascading replication). Slots are not kept for members that stream elsewhere: nothing advances them.
fn member_slots(ctx: &Context<'_>, role: SlotRole) -> BTreeSet<String> {
    let members: Vec<SlotMember> = ctx
        .view
        .members
        .iter()
        .map(|(name, member)| SlotMember {
            name: name.clone(),
            nostream: member.tag_bool("nostream"),
            replicatefrom: member.tags.get("replicatefrom").and_then(serde_json::Value::as_str).map(str::to_owned),
        })
        .collect();
    let none = BTreeSet::new();
    let input = SlotPlanInput {
        me: &ctx.settings.name,
        role,
        nofailover: false,
        leader: ctx.view.leader.as_ref().map(|l| l.name.as_str()),
        members: &members,
        retention: SlotRetention::StreamingOnly,
        retain_slots: &none,
    };
    let desired = desired_slots(&input);
    for (slot, names) in &desired.conflicts {
        error!(slot, ?names, "several members map to one replication slot name; rename one of them");
    }
    desired.slots
}

/// Undoes a custom bootstrap an earlier process did not finish (`Action::ResetBootstrap`): stop PostgreSQL,
/// empty the data directory (which removes the marker), release the key if we hold it, and clear an
/// `initialize` still empty (the race this node won), so that a bootstrap starts over. Failures are retried by
/// the next cycles, which decide the same while the marker exists.
async fn reset_bootstrap(ctx: &Context<'_>) {
    warn!("a custom bootstrap did not finish in an earlier process; removing its data directory to start over");
    if let Err(e) = ctx.pg.stop(StopMode::Immediate).await {
        warn!(error = %e, "failed to stop postgres");
        return;
    }
    if let Err(e) = ctx.pg.wipe_data_dir().await {
        warn!(error = %e, "failed to remove the data directory of the interrupted bootstrap");
        return;
    }
    let timeout = ctx.timing.retry_timeout;
    if ctx.dcs.leader_key_is_mine(ctx.view) {
        if let Err(e) = ctx.dcs.release_leader(None, timeout).await {
            warn!(error = %e, "failed to release the leader key");
        }
    }
    if ctx.view.initialize.as_deref() == Some("") && ctx.view.leader.is_none() {
        if let Err(e) = ctx.dcs.cancel_initialization(timeout).await {
            warn!(error = %e, "failed to clear the initialize key");
        }
    }
}

/// A replica keeps only the slots of members cascading from it (raftgres does not advance slots on replicas, so
/// a slot left from the node's time as primary would hold WAL for ever): every other slot not matched by
/// `ignore_slots` is dropped, outside pause. The new primary creates the member and permanent slots after a
/// promotion.
async fn drop_replica_slots(ctx: &Context<'_>) {
    let cascading = member_slots(ctx, SlotRole::Replica);
    let own = slot_name(&ctx.settings.name);
    let wanted = LeaderSlots {
        own: &own,
        members: &cascading,
        permanent: &[],
        ignore: &ctx.ignore_slots,
        paused: ctx.paused || ctx.slots_unreadable,
    };
    if let Err(e) = ctx.pg.maintain_slots(&wanted).await {
        warn!(error = %e, "failed to drop the replica's replication slots");
    }
}

/// The remote primary of `standby_cluster` and the slot to stream through on it, when this is a standby cluster.
fn remote_primary(ctx: &Context<'_>) -> Option<(super::long::Upstream, Option<String>)> {
    let standby = ctx.standby.as_ref()?;
    let target = ConnTarget { host: standby.host.clone(), port: standby.port };
    Some((super::long::Upstream { name: REMOTE_PRIMARY.to_owned(), target }, standby.primary_slot_name.clone()))
}

/// Where a replica streams from (`name` a member, or [`REMOTE_PRIMARY`] for a standby leader) and through which
/// slot there: its own on a member; `standby_cluster.primary_slot_name` on the remote primary.
fn stream_from(ctx: &Context<'_>, name: &str, my_slot: String) -> Option<(ConnTarget, Option<String>)> {
    if name == REMOTE_PRIMARY {
        return remote_primary(ctx).map(|(remote, slot)| (remote.target, slot));
    }
    Some((target_of(ctx.view, name)?, Some(my_slot)))
}

/// Whom this node streams from when `leader` leads (see `decide::upstream`).
pub(super) fn follow_target(view: &ClusterView, settings: &HaSettings, leader: &str) -> String {
    let replicatefrom = settings.tags.get("replicatefrom").and_then(serde_json::Value::as_str);
    super::decide::upstream_of(view, &settings.name, replicatefrom, leader)
}

/// Member `name` with its PostgreSQL address.
pub(super) fn upstream_target(view: &ClusterView, name: &str) -> Option<super::long::Upstream> {
    Some(super::long::Upstream { name: name.to_owned(), target: target_of(view, name)? })
}

/// The PostgreSQL address of member `name` from its member key (the one place a member becomes a
/// connection target).
pub(super) fn target_of(view: &ClusterView, name: &str) -> Option<ConnTarget> {
    let (host, port) = view.members.get(name)?.host_port()?;
    Some(ConnTarget { host, port })
}

fn spawn_long(
    ctx: &Context<'_>,
    action: &Action,
    pg_status: &PgStatus,
) -> Option<(ActionKind, JoinHandle<ActionOutcome>)> {
    let pg = ctx.pg.clone();
    let dcs = ctx.dcs.clone();
    let settings = ctx.settings.clone();
    let timing = ctx.timing;
    let my_slot = slot_name(&ctx.settings.name);
    let span = tracing::info_span!("action");
    let (kind, fut): (ActionKind, std::pin::Pin<Box<dyn std::future::Future<Output = ActionOutcome> + Send>>) =
        match action {
            Action::Bootstrap => match remote_primary(ctx) {
                None => (ActionKind::Bootstrap, Box::pin(super::long::bootstrap(pg, dcs, settings, timing))),
                Some((remote, slot)) => (
                    ActionKind::Bootstrap,
                    Box::pin(super::long::bootstrap_standby(pg, dcs, settings, timing, remote, slot)),
                ),
            },
            Action::CloneFrom(source) | Action::WipeAndClone(source) => {
                let source = upstream_target(ctx.view, source)?;
                let leader = ctx.view.leader.as_ref().map_or(source.name.as_str(), |l| l.name.as_str());
                let follow = upstream_target(ctx.view, &follow_target(ctx.view, ctx.settings, leader))?;
                let wipe = matches!(action, Action::WipeAndClone(_));
                (ActionKind::Clone, Box::pin(super::long::clone(pg, source, follow, my_slot, wipe)))
            }
            Action::StartPrimary => {
                (ActionKind::Start, Box::pin(super::long::start(pg, StartRole::Primary, Following::Unchanged)))
            }
            Action::StartReplica { leader: Some(leader), rewind } => {
                let (target, slot) = stream_from(ctx, leader, my_slot)?;
                let role = StartRole::Replica { primary: target.clone(), slot };
                let kind = if *rewind { ActionKind::Rewind } else { ActionKind::Start };
                let rewind_from = rewind.then_some(target);
                (kind, Box::pin(super::long::start_replica(pg, role, leader.clone(), rewind_from)))
            }
            Action::RewindReplica(leader) => {
                let target = target_of(ctx.view, leader)?;
                let role = StartRole::Replica { primary: target.clone(), slot: Some(my_slot) };
                (ActionKind::Rewind, Box::pin(super::long::rewind_running_replica(pg, role, leader.clone(), target)))
            }
            Action::StartReplica { leader: None, .. } => {
                (ActionKind::Start, Box::pin(super::long::start(pg, StartRole::Standby, Following::Nobody)))
            }
            Action::Follow(leader) => {
                let (target, slot) = stream_from(ctx, leader, my_slot)?;
                let role = StartRole::Replica { primary: target, slot };
                (ActionKind::Restart, Box::pin(super::long::restart(pg, role, leader.clone())))
            }
            Action::Promote => {
                let timeout = timing.retry_timeout.max(Duration::from_secs(10));
                let sync = ctx.sync_policy;
                (
                    ActionKind::Promote,
                    Box::pin(super::long::promote(pg, dcs, settings.name.clone(), timeout, timing, sync)),
                )
            }
            Action::Demote(DemoteMode::Graceful) => {
                let status = publish::status_data(pg_status, ctx.view.status.as_ref());
                (ActionKind::Demote, Box::pin(super::long::graceful_demote(pg, dcs, status, timing)))
            }
            _ => return None,
        };
    Some((kind, tokio::spawn(fut.instrument(span))))
}
