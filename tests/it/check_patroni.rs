//! A real client of Patroni's REST API: Dalibo's `check_patroni` 2.2.0 (the Nagios plugin, from the Python
//! package index) runs every one of its services against a live three-node cluster, in a healthy state,
//! paused, with a scheduled switchover and restart, with a pending restart, in sync and quorum modes, with a
//! lagging replica (its walreceiver stopped) and after a switchover. Each answer is asserted against the
//! state the test put the cluster in.
//!
//! `scripts/test` installs the plugin into `.venv/check-patroni` (or set `CHECK_PATRONI` to its path). Without
//! it the test says so and skips, except under `CI=true`, where a missing plugin is a failure.
//!
//! With `--nocapture` the test prints one line per answer: service, state, node, exit code and the plugin's
//! first output line (the table of the #15 closing note).

use std::path::PathBuf;
use std::time::Duration;

use raftgres::demo::cluster::LocalCluster;
use serde_json::json;
use serde_json::Value;

use crate::harness::*;

/// Nagios exit codes.
const OK: i32 = 0;
const WARNING: i32 = 1;
const CRITICAL: i32 = 2;

/// The Patroni REST API version raftgres implements (`patroni.version`).
const PATRONI_VERSION: &str = "4.1.4";

/// How long a state may take to show in the plugin's answer.
const SETTLE: Duration = Duration::from_secs(60);

/// The plugin's executable: `CHECK_PATRONI`, else `.venv/check-patroni/bin/check_patroni` in the checkout.
fn plugin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHECK_PATRONI") {
        return Some(PathBuf::from(path));
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/check-patroni/bin/check_patroni");
    path.exists().then_some(path)
}

/// The plugin and where its answers go.
struct Plugin {
    program: PathBuf,
    /// Where `cluster_config_has_changed` and `node_tl_has_changed` keep their state.
    state_dir: tempfile::TempDir,
    table: Vec<String>,
}

impl Plugin {
    /// Runs `service args…` against `endpoints`; returns the exit code and the output.
    async fn run(&self, endpoints: &[String], service: &str, args: &[&str]) -> (i32, String) {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("--timeout").arg("5");
        for endpoint in endpoints {
            cmd.arg("-e").arg(endpoint);
        }
        cmd.arg(service).args(args).current_dir(self.state_dir.path()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("check_patroni {service} did not answer within 30 s"))
            .unwrap_or_else(|e| panic!("run {}: {e}", self.program.display()));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    /// Waits until `service` answers `code` (the cluster may take a few cycles to show a state), records the
    /// answer in the table, and fails with the last output otherwise.
    async fn expect(
        &mut self,
        c: &LocalCluster,
        state: &str,
        target: Target,
        service: &str,
        args: &[&str],
        code: i32,
    ) -> String {
        let (endpoints, who) = match target {
            Target::Cluster => ((1..=c.n_nodes()).map(|i| c.api(i)).collect::<Vec<_>>(), "all".to_string()),
            Target::Node(i) => (vec![c.api(i)], format!("node{i}")),
        };
        let deadline = tokio::time::Instant::now() + SETTLE;
        loop {
            let (got, text) = self.run(&endpoints, service, args).await;
            if got == code {
                let first = text.lines().next().unwrap_or_default().to_string();
                let line = format!("{service} {} | {state} | {who} | {} | {first}", args.join(" "), name(got));
                println!("{line}");
                self.table.push(line);
                return text;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "check_patroni {service} {args:?} on {who} in state '{state}': expected {}, got {} ({got}):\n{text}\n{}",
                    name(code),
                    name(got),
                    logs(c)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Which endpoints a service is given.
#[derive(Clone, Copy)]
enum Target {
    /// Every node (the cluster services).
    Cluster,
    /// One node, by index (1-based).
    Node(usize),
}

fn name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "WARNING",
        2 => "CRITICAL",
        3 => "UNKNOWN",
        _ => "?",
    }
}

/// Sends a REST request and returns (status, body); panics when the node does not answer.
async fn rest(
    c: &LocalCluster,
    node: usize,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let http = reqwest::Client::new();
    let mut req = http.request(method, format!("{}{path}", c.api(node))).timeout(Duration::from_secs(10));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("{path} on node{node}: {e}"));
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

/// PATCH /config with `body`, asserting success.
async fn patch_config(c: &LocalCluster, node: usize, body: Value) {
    let (status, text) = rest(c, node, reqwest::Method::PATCH, "/config", Some(body)).await;
    assert_eq!(status, 200, "PATCH /config: {text}");
}

/// The node indexes that answer `path` with 200.
async fn answering(c: &LocalCluster, path: &str) -> Vec<usize> {
    let mut nodes = Vec::new();
    for node in 1..=c.n_nodes() {
        if c.health_check(node, path).await == Some(200) {
            nodes.push(node);
        }
    }
    nodes
}

/// The pid of the walreceiver of node `node`'s PostgreSQL.
async fn walreceiver_pid(c: &LocalCluster, node: usize) -> i32 {
    eventually(Duration::from_secs(30), "the replica's walreceiver runs", || async move {
        let client = connect(c, node).await?;
        let row = client.query_opt("SELECT pid FROM pg_stat_wal_receiver", &[]).await.ok()??;
        row.get::<_, Option<i32>>(0)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_patroni_answers_every_service_as_the_cluster_state_says() {
    if !pg_available("check_patroni_answers_every_service_as_the_cluster_state_says") {
        return;
    }
    let Some(program) = plugin() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "check_patroni is not installed (scripts/test installs it into .venv/check-patroni)"
        );
        println!(
            "SKIP check_patroni_answers_every_service_as_the_cluster_state_says: check_patroni not installed \
             (run scripts/test, or: python3 -m venv .venv/check-patroni && .venv/check-patroni/bin/pip install \
             check-patroni==2.2.0)"
        );
        return;
    };
    let mut p = Plugin { program, state_dir: tempfile::tempdir().expect("state dir"), table: Vec::new() };
    let (spec, dir) = spec();
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let replicas: Vec<usize> = (1..=c.n_nodes()).filter(|n| *n != primary).collect();
    let all = Target::Cluster;

    // Healthy, asynchronous.
    let s = "healthy";
    p.expect(
        c,
        s,
        all,
        "cluster_node_count",
        &["-w", "3:", "-c", "2:", "--healthy-warning", "3:", "--healthy-critical", "2:"],
        OK,
    )
    .await;
    p.expect(c, s, all, "cluster_has_leader", &[], OK).await;
    p.expect(c, s, all, "cluster_has_replica", &["-w", "2:", "-c", "1:", "--max-lag", "10MB"], OK).await;
    p.expect(c, s, all, "cluster_has_scheduled_action", &[], OK).await;
    p.expect(c, s, all, "cluster_is_in_maintenance", &[], OK).await;
    let state_file = p.state_dir.path().join("config.state").display().to_string();
    p.run(&[c.api(primary)], "cluster_config_has_changed", &["-s", &state_file, "--save"]).await;
    p.expect(c, s, all, "cluster_config_has_changed", &["-s", &state_file], OK).await;
    for node in 1..=c.n_nodes() {
        let n = Target::Node(node);
        p.expect(c, s, n, "node_is_alive", &[], OK).await;
        p.expect(c, s, n, "node_is_pending_restart", &[], OK).await;
        p.expect(c, s, n, "node_patroni_version", &["--patroni-version", PATRONI_VERSION], OK).await;
        p.expect(c, s, n, "node_patroni_version", &["--patroni-version", "3.3.0"], CRITICAL).await;
        p.expect(c, s, n, "node_tl_has_changed", &["--timeline", "1"], OK).await;
        let role = if node == primary { OK } else { CRITICAL };
        let not_role = if node == primary { CRITICAL } else { OK };
        p.expect(c, s, n, "node_is_primary", &[], role).await;
        p.expect(c, s, n, "node_is_leader", &[], role).await;
        p.expect(c, s, n, "node_is_leader", &["--is-standby-leader"], CRITICAL).await;
        p.expect(c, s, n, "node_is_replica", &[], not_role).await;
        p.expect(c, s, n, "node_is_replica", &["--max-lag", "10MB", "--is-async"], not_role).await;
        p.expect(c, s, n, "node_is_replica", &["--is-sync"], CRITICAL).await;
    }

    // Paused.
    let s = "paused";
    patch_config(c, primary, json!({"pause": true})).await;
    p.expect(c, s, all, "cluster_is_in_maintenance", &[], CRITICAL).await;
    p.expect(c, s, all, "cluster_has_leader", &[], OK).await;
    p.expect(c, s, Target::Node(primary), "node_is_primary", &[], OK).await;
    p.expect(c, s, all, "cluster_config_has_changed", &["-s", &state_file], CRITICAL).await;
    patch_config(c, primary, json!({"pause": null})).await;
    p.expect(c, "resumed", all, "cluster_is_in_maintenance", &[], OK).await;

    // A scheduled switchover, then a scheduled restart.
    let s = "scheduled switchover";
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let leader = format!("node{primary}");
    let (code, text) =
        rest(c, primary, reqwest::Method::POST, "/switchover", Some(json!({"leader": leader, "scheduled_at": at})))
            .await;
    assert_eq!(code, 202, "schedule a switchover: {text}");
    p.expect(c, s, all, "cluster_has_scheduled_action", &[], CRITICAL).await;
    let (code, text) = rest(c, primary, reqwest::Method::DELETE, "/switchover", None).await;
    assert_eq!(code, 200, "delete the scheduled switchover: {text}");
    p.expect(c, "switchover flushed", all, "cluster_has_scheduled_action", &[], OK).await;
    let s = "scheduled restart";
    let (code, text) = rest(c, replicas[0], reqwest::Method::POST, "/restart", Some(json!({"schedule": at}))).await;
    assert_eq!(code, 202, "schedule a restart: {text}");
    p.expect(c, s, all, "cluster_has_scheduled_action", &[], CRITICAL).await;
    // As in Patroni: the member key (and so /cluster) keeps the start time the restart was scheduled against,
    // GET /patroni leaves it out.
    let member = format!("node{}", replicas[0]);
    let (_, cluster) = rest(c, primary, reqwest::Method::GET, "/cluster", None).await;
    let cluster: Value = serde_json::from_str(&cluster).expect("/cluster is JSON");
    let scheduled = cluster["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["name"] == member.as_str()))
        .map(|m| m["scheduled_restart"].clone())
        .unwrap_or_default();
    assert!(scheduled["postmaster_start_time"].is_string(), "/cluster scheduled_restart of {member}: {scheduled}");
    let (_, status) = rest(c, replicas[0], reqwest::Method::GET, "/patroni", None).await;
    let status: Value = serde_json::from_str(&status).expect("/patroni is JSON");
    assert!(status["scheduled_restart"]["schedule"].is_string(), "{status}");
    assert!(status["scheduled_restart"].get("postmaster_start_time").is_none(), "{status}");
    let (code, text) = rest(c, replicas[0], reqwest::Method::DELETE, "/restart", None).await;
    assert_eq!(code, 200, "delete the scheduled restart: {text}");
    p.expect(c, "restart flushed", all, "cluster_has_scheduled_action", &[], OK).await;

    // A pending restart: a parameter that needs one.
    let s = "pending restart";
    patch_config(c, primary, json!({"postgresql": {"parameters": {"max_connections": 110}}})).await;
    for node in 1..=c.n_nodes() {
        p.expect(c, s, Target::Node(node), "node_is_pending_restart", &[], CRITICAL).await;
    }
    for node in 1..=c.n_nodes() {
        let (code, text) = rest(c, node, reqwest::Method::POST, "/restart", Some(json!({}))).await;
        assert_eq!(code, 200, "restart node{node}: {text}");
    }
    for node in 1..=c.n_nodes() {
        p.expect(c, "restarted", Target::Node(node), "node_is_pending_restart", &[], OK).await;
    }
    c.wait_healthy(tokio::time::Instant::now() + SETTLE).await.unwrap_or_else(|e| panic!("{e:#}\n{}", logs(c)));

    // Synchronous mode: one sync standby.
    let s = "synchronous_mode on";
    patch_config(c, primary, json!({"synchronous_mode": true})).await;
    let sync = eventually(SETTLE, "one replica answers /sync", || async {
        let nodes = answering(c, "/sync").await;
        (nodes.len() == 1).then(|| nodes[0])
    })
    .await;
    let asynchronous = replicas.iter().copied().find(|n| *n != sync).expect("two replicas");
    p.expect(c, s, all, "cluster_has_replica", &["--sync-warning", "1:", "--sync-type", "sync", "-w", "2:"], OK).await;
    p.expect(c, s, Target::Node(sync), "node_is_replica", &["--is-sync"], OK).await;
    p.expect(c, s, Target::Node(sync), "node_is_replica", &["--is-sync", "--sync-type", "sync"], OK).await;
    p.expect(c, s, Target::Node(sync), "node_is_replica", &["--is-async"], CRITICAL).await;
    p.expect(c, s, Target::Node(asynchronous), "node_is_replica", &["--is-async"], OK).await;
    p.expect(c, s, Target::Node(asynchronous), "node_is_replica", &["--is-sync"], CRITICAL).await;

    // Quorum mode: both replicas vote.
    let s = "synchronous_mode quorum";
    patch_config(c, primary, json!({"synchronous_mode": "quorum", "synchronous_node_count": 1})).await;
    eventually(SETTLE, "both replicas answer /quorum", || async {
        let nodes = answering(c, "/quorum").await;
        (nodes.len() == 2).then_some(())
    })
    .await;
    p.expect(c, s, all, "cluster_has_replica", &["--sync-warning", "2:", "--sync-type", "quorum"], OK).await;
    p.expect(c, s, all, "cluster_has_replica", &["--sync-warning", "1:", "--sync-type", "sync"], WARNING).await;
    for replica in &replicas {
        let n = Target::Node(*replica);
        p.expect(c, s, n, "node_is_replica", &["--is-sync", "--sync-type", "quorum"], OK).await;
        p.expect(c, s, n, "node_is_replica", &["--is-sync", "--sync-type", "sync"], CRITICAL).await;
    }
    patch_config(c, primary, json!({"synchronous_mode": false})).await;
    eventually(SETTLE, "no replica answers /quorum or /sync", || async {
        (answering(c, "/quorum").await.is_empty() && answering(c, "/sync").await.is_empty()).then_some(())
    })
    .await;

    // A lagging replica: its walreceiver stopped while the primary writes.
    let s = "lagging replica";
    let lagging = replicas[0];
    let pid = walreceiver_pid(c, lagging).await;
    let stopped = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP);
    assert!(stopped.is_ok(), "SIGSTOP the walreceiver {pid}: {stopped:?}");
    // Resumes it even when an assertion below fails, so the cluster can stop.
    let _resume = Resume(pid.unsigned_abs());
    let client = connect(c, primary).await.expect("connect to the primary");
    client
        .batch_execute("CREATE TABLE lag_filler AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 100000) g")
        .await
        .expect("write 10+ MB on the primary");
    p.expect(c, s, all, "cluster_has_replica", &["-w", "2:", "-c", "1:", "--max-lag", "1MB"], WARNING).await;
    p.expect(c, s, Target::Node(lagging), "node_is_replica", &["--max-lag", "1MB"], CRITICAL).await;
    p.expect(c, s, Target::Node(lagging), "node_is_replica", &[], OK).await;
    let resumed = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT);
    assert!(resumed.is_ok(), "SIGCONT the walreceiver {pid}: {resumed:?}");
    p.expect(c, "caught up", all, "cluster_has_replica", &["-w", "2:", "-c", "1:", "--max-lag", "1MB"], OK).await;

    // A switchover: the timeline moves on.
    let s = "after a switchover";
    let candidate = replicas[1];
    let (code, text) = rest(
        c,
        primary,
        reqwest::Method::POST,
        "/switchover",
        Some(json!({"leader": leader, "candidate": format!("node{candidate}")})),
    )
    .await;
    assert_eq!(code, 200, "switchover: {text}");
    p.expect(c, s, Target::Node(candidate), "node_is_primary", &[], OK).await;
    p.expect(c, s, Target::Node(primary), "node_is_replica", &[], OK).await;
    p.expect(c, s, all, "cluster_has_leader", &[], OK).await;
    p.expect(c, s, all, "cluster_has_replica", &["-w", "2:", "-c", "1:"], OK).await;
    p.expect(c, s, all, "cluster_node_count", &["--healthy-warning", "3:", "--healthy-critical", "2:"], OK).await;
    for node in 1..=c.n_nodes() {
        p.expect(c, s, Target::Node(node), "node_tl_has_changed", &["--timeline", "1"], CRITICAL).await;
        p.expect(c, s, Target::Node(node), "node_tl_has_changed", &["--timeline", "2"], OK).await;
    }

    println!("check_patroni answers: {}", p.table.len());
    finish(c, &[]).await;
}
