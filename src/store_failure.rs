//! What a node does when its Raft store fails (a full or failing disk under `raft.data_dir`).
//!
//! openraft stops for good after a storage error, and sled keeps the first I/O error it meets and
//! refuses every later write, so the replica cannot heal in place: it has to be opened afresh. The
//! node stays up meanwhile (the fence still stops a primary's PostgreSQL when its lease runs out,
//! which it will, with no Raft to renew it), waits with a growing pause until the directory takes
//! a test write again, and then restarts its own process in place (`exec` of the same binary with
//! the same arguments: same pid, so systemd and the fence guard see nothing but a restart, and the
//! new process adopts the running PostgreSQL as after any restart of raftgres).
//! etcd exits on the same condition and leaves the restart to systemd; restarting in place avoids
//! burning through the unit's start limit while the disk stays full.

use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::error;
use tracing::info;
use tracing::warn;

/// How much a test write puts into the Raft directory before raftgres restarts: room for sled's
/// next segments and a snapshot of a small cluster.
const PROBE_BYTES: usize = 8 << 20;
/// First and longest pause between two test writes.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// Waits for a fatal error of `raft`; then for `dir` to take writes again; then cancels `restart`.
/// Returns early (and does nothing) when `shutdown` is cancelled.
pub async fn watch(raft: raft::RaftNode, dir: PathBuf, shutdown: CancellationToken, restart: CancellationToken) {
    let fatal = tokio::select! {
        fatal = raft.fatal_error() => fatal,
        _ = shutdown.cancelled() => return,
    };
    error!(
        dir = %dir.display(),
        "the raft store failed: {fatal}; raftgres restarts itself once the directory takes writes again"
    );
    let mut pause = FIRST_PAUSE;
    loop {
        let probe_dir = dir.clone();
        match tokio::task::spawn_blocking(move || probe(&probe_dir)).await {
            Ok(Ok(())) => break,
            Ok(Err(e)) => {
                warn!(dir = %dir.display(), "the raft directory does not take writes yet: {e}; next try in {pause:?}")
            }
            Err(e) => warn!("the test write did not finish: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => return,
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
    info!(dir = %dir.display(), "the raft directory takes writes again; restarting raftgres in place");
    restart.cancel();
}

/// Writes, fsyncs and removes a [`PROBE_BYTES`] file in `dir`.
fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("raftgres-write-probe");
    let res = (|| {
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let removed = std::fs::remove_file(&path);
    res?;
    removed
}

/// Replaces this process with a fresh start of the same binary and arguments; returns only on
/// failure. For `main` alone, the one place that ends the process.
pub fn restart_in_place() -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    let mut args = std::env::args_os();
    let _program = args.next();
    std::process::Command::new(exe).args(args).exec()
}
