//! This server and its upstream: cloning it with pg_basebackup, rejoining a former primary to the new
//! primary's timeline with pg_rewind (contract §2.12), whom a running replica follows, the primary's physical
//! and `synchronous_standby_names` (the replication slots are in `slots`).
//!
//! This module owns running pg_basebackup and pg_rewind against a source server and reading what pg_rewind did
//! from its output and the `<data_dir>.rewind-incomplete` marker.
//! It must not decide whether to clone, rewind or reclone (the HA loop does, from the timelines), nor which
//! slots or standbys are wanted (`postgres::slots`, `postgres::sync` and the HA loop do). It relies on
//! PostgreSQL 13+ pg_rewind bringing an uncleanly stopped target to a clean shutdown itself.

use std::collections::BTreeMap;
use std::ffi::OsString;

use super::probe::sql;
use super::{DataDirState, PgError, Supervisor};
use crate::postgres::conf::{self, ConnInfo};
use crate::postgres::files;
use crate::postgres::process;

/// The PostgreSQL server to clone from, follow or rewind from (normally the leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// What pg_rewind did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindOutcome {
    /// The data directory was rewound to the source's history.
    Rewound,
    /// The data directory had not diverged from the source.
    NotNeeded,
}

impl Supervisor {
    /// Clones the data directory from `from` with pg_basebackup (`-X stream -c fast`) as the replication user,
    /// the password coming from the pgpass file. The directory must be absent or empty; it is created with mode
    /// 0700 for the PostgreSQL user, and emptied again if pg_basebackup fails.
    /// Creates this replica's data directory from the member at `from` with the `create_replica_methods`, in
    /// order, as Patroni does: `basebackup` is pg_basebackup; any other method runs its `command` as the
    /// PostgreSQL user with `--scope=… --role=replica --datadir=… --connstring=…` after its other options
    /// (only those options with `no_params`), the data directory emptied first unless `keep_data`. The first
    /// method that succeeds (exit code 0 and a data directory PostgreSQL can start) wins; the name is returned.
    /// A failed method is logged and the next one tried; when all failed the data directory is emptied again.
    pub async fn create_replica(&self, from: &ConnTarget) -> Result<String, PgError> {
        self.run_replica_methods(Some(from), self.inner.cfg.replica_methods.clone()).await
    }

    /// Whether a replica can be created while the cluster has no leader: one of the methods (`names`, else
    /// `postgresql.create_replica_methods`) has `no_leader` (Patroni's `can_create_replica_without_replication_
    /// connection`).
    pub fn can_create_replica_without_leader(&self, names: Option<&[String]>) -> bool {
        self.resolve_methods(names).is_ok_and(|methods| methods.iter().any(works_without_leader))
    }

    /// Creates the data directory with the methods that need no member to copy from (`no_leader`), in order,
    /// their `--connstring` empty, as Patroni's "bootstrap (without leader)" does: a node restored from a backup
    /// while no member runs PostgreSQL. `names` as in [`Supervisor::can_create_replica_without_leader`].
    pub async fn create_replica_without_leader(&self, names: Option<&[String]>) -> Result<String, PgError> {
        let methods: Vec<ReplicaMethod> =
            self.resolve_methods(names)?.into_iter().filter(works_without_leader).collect();
        if methods.is_empty() {
            return Err(PgError::Config("no replica creation method has no_leader".to_owned()));
        }
        self.run_replica_methods(None, methods).await
    }

    /// The methods `names` (`basebackup` or a local method section), else `postgresql.create_replica_methods`.
    fn resolve_methods(&self, names: Option<&[String]>) -> Result<Vec<ReplicaMethod>, PgError> {
        let Some(names) = names else { return Ok(self.inner.cfg.replica_methods.clone()) };
        let mut methods = Vec::with_capacity(names.len());
        for name in names {
            match self.inner.cfg.method_sections.get(name) {
                _ if name == "basebackup" => methods.push(ReplicaMethod::Basebackup),
                Some(custom) => methods.push(ReplicaMethod::Command(custom.clone())),
                None => {
                    return Err(PgError::Config(format!(
                        "standby_cluster.create_replica_methods lists {name:?}; add a postgresql.{name} section with \
                         its command"
                    )))
                }
            }
        }
        Ok(methods)
    }

    /// [`Supervisor::create_replica`] with the methods `names` instead of `postgresql.create_replica_methods`
    /// (`standby_cluster.create_replica_methods`): `basebackup`, or a method section of the local configuration.
    pub async fn create_replica_with(&self, from: &ConnTarget, names: &[String]) -> Result<String, PgError> {
        let methods = self.resolve_methods(Some(names))?;
        self.run_replica_methods(Some(from), methods).await
    }

    async fn run_replica_methods(
        &self,
        from: Option<&ConnTarget>,
        methods: Vec<ReplicaMethod>,
    ) -> Result<String, PgError> {
        let mut failures = Vec::new();
        for method in &methods {
            let res = match (method, from) {
                (ReplicaMethod::Basebackup, Some(from)) => {
                    self.basebackup(from).await.map(|()| "basebackup".to_owned())
                }
                (ReplicaMethod::Basebackup, None) => continue,
                // Shielded: a cancelled clone (a forced reinitialize, a shutdown) must not leave the operator's
                // restore writing into a data directory that is being wiped or cloned again.
                (ReplicaMethod::Command(custom), _) => {
                    let (custom, from) = (custom.clone(), from.cloned());
                    self.shielded("replica method", move |this| async move {
                        this.run_replica_method(&custom, from.as_ref()).await
                    })
                    .await
                }
            };
            match res {
                Ok(name) => {
                    tracing::info!(method = name, "replica has been created using {name}");
                    return Ok(name);
                }
                Err(e) if source_changed_role(&e) => {
                    tracing::warn!(
                        method = method.name(),
                        "the source was promoted during the base backup; the clone is retried: {e:#}"
                    );
                    failures.push(format!("{}: {e}", method.name()));
                }
                Err(e) => {
                    tracing::error!(method = method.name(), "error creating the replica with {}: {e:#}", method.name());
                    failures.push(format!("{}: {e}", method.name()));
                }
            }
        }
        Err(PgError::Config(format!("every replica creation method failed ({})", failures.join("; "))))
    }

    async fn run_replica_method(
        &self,
        method: &CustomReplicaMethod,
        from: Option<&ConnTarget>,
    ) -> Result<String, PgError> {
        if let Some(id) = self.ensure_tracked().await? {
            return Err(PgError::AlreadyRunning { pid: id.pid });
        }
        let cfg = &self.inner.cfg;
        let data_dir = cfg.data_dir.clone();
        let owner = self.inner.owner.clone();
        let keep = method.keep_data;
        files::blocking("prepare the data directory", move || {
            if !keep && !files::is_missing_or_empty(&data_dir)? {
                files::clear_dir(&data_dir)?;
            }
            files::ensure_private_dir(&data_dir, owner.as_ref())
        })
        .await?;
        let this = self.clone();
        files::blocking("write pgpass", move || this.write_pgpass()).await?;
        let connstring = match from {
            Some(from) => files::replica_conninfo(cfg, &from.host, from.port)?,
            None => String::new(),
        };
        let argv = method.argv(&cfg.scope, &cfg.data_dir, &connstring)?;
        let env = [("PGPASSFILE", cfg.pgpass.clone().into_os_string())];
        tracing::info!(method = method.name, ?argv, "creating the replica with a custom method");
        let run = process::run_script(&argv, &env, self.inner.owner.as_ref(), REPLICA_METHOD_TIMEOUT).await?;
        if run.code != Some(0) {
            let e = PgError::CommandFailed {
                program: method.name.clone(),
                status: run.status,
                stderr_tail: run.output_tail,
            };
            self.empty_data_dir().await?;
            return Err(e);
        }
        if !matches!(self.data_dir_state().await, DataDirState::Initialized { .. }) {
            self.empty_data_dir().await?;
            return Err(PgError::Config(format!("{} exited 0 but left no PostgreSQL data directory", method.name)));
        }
        self.forget_conf();
        let marker = self.rewind_marker();
        files::blocking("remove the rewind marker", move || files::remove_durable(&marker)).await?;
        Ok(method.name.clone())
    }

    /// Whether the PostgreSQL server at `from` accepts connections, asked with `pg_isready` (no credentials, no
    /// connection slot held): `Err` with pg_isready's own words when it rejects them (starting up, shutting down)
    /// or does not answer. A pg_isready that cannot run at all does not hold a clone back: the clone itself then
    /// says what is wrong.
    pub async fn source_answers(&self, from: &ConnTarget) -> Result<(), String> {
        let cfg = &self.inner.cfg;
        let port = from.port.to_string();
        let args: Vec<OsString> =
            ["-h", from.host.as_str(), "-p", port.as_str(), "-t", "3"].into_iter().map(OsString::from).collect();
        match process::run_program(&cfg.bin_dir, "pg_isready", &args, &[], self.inner.owner.as_ref()).await {
            Ok(_) => Ok(()),
            Err(PgError::CommandFailed { stderr_tail, .. }) => Err(stderr_tail.trim().to_owned()),
            Err(e) => {
                tracing::debug!(error = %e, "pg_isready did not run; cloning without asking first");
                Ok(())
            }
        }
    }

    /// Whether a clone failed only because its source changed role while pg_basebackup ran ("the standby was
    /// promoted during online backup": a leader still finishing its promotion, a member restarting as the primary).
    /// A race the next attempt no longer meets, not a fault of the setup.
    pub fn clone_raced_a_promotion(e: &PgError) -> bool {
        source_changed_role(e)
    }

    pub async fn basebackup(&self, from: &ConnTarget) -> Result<(), PgError> {
        let from = from.clone();
        self.shielded("basebackup", move |this| async move { this.basebackup_locked(&from).await }).await
    }

    async fn basebackup_locked(&self, from: &ConnTarget) -> Result<(), PgError> {
        self.prepare_empty_data_dir("pg_basebackup").await?;
        let this = self.clone();
        files::blocking("write pgpass", move || this.write_pgpass()).await?;
        let cfg = &self.inner.cfg;
        let mut args: Vec<OsString> = vec!["-D".into(), cfg.data_dir.clone().into_os_string()];
        for arg in ["-h", &from.host, "-p", &from.port.to_string(), "-U", &cfg.replication.username] {
            args.push(arg.into());
        }
        args.extend(["-X", "stream", "-c", "fast", "--no-password"].map(OsString::from));
        args.extend(cfg.basebackup_options.iter().map(OsString::from));
        let env = [
            ("PGPASSFILE", cfg.pgpass.clone().into_os_string()),
            ("PGAPPNAME", OsString::from(&cfg.name)),
            ("PGCONNECT_TIMEOUT", OsString::from("10")),
        ];
        tracing::info!(host = %from.host, port = from.port, "cloning the data directory with pg_basebackup");
        let res = process::run_program(&cfg.bin_dir, "pg_basebackup", &args, &env, self.inner.owner.as_ref()).await;
        if let Err(e) = res {
            self.empty_data_dir().await?;
            return Err(e);
        }
        self.forget_conf();
        // A fresh copy: whatever an interrupted pg_rewind left behind is gone.
        let marker = self.rewind_marker();
        files::blocking("remove the rewind marker", move || files::remove_durable(&marker)).await?;
        tracing::info!(host = %from.host, port = from.port, "cloned the data directory");
        Ok(())
    }

    /// Rewinds the stopped data directory to the history of `from` with pg_rewind, connecting as the rewind user
    /// (or the superuser) with the password from the pgpass file. `from` must have checkpointed since its
    /// promotion (see [`Supervisor::checkpoint`]), or pg_rewind sees the old timeline and rewinds nothing.
    /// Start PostgreSQL as a replica of `from` afterwards: pg_rewind copied `from`'s configuration files.
    pub async fn rewind(&self, from: &ConnTarget) -> Result<RewindOutcome, PgError> {
        let from = from.clone();
        self.shielded("rewind", move |this| async move { this.rewind_locked(&from).await }).await
    }

    async fn rewind_locked(&self, from: &ConnTarget) -> Result<RewindOutcome, PgError> {
        if let Some(id) = self.ensure_tracked().await? {
            return Err(PgError::AlreadyRunning { pid: id.pid });
        }
        let cfg = &self.inner.cfg;
        let bad_data_dir = |detail: String| PgError::BadDataDir { path: cfg.data_dir.clone(), detail };
        match self.data_dir_state().await {
            DataDirState::Initialized { controldata, .. } if controldata.rewind_possible() => {}
            DataDirState::Initialized { .. } => {
                return Err(bad_data_dir("pg_rewind needs wal_log_hints = on or data checksums".into()))
            }
            DataDirState::Missing => return Err(bad_data_dir("is empty: nothing to rewind".into())),
            DataDirState::Invalid(reason) => return Err(bad_data_dir(reason)),
        }
        let this = self.clone();
        files::blocking("write pgpass", move || this.write_pgpass()).await?;
        // pg_rewind first brings an unclean target to a clean shutdown in single-user mode, which refuses
        // to run with `standby.signal` ("standby mode is not supported by single-user servers"): an old
        // primary killed right after raftgres wrote its replica configuration would never rewind. The next
        // start writes the signal file again for the role it starts in (Patroni removes it too).
        let signals = [cfg.data_dir.join("standby.signal"), cfg.data_dir.join("recovery.signal")];
        files::blocking("remove the recovery signal files before pg_rewind", move || {
            signals.iter().try_for_each(|signal| files::remove_durable(signal))
        })
        .await?;
        let creds = cfg.rewind.as_ref().unwrap_or(&cfg.superuser);
        let source = ConnInfo {
            host: from.host.clone(),
            port: from.port,
            user: creds.username.clone(),
            password: None,
            passfile: Some(cfg.pgpass.to_string_lossy().into_owned()),
            application_name: cfg.name.clone(),
            sslmode: None,
            options: BTreeMap::from([
                ("connect_timeout".to_owned(), "10".to_owned()),
                ("dbname".to_owned(), "postgres".to_owned()),
            ]),
        };
        let source = conf::render_conninfo(&source).map_err(|e| PgError::Config(format!("render source: {e}")))?;
        let args: Vec<OsString> =
            vec!["-D".into(), cfg.data_dir.clone().into_os_string(), format!("--source-server={source}").into()];
        tracing::info!(host = %from.host, port = from.port, "running pg_rewind");
        // Present from now until pg_rewind succeeds or fails before touching a file: a run that dies half-way
        // (source gone, raftgres killed) leaves a data directory no start and no second pg_rewind can trust.
        let marker = self.rewind_marker();
        let started = format!("started {}\n", chrono::Utc::now().to_rfc3339());
        let written = marker.clone();
        files::blocking("write the rewind marker", move || {
            files::write_durable(&written, started.as_bytes(), 0o600, None)
        })
        .await?;
        let result = process::run_program(&cfg.bin_dir, "pg_rewind", &args, &[], self.inner.owner.as_ref()).await;
        // pg_rewind copied the source's postgresql.conf and pg_hba.conf: the next start writes ours again.
        self.forget_conf();
        let untouched = match &result {
            Ok(_) => true,
            Err(PgError::CommandFailed { stderr_tail, .. }) => !rewind_began(stderr_tail),
            Err(_) => false,
        };
        if untouched {
            files::blocking("remove the rewind marker", move || files::remove_durable(&marker)).await?;
        } else {
            tracing::warn!(marker = %marker.display(), "pg_rewind stopped after it began changing the data directory");
        }
        let output = result?;
        let outcome = rewind_outcome(&format!("{}{}", output.stdout, output.stderr));
        tracing::info!(?outcome, host = %from.host, port = from.port, "pg_rewind finished");
        Ok(outcome)
    }

    /// The file that says a pg_rewind of this data directory began and did not finish: `<data_dir>.rewind-incomplete`,
    /// beside the data directory (pg_rewind removes unknown files inside it).
    pub fn rewind_marker(&self) -> std::path::PathBuf {
        let data_dir = &self.inner.cfg.data_dir;
        let name = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
        data_dir.with_file_name(format!("{name}.rewind-incomplete"))
    }

    /// Whether an earlier pg_rewind began changing the data directory and did not finish: starting it, or
    /// rewinding it again (its own WAL past the fork may already be replaced by the source's), is unsafe; it
    /// must be cloned again ([`Supervisor::wipe_data_dir`] clears the marker).
    pub fn rewind_incomplete(&self) -> bool {
        self.rewind_marker().exists()
    }

    /// After a promotion: the timeline the server left and the LSN where it switched, from the last line of its
    /// new timeline's history file (Patroni reads the same file to write `history`). `None` when there is none.
    pub async fn last_timeline_switch(&self) -> Result<Option<(u32, u64)>, PgError> {
        let session = self.session().await?;
        let res = async {
            let row = session
                .client
                .query_one(
                    // The (path, offset, length, missing_ok) form: PostgreSQL before 16 has no (path, missing_ok).
                    "SELECT pg_catalog.pg_read_file('pg_wal/' || pg_catalog.substr(pg_catalog.pg_walfile_name(\
                     pg_catalog.pg_current_wal_lsn()), 1, 8) || '.history', 0, 1048576, true)",
                    &[],
                )
                .await
                .map_err(sql("read the timeline history file"))?;
            let text: Option<String> = row.try_get(0).map_err(sql("read the timeline history file"))?;
            Ok(text.as_deref().and_then(last_switch))
        }
        .await;
        session.done(res)
    }

    /// Runs `CHECKPOINT`. After a promotion, pg_rewind on the old primary reads the new timeline from the new
    /// primary's pg_control, which changes only at its first checkpoint: run this on the new primary first.
    pub async fn checkpoint(&self) -> Result<(), PgError> {
        let session = self.session().await?;
        let res = session.client.batch_execute("CHECKPOINT").await.map_err(sql("run CHECKPOINT"));
        session.done(res)
    }

    /// Whether the running server is a replica streaming settings-wise from `primary` through `slot`: its
    /// `primary_conninfo` is the one a start as that leader's replica writes. Lets a restarted raftgres keep an
    /// adopted replica running instead of restarting it to follow the leader it already follows.
    pub async fn follows(&self, primary: &ConnTarget, slot: &str) -> Result<bool, PgError> {
        let expected = files::replica_conninfo(&self.inner.cfg, &primary.host, primary.port)?;
        Ok(match self.recovery_conf_from_server().await? {
            files::RecoveryConf::Replica { primary_conninfo, slot: None } if self.inner.cfg.nostream => {
                primary_conninfo.is_empty()
            }
            files::RecoveryConf::Replica { primary_conninfo, slot: Some(current) } => {
                primary_conninfo == expected && current == slot
            }
            _ => false,
        })
    }

    /// Sets `synchronous_standby_names` (`None` resets it) with `ALTER SYSTEM` and reloads; the
    /// HA loop's synchronous replication manager calls it in Patroni's order relative to `/sync`.
    pub async fn set_synchronous_standby_names(&self, value: Option<&str>) -> Result<(), PgError> {
        let session = self.session().await?;
        let statement = match value {
            Some(value) => format!("ALTER SYSTEM SET synchronous_standby_names = '{}'", value.replace('\'', "''")),
            None => "ALTER SYSTEM RESET synchronous_standby_names".to_string(),
        };
        let res = async {
            session.client.batch_execute(&statement).await.map_err(sql("set synchronous_standby_names"))?;
            session
                .client
                .batch_execute("SELECT pg_catalog.pg_reload_conf()")
                .await
                .map_err(sql("reload the configuration"))
        }
        .await;
        session.done(res)
    }

    /// The current `synchronous_standby_names`.
    pub async fn synchronous_standby_names(&self) -> Result<String, PgError> {
        let session = self.session().await?;
        let res = async {
            let row = session
                .client
                .query_one("SELECT pg_catalog.current_setting('synchronous_standby_names')", &[])
                .await
                .map_err(sql("read synchronous_standby_names"))?;
            Ok(row.get::<_, String>(0))
        }
        .await;
        session.done(res)
    }
}

/// How long a custom replica creation method may run (a restore from a backup of a large cluster takes hours).
const REPLICA_METHOD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A way to create a replica (`postgresql.create_replica_methods`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaMethod {
    /// pg_basebackup from the clone member.
    Basebackup,
    /// The operator's command (pgBackRest, WAL-G, Barman …).
    Command(CustomReplicaMethod),
}

impl ReplicaMethod {
    /// Its name in `create_replica_methods`.
    pub fn name(&self) -> &str {
        match self {
            ReplicaMethod::Basebackup => "basebackup",
            ReplicaMethod::Command(custom) => &custom.name,
        }
    }
}

/// A custom replica creation method: the `postgresql.<name>` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomReplicaMethod {
    /// The method's name.
    pub name: String,
    /// `command`, split with shell rules.
    pub command: String,
    /// `keep_data`: the data directory is not emptied first (a `--delta` restore).
    pub keep_data: bool,
    /// `no_params`: Patroni's four parameters are not passed.
    pub no_params: bool,
    /// `no_leader` (or the older `no_master`): the method needs no running member to copy from (a restore from a
    /// backup repository), so a node may use it while the cluster has no leader.
    pub no_leader: bool,
    /// The section's other keys, passed as `--key=value` (Patroni passes them all, the flags included unless
    /// `no_params`), in name order.
    pub options: Vec<(String, String)>,
}

impl CustomReplicaMethod {
    /// PURE: the command line Patroni builds: the command, then `--key=value` for the options and, unless
    /// `no_params`, `--scope`, `--role=replica`, `--datadir` and `--connstring`.
    pub fn argv(&self, scope: &str, data_dir: &std::path::Path, connstring: &str) -> Result<Vec<String>, PgError> {
        let mut argv = shlex::split(&self.command)
            .ok_or_else(|| PgError::Config(format!("{}.command does not split into words (quotes?)", self.name)))?;
        let flags = ["no_params", "no_master", "no_leader", "keep_data"];
        let options = self.options.iter().filter(|(key, _)| !self.no_params || !flags.contains(&key.as_str()));
        argv.extend(options.map(|(key, value)| format!("--{key}={value}")));
        if !self.no_params {
            argv.push(format!("--scope={scope}"));
            argv.push("--role=replica".to_owned());
            argv.push(format!("--datadir={}", data_dir.display()));
            argv.push(format!("--connstring={connstring}"));
        }
        Ok(argv)
    }
}

fn works_without_leader(method: &ReplicaMethod) -> bool {
    matches!(method, ReplicaMethod::Command(custom) if custom.no_leader)
}

/// PURE: the timeline and switch LSN of the last line of a timeline history file (`<tli>\t<X/Y>\t<reason>`).
pub fn last_switch(history: &str) -> Option<(u32, u64)> {
    let line = history.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with('#'))?;
    let mut fields = line.split_whitespace();
    let timeline = fields.next()?.parse().ok()?;
    let lsn: crate::postgres::types::Lsn = fields.next()?.parse().ok()?;
    Some((timeline, lsn.as_u64()))
}

/// PURE: whether pg_rewind's output shows it got past its read-only checks (it prints the last common checkpoint
/// just before it reads the target's WAL and starts copying files).
fn rewind_began(output: &str) -> bool {
    output.contains("rewinding from last common checkpoint")
}

/// What a successful pg_rewind did, from its output ("no rewind required" when the histories had not diverged).
fn rewind_outcome(output: &str) -> RewindOutcome {
    if output.contains("no rewind required") {
        RewindOutcome::NotNeeded
    } else {
        RewindOutcome::Rewound
    }
}

/// See [`Supervisor::clone_raced_a_promotion`]; the text is PostgreSQL's own, which pg_basebackup passes on.
fn source_changed_role(e: &PgError) -> bool {
    super::error_chain(e).contains("promoted during online backup")
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_clone_that_raced_a_promotion_is_told_apart() {
        let failed = |tail: &str| PgError::CommandFailed {
            program: "pg_basebackup".into(),
            status: "exit code 1".into(),
            stderr_tail: tail.into(),
        };
        let raced =
            failed("pg_basebackup: error: backup failed: ERROR:  the standby was promoted during online backup");
        assert!(Supervisor::clone_raced_a_promotion(&raced));
        // As `run_replica_methods` reports it after every method failed.
        let wrapped = PgError::Config(format!("every replica creation method failed (basebackup: {raced})"));
        assert!(Supervisor::clone_raced_a_promotion(&wrapped));
        let refused = failed("pg_basebackup: error: connection to server failed: Connection refused");
        assert!(!Supervisor::clone_raced_a_promotion(&refused));
    }

    use super::*;

    #[test]
    fn custom_replica_methods_get_patronis_arguments() {
        let method = |no_params: bool| CustomReplicaMethod {
            name: "pgbackrest".into(),
            command: "/usr/bin/pgbackrest --stanza='my stanza' --delta restore".into(),
            keep_data: true,
            no_params,
            no_leader: false,
            options: vec![("keep_data".into(), "True".into()), ("type".into(), "standby".into())],
        };
        let data_dir = std::path::Path::new("/var/lib/pg/data");
        let argv = method(false).argv("batman", data_dir, "host=10.0.0.1 port=5432").map_err(|e| e.to_string());
        let expected = [
            "/usr/bin/pgbackrest",
            "--stanza=my stanza",
            "--delta",
            "restore",
            "--keep_data=True",
            "--type=standby",
            "--scope=batman",
            "--role=replica",
            "--datadir=/var/lib/pg/data",
            "--connstring=host=10.0.0.1 port=5432",
        ];
        assert_eq!(argv, Ok(expected.map(str::to_owned).to_vec()));
        let argv = method(true).argv("batman", data_dir, "host=10.0.0.1").map_err(|e| e.to_string());
        let expected = ["/usr/bin/pgbackrest", "--stanza=my stanza", "--delta", "restore", "--type=standby"];
        assert_eq!(argv, Ok(expected.map(str::to_owned).to_vec()), "no_params drops the flags and the four parameters");
    }

    #[test]
    fn the_last_switch_of_a_history_file() {
        let file = "1\t0/3000060\tno recovery target specified\n\n18\t0/4D62148\tno recovery target specified\n";
        assert_eq!(last_switch(file), Some((18, 0x4D6_2148)));
        assert_eq!(last_switch(""), None);
        assert_eq!(last_switch("garbage"), None);
    }

    #[test]
    fn outcome_from_pg_rewind_output() {
        let same = "pg_rewind: source and target cluster are on the same timeline\npg_rewind: no rewind required\n";
        assert_eq!(rewind_outcome(same), RewindOutcome::NotNeeded);
        let rewound = "pg_rewind: servers diverged at WAL location 0/3000148 on timeline 1\n\
                       pg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\npg_rewind: Done!\n";
        assert_eq!(rewind_outcome(rewound), RewindOutcome::Rewound);
    }

    #[test]
    fn a_failure_after_the_common_checkpoint_line_may_have_changed_files() {
        let refused = "pg_rewind: error: connection to server at \"127.0.0.1\", port 5432 failed: Connection refused";
        assert!(!rewind_began(refused));
        let midway = "pg_rewind: servers diverged at WAL location 0/45D91A8 on timeline 10\n\
                      pg_rewind: rewinding from last common checkpoint at 0/45AA3F0 on timeline 10\n\
                      pg_rewind: error: unexpected result while fetching remote files: FATAL:  terminating connection";
        assert!(rewind_began(midway));
    }
}
