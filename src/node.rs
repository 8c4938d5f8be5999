//! Composition root of `raftgres run`: config → Raft replica → DCS → PostgreSQL supervisor →
//! HA loop + fence → REST API. Owns the shutdown order:
//! 1. a primary hands its key over as a switchover does (`ha::handover`: the `failover` key names the
//!    replica that would win, the loop demotes gracefully, the candidate takes the key), with the REST API
//!    still answering;
//! 2. the REST API stops accepting requests;
//! 3. the HA loop stops: a primary that did not hand over stops PostgreSQL (fast), disarms the watchdog
//!    and releases the lease so a replica takes over at once, every node revokes its session (paused:
//!    PostgreSQL is left running and the lock kept);
//! 4. the fence stops;
//! 5. the Raft replica shuts down and sled is flushed.

use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;
use tracing::warn;
use tracing::Instrument;

use std::sync::Arc;

use crate::config::Config;
use crate::config::Loaded;
use crate::config::PgUser;
use crate::dcs::Dcs;
use crate::ha::HaLoop;
use crate::ha::HaSettings;
use crate::postgres::params::guc_value;
use crate::postgres::supervisor::Credentials;
use crate::postgres::supervisor::CustomBootstrap;
use crate::postgres::supervisor::CustomReplicaMethod;
use crate::postgres::supervisor::PgConfig;
use crate::postgres::supervisor::ReplicaMethod;
use crate::postgres::supervisor::Supervisor;
use crate::reload::ConfigSource;
use crate::reload::LogApply;
use crate::reload::ReloadTargets;
use crate::reload::Reloader;
use crate::status::NodeStatus;

/// How [`run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// `shutdown` was cancelled and the node stopped cleanly.
    Shutdown,
    /// The Raft store failed and its directory takes writes again: the caller must replace the
    /// process with a fresh start ([`crate::store_failure`]). Nothing was stopped.
    RestartInPlace,
}

/// Runs one node until `shutdown` is cancelled: `loaded` was read from `source`, which SIGHUP and
/// `POST /reload` read again (`log` applies new log settings).
pub async fn run(
    loaded: Loaded,
    source: ConfigSource,
    log: Option<LogApply>,
    shutdown: CancellationToken,
) -> anyhow::Result<Stopped> {
    let span = tracing::info_span!("node", name = %loaded.config.name);
    run_inner(loaded, source, log, shutdown).instrument(span).await
}

async fn run_inner(
    loaded: Loaded,
    source: ConfigSource,
    log: Option<LogApply>,
    shutdown: CancellationToken,
) -> anyhow::Result<Stopped> {
    // Decided (and, when `CHAOS_UNSAFE_BREAK` is set, logged) at start rather than at the first demotion.
    crate::chaos::unsafe_break_no_demote();
    let config = loaded.config.clone();
    let pg_config = pg_config(&config).context("resolve the PostgreSQL settings")?;
    let pg = Supervisor::new(pg_config).context("set up the PostgreSQL supervisor")?;
    if let Some(pid) = pg.adopt().await.context("check for a running postmaster")? {
        info!(pid, "adopted the running postmaster");
    }
    let mut raft_config = config.raft_config();
    crate::dcs::configure_raft(&mut raft_config, config.raft.leadership_follows_primary);
    let raft = raft::RaftNode::start(raft_config).await.context("start the raft replica")?;
    let dcs = Dcs::new(raft.clone(), &config.name);
    let (status_tx, status_rx) =
        watch::channel(NodeStatus::initial(&config.name, &config.scope, tokio::time::Instant::now()));
    let api_listener = tokio::net::TcpListener::bind(config.restapi.listen.to_string())
        .await
        .with_context(|| format!("bind the REST API on {} (restapi.listen)", config.restapi.listen))?;
    info!(listen = %api_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "REST API listening");

    let tracker = TaskTracker::new();
    let api_token = CancellationToken::new();
    let ha_token = CancellationToken::new();
    let fence_token = CancellationToken::new();

    // The REST API holds scheduled restarts; the HA loop publishes them in the member key.
    let restarts = std::sync::Arc::new(crate::api::actions::restart::RestartSchedule::default());
    let haproxy = crate::haproxy::Pusher::start(config.haproxy.as_ref());
    let lease_of = dcs.clone();
    let vip = crate::vip::Vip::start(config.vip.as_ref(), Arc::new(move || lease_of.lease().leader_valid_until));
    let settings = HaSettings {
        scheduled_restart: restarts.subscribe(),
        haproxy: haproxy.clone(),
        vip: vip.clone(),
        ..ha_settings(&config)
    };
    let peer_http = crate::api::peer_client(config.restapi.cafile.as_deref())
        .context("build the HTTP client for peer status requests (restapi.cafile)")?;
    let watchdog = settings.watchdog.clone();
    let ha = HaLoop::new(settings, dcs.clone(), pg.clone(), status_tx, peer_http);
    let is_primary = ha.primary_flag();
    let mut api_state = crate::api::ApiState::for_node(status_rx, dcs.clone(), ha.requests(), &config.restapi)
        .context("set up the REST API (restapi)")?;
    api_state.restarts = restarts;
    let targets = ReloadTargets {
        pg: pg.clone(),
        ha: ha.requests(),
        security: api_state.security.clone(),
        api_tls: api_state.tls.clone(),
        raft: raft.clone(),
        log,
    };
    let reloader = Arc::new(Reloader::new(source, loaded, targets));
    api_state.reload = Some(reloader.clone());
    let api_shutdown = api_token.clone();
    tracker.spawn(
        async move {
            if let Err(e) = crate::api::serve(api_listener, api_state, api_shutdown.cancelled_owned()).await {
                warn!(error = %e, "REST API server stopped");
            }
        }
        .instrument(tracing::info_span!("api")),
    );

    tracker
        .spawn(crate::reload::reload_on_sighup(reloader, api_token.clone()).instrument(tracing::info_span!("reload")));
    let ha_handle = tokio::spawn(ha.run(ha_token.clone(), api_token.clone()).instrument(tracing::info_span!("ha")));
    let guard_file = config.raft.data_dir.join("fence-guard");
    match crate::postgres::process::spawn_guard(&guard_file, config.vip.as_ref()) {
        Ok((pid, program)) => {
            info!(pid, program = %program.display(), file = %guard_file.display(), "started the fence guard")
        }
        Err(e) => warn!(error = %e, "failed to start the fence guard; only the in-process fence protects this primary"),
    }
    let fence = crate::ha::fence::Fence {
        dcs: dcs.clone(),
        pg: pg.clone(),
        is_primary,
        guard_file: Some(guard_file),
        watchdog,
        haproxy: (haproxy, config.name.clone()),
        vip,
    };
    tracker.spawn(crate::ha::fence::run(fence, fence_token.clone()));
    let restart = CancellationToken::new();
    let store_dir = config.raft.data_dir.clone();
    tracker.spawn(crate::store_failure::watch(raft.clone(), store_dir, shutdown.clone(), restart.clone()));
    tracker.close();

    tokio::select! {
        _ = shutdown.cancelled() => {}
        // Nothing is stopped: PostgreSQL keeps running for the new process to adopt, and the lease
        // could not be released without a Raft store anyway.
        _ = restart.cancelled() => return Ok(Stopped::RestartInPlace),
    }
    info!("shutting down");
    // The HA loop stops the REST API itself, after a primary's hand-over and before PostgreSQL stops.
    ha_token.cancel();
    if let Err(e) = ha_handle.await {
        warn!(error = %e, "HA loop task ended abnormally");
    }
    api_token.cancel();
    fence_token.cancel();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await.is_err() {
        warn!("background tasks did not stop within 10 s");
    }
    raft.shutdown().await.context("shut down the raft replica")?;
    info!("stopped");
    Ok(Stopped::Shutdown)
}

/// The HA loop's local settings from the static config.
pub fn ha_settings(config: &Config) -> HaSettings {
    let pg = &config.postgresql;
    HaSettings {
        name: config.name.clone(),
        scope: config.scope.clone(),
        conn_url: format!("postgres://{}/postgres", pg.connect_address),
        api_url: format!(
            "{}://{}/patroni",
            if config.restapi.certfile.is_some() { "https" } else { "http" },
            config.restapi.connect_address
        ),
        tags: config.tags.0.clone(),
        bootstrap_dcs: config.bootstrap.dcs.document().clone(),
        use_pg_rewind: pg.use_pg_rewind.then_some(true),
        remove_data_directory_on_rewind_failure: pg.remove_data_directory_on_rewind_failure,
        raft_node_id: config.raft.node_id,
        stop_postgres_on_shutdown: true,
        scheduled_restart: watch::channel(None).1,
        watchdog: crate::watchdog::Watchdog::new(config.watchdog.clone()),
        haproxy: crate::haproxy::Pusher::disabled(),
        vip: crate::vip::Vip::disabled(),
        node_dirs: crate::ha::disk::NodeDirs { data: pg.data_dir.clone(), raft: config.raft.data_dir.clone() },
    }
}

fn credentials(user: &PgUser) -> Credentials {
    Credentials { username: user.username.clone(), password: user.password.as_ref().map(|p| p.expose().to_string()) }
}

/// A method option as Patroni formats it with Python's `str()`: booleans are `True`/`False`.
fn option_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(true) => "True".to_owned(),
        serde_json::Value::Bool(false) => "False".to_owned(),
        other => other.to_string(),
    }
}

/// A method section's boolean flag (YAML boolean or a `true` string).
fn option_flag(section: &serde_json::Map<String, serde_json::Value>, key: &str) -> bool {
    section.get(key).is_some_and(|value| option_text(value).eq_ignore_ascii_case("true"))
}

/// A `create_replica_methods` entry with its `postgresql.<name>` section (validated by the config module).
fn replica_method(
    name: &str,
    sections: &std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
) -> ReplicaMethod {
    let Some(section) = sections.get(name).filter(|_| name != "basebackup") else { return ReplicaMethod::Basebackup };
    ReplicaMethod::Command(CustomReplicaMethod {
        name: name.to_owned(),
        command: section.get("command").map(option_text).unwrap_or_else(|| name.to_owned()),
        keep_data: option_flag(section, "keep_data"),
        no_params: option_flag(section, "no_params"),
        no_leader: option_flag(section, "no_leader") || option_flag(section, "no_master"),
        options: section
            .iter()
            .filter(|(key, _)| key.as_str() != "command")
            .map(|(k, v)| (k.clone(), option_text(v)))
            .collect(),
    })
}

/// `bootstrap.method` when it names a command (validated by the config module).
fn custom_bootstrap(method: &crate::config::BootstrapMethod) -> Option<CustomBootstrap> {
    let crate::config::BootstrapMethod::Custom { name, command, section } = method else { return None };
    let reserved = ["command", "no_params", "keep_existing_recovery_conf", "recovery_conf", "scope", "datadir"];
    let recovery_conf = section.get("recovery_conf").and_then(serde_json::Value::as_object);
    Some(CustomBootstrap {
        name: name.clone(),
        command: command.clone(),
        no_params: option_flag(section, "no_params"),
        keep_existing_recovery_conf: option_flag(section, "keep_existing_recovery_conf"),
        recovery_conf: recovery_conf
            .map(|map| map.iter().map(|(k, v)| (k.clone(), guc_value(v))).collect())
            .unwrap_or_default(),
        options: section
            .iter()
            .filter(|(key, _)| !reserved.contains(&key.as_str()))
            .map(|(k, v)| (k.clone(), option_text(v)))
            .collect(),
    })
}

/// The supervisor's settings from the static config (and the bootstrap dynamic config's
/// cluster-wide parameters until the cluster's own dynamic config is applied).
pub fn pg_config(config: &Config) -> anyhow::Result<PgConfig> {
    let pg = &config.postgresql;
    let bin_dir = match &pg.bin_dir {
        Some(dir) => dir.clone(),
        None => crate::config::load::find_bin_dir(&pg.bin_name.postgres, std::env::var_os("PATH").as_deref())
            .context("find the PostgreSQL programs: set postgresql.bin_dir (apt-get install -y postgresql)")?,
    };
    let mut parameters: std::collections::BTreeMap<String, String> =
        config.bootstrap.dcs.view().postgresql.parameters.iter().map(|(k, v)| (k.clone(), guc_value(v))).collect();
    parameters.extend(pg.parameters.iter().map(|(k, v)| (k.clone(), guc_value(v))));
    let pg_hba = if pg.pg_hba.is_empty() { config.bootstrap.pg_hba.clone() } else { pg.pg_hba.clone() };
    let pgpass = pg.pgpass_path(&config.name);
    let is_root = nix::unistd::geteuid().is_root();
    Ok(PgConfig {
        name: config.name.clone(),
        bin_dir,
        data_dir: pg.data_dir.clone(),
        run_as: is_root.then(|| pg.run_as.clone()),
        listen_addresses: pg.listen.listen_addresses(),
        port: pg.listen.port,
        connect_host: pg.connect_address.host.clone(),
        superuser: credentials(&pg.authentication.superuser),
        replication: credentials(&pg.authentication.replication),
        rewind: pg.authentication.rewind.as_ref().map(credentials),
        parameters,
        pg_hba,
        initdb_options: config.bootstrap.initdb.iter().map(|o| o.to_arg()).collect(),
        basebackup_options: pg.basebackup.iter().map(|o| o.to_arg()).collect(),
        custom_bootstrap: custom_bootstrap(&config.bootstrap.method),
        nostream: config.tags.nostream(),
        replica_methods: pg
            .create_replica_methods
            .iter()
            .map(|name| replica_method(name, &pg.replica_methods))
            .collect(),
        method_sections: pg
            .replica_methods
            .keys()
            .filter_map(|name| match replica_method(name, &pg.replica_methods) {
                ReplicaMethod::Command(custom) => Some((name.clone(), custom)),
                ReplicaMethod::Basebackup => None,
            })
            .collect(),
        pgpass,
        scope: config.scope.clone(),
        start_timeout: pg.pg_ctl_timeout,
        stop_timeout: pg.pg_ctl_timeout,
        recovery_params: pg.recovery_conf.iter().map(|(k, v)| (k.clone(), guc_value(v))).collect(),
        standby_leader_recovery: None,
        hooks: crate::postgres::supervisor::Hooks {
            on_start: pg.callbacks.on_start.clone(),
            on_stop: pg.callbacks.on_stop.clone(),
            on_restart: pg.callbacks.on_restart.clone(),
            on_reload: pg.callbacks.on_reload.clone(),
            on_role_change: pg.callbacks.on_role_change.clone(),
            pre_promote: pg.pre_promote.clone(),
            before_stop: pg.before_stop.clone(),
            post_bootstrap: config.bootstrap.post_bootstrap.clone(),
        },
    })
}
