//! The `Supervisor`: a cheap, cloneable handle on the local PostgreSQL, the imperative shell around it.
//!
//! This folder owns the state of the one postmaster this node supervises and every operation on it.
//! This file is its table of contents: the `Supervisor` handle, its shared state (`Inner`, `State`),
//! construction (`new`, `config`, `run_as`) and the operations lock (`shielded`).
//! The methods live by concern in the submodules:
//!
//! - `lifecycle`: the postmaster process: `adopt`, `start`, `stop`, `restart`, `promote`, `detach`, `is_running`,
//!   `postmaster_pid`, `postmaster_id`, `exit_watch`; tracking the postmaster and publishing its exit
//!   (`ensure_tracked`, `track`, `forget`), waiting until it is ready or gone (`wait_ready`, `signal_and_wait`).
//!   Types `StartRole`, `StopMode`, `PostmasterExit`.
//! - `config`: what PostgreSQL runs with: the user GUCs (`parameters`, `set_parameters`,
//!   `apply_dynamic_parameters`, `effective_config`), the managed files (`write_conf`, `forget_conf`, `socket_dir`,
//!   `write_pgpass`), `reload`, and the recovery settings of a running server (`recovery_conf_from_server`).
//!   Types `PgConfig`, `Credentials`, `DEFAULT_RUN_AS`.
//! - `datadir`: the data directory: `data_dir_state`, `initdb`, `create_users` (the roles of a new cluster),
//!   `wipe_data_dir`, and emptying it again (`prepare_empty_data_dir`, `empty_data_dir`). Type `DataDirState`.
//! - `replication`: this server and its upstream: `basebackup` (clone), `rewind`, `rewind_marker`,
//!   `rewind_incomplete`, `follows`, `checkpoint`, `synchronous_standby_names`,
//!   `set_synchronous_standby_names`. Types `ConnTarget`, `RewindOutcome`.
//! - `slots`: the replication slots on this server: `maintain_slots` (create, drop, advance, report positions)
//!   and `copy_logical_slots` (a permanent logical slot copied from the leader). Types `SlotWork`, `SlotReport`.
//! - `probe`: the SQL status probe (`probe`, type `Probe`), the one cached SQL connection (`session`) and the
//!   statement helpers the other submodules share.
//! - `hooks`: the operator's scripts: the callbacks (`fire`, and the supervisor's own `started`, `promoted`),
//!   `run_pre_promote`, `run_before_stop`, `run_post_bootstrap`; `set_bootstrapping`, `mark_demoted`. Types
//!   `Hooks`, `Callback`, `CallbackRole`.
//! - `restore`: a new cluster made by `bootstrap.method`'s command (`bootstrap_with`, `finish_restore`); type
//!   `CustomBootstrap`.
//! - `error`: `PgError` and `error_chain`.
//!
//! Invariants: PostgreSQL outlives raftgres (it runs in its own process group and is adopted after a raftgres
//! restart, never started twice); state-changing operations run one at a time in spawned tasks, so a dropped
//! caller cannot leave them half done (STYLE rule 14). It must not decide roles: the HA loop calls it.
//! Processes are spawned and signalled only through `postgres::process`, files are written through
//! `postgres::files`, and the pure parsers and renderers it uses (`pidfile`, `controldata`, `conf`, `params`,
//! `slots`) stay `postgres::` modules beside this folder.

mod config;
mod datadir;
mod error;
mod hooks;
mod lifecycle;
mod probe;
mod replication;
mod restore;
mod slots;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::postgres::files::{self, Owner, RecoveryConf};
use crate::postgres::process::{LogTail, PostmasterId};

pub use config::{Credentials, LocalSettings, PgConfig, DEFAULT_RUN_AS};
pub use datadir::DataDirState;
pub use error::{error_chain, PgError};
pub use hooks::{Callback, CallbackRole, Hooks};
pub use lifecycle::{PostmasterExit, StartRole, StopMode};
pub use probe::Probe;
pub use replication::{ConnTarget, CustomReplicaMethod, ReplicaMethod, RewindOutcome};
pub use restore::CustomBootstrap;
pub use slots::{SlotReport, SlotWork};

/// The programs raftgres runs from `bin_dir`, checked by [`Supervisor::new`].
const REQUIRED_PROGRAMS: [&str; 5] = ["postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_controldata"];

/// A cheap, cloneable handle on the local PostgreSQL.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

/// Shared state behind [`Supervisor`].
struct Inner {
    cfg: PgConfig,
    /// The user PostgreSQL programs run as; `None` = ourselves.
    owner: Option<Owner>,
    /// The uid PostgreSQL runs with.
    run_uid: u32,
    state: Mutex<State>,
    /// Serializes state-changing operations (start, stop, promote, initdb, ...).
    ops: tokio::sync::Mutex<()>,
    exit_tx: watch::Sender<Option<PostmasterExit>>,
    /// The cached SQL connection (see `probe`).
    sql: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// The running replica's postmaster start time and the highest timeline its WAL receiver streamed (`probe`).
    streamed_timeline: Mutex<Option<(String, crate::postgres::types::TimelineId)>>,
    log_tail: Arc<LogTail>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// User GUCs replacing `cfg.parameters` once the dynamic configuration changed them (see `config`).
    parameters: Mutex<Option<BTreeMap<String, String>>>,
    /// The callbacks' role and running scripts (see `hooks`).
    hooks: Mutex<hooks::HookState>,
    /// Set between a custom bootstrap and the end of its recovery (see `restore`).
    restore: Mutex<Option<restore::RestoreOverlay>>,
    /// Logical slot advances and copies in progress (see `slots`).
    slot_sync: slots::SlotSync,
    /// `hot_standby_feedback = on` is enforced: permanent logical slots are kept on this replica (see `config`).
    hot_standby_feedback: std::sync::atomic::AtomicBool,
    /// The remote primary of a standby cluster and the recovery settings while following it (see `config`).
    standby_recovery: Mutex<Option<StandbyRecovery>>,
    /// The dynamic `postgresql.recovery_conf`, used when the local configuration has none (see `config`).
    dynamic_recovery: Mutex<BTreeMap<String, String>>,
    /// The reloadable part of the local configuration after a reload replaced it (see `config`).
    local: Mutex<Option<config::LocalSettings>>,
    /// The last dynamic configuration's parameters and the bootstrap document, to recompute the parameters in
    /// force when a reload changes the local ones (see `config`).
    last_dynamic: Mutex<Option<(serde_json::Value, BTreeMap<String, serde_json::Value>)>>,
}

/// A standby cluster's remote primary (`None`: archive-only) and its recovery settings for the standby leader.
pub type StandbyRecovery = (Option<ConnTarget>, BTreeMap<String, String>);

/// What the supervisor knows about the postmaster and the configuration it last wrote.
#[derive(Default)]
struct State {
    postmaster: Option<Tracked>,
    /// The recovery settings last written to postgresql.conf, `None` until known (e.g. after adoption).
    recovery: Option<RecoveryConf>,
    /// The unix socket directory last written to postgresql.conf.
    socket_dir: Option<PathBuf>,
    /// This supervisor started the running postmaster as a primary, or began promoting it: it may accept writes
    /// even before the HA loop's next observation says so (`Supervisor::may_accept_writes`, read by the fence).
    may_write: bool,
}

/// The supervised postmaster; `stopping` once raftgres asked it to stop, so that its exit is expected.
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
                streamed_timeline: Mutex::new(None),
                log_tail: Arc::new(LogTail::default()),
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
                parameters: Mutex::new(None),
                hooks: Mutex::new(hooks::HookState::default()),
                restore: Mutex::new(None),
                slot_sync: slots::SlotSync::default(),
                hot_standby_feedback: std::sync::atomic::AtomicBool::new(false),
                standby_recovery: Mutex::new(None),
                dynamic_recovery: Mutex::new(BTreeMap::new()),
                local: Mutex::new(None),
                last_dynamic: Mutex::new(None),
            }),
        })
    }

    fn slot_sync(&self) -> &slots::SlotSync {
        &self.inner.slot_sync
    }

    /// The configuration, with absolute paths.
    pub fn config(&self) -> &PgConfig {
        &self.inner.cfg
    }

    /// The user PostgreSQL programs run as, when it is not ourselves.
    pub fn run_as(&self) -> Option<&Owner> {
        self.inner.owner.as_ref()
    }

    /// Runs `op` in a spawned task holding the operations lock, so operations never interleave and a dropped
    /// caller cannot cancel one halfway (STYLE rule 14).
    async fn shielded<T, F, Fut>(&self, name: &'static str, op: F) -> Result<T, PgError>
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
                Err(PgError::Io { context: format!("run {name}"), cause: std::io::Error::other(join_error) })
            }
        }
    }

    /// Locks the state, also after a panic elsewhere poisoned the lock.
    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
