//! Process plumbing of a local cluster: spawning a program with its output appended to a log file,
//! signals by pid, pid files, and finding the postmaster a node left behind.
//!
//! Why this is not `postgres::process` (the only module that spawns or signals inside a node): a
//! local cluster is a demo and test harness *outside* the nodes. It spawns whole `raftgres run`
//! processes and HAProxy, never PostgreSQL; it signals a postmaster only to simulate a crash or to
//! clean up after a node it killed, and it checks `/proc/<pid>/cwd` first so a stale pid file can
//! never make it signal an unrelated process.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitStatus;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::process::Command;
use tokio::time::Instant;

/// How often the exit of a process that is not our child is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Spawns `command` in its own process group (a Ctrl-C in the terminal reaches only the demo,
/// which then stops the nodes in order), stdin closed, stdout and stderr appended to `log_path`.
/// The child is SIGKILLed if its handle is dropped while it runs.
pub fn spawn_logged(mut command: Command, log_path: &Path) -> anyhow::Result<Child> {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(log_path)
        .with_context(|| format!("open {}", log_path.display()))?;
    let log_err = log.try_clone().with_context(|| format!("open {}", log_path.display()))?;
    command.stdin(Stdio::null()).stdout(log).stderr(log_err).process_group(0).kill_on_drop(true);
    let program = command.as_std().get_program().to_string_lossy().into_owned();
    command.spawn().with_context(|| format!("start {program}"))
}

fn pid_of(pid: u32) -> anyhow::Result<Pid> {
    let raw = i32::try_from(pid).with_context(|| format!("pid {pid} is out of range"))?;
    Ok(Pid::from_raw(raw))
}

/// Sends `signal` to `pid`; a process that is already gone is not an error (returns false).
pub fn send(pid: u32, signal: Signal) -> anyhow::Result<bool> {
    match nix::sys::signal::kill(pid_of(pid)?, signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("send {signal} to pid {pid}")),
    }
}

/// Sends `signal` to the process group led by `pid` when `pid` leads one (a postmaster and its
/// backends), else to `pid` alone.
pub fn send_group(pid: u32, signal: Signal) -> anyhow::Result<bool> {
    let target = pid_of(pid)?;
    if nix::unistd::getpgid(Some(target)) != Ok(target) {
        return send(pid, signal);
    }
    match nix::sys::signal::killpg(target, signal) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("send {signal} to process group {pid}")),
    }
}

/// Whether `pid` exists and is not a zombie (a postmaster orphaned by a killed node may stay a
/// zombie when PID 1 does not reap, as in many containers).
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) S …`: comm may contain spaces and parentheses, the state follows the last `)`.
    let state = stat.rfind(')').and_then(|idx| stat[idx + 1..].trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X' | 'x'))
}

/// Waits until `pid` (not our child) is gone; true if it went within `timeout`.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    true
}

/// Waits for our child to exit; `None` if it still runs after `timeout`.
pub async fn wait_child(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => Ok(Some(status.context("wait for the process to exit")?)),
        Err(_elapsed) => Ok(None),
    }
}

/// The pid on the first line of a pid file (raftgres.pid, postmaster.pid); `None` if there is no file.
pub fn read_pid_file(path: &Path) -> anyhow::Result<Option<u32>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let first = text.lines().next().unwrap_or_default().trim();
    let pid = first.parse().with_context(|| format!("parse the pid {first:?} in {}", path.display()))?;
    Ok(Some(pid))
}

/// Writes `pid` and a newline to `path`.
pub fn write_pid_file(path: &Path, pid: u32) -> anyhow::Result<()> {
    fs::write(path, format!("{pid}\n")).with_context(|| format!("write {}", path.display()))
}

/// Removes a pid file; a missing one is fine.
pub fn remove_pid_file(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).with_context(|| format!("remove {}", path.display())),
        _ => Ok(()),
    }
}

/// The live process recorded in `pid_path` whose command line mentions `marker` (a node's config
/// path), so a recycled pid is never mistaken for a node.
pub fn live_process_from_pid_file(pid_path: &Path, marker: &Path) -> Option<u32> {
    let pid = read_pid_file(pid_path).ok().flatten()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let marker = marker.to_string_lossy();
    let mentions = cmdline.split(|b| *b == 0).any(|arg| String::from_utf8_lossy(arg) == marker);
    (mentions && is_alive(pid)).then_some(pid)
}

/// The running postmaster of `data_dir`: the pid in `postmaster.pid`, alive, and working in
/// `data_dir` (a postmaster's current directory is its data directory).
pub fn postmaster_of(data_dir: &Path) -> Option<u32> {
    let pid = read_pid_file(&data_dir.join("postmaster.pid")).ok().flatten()?;
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    let data_dir = fs::canonicalize(data_dir).ok()?;
    (cwd == data_dir && is_alive(pid)).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive() {
        assert!(is_alive(std::process::id()));
    }

    #[test]
    fn a_missing_pid_file_reads_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_pid_file(&dir.path().join("none.pid")).expect("read"), None);
    }

    #[test]
    fn the_first_line_of_a_pid_file_is_the_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("postmaster.pid");
        fs::write(&path, "4242\n/var/lib/postgresql/data\n").expect("write");
        assert_eq!(read_pid_file(&path).expect("read"), Some(4242));
    }
}
