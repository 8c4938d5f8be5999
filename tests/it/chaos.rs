//! The chaos harness end to end, as `raftgres chaos` subprocesses: a short synchronous-mode run
//! must find 0 violations, and a run with deliberately broken nodes (`--break no-demote`: a
//! primary cut off from Raft never stops itself) must find a split brain. The two runs take
//! turns (a lock), so at most one chaos cluster runs at a time.
//!
//! The broken run needs a binary built with the `chaos-break` feature (the default build ignores
//! the broken mode): `scripts/test` builds one and copies it next to the binary under test as
//! `raftgres-chaos-break`; [`BREAK_BINARY_ENV`] names another. Without it that test skips and
//! says why, except under `CI=true`, where it fails.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Output;
use std::sync::Mutex;

use crate::harness::*;

/// One chaos cluster at a time: six PostgreSQL and raftgres processes are enough for two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Names a raftgres built with the `chaos-break` feature, instead of `raftgres-chaos-break` next to
/// the binary under test.
const BREAK_BINARY_ENV: &str = "CHAOS_BREAK_BINARY";

/// The raftgres built with the `chaos-break` feature, or `None` with a printed reason (a failure
/// under `CI=true`).
fn chaos_break_binary(test: &str) -> Option<PathBuf> {
    let path = match std::env::var_os(BREAK_BINARY_ENV) {
        Some(path) => PathBuf::from(path),
        None => binary().with_file_name("raftgres-chaos-break"),
    };
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "{} is missing: the broken mode needs a build with the `chaos-break` feature; scripts/test builds it, or: \
         cargo build --features chaos-break --bin raftgres && cp target/debug/raftgres target/debug/raftgres-chaos-break \
         (or set {BREAK_BINARY_ENV})",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: {why}");
    println!("skipping {test}: {why}");
    None
}

fn chaos(program: &Path, args: &[&str]) -> (Output, String) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::Builder::new().prefix("rgchaos").tempdir_in("/tmp").expect("create temp dir");
    let output = Command::new(program)
        .arg("chaos")
        .args(args)
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run raftgres chaos");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = format!("{stdout}\n--- stderr ---\n{}", String::from_utf8_lossy(&output.stderr));
    (output, report)
}

/// The `N` of the last line, `violations: N`.
fn violations(report: &str, stdout: &[u8]) -> usize {
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().last().unwrap_or_default();
    let n = last.strip_prefix("violations: ").unwrap_or_else(|| panic!("the last line is `violations: N`\n{report}"));
    n.parse().unwrap_or_else(|_| panic!("a count after `violations: `\n{report}"))
}

#[test]
fn a_short_sync_chaos_run_finds_no_violation() {
    if !pg_available("a_short_sync_chaos_run_finds_no_violation") {
        return;
    }
    // Every fault kind, `restart-all` included (a simultaneous restart once left the replicas
    // that were ahead of the race winner stuck; they are now rewound).
    let args = ["--duration", "60", "--seed", "11", "--mode", "sync", "--clients", "2"];
    let (output, report) = chaos(&binary(), &args);
    assert_eq!(violations(&report, &output.stdout), 0, "{report}");
    assert!(output.status.success(), "exit status 0 with no violation\n{report}");
    assert!(report.contains("total"), "the summary lists the faults\n{report}");
}

#[test]
fn a_chaos_run_with_broken_demotion_finds_a_split_brain() {
    let test = "a_chaos_run_with_broken_demotion_finds_a_split_brain";
    if !pg_available(test) {
        return;
    }
    let Some(program) = chaos_break_binary(test) else { return };
    let args = [
        "--duration",
        "20",
        "--seed",
        "3",
        "--faults",
        "isolate-raft",
        "--break",
        "no-demote",
        "--clients",
        "2",
        "--recovery-timeout",
        "30",
        "--liveness-bound",
        "20",
    ];
    let (output, report) = chaos(&program, &args);
    assert!(violations(&report, &output.stdout) > 0, "the checkers catch the broken nodes\n{report}");
    assert!(!output.status.success(), "a non-zero exit status on violations\n{report}");
    assert!(report.contains("VIOLATION [single primary]"), "a split brain is reported\n{report}");
}

/// `--net netns`: every node in a network namespace of its own, at the shipped timing defaults, with the
/// whole-node network faults (isolation, a split with the clients on the minority side, one-way cuts, loss,
/// flapping) among every other kind. Needs root, iproute2 and iptables (CI has them).
#[test]
fn a_short_netns_chaos_run_at_the_defaults_finds_no_violation() {
    let test = "a_short_netns_chaos_run_at_the_defaults_finds_no_violation";
    if !pg_available(test) {
        return;
    }
    if let Err(why) = raftgres::chaos::netns::Lab::available() {
        println!("skipping {test}: {why}");
        return;
    }
    let args = ["--net", "netns", "--duration", "90", "--seed", "5", "--mode", "sync", "--clients", "2"];
    let (output, report) = chaos(&binary(), &args);
    assert_eq!(violations(&report, &output.stdout), 0, "{report}");
    assert!(output.status.success(), "exit status 0 with no violation\n{report}");
    assert!(report.contains("net netns"), "the run says it used namespaces\n{report}");
    assert!(report.contains("(defaults)"), "the run used the shipped timing\n{report}");
}

#[test]
fn the_default_build_refuses_a_broken_chaos_run_up_front() {
    if cfg!(feature = "chaos-break") {
        println!(
            "skipping the_default_build_refuses_a_broken_chaos_run_up_front: this build has the `chaos-break` feature"
        );
        return;
    }
    let (output, report) = chaos(&binary(), &["--break", "no-demote", "--duration", "5"]);
    assert!(!output.status.success(), "a failure\n{report}");
    assert!(report.contains("cargo build --features chaos-break"), "the error says how to build one\n{report}");
    assert!(!report.contains("chaos: cluster in"), "no cluster was started\n{report}");
}
