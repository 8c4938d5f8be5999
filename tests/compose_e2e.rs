//! Runs `tests/compose_e2e.sh`, the end-to-end test of `docker-compose.yml`: the image build, a three-node
//! cluster behind HAProxy, `docker kill` and `docker network disconnect` of the primary, `compose down -v`.
//!
//! The script does the work and decides whether to skip: it prints why and exits 77 when no Docker engine
//! answers, Compose is missing, the base image cannot be made, or `RAFTGRES_SKIP_COMPOSE_E2E=1`. This file
//! only bounds it in time (`RAFTGRES_E2E_TIMEOUT` seconds, default 1200, plus a grace for the script's own
//! clean-up) and turns its exit status into the test result. It never starts containers itself.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::killpg;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The script's exit status for "skipped", as in automake.
const SKIPPED: i32 = 77;
/// The overall bound when `RAFTGRES_E2E_TIMEOUT` is unset.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1200);
/// How long the script may take to finish after its own bound: its waits end at the bound, then
/// `compose down -v` stops three nodes with up to 30 s each.
const OWN_CLEANUP: Duration = Duration::from_secs(150);
/// After SIGTERM, how long the script's EXIT trap may run `compose down -v` before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(150);

#[test]
fn compose_cluster_survives_kill_and_partition() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let timeout = std::env::var("RAFTGRES_E2E_TIMEOUT")
        .ok()
        .and_then(|text| text.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let mut command = Command::new("bash");
    command
        .arg(root.join("tests/compose_e2e.sh"))
        .current_dir(root)
        .env("RAFTGRES_E2E_TIMEOUT", timeout.as_secs().to_string())
        // Its own process group, so a timeout stops the script and every docker command it runs.
        .process_group(0);
    if std::env::var_os("CARGO").is_none() {
        if let Some(cargo) = option_env!("CARGO") {
            command.env("CARGO", cargo);
        }
    }
    let mut child = command.spawn().expect("spawn bash tests/compose_e2e.sh");
    let pgid = Pid::from_raw(i32::try_from(child.id()).expect("a pid fits in i32"));
    let (done_tx, done_rx) = mpsc::channel::<std::io::Result<ExitStatus>>();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = match done_rx.recv_timeout(timeout + OWN_CLEANUP) {
        Ok(status) => status.expect("wait for tests/compose_e2e.sh"),
        Err(_) => {
            eprintln!("compose e2e: over {} s; sending SIGTERM so it runs compose down -v", timeout.as_secs());
            let _ = killpg(pgid, Signal::SIGTERM);
            if done_rx.recv_timeout(KILL_GRACE).is_err() {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
            panic!("tests/compose_e2e.sh took longer than {} s", (timeout + OWN_CLEANUP).as_secs());
        }
    };
    match status.code() {
        Some(0) => {}
        Some(SKIPPED) => eprintln!("skipping: tests/compose_e2e.sh said why above"),
        _ => panic!("tests/compose_e2e.sh failed ({status}); its output is above"),
    }
}
