//! `watchdog.mode: required` (Patroni's watchdog): the leader arms and feeds its watchdog, a switchover moves
//! it (the old primary writes the magic close, the new one keeps its own alive), and a node whose watchdog
//! cannot be armed reports `watchdog_failed`, is refused as a switchover candidate and never leads.
//!
//! Which device ran: a stand-in, never a real watchdog. Where these tests were written the kernel's softdog
//! could not be loaded (no `modprobe`, no `/lib/modules`, no `/dev/watchdog*`), and even where it can, the
//! three nodes of a test cluster share one host, so a real watchdog armed by one node would reset the machine
//! when that node is killed. Each node's `watchdog.device` is therefore a regular file: the watchdog ioctls
//! fail there with ENOTTY (accepted with a warning), and the keepalives (`1`) and the magic close (`V`) that a
//! real device would receive are appended to the file, which the test reads.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use serde_json::Value;

use crate::harness::*;

/// The ERROR a node logs once when its required watchdog cannot be armed (a human must act).
const NOT_USABLE_ERROR: &str = "watchdog.mode is required but the watchdog is not usable";

/// A stand-in device file for node `node` under `dir`, created empty.
fn stand_in(dir: &Path, node: usize) -> PathBuf {
    let path = dir.join(format!("node{node}.watchdog"));
    std::fs::write(&path, "").expect("create the watchdog stand-in");
    path
}

/// `watchdog.mode: required` on `device`.
fn required(device: &Path) -> Value {
    json!({"watchdog": {"mode": "required", "device": device.display().to_string()}})
}

/// What node `node`'s watchdog was told so far.
fn written(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

async fn rest(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, String) {
    let http = reqwest::Client::new();
    let mut req = http.request(method, format!("{base}{path}")).timeout(Duration::from_secs(90));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("{path} on {base}: {e}"));
    let code = res.status().as_u16();
    (code, res.text().await.unwrap_or_default())
}

async fn watchdog_failed(base: String) -> Option<bool> {
    let (code, text) = rest(&base, reqwest::Method::GET, "/patroni", None).await;
    let status: Value = serde_json::from_str(&text).ok().filter(|_| code == 200)?;
    Some(status.get("watchdog_failed") == Some(&json!(true)))
}

/// Waits until the stand-in at `path` received more keepalives than `more_than` bytes: it is being fed.
async fn fed_beyond(path: &Path, more_than: usize, who: &str) -> usize {
    eventually(Duration::from_secs(60), &format!("{who} keeps its watchdog alive"), || async {
        let text = written(path);
        (text.len() > more_than && text.ends_with('1')).then_some(text.len())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_required_watchdog_follows_the_leader_through_a_switchover() {
    if !pg_available("a_required_watchdog_follows_the_leader_through_a_switchover") {
        return;
    }
    let (mut spec, dir) = spec();
    let devices = [stand_in(dir.path(), 1), stand_in(dir.path(), 2), dir.path().join("missing/watchdog")];
    for (node_idx, device) in devices.iter().enumerate() {
        spec.node_overrides.insert(node_idx + 1, required(device));
    }
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let device = |node: usize| devices[node - 1].as_path();
    assert_ne!(primary, 3, "node3 cannot arm its watchdog, so it never leads\n{}", logs(c));
    let other = if primary == 1 { 2 } else { 1 };

    // The primary arms and feeds its watchdog; a replica never opened its own; node3 says it cannot lead.
    let fed = fed_beyond(device(primary), 0, "the primary").await;
    fed_beyond(device(primary), fed, "the primary").await;
    assert_eq!(written(device(other)), "", "a replica's watchdog is never armed");
    for node in 1..=3 {
        let failed = eventually(Duration::from_secs(30), "GET /patroni answers", || watchdog_failed(c.api(node))).await;
        assert_eq!(failed, node == 3, "node{node}: watchdog_failed");
    }

    // A switchover to node3 is refused; one to the other node moves the watchdog with the leader.
    let to_node3 = json!({"leader": format!("node{primary}"), "candidate": "node3"});
    let (code, text) = rest(&c.api(primary), reqwest::Method::POST, "/switchover", Some(to_node3)).await;
    assert_eq!((code, text.as_str()), (412, "switchover is not possible: no good candidates have been found"));
    let to_other = json!({"leader": format!("node{primary}"), "candidate": format!("node{other}")});
    let (code, text) = rest(&c.api(primary), reqwest::Method::POST, "/switchover", Some(to_other)).await;
    assert_eq!((code, text.as_str()), (200, format!("Successfully switched over to \"node{other}\"").as_str()));
    assert_eq!(new_primary(c, primary, Duration::from_secs(60)).await, other, "{}", logs(c));

    let fed = fed_beyond(device(other), 0, "the new primary").await;
    eventually(Duration::from_secs(60), "the old primary stopped its watchdog with the magic close", || async {
        let text = written(device(primary));
        (text.contains('1') && text.ends_with('V')).then_some(())
    })
    .await;
    fed_beyond(device(other), fed, "the new primary").await;
    assert!(written(device(primary)).ends_with('V'), "no keepalive after the magic close\n{}", logs(c));
    assert!(!device(3).exists(), "node3's device never appeared");

    finish(c, &[NOT_USABLE_ERROR]).await;
    // A clean stop of the leader disarms too.
    assert!(written(device(other)).ends_with('V'), "the new primary's clean shutdown wrote the magic close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_required_watchdog_is_unusable_never_leads() {
    if !pg_available("a_node_whose_required_watchdog_is_unusable_never_leads") {
        return;
    }
    let (mut spec, dir) = spec();
    let device = stand_in(dir.path(), 1);
    spec.node_overrides.insert(1, required(&device));
    for node in [2, 3] {
        spec.node_overrides.insert(node, required(&dir.path().join(format!("missing/node{node}"))));
    }
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    assert_eq!(primary, 1, "only node1 can arm its watchdog, so only it bootstraps\n{}", logs(c));
    fed_beyond(&device, 0, "node1").await;
    for node in [2, 3] {
        let failed = eventually(Duration::from_secs(30), "GET /patroni answers", || watchdog_failed(c.api(node))).await;
        assert!(failed, "node{node} reports watchdog_failed");
    }

    // No candidate qualifies for a switchover.
    let (code, text) = rest(&c.api(1), reqwest::Method::POST, "/switchover", Some(json!({"leader": "node1"}))).await;
    assert_eq!((code, text.as_str()), (412, "switchover is not possible: no good candidates have been found"));

    // The primary leaves cleanly (its watchdog disarmed, the key released): the two left stay replicas.
    c.stop_node(1).await.expect("stop node1");
    assert!(written(&device).ends_with('V'), "node1's clean shutdown wrote the magic close");
    let sentence =
        "following a different leader because i am not the healthiest node (the required watchdog is not usable)";
    for node in [2, 3] {
        let log = c.dir().join(format!("node{node}/raftgres.log"));
        eventually(
            Duration::from_secs(60),
            &format!("node{node} sees the vacant key and stays out of the race"),
            || {
                let log = log.clone();
                async move { std::fs::read_to_string(&log).ok()?.contains(sentence).then_some(()) }
            },
        )
        .await;
    }
    for node in [2, 3] {
        assert_eq!(in_recovery(c, node).await, Some(true), "node{node} is still a replica\n{}", logs(c));
    }
    let (_, cluster) = rest(&c.api(2), reqwest::Method::GET, "/cluster", None).await;
    let cluster: Value = serde_json::from_str(&cluster).unwrap_or_default();
    let members = cluster["members"].as_array().cloned().unwrap_or_default();
    assert!(members.iter().all(|m| m["role"] != json!("leader")), "nobody holds the leader key: {cluster}");
    finish(c, &[NOT_USABLE_ERROR]).await;
}
