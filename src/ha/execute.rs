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
use crate::postgres::slot_positions::slot_targets;
use crate::postgres::slot_positions::slots_to_copy;
use crate::postgres::slot_positions::TargetInput;
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
use crate::postgres::supervisor::SlotWork;
use crate::postgres::supervisor::StartRole;
use crate::postgres::supervisor::StopMode;
use crate::postgres::supervisor::Supervisor;
use crate::status::PgStatus;
use crate::status::Role;
use crate::watchdog::NotArmed;
use crate::watchdog::Watchdog;

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
    /// `member_slots_ttl`: above zero every node keeps (and advances) a slot for every member.
    pub member_slots_ttl: Duration,
    /// The slots this node listed as leader in an earlier cycle, for the `status` key (`None`: not listed yet).
    pub status_slots: Option<&'a publish::StatusSlots>,
    /// What the REST API answers from: a switchover's demotion marks PostgreSQL `stopping` here before it tells
    /// HAProxy, so no health check between the push and the cycle's own publish takes the primary back in.
    pub status_tx: &'a tokio::sync::watch::Sender<crate::status::NodeStatus>,
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
    /// As leader: the positions of the slots this cycle listed, to publish (see `slot_positions`).
    pub slot_positions: Option<std::collections::BTreeMap<String, u64>>,
    /// The key was given up because PostgreSQL did not run as a primary within `primary_start_timeout`: the
    /// loop keeps this node out of the race for a ttl.
    pub gave_up_key: bool,
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
            Action::ReleaseLease => release(ctx, &mut res).await,
            Action::GiveUpLease => {
                let released = release(ctx, &mut res).await;
                if released {
                    warn!(
                        "gave up the leader key: PostgreSQL did not run as primary within primary_start_timeout and \
                         another member can take over; staying out of the leader race for one ttl"
                    );
                    res.gave_up_key = true;
                }
                released
            }
            Action::Demote(DemoteMode::ImmediateNoLock) => {
                demote_here(ctx).await;
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
        res.slot_positions = leader_slots(ctx).await;
        maintain_sync(ctx, &pg_status).await;
    } else if standby_leader && res.dcs_contacted && res.spawned.is_none() {
        // The standby leader keeps its members' slots, as a primary does (physical permanent slots only).
        res.slot_positions = leader_slots(ctx).await;
    } else if obs.pg.role() == Some(Role::Replica) && res.spawned.is_none() && !res.demoted && !res.holds_key {
        // (A key holder running as a replica is a standby leader: its slots are a leader's, planned above once
        // its renewal went through, and never a replica's.)
        let to_copy = replica_slots(ctx).await;
        // Maintenance mode: PostgreSQL is not restarted for a copy.
        if !to_copy.is_empty() && !ctx.paused {
            res.spawned = spawn_slot_copy(ctx, to_copy);
        }
    }
    res
}

/// Deletes the leader key we hold; false when the store refused.
async fn release(ctx: &Context<'_>, res: &mut ExecResult) -> bool {
    match ctx.dcs.release_leader(None, ctx.timing.retry_timeout).await {
        Ok(_) => {
            res.dcs_contacted = true;
            res.holds_key = false;
            // `decide` releases the key only with PostgreSQL not running as a primary (or after demoting it).
            ctx.settings.watchdog.disarm("released the leader key");
            true
        }
        Err(e) => {
            warn!(error = %e, "failed to release the leader lock");
            false
        }
    }
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
            | Action::GiveUpLease
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
            let status = publish::status_data(pg_status, ctx.view.status.as_ref(), ctx.status_slots);
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
            watchdog_lead(ctx)
        }
        Ok(false) => {
            res.dcs_contacted = true;
            res.holds_key = false;
            if is_primary {
                error!(?kind, "the leader lock belongs to someone else; demoting self now");
                demote_here(ctx).await;
                res.demoted = true;
            } else {
                info!(?kind, "did not get the leader lock");
                ctx.settings.watchdog.disarm("the leader lock belongs to someone else");
            }
            false
        }
        Err(e) => {
            warn!(?kind, error = %e, "leader lock write not confirmed; the lease runs out on its own");
            false
        }
    }
}

/// After a successful write of the leader key, before anything runs on it (a promotion, a start as primary):
/// the watchdog is armed (the first time) and fed. False stops the cycle's remaining actions: with
/// `watchdog.mode: required` a node that cannot arm it does not promote (`decide` releases the key next cycle,
/// or arms at the next renewal when this answer only came too late). Nothing to arm in maintenance mode or for a
/// standby cluster's leader, which is never a primary.
fn watchdog_lead(ctx: &Context<'_>) -> bool {
    if ctx.paused || ctx.standby.is_some() {
        return true;
    }
    let now = tokio::time::Instant::now();
    match ctx.settings.watchdog.lead(ctx.timing.ttl, &ctx.dcs.lease(), now) {
        Ok(()) => true,
        Err(NotArmed::NotNow) => {
            info!("the leader lock write was answered too late to arm the watchdog safely; not promoting this cycle");
            false
        }
        // Logged by the watchdog.
        Err(NotArmed::Failed(_)) => false,
    }
}

/// [`demote_now`] with this node's settings.
async fn demote_here(ctx: &Context<'_>) {
    let settings = ctx.settings;
    demote_now(ctx.pg, &settings.watchdog, (&settings.haproxy, &settings.vip), &settings.name).await;
}

/// Stops a primary that may no longer write: immediate mode, the lock is not touched. Once PostgreSQL stopped,
/// the watchdog is disarmed; while it may still run, the watchdog stays armed (it resets the host unfed).
pub async fn demote_now(
    pg: &Supervisor,
    watchdog: &Watchdog,
    routing: (&crate::haproxy::Pusher, &crate::vip::Vip),
    me: &str,
) {
    let (haproxy, vip) = routing;
    // UNSAFE CHAOS BREAK (test only, `raftgres chaos --break no-demote`): skip the demotion.
    if crate::chaos::unsafe_break_no_demote() {
        return;
    }
    // Not waited for: this stop may not be delayed.
    haproxy.demoting_now(me);
    vip.want(false);
    match pg.stop(StopMode::Immediate).await {
        Ok(()) => {
            pg.mark_demoted();
            watchdog.disarm("demoted");
        }
        Err(e) => error!(error = %e, "failed to stop postgres while demoting; a human must check this node"),
    }
}

/// The members as far as slots go: tags and the WAL position each reports.
fn slot_members(ctx: &Context<'_>) -> Vec<SlotMember> {
    ctx.view
        .members
        .iter()
        .map(|(name, member)| SlotMember {
            name: name.clone(),
            nostream: member.tag_bool("nostream"),
            replicatefrom: member.tags.get("replicatefrom").and_then(serde_json::Value::as_str).map(str::to_owned),
            lsn: member.xlog_location.unwrap_or(0),
        })
        .collect()
}

fn my_tag(ctx: &Context<'_>, tag: &str) -> bool {
    ctx.settings.tags.get(tag).and_then(serde_json::Value::as_bool).unwrap_or(false)
}

/// The member slots this node keeps (Patroni's `_get_members_slots`): with `member_slots_ttl` above zero, a slot
/// for every member not tagged `nostream` (only those cascading from it on a `nofailover` node) and the slots of
/// members that left less than `member_slots_ttl` ago; with zero, only the slots of members streaming from it.
fn member_slots(ctx: &Context<'_>, role: SlotRole, members: &[SlotMember]) -> BTreeSet<String> {
    let retain: BTreeSet<String> = match ctx.member_slots_ttl.is_zero() {
        true => BTreeSet::new(),
        false => ctx.view.status.as_ref().map(|s| s.retain_slots.iter().cloned().collect()).unwrap_or_default(),
    };
    let input = SlotPlanInput {
        me: &ctx.settings.name,
        role,
        nofailover: my_tag(ctx, "nofailover"),
        leader: ctx.view.leader.as_ref().map(|l| l.name.as_str()),
        members,
        retention: if ctx.member_slots_ttl.is_zero() {
            SlotRetention::StreamingOnly
        } else {
            SlotRetention::AllMembers
        },
        retain_slots: &retain,
    };
    let desired = desired_slots(&input);
    for (slot, names) in &desired.conflicts {
        error!(slot, ?names, "several members map to one replication slot name; rename one of them");
    }
    desired.slots
}

/// The permanent slots this node keeps (Patroni's `_get_permanent_slots`): none on a `nofailover` node (it never
/// leads); physical ones only in a standby cluster, or on a node whose WAL does not stream from the leader
/// (`nostream`: no feedback reaches the leader, so a logical slot here would not be safe to use); all of them
/// otherwise.
fn permanent_slots(ctx: &Context<'_>, role: SlotRole) -> Vec<PermanentSlot> {
    if role == SlotRole::Replica && my_tag(ctx, "nofailover") {
        return Vec::new();
    }
    let physical_only = ctx.standby.is_some() || (role == SlotRole::Replica && my_tag(ctx, "nostream"));
    ctx.permanent_slots.iter().filter(|slot| !physical_only || slot.kind == SlotKind::Physical).cloned().collect()
}

/// Whether this node must run with `hot_standby_feedback = on`: it keeps permanent logical slots as a replica.
pub(super) fn wants_hot_standby_feedback(
    settings: &HaSettings,
    permanent: &[PermanentSlot],
    standby_cluster: bool,
) -> bool {
    let tag = |name: &str| settings.tags.get(name).and_then(serde_json::Value::as_bool).unwrap_or(false);
    !standby_cluster
        && !tag("nofailover")
        && !tag("nostream")
        && permanent.iter().any(|slot| matches!(slot.kind, SlotKind::Logical { .. }))
}

/// One cycle's slot work on this node: plan, create, drop, advance (see `Supervisor::maintain_slots`).
async fn slot_work(ctx: &Context<'_>, role: SlotRole) -> Option<crate::postgres::supervisor::SlotReport> {
    let members = slot_members(ctx);
    let kept = member_slots(ctx, role, &members);
    let permanent = permanent_slots(ctx, role);
    let own = slot_name(&ctx.settings.name);
    let empty = std::collections::BTreeMap::new();
    let published = ctx.view.status.as_ref().map_or(&empty, |status| &status.slots);
    let leader = ctx.view.leader.as_ref().map(|l| l.name.as_str());
    let input =
        TargetInput { me: &ctx.settings.name, role, leader, members: &members, published, permanent: &permanent };
    let mut targets = slot_targets(&input);
    targets.retain(|name, _| kept.contains(name) || permanent.iter().any(|slot| slot.name == *name));
    // The physical slot that carries this node's hot standby feedback to the leader: its own, or, cascading, that
    // of the member at the head of its replicatefrom chain (Patroni's `get_slot_name_on_primary`).
    let slot_on_primary = slot_name(&crate::postgres::slots::head_of_chain(&ctx.settings.name, &members));
    let leader_target = match (role, leader) {
        (SlotRole::Replica, Some(name)) if name != ctx.settings.name && ctx.standby.is_none() => {
            target_of(ctx.view, name)
        }
        _ => None,
    };
    let work = SlotWork {
        wanted: LeaderSlots {
            own: &own,
            members: &kept,
            permanent: &permanent,
            ignore: &ctx.ignore_slots,
            paused: ctx.paused || ctx.slots_unreadable,
        },
        role,
        targets: &targets,
        // As Patroni: with a leader, except on a key holder still running as a standby (a standby leader).
        clean_xmin: leader.is_some_and(|name| name != ctx.settings.name || ctx.standby.is_none()),
        leader: leader_target.as_ref().map(|target| (target, slot_on_primary.as_str())),
    };
    match ctx.pg.maintain_slots(&work).await {
        Ok(report) => Some(report),
        Err(e) => {
            warn!(error = %e, "failed to maintain replication slots");
            None
        }
    }
}

/// The leader's slots: member and permanent slots created, unknown ones dropped, idle ones advanced; returns
/// their positions for the `status` key.
async fn leader_slots(ctx: &Context<'_>) -> Option<std::collections::BTreeMap<String, u64>> {
    slot_work(ctx, SlotRole::Leader).await.map(|report| report.positions)
}

/// A replica keeps the slots a leader would (Patroni 3.2+ with `member_slots_ttl`), moved forward to the
/// positions the leader published, so that after a failover it already holds what its members and the permanent
/// slots' consumers need. Returns the permanent logical slots it lacks and may copy from the leader.
async fn replica_slots(ctx: &Context<'_>) -> Vec<PermanentSlot> {
    let Some(report) = slot_work(ctx, SlotRole::Replica).await else { return Vec::new() };
    let empty = std::collections::BTreeMap::new();
    let published = ctx.view.status.as_ref().map_or(&empty, |status| &status.slots);
    slots_to_copy(&report.missing_logical, published).into_iter().cloned().collect()
}

/// Copies the logical slots `wanted` from the running leader (a long action: PostgreSQL restarts), unless this
/// node follows no running primary of this cluster, or an earlier copy failed less than its backoff ago.
fn spawn_slot_copy(ctx: &Context<'_>, wanted: Vec<PermanentSlot>) -> Option<(ActionKind, JoinHandle<ActionOutcome>)> {
    let leader = ctx.view.leader.as_ref()?;
    if leader.name == ctx.settings.name || ctx.standby.is_some() || !ctx.pg.slot_copy_due() {
        return None;
    }
    let source = target_of(ctx.view, &leader.name)?;
    let follow = follow_target(ctx.view, ctx.settings, &leader.name);
    let role = stream_from(ctx, &follow, slot_name(&ctx.settings.name))?;
    let fut = super::long::copy_logical_slots(ctx.pg.clone(), source, wanted, role, follow);
    Some((ActionKind::CopySlots, tokio::spawn(fut.instrument(tracing::info_span!("action")))))
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
    ctx.settings.watchdog.disarm("an interrupted bootstrap is started over");
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

/// The remote primary of `standby_cluster` (`target` `None`: archive-only), the slot to stream through on it and
/// the methods that create the standby leader, when this is a standby cluster.
fn remote_primary(ctx: &Context<'_>) -> Option<super::long::RemotePrimary> {
    let standby = ctx.standby.as_ref()?;
    Some(super::long::RemotePrimary {
        target: standby.host.clone().map(|host| ConnTarget { host, port: standby.port }),
        slot: standby.primary_slot_name.clone(),
        methods: standby.create_replica_methods.clone(),
    })
}

/// How a replica runs when it follows `name` (a member, or [`REMOTE_PRIMARY`] for a standby leader): streaming
/// from that member through its own slot there; from the remote primary through `standby_cluster.
/// primary_slot_name`; in an archive-only standby cluster, with no upstream (replaying `restore_command`).
fn stream_from(ctx: &Context<'_>, name: &str, my_slot: String) -> Option<StartRole> {
    if name == REMOTE_PRIMARY {
        let remote = remote_primary(ctx)?;
        return Some(match remote.target {
            Some(primary) => StartRole::Replica { primary, slot: remote.slot },
            None => StartRole::Standby,
        });
    }
    Some(StartRole::Replica { primary: target_of(ctx.view, name)?, slot: Some(my_slot) })
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
                Some(remote) => {
                    (ActionKind::Bootstrap, Box::pin(super::long::bootstrap_standby(pg, dcs, settings, timing, remote)))
                }
            },
            Action::CloneFrom(source) | Action::WipeAndClone(source) => {
                let source = upstream_target(ctx.view, source)?;
                let leader = ctx.view.leader.as_ref().map_or(source.name.as_str(), |l| l.name.as_str());
                let follow = upstream_target(ctx.view, &follow_target(ctx.view, ctx.settings, leader))?;
                let wipe = matches!(action, Action::WipeAndClone(_));
                (ActionKind::Clone, Box::pin(super::long::clone(pg, source, follow, my_slot, wipe)))
            }
            Action::CloneWithoutLeader => {
                let standby = ctx.standby.as_ref().map(|s| s.create_replica_methods.clone());
                let methods = standby.filter(|methods| !methods.is_empty());
                (ActionKind::Clone, Box::pin(super::long::clone_without_leader(pg, methods)))
            }
            Action::StartPrimary { within } => (ActionKind::Start, Box::pin(super::long::start_primary(pg, *within))),
            Action::StartReplica { leader: Some(leader), rewind } => {
                let role = stream_from(ctx, leader, my_slot)?;
                let kind = if *rewind { ActionKind::Rewind } else { ActionKind::Start };
                // pg_rewind runs from the leader, which `decide` passed (never the remote primary).
                let rewind_from = if *rewind { Some(target_of(ctx.view, leader)?) } else { None };
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
                let role = stream_from(ctx, leader, my_slot)?;
                (ActionKind::Restart, Box::pin(super::long::restart(pg, role, leader.clone())))
            }
            Action::Promote => {
                let timeout = timing.retry_timeout.max(Duration::from_secs(10));
                let sync = ctx.sync_policy;
                let haproxy = settings.haproxy.clone();
                let vip = settings.vip.clone();
                let promotion =
                    super::long::Promotion { me: settings.name.clone(), timeout, timing, sync, haproxy, vip };
                (ActionKind::Promote, Box::pin(super::long::promote(pg, dcs, settings.watchdog.clone(), promotion)))
            }
            Action::Demote(DemoteMode::Graceful) => {
                ctx.status_tx.send_modify(|published| published.pg.state = crate::status::PgState::Stopping);
                let status = publish::status_data(pg_status, ctx.view.status.as_ref(), ctx.status_slots);
                let watchdog = settings.watchdog.clone();
                let haproxy = (settings.haproxy.clone(), settings.vip.clone(), settings.name.clone());
                (ActionKind::Demote, Box::pin(super::long::graceful_demote(pg, dcs, watchdog, haproxy, status, timing)))
            }
            _ => return None,
        };
    Some((kind, tokio::spawn(fut.instrument(span))))
}
