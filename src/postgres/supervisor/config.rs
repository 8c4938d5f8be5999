//! What the local PostgreSQL runs with: the supervisor's static configuration (`PgConfig`, `Credentials`), the
//! user GUCs in force, the managed files written from them, the pgpass file, and reloading a running server.
//!
//! The dynamic configuration's parameters, overlaid by the node's local ones (Patroni's rule: local settings win,
//! computed by the pure `postgres::params`), replace the ones `postgresql.conf` is written with from the next
//! start, restart or reload on. PostgreSQL applies what it can on reload; a parameter that needs a restart shows
//! as `pending_restart` through the status probe.
//! This module must not decide when to reload: the HA loop calls [`Supervisor::apply_dynamic_parameters`] when
//! the dynamic configuration changed. Rendering is `postgres::conf`'s and writing `postgres::files`'.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::probe::sql;
use super::{PgError, Supervisor};
use crate::config::DynamicConfig;
use crate::postgres::files::{self, RecoveryConf};
use crate::postgres::params::effective_parameters;
use crate::postgres::process;

/// The user PostgreSQL programs run as when raftgres runs as root and `run_as` is not set.
pub const DEFAULT_RUN_AS: &str = "postgres";

/// Everything the supervisor needs to know about the local PostgreSQL (the lead maps the YAML config onto it).
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Member name: `application_name` of the replication connection and the source of slot names.
    pub name: String,
    /// Directory holding `postgres`, `initdb`, `pg_basebackup`, `pg_rewind`, `pg_controldata`.
    pub bin_dir: PathBuf,
    /// The data directory (made absolute by [`Supervisor::new`]).
    pub data_dir: PathBuf,
    /// OS user PostgreSQL programs run as. `None` runs them as ourselves, except as root, where it means
    /// [`DEFAULT_RUN_AS`] because PostgreSQL refuses to run as root.
    pub run_as: Option<String>,
    /// `listen_addresses`.
    pub listen_addresses: String,
    /// `port`.
    pub port: u16,
    /// The address other members use to reach this PostgreSQL.
    pub connect_host: String,
    /// Superuser, used for the status probe and for pg_rewind when `rewind` is not set.
    pub superuser: Credentials,
    /// Replication user, used by replicas and pg_basebackup.
    pub replication: Credentials,
    /// Dedicated pg_rewind user, if any.
    pub rewind: Option<Credentials>,
    /// User GUCs (`postgresql.parameters`).
    pub parameters: BTreeMap<String, String>,
    /// `pg_hba.conf` lines; empty leaves the file alone (initdb's defaults then stay).
    pub pg_hba: Vec<String>,
    /// Extra initdb arguments such as `--data-checksums` or `--encoding=UTF8`.
    pub initdb_options: Vec<String>,
    /// Extra pg_basebackup arguments such as `--max-rate=100M`.
    pub basebackup_options: Vec<String>,
    /// `nostream` tag: a replica recovers from the archive (`recovery_conf.restore_command`) and never streams.
    pub nostream: bool,
    /// `bootstrap.method` when it is not `initdb`: the command that makes a new cluster (see `restore`).
    pub custom_bootstrap: Option<super::CustomBootstrap>,
    /// `postgresql.create_replica_methods` with their sections, tried in order (see `Supervisor::create_replica`).
    pub replica_methods: Vec<super::ReplicaMethod>,
    /// Every custom method section of the local configuration, by name (`standby_cluster.
    /// create_replica_methods` may name any of them, see `Supervisor::create_replica_with`).
    pub method_sections: BTreeMap<String, super::CustomReplicaMethod>,
    /// The `.pgpass` file raftgres writes and every PostgreSQL client program reads (`PGPASSFILE`).
    pub pgpass: PathBuf,
    /// Cluster name (`cluster_name`).
    pub scope: String,
    /// How long `start` waits for PostgreSQL to accept connections.
    pub start_timeout: Duration,
    /// How long `stop` waits per signal.
    pub stop_timeout: Duration,
    /// `postgresql.recovery_conf`, rendered: written only while PostgreSQL runs as a replica or standby.
    pub recovery_params: BTreeMap<String, String>,
    /// The operator's scripts (`postgresql.callbacks`, `pre_promote`, `before_stop`, `bootstrap.post_bootstrap`).
    pub hooks: super::Hooks,
    /// In a standby cluster: the `primary_conninfo` of the remote primary and the `standby_cluster` recovery
    /// settings that replace `recovery_params` while PostgreSQL streams from it (the standby leader). Set by the
    /// supervisor from [`Supervisor::set_standby_leader_recovery`]; `None` in a configuration.
    pub standby_leader_recovery: Option<(String, BTreeMap<String, String>)>,
}

/// A PostgreSQL user name and password; `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Role name.
    pub username: String,
    /// Password; `None` relies on pg_hba.conf (peer, trust or certificates).
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = self.password.as_ref().map(|_| "<redacted>");
        f.debug_struct("Credentials").field("username", &self.username).field("password", &password).finish()
    }
}

/// The part of the local configuration a reload (SIGHUP, `POST /reload`) replaces while PostgreSQL runs: its
/// `postgresql.parameters`, `pg_hba`, `recovery_conf` and the operator's scripts. Everything else in `PgConfig`
/// (directories, ports, users) needs a restart of raftgres.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// `postgresql.parameters` of the node's file.
    pub parameters: BTreeMap<String, String>,
    /// `postgresql.pg_hba` (else `bootstrap.pg_hba`).
    pub pg_hba: Vec<String>,
    /// `postgresql.recovery_conf`, rendered.
    pub recovery_params: BTreeMap<String, String>,
    /// Callbacks, `pre_promote`, `before_stop`, `post_bootstrap`.
    pub hooks: super::Hooks,
}

impl LocalSettings {
    /// The reloadable part of `cfg`.
    pub fn of(cfg: &PgConfig) -> LocalSettings {
        LocalSettings {
            parameters: cfg.parameters.clone(),
            pg_hba: cfg.pg_hba.clone(),
            recovery_params: cfg.recovery_params.clone(),
            hooks: cfg.hooks.clone(),
        }
    }
}

impl Supervisor {
    /// The reloadable local settings in force: the last reload's, else the start-up configuration's.
    pub fn local(&self) -> LocalSettings {
        let local = self.inner.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        local.clone().unwrap_or_else(|| LocalSettings::of(&self.inner.cfg))
    }

    /// Takes the reloadable part of a re-read configuration; returns the names of what changed
    /// (`postgresql.parameters`, `pg_hba`, `recovery_conf`, `callbacks`). The parameters in force are recomputed
    /// with the last dynamic configuration; the caller reloads PostgreSQL.
    pub fn reload_local(&self, new: &PgConfig) -> Vec<&'static str> {
        let new = LocalSettings::of(new);
        let old = self.local();
        let mut changed = Vec::new();
        if new.parameters != old.parameters {
            changed.push("postgresql.parameters");
        }
        if new.pg_hba != old.pg_hba {
            changed.push("postgresql.pg_hba");
        }
        if new.recovery_params != old.recovery_params {
            changed.push("postgresql.recovery_conf");
        }
        if new.hooks != old.hooks {
            changed.push("postgresql.callbacks");
        }
        let wanted = match self.inner.last_dynamic.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some((bootstrap_dcs, dynamic)) => {
                let (bootstrap, _) = DynamicConfig::parse_lenient(bootstrap_dcs.clone());
                effective_parameters(&new.parameters, &bootstrap.view().postgresql.parameters, dynamic)
            }
            None => new.parameters.clone(),
        };
        *self.inner.local.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(new);
        self.set_parameters(wanted);
        changed
    }

    /// Replaces the user GUCs written from now on; true when they changed.
    pub fn set_parameters(&self, parameters: BTreeMap<String, String>) -> bool {
        let local = self.local().parameters;
        let mut current = self.inner.parameters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let in_force = current.as_ref().unwrap_or(&local);
        if *in_force == parameters {
            return false;
        }
        *current = Some(parameters);
        true
    }

    /// The user GUCs in force.
    pub fn parameters(&self) -> BTreeMap<String, String> {
        let current = self.inner.parameters.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match current.as_ref() {
            Some(parameters) => parameters.clone(),
            None => {
                drop(current);
                self.local().parameters
            }
        }
    }

    /// The configuration `postgresql.conf` is written from: the static one with the parameters in force.
    pub(super) fn effective_config(&self) -> PgConfig {
        let local = self.local();
        let mut cfg = PgConfig {
            parameters: self.parameters(),
            pg_hba: local.pg_hba,
            recovery_params: local.recovery_params,
            hooks: local.hooks,
            ..self.inner.cfg.clone()
        };
        if cfg.recovery_params.is_empty() {
            cfg.recovery_params = self.inner.dynamic_recovery.lock().unwrap_or_else(|p| p.into_inner()).clone();
        }
        let remote = self.inner.standby_recovery.lock().unwrap_or_else(|p| p.into_inner()).clone();
        cfg.standby_leader_recovery = remote.and_then(|(target, params)| {
            let conninfo = match target {
                Some(target) => match files::replica_conninfo(&cfg, &target.host, target.port) {
                    Ok(conninfo) => conninfo,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot render the remote primary's conninfo; standby_cluster's \
                                       recovery settings are not applied");
                        return None;
                    }
                },
                // Archive-only: the standby leader runs without primary_conninfo.
                None => String::new(),
            };
            Some((conninfo, params))
        });
        if self.inner.hot_standby_feedback.load(std::sync::atomic::Ordering::Acquire) {
            cfg.parameters.retain(|name, _| !name.eq_ignore_ascii_case("hot_standby_feedback"));
            cfg.parameters.insert("hot_standby_feedback".to_owned(), "on".to_owned());
        }
        if let Some(overlay) = self.restore_overlay_slot().as_ref() {
            cfg.parameters.extend(overlay.recovery.clone());
            cfg.pg_hba = overlay.hba_lines(&cfg.superuser.username, &cfg.pg_hba);
        }
        cfg
    }

    /// Sets the parameters for a new dynamic configuration (`dynamic`, from the store) given the `bootstrap_dcs`
    /// document the supervisor was started with; when they changed and PostgreSQL runs, reloads it in a spawned
    /// task. Returns whether they changed.
    pub fn apply_dynamic_parameters(&self, bootstrap_dcs: &Value, dynamic: &BTreeMap<String, Value>) -> bool {
        let (bootstrap, _) = DynamicConfig::parse_lenient(bootstrap_dcs.clone());
        *self.inner.last_dynamic.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((bootstrap_dcs.clone(), dynamic.clone()));
        let wanted = effective_parameters(&self.local().parameters, &bootstrap.view().postgresql.parameters, dynamic);
        if !self.set_parameters(wanted) {
            return false;
        }
        tracing::info!("postgresql.parameters changed in the dynamic configuration");
        self.reload_in_background("failed to reload PostgreSQL with the new parameters");
        true
    }

    /// Enforces `hot_standby_feedback = on` (or stops enforcing it), as Patroni does on a replica that keeps
    /// permanent logical slots: the leader then keeps the catalog rows those slots need. A change reloads a
    /// running PostgreSQL in a spawned task (the parameter needs no restart). Returns whether it changed.
    pub fn enforce_hot_standby_feedback(&self, on: bool) -> bool {
        if self.inner.hot_standby_feedback.swap(on, std::sync::atomic::Ordering::AcqRel) == on {
            return false;
        }
        tracing::info!(on, "hot_standby_feedback enforcement changed (permanent logical slots on replicas)");
        self.reload_in_background("failed to reload PostgreSQL for hot_standby_feedback");
        true
    }

    /// In a standby cluster, the remote primary (`None`: archive-only) and the `standby_cluster` recovery settings
    /// (`restore_command`, `archive_cleanup_command`, `recovery_min_apply_delay`) PostgreSQL runs with while it
    /// streams from that primary (archive-only: while it runs with no upstream), i.e. as the standby leader;
    /// `None` outside a standby cluster. A change reloads a running
    /// PostgreSQL in a spawned task (the three need no restart). Returns whether it changed.
    pub fn set_standby_leader_recovery(&self, remote: Option<super::StandbyRecovery>) -> bool {
        {
            let mut current = self.inner.standby_recovery.lock().unwrap_or_else(|p| p.into_inner());
            if *current == remote {
                return false;
            }
            *current = remote;
        }
        self.reload_in_background("failed to reload PostgreSQL for the standby_cluster settings");
        true
    }

    /// The dynamic `postgresql.recovery_conf`, rendered: the replicas' recovery settings when the local
    /// configuration has none (a local `postgresql.recovery_conf` replaces it, as in Patroni). A change reloads a
    /// running PostgreSQL in a spawned task. Returns whether it changed.
    pub fn set_dynamic_recovery(&self, settings: BTreeMap<String, String>) -> bool {
        {
            let mut current = self.inner.dynamic_recovery.lock().unwrap_or_else(|p| p.into_inner());
            if *current == settings {
                return false;
            }
            *current = settings;
        }
        if !self.local().recovery_params.is_empty() {
            return true;
        }
        self.reload_in_background("failed to reload PostgreSQL for postgresql.recovery_conf");
        true
    }

    /// Reloads a running PostgreSQL in a spawned task (a changed setting that needs no restart); a failure is
    /// logged as `failure`, a server that stopped meanwhile is no failure. The HA loop uses it for `POST /reload`
    /// and SIGHUP: a reload waits for the operation lock, which a restart or promote holds for seconds, and the
    /// loop must keep renewing its lease meanwhile.
    pub fn reload_in_background(&self, failure: &'static str) {
        if !self.is_running() {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match this.reload().await {
                Ok(()) | Err(PgError::NotRunning) => {}
                Err(e) => tracing::warn!(error = %e, "{failure}"),
            }
        });
    }

    /// Rewrites the managed configuration (same role as the last start) and sends SIGHUP.
    pub async fn reload(&self) -> Result<(), PgError> {
        self.shielded("reload", move |this| async move {
            let id = this.ensure_tracked().await?.ok_or(PgError::NotRunning)?;
            let known = this.state().recovery.clone();
            let recovery = match known {
                Some(recovery) => recovery,
                None => this.recovery_conf_from_server().await?,
            };
            this.write_conf(recovery).await?;
            process::signal_reload(id)?;
            tracing::info!(pid = id.pid, "reloaded PostgreSQL configuration");
            this.fire(super::Callback::OnReload);
            Ok(())
        })
        .await
    }

    /// Writes postgresql.conf, pg_hba.conf and standby.signal durably and remembers the recovery settings.
    pub(super) async fn write_conf(&self, recovery: RecoveryConf) -> Result<(), PgError> {
        let this = self.clone();
        let written = recovery.clone();
        let (rejected, socket_dir) = files::blocking("write postgresql.conf", move || {
            let cfg = &this.effective_config();
            let owner = this.inner.owner.as_ref();
            files::check_owner(&cfg.data_dir, owner)?;
            let socket_dir = files::socket_dir(&cfg.data_dir, cfg.port, this.inner.run_uid);
            let rejected = files::write_managed_conf(cfg, owner, &written, &socket_dir)?;
            Ok((rejected, socket_dir))
        })
        .await?;
        for message in rejected {
            tracing::warn!("{message}");
        }
        let mut state = self.state();
        state.recovery = Some(recovery);
        state.socket_dir = Some(socket_dir);
        Ok(())
    }

    /// Forgets the recovery settings (after the data directory was replaced or rewound).
    pub(super) fn forget_conf(&self) {
        self.state().recovery = None;
    }

    /// The unix socket directory of the running server, when known.
    pub(super) fn socket_dir(&self) -> Option<PathBuf> {
        self.state().socket_dir.clone()
    }

    /// Writes the pgpass file durably (mode 0600, owned by the PostgreSQL user): a `*:*:*:user:password` line
    /// for the superuser, the replication user and the rewind user, for whichever has a password.
    pub fn write_pgpass(&self) -> Result<(), PgError> {
        let cfg = &self.inner.cfg;
        let mut credentials = vec![&cfg.superuser, &cfg.replication];
        credentials.extend(cfg.rewind.as_ref());
        let text = files::render_pgpass_any_host(&credentials);
        if let Some(parent) = cfg.pgpass.parent() {
            std::fs::create_dir_all(parent).map_err(files::io_context("create directory", parent))?;
        }
        files::check_reachable(&cfg.pgpass, self.inner.owner.as_ref())?;
        files::write_durable(&cfg.pgpass, text.as_bytes(), 0o600, self.inner.owner.as_ref())
    }

    /// The recovery settings of a running server whose configuration raftgres did not write in this process
    /// (an adopted postmaster), so a reload keeps them.
    pub(super) async fn recovery_conf_from_server(&self) -> Result<RecoveryConf, PgError> {
        let session = self.session().await?;
        let res = async {
            let row = session
                .client
                .query_one(
                    "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('primary_conninfo'), \
                     pg_catalog.current_setting('primary_slot_name')",
                    &[],
                )
                .await
                .map_err(sql("read recovery settings"))?;
            if !row.get::<_, bool>(0) {
                return Ok(RecoveryConf::Primary);
            }
            let slot: String = row.get(2);
            Ok(RecoveryConf::Replica { primary_conninfo: row.get(1), slot: (!slot.is_empty()).then_some(slot) })
        }
        .await;
        session.done(res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_the_password() {
        let creds = Credentials { username: "postgres".into(), password: Some("secret".into()) };
        let shown = format!("{creds:?}");
        assert!(shown.contains("postgres") && shown.contains("redacted") && !shown.contains("secret"));
    }
}
