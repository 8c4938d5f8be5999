//! Errors that say what to do, and no hot loops (#15):
//! - `raftgres demo` under a parent directory the PostgreSQL user cannot enter (mode 0700, as root's home and
//!   `mktemp -d` are) stops at once naming the directory and the `chmod` that fixes it (before, every node
//!   retried its bootstrap about 35 times a second and the demo never said why);
//! - a bootstrap that keeps failing (initdb refuses an option) is retried after a growing pause, and every node
//!   reports it: Patroni's state `initdb failed`, `failing` with the error in `GET /patroni`, a line in
//!   `raftgres list`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use serde_json::Value;
use tokio::time::Instant;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_under_a_private_parent_directory_stops_naming_the_directory_and_the_fix() {
    if !pg_available("demo_under_a_private_parent_directory_stops_naming_the_directory_and_the_fix") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP demo_under_a_private_parent_directory…: PostgreSQL runs as another user only under root");
        return;
    }
    let parent = tempfile::Builder::new().prefix("rgit-private").tempdir_in("/tmp").expect("create temp dir");
    // 0700 and owned by root, as root's home and `mktemp -d` are: the postgres user cannot enter it.
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
    std::fs::set_permissions(parent.path(), private).expect("chmod 0700");
    let dir = parent.path().join("demo");
    let ports = [free_port_block(3), free_port_block(3), free_port_block(3), free_port_block(3)];
    let mut child = tokio::process::Command::new(binary())
        .arg("demo")
        .arg("--dir")
        .arg(&dir)
        .args(["--pg-port", &ports[0].to_string(), "--api-port", &ports[1].to_string()])
        .args(["--raft-port", &ports[2].to_string(), "--primary-port", &ports[3].to_string()])
        .args(["--replica-port", &(ports[3] + 1).to_string(), "--stats-port", &(ports[3] + 2).to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start raftgres demo");
    let stopped = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    if stopped.is_err() {
        let _ = child.start_kill();
    }
    let out = child.wait_with_output().await.expect("wait for raftgres demo");
    assert!(
        stopped.is_ok(),
        "the demo neither came up nor stopped within 30 s:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the demo must refuse to start:\n{stderr}");
    let fix = format!("run: chmod o+x {}", parent.path().display());
    assert!(stderr.contains(&fix), "the error names the directory and the fix ({fix}):\n{stderr}");
    assert!(stderr.contains("user postgres cannot enter this directory"), "{stderr}");
}

/// The `bootstrap failed` lines in a node's log.
fn bootstrap_failures(log: &str) -> usize {
    log.lines().filter(|line| line.contains("bootstrap failed; cleaning up")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_bootstrap_is_retried_after_a_growing_pause_and_reported() {
    if !pg_available("a_failing_bootstrap_is_retried_after_a_growing_pause_and_reported") {
        return;
    }
    let (mut spec, dir) = spec();
    // initdb refuses an unknown encoding: every bootstrap fails the same way.
    for node in 1..=3 {
        spec.node_overrides.insert(node, json!({"bootstrap": {"initdb": [{"encoding": "NO_SUCH_ENCODING"}]}}));
    }
    let cluster = raftgres::demo::cluster::LocalCluster::generate(spec).expect("generate the cluster");
    cluster.start_all().expect("start the nodes");
    let c = &cluster;
    let _logs = KeepLogsOnPanic(c);
    let started = Instant::now();
    let http = reqwest::Client::new();
    // Some node reports its third failure in a row: it waited 5 s and 10 s in between.
    let (node, status) = eventually(Duration::from_secs(120), "a node reports 3 failed bootstraps", || {
        let http = http.clone();
        async move {
            for node in 1..=3 {
                let Ok(res) = http.get(format!("{}/patroni", c.api(node))).send().await else { continue };
                let Ok(status) = res.json::<Value>().await else { continue };
                if status["failing"]["attempts"].as_u64().is_some_and(|n| n >= 3) {
                    return Some((node, status));
                }
            }
            None
        }
    })
    .await;
    let elapsed = started.elapsed().as_secs();
    assert_eq!(status["state"], "initdb failed", "{status}");
    assert_eq!(status["failing"]["action"], "bootstrap", "{status}");
    let error = status["failing"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("initdb") && error.contains("NO_SUCH_ENCODING"), "the cause is kept: {error}");
    // A failed bootstrap waits at least 5 s before the next one, so no node fails more often than that.
    let logs_dir = c.dir().to_path_buf();
    for n in 1..=3 {
        let log = std::fs::read_to_string(logs_dir.join(format!("node{n}/raftgres.log"))).unwrap_or_default();
        let failures = bootstrap_failures(&log);
        let most = 2 + elapsed as usize / 5;
        assert!(failures <= most, "node{n} failed {failures} bootstraps in {elapsed} s (at most {most} allowed)");
    }
    // `raftgres list` says who fails and why.
    let out = tokio::process::Command::new(binary())
        .args(["list", "--url", &c.api(node)])
        .output()
        .await
        .expect("run raftgres list");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("node{node}: bootstrap failing (")), "{text}");
    assert!(text.contains("NO_SUCH_ENCODING"), "{text}");
    let _ = c.stop_all().await;
    drop(dir);
}
