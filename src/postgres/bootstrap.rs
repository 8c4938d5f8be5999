//! Filling and inspecting the data directory: pg_controldata, initdb, pg_basebackup, `.pgpass`, wiping.
//!
//! This module owns how a new cluster is created (initdb as the PostgreSQL user with the superuser password
//! in a temporary 0600 `--pwfile`, then the managed configuration) and how a replica is cloned
//! (pg_basebackup into an empty 0700 directory, whose contents are removed again on failure).
//! It must not decide whether to bootstrap or clone: the HA loop does. Programs run through `process`.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::postgres::controldata;
use crate::postgres::files::{self, Owner, RecoveryConf};
use crate::postgres::process;
use crate::postgres::supervisor::{error_chain, ConnTarget, DataDirState, PgError, Supervisor};

impl Supervisor {
    /// What the data directory holds: absent or empty, a cluster (with `pg_controldata`), or something else.
    pub async fn data_dir_state(&self) -> DataDirState {
        let data_dir = self.inner.cfg.data_dir.clone();
        let owner = self.inner.owner.clone();
        let layout = files::blocking("inspect the data directory", move || {
            if files::is_missing_or_empty(&data_dir)? {
                return Ok(false);
            }
            files::check_owner(&data_dir, owner.as_ref())?;
            if !data_dir.join("global/pg_control").is_file() {
                return Err(PgError::BadDataDir {
                    path: data_dir,
                    detail: "is not empty but has no global/pg_control; remove its contents or fix the path".into(),
                });
            }
            Ok(true)
        });
        match layout.await {
            Ok(false) => return DataDirState::Missing,
            Ok(true) => {}
            Err(e) => return DataDirState::Invalid(error_chain(&e)),
        }
        match self.read_controldata().await {
            Ok(controldata) => DataDirState::Initialized { controldata },
            Err(e) => DataDirState::Invalid(error_chain(&e)),
        }
    }

    async fn read_controldata(&self) -> Result<controldata::ControlData, PgError> {
        let cfg = &self.inner.cfg;
        let args = [OsString::from("-D"), cfg.data_dir.clone().into_os_string()];
        // The labels are translated in other locales, and the parser needs the English ones.
        let env = [("LC_ALL", OsString::from("C"))];
        let output = process::run_program(&cfg.bin_dir, "pg_controldata", &args, &env, self.inner.owner.as_ref());
        let output = output.await?;
        controldata::parse_controldata(&output.stdout)
            .map_err(|e| PgError::Unexpected { what: format!("pg_controldata output: {e}") })
    }

    /// Creates a new cluster in the (absent or empty) data directory: initdb as the PostgreSQL user with
    /// `--auth-host=scram-sha-256 --auth-local=peer`, the superuser password through a temporary `--pwfile`,
    /// and `initdb_options`; then moves the original postgresql.conf to postgresql.base.conf and writes the
    /// managed postgresql.conf and pg_hba.conf. On failure the directory is emptied again.
    pub async fn initdb(&self) -> Result<(), PgError> {
        self.shielded("initdb", move |this| async move { this.initdb_locked().await }).await
    }

    async fn initdb_locked(&self) -> Result<(), PgError> {
        self.prepare_empty_data_dir("initdb").await?;
        let cfg = &self.inner.cfg;
        let owner = self.inner.owner.clone();
        let password = cfg.superuser.password.clone();
        let pwfile = match password {
            Some(password) => Some(files::blocking("write pwfile", move || write_pwfile(&password, owner)).await?),
            None => None,
        };
        let mut args: Vec<OsString> = vec!["-D".into(), cfg.data_dir.clone().into_os_string()];
        args.push(format!("--username={}", cfg.superuser.username).into());
        args.extend(["--auth-host=scram-sha-256".into(), "--auth-local=peer".into()]);
        if let Some(pwfile) = &pwfile {
            let mut arg = OsString::from("--pwfile=");
            arg.push(pwfile.path());
            args.push(arg);
        }
        args.extend(cfg.initdb_options.iter().map(OsString::from));
        let res = process::run_program(&cfg.bin_dir, "initdb", &args, &[], self.inner.owner.as_ref()).await;
        drop(pwfile);
        let res = match res {
            Ok(_) => self.write_conf(RecoveryConf::Primary).await,
            Err(e) => Err(e),
        };
        if let Err(e) = res {
            self.empty_data_dir().await?;
            return Err(e);
        }
        tracing::info!(data_dir = %cfg.data_dir.display(), "initialized a new cluster");
        Ok(())
    }

    /// Clones the data directory from `from` with pg_basebackup (`-X stream -c fast`) as the replication user,
    /// the password coming from the pgpass file. The directory must be absent or empty; it is created with mode
    /// 0700 for the PostgreSQL user, and emptied again if pg_basebackup fails.
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

    /// Removes everything inside the data directory (keeping the directory). PostgreSQL must be stopped.
    /// Call it only when the configuration allows throwing data away.
    pub async fn wipe_data_dir(&self) -> Result<(), PgError> {
        self.shielded("wipe", move |this| async move {
            if let Some(id) = this.ensure_tracked().await? {
                return Err(PgError::AlreadyRunning { pid: id.pid });
            }
            this.empty_data_dir().await?;
            this.forget_conf();
            let marker = this.rewind_marker();
            files::blocking("remove the rewind marker", move || files::remove_durable(&marker)).await?;
            tracing::warn!(data_dir = %this.inner.cfg.data_dir.display(), "removed the contents of the data directory");
            Ok(())
        })
        .await
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

    /// Checks that no postmaster runs and the data directory is absent or empty, then creates it (0700).
    async fn prepare_empty_data_dir(&self, program: &str) -> Result<(), PgError> {
        if let Some(id) = self.ensure_tracked().await? {
            return Err(PgError::AlreadyRunning { pid: id.pid });
        }
        let data_dir = self.inner.cfg.data_dir.clone();
        let owner = self.inner.owner.clone();
        let detail = format!("{program} needs an absent or empty data directory");
        files::blocking("create the data directory", move || {
            if !files::is_missing_or_empty(&data_dir)? {
                return Err(PgError::BadDataDir { path: data_dir, detail });
            }
            files::ensure_private_dir(&data_dir, owner.as_ref())
        })
        .await
    }

    async fn empty_data_dir(&self) -> Result<(), PgError> {
        let data_dir = self.inner.cfg.data_dir.clone();
        files::blocking("empty the data directory", move || files::clear_dir(&data_dir)).await
    }
}

/// A temporary password file for initdb, readable only by the PostgreSQL user, removed when dropped.
struct PwFile(PathBuf);

impl PwFile {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PwFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "could not remove initdb's password file");
        }
    }
}

fn write_pwfile(password: &str, owner: Option<Owner>) -> Result<PwFile, PgError> {
    let name = format!("raftgres-pwfile-{}-{:016x}", std::process::id(), rand::random::<u64>());
    let path = std::env::temp_dir().join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(files::io_context("create", &path))?;
    let pwfile = PwFile(path);
    if let Some(owner) = owner {
        std::os::unix::fs::chown(pwfile.path(), Some(owner.uid), Some(owner.gid))
            .map_err(files::io_context("chown", pwfile.path()))?;
    }
    writeln!(file, "{password}").map_err(files::io_context("write", pwfile.path()))?;
    Ok(pwfile)
}
