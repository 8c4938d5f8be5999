//! A new cluster made by the operator's command instead of initdb (`bootstrap.method: <name>`, Patroni's custom
//! bootstrap): typically a restore from a backup (pgBackRest, WAL-G, Barman), point-in-time included.
//!
//! The restored data directory belongs to another cluster: its roles have that cluster's passwords, so until
//! raftgres has set its own (`create_users`), the managed `pg_hba.conf` lets the superuser in without one from
//! this host only (Patroni opens the same door for the same reason), and `recovery_conf` is written into the
//! managed `postgresql.conf` with a `recovery.signal`. Both go once the cluster is a primary ([`finish_restore`]).
//!
//! [`finish_restore`]: Supervisor::finish_restore

use std::collections::BTreeMap;

use super::{DataDirState, PgError, Supervisor};
use crate::postgres::{files, process};

/// How long a bootstrap command may run (a restore of a large cluster takes hours).
const BOOTSTRAP_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// `bootstrap.method: <name>` with its `bootstrap.<name>` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomBootstrap {
    /// The method name.
    pub name: String,
    /// `command`, split with shell rules.
    pub command: String,
    /// `no_params`: `--scope` and `--datadir` are not passed.
    pub no_params: bool,
    /// `keep_existing_recovery_conf`: keep the recovery settings and signal files the command wrote.
    pub keep_existing_recovery_conf: bool,
    /// `recovery_conf`: recovery settings for the restored cluster's archive recovery (`restore_command`,
    /// `recovery_target_time`, `recovery_target_action`, …), rendered.
    pub recovery_conf: BTreeMap<String, String>,
    /// The section's other keys, passed as `--key=value`, in name order.
    pub options: Vec<(String, String)>,
}

impl CustomBootstrap {
    /// PURE: Patroni's command line: the command, `--scope` and `--datadir` (unless `no_params`), then the other
    /// keys of the section as `--key=value`.
    pub fn argv(&self, scope: &str, data_dir: &std::path::Path) -> Result<Vec<String>, PgError> {
        let mut argv = shlex::split(&self.command)
            .ok_or_else(|| PgError::Config(format!("bootstrap.{}.command does not split into words", self.name)))?;
        if !self.no_params {
            argv.push(format!("--scope={scope}"));
            argv.push(format!("--datadir={}", data_dir.display()));
        }
        argv.extend(self.options.iter().map(|(key, value)| format!("--{key}={value}")));
        Ok(argv)
    }
}

/// What a restored cluster's managed files carry until [`Supervisor::finish_restore`].
#[derive(Debug, Clone, Default)]
pub(super) struct RestoreOverlay {
    /// `recovery_conf`, written into `postgresql.conf`.
    pub recovery: BTreeMap<String, String>,
    /// The restored `pg_hba.conf`, put back as it was when raftgres does not manage the file.
    pub original_hba: Option<String>,
}

impl RestoreOverlay {
    /// PURE: the `pg_hba.conf` lines while the overlay is on: the superuser without password from this host
    /// first, then `lines` (the configured ones, or the restored file's).
    pub fn hba_lines(&self, superuser: &str, configured: &[String]) -> Vec<String> {
        let user = format!("\"{}\"", superuser.replace('"', "\"\""));
        let mut lines = vec![
            format!("local all {user} trust"),
            format!("host all {user} 127.0.0.1/32 trust"),
            format!("host all {user} ::1/128 trust"),
        ];
        if configured.is_empty() {
            let original = self.original_hba.as_deref().unwrap_or_default();
            let kept = original.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
            lines.extend(kept.map(str::to_owned));
        } else {
            lines.extend(configured.iter().cloned());
        }
        lines
    }
}

impl Supervisor {
    /// Makes the data directory with the bootstrap command; PostgreSQL must not run and the directory must be
    /// empty. On success the restore overlay is on: start PostgreSQL as a primary, wait until it left recovery,
    /// create the users, then call [`Supervisor::finish_restore`]. On failure the data directory is emptied.
    pub async fn bootstrap_with(&self, method: &CustomBootstrap) -> Result<(), PgError> {
        let method = method.clone();
        self.shielded("custom bootstrap", move |this| async move { this.bootstrap_with_locked(&method).await }).await
    }

    async fn bootstrap_with_locked(&self, method: &CustomBootstrap) -> Result<(), PgError> {
        self.prepare_empty_data_dir(&format!("bootstrap.{}", method.name)).await?;
        // Durable: a raftgres stopped before `finish_restore` leaves it, and the next process starts over
        // (`restore_incomplete`) instead of taking a half-recovered cluster, with trust lines, for a primary.
        let marker = self.restore_marker();
        let owner = self.inner.owner.clone();
        files::blocking("write the restore marker", move || {
            files::write_durable(&marker, b"a custom bootstrap is in progress\n", 0o600, owner.as_ref())
        })
        .await?;
        let this = self.clone();
        files::blocking("write pgpass", move || this.write_pgpass()).await?;
        let cfg = &self.inner.cfg;
        let argv = method.argv(&cfg.scope, &cfg.data_dir)?;
        let env = [("PGPASSFILE", cfg.pgpass.clone().into_os_string())];
        tracing::info!(method = method.name, ?argv, "running the custom bootstrap command");
        let run = process::run_script(&argv, &env, self.inner.owner.as_ref(), BOOTSTRAP_COMMAND_TIMEOUT).await?;
        if run.code != Some(0) {
            self.empty_data_dir().await?;
            let program = format!("bootstrap.{}", method.name);
            return Err(PgError::CommandFailed { program, status: run.status, stderr_tail: run.output_tail });
        }
        if !matches!(self.data_dir_state().await, DataDirState::Initialized { .. }) {
            self.empty_data_dir().await?;
            return Err(PgError::Config(format!(
                "bootstrap.{}: the command exited 0 but left no PostgreSQL data directory",
                method.name
            )));
        }
        let data_dir = cfg.data_dir.clone();
        let owner = self.inner.owner.clone();
        let (recover, keep) = (!method.recovery_conf.is_empty(), method.keep_existing_recovery_conf);
        let original_hba = files::blocking("prepare the restored data directory", move || {
            let hba = data_dir.join("pg_hba.conf");
            let original = std::fs::read_to_string(&hba).ok();
            if recover {
                files::write_durable(&data_dir.join("recovery.signal"), b"", 0o600, owner.as_ref())?;
            } else if !keep {
                files::remove_durable(&data_dir.join("recovery.signal"))?;
                files::remove_durable(&data_dir.join("standby.signal"))?;
            }
            Ok(original)
        })
        .await?;
        *self.restore_overlay_slot() = Some(RestoreOverlay { recovery: method.recovery_conf.clone(), original_hba });
        self.forget_conf();
        tracing::info!(method = method.name, "the bootstrap command made the data directory");
        Ok(())
    }

    /// Ends a custom bootstrap: the managed files lose the recovery settings and the password-less superuser
    /// lines (a `pg_hba.conf` raftgres does not manage gets its restored text back), and PostgreSQL reloads.
    pub async fn finish_restore(&self) -> Result<(), PgError> {
        let Some(overlay) = self.restore_overlay_slot().take() else { return Ok(()) };
        if self.local().pg_hba.is_empty() {
            let path = self.inner.cfg.data_dir.join("pg_hba.conf");
            let owner = self.inner.owner.clone();
            let text = overlay.original_hba.unwrap_or_default();
            files::blocking("restore pg_hba.conf", move || {
                files::write_durable(&path, text.as_bytes(), 0o600, owner.as_ref())
            })
            .await?;
        }
        self.reload().await?;
        let marker = self.restore_marker();
        files::blocking("remove the restore marker", move || files::remove_durable(&marker)).await?;
        tracing::info!("the restored cluster runs with raftgres' users; recovery settings and trust lines removed");
        Ok(())
    }

    /// `<data_dir>.restore-incomplete`: exists from the start of a custom bootstrap until [`finish_restore`].
    ///
    /// [`finish_restore`]: Supervisor::finish_restore
    pub fn restore_marker(&self) -> std::path::PathBuf {
        let data_dir = &self.inner.cfg.data_dir;
        let name = data_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
        data_dir.with_file_name(format!("{name}.restore-incomplete"))
    }

    /// A custom bootstrap began in an earlier process and did not finish: the data directory must be wiped and
    /// the bootstrap started over ([`Supervisor::wipe_data_dir`] removes the marker).
    pub fn restore_incomplete(&self) -> bool {
        self.restore_marker().exists()
    }

    /// Drops the restore overlay without touching the files (a failed bootstrap, whose data directory goes).
    pub fn abandon_restore(&self) {
        *self.restore_overlay_slot() = None;
    }

    pub(super) fn restore_overlay_slot(&self) -> std::sync::MutexGuard<'_, Option<RestoreOverlay>> {
        // Plain values: a poisoned lock (a panic elsewhere) leaves them usable.
        self.inner.restore.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_command_gets_patronis_arguments() {
        let method = |no_params: bool| CustomBootstrap {
            name: "pgbackrest".into(),
            command: "pgbackrest --stanza=main restore".into(),
            no_params,
            keep_existing_recovery_conf: true,
            recovery_conf: BTreeMap::new(),
            options: vec![("type".into(), "time".into())],
        };
        let data_dir = std::path::Path::new("/data");
        let argv = method(false).argv("batman", data_dir).map_err(|e| e.to_string());
        let expected = ["pgbackrest", "--stanza=main", "restore", "--scope=batman", "--datadir=/data", "--type=time"];
        assert_eq!(argv, Ok(expected.map(str::to_owned).to_vec()));
        let argv = method(true).argv("batman", data_dir).map_err(|e| e.to_string());
        assert_eq!(argv, Ok(["pgbackrest", "--stanza=main", "restore", "--type=time"].map(str::to_owned).to_vec()));
    }

    #[test]
    fn the_superuser_gets_in_without_password_from_this_host_only_until_the_restore_is_finished() {
        let overlay = RestoreOverlay {
            recovery: BTreeMap::new(),
            original_hba: Some("# comment\nhost all all 10.0.0.0/8 scram-sha-256\n\n".into()),
        };
        let trust = [
            "local all \"postgres\" trust",
            "host all \"postgres\" 127.0.0.1/32 trust",
            "host all \"postgres\" ::1/128 trust",
        ];
        let mut restored: Vec<String> = trust.map(str::to_owned).to_vec();
        restored.push("host all all 10.0.0.0/8 scram-sha-256".into());
        assert_eq!(overlay.hba_lines("postgres", &[]), restored);
        let configured = vec!["host all all 127.0.0.1/32 scram-sha-256".to_owned()];
        let mut expected: Vec<String> = trust.map(str::to_owned).to_vec();
        expected.extend(configured.clone());
        assert_eq!(overlay.hba_lines("postgres", &configured), expected);
    }
}
