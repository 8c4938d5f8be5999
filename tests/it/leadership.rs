//! Raft leadership stays with the primary: stopping (SIGTERM) or killing (SIGKILL) any other node,
//! one at a time and over and over on a machine loaded with busy loops on every core, never costs
//! the primary its leader lease and never holds a client's write for more than a second.
//!
//! Before leadership followed the leader key, the node that initialized Raft stayed its leader
//! whoever won the PostgreSQL race; stopping that replica left the primary without a Raft leader
//! for longer than its lease had left on a loaded host, and the fence stopped a healthy primary.

use std::process::Child;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use raftgres::demo::cluster::LocalCluster;
use tokio::time::Instant;

use crate::harness::connect;
use crate::harness::finish;
use crate::harness::logs;
use crate::harness::pg_available;
use crate::harness::spec;
use crate::harness::start;
use crate::harness::TestCluster;

/// How many times each non-primary node is stopped with each signal.
const ROUNDS: usize = 10;
/// The longest a single write may take.
const MAX_WRITE_WAIT: Duration = Duration::from_secs(1);

/// Busy loops, one per core, as separate processes; killed when dropped.
struct BusyLoad(Vec<Child>);

impl BusyLoad {
    fn start() -> BusyLoad {
        let n_cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let children = (0..n_cores)
            .filter_map(|_| std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().ok())
            .collect();
        BusyLoad(children)
    }
}

impl Drop for BusyLoad {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the writer and the lease watcher saw.
#[derive(Debug, Default)]
struct Observed {
    n_writes: u64,
    /// Writes that failed or took longer than [`MAX_WRITE_WAIT`], with when and why.
    bad_writes: Vec<String>,
    max_write_wait: Duration,
    /// The primary's own lease: the least time it had left, and every sample where it did not hold it.
    min_lease_left: Option<f64>,
    lease_lost: Vec<String>,
    /// Samples the primary's REST API did not answer within 500 ms.
    n_unanswered: u64,
    /// Raft leader changes seen by the primary, as (seconds since start, leader name).
    raft_leaders: Vec<(f64, String)>,
}

/// Applies `change` to the shared observations (the lock is never held across an await).
fn record(observed: &Mutex<Observed>, change: impl FnOnce(&mut Observed)) {
    change(&mut observed.lock().unwrap_or_else(|e| e.into_inner()));
}

/// One primary lease sample from `GET /raft` on the primary: (holder, fencing token, seconds left, raft leader).
async fn lease_sample(http: &reqwest::Client, api: &str) -> Option<(String, u64, f64, String)> {
    let body: serde_json::Value = http.get(format!("{api}/raft")).send().await.ok()?.json().await.ok()?;
    let lease = body.get("leader_lease")?;
    let raft_leader = body["leader"]["name"].as_str().unwrap_or("none").to_string();
    Some((
        lease["holder"].as_str()?.to_string(),
        lease["fencing_token"].as_u64()?,
        lease["remaining"].as_f64()?,
        raft_leader,
    ))
}

/// Watches the primary's lease every 100 ms until `stop`.
async fn watch_lease(api: String, holder: String, observed: Arc<Mutex<Observed>>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap_or_default();
    let started = Instant::now();
    let mut token = None;
    while !stop.load(Ordering::SeqCst) {
        let at = started.elapsed().as_secs_f64();
        let sample = lease_sample(&http, &api).await;
        record(&observed, |seen| match sample {
            Some((who, fencing_token, left, raft_leader)) => {
                let same_token = *token.get_or_insert(fencing_token) == fencing_token;
                if who != holder || !same_token || left <= 0.0 {
                    seen.lease_lost.push(format!("{at:.1}s: holder {who}, token {fencing_token}, {left:.2}s left"));
                }
                seen.min_lease_left = Some(seen.min_lease_left.map_or(left, |m| m.min(left)));
                if seen.raft_leaders.last().map(|(_, name)| name) != Some(&raft_leader) {
                    seen.raft_leaders.push((at, raft_leader));
                }
            }
            // The primary's REST API did not answer within 500 ms: counted, not a lost lease.
            None => seen.n_unanswered += 1,
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Inserts a row every 20 ms on node `primary` until `stop`, timing each.
async fn write_steadily(tc: Arc<TestCluster>, primary: usize, observed: Arc<Mutex<Observed>>, stop: Arc<AtomicBool>) {
    let c = &tc.cluster;
    let started = Instant::now();
    let mut client = None;
    while !stop.load(Ordering::SeqCst) {
        if client.is_none() {
            client = connect(c, primary).await;
        }
        let Some(conn) = &client else {
            let at = started.elapsed().as_secs_f64();
            record(&observed, |seen| seen.bad_writes.push(format!("{at:.1}s: cannot connect")));
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let sent = Instant::now();
        let res = tokio::time::timeout(Duration::from_secs(10), conn.execute("INSERT INTO steady DEFAULT VALUES", &[]));
        let res = res.await;
        let waited = sent.elapsed();
        let at = started.elapsed().as_secs_f64();
        let failure = match res {
            Ok(Ok(_)) if waited <= MAX_WRITE_WAIT => None,
            Ok(Ok(_)) => Some(format!("{at:.1}s: a write waited {waited:?}")),
            Ok(Err(e)) => {
                client = None;
                Some(format!("{at:.1}s: a write failed: {e}"))
            }
            Err(_) => {
                client = None;
                Some(format!("{at:.1}s: a write did not finish within 10 s"))
            }
        };
        record(&observed, |seen| {
            seen.max_write_wait = seen.max_write_wait.max(waited);
            match failure {
                None => seen.n_writes += 1,
                Some(line) => seen.bad_writes.push(line),
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The problem lines, with runs of the same message (after the timestamp) folded into one line.
fn summarize(lines: &[&String]) -> String {
    let mut out: Vec<(String, String, usize)> = Vec::new();
    for line in lines {
        let (at, message) = line.split_once(": ").unwrap_or(("", line.as_str()));
        match out.last_mut() {
            Some((_, last, n)) if last == message => *n += 1,
            _ => out.push((at.to_string(), message.to_string(), 1)),
        }
    }
    out.iter().map(|(at, message, n)| format!("{at}: {message} (x{n})")).collect::<Vec<_>>().join("\n")
}

/// Switches over from `primary` to another node through the REST API; returns the new primary.
async fn switch_over(c: &LocalCluster, primary: usize) -> usize {
    let candidate = (1..=c.n_nodes()).find(|n| *n != primary).expect("a replica");
    let request = serde_json::json!({"leader": format!("node{primary}"), "candidate": format!("node{candidate}")});
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client");
    let res = http.post(format!("{}/switchover", c.api(candidate))).json(&request).send().await;
    let res = res.expect("POST /switchover is answered");
    let code = res.status().as_u16();
    assert_eq!(code, 200, "switchover to node{candidate}: {}", res.text().await.unwrap_or_default());
    let healthy = c.wait_healthy(Instant::now() + Duration::from_secs(90)).await;
    let healthy = healthy.unwrap_or_else(|e| panic!("after the switchover: {e:#}\n{}", logs(c)));
    assert_eq!(healthy, candidate, "the candidate is the new primary");
    healthy
}

#[derive(Debug, Clone, Copy)]
enum StopHow {
    Term,
    Kill,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_or_killing_other_nodes_never_costs_the_primary_its_lease() {
    if !pg_available("stopping_or_killing_other_nodes_never_costs_the_primary_its_lease") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, first) = start(spec, dir).await;
    let tc = Arc::new(tc);
    let c = &tc.cluster;
    // A switchover first: the node that won the bootstrap race (and led Raft from the start) is
    // now a replica, as after any switchover or failover in production.
    let primary = switch_over(c, first).await;
    let client = connect(c, primary).await.expect("connect to the primary");
    client
        .batch_execute("CREATE TABLE steady (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
        .await
        .expect("create table");
    let primary_name = c.node(primary).name.clone();
    let others: Vec<usize> = (1..=c.n_nodes()).filter(|n| *n != primary).collect();

    let load = BusyLoad::start();
    let observed = Arc::new(Mutex::new(Observed::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_lease(c.api(primary), primary_name.clone(), observed.clone(), stop.clone()));
    let writer = tokio::spawn(write_steadily(tc.clone(), primary, observed.clone(), stop.clone()));

    let mut steps = Vec::new();
    for round in 1..=ROUNDS {
        for &node in &others {
            for how in [StopHow::Term, StopHow::Kill] {
                let stopped_at = Instant::now();
                match how {
                    StopHow::Term => drop(c.stop_node(node).await.expect("stop the node")),
                    StopHow::Kill => c.kill_node(node).await.expect("kill the node"),
                }
                // Long enough for a lost lease to show: the lease is good for ttl - 0.5 s after a renewal.
                let ttl = Duration::from_secs(3);
                tokio::time::sleep(ttl.saturating_sub(stopped_at.elapsed())).await;
                c.start_node(node).expect("start the node again");
                let healthy = c.wait_healthy(Instant::now() + Duration::from_secs(60)).await;
                let healthy =
                    healthy.unwrap_or_else(|e| panic!("round {round}, node{node} {how:?}: {e:#}\n{}", logs(c)));
                assert_eq!(healthy, primary, "round {round}, node{node} {how:?}: the primary changed\n{}", logs(c));
                steps.push(format!("round {round} node{node} {how:?}: {:.1}s", stopped_at.elapsed().as_secs_f64()));
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = watcher.await;
    let _ = writer.await;
    drop(load);

    let seen = std::mem::take(&mut *observed.lock().unwrap_or_else(|e| e.into_inner()));
    println!(
        "{} writes, longest {:?}, least lease left {:?} s, {} lease samples unanswered, raft leaders seen by the primary: {:?}",
        seen.n_writes, seen.max_write_wait, seen.min_lease_left, seen.n_unanswered, seen.raft_leaders
    );
    let problems: Vec<&String> = seen.lease_lost.iter().chain(&seen.bad_writes).collect();
    assert!(
        problems.is_empty(),
        "the primary lost its lease or a write waited over {MAX_WRITE_WAIT:?}:\n{}\nraft leaders: {:?}\nsteps: {steps:?}\n{}",
        summarize(&problems),
        seen.raft_leaders,
        logs(c)
    );
    assert!(seen.n_writes > 100, "the writer kept writing: {} writes", seen.n_writes);
    finish(c, &[]).await;
}
