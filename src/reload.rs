//! Reloading the node's configuration without a restart, as Patroni does on SIGHUP and `POST /reload`: the YAML
//! (or `PATRONI_CONFIGURATION`) is read again and checked as at start-up; a broken one is refused with its key
//! path and the running configuration is kept. Otherwise what `config::reload` calls live is applied — the
//! supervisor's local PostgreSQL settings (then PostgreSQL reloads; a parameter that needs a restart shows as
//! `pending_restart`, as in Patroni), the tags (through the HA loop), the REST API's access rules, the log
//! settings — and every change that needs raftgres restarted is logged with its key. The REST API's and the raft
//! peers' certificates are read again from their files first, even when the new YAML is refused.
//!
//! The imperative shell around the pure `config::reload::reload_plan`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::error;
use tracing::info;
use tracing::warn;

use crate::api::security::Security;
use crate::api::security::SharedSecurity;
use crate::api::tls::TlsHandle;
use crate::config::reload::reload_plan;
use crate::config::EnvMap;
use crate::config::Loaded;
use crate::config::LogConfig;
use crate::ha::requests::HaRequest;
use crate::postgres::supervisor::Supervisor;

/// Where the configuration comes from, to read it again.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file or a directory of YAML files (`raftgres run FILE`, `-c FILE`).
    Path(PathBuf),
    /// `PATRONI_CONFIGURATION`/`RAFTGRES_CONFIGURATION`, or the variables alone.
    Environment,
}

impl ConfigSource {
    /// Reads and checks the configuration as `raftgres run` does at start-up.
    pub fn load(&self, env: &EnvMap) -> Result<Loaded, String> {
        let loaded = match self {
            ConfigSource::Path(path) => crate::config::load::load_private(path, env),
            ConfigSource::Environment => crate::config::load::load_from_env(env),
        }
        .map_err(|e| e.to_string())?;
        if let Some(problem) = crate::config::check_environment(&loaded.config).into_iter().next() {
            return Err(problem.to_string());
        }
        Ok(loaded)
    }
}

/// Applies new log settings (the subscriber's reload handle).
pub type LogApply = Box<dyn Fn(&LogConfig) -> Result<(), String> + Send + Sync>;

/// What a reload touches.
pub struct Reloader {
    source: ConfigSource,
    current: Mutex<Loaded>,
    pg: Supervisor,
    ha: mpsc::Sender<HaRequest>,
    security: Arc<SharedSecurity>,
    api_tls: Option<Arc<TlsHandle>>,
    raft: raft::RaftNode,
    log: Option<LogApply>,
}

/// The parts of the node a reload changes.
pub struct ReloadTargets {
    /// The supervisor (local PostgreSQL settings).
    pub pg: Supervisor,
    /// The HA loop (tags, PostgreSQL reload).
    pub ha: mpsc::Sender<HaRequest>,
    /// The REST API's access rules.
    pub security: Arc<SharedSecurity>,
    /// The REST API's certificate, when it serves HTTPS.
    pub api_tls: Option<Arc<TlsHandle>>,
    /// The raft replica (peer certificates).
    pub raft: raft::RaftNode,
    /// The log subscriber, when it can change at run time.
    pub log: Option<LogApply>,
}

impl Reloader {
    /// A reloader of `source`, which was last read as `loaded`.
    pub fn new(source: ConfigSource, loaded: Loaded, targets: ReloadTargets) -> Reloader {
        let ReloadTargets { pg, ha, security, api_tls, raft, log } = targets;
        Reloader { source, current: Mutex::new(loaded), pg, ha, security, api_tls, raft, log }
    }

    /// Reads the configuration again and applies it; the answer says what changed and what waits for a restart,
    /// or why the new configuration was refused (the running one is kept).
    pub async fn reload(&self) -> Result<String, String> {
        let source = self.source.clone();
        let env = crate::config::process_env();
        // The certificates first, from the files the running configuration names: a rotation works even when
        // the YAML was broken meanwhile.
        self.reload_certificates().await;
        let loaded = tokio::task::spawn_blocking(move || source.load(&env))
            .await
            .map_err(|e| format!("read the configuration: {e}"))?;
        let mut current = self.current.lock().await;
        let new = match loaded {
            Ok(new) => new,
            Err(e) => {
                error!(error = %e, "configuration reload refused; the running configuration is kept");
                return Err(format!("the new configuration is invalid, the running one is kept: {e}"));
            }
        };
        for warning in &new.warnings {
            warn!(warning = %warning, "configuration");
        }
        let plan = reload_plan(&current.tree, &new.tree);
        self.apply(&current, &new).await;
        for key in &plan.needs_restart {
            warn!(key = %key, "changed in the configuration; restart raftgres to apply it (the running value stays)");
        }
        let mut answer = if plan.live.is_empty() {
            "reload scheduled".to_string()
        } else {
            info!(changed = ?plan.live, "configuration reloaded");
            format!("reload scheduled; applied: {}", plan.live.join(", "))
        };
        if !plan.needs_restart.is_empty() {
            answer.push_str(&format!("; needs a restart of raftgres: {}", plan.needs_restart.join(", ")));
        }
        *current = new;
        Ok(answer)
    }

    /// Applies the live part of `new` over `old` (every part is applied; the unchanged ones are no-ops). What
    /// needs a restart keeps its running value: `tags.nostream` (PostgreSQL runs with or without streaming) and
    /// whether the REST API asks for client certificates (`verify_client`, `certfile`).
    async fn apply(&self, old: &Loaded, new: &Loaded) {
        let config = &new.config;
        match crate::node::pg_config(config) {
            Ok(pg_config) => {
                let changed = self.pg.reload_local(&pg_config);
                if !changed.is_empty() {
                    info!(changed = ?changed, "local PostgreSQL settings reloaded");
                }
            }
            Err(e) => warn!(error = %format!("{e:#}"), "PostgreSQL settings of the reloaded configuration not applied"),
        }
        let mut tags = config.tags.0.clone();
        match old.config.tags.0.get("nostream") {
            Some(running) => tags.insert("nostream".to_string(), running.clone()),
            None => tags.remove("nostream"),
        };
        if self.ha.send(HaRequest::SetTags { tags }).await.is_err() {
            warn!("the HA loop is not running; the reloaded tags are not applied");
        }
        let (reply, _answer) = tokio::sync::oneshot::channel();
        if self.ha.send(HaRequest::Reload { reply }).await.is_err() {
            warn!("the HA loop is not running; PostgreSQL is not reloaded");
        }
        let mut security = Security::from_config(&config.restapi);
        security.require_client_cert = self.security.current().require_client_cert;
        self.security.replace(security);
        if let Some(log) = &self.log {
            if let Err(e) = log(&config.log) {
                warn!(error = %e, "the reloaded log settings are not applied");
            }
        }
    }
}

impl Reloader {
    /// Reads the REST API's and the raft peers' certificates again from their files; a file that does not load
    /// leaves the old certificate in use.
    async fn reload_certificates(&self) {
        if let Some(tls) = self.api_tls.clone() {
            match tokio::task::spawn_blocking(move || tls.reload()).await {
                Ok(Ok(())) => info!("reloaded the REST API certificate"),
                Ok(Err(e)) => warn!(error = %format!("{e:#}"), "failed to reload the REST API certificate"),
                Err(e) => warn!(error = %e, "certificate reload task failed"),
            }
        }
        match self.raft.reload_tls().await {
            Ok(Some(summary)) => info!(certificate = %summary, "reloaded the raft peer certificate"),
            Ok(None) => {}
            Err(e) => error!("failed to reload the raft peer certificate: {e:#}; the old one stays in use"),
        }
    }
}

/// Reloads on every SIGHUP until `stop`.
pub async fn reload_on_sighup(reloader: Arc<Reloader>, stop: CancellationToken) {
    use tokio::signal::unix::signal;
    use tokio::signal::unix::SignalKind;
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(e) => {
            warn!(error = %e, "failed to listen for SIGHUP; reload with POST /reload or restart raftgres");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            received = hangup.recv() => if received.is_none() { return },
        }
        info!("SIGHUP: reloading the configuration");
        // A refused reload was logged as an ERROR with the key path.
        if let Ok(answer) = reloader.reload().await {
            info!(result = %answer, "SIGHUP: reload done");
        }
    }
}
