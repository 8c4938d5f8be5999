//! The `Supervisor` handle: start, stop, restart, reload, promote and adopt the local PostgreSQL.
//!
//! This module owns the public types of the imperative shell around PostgreSQL (`PgConfig`, `StartRole`,
//! `StopMode`, `PgError`, ...) and the state of the one postmaster this node supervises. Invariants:
//! PostgreSQL outlives raftgres (it runs in its own process group and is adopted after a raftgres restart,
//! never started twice); state-changing operations run one at a time in spawned tasks, so a dropped caller
//! cannot leave them half done (STYLE rule 14). It must not decide roles: the HA loop calls it.
//! Processes are spawned and signalled only through `process`; SQL lives in `probe`; initdb and
//! pg_basebackup in `bootstrap`; pg_rewind in `rewind`; file writes in `files`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::postgres::controldata::ControlData;
use crate::postgres::files::{self, Owner, RecoveryConf};
use crate::postgres::pidfile::{self, Adopt, PmStatus};
use crate::postgres::process::{self, LogTail, PostmasterId};

/// The user PostgreSQL programs run as when raftgres runs as root and `run_as` is not set.
pub const DEFAULT_RUN_AS: &str = "postgres";

/// The programs raftgres runs from `bin_dir`, checked by [`Supervisor::new`].
const REQUIRED_PROGRAMS: [&str; 5] = ["postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_controldata"];

/// How often start-up and shutdown are checked.
/// How often, and how far apart, a start refused by a just-killed postmaster's socket lock file is tried again.
const LOCK_FILE_RETRIES: u32 = 20;
const LOCK_FILE_RETRY_STEP: Duration = Duration::from_millis(250);

/// How long a start as a standby without a primary waits for PostgreSQL to accept connections.
const STANDBY_READY_WAIT: Duration = Duration::from_secs(5);
const WAIT_STEP: Duration = Duration::from_millis(100);

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
    /// The `.pgpass` file raftgres writes and every PostgreSQL client program reads (`PGPASSFILE`).
    pub pgpass: PathBuf,
    /// Cluster name (`cluster_name`).
    pub scope: String,
    /// How long `start` waits for PostgreSQL to accept connections.
    pub start_timeout: Duration,
    /// How long `stop` waits per signal.
    pub stop_timeout: Duration,
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

/// The PostgreSQL server to clone from, follow or rewind from (normally the leader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// How PostgreSQL is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartRole {
    /// Writable primary: no `standby.signal`, no `primary_conninfo`.
    Primary,
    /// Standby streaming from `primary`, through `slot` when set.
    Replica {
        /// The upstream server.
        primary: ConnTarget,
        /// `primary_slot_name`.
        slot: Option<String>,
    },
    /// Standby with no upstream yet (`standby.signal`, empty `primary_conninfo`): replays its
    /// own WAL and stays read-only, so it can report its position before a leader exists.
    Standby,
}

/// PostgreSQL's shutdown modes; the signal for each is chosen in exactly one `match` in `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGTERM: wait for clients to disconnect.
    Smart,
    /// SIGINT: disconnect clients, write a shutdown checkpoint.
    Fast,
    /// SIGQUIT: stop at once; crash recovery on the next start.
    Immediate,
}

/// What the data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirState {
    /// Absent or empty: initdb or pg_basebackup may fill it.
    Missing,
    /// A cluster, with its pg_control.
    Initialized {
        /// `pg_controldata` output.
        controldata: ControlData,
    },
    /// Something else: unreadable, wrong owner, not a cluster. The text says what and what to do.
    Invalid(String),
}

/// What pg_rewind did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindOutcome {
    /// The data directory was rewound to the source's history.
    Rewound,
    /// The data directory had not diverged from the source.
    NotNeeded,
}

/// How the supervised postmaster ended, published through [`Supervisor::exit_watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostmasterExit {
    /// Its pid.
    pub pid: u32,
    /// Exit code, when it was our child and exited normally.
    pub code: Option<i32>,
    /// Terminating signal, when it was our child and was killed.
    pub signal: Option<i32>,
    /// raftgres had asked it to stop.
    pub expected: bool,
}

/// Errors of the PostgreSQL supervisor; callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The operation needs a running PostgreSQL.
    #[error("PostgreSQL is not running")]
    NotRunning,
    /// The operation needs PostgreSQL stopped, or would start a second postmaster.
    #[error("PostgreSQL is already running (pid {pid})")]
    AlreadyRunning {
        /// The running postmaster.
        pid: u32,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {what}{}", log_suffix(log_tail))]
    Timeout {
        /// What was awaited.
        what: String,
        /// The last PostgreSQL log lines, if relevant.
        log_tail: String,
    },
    /// The postmaster runs but did not accept connections within the start timeout (a replica
    /// still replaying WAL towards a consistent state, a primary in long crash recovery). It is
    /// left running, configured for the role it was started in.
    #[error(
        "PostgreSQL is running but did not accept connections within {seconds}s (still recovering?){}",
        log_suffix(log_tail)
    )]
    NotReady {
        /// The start timeout.
        seconds: u64,
        /// The last PostgreSQL log lines.
        log_tail: String,
    },
    /// The postmaster exited while starting.
    #[error("postgres exited during start-up ({status}){}", log_suffix(log_tail))]
    StartFailed {
        /// Exit code or signal.
        status: String,
        /// The last PostgreSQL log lines.
        log_tail: String,
    },
    /// A helper program exited with an error.
    #[error("{program} failed with {status}: {stderr_tail}")]
    CommandFailed {
        /// Program name (`initdb`, `pg_basebackup`, ...).
        program: String,
        /// Exit code or signal.
        status: String,
        /// The last lines of its output.
        stderr_tail: String,
    },
    /// A file or process operation failed; `context` says which, on what.
    #[error("{context}")]
    Io {
        /// Present-tense verb phrase with the path ("write /data/postgresql.conf").
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An SQL statement or connection failed.
    #[error("{context}")]
    Sql {
        /// Present-tense verb phrase ("probe PostgreSQL").
        context: String,
        /// The cause.
        source: tokio_postgres::Error,
    },
    /// PostgreSQL answered something raftgres cannot interpret.
    #[error("unexpected {what}")]
    Unexpected {
        /// What and the value.
        what: String,
    },
    /// The configuration cannot work; the text names the key and what to do.
    #[error("{0}")]
    Config(String),
    /// A path has the wrong owner or permissions; `detail` names the command to run.
    #[error("{}: {detail}", path.display())]
    Ownership {
        /// The offending path.
        path: PathBuf,
        /// Who owns it, who should, and the fix.
        detail: String,
    },
    /// The data directory is not in the state the operation needs.
    #[error("data directory {}: {detail}", path.display())]
    BadDataDir {
        /// The data directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// `postmaster.pid` names a process that may be this data directory's postgres but cannot be confirmed:
    /// raftgres neither adopts it nor starts a second postmaster; a human must look.
    #[error("refusing to adopt or start PostgreSQL: {reason}")]
    AdoptRejected {
        /// Why.
        reason: String,
    },
}

fn log_suffix(log_tail: &str) -> String {
    if log_tail.is_empty() {
        String::new()
    } else {
        format!("; last log lines:\n{log_tail}")
    }
}

/// Renders an error with its chain of causes ("connect to ...: db error: FATAL: ...").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A cheap, cloneable handle on the local PostgreSQL.
#[derive(Clone)]
pub struct Supervisor {
    pub(crate) inner: Arc<Inner>,
}

/// Shared state behind [`Supervisor`].
pub(crate) struct Inner {
    pub(crate) cfg: PgConfig,
    /// The user PostgreSQL programs run as; `None` = ourselves.
    pub(crate) owner: Option<Owner>,
    /// The uid PostgreSQL runs with.
    pub(crate) run_uid: u32,
    state: Mutex<State>,
    /// Serializes state-changing operations (start, stop, promote, initdb, ...).
    pub(crate) ops: tokio::sync::Mutex<()>,
    exit_tx: watch::Sender<Option<PostmasterExit>>,
    /// The cached SQL connection (see `probe`).
    pub(crate) sql: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    pub(crate) log_tail: Arc<LogTail>,
    pub(crate) tasks: TaskTracker,
    cancel: CancellationToken,
    /// User GUCs replacing `cfg.parameters` once the dynamic configuration changed them (see `params`).
    pub(crate) parameters: Mutex<Option<BTreeMap<String, String>>>,
}

#[derive(Default)]
struct State {
    postmaster: Option<Tracked>,
    /// The recovery settings last written to postgresql.conf, `None` until known (e.g. after adoption).
    recovery: Option<RecoveryConf>,
    /// The unix socket directory last written to postgresql.conf.
    socket_dir: Option<PathBuf>,
}

struct Tracked {
    id: PostmasterId,
    stopping: bool,
}

impl Supervisor {
    /// Checks the configuration, resolves the PostgreSQL user (as root: `run_as`, default `postgres`) and
    /// checks that the programs exist. Does not touch the data directory.
    pub fn new(mut cfg: PgConfig) -> Result<Supervisor, PgError> {
        if cfg.name.is_empty() {
            return Err(PgError::Config("name: must not be empty".to_owned()));
        }
        cfg.data_dir = std::path::absolute(&cfg.data_dir).map_err(files::io_context("resolve", &cfg.data_dir))?;
        cfg.pgpass = std::path::absolute(&cfg.pgpass).map_err(files::io_context("resolve", &cfg.pgpass))?;
        let owner = files::resolve_owner(cfg.run_as.as_deref(), DEFAULT_RUN_AS)?;
        for program in REQUIRED_PROGRAMS {
            let path = cfg.bin_dir.join(program);
            if !path.is_file() {
                let dir = cfg.bin_dir.display();
                return Err(PgError::Config(format!(
                    "postgresql.bin_dir: {dir} has no {program}; \
                     install PostgreSQL or point bin_dir at its bin directory"
                )));
            }
        }
        let run_uid = owner.as_ref().map_or_else(|| nix::unistd::geteuid().as_raw(), |owner| owner.uid);
        let (exit_tx, _) = watch::channel(None);
        Ok(Supervisor {
            inner: Arc::new(Inner {
                cfg,
                owner,
                run_uid,
                state: Mutex::new(State::default()),
                ops: tokio::sync::Mutex::new(()),
                exit_tx,
                sql: tokio::sync::Mutex::new(None),
                log_tail: Arc::new(LogTail::default()),
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
                parameters: Mutex::new(None),
            }),
        })
    }

    /// The configuration, with absolute paths.
    pub fn config(&self) -> &PgConfig {
        &self.inner.cfg
    }

    /// The user PostgreSQL programs run as, when it is not ourselves.
    pub fn run_as(&self) -> Option<&Owner> {
        self.inner.owner.as_ref()
    }

    /// Whether the supervised postmaster is alive (false when none is tracked: call [`Supervisor::adopt`]).
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// The pid of the supervised postmaster while it is alive.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let id = self.state().postmaster.as_ref().map(|tracked| tracked.id)?;
        process::is_alive(id).then_some(id.pid)
    }

    /// The supervised postmaster's identity (pid + start time) while it is alive.
    pub fn postmaster_id(&self) -> Option<PostmasterId> {
        let id = self.state().postmaster.as_ref().map(|tracked| tracked.id)?;
        process::is_alive(id).then_some(id)
    }

    /// A channel that changes every time the supervised postmaster exits, expectedly or not.
    pub fn exit_watch(&self) -> watch::Receiver<Option<PostmasterExit>> {
        self.inner.exit_tx.subscribe()
    }

    /// At start-up: adopts the postmaster named in `postmaster.pid` if it is alive and its start time matches,
    /// removes a stale pidfile, and never signals a process. Returns the adopted pid.
    pub async fn adopt(&self) -> Result<Option<u32>, PgError> {
        self.shielded("adopt", move |this| async move { Ok(this.ensure_tracked().await?.map(|id| id.pid)) }).await
    }

    /// Writes the managed configuration for `role`, spawns `postgres -D`, and waits until `postmaster.pid`
    /// says ready (or standby) and an SQL probe succeeds, within `start_timeout`. Fails with
    /// [`PgError::AlreadyRunning`] if a postmaster runs (adopted or not) instead of starting a second one.
    /// On timeout ([`PgError::NotReady`]) PostgreSQL is left running, configured for `role` (it may
    /// still be replaying WAL): stop it to give up. A [`StartRole::Standby`] waits at most 5 s.
    pub async fn start(&self, role: StartRole) -> Result<(), PgError> {
        self.shielded("start", move |this| async move { this.start_locked(role).await }).await
    }

    /// Signals the postmaster and waits for it to exit within `stop_timeout`; a fast shutdown that times out
    /// is escalated to immediate. Does nothing when PostgreSQL is not running.
    pub async fn stop(&self, mode: StopMode) -> Result<(), PgError> {
        self.shielded("stop", move |this| async move { this.stop_locked(mode).await }).await
    }

    /// Fast stop, then start as `role`.
    pub async fn restart(&self, role: StartRole) -> Result<(), PgError> {
        self.shielded("restart", move |this| async move {
            this.stop_locked(StopMode::Fast).await?;
            this.start_locked(role).await
        })
        .await
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
            Ok(())
        })
        .await
    }

    /// Promotes a replica (`pg_promote(true, timeout)`) and rewrites the configuration as a primary's.
    /// A primary is left alone. A promotion that does not finish in time is [`PgError::Timeout`].
    pub async fn promote(&self, timeout: Duration) -> Result<(), PgError> {
        self.shielded("promote", move |this| async move {
            this.ensure_tracked().await?.ok_or(PgError::NotRunning)?;
            if !this.sql_promote(timeout).await? {
                let what = format!("promotion within {}s", timeout.as_secs());
                return Err(PgError::Timeout { what, log_tail: this.inner.log_tail.text() });
            }
            this.write_conf(RecoveryConf::Primary).await?;
            tracing::info!("promoted PostgreSQL to primary");
            Ok(())
        })
        .await
    }

    /// Stops watching the postmaster and waits for the supervisor's tasks, leaving PostgreSQL running
    /// (for raftgres shutdown; a new supervisor adopts it later). PostgreSQL's log output is dropped from then
    /// on. Do not use this handle afterwards.
    pub async fn detach(&self) {
        self.inner.cancel.cancel();
        *self.inner.sql.lock().await = None;
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Runs `op` in a spawned task holding the operations lock, so operations never interleave and a dropped
    /// caller cannot cancel one halfway (STYLE rule 14).
    pub(crate) async fn shielded<T, F, Fut>(&self, name: &'static str, op: F) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: FnOnce(Supervisor) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let this = self.clone();
        let task = async move {
            let _ops = this.inner.ops.lock().await;
            op(this.clone()).await
        };
        let handle = self.inner.tasks.spawn(task.instrument(tracing::info_span!("pg_op", op = name)));
        match handle.await {
            Ok(res) => res,
            Err(join_error) => {
                Err(PgError::Io { context: format!("run {name}"), source: std::io::Error::other(join_error) })
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live postmaster: the tracked one, else one adopted from `postmaster.pid` (a stale pidfile is removed).
    pub(crate) async fn ensure_tracked(&self) -> Result<Option<PostmasterId>, PgError> {
        let tracked = self.state().postmaster.as_ref().map(|tracked| tracked.id);
        if let Some(id) = tracked {
            if process::is_alive(id) {
                return Ok(Some(id));
            }
            self.forget(id, None);
        }
        let pid_path = self.inner.cfg.data_dir.join("postmaster.pid");
        let text = match tokio::fs::read_to_string(&pid_path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(files::io_context("read", &pid_path)(e)),
        };
        let pm = pidfile::parse_pidfile(&text).map_err(|e| PgError::AdoptRejected { reason: e.to_string() })?;
        let data_dir = self.inner.cfg.data_dir.clone();
        let facts = files::blocking("inspect postmaster", move || Ok(process::process_facts(pm.pid, &data_dir)));
        let facts = facts.await?;
        match pidfile::adopt_decision(&pm, &facts) {
            Adopt::Adopt => {
                let start_time = facts.process_start_time_epoch.ok_or_else(|| PgError::AdoptRejected {
                    reason: format!("start time of pid {} is unreadable", pm.pid),
                })?;
                let id = PostmasterId { pid: pm.pid, start_time };
                self.track(id, None);
                tracing::info!(pid = id.pid, "adopted running postmaster");
                Ok(Some(id))
            }
            Adopt::Stale(reason) => {
                tracing::info!(reason = %reason, "removing stale postmaster.pid");
                files::blocking("remove postmaster.pid", move || files::remove_durable(&pid_path)).await?;
                Ok(None)
            }
            Adopt::Reject(reason) => Err(PgError::AdoptRejected { reason }),
        }
    }

    /// Starts watching `id` on a tracked task that records its exit.
    fn track(&self, id: PostmasterId, child: Option<tokio::process::Child>) {
        self.state().postmaster = Some(Tracked { id, stopping: false });
        let this = self.clone();
        let cancel = self.inner.cancel.clone();
        let watcher = async move {
            if let Some(status) = process::wait_for_exit(id, child, cancel).await {
                this.forget(id, status);
            }
        };
        self.inner.tasks.spawn(watcher.instrument(tracing::info_span!(parent: None, "pg", pid = id.pid)));
    }

    /// Records that `id` exited (once, whoever notices first) and publishes it on the exit watch.
    fn forget(&self, id: PostmasterId, status: Option<ExitStatus>) {
        let expected = {
            let mut state = self.state();
            match &state.postmaster {
                Some(tracked) if tracked.id == id => {
                    let expected = tracked.stopping;
                    state.postmaster = None;
                    expected
                }
                _ => return,
            }
        };
        use std::os::unix::process::ExitStatusExt;
        let code = status.and_then(|status| status.code());
        let signal = status.and_then(|status| status.signal());
        if expected {
            tracing::info!(pid = id.pid, ?code, ?signal, "postmaster exited");
        } else {
            tracing::warn!(pid = id.pid, ?code, ?signal, "postmaster exited unexpectedly");
        }
        self.inner.exit_tx.send_replace(Some(PostmasterExit { pid: id.pid, code, signal, expected }));
    }

    async fn start_locked(&self, role: StartRole) -> Result<(), PgError> {
        if let Some(id) = self.ensure_tracked().await? {
            return Err(PgError::AlreadyRunning { pid: id.pid });
        }
        let bad_data_dir = |detail: String| PgError::BadDataDir { path: self.inner.cfg.data_dir.clone(), detail };
        match self.data_dir_state().await {
            DataDirState::Initialized { .. } => {}
            DataDirState::Missing => return Err(bad_data_dir("is empty: run initdb or pg_basebackup first".into())),
            DataDirState::Invalid(reason) => return Err(bad_data_dir(reason)),
        }
        let recovery = match &role {
            StartRole::Primary => RecoveryConf::Primary,
            StartRole::Replica { primary, slot } => {
                let this = self.clone();
                files::blocking("write pgpass", move || this.write_pgpass()).await?;
                let primary_conninfo = files::replica_conninfo(&self.inner.cfg, &primary.host, primary.port)?;
                RecoveryConf::Replica { primary_conninfo, slot: slot.clone() }
            }
            StartRole::Standby => RecoveryConf::Replica { primary_conninfo: String::new(), slot: None },
        };
        self.write_conf(recovery).await?;
        // A standby without a primary can only replay what its pg_wal holds: if its consistent
        // point lies beyond, it waits for WAL forever. Do not hold the HA loop for the whole
        // start timeout then: it restarts the server as a replica once a leader exists.
        let timeout = match role {
            StartRole::Standby => self.inner.cfg.start_timeout.min(STANDBY_READY_WAIT),
            _ => self.inner.cfg.start_timeout,
        };
        let mut lock_retries = 0;
        loop {
            self.inner.log_tail.reset();
            let cfg = &self.inner.cfg;
            let spawned = process::spawn_postmaster(
                &cfg.bin_dir,
                &cfg.data_dir,
                self.inner.owner.as_ref(),
                &self.inner.tasks,
                self.inner.cancel.clone(),
                self.inner.log_tail.clone(),
            )?;
            let id = spawned.id;
            self.track(id, Some(spawned.child));
            match self.wait_ready(id, timeout).await {
                Err(PgError::StartFailed { log_tail, .. })
                    if lock_retries < LOCK_FILE_RETRIES && process::socket_lock_held(&log_tail) =>
                {
                    // A postmaster killed with SIGKILL stays a zombie until its parent reaps it, and PostgreSQL
                    // takes a lock file naming a pid that still exists for a live server. It clears in moments.
                    lock_retries += 1;
                    tracing::info!(
                        attempt = lock_retries,
                        "the killed postmaster's socket lock is still held; starting again shortly"
                    );
                    tokio::time::sleep(LOCK_FILE_RETRY_STEP).await;
                }
                result => {
                    result?;
                    break;
                }
            }
        }
        tracing::info!(role = ?role, "PostgreSQL is ready");
        Ok(())
    }

    /// Writes postgresql.conf, pg_hba.conf and standby.signal durably and remembers the recovery settings.
    pub(crate) async fn write_conf(&self, recovery: RecoveryConf) -> Result<(), PgError> {
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
    pub(crate) fn forget_conf(&self) {
        self.state().recovery = None;
    }

    /// The unix socket directory of the running server, when known.
    pub(crate) fn socket_dir(&self) -> Option<PathBuf> {
        self.state().socket_dir.clone()
    }

    async fn wait_ready(&self, id: PostmasterId, timeout: Duration) -> Result<(), PgError> {
        let deadline = Instant::now() + timeout;
        let pid_path = self.inner.cfg.data_dir.join("postmaster.pid");
        loop {
            if !process::is_alive(id) {
                return Err(self.start_failure(id).await);
            }
            let text = tokio::fs::read_to_string(&pid_path).await.unwrap_or_default();
            let status = pidfile::parse_pidfile(&text).ok().filter(|pm| pm.pid == id.pid).and_then(|pm| pm.status);
            if matches!(status, Some(PmStatus::Ready | PmStatus::Standby)) && self.probe().await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(PgError::NotReady { seconds: timeout.as_secs(), log_tail: self.inner.log_tail.text() });
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
    }

    /// The error for a postmaster that died while starting, once its last log lines and exit status are in
    /// (bounded wait: a surviving backend could keep the stderr pipe open).
    async fn start_failure(&self, id: PostmasterId) -> PgError {
        let mut exit_watch = self.exit_watch();
        let settle = async {
            loop {
                let published = exit_watch.borrow_and_update().as_ref().is_some_and(|exit| exit.pid == id.pid);
                if published && self.inner.log_tail.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), settle).await;
        let exit = self.inner.exit_tx.borrow().clone().filter(|exit| exit.pid == id.pid);
        let status = match exit {
            Some(PostmasterExit { code: Some(code), .. }) => format!("exit code {code}"),
            Some(PostmasterExit { signal: Some(signal), .. }) => format!("signal {signal}"),
            _ => "exited".to_owned(),
        };
        PgError::StartFailed { status, log_tail: self.inner.log_tail.text() }
    }

    async fn stop_locked(&self, mode: StopMode) -> Result<(), PgError> {
        let Some(id) = self.ensure_tracked().await? else { return Ok(()) };
        if let Some(tracked) = self.state().postmaster.as_mut().filter(|tracked| tracked.id == id) {
            tracked.stopping = true;
        }
        *self.inner.sql.lock().await = None;
        tracing::info!(pid = id.pid, ?mode, "stopping PostgreSQL");
        let timeout = self.inner.cfg.stop_timeout;
        if self.signal_and_wait(id, mode, timeout).await? {
            return Ok(());
        }
        match mode {
            StopMode::Fast => {
                tracing::warn!(pid = id.pid, "fast shutdown did not finish in time, escalating to immediate");
                if self.signal_and_wait(id, StopMode::Immediate, timeout).await? {
                    return Ok(());
                }
            }
            StopMode::Smart | StopMode::Immediate => {}
        }
        let what = format!("PostgreSQL to stop ({mode:?}) within {}s", timeout.as_secs());
        Err(PgError::Timeout { what, log_tail: String::new() })
    }

    /// Sends the stop signal and waits up to `timeout`; true once the postmaster is gone.
    async fn signal_and_wait(&self, id: PostmasterId, mode: StopMode, timeout: Duration) -> Result<bool, PgError> {
        match process::signal_stop(id, mode) {
            Ok(()) | Err(PgError::NotRunning) => {}
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + timeout;
        while process::is_alive(id) {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(WAIT_STEP).await;
        }
        // Give the watcher a moment to record the exit status of our own child, then record it ourselves.
        for _ in 0..10 {
            if self.state().postmaster.as_ref().is_none_or(|tracked| tracked.id != id) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.forget(id, None);
        Ok(true)
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

    #[test]
    fn timeout_message_carries_the_log_tail() {
        let e = PgError::Timeout { what: "x".into(), log_tail: String::new() };
        assert_eq!(e.to_string(), "timed out waiting for x");
        let e = PgError::StartFailed { status: "exit code 1".into(), log_tail: "FATAL:  bad".into() };
        assert_eq!(e.to_string(), "postgres exited during start-up (exit code 1); last log lines:\nFATAL:  bad");
    }

    #[test]
    fn error_chain_includes_causes() {
        let e = PgError::Io { context: "write /x".into(), source: std::io::Error::other("disk full") };
        assert_eq!(error_chain(&e), "write /x: disk full");
    }
}
