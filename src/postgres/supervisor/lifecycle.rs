//! The postmaster's lifecycle: adopting, starting, stopping, restarting and promoting the local PostgreSQL,
//! and watching it exit.
//!
//! This module owns the tracked postmaster (its identity and whether raftgres asked it to stop), the exit
//! watch, what "ready" means (the `postmaster.pid` status line reads ready or standby *and* an SQL probe
//! succeeds, STYLE rule 15) and the stop escalation (fast, then immediate).
//! An existing postmaster is adopted only when its pid is alive and its start time matches the pidfile.
//! It must not spawn or signal a process itself: `postgres::process` does, and chooses the signal per `StopMode`.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::probe::{bounded, sql};
use super::{ConnTarget, DataDirState, PgError, Supervisor, Tracked};
use crate::postgres::files::{self, RecoveryConf};
use crate::postgres::pidfile::{self, Adopt, PmStatus};
use crate::postgres::process::{self, PostmasterId};

/// How often, and how far apart, a start refused by a just-killed postmaster's socket lock file is tried again.
const LOCK_FILE_RETRIES: u32 = 20;
const LOCK_FILE_RETRY_STEP: Duration = Duration::from_millis(250);

/// How long a start as a standby without a primary waits for PostgreSQL to accept connections.
const STANDBY_READY_WAIT: Duration = Duration::from_secs(5);
/// How often start-up and shutdown are checked.
const WAIT_STEP: Duration = Duration::from_millis(100);

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

impl Supervisor {
    /// Whether the supervised postmaster is alive (false when none is tracked: call [`Supervisor::adopt`]).
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// The running postmaster was started as a primary or promoted by this supervisor (from the moment it began),
    /// so it may accept writes whatever the HA loop observed last. The fence stops such a server when the lease
    /// runs out even before the loop's next cycle has seen it run as a primary. A server adopted after a restart
    /// of raftgres counts only through the loop's observation.
    pub fn may_accept_writes(&self) -> bool {
        let may_write = self.state().may_write;
        may_write && self.is_running()
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
        self.start_within(role, None).await
    }

    /// [`Supervisor::start`], waiting for readiness at most `within` when that is shorter than `start_timeout`
    /// (what is left of `primary_start_timeout`): a server not ready by then is [`PgError::NotReady`] and left
    /// running, so the HA loop decides again while it recovers.
    pub async fn start_within(&self, role: StartRole, within: Option<Duration>) -> Result<(), PgError> {
        self.shielded("start", move |this| async move {
            this.start_locked(&role, within).await?;
            this.started(&role, false);
            Ok(())
        })
        .await
    }

    /// Whether the supervised postmaster is alive and its `postmaster.pid` says `starting` (crash recovery, or
    /// a start that has not finished): what tells a start in progress from a server that stopped answering.
    pub async fn is_starting(&self) -> bool {
        let Some(pid) = self.postmaster_pid() else { return false };
        let pid_path = self.inner.cfg.data_dir.join("postmaster.pid");
        let text = tokio::fs::read_to_string(&pid_path).await.unwrap_or_default();
        let parsed = pidfile::parse_pidfile(&text).ok().filter(|pm| pm.pid == pid);
        parsed.is_some_and(|pm| pm.status == Some(PmStatus::Starting))
    }

    /// Signals the postmaster and waits for it to exit within `stop_timeout`; a fast shutdown that times out
    /// is escalated to immediate. Does nothing when PostgreSQL is not running.
    /// Runs `before_stop` first (not for an immediate stop, which fences and must not wait for a script), and
    /// fires `on_stop` when PostgreSQL ran.
    pub async fn stop(&self, mode: StopMode) -> Result<(), PgError> {
        self.shielded("stop", move |this| async move {
            if this.stop_locked(mode).await? {
                this.fire(super::Callback::OnStop);
            }
            Ok(())
        })
        .await
    }

    /// Fast stop, then start as `role`; fires `on_restart` (or `on_role_change`), not `on_stop` and `on_start`.
    pub async fn restart(&self, role: StartRole) -> Result<(), PgError> {
        self.restart_within(role, None).await
    }

    /// [`Supervisor::restart`], waiting for readiness at most `within` (see [`Supervisor::start_within`]).
    pub async fn restart_within(&self, role: StartRole, within: Option<Duration>) -> Result<(), PgError> {
        self.shielded("restart", move |this| async move {
            this.stop_locked(StopMode::Fast).await?;
            this.start_locked(&role, within).await?;
            this.started(&role, true);
            Ok(())
        })
        .await
    }

    /// Promotes a replica (`pg_promote(true, timeout)`) and rewrites the configuration as a primary's.
    /// A primary is left alone. A promotion that does not finish in time is [`PgError::Timeout`].
    pub async fn promote(&self, timeout: Duration) -> Result<(), PgError> {
        self.shielded("promote", move |this| async move {
            this.ensure_tracked().await?.ok_or(PgError::NotRunning)?;
            // From before `pg_promote`: once it returns the server takes writes.
            this.state().may_write = true;
            if !this.sql_promote(timeout).await? {
                let what = format!("promotion within {}s", timeout.as_secs());
                return Err(PgError::Timeout { what, log_tail: this.inner.log_tail.text() });
            }
            this.write_conf(RecoveryConf::Primary).await?;
            tracing::info!("promoted PostgreSQL to primary");
            this.promoted();
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

    /// The live postmaster: the tracked one, else one adopted from `postmaster.pid` (a stale pidfile is removed).
    pub(super) async fn ensure_tracked(&self) -> Result<Option<PostmasterId>, PgError> {
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
                    state.may_write = false;
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

    pub(super) async fn start_locked(&self, role: &StartRole, within: Option<Duration>) -> Result<(), PgError> {
        if let Some(id) = self.ensure_tracked().await? {
            return Err(PgError::AlreadyRunning { pid: id.pid });
        }
        let bad_data_dir = |detail: String| PgError::BadDataDir { path: self.inner.cfg.data_dir.clone(), detail };
        match self.data_dir_state().await {
            DataDirState::Initialized { .. } => {}
            DataDirState::Missing => return Err(bad_data_dir("is empty: run initdb or pg_basebackup first".into())),
            DataDirState::Invalid(reason) => return Err(bad_data_dir(reason)),
        }
        let recovery = match role {
            StartRole::Primary => RecoveryConf::Primary,
            // A nostream replica replays what restore_command fetches from the archive: no upstream, no slot.
            StartRole::Replica { .. } if self.inner.cfg.nostream => {
                RecoveryConf::Replica { primary_conninfo: String::new(), slot: None }
            }
            StartRole::Replica { primary, slot } => {
                let this = self.clone();
                files::blocking("write pgpass", move || this.write_pgpass()).await?;
                let primary_conninfo = files::replica_conninfo(&self.inner.cfg, &primary.host, primary.port)?;
                RecoveryConf::Replica { primary_conninfo, slot: slot.clone() }
            }
            StartRole::Standby => RecoveryConf::Replica { primary_conninfo: String::new(), slot: None },
        };
        // From before the spawn: a server started as a primary may accept writes as soon as its recovery ends,
        // before this start returns and long before the HA loop observes it.
        self.state().may_write = matches!(role, StartRole::Primary);
        self.write_conf(recovery).await?;
        // A standby without a primary can only replay what its pg_wal holds: if its consistent
        // point lies beyond, it waits for WAL forever. Do not hold the HA loop for the whole
        // start timeout then: it restarts the server as a replica once a leader exists.
        let timeout = match role {
            StartRole::Standby => self.inner.cfg.start_timeout.min(STANDBY_READY_WAIT),
            _ => self.inner.cfg.start_timeout,
        };
        let timeout = within.map_or(timeout, |within| timeout.min(within));
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
                // Rounded up: a wait bounded by what is left of primary_start_timeout may be under a second.
                let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
                return Err(PgError::NotReady { seconds, log_tail: self.inner.log_tail.text() });
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

    /// True when PostgreSQL ran and was stopped.
    pub(super) async fn stop_locked(&self, mode: StopMode) -> Result<bool, PgError> {
        let Some(id) = self.ensure_tracked().await? else { return Ok(false) };
        if mode != StopMode::Immediate {
            self.run_before_stop().await;
        }
        if let Some(tracked) = self.state().postmaster.as_mut().filter(|tracked| tracked.id == id) {
            tracked.stopping = true;
        }
        *self.inner.sql.lock().await = None;
        tracing::info!(pid = id.pid, ?mode, "stopping PostgreSQL");
        let timeout = self.inner.cfg.stop_timeout;
        if self.signal_and_wait(id, mode, timeout).await? {
            return Ok(true);
        }
        match mode {
            StopMode::Fast => {
                tracing::warn!(pid = id.pid, "fast shutdown did not finish in time, escalating to immediate");
                if self.signal_and_wait(id, StopMode::Immediate, timeout).await? {
                    return Ok(true);
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

    /// `pg_promote(true, timeout)` on a replica; `Ok(true)` once it is a primary (also when it already was).
    async fn sql_promote(&self, timeout: Duration) -> Result<bool, PgError> {
        bounded("promotion", timeout + Duration::from_secs(10), async {
            let session = self.session().await?;
            let res = async {
                let client = &session.client;
                let row = client.query_one("SELECT pg_catalog.pg_is_in_recovery()", &[]).await;
                if !row.map_err(sql("check recovery state"))?.get::<_, bool>(0) {
                    return Ok(true);
                }
                let wait_seconds = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
                let row = client.query_one("SELECT pg_catalog.pg_promote(true, $1)", &[&wait_seconds]).await;
                Ok(row.map_err(sql("run pg_promote"))?.get::<_, bool>(0))
            }
            .await;
            session.done(res)
        })
        .await
    }
}
