//! The only code that spawns PostgreSQL programs or sends signals (STYLE rule 5), and that looks at processes.
//!
//! This module owns: running helper programs (initdb, pg_basebackup, pg_rewind, pg_controldata) as the
//! PostgreSQL user; spawning `postgres -D` directly in its own process group so that it outlives raftgres;
//! re-emitting its stderr through tracing target `postgres`; the `StopMode` → signal table; liveness checks that
//! compare the process start time, so a recycled pid is never signalled; gathering [`ProcessFacts`]; and
//! running the operator's scripts (callbacks and hooks) in their own process groups, their output logged under
//! tracing target `script`. It must not decide anything about roles, configuration or when a script runs.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::postgres::files::Owner;
use crate::postgres::pidfile::{self, ProcessFacts};
use crate::postgres::supervisor::{PgError, StopMode};

/// How often an adopted postmaster (not our child, so no exit notification) is checked for liveness.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// How many stderr lines are kept for error messages.
const LOG_TAIL_LINES: usize = 30;

/// Environment variables that would change what a helper program connects to or how it authenticates.
const SCRUBBED_ENV: [&str; 10] = [
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSERVICE",
    "PGOPTIONS",
];

/// A running postmaster: its pid and the kernel's start time of that pid (seconds since the epoch).
/// Two values are the same process only if both match, which guards every signal against pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostmasterId {
    /// Process id.
    pub pid: u32,
    /// Start time from `/proc/<pid>/stat`, in seconds since the epoch.
    pub start_time: u64,
}

/// The last lines PostgreSQL wrote to stderr, kept for start-up error messages.
#[derive(Debug, Default)]
pub struct LogTail {
    lines: Mutex<VecDeque<String>>,
    closed: AtomicBool,
}

impl LogTail {
    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.len() == LOG_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// Forgets the lines of a previous postmaster.
    pub(crate) fn reset(&self) {
        self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
        self.closed.store(false, Ordering::SeqCst);
    }

    /// The kept lines, joined by newlines.
    pub(crate) fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        lines.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    /// Whether every writer of the stderr pipe has gone, so no more lines can arrive.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// The signal for each stop mode: the one place where this mapping exists (STYLE rule 15).
fn stop_signal(mode: StopMode) -> Signal {
    match mode {
        StopMode::Smart => Signal::SIGTERM,
        StopMode::Fast => Signal::SIGINT,
        StopMode::Immediate => Signal::SIGQUIT,
    }
}

/// Asks the postmaster to shut down in `mode`; [`PgError::NotRunning`] if `id` is no longer that process.
///
/// An immediate stop also sends SIGQUIT to each of the postmaster's children (backends, walsenders, the
/// checkpointer, …) and their process groups, which is what the postmaster itself sends them in an immediate
/// shutdown (each child leads a process group of its own, `setsid` in `InitPostmasterChild`), without depending on
/// the postmaster acting on its signal.
/// Failure scenario this closes (campaign seed 4107, finding 13 of docs/chaos.md): a primary's postmaster frozen
/// (SIGSTOP, a hung process) when its lease ran out; the fence's SIGQUIT stayed pending in the frozen postmaster,
/// and its backends went on committing on open connections after a replica had been promoted.
pub(crate) fn signal_stop(id: PostmasterId, mode: StopMode) -> Result<(), PgError> {
    send(id, stop_signal(mode))?;
    if mode == StopMode::Immediate {
        quit_children(id);
    }
    Ok(())
}

/// SIGQUIT to every child of the postmaster `id` (found in `/proc` by their parent pid), to its process group when
/// the child leads one.
fn quit_children(id: PostmasterId) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if pidfile::parent_pid(&stat) != Some(id.pid) {
            continue;
        }
        let Ok(pid) = pid_i32(child).map(Pid::from_raw) else { continue };
        let sent = match nix::unistd::getpgid(Some(pid)) {
            Ok(group) if group == pid => signal::killpg(group, Signal::SIGQUIT),
            _ => signal::kill(pid, Signal::SIGQUIT),
        };
        if let Err(errno) = sent {
            if errno != Errno::ESRCH {
                tracing::warn!(postmaster = id.pid, child, error = %errno, "failed to send SIGQUIT to a postmaster child");
            }
        }
    }
}

/// Asks the postmaster to reload its configuration files (SIGHUP).
pub(crate) fn signal_reload(id: PostmasterId) -> Result<(), PgError> {
    send(id, Signal::SIGHUP)
}

fn send(id: PostmasterId, sig: Signal) -> Result<(), PgError> {
    if !is_alive(id) {
        return Err(PgError::NotRunning);
    }
    match signal::kill(Pid::from_raw(pid_i32(id.pid)?), sig) {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => Err(PgError::NotRunning),
        Err(errno) => Err(PgError::Io {
            context: format!("send {sig} to postmaster {}", id.pid),
            cause: std::io::Error::from(errno),
        }),
    }
}

fn pid_i32(pid: u32) -> Result<i32, PgError> {
    i32::try_from(pid).map_err(|_| PgError::Config(format!("pid {pid} is out of range")))
}

/// Whether `id` is still that process: it exists, is not a zombie, and started when `id` says.
pub(crate) fn is_alive(id: PostmasterId) -> bool {
    pid_exists(id.pid) && process_start_time(id.pid) == Some(id.start_time)
}

/// `kill(pid, 0)` says the pid exists (EPERM: exists but belongs to someone else) and it is not a zombie.
fn pid_exists(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else { return false };
    let exists = match signal::kill(Pid::from_raw(raw), None) {
        Ok(()) | Err(Errno::EPERM) => true,
        Err(_) => false,
    };
    exists && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state == "Z")
}

/// The start time of `pid` in seconds since the epoch, or `None` if it is gone or unreadable.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let pid_stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (proc_stat, ticks) = boot_facts()?;
    pidfile::process_start_time(&pid_stat, proc_stat, *ticks).ok()
}

/// `/proc/stat` (for its `btime` line) and the clock tick rate; both are fixed until reboot, so read once.
fn boot_facts() -> Option<&'static (String, u64)> {
    static FACTS: OnceLock<Option<(String, u64)>> = OnceLock::new();
    FACTS
        .get_or_init(|| {
            let proc_stat = std::fs::read_to_string("/proc/stat").ok()?;
            let btime_line = proc_stat.lines().find(|line| line.starts_with("btime "))?.to_owned();
            let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
            Some((btime_line, u64::try_from(ticks).ok()?))
        })
        .as_ref()
}

/// What [`pidfile::adopt_decision`] needs to know about `pid`, read from `kill(pid, 0)` and `/proc`.
pub(crate) fn process_facts(pid: u32, data_dir: &Path) -> ProcessFacts {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let exe_name = std::fs::read_link(proc_dir.join("exe")).ok().map(|exe| exe.to_string_lossy().into_owned());
    let data_dir_matches = std::fs::read_link(proc_dir.join("cwd")).ok().map(|cwd| {
        let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        cwd == canonical
    });
    ProcessFacts {
        alive: pid_exists(pid),
        is_self: pid == std::process::id(),
        is_parent: pid == std::os::unix::process::parent_id(),
        process_start_time_epoch: process_start_time(pid),
        exe_name,
        data_dir_matches,
    }
}

/// Standard output and error of a helper program that succeeded.
#[derive(Debug)]
pub(crate) struct ProgramOutput {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `bin_dir/program args` as `owner` (or ourselves) with `env`, in `/`, and waits for it.
/// A non-zero exit is [`PgError::CommandFailed`] with the last lines of its output.
pub(crate) async fn run_program(
    bin_dir: &Path,
    program: &'static str,
    args: &[OsString],
    env: &[(&str, OsString)],
    owner: Option<&Owner>,
) -> Result<ProgramOutput, PgError> {
    let path = bin_dir.join(program);
    let mut command = command_as(&path, owner);
    command.args(args).envs(env.iter().map(|(key, value)| (*key, value))).stdout(Stdio::piped());
    command.stderr(Stdio::piped());
    tracing::debug!(program, ?args, "running");
    let output = command.output().await.map_err(crate::postgres::files::io_context("run", &path))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        return Ok(ProgramOutput { stdout, stderr });
    }
    Err(PgError::CommandFailed {
        program: program.to_owned(),
        status: describe_status(output.status),
        stderr_tail: last_lines(&format!("{stdout}{stderr}"), 15),
    })
}

/// A command for `path` with a scrubbed environment, stdin closed, running in `/` as `owner`.
fn command_as(path: &Path, owner: Option<&Owner>) -> Command {
    let mut command = Command::new(path);
    command.current_dir("/").stdin(Stdio::null());
    for key in SCRUBBED_ENV {
        command.env_remove(key);
    }
    if let Some(owner) = owner {
        // std calls setgroups(0) before setuid when root sets a uid, so no supplementary group of root leaks.
        command.uid(owner.uid).gid(owner.gid).env("HOME", &owner.home).env("USER", &owner.name);
        command.env("LOGNAME", &owner.name);
    }
    command
}

/// A postmaster this process spawned; the `Child` is kept only to reap it and learn its exit status.
pub(crate) struct Spawned {
    pub(crate) id: PostmasterId,
    pub(crate) child: Child,
}

/// Spawns `postgres -D <data_dir>` in its own process group (so a signal to raftgres's group, or raftgres
/// dying, does not reach it) and forwards its stderr, on `tasks`, to tracing target `postgres` and `log_tail`.
pub(crate) fn spawn_postmaster(
    bin_dir: &Path,
    data_dir: &Path,
    owner: Option<&Owner>,
    tasks: &TaskTracker,
    cancel: CancellationToken,
    log_tail: Arc<LogTail>,
) -> Result<Spawned, PgError> {
    let path = bin_dir.join("postgres");
    let mut command = command_as(&path, owner);
    command.arg("-D").arg(data_dir).stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0);
    let mut child = command.spawn().map_err(crate::postgres::files::io_context("spawn", &path))?;
    let pid = child.id().ok_or(PgError::NotRunning)?;
    // Read right after fork: the pid cannot have been reused yet because we have not reaped it.
    let start_time = process_start_time(pid).unwrap_or_default();
    let id = PostmasterId { pid, start_time };
    if let Some(stderr) = child.stderr.take() {
        let forward = forward_stderr(stderr, cancel, log_tail);
        tasks.spawn(forward.instrument(tracing::info_span!(parent: None, "pg", pid)));
    }
    tracing::info!(pid, data_dir = %data_dir.display(), "spawned postgres");
    Ok(Spawned { id, child })
}

/// Re-emits each stderr line until every writer has closed the pipe or `cancel` fires. After a cancel the read
/// end is closed, so PostgreSQL's later log writes fail with EPIPE (it ignores SIGPIPE) instead of blocking
/// on a full pipe: the same as when raftgres dies.
async fn forward_stderr(stderr: ChildStderr, cancel: CancellationToken, log_tail: Arc<LogTail>) {
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let next = tokio::select! {
            next = lines.next_line() => next,
            () = cancel.cancelled() => break,
        };
        match next {
            Ok(Some(line)) => {
                emit_log_line(&line);
                log_tail.push(line);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(target: "postgres", error = %e, "stderr pipe of postgres failed");
                break;
            }
        }
    }
    log_tail.closed.store(true, Ordering::SeqCst);
}

/// The tracing level for a PostgreSQL log line, from its severity word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineLevel {
    Error,
    Warn,
    Info,
    Debug,
}

fn line_level(line: &str) -> LineLevel {
    const SEVERITIES: [(&str, LineLevel); 6] = [
        ("PANIC:", LineLevel::Error),
        ("FATAL:", LineLevel::Warn),
        ("ERROR:", LineLevel::Warn),
        ("WARNING:", LineLevel::Warn),
        ("DEBUG", LineLevel::Debug),
        ("LOG:", LineLevel::Info),
    ];
    let first_match = SEVERITIES
        .iter()
        .filter_map(|(word, level)| line.find(word).map(|idx| (idx, *level)))
        .min_by_key(|(idx, _)| *idx);
    first_match.map_or(LineLevel::Info, |(_, level)| level)
}

fn emit_log_line(line: &str) {
    match line_level(line) {
        LineLevel::Error => tracing::error!(target: "postgres", "{line}"),
        LineLevel::Warn => tracing::warn!(target: "postgres", "{line}"),
        LineLevel::Info => tracing::info!(target: "postgres", "{line}"),
        LineLevel::Debug => tracing::debug!(target: "postgres", "{line}"),
    }
}

/// Waits until the postmaster `id` exits and returns its exit status when known (only for our own child),
/// or `None` in the outer option when `cancel` fires first. An own child is reaped here; an adopted one is
/// polled every 200 ms.
pub(crate) async fn wait_for_exit(
    id: PostmasterId,
    child: Option<Child>,
    cancel: CancellationToken,
) -> Option<Option<ExitStatus>> {
    if let Some(mut child) = child {
        return tokio::select! {
            status = child.wait() => Some(status.ok()),
            () = cancel.cancelled() => None,
        };
    }
    loop {
        if !is_alive(id) {
            return Some(None);
        }
        tokio::select! {
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = cancel.cancelled() => return None,
        }
    }
}

/// "exit code 1", "signal 9", for messages.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

/// The last `n` non-empty lines of `text`.
pub(crate) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A script that ran to its end (or was killed at its timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScriptRun {
    /// Its exit code; `None` when a signal ended it (its timeout included).
    pub(crate) code: Option<i32>,
    /// How it ended, in words (`exit code 1`, `signal 9`).
    pub(crate) status: String,
    /// The last lines of its output.
    pub(crate) output_tail: String,
}

/// Spawns the operator's script `argv` (the first element a path or a name on `PATH`) as `owner` with `env`, in
/// its own process group, so that it and every child it starts can be killed at once ([`kill_script`]). Its
/// stdout and stderr are piped: read them with [`log_script_output`].
pub(crate) fn spawn_script(argv: &[String], env: &[(&str, OsString)], owner: Option<&Owner>) -> Result<Child, PgError> {
    let (program, args) = argv.split_first().ok_or_else(|| PgError::Config("empty script command".into()))?;
    let mut command = command_as(Path::new(program), owner);
    command.args(args).envs(env.iter().map(|(key, value)| (*key, value)));
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(false);
    command.spawn().map_err(crate::postgres::files::io_context("run script", Path::new(program)))
}

/// SIGKILLs the process group `pgid` of a script started by [`spawn_script`] (the script and its children).
pub(crate) fn kill_script(pgid: u32) {
    if let Ok(raw) = pid_i32(pgid) {
        // ESRCH (already gone) is the usual answer and needs no word.
        let _ = signal::killpg(Pid::from_raw(raw), Signal::SIGKILL);
    }
}

/// A running script's output readers: each line it writes is logged under tracing target `script` (decoded
/// lossily, so bytes that are not UTF-8 neither stop the reading nor kill the script with SIGPIPE).
pub(crate) struct ScriptOutput {
    readers: Vec<tokio::task::JoinHandle<()>>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

/// How long the output of a script that exited is still read: a daemon it started may hold the pipes open for
/// ever, and the script is over when it exits, not when its output closes.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Starts reading the stdout and stderr of a script spawned by [`spawn_script`].
pub(crate) fn capture_output(child: &mut Child, name: &str) -> ScriptOutput {
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(read_lines(out, name.to_owned(), tail.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(read_lines(err, name.to_owned(), tail.clone())));
    }
    ScriptOutput { readers, tail }
}

impl ScriptOutput {
    /// Once the script exited: the last 15 lines it wrote, reading on for at most [`OUTPUT_GRACE`].
    pub(crate) async fn finish(self) -> String {
        let deadline = tokio::time::Instant::now() + OUTPUT_GRACE;
        for mut reader in self.readers {
            if tokio::time::timeout_at(deadline, &mut reader).await.is_err() {
                reader.abort();
            }
        }
        let tail = self.tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

async fn read_lines<R: tokio::io::AsyncRead + Unpin>(reader: R, name: String, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_owned();
                tracing::info!(target: "script", script = name, "{line}");
                let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                tail.push_back(line);
                if tail.len() > 15 {
                    tail.pop_front();
                }
            }
        }
    }
}

/// Runs the script `argv` until it exits, or kills its process group at `timeout`; logs its output.
pub(crate) async fn run_script(
    argv: &[String],
    env: &[(&str, OsString)],
    owner: Option<&Owner>,
    timeout: Duration,
) -> Result<ScriptRun, PgError> {
    let name = argv.first().cloned().unwrap_or_default();
    let mut child = spawn_script(argv, env, owner)?;
    let pgid = child.id();
    let output = capture_output(&mut child, &name);
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let status = match waited {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(crate::postgres::files::io_context("wait for script", Path::new(&name))(e)),
        Err(_) => {
            if let Some(pgid) = pgid {
                kill_script(pgid);
            }
            let _ = child.wait().await;
            let output_tail = output.finish().await;
            return Ok(ScriptRun { code: None, status: format!("killed after {timeout:?}"), output_tail });
        }
    };
    let output_tail = output.finish().await;
    Ok(ScriptRun { code: status.code(), status: describe_status(status), output_tail })
}

/// The small guard program installed next to raftgres (`src/bin/raftgres-guard.rs`).
pub const GUARD_BINARY: &str = "raftgres-guard";

/// PURE: the guard to run for the raftgres binary `raftgres`: `raftgres-guard` beside it when `exists` says it is
/// there (a few MiB resident instead of a second copy of raftgres' pages), else `raftgres guard`.
pub fn guard_command(raftgres: &Path, exists: impl Fn(&Path) -> bool) -> (std::path::PathBuf, Vec<&'static str>) {
    let small = raftgres.with_file_name(GUARD_BINARY);
    if exists(&small) {
        (small, Vec::new())
    } else {
        (raftgres.to_path_buf(), vec!["guard"])
    }
}

/// Starts the fence guard (`raftgres-guard`, else `raftgres guard`) as its own process group, so it outlives a
/// killed or frozen raftgres; it reads `file` and stops the postmaster when the lease written there
/// runs out, and removes the floating address of the `vip` section then. Its messages go to `file` + `.log`.
/// Returns its pid and the program it runs.
pub fn spawn_guard(file: &Path, vip: Option<&crate::config::VipConfig>) -> Result<(u32, std::path::PathBuf), PgError> {
    use std::os::unix::process::CommandExt;
    let raftgres =
        std::env::current_exe().map_err(|cause| PgError::Io { context: "find the raftgres binary".into(), cause })?;
    let (binary, subcommand) = guard_command(&raftgres, |path| path.is_file());
    let log_path = file.with_extension("log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|cause| PgError::Io { context: format!("open {}", log_path.display()), cause })?;
    let log_err = log.try_clone().map_err(|cause| PgError::Io { context: "duplicate the guard log".into(), cause })?;
    let mut command = std::process::Command::new(&binary);
    command.args(subcommand).arg("--file").arg(file).arg("--parent").arg(std::process::id().to_string());
    if let Some(vip) = vip {
        command.arg("--vip").arg(vip.address.to_string()).arg("--vip-interface").arg(&vip.interface);
    }
    let child = command
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|cause| PgError::Io { context: format!("spawn the fence guard {}", binary.display()), cause })?;
    Ok((child.id(), binary))
}

/// Stops the postmaster `id` at once (SIGQUIT) if it is still that process; for the fence guard.
pub fn fence_postmaster(id: PostmasterId) -> Result<bool, PgError> {
    if !is_alive(id) {
        return Ok(false);
    }
    signal_stop(id, StopMode::Immediate)?;
    Ok(true)
}

/// Whether the raftgres process `pid` is alive (the guard's parent check).
pub fn pid_alive(pid: u32) -> bool {
    pid_exists(pid)
}

/// PURE: PostgreSQL refused to start because a socket lock file names a process that still exists.
pub(crate) fn socket_lock_held(log_tail: &str) -> bool {
    log_tail.contains("lock file") && log_tail.contains("already exists")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_small_guard_beside_raftgres_is_preferred_and_raftgres_guard_is_the_fallback() {
        let raftgres = Path::new("/usr/local/bin/raftgres");
        let (program, args) = guard_command(raftgres, |path| path == Path::new("/usr/local/bin/raftgres-guard"));
        assert_eq!((program.as_path(), args), (Path::new("/usr/local/bin/raftgres-guard"), vec![]));
        let (program, args) = guard_command(raftgres, |_| false);
        assert_eq!((program.as_path(), args), (raftgres, vec!["guard"]));
    }

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[tokio::test]
    async fn a_script_reports_its_exit_code_and_output() {
        let run =
            run_script(&argv(&["/bin/sh", "-c", "echo one; echo two >&2; exit 3"]), &[], None, Duration::from_secs(30))
                .await
                .expect("run /bin/sh");
        assert_eq!(run.code, Some(3));
        assert!(run.output_tail.contains("one") && run.output_tail.contains("two"), "{run:?}");
    }

    #[tokio::test]
    async fn a_script_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pid_file = dir.path().join("child.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let run = run_script(&argv(&["/bin/sh", "-c", &script]), &[], None, Duration::from_millis(500))
            .await
            .expect("run /bin/sh");
        assert_eq!(run.code, None, "{run:?}");
        let child: i32 = std::fs::read_to_string(&pid_file).expect("the child's pid").trim().parse().expect("a pid");
        // The grandchild got SIGKILL with its process group; once reaped by init its pid is gone.
        let mut gone = false;
        for _ in 0..100 {
            let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            if state.is_empty() || state.split(' ').nth(2) == Some("Z") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone, "the script's child {child} outlived the timeout");
    }

    #[tokio::test]
    async fn a_script_is_over_when_it_exits_even_if_a_child_holds_its_output() {
        // A daemon started by the script keeps the pipe open; the bytes are not UTF-8.
        let script = "sleep 5 & printf 'caf\\351\\n'; exit 0";
        let run = run_script(&argv(&["/bin/sh", "-c", script]), &[], None, Duration::from_secs(30))
            .await
            .expect("run /bin/sh");
        assert_eq!(run.code, Some(0), "{run:?}");
        assert_eq!(run.output_tail, "caf\u{fffd}", "{run:?}");
    }

    #[tokio::test]
    async fn a_missing_script_is_an_error_naming_it() {
        let err = run_script(&argv(&["/nonexistent/hook"]), &[], None, Duration::from_secs(5)).await;
        let text = format!("{:#}", err.expect_err("no such file"));
        assert!(text.contains("/nonexistent/hook"), "{text}");
    }

    #[test]
    fn a_just_killed_postmasters_socket_lock_is_recognised() {
        let tail = "FATAL:  lock file \"/tmp/.s.PGSQL.37577.lock\" already exists\n\
                    HINT:  Is another postmaster (PID 18846) using socket file \"/tmp/.s.PGSQL.37577\"?";
        assert!(socket_lock_held(tail));
        assert!(!socket_lock_held("FATAL:  data directory \"/data\" has invalid permissions"));
    }

    #[test]
    fn log_levels_follow_the_severity_word() {
        assert_eq!(line_level("2024-01-01 00:00:00 UTC [1] LOG:  database system is ready"), LineLevel::Info);
        assert_eq!(line_level("2024-01-01 00:00:00 UTC [1] FATAL:  role \"x\" does not exist"), LineLevel::Warn);
        assert_eq!(line_level("... [1] PANIC:  could not write"), LineLevel::Error);
        assert_eq!(line_level("... [1] LOG:  statement: SELECT 'ERROR:'"), LineLevel::Info);
        assert_eq!(line_level("\tcontinuation"), LineLevel::Info);
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id();
        let start_time = process_start_time(pid).expect("/proc is readable in tests");
        assert!(is_alive(PostmasterId { pid, start_time }));
        assert!(!is_alive(PostmasterId { pid, start_time: start_time + 100 }));
        let facts = process_facts(pid, Path::new("/nonexistent"));
        assert!(facts.alive && facts.is_self && facts.data_dir_matches == Some(false));
    }

    #[test]
    fn last_lines_skips_blank_lines() {
        assert_eq!(last_lines("a\n\nb\nc\n\n", 2), "b\nc");
        assert_eq!(last_lines("", 2), "");
    }
}
