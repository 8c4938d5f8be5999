//! The data directory: what it holds (with pg_controldata), a new cluster in it (initdb, then the roles once it
//! runs as the bootstrap primary), and emptying or wiping it.
//!
//! This module owns how a new cluster is created: initdb as the PostgreSQL user with the superuser password
//! in a temporary 0600 `--pwfile`, then the managed configuration, then the superuser, replication and rewind
//! roles over SQL. A directory initdb or pg_basebackup fills is created empty with mode 0700 and emptied again on
//! failure. It must not decide whether to bootstrap or clone: the HA loop does. Programs run through
//! `postgres::process`; cloning is `replication`'s.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tokio_postgres::Client;

use super::probe::{bounded, sql, STATEMENT_TIMEOUT};
use super::{error_chain, PgError, Supervisor};
use crate::postgres::controldata::{self, ControlData};
use crate::postgres::files::{self, Owner, RecoveryConf};
use crate::postgres::process;

/// What the data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirState {
    /// Absent or empty: initdb or pg_basebackup may fill it.
    Missing,
    /// A cluster, with its pg_control.
    Initialized {
        /// `pg_controldata` output.
        controldata: ControlData,
        /// A `backup_label` is present: a base backup (pg_basebackup) that was never started. Its
        /// pg_control is the source's, `in production` when cloned from a primary, so that state says
        /// nothing about this directory having run as a primary.
        unfinished_backup: bool,
    },
    /// Something else: unreadable, wrong owner, not a cluster. The text says what and what to do.
    Invalid(String),
}

impl Supervisor {
    /// What the data directory holds: absent or empty, a cluster (with `pg_controldata`), or something else.
    pub async fn data_dir_state(&self) -> DataDirState {
        let data_dir = self.inner.cfg.data_dir.clone();
        let owner = self.inner.owner.clone();
        let layout = files::blocking("inspect the data directory", move || {
            if files::is_missing_or_empty(&data_dir)? {
                return Ok(None);
            }
            files::check_owner(&data_dir, owner.as_ref())?;
            if !data_dir.join("global/pg_control").is_file() {
                return Err(PgError::BadDataDir {
                    path: data_dir,
                    detail: "is not empty but has no global/pg_control; remove its contents or fix the path".into(),
                });
            }
            Ok(Some(data_dir.join("backup_label").is_file()))
        });
        let unfinished_backup = match layout.await {
            Ok(None) => return DataDirState::Missing,
            Ok(Some(unfinished_backup)) => unfinished_backup,
            Err(e) => return DataDirState::Invalid(error_chain(&e)),
        };
        match self.read_controldata().await {
            Ok(controldata) => DataDirState::Initialized { controldata, unfinished_backup },
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

    /// On the bootstrap primary: creates or updates the replication user (REPLICATION LOGIN), the superuser's
    /// password, and the rewind user with the function grants pg_rewind needs.
    pub async fn create_users(&self) -> Result<(), PgError> {
        let cfg = &self.inner.cfg;
        bounded("creating users", STATEMENT_TIMEOUT, async {
            let session = self.session().await?;
            let res = async {
                let client = &session.client;
                upsert_role(client, &cfg.superuser.username, "SUPERUSER LOGIN", cfg.superuser.password.as_deref())
                    .await?;
                if cfg.replication.username != cfg.superuser.username {
                    let password = cfg.replication.password.as_deref();
                    upsert_role(client, &cfg.replication.username, "REPLICATION LOGIN", password).await?;
                }
                if let Some(rewind) = cfg.rewind.as_ref().filter(|rewind| rewind.username != cfg.superuser.username) {
                    upsert_role(client, &rewind.username, "LOGIN", rewind.password.as_deref()).await?;
                    grant_rewind_functions(client, &rewind.username).await?;
                }
                Ok(())
            }
            .await;
            session.done(res)
        })
        .await?;
        tracing::info!("created or updated the superuser, replication and rewind users");
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
            *this.restore_overlay_slot() = None;
            let marker = this.rewind_marker();
            files::blocking("remove the rewind marker", move || files::remove_durable(&marker)).await?;
            tracing::warn!(data_dir = %this.inner.cfg.data_dir.display(), "removed the contents of the data directory");
            Ok(())
        })
        .await
    }

    /// Checks that no postmaster runs and the data directory is absent or empty, then creates it (0700).
    pub(super) async fn prepare_empty_data_dir(&self, program: &str) -> Result<(), PgError> {
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

    pub(super) async fn empty_data_dir(&self) -> Result<(), PgError> {
        *self.restore_overlay_slot() = None;
        let data_dir = self.inner.cfg.data_dir.clone();
        let restore_marker = self.restore_marker();
        files::blocking("empty the data directory", move || {
            files::clear_dir(&data_dir)?;
            files::remove_durable(&restore_marker)
        })
        .await
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

/// `CREATE ROLE` or `ALTER ROLE` with `attributes`, quoting done by the server's `format()` (`%I`, `%L`).
async fn upsert_role(client: &Client, name: &str, attributes: &str, password: Option<&str>) -> Result<(), PgError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(sql(&format!("look up role {name}")))?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let template = match password {
        Some(_) => "SELECT pg_catalog.format('%s ROLE %I WITH %s PASSWORD %L', $1::text, $2::text, $3::text, $4::text)",
        None => "SELECT pg_catalog.format('%s ROLE %I WITH %s', $1::text, $2::text, $3::text, $4::text)",
    };
    let row = client.query_one(template, &[&verb, &name, &attributes, &password]).await;
    let statement: String = row.map_err(sql(&format!("quote role {name}")))?.get(0);
    client.batch_execute(&statement).await.map_err(sql(&format!("{} role {name}", verb.to_lowercase())))
}

/// The functions pg_rewind calls on the source as a non-superuser.
async fn grant_rewind_functions(client: &Client, name: &str) -> Result<(), PgError> {
    const FUNCTIONS: [&str; 4] = [
        "pg_catalog.pg_ls_dir(text, boolean, boolean)",
        "pg_catalog.pg_stat_file(text, boolean)",
        "pg_catalog.pg_read_binary_file(text)",
        "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
    ];
    for function in FUNCTIONS {
        let template = format!("SELECT pg_catalog.format('GRANT EXECUTE ON FUNCTION {function} TO %I', $1::text)");
        let row = client.query_one(&template, &[&name]).await;
        let statement: String = row.map_err(sql(&format!("quote role {name}")))?.get(0);
        client.batch_execute(&statement).await.map_err(sql(&format!("grant {function} to {name}")))?;
    }
    Ok(())
}
