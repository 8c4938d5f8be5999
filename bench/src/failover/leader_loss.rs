//! The leaderless window after kill -9 of a Raft leader that is not the primary, and whether the
//! primary kept its lease through it, idle and with a busy loop on every core.
//!
//! raftgres keeps Raft leadership on the primary's node (`raft.leadership_follows_primary`), so
//! such a leader exists only for moments (right after a failover). To measure what those moments
//! risk, these runs use a cluster with `leadership_follows_primary: false`: when the Raft leader
//! is the primary, a switchover moves the primary away and leaves Raft leadership behind. A run
//! then SIGKILLs that node's raftgres (its PostgreSQL replica keeps running) and probes both
//! survivors' `GET /raft` every 10 ms until one names a surviving leader (the leaderless window),
//! while the primary's own `GET /raft` tells the least lease it had left. The same kill of a
//! replica on a cluster where leadership follows the primary is measured alongside: its window
//! should be zero. The killed node is restarted and the cluster waited healthy before the next run.
//! Every wait is bounded; numbers are printed, never asserted.

use std::process::Child;
use std::time::Duration;

use anyhow::Context;
use raftgres::demo::cluster::LocalCluster;
use tokio::time::Instant;

use super::NAME;
use crate::cluster;
use crate::cluster::BenchCluster;
use crate::cluster::Placement;
use crate::cluster::WithHaproxy;
use crate::report::Row;
use crate::report::Table;
use crate::report::Unit;

/// Default runs per load.
pub const DEFAULT_RUNS: usize = 10;
/// How often the survivors are asked for their Raft leader.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Bound for the survivors to agree on a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after the kill the primary's lease is watched: a lost lease shows within `ttl`.
const LEASE_WATCH: Duration = Duration::from_secs(4);
/// Bound of the switchover that moves the primary away from the Raft leader.
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the machine is loaded during a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Idle,
    /// One `sh` busy loop per core for the duration of the run.
    Busy,
}

impl Load {
    fn label(self) -> &'static str {
        match self {
            Load::Idle => "idle",
            Load::Busy => "busy loop on every core",
        }
    }
}

/// Busy loops, one per core, killed on drop.
struct BusyLoops(Vec<Child>);

impl BusyLoops {
    fn start(load: Load) -> BusyLoops {
        if load == Load::Idle {
            return BusyLoops(Vec::new());
        }
        let n_cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let spawn = || std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().ok();
        BusyLoops((0..n_cores).filter_map(|_| spawn()).collect())
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one kill measured.
struct LossRun {
    load: Load,
    /// Kill → a survivor names a surviving Raft leader; `None` when none did within the bound.
    leaderless: Option<Duration>,
    /// The least lease the primary reported having left, seconds.
    least_lease_left: Option<f64>,
    /// The primary reported no lease, another holder or a new fencing token.
    lease_lost: bool,
}

/// The Raft leader's node index as node `node_idx` reports it.
async fn raft_leader(c: &LocalCluster, http: &reqwest::Client, node_idx: usize) -> Option<usize> {
    let body: serde_json::Value = http.get(format!("{}/raft", c.api(node_idx))).send().await.ok()?.json().await.ok()?;
    let name = body["leader"]["name"].as_str()?;
    c.nodes().iter().find(|node| node.name == name).map(|node| node.node_idx)
}

/// The primary's own lease from its `GET /raft`: (holder, fencing token, seconds left).
async fn own_lease(c: &LocalCluster, http: &reqwest::Client, node_idx: usize) -> Option<(String, u64, f64)> {
    let body: serde_json::Value = http.get(format!("{}/raft", c.api(node_idx))).send().await.ok()?.json().await.ok()?;
    let lease = &body["leader_lease"];
    Some((lease["holder"].as_str()?.to_string(), lease["fencing_token"].as_u64()?, lease["remaining"].as_f64()?))
}

/// Switches over from `primary` to `candidate` and waits until the cluster is healthy again.
async fn switch_over(c: &LocalCluster, primary: usize, candidate: usize) -> anyhow::Result<usize> {
    let names = (&c.node(primary).name, &c.node(candidate).name);
    let body = serde_json::json!({"leader": names.0, "candidate": names.1});
    let http = reqwest::Client::builder().timeout(SWITCHOVER_TIMEOUT).no_proxy().build()?;
    let res = http.post(format!("{}/switchover", c.api(candidate))).json(&body).send().await?;
    if !res.status().is_success() {
        anyhow::bail!("switchover {} -> {} answered {}", names.0, names.1, res.status());
    }
    cluster::wait_healthy(c, Instant::now() + cluster::HEALTHY_TIMEOUT).await
}

/// The node to kill: the Raft leader when it is not the primary (after a switchover if needed),
/// or, when leadership follows the primary, a replica. Returns (victim, primary).
async fn pick_victim(c: &LocalCluster, follows: bool) -> anyhow::Result<(usize, usize)> {
    let http = cluster::probe_client()?;
    let primary = cluster::wait_healthy(c, Instant::now() + cluster::HEALTHY_TIMEOUT).await?;
    if follows {
        let replica = (1..=c.n_nodes()).find(|n| *n != primary).context("a replica")?;
        return Ok((replica, primary));
    }
    let leader = raft_leader(c, &http, primary).await.context("read the Raft leader")?;
    if leader != primary {
        return Ok((leader, primary));
    }
    let candidate = (1..=c.n_nodes()).find(|n| *n != primary).context("a replica")?;
    let primary = switch_over(c, primary, candidate).await?;
    let leader = raft_leader(c, &http, primary).await.context("read the Raft leader")?;
    if leader == primary {
        anyhow::bail!("Raft leadership moved with the switchover although leadership_follows_primary is off");
    }
    Ok((leader, primary))
}

/// One kill: returns what it measured, after restarting the victim and waiting for health.
async fn one_run(c: &LocalCluster, follows: bool, load: Load) -> anyhow::Result<LossRun> {
    let (victim, primary) = pick_victim(c, follows).await?;
    let http = cluster::probe_client()?;
    let survivors: Vec<usize> = (1..=c.n_nodes()).filter(|n| *n != victim).collect();
    let (holder, token, _) = own_lease(c, &http, primary).await.context("read the primary's lease")?;
    let busy = BusyLoops::start(load);
    c.kill_node(victim).await?;
    let killed_at = Instant::now();
    let mut run = LossRun { load, leaderless: None, least_lease_left: None, lease_lost: false };
    loop {
        let elapsed = killed_at.elapsed();
        if (run.leaderless.is_some() && elapsed >= LEASE_WATCH) || elapsed >= LEADER_TIMEOUT {
            break;
        }
        if run.leaderless.is_none() {
            for node in &survivors {
                if raft_leader(c, &http, *node).await.is_some_and(|leader| survivors.contains(&leader)) {
                    run.leaderless = Some(killed_at.elapsed());
                    break;
                }
            }
        }
        match own_lease(c, &http, primary).await {
            Some((who, fencing_token, left)) => {
                run.lease_lost |= who != holder || fencing_token != token || left <= 0.0;
                run.least_lease_left = Some(run.least_lease_left.map_or(left, |least| least.min(left)));
            }
            None => run.lease_lost = true,
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
    drop(busy);
    c.start_node(victim)?;
    cluster::wait_healthy(c, Instant::now() + cluster::HEALTHY_TIMEOUT).await?;
    Ok(run)
}

/// Runs `runs` kills idle and `runs` loaded on a cluster with leadership following the primary
/// (`follows`) or not; returns the rows and notes.
async fn measure(place: &Placement, runs: usize, follows: bool) -> anyhow::Result<Table> {
    let bench = BenchCluster::start_with_leadership(place, WithHaproxy::No, follows).await?;
    let mut measured = Vec::new();
    let mut notes = Vec::new();
    let result = async {
        for load in [Load::Idle, Load::Busy] {
            for run_idx in 1..=runs {
                eprintln!(
                    "failover: raft leader loss (follows primary: {follows}) {} run {run_idx}/{runs}",
                    load.label()
                );
                let run = one_run(&bench.cluster, follows, load).await?;
                notes.push(describe(&run, follows, run_idx));
                measured.push(run);
            }
        }
        anyhow::Ok(())
    }
    .await;
    let stopped = bench.shutdown().await;
    result?;
    stopped?;
    Ok(Table { rows: rows(&measured, follows), notes })
}

fn describe(run: &LossRun, follows: bool, run_idx: usize) -> String {
    let window = run.leaderless.map_or_else(|| "no leader within 30 s".into(), |d| format!("{:.3} s", d.as_secs_f64()));
    let least = run.least_lease_left.map_or_else(|| "unknown".into(), |left| format!("{left:.2} s"));
    format!(
        "failover: raft leader loss (follows primary: {follows}, {}) run {run_idx}: leaderless {window}, primary's least lease left {least}{}",
        run.load.label(),
        if run.lease_lost { ", THE PRIMARY LOST ITS LEASE" } else { "" }
    )
}

fn rows(runs: &[LossRun], follows: bool) -> Vec<Row> {
    let what = if follows {
        "kill -9 of a replica, leadership follows the primary"
    } else {
        "kill -9 of a Raft leader that is not the primary"
    };
    let mut rows = Vec::new();
    for load in [Load::Idle, Load::Busy] {
        let of_load: Vec<&LossRun> = runs.iter().filter(|run| run.load == load).collect();
        let windows: Vec<Duration> = of_load.iter().filter_map(|run| run.leaderless).collect();
        rows.push(Row::latency(NAME, format!("{what}: leaderless window, {}", load.label()), &windows));
        let least: Vec<f64> = of_load.iter().filter_map(|run| run.least_lease_left.map(|s| s * 1000.0)).collect();
        let n_lost = of_load.iter().filter(|run| run.lease_lost).count();
        let path = format!("{what}: primary's least lease left, {} ({n_lost} runs lost the lease)", load.label());
        rows.push(Row::of(NAME, path, Unit::Millis, &least));
    }
    rows
}

/// Both clusters: leadership free (the window a primary must survive) and following the primary.
pub async fn run(place: &Placement, runs: usize) -> anyhow::Result<Table> {
    let mut table = measure(place, runs, false).await?;
    table.append(measure(place, runs, true).await?);
    Ok(table)
}
