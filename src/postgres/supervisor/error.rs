//! `PgError`, the supervisor's one error type, and `error_chain`, which renders an error with its causes.
//!
//! This module owns the variants callers branch on (`NotRunning`, `AlreadyRunning`, `NotReady`, ...) and how
//! each reads, PostgreSQL's last log lines included.
//! It must not log: an error is logged once, where it is handled.

use std::path::PathBuf;

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
    /// A file or process operation failed; `context` says which, on what, and the OS error follows.
    #[error("{context}: {cause}")]
    Io {
        /// Present-tense verb phrase with the path ("write /data/postgresql.conf").
        context: String,
        /// The cause, part of the message (so every log line and answer keeps it).
        cause: std::io::Error,
    },
    /// An SQL statement or connection failed; the server's message follows.
    #[error("{context}: {}", crate::postgres::supervisor::error_chain(cause))]
    Sql {
        /// Present-tense verb phrase ("probe PostgreSQL").
        context: String,
        /// The cause, part of the message.
        cause: tokio_postgres::Error,
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
        // A message that already ends with its cause (`"…: {source}"`) does not repeat it.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_message_carries_the_log_tail() {
        let e = PgError::Timeout { what: "x".into(), log_tail: String::new() };
        assert_eq!(e.to_string(), "timed out waiting for x");
        let e = PgError::StartFailed { status: "exit code 1".into(), log_tail: "FATAL:  bad".into() };
        assert_eq!(e.to_string(), "postgres exited during start-up (exit code 1); last log lines:\nFATAL:  bad");
    }

    #[test]
    fn error_chain_includes_causes() {
        let e = PgError::Io { context: "write /x".into(), cause: std::io::Error::other("disk full") };
        assert_eq!(error_chain(&e), "write /x: disk full");
    }
}
