//! pg_rewind: rejoining a former primary to the new primary's timeline without a full clone (contract §2.12).
//!
//! This module owns running pg_rewind against a source server and reading what it did from its output.
//! It must not decide whether to rewind or reclone (the HA loop does, from the timelines), and it relies on
//! PostgreSQL 13+ pg_rewind bringing an uncleanly stopped target to a clean shutdown itself.

use std::collections::BTreeMap;
use std::ffi::OsString;

use crate::postgres::conf::{self, ConnInfo};
use crate::postgres::files;
use crate::postgres::process;
use crate::postgres::supervisor::{ConnTarget, DataDirState, PgError, RewindOutcome, Supervisor};

impl Supervisor {
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
            DataDirState::Initialized { controldata } if controldata.rewind_possible() => {}
            DataDirState::Initialized { .. } => {
                return Err(bad_data_dir("pg_rewind needs wal_log_hints = on or data checksums".into()))
            }
            DataDirState::Missing => return Err(bad_data_dir("is empty: nothing to rewind".into())),
            DataDirState::Invalid(reason) => return Err(bad_data_dir(reason)),
        }
        let this = self.clone();
        files::blocking("write pgpass", move || this.write_pgpass()).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
