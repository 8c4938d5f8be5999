//! Long actions, each run as one spawned task: bootstrap, clone, start, rewind + start,
//! restart to follow another leader, promote, graceful demote. Each returns an
//! [`ActionOutcome`] the loop folds into its state; errors are logged here, where handled.

use std::time::Duration;

use tracing::error;
use tracing::info;
use tracing::warn;

use super::ActionOutcome;
use super::Following;
use super::HaSettings;
use crate::config::dynamic::Timing;
use crate::dcs::view::FailoverTimeline;
use crate::dcs::view::HistoryLine;
use crate::dcs::view::LeaderExpiry;
use crate::dcs::view::PromotionKind;
use crate::dcs::view::StatusData;
use crate::dcs::Dcs;
use crate::postgres::supervisor::error_chain;
use crate::postgres::supervisor::Callback;
use crate::postgres::supervisor::ConnTarget;
use crate::postgres::supervisor::PgError;
use crate::postgres::supervisor::RewindOutcome;
use crate::postgres::supervisor::StartRole;
use crate::postgres::supervisor::StopMode;
use crate::postgres::supervisor::Supervisor;
use crate::status::PgStatus;
use crate::status::WalPosition;
use crate::watchdog::Watchdog;

/// Bootstrap a new cluster: win the `initialize` race, initdb, start, create users, take the
/// leader key, record the system identifier and the initial dynamic config.
pub async fn bootstrap(pg: Supervisor, dcs: Dcs, settings: HaSettings, timing: Timing) -> ActionOutcome {
    if !won_initialize_race(&dcs, timing).await {
        return ActionOutcome { skipped: true, ..ActionOutcome::default() };
    }
    // No callback fires while the new cluster is being made; `on_start` fires once it is ready (Patroni).
    pg.set_bootstrapping(true);
    let result = bootstrap_steps(&pg, &dcs, &settings, timing).await;
    let failed = finish_bootstrap(&pg, &dcs, timing, result).await;
    ActionOutcome { following: Following::Nobody, failed, ..ActionOutcome::default() }
}

/// Bootstrap a standby cluster (`standby_cluster` in `bootstrap.dcs`): win the `initialize` race, create the
/// data directory from the remote primary with the `create_replica_methods`, start it as a standby of the remote
/// primary, take the leader key as the standby leader, record the system identifier and the dynamic config.
pub async fn bootstrap_standby(
    pg: Supervisor,
    dcs: Dcs,
    settings: HaSettings,
    timing: Timing,
    remote: RemotePrimary,
) -> ActionOutcome {
    if !won_initialize_race(&dcs, timing).await {
        return ActionOutcome { skipped: true, ..ActionOutcome::default() };
    }
    pg.set_bootstrapping(true);
    let result = standby_bootstrap_steps(&pg, &dcs, &settings, timing, remote).await;
    let failed = finish_bootstrap(&pg, &dcs, timing, result).await;
    let following =
        if failed.is_none() { Following::Member(super::types::REMOTE_PRIMARY.to_owned()) } else { Following::Nobody };
    ActionOutcome { following, failed, ..ActionOutcome::default() }
}

/// The remote primary of a standby cluster, as the standby leader's bootstrap needs it.
#[derive(Debug, Clone)]
pub struct RemotePrimary {
    /// Its PostgreSQL; `None` in an archive-only standby cluster.
    pub target: Option<ConnTarget>,
    /// `standby_cluster.primary_slot_name`.
    pub slot: Option<String>,
    /// `standby_cluster.create_replica_methods` (empty: `postgresql.create_replica_methods`).
    pub methods: Vec<String>,
}

async fn won_initialize_race(dcs: &Dcs, timing: Timing) -> bool {
    match dcs.race_initialize(timing.retry_timeout).await {
        Ok(true) => {
            info!("won the initialize race; bootstrapping a new cluster");
            true
        }
        Ok(false) => {
            info!("another node is bootstrapping the cluster");
            false
        }
        Err(e) => {
            warn!(error = %e, "failed to race for initialize");
            false
        }
    }
}

/// Ends a bootstrap: callbacks again (`on_start` when it worked), or everything undone so another attempt can
/// start; returns the error, with its causes, when it failed.
async fn finish_bootstrap(pg: &Supervisor, dcs: &Dcs, timing: Timing, result: anyhow::Result<()>) -> Option<String> {
    let timeout = timing.retry_timeout;
    pg.set_bootstrapping(false);
    let Err(e) = result else {
        pg.fire(Callback::OnStart);
        return None;
    };
    let error = format!("{e:#}");
    error!(error, "bootstrap failed; cleaning up so another attempt can start");
    if let Err(e) = pg.stop(StopMode::Immediate).await {
        warn!(error = %e, "failed to stop postgres after a failed bootstrap");
    }
    if let Err(e) = pg.wipe_data_dir().await {
        warn!(error = %e, "failed to remove the half-initialized data directory");
    }
    pg.abandon_restore();
    if let Err(e) = dcs.release_leader(None, timeout).await {
        warn!(error = %e, "failed to release the leader lock after a failed bootstrap");
    }
    if let Err(e) = dcs.cancel_initialization(timeout).await {
        warn!(error = %e, "failed to cancel the initialization");
    }
    Some(error)
}

async fn standby_bootstrap_steps(
    pg: &Supervisor,
    dcs: &Dcs,
    settings: &HaSettings,
    timing: Timing,
    remote: RemotePrimary,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    pg.write_pgpass().context("write pgpass")?;
    let methods = Some(remote.methods.as_slice()).filter(|methods| !methods.is_empty());
    let (from, created, role) = match &remote.target {
        Some(target) => {
            let created = match methods {
                None => pg.create_replica(target).await,
                Some(methods) => pg.create_replica_with(target, methods).await,
            };
            let role = StartRole::Replica { primary: target.clone(), slot: remote.slot.clone() };
            (format!("{}:{}", target.host, target.port), created, role)
        }
        // Archive-only: only a method that needs no server to copy from (`no_leader`) can create it, and it
        // replays what standby_cluster.restore_command fetches.
        None => ("the WAL archive".to_owned(), pg.create_replica_without_leader(methods).await, StartRole::Standby),
    };
    created.with_context(|| format!("create the standby leader from {from}"))?;
    match pg.start(role).await {
        // A standby that is not consistent yet answers later: it is waited for below.
        Ok(()) | Err(PgError::NotReady { .. }) => {}
        Err(e) => return Err(e).context("start the standby leader"),
    }
    let status = loop {
        anyhow::ensure!(pg.is_running(), "PostgreSQL stopped while the standby leader started (see its log)");
        if let Ok(probe) = pg.probe().await {
            break PgStatus::from(probe);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let system_id = take_the_new_cluster(dcs, settings, timing, &status).await?;
    info!(system_id, remote = from, "bootstrapped a new standby cluster");
    Ok(())
}

/// The end of every bootstrap: take the leader key with this member's status, record the system identifier and
/// the dynamic configuration. Returns the system identifier.
async fn take_the_new_cluster(
    dcs: &Dcs,
    settings: &HaSettings,
    timing: Timing,
    status: &PgStatus,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let timeout = timing.retry_timeout;
    let system_id = status.system_identifier.map(|s| s.to_string()).context("read the system identifier")?;
    let member = settings.member_data(status, false);
    let acquired = dcs.acquire_leader(&member, timing.ttl, timeout).await.context("take the leader lock")?;
    anyhow::ensure!(acquired, "the leader lock was taken by someone else during bootstrap");
    dcs.set_initialize(&system_id, timeout).await.context("record the system identifier")?;
    dcs.write_config_if_absent(&settings.bootstrap_dcs, timeout).await.context("write the dynamic config")?;
    Ok(system_id)
}

async fn bootstrap_steps(pg: &Supervisor, dcs: &Dcs, settings: &HaSettings, timing: Timing) -> anyhow::Result<()> {
    use anyhow::Context as _;
    pg.write_pgpass().context("write pgpass")?;
    match pg.config().custom_bootstrap.clone() {
        None => {
            pg.initdb().await.context("run initdb")?;
            pg.start(StartRole::Primary).await.context("start the new primary")?;
            pg.create_users().await.context("create the superuser and replication users")?;
        }
        Some(method) => {
            pg.bootstrap_with(&method).await.with_context(|| format!("run bootstrap.{}", method.name))?;
            match pg.start(StartRole::Primary).await {
                // Archive recovery may outlast pg_ctl_timeout: it is waited for below.
                Ok(()) | Err(PgError::NotReady { .. }) => {}
                Err(e) => return Err(e).context("start the restored cluster"),
            }
            wait_end_of_recovery(pg).await?;
            pg.create_users().await.context("create the superuser and replication users")?;
            pg.finish_restore().await.context("end the restore (recovery settings, pg_hba.conf)")?;
        }
    }
    pg.run_post_bootstrap().await.context("run bootstrap.post_bootstrap")?;
    let probe = pg.probe().await.context("probe the new primary")?;
    let status = PgStatus::from(probe);
    let system_id = take_the_new_cluster(dcs, settings, timing, &status).await?;
    info!(system_id, "bootstrapped a new cluster");
    Ok(())
}

/// A member to clone from or to follow: its name and its PostgreSQL address.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The member name.
    pub name: String,
    /// Its PostgreSQL.
    pub target: ConnTarget,
}

/// How often the wait for the end of a restored cluster's recovery says it is still waiting.
const RECOVERY_REPORT_EVERY: Duration = Duration::from_secs(30);

/// Waits until the restored cluster left archive recovery (reached its target and promoted, or the end of the
/// archive): for as long as it takes, as Patroni does ("waiting for end of recovery after bootstrap"), unless
/// PostgreSQL stops. A `recovery_target_action: pause` never ends: use `promote`.
async fn wait_end_of_recovery(pg: &Supervisor) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let mut reported = started;
    loop {
        anyhow::ensure!(
            pg.is_running(),
            "PostgreSQL stopped during the recovery of the restored cluster (see its log)"
        );
        if let Ok(probe) = pg.probe().await {
            if PgStatus::from(probe).role == crate::status::Role::Primary {
                info!(seconds = started.elapsed().as_secs(), "the restored cluster left recovery");
                return Ok(());
            }
        }
        if reported.elapsed() >= RECOVERY_REPORT_EVERY {
            reported = tokio::time::Instant::now();
            info!(seconds = started.elapsed().as_secs(), "waiting for end of recovery after bootstrap");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Create a replica with pg_basebackup from `source` (the leader, or a replica tagged `clonefrom`) and start it
/// streaming from `follow` (the leader, or the member its `replicatefrom` tag names).
pub async fn clone(pg: Supervisor, source: Upstream, follow: Upstream, slot: String, wipe: bool) -> ActionOutcome {
    let leader = follow.name;
    // A source that does not answer yet (a leader whose key outlived its PostgreSQL, a member still starting) is
    // a state to wait out, not an error: nothing is wiped, and the loop asks again after its growing pause.
    if let Err(why) = pg.source_answers(&source.target).await {
        let what = format!(
            "not cloning from {} yet: its PostgreSQL at {}:{} does not accept connections ({why})",
            source.name, source.target.host, source.target.port
        );
        warn!("{what}");
        return ActionOutcome { failed: Some(what), ..ActionOutcome::default() };
    }
    if wipe {
        warn!(source = source.name, "removing the data directory to clone again");
        if let Err(e) = pg.stop(StopMode::Immediate).await {
            return failure("failed to stop postgres before re-cloning", &e);
        }
        if let Err(e) = pg.wipe_data_dir().await {
            return failure("failed to remove the data directory", &e);
        }
    }
    if let Err(e) = pg.write_pgpass() {
        return failure("failed to write the pgpass file", &e);
    }
    info!(source = source.name, "creating the replica (create_replica_methods)");
    if let Err(e) = pg.create_replica(&source.target).await {
        let what = format!("failed to create the replica from {}", source.name);
        if Supervisor::clone_raced_a_promotion(&e) {
            // Retried after the growing pause, by when the source runs as the primary.
            let chain = error_chain(&e);
            warn!(error = %chain, "{what}: it was promoted during the base backup");
            return ActionOutcome { failed: Some(format!("{what}: {chain}")), ..ActionOutcome::default() };
        }
        return failure(&what, &e);
    }
    let role = StartRole::Replica { primary: follow.target, slot: Some(slot) };
    match pg.start(role).await {
        Ok(()) => ActionOutcome { following: Following::Member(leader), ..ActionOutcome::default() },
        Err(e) => started_or_failed(e, Following::Member(leader), "failed to start the new replica").await,
    }
}

/// Patroni's "bootstrap (without leader)": creates the data directory with the `no_leader` replica methods
/// (`methods`: `standby_cluster.create_replica_methods`, else `postgresql.create_replica_methods`). PostgreSQL is
/// not started here: the next cycle starts it as a standby, and it may then win the leader race.
pub async fn clone_without_leader(pg: Supervisor, methods: Option<Vec<String>>) -> ActionOutcome {
    if let Err(e) = pg.write_pgpass() {
        return failure("failed to write the pgpass file", &e);
    }
    info!("creating the data directory without a leader (replica methods with no_leader)");
    match pg.create_replica_without_leader(methods.as_deref()).await {
        Ok(method) => {
            info!(method, "created the data directory without a leader");
            ActionOutcome { following: Following::Nobody, ..ActionOutcome::default() }
        }
        Err(e) => failure("failed to create the data directory without a leader", &e),
    }
}

/// The outcome of a failed step: logged as an ERROR with its causes, reported to the loop, which retries the
/// action after a growing pause (`ha::retry`).
fn failure(what: &str, e: &PgError) -> ActionOutcome {
    let chain = error_chain(e);
    error!(error = %chain, "{what}");
    ActionOutcome { failed: Some(format!("{what}: {chain}")), ..ActionOutcome::default() }
}

/// Start PostgreSQL in `role`.
pub async fn start(pg: Supervisor, role: StartRole, following: Following) -> ActionOutcome {
    match pg.start(role).await {
        Ok(()) => ActionOutcome { following, ..ActionOutcome::default() },
        Err(e) => started_or_failed(e, following, "failed to start postgres").await,
    }
}

/// Start PostgreSQL as the primary, waiting for it at most `within` (what is left of `primary_start_timeout`):
/// a server still recovering then is left running, and the HA loop times it.
pub async fn start_primary(pg: Supervisor, within: Option<Duration>) -> ActionOutcome {
    match pg.start_within(StartRole::Primary, within).await {
        Ok(()) => ActionOutcome::default(),
        Err(e) => started_or_failed(e, Following::Unchanged, "failed to start postgres").await,
    }
}

/// The outcome of a start that did not finish: a server still recovering runs configured to
/// follow `following`, so the HA loop waits for it (and restarts it only if the leader moves);
/// anything else is an error and the loop decides again from what it observes, after a pause (a
/// start that fails at once, say on a port someone else took, would otherwise be retried in a
/// tight loop).
async fn started_or_failed(e: PgError, following: Following, what: &str) -> ActionOutcome {
    if let PgError::NotReady { .. } = e {
        warn!(error = %e, "postgres is still starting; waiting for it in the next cycles");
        return ActionOutcome { following, ..ActionOutcome::default() };
    }
    let outcome = failure(what, &e);
    tokio::time::sleep(FAILED_START_PAUSE).await;
    outcome
}

/// How long a failed start waits before the HA loop decides again.
const FAILED_START_PAUSE: Duration = Duration::from_secs(1);

/// Optionally pg_rewind from the leader, then start as its replica.
pub async fn start_replica(
    pg: Supervisor,
    role: StartRole,
    leader: String,
    rewind_from: Option<ConnTarget>,
) -> ActionOutcome {
    if let Some(target) = rewind_from {
        if let Err(e) = pg.write_pgpass() {
            return failure("failed to write the pgpass file", &e);
        }
        match pg.rewind(&target).await {
            Ok(RewindOutcome::Rewound) => info!(leader, "pg_rewind brought the old primary onto the new timeline"),
            Ok(RewindOutcome::NotNeeded) => info!(leader, "no rewind needed"),
            Err(e) => {
                // Retried by the HA loop after a pause (the leader may still be starting), so
                // not an ERROR: a human acts only if it keeps failing.
                let chain = error_chain(&e);
                warn!(leader, error = %chain, "pg_rewind failed; will retry");
                let failed = Some(format!("pg_rewind from {leader} failed: {chain}"));
                return ActionOutcome { rewind_failed: true, failed, ..ActionOutcome::default() };
            }
        }
    }
    start(pg, role, Following::Member(leader)).await
}

/// Stop a diverged replica cleanly, pg_rewind it from the leader and start it as its replica.
pub async fn rewind_running_replica(
    pg: Supervisor,
    role: StartRole,
    leader: String,
    target: ConnTarget,
) -> ActionOutcome {
    if let Err(e) = pg.stop(StopMode::Fast).await {
        error!(leader, error = %e, "failed to stop the diverged replica for pg_rewind");
        return ActionOutcome::default();
    }
    start_replica(pg, role, leader, Some(target)).await
}

/// Restart a replica to follow another leader.
pub async fn restart(pg: Supervisor, role: StartRole, leader: String) -> ActionOutcome {
    match pg.restart(role).await {
        Ok(()) => ActionOutcome { following: Following::Member(leader), ..ActionOutcome::default() },
        Err(e) => {
            started_or_failed(e, Following::Member(leader), "failed to restart postgres to follow the new leader").await
        }
    }
}

/// Copies the permanent logical slots `wanted` from the leader at `source`, restarting PostgreSQL as `role`
/// (following `follow`); see `Supervisor::copy_logical_slots`.
pub async fn copy_logical_slots(
    pg: Supervisor,
    source: ConnTarget,
    wanted: Vec<crate::postgres::slots::PermanentSlot>,
    role: StartRole,
    follow: String,
) -> ActionOutcome {
    match pg.copy_logical_slots(&source, &wanted, role).await {
        Ok(copied) if copied.is_empty() => ActionOutcome::default(),
        Ok(copied) => {
            info!(slots = ?copied, "copied logical replication slots from the leader");
            ActionOutcome { following: Following::Member(follow), ..ActionOutcome::default() }
        }
        Err(e @ (PgError::Sql { .. } | PgError::Timeout { .. })) => {
            warn!(error = %e, "failed to read the logical replication slots on the leader; trying again later");
            ActionOutcome::default()
        }
        Err(e) => started_or_failed(e, Following::Member(follow), "failed to copy the logical replication slots").await,
    }
}

/// Restart on an API request, in the role PostgreSQL has now, waiting for it at most `within` (the request's
/// `timeout`, else a primary's `primary_start_timeout`): a server still starting then is left running (Patroni's
/// `postgres is still starting`), and a primary's HA loop times it.
pub async fn restart_on_request(pg: Supervisor, role: StartRole, within: Option<Duration>) -> ActionOutcome {
    match pg.restart_within(role, within).await {
        Ok(()) => ActionOutcome::default(),
        Err(e @ PgError::NotReady { .. }) => {
            warn!(error = %e, "postgres is still starting after the restart requested through the API");
            ActionOutcome { failed: Some("postgres is still starting".into()), ..ActionOutcome::default() }
        }
        Err(e) => {
            error!(error = %e, "restart requested through the API failed");
            ActionOutcome { failed: Some("restart failed".into()), ..ActionOutcome::default() }
        }
    }
}

/// Time for a configuration reload to be processed before the promote signal.
const RELOAD_BEFORE_PROMOTE: Duration = Duration::from_millis(300);

/// What a promotion needs besides its handles.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// This member.
    pub me: String,
    /// How long `pg_promote` and the store writes may take.
    pub timeout: Duration,
    /// The timers in force.
    pub timing: Timing,
    /// Synchronous replication policy (the `sync` key is narrowed first).
    pub sync: super::sync::SyncPolicy,
    /// Tells HAProxy right after the promotion.
    pub haproxy: crate::haproxy::Pusher,
    /// Takes the floating address right after the promotion.
    pub vip: crate::vip::Vip,
}

/// Promote, then record the timeline switch (and how the promotion unfolded) in `history`.
/// The operator's `pre_promote` script runs first: when it fails the leader key is released and the loop stays
/// out of the race for a ttl, so another member can take the key (Patroni's behaviour). The watchdog, armed by
/// the executor when it took the key, is disarmed whenever this node gives up the promotion.
pub async fn promote(pg: Supervisor, dcs: Dcs, watchdog: Watchdog, promotion: Promotion) -> ActionOutcome {
    let Promotion { me, timeout, timing, sync, haproxy, vip } = promotion;
    let allowed = pg.run_pre_promote().await.unwrap_or_else(|e| {
        warn!(error = %e, "failed to run the pre_promote script");
        false
    });
    let script_ran = pg.config().hooks.pre_promote.is_some();
    if allowed
        && script_ran
        && !(dcs.leader_key_is_mine(&dcs.view()) && dcs.lease().holds_leader(tokio::time::Instant::now()))
    {
        // The script ran while the lease could have lapsed (up to its 60 s): promoting without the key would
        // make a second primary. Patroni cancels the promotion when it loses the lock.
        warn!("lost the leader key while pre_promote ran; not promoting");
        watchdog.disarm("lost the leader key before promoting");
        return ActionOutcome::default();
    }
    if !allowed {
        warn!("releasing the leader key voluntarily because the pre_promote script failed");
        watchdog.disarm("the pre_promote script refused the promotion");
        if let Err(e) = dcs.release_leader(None, timeout).await {
            warn!(error = %e, "failed to release the leader key; it expires after ttl");
        }
        return ActionOutcome { pre_promote_failed: true, ..ActionOutcome::default() };
    }
    let before = pg.probe().await.ok().map(PgStatus::from);
    // Before accepting writes: the `sync` key names only us (see `sync::promote_plan`), then in strict
    // synchronous mode commits wait for a standby from the first transaction on; otherwise start
    // standalone until the next cycle picks standbys.
    let plan = super::sync::promote_plan(&dcs.view(), &me, &sync);
    if !narrow_sync_key(&dcs, plan.key.as_ref(), timeout).await {
        return ActionOutcome::default();
    }
    let initial_sync = plan.guc.as_deref();
    let current = pg.synchronous_standby_names().await.ok();
    if current.as_deref() != Some(initial_sync.unwrap_or("")) {
        if let Err(e) = pg.set_synchronous_standby_names(initial_sync).await {
            warn!(error = %e, "failed to prepare synchronous_standby_names before promote");
        }
        // A configuration reload that reaches the startup process together with the promote
        // signal makes PostgreSQL 15 miss the signal until its next 5 s poll for WAL (measured:
        // promotion took 5.0 s instead of 10 ms). Let the reload land first.
        tokio::time::sleep(RELOAD_BEFORE_PROMOTE).await;
    }
    let unready = pg.take_unready_logical_slots();
    if !unready.is_empty() {
        warn!(slots = ?unready, "logical replication slots that might be unsafe to use after the promotion");
    }
    let promote_started_ms = raft::lease::wall_ms();
    if let Err(e) = pg.promote(timeout).await {
        if pg.is_running() {
            error!(error = %e, "failed to promote postgres");
        } else {
            // PostgreSQL went down under the promotion (it PANICs when its disk is full, or the node is stopping):
            // its own log says why, and the next cycles start it again as the key holder or hand the key on.
            warn!(error = %e, "postgres stopped during the promotion; deciding again");
        }
        return ActionOutcome::default();
    }
    let promoted_ms = raft::lease::wall_ms();
    info!("promoted postgres to primary");
    let members: Vec<String> = dcs.view().members.keys().cloned().collect();
    haproxy.promoted(&me, &members);
    vip.want(true);
    // Without a checkpoint on the new timeline, pg_rewind on the old primary still sees the
    // old timeline in our pg_control and wrongly reports that no rewind is needed. It runs
    // in the background: the new primary is published (and HAProxy routes to it) meanwhile.
    let checkpointer = pg.clone();
    tokio::spawn(async move {
        if let Err(e) = checkpointer.checkpoint().await {
            warn!(error = %e, "checkpoint after promote failed");
        }
    });
    // The switch as PostgreSQL recorded it in the new timeline's history file, as Patroni reads it; the probe
    // taken before the promotion is only the fallback (it may have failed, and a wrong line here hides a
    // diverged former primary from `decide::diverged`).
    let recorded = match pg.last_timeline_switch().await {
        Ok(switch) => switch,
        Err(e) => {
            warn!(error = %e, "failed to read the timeline history file after the promotion");
            None
        }
    };
    let (old_timeline, switch_lsn) = recorded.unwrap_or_else(|| {
        let old_timeline = before.as_ref().and_then(|s| s.timeline).map(|t| t.0).unwrap_or(1);
        let switch_lsn = match before.as_ref().map(|s| &s.wal) {
            Some(wal @ WalPosition::Replica { .. }) => wal.furthest().map(|l| l.0).unwrap_or(0),
            _ => 0,
        };
        (old_timeline, switch_lsn)
    });
    let line = HistoryLine {
        timeline: old_timeline,
        switch_lsn,
        reason: "no recovery target specified".to_string(),
        timestamp: now_iso(),
        new_leader: me.clone(),
    };
    let view = dcs.view();
    let previous_promotion_ms = view.last_timeline.as_ref().map(|t| t.promoted_ms);
    let expiry = view.leader_expiry.as_ref();
    let timeline = failover_timeline(expiry, previous_promotion_ms, &me, promote_started_ms, promoted_ms, timing);
    // Written by the action that promoted, right after PostgreSQL left recovery, as Patroni's
    // leader does; the timeline rides along as the line's sixth element.
    info!(?timeline, "recording the promotion in history");
    let unrecorded_history = match dcs.append_history(line.clone(), Some(&timeline), timing.retry_timeout).await {
        Ok(_) => None,
        Err(e) => {
            // Without this line `decide` cannot tell a replica that went past the fork (it would never stream):
            // the loop writes it on a later cycle.
            warn!(error = %e, "failed to record the timeline switch in history; retrying on the next cycles");
            Some((line, timeline))
        }
    };
    ActionOutcome { following: Following::Nobody, unrecorded_history, ..ActionOutcome::default() }
}

/// Writes the narrowed `sync` key before a promotion; `false` when it could not be written and the promotion must
/// wait. Not promoting is the safe side: we keep the leader key and retry next cycle (Patroni's "Postponing
/// promotion because synchronous replication state was updated by somebody else"), whereas promoting under the
/// old key would let its voters promote without the commits we are about to acknowledge alone. A conflict
/// means the key changed since our view (or our session no longer holds `leader`).
async fn narrow_sync_key(dcs: &Dcs, key: Option<&crate::dcs::view::SyncData>, timeout: Duration) -> bool {
    let Some(key) = key else { return true };
    let mod_rev = dcs.view().sync.as_ref().map(|s| s.mod_rev);
    match dcs.write_sync(Some(key), mod_rev, timeout).await {
        Ok(Some(_)) => {
            info!(sync = ?key, "narrowed the sync key to this node before promoting");
            true
        }
        Ok(None) => {
            info!("postponing promotion: the sync key or the leader key changed concurrently");
            false
        }
        Err(e) => {
            warn!(error = %e, "postponing promotion: failed to write the sync key");
            false
        }
    }
}

/// How this promotion came about: a failover when another leader's session expired after the
/// previous promotion and at most ten ttls ago (the state machine's record of it), else a
/// switchover (the old primary released the lease).
pub fn failover_timeline(
    expiry: Option<&LeaderExpiry>,
    previous_promotion_ms: Option<u64>,
    me: &str,
    promote_started_ms: u64,
    promoted_ms: u64,
    timing: Timing,
) -> FailoverTimeline {
    let recent_ms = timing.ttl.as_millis() as u64 * 10;
    let expiry = expiry.filter(|e| {
        e.member != me
            && e.expired_ms + recent_ms >= promote_started_ms
            && previous_promotion_ms.is_none_or(|previous| e.expired_ms > previous)
    });
    FailoverTimeline {
        kind: if expiry.is_some() { PromotionKind::Failover } else { PromotionKind::Switchover },
        last_renewal_ms: expiry.map(|e| e.last_renewal_ms),
        lease_expired_ms: expiry.map(|e| e.expired_ms),
        promote_started_ms,
        promoted_ms,
        first_healthy_ms: None,
    }
}

/// Planned switchover: stop with a shutdown checkpoint (connected replicas receive every WAL
/// record before a fast shutdown completes), then release the lock so the candidate takes
/// it at once.
pub async fn graceful_demote(
    pg: Supervisor,
    dcs: Dcs,
    watchdog: Watchdog,
    (haproxy, vip, me): (crate::haproxy::Pusher, crate::vip::Vip, String),
    status: Option<StatusData>,
    timing: Timing,
) -> ActionOutcome {
    // HAProxy stops routing here first (bounded wait); the fast stop then ends the open sessions.
    haproxy.demoting(&me).await;
    vip.release().await;
    if let Err(e) = pg.stop(StopMode::Fast).await {
        error!(error = %e, "failed to stop postgres for the switchover; stopping immediately");
        if let Err(e) = pg.stop(StopMode::Immediate).await {
            error!(error = %e, "failed to stop postgres; a human must check this node");
            return ActionOutcome::default();
        }
    }
    pg.mark_demoted();
    // Again, not waited for: a health check answered before the demotion began may have taken it back in meanwhile.
    haproxy.demoting_now(&me);
    // PostgreSQL is down: the watchdog is stopped before the key goes (Patroni disables it at the same point),
    // while the renewals still feed it.
    watchdog.disarm("demoted for a switchover");
    match dcs.release_leader(status.as_ref(), timing.retry_timeout).await {
        Ok(_) => info!("demoted for the switchover and released the leader lock"),
        Err(e) => warn!(error = %e, "failed to release the leader lock; it expires after ttl"),
    }
    ActionOutcome { following: Following::Nobody, ..ActionOutcome::default() }
}

/// Now as ISO 8601 with offset, as Patroni writes history timestamps.
pub fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn expiry(member: &str, expired_ms: u64) -> LeaderExpiry {
        LeaderExpiry { member: member.into(), last_renewal_ms: expired_ms - 3000, expired_ms }
    }

    #[test]
    fn promotions_are_classified_by_the_leader_expiry_record() {
        let timing = Timing {
            ttl: Duration::from_secs(3),
            loop_wait: Duration::from_secs(1),
            retry_timeout: Duration::from_secs(1),
        };
        let kind = |e: Option<LeaderExpiry>, previous: Option<u64>, me: &str| {
            failover_timeline(e.as_ref(), previous, me, 100_000, 100_200, timing).kind
        };
        use PromotionKind::Failover;
        use PromotionKind::Switchover;
        assert_eq!(kind(Some(expiry("pg1", 99_000)), None, "pg2"), Failover);
        assert_eq!(kind(Some(expiry("pg1", 99_000)), Some(90_000), "pg2"), Failover);
        assert_eq!(
            kind(Some(expiry("pg1", 99_000)), Some(99_500), "pg2"),
            Switchover,
            "expiry older than the last promotion"
        );
        assert_eq!(kind(Some(expiry("pg1", 60_000)), None, "pg2"), Switchover, "more than ten ttls ago");
        assert_eq!(kind(Some(expiry("pg2", 99_000)), None, "pg2"), Switchover, "our own old session");
        assert_eq!(kind(None, None, "pg2"), Switchover);
        let timeline = failover_timeline(Some(&expiry("pg1", 99_000)), None, "pg2", 100_000, 100_200, timing);
        assert_eq!((timeline.last_renewal_ms, timeline.lease_expired_ms), (Some(96_000), Some(99_000)));
        assert_eq!(
            (timeline.promote_started_ms, timeline.promoted_ms, timeline.first_healthy_ms),
            (100_000, 100_200, None)
        );
    }
}
