//! Long actions, each run as one spawned task: bootstrap, clone, start, rewind + start,
//! restart to follow another leader, promote, graceful demote. Each returns an
//! [`ActionOutcome`] the loop folds into its state; errors are logged here, where handled.

use std::time::Duration;

use tracing::error;
use tracing::info;
use tracing::warn;

use super::ActionOutcome;
use super::HaSettings;
use crate::config::dynamic::Timing;
use crate::dcs::view::StatusData;
use crate::dcs::Dcs;
use crate::postgres::supervisor::ConnTarget;
use crate::postgres::supervisor::RewindOutcome;
use crate::postgres::supervisor::StartRole;
use crate::postgres::supervisor::StopMode;
use crate::postgres::supervisor::Supervisor;
use crate::status::PgStatus;
use crate::status::WalPosition;

/// Bootstrap a new cluster: win the `initialize` race, initdb, start, create users, take the
/// leader key, record the system identifier and the initial dynamic config.
pub async fn bootstrap(pg: Supervisor, dcs: Dcs, settings: HaSettings, timing: Timing) -> ActionOutcome {
    let timeout = timing.retry_timeout;
    match dcs.race_initialize(timeout).await {
        Ok(true) => info!("won the initialize race; bootstrapping a new cluster"),
        Ok(false) => {
            info!("another node is bootstrapping the cluster");
            return ActionOutcome::default();
        }
        Err(e) => {
            warn!(error = %e, "failed to race for initialize");
            return ActionOutcome::default();
        }
    }
    if let Err(e) = bootstrap_steps(&pg, &dcs, &settings, timing).await {
        error!(error = %e, "bootstrap failed; cleaning up so another attempt can start");
        if let Err(e) = pg.stop(StopMode::Immediate).await {
            warn!(error = %e, "failed to stop postgres after a failed bootstrap");
        }
        if let Err(e) = pg.wipe_data_dir().await {
            warn!(error = %e, "failed to remove the half-initialized data directory");
        }
        if let Err(e) = dcs.release_leader(None, timeout).await {
            warn!(error = %e, "failed to release the leader lock after a failed bootstrap");
        }
        if let Err(e) = dcs.cancel_initialization(timeout).await {
            warn!(error = %e, "failed to cancel the initialization");
        }
    }
    ActionOutcome { following: Some(None), ..ActionOutcome::default() }
}

async fn bootstrap_steps(pg: &Supervisor, dcs: &Dcs, settings: &HaSettings, timing: Timing) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let timeout = timing.retry_timeout;
    pg.write_pgpass().context("write pgpass")?;
    pg.initdb().await.context("run initdb")?;
    pg.start(StartRole::Primary).await.context("start the new primary")?;
    pg.create_users().await.context("create the superuser and replication users")?;
    let probe = pg.probe().await.context("probe the new primary")?;
    let status = PgStatus::from(probe);
    let system_id = status.system_identifier.map(|s| s.to_string()).context("read the system identifier")?;
    let identity = super::observe::MemberIdentity {
        conn_url: &settings.conn_url,
        api_url: &settings.api_url,
        tags: &settings.tags,
        raft_node_id: settings.raft_node_id,
        scheduled_restart: None,
    };
    let member = super::observe::member_data(&identity, &status, false);
    let acquired = dcs.acquire_leader(&member, timing.ttl, timeout).await.context("take the leader lock")?;
    anyhow::ensure!(acquired, "the leader lock was taken by someone else during bootstrap");
    dcs.set_initialize(&system_id, timeout).await.context("record the system identifier")?;
    dcs.write_config_if_absent(&settings.bootstrap_dcs, timeout).await.context("write the dynamic config")?;
    info!(system_id, "bootstrapped a new cluster");
    Ok(())
}

/// Create a replica from the leader with pg_basebackup and start it.
pub async fn clone(pg: Supervisor, leader: String, target: ConnTarget, slot: String, wipe: bool) -> ActionOutcome {
    if wipe {
        warn!(leader, "removing the data directory to clone again (remove_data_directory_on_rewind_failure)");
        if let Err(e) = pg.stop(StopMode::Immediate).await {
            error!(error = %e, "failed to stop postgres before re-cloning");
            return ActionOutcome::default();
        }
        if let Err(e) = pg.wipe_data_dir().await {
            error!(error = %e, "failed to remove the data directory");
            return ActionOutcome::default();
        }
    }
    if let Err(e) = pg.write_pgpass() {
        error!(error = %e, "failed to write the pgpass file");
        return ActionOutcome::default();
    }
    if let Err(e) = pg.basebackup(&target).await {
        error!(leader, error = %e, "failed to clone from the leader; will retry");
        return ActionOutcome::default();
    }
    let role = StartRole::Replica { primary: target, slot: Some(slot) };
    match pg.start(role).await {
        Ok(()) => ActionOutcome { following: Some(Some(leader)), ..ActionOutcome::default() },
        Err(e) => {
            error!(error = %e, "failed to start the new replica");
            ActionOutcome::default()
        }
    }
}

/// Start PostgreSQL in `role`.
pub async fn start(pg: Supervisor, role: StartRole, following: Option<Option<String>>) -> ActionOutcome {
    match pg.start(role).await {
        Ok(()) => ActionOutcome { following, ..ActionOutcome::default() },
        Err(e) => {
            error!(error = %e, "failed to start postgres");
            ActionOutcome::default()
        }
    }
}

/// Optionally pg_rewind from the leader, then start as its replica.
pub async fn start_replica(
    pg: Supervisor,
    role: StartRole,
    leader: String,
    rewind_from: Option<ConnTarget>,
) -> ActionOutcome {
    if let Some(target) = rewind_from {
        if let Err(e) = pg.write_pgpass() {
            error!(error = %e, "failed to write the pgpass file");
            return ActionOutcome::default();
        }
        match pg.rewind(&target).await {
            Ok(RewindOutcome::Rewound) => info!(leader, "pg_rewind brought the old primary onto the new timeline"),
            Ok(RewindOutcome::NotNeeded) => info!(leader, "no rewind needed"),
            Err(e) => {
                error!(leader, error = %e, "pg_rewind failed");
                return ActionOutcome { rewind_failed: true, ..ActionOutcome::default() };
            }
        }
    }
    start(pg, role, Some(Some(leader))).await
}

/// Restart a replica to follow another leader.
pub async fn restart(pg: Supervisor, role: StartRole, leader: String) -> ActionOutcome {
    match pg.restart(role).await {
        Ok(()) => ActionOutcome { following: Some(Some(leader)), ..ActionOutcome::default() },
        Err(e) => {
            error!(leader, error = %e, "failed to restart postgres to follow the new leader");
            ActionOutcome::default()
        }
    }
}

/// Restart on an API request, in the role PostgreSQL has now.
pub async fn restart_on_request(pg: Supervisor, role: StartRole) -> ActionOutcome {
    match pg.restart(role).await {
        Ok(()) => ActionOutcome::default(),
        Err(e) => {
            error!(error = %e, "restart requested through the API failed");
            ActionOutcome { failed: Some("restart failed".into()), ..ActionOutcome::default() }
        }
    }
}

/// Time for a configuration reload to be processed before the promote signal.
const RELOAD_BEFORE_PROMOTE: Duration = Duration::from_millis(300);

/// Promote, then record the timeline switch in `history`.
pub async fn promote(
    pg: Supervisor,
    dcs: Dcs,
    me: String,
    timeout: Duration,
    timing: Timing,
    sync: super::sync::SyncPolicy,
) -> ActionOutcome {
    let before = pg.probe().await.ok().map(PgStatus::from);
    // Before accepting writes: in strict synchronous mode commits must wait for a standby from
    // the first transaction on; otherwise start standalone until the next cycle picks standbys.
    let initial_sync = (sync.mode != crate::config::SynchronousMode::Off && sync.strict).then_some("*");
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
    if let Err(e) = pg.promote(timeout).await {
        error!(error = %e, "failed to promote postgres");
        return ActionOutcome::default();
    }
    info!("promoted postgres to primary");
    // Without a checkpoint on the new timeline, pg_rewind on the old primary still sees the
    // old timeline in our pg_control and wrongly reports that no rewind is needed.
    if let Err(e) = pg.checkpoint().await {
        warn!(error = %e, "checkpoint after promote failed");
    }
    let old_timeline = before.as_ref().and_then(|s| s.timeline).map(|t| t.0).unwrap_or(1);
    let switch_lsn = match before.as_ref().map(|s| &s.wal) {
        Some(wal @ WalPosition::Replica { .. }) => wal.furthest().map(|l| l.0).unwrap_or(0),
        _ => 0,
    };
    let line = (old_timeline, switch_lsn, "no recovery target specified".to_string(), now_iso(), me);
    if let Err(e) = dcs.append_history(line, timing.retry_timeout).await {
        warn!(error = %e, "failed to record the timeline switch in history");
    }
    ActionOutcome { following: Some(None), ..ActionOutcome::default() }
}

/// Planned switchover: stop with a shutdown checkpoint (connected replicas receive every WAL
/// record before a fast shutdown completes), then release the lock so the candidate takes
/// it at once.
pub async fn graceful_demote(pg: Supervisor, dcs: Dcs, status: Option<StatusData>, timing: Timing) -> ActionOutcome {
    if let Err(e) = pg.stop(StopMode::Fast).await {
        error!(error = %e, "failed to stop postgres for the switchover; stopping immediately");
        if let Err(e) = pg.stop(StopMode::Immediate).await {
            error!(error = %e, "failed to stop postgres; a human must check this node");
            return ActionOutcome::default();
        }
    }
    match dcs.release_leader(status.as_ref(), timing.retry_timeout).await {
        Ok(_) => info!("demoted for the switchover and released the leader lock"),
        Err(e) => warn!(error = %e, "failed to release the leader lock; it expires after ttl"),
    }
    ActionOutcome { following: Some(None), ..ActionOutcome::default() }
}

/// Now as ISO 8601 with offset, as Patroni writes history timestamps.
pub fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false)
}
