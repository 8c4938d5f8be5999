//! Pure parsing of `postmaster.pid` and the adopt-or-reject decision for an already running postmaster.
//!
//! This module owns the pidfile layout of PostgreSQL 10+ and the guard against PID reuse: a postmaster
//! is adopted only if its pid is alive and its start time matches the pidfile (STYLE rule 15).
//! It must not read files, look at `/proc`, send signals or read the clock: the caller gathers
//! [`ProcessFacts`] and the file contents and passes them in.

use std::fmt;

/// How far (in seconds, exclusive) a process start time may be from the pidfile's and still match,
/// as in Patroni: the kernel's start time and PostgreSQL's `time(NULL)` are taken at slightly different moments.
pub const START_TIME_TOLERANCE_SECS: u64 = 3;

/// The contents of `postmaster.pid` (lines 1 to 8 of the PostgreSQL 10+ layout; the shared memory key is skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostmasterPid {
    /// Line 1: the process id (written negated by a single-user backend, see `mode`).
    pub pid: u32,
    /// Whether line 1 was written by a postmaster or by a single-user backend (negative pid).
    pub mode: PidfileOwner,
    /// Line 2: the data directory as PostgreSQL saw it.
    pub data_dir: String,
    /// Line 3: the postmaster start time in seconds since the epoch.
    pub start_time: u64,
    /// Line 4: the TCP port.
    pub port: u16,
    /// Line 5: the first unix socket directory; empty when there is none or the line is not written yet.
    pub socket_dir: String,
    /// Line 6: the first listen address; empty when `listen_addresses = ''` or the line is not written yet.
    pub listen_addr: String,
    /// Line 8: the postmaster status; `None` while the line is missing or blank.
    pub status: Option<PmStatus>,
}

/// Which kind of process wrote the pidfile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PidfileOwner {
    /// A normal postmaster.
    Postmaster,
    /// A single-user backend (`postgres --single`), e.g. crash recovery run before pg_rewind.
    SingleUser,
}

/// The status line PostgreSQL writes to line 8 (space-padded to 8 characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PmStatus {
    /// `starting`: the postmaster is starting up or in crash recovery.
    Starting,
    /// `stopping`: a shutdown is in progress.
    Stopping,
    /// `ready`: accepting connections (a hot standby says `ready` too).
    Ready,
    /// `standby`: in recovery and not (yet) accepting read-only connections.
    Standby,
    /// A word this version of raftgres does not know; never treated as ready.
    Unknown(String),
}

impl fmt::Display for PmStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PmStatus::Starting => "starting",
            PmStatus::Stopping => "stopping",
            PmStatus::Ready => "ready",
            PmStatus::Standby => "standby",
            PmStatus::Unknown(word) => word,
        })
    }
}

/// Why `postmaster.pid` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PidfileError {
    /// A required line (1 to 4) is absent: the file is truncated or is still being written.
    #[error("postmaster.pid has no line {line} ({name})")]
    MissingLine {
        /// 1-based line number.
        line: usize,
        /// What the line holds.
        name: &'static str,
    },
    /// A line holds something that is not the expected number.
    #[error("postmaster.pid line {line} ({name}) is not valid: {value:?}")]
    InvalidLine {
        /// 1-based line number.
        line: usize,
        /// What the line should hold.
        name: &'static str,
        /// The rejected text.
        value: String,
    },
}

/// Parses the text of `postmaster.pid`.
pub fn parse_pidfile(text: &str) -> Result<PostmasterPid, PidfileError> {
    let lines: Vec<&str> = text.lines().collect();
    let required = |idx: usize, name: &'static str| -> Result<&str, PidfileError> {
        lines.get(idx).copied().ok_or(PidfileError::MissingLine { line: idx + 1, name })
    };
    let number = |idx: usize, name: &'static str| -> Result<u64, PidfileError> {
        let value = required(idx, name)?.trim();
        value.parse().map_err(|_| PidfileError::InvalidLine { line: idx + 1, name, value: value.to_owned() })
    };
    let pid_text = required(0, "pid")?.trim();
    let (mode, digits) = match pid_text.strip_prefix('-') {
        Some(digits) => (PidfileOwner::SingleUser, digits),
        None => (PidfileOwner::Postmaster, pid_text),
    };
    let invalid_pid = || PidfileError::InvalidLine { line: 1, name: "pid", value: pid_text.to_owned() };
    let pid = digits.parse::<u32>().ok().filter(|pid| *pid > 0).ok_or_else(invalid_pid)?;
    let data_dir = required(1, "data directory")?.to_owned();
    let start_time = number(2, "start time")?;
    let port = number(3, "port")?;
    let port = u16::try_from(port).map_err(|_| PidfileError::InvalidLine {
        line: 4,
        name: "port",
        value: port.to_string(),
    })?;
    let optional = |idx: usize| lines.get(idx).map_or("", |line| line.trim()).to_owned();
    let status = match optional(7).as_str() {
        "" => None,
        "starting" => Some(PmStatus::Starting),
        "stopping" => Some(PmStatus::Stopping),
        "ready" => Some(PmStatus::Ready),
        "standby" => Some(PmStatus::Standby),
        other => Some(PmStatus::Unknown(other.to_owned())),
    };
    Ok(PostmasterPid {
        pid,
        mode,
        data_dir,
        start_time,
        port,
        socket_dir: optional(4),
        listen_addr: optional(5),
        status,
    })
}

/// What the caller found out about the process named in the pidfile (from `kill(pid, 0)` and `/proc/<pid>`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessFacts {
    /// A process with this pid exists (and is not a zombie).
    pub alive: bool,
    /// The pid is raftgres itself: after a container restart raftgres may get the old postmaster's pid.
    pub is_self: bool,
    /// The pid is raftgres's parent (for example the container's init or the service manager).
    pub is_parent: bool,
    /// The process start time in seconds since the epoch, see [`process_start_time`]; `None` if unreadable.
    pub process_start_time_epoch: Option<u64>,
    /// The executable's file name (basename of `/proc/<pid>/exe`); `None` if unreadable.
    pub exe_name: Option<String>,
    /// Whether the process's working directory (`/proc/<pid>/cwd`) is this data directory; `None` if unreadable.
    pub data_dir_matches: Option<bool>,
}

/// What to do with the postmaster named in the pidfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adopt {
    /// It is this data directory's running postmaster: supervise it instead of starting a new one.
    Adopt,
    /// The pidfile describes no running postmaster of this data directory: the caller may remove it and start
    /// PostgreSQL (which would otherwise refuse because a recycled pid looks alive to its own lock-file check).
    Stale(String),
    /// Something that may be this data directory's postgres is running but cannot be confirmed:
    /// neither adopt it nor start another postmaster over it; a human must look.
    Reject(String),
}

/// Decides whether to adopt the running postmaster named in `pidfile`.
///
/// Failure scenario this guards against (Patroni's PID-reuse check):
/// 1. PostgreSQL and raftgres are killed together (host or container restart), leaving `postmaster.pid`.
/// 2. After the restart an unrelated process, or raftgres itself, gets the recorded pid.
/// 3. Without the start-time check raftgres would "adopt" that process, report PostgreSQL as running,
///    and never start the real postmaster; with it, the pidfile is recognised as stale.
pub fn adopt_decision(pidfile: &PostmasterPid, facts: &ProcessFacts) -> Adopt {
    let pid = pidfile.pid;
    if facts.is_self {
        return Adopt::Stale(format!("pid {pid} from postmaster.pid is raftgres itself"));
    }
    if facts.is_parent {
        return Adopt::Stale(format!("pid {pid} from postmaster.pid is the parent of raftgres"));
    }
    if !facts.alive {
        return Adopt::Stale(format!("no process with pid {pid} from postmaster.pid is running"));
    }
    if let Some(exe) = facts.exe_name.as_deref().map(normalize_exe_name) {
        if exe != "postgres" && exe != "postmaster" {
            return Adopt::Stale(format!("pid {pid} from postmaster.pid is now {exe:?}, not postgres"));
        }
    }
    if facts.data_dir_matches == Some(false) {
        return Adopt::Stale(format!(
            "pid {pid} from postmaster.pid runs in another directory than this data directory"
        ));
    }
    let Some(process_start) = facts.process_start_time_epoch else {
        return Adopt::Reject(format!("cannot read the start time of pid {pid} to rule out PID reuse"));
    };
    if process_start.abs_diff(pidfile.start_time) >= START_TIME_TOLERANCE_SECS {
        let expected = pidfile.start_time;
        // An unreadable exe means another OS user owns the process, so it cannot be our postmaster. A postgres
        // binary in our data directory with a wrong start time may be ours after a wall-clock step, which
        // Patroni adopts; raftgres adopts only on a start-time match (STYLE rule 15) and refuses to guess.
        if facts.exe_name.is_none() {
            return Adopt::Stale(format!(
                "pid {pid} started at {process_start}, not at {expected}: the pid was reused"
            ));
        }
        return Adopt::Reject(format!(
            "pid {pid} looks like postgres but started at {process_start}, not at {expected} as postmaster.pid says"
        ));
    }
    if pidfile.mode == PidfileOwner::SingleUser {
        return Adopt::Reject(format!("a single-user postgres (pid {pid}) is running on this data directory"));
    }
    Adopt::Adopt
}

/// Strips the directory and the ` (deleted)` suffix Linux adds when the binary was replaced by a package upgrade.
fn normalize_exe_name(exe: &str) -> &str {
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
    exe.rsplit('/').next().unwrap_or(exe)
}

/// Why a process start time could not be computed from `/proc` contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcStatError {
    /// `/proc/<pid>/stat` does not have the expected layout.
    #[error("/proc/<pid>/stat is malformed")]
    MalformedPidStat,
    /// `/proc/stat` has no valid `btime` line.
    #[error("/proc/stat has no btime line")]
    MissingBootTime,
    /// The clock tick rate (`sysconf(_SC_CLK_TCK)`) was 0.
    #[error("clock ticks per second must be positive")]
    ZeroTickRate,
}

/// PURE: the parent pid (the fourth field) of a `/proc/<pid>/stat` line; `None` when malformed.
pub fn parent_pid(pid_stat: &str) -> Option<u32> {
    let (_, after_comm) = pid_stat.rsplit_once(')')?;
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// Computes a process start time in seconds since the epoch from the text of `/proc/<pid>/stat`,
/// the text of `/proc/stat` (its `btime` line) and the clock tick rate (`sysconf(_SC_CLK_TCK)`, usually 100).
pub fn process_start_time(pid_stat: &str, proc_stat: &str, ticks_per_second: u64) -> Result<u64, ProcStatError> {
    if ticks_per_second == 0 {
        return Err(ProcStatError::ZeroTickRate);
    }
    // The command name (field 2) is in parentheses and may itself contain spaces and ')', so fields are
    // counted from the last ')': state is field 3 and starttime is field 22.
    let (_, after_comm) = pid_stat.rsplit_once(')').ok_or(ProcStatError::MalformedPidStat)?;
    let start_ticks: u64 = after_comm
        .split_whitespace()
        .nth(22 - 3)
        .and_then(|field| field.parse().ok())
        .ok_or(ProcStatError::MalformedPidStat)?;
    let boot_time: u64 = proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or(ProcStatError::MissingBootTime)?;
    Ok(boot_time.saturating_add(start_ticks / ticks_per_second))
}

#[cfg(test)]
mod tests {

    #[test]
    fn parent_pid_reads_the_fourth_field_past_a_command_with_spaces_and_parentheses() {
        assert_eq!(parent_pid("4242 (postgres) S 4100 4242 4242 0 -1 4194560"), Some(4100));
        assert_eq!(parent_pid("4243 (postgres: walsender (x) ) S 4100 4243 4243 0"), Some(4100));
        assert_eq!(parent_pid("garbage"), None);
        assert_eq!(parent_pid("1 (init) S"), None);
    }

    use super::*;

    /// Captured from PostgreSQL 15.18 (`pg_ctl start -o "-p 54329 -k <dir> -c listen_addresses=127.0.0.1"`).
    const READY: &str = include_str!("../../tests/data/postgres/postmaster_ready.pid");
    /// Captured from a PostgreSQL 15.18 standby with `hot_standby = off`.
    const STANDBY: &str = include_str!("../../tests/data/postgres/postmaster_standby.pid");
    /// Captured from PostgreSQL 15.18 with `listen_addresses = ''`.
    const NO_LISTEN: &str = include_str!("../../tests/data/postgres/postmaster_no_listen.pid");
    /// `/proc/<pid>/stat` of the READY postmaster, and the host's btime (CLK_TCK was 100).
    const PID_STAT: &str = "12820 (postgres) S 1 12820 12820 0 -1 4194304 3770 495 0 0 1 2 0 0 20 0 1 0 51532 \
                            222330880 7300 18446744073709551615 94061465407488 94061470820777 0 0 0 0";
    const PROC_STAT: &str = "cpu  1 2 3 4\nintr 1\nctxt 2\nbtime 1795306503\nprocesses 3\n";

    enum Input<'a> {
        Parse(&'a str),
        Decide(&'a str, ProcessFacts),
        StartTime(&'a str, &'a str, u64),
    }

    #[track_caller]
    fn check(input: Input<'_>, expected: &str) {
        let actual = match input {
            Input::Parse(text) => match parse_pidfile(text) {
                Ok(pm) => format!(
                    "pid={} {:?} dir={} start={} port={} socket={} listen={} status={}",
                    pm.pid,
                    pm.mode,
                    pm.data_dir,
                    pm.start_time,
                    pm.port,
                    pm.socket_dir,
                    pm.listen_addr,
                    pm.status.map_or("-".to_owned(), |status| status.to_string())
                ),
                Err(e) => format!("error: {e}"),
            },
            Input::Decide(text, facts) => format!("{:?}", adopt_decision(&parse_pidfile(text).unwrap(), &facts)),
            Input::StartTime(pid_stat, proc_stat, ticks) => {
                format!("{:?}", process_start_time(pid_stat, proc_stat, ticks))
            }
        };
        assert_eq!(actual, expected);
    }

    fn postgres_facts(start: u64) -> ProcessFacts {
        ProcessFacts {
            alive: true,
            process_start_time_epoch: Some(start),
            exe_name: Some("/usr/lib/postgresql/15/bin/postgres".to_owned()),
            data_dir_matches: Some(true),
            ..ProcessFacts::default()
        }
    }

    #[test]
    fn parses_real_pidfiles() {
        let ready = "pid=12820 Postmaster dir=/tmp/pgsample.mvN8/data start=1795307018 port=54329 \
                     socket=/tmp/pgsample.mvN8 listen=127.0.0.1 status=ready";
        check(Input::Parse(READY), ready);
        let standby = "pid=12945 Postmaster dir=/tmp/pgsample.mvN8/data start=1795307024 port=54329 \
                       socket=/tmp/pgsample.mvN8 listen=127.0.0.1 status=standby";
        check(Input::Parse(STANDBY), standby);
        let no_listen = "pid=12991 Postmaster dir=/tmp/pgsample.mvN8/data2 start=1795307030 port=54328 \
                         socket=/tmp/pgsample.mvN8 listen= status=ready";
        check(Input::Parse(NO_LISTEN), no_listen);
    }

    #[test]
    fn status_line_may_be_missing_padded_or_new() {
        let early = "42\n/data\n1700000000\n5432\n/run/postgresql\n";
        check(
            Input::Parse(early),
            "pid=42 Postmaster dir=/data start=1700000000 port=5432 socket=/run/postgresql listen= status=-",
        );
        let blank = "42\n/data\n1700000000\n5432\n\n*\n  5432001 0\n        \n";
        check(Input::Parse(blank), "pid=42 Postmaster dir=/data start=1700000000 port=5432 socket= listen=* status=-");
        let stopping = "42\n/data\n1700000000\n5432\n\n\n\nstopping\n";
        check(
            Input::Parse(stopping),
            "pid=42 Postmaster dir=/data start=1700000000 port=5432 socket= listen= status=stopping",
        );
        let new_word = "42\n/data\n1700000000\n5432\n\n\n\nwarming \n";
        check(
            Input::Parse(new_word),
            "pid=42 Postmaster dir=/data start=1700000000 port=5432 socket= listen= status=warming",
        );
    }

    #[test]
    fn negative_pid_means_single_user_backend() {
        check(
            Input::Parse("-77\n/data\n1700000000\n5432\n"),
            "pid=77 SingleUser dir=/data start=1700000000 port=5432 socket= listen= status=-",
        );
    }

    #[test]
    fn garbage_pidfiles_are_errors() {
        check(Input::Parse(""), "error: postmaster.pid has no line 1 (pid)");
        check(Input::Parse("42\n/data\n"), "error: postmaster.pid has no line 3 (start time)");
        check(Input::Parse("abc\n/data\n1\n5432\n"), r#"error: postmaster.pid line 1 (pid) is not valid: "abc""#);
        check(Input::Parse("0\n/data\n1\n5432\n"), r#"error: postmaster.pid line 1 (pid) is not valid: "0""#);
        check(
            Input::Parse("42\n/data\nnow\n5432\n"),
            r#"error: postmaster.pid line 3 (start time) is not valid: "now""#,
        );
        check(Input::Parse("42\n/data\n1\n99999\n"), r#"error: postmaster.pid line 4 (port) is not valid: "99999""#);
    }

    #[test]
    fn adopts_live_postgres_with_matching_start_time() {
        check(Input::Decide(READY, postgres_facts(1795307018)), "Adopt");
        check(Input::Decide(READY, postgres_facts(1795307020)), "Adopt");
        let unknown_exe_and_cwd = ProcessFacts { exe_name: None, data_dir_matches: None, ..postgres_facts(1795307016) };
        check(Input::Decide(READY, unknown_exe_and_cwd), "Adopt");
        let deleted_binary =
            ProcessFacts { exe_name: Some("postgres (deleted)".to_owned()), ..postgres_facts(1795307018) };
        check(Input::Decide(READY, deleted_binary), "Adopt");
    }

    #[test]
    fn stale_when_the_pid_is_gone_or_is_someone_else() {
        let dead = ProcessFacts { alive: false, ..postgres_facts(1795307018) };
        check(Input::Decide(READY, dead), r#"Stale("no process with pid 12820 from postmaster.pid is running")"#);
        let is_self = ProcessFacts { is_self: true, ..postgres_facts(1795307018) };
        check(Input::Decide(READY, is_self), r#"Stale("pid 12820 from postmaster.pid is raftgres itself")"#);
        let is_parent = ProcessFacts { is_parent: true, ..postgres_facts(1795307018) };
        check(Input::Decide(READY, is_parent), r#"Stale("pid 12820 from postmaster.pid is the parent of raftgres")"#);
        let bash = ProcessFacts { exe_name: Some("/usr/bin/bash".to_owned()), ..postgres_facts(1795307018) };
        check(Input::Decide(READY, bash), r#"Stale("pid 12820 from postmaster.pid is now \"bash\", not postgres")"#);
        let other_dir = ProcessFacts { data_dir_matches: Some(false), ..postgres_facts(1795307018) };
        let msg = r#"Stale("pid 12820 from postmaster.pid runs in another directory than this data directory")"#;
        check(Input::Decide(READY, other_dir), msg);
        let other_user = ProcessFacts { exe_name: None, data_dir_matches: None, ..postgres_facts(1795307021) };
        let msg = r#"Stale("pid 12820 started at 1795307021, not at 1795307018: the pid was reused")"#;
        check(Input::Decide(READY, other_user), msg);
    }

    #[test]
    fn rejects_when_pid_reuse_cannot_be_ruled_out() {
        let late = "Reject(\"pid 12820 looks like postgres but started at 1795307021, \
                    not at 1795307018 as postmaster.pid says\")";
        check(Input::Decide(READY, postgres_facts(1795307021)), late);
        let unreadable = ProcessFacts { process_start_time_epoch: None, ..postgres_facts(0) };
        check(
            Input::Decide(READY, unreadable),
            r#"Reject("cannot read the start time of pid 12820 to rule out PID reuse")"#,
        );
        let single = "-12820\n/data\n1795307018\n5432\n";
        let msg = r#"Reject("a single-user postgres (pid 12820) is running on this data directory")"#;
        check(Input::Decide(single, postgres_facts(1795307018)), msg);
    }

    #[test]
    fn start_time_from_proc() {
        check(Input::StartTime(PID_STAT, PROC_STAT, 100), "Ok(1795307018)");
        let odd_comm = "7 (post gres) x) S 1 7 7 0 -1 4194304 3770 495 0 0 1 2 0 0 20 0 1 0 250 222330880";
        check(Input::StartTime(odd_comm, PROC_STAT, 100), "Ok(1795306505)");
        check(Input::StartTime("7 (postgres) S 1", PROC_STAT, 100), "Err(MalformedPidStat)");
        check(Input::StartTime(PID_STAT, "cpu 1 2 3\n", 100), "Err(MissingBootTime)");
        check(Input::StartTime(PID_STAT, PROC_STAT, 0), "Err(ZeroTickRate)");
    }
}
