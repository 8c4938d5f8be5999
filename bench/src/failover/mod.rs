//! `failover`: what a client sees when the primary crashes, and during a planned switchover, on a
//! local 3-node cluster with real PostgreSQL and the default HA timing.
//!
//! A client INSERTs through the primary every 50 ms ([`crate::writer`]): through HAProxy's primary
//! port when HAProxy is installed, and always also straight to the node answering `GET /primary`,
//! so the table separates raftgres' own gap from HAProxy's check interval (`inter 1s fall 2 rise 1`).
//! A crash run ([`crash`]) kills -9 the primary's raftgres and then its postmaster, and times from
//! the kill:
//! - the client-visible write gap: the last acknowledged write before the kill → the first one
//!   after the promotion was seen (a write in flight at the kill may be acknowledged just after it);
//! - lease expiry: the Raft leader's log line expiring the dead node's session ([`crate::nodelog`]).
//!   It is the store's own decision with a microsecond timestamp. The REST API has no equivalent:
//!   `cluster_unlocked` in `/patroni` is only published between HA cycles and the winner may skip
//!   it, and `GET /leader` answering 200 on another node comes later, after the leader race, so it
//!   gets its own row ("another node holds the lease");
//! - promotion: the first moment another node answers `SELECT pg_is_in_recovery()` = false.
//!
//! The killed node is then restarted and the cluster waited healthy. A switchover run
//! ([`switchover`]) POSTs `/switchover` to the leader and measures the write gap from the request;
//! a 404/501 answer prints "switchover endpoint not available" instead of failing.
//! When a cluster does not heal after a run (a raftgres bug, not a benchmark result), its node logs
//! are copied aside and a fresh cluster takes over the remaining runs, at most a few times.
//! Every wait is bounded; numbers are printed, never asserted.

mod crash;
pub mod leader_loss;
mod observer;
mod switchover;

use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::cluster;
use crate::cluster::BenchCluster;
use crate::cluster::Placement;
use crate::cluster::WithHaproxy;
use crate::report::Row;
use crate::report::Table;
use crate::report::Unit;
use crate::writer;
use crate::writer::Route;
use crash::CrashRun;
use switchover::SwitchoverOutcome;
use switchover::SwitchoverRun;

/// The subcommand's name, the `benchmark` column of its rows.
pub const NAME: &str = "failover";
/// Default number of crash runs and of switchover runs (the issue asks for at least 5).
pub const DEFAULT_RUNS: usize = 5;
/// Bound from the kill (or the switchover request) until promotion and resumed writes.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for the clients to write steadily before a run starts.
const STEADY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound for the cluster to be healthy again after a run (a rejoin takes a few seconds).
const REJOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Fresh clusters that may replace one that did not heal, per benchmark.
const MAX_FRESH_CLUSTERS: usize = 4;
/// The row text when `POST /switchover` answers 404 or 501.
const SWITCHOVER_MISSING: &str = "switchover endpoint not available";

/// Options of `failover`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Crash runs, and as many switchover runs; min / median / max are over these runs.
    #[arg(long, default_value_t = DEFAULT_RUNS)]
    pub runs: usize,
    /// Kills of a Raft leader that is not the primary (and of a replica with leadership following
    /// the primary), idle and as many under load, each on its own cluster; 0 skips them.
    #[arg(long, default_value_t = leader_loss::DEFAULT_RUNS)]
    pub leader_loss_runs: usize,
}

impl Default for Args {
    fn default() -> Self {
        Args { runs: DEFAULT_RUNS, leader_loss_runs: leader_loss::DEFAULT_RUNS }
    }
}

/// Starts a cluster (with HAProxy when installed), measures, stops it, and returns the rows.
pub async fn run(args: &Args, place: &Placement) -> anyhow::Result<Table> {
    let mut bench = BenchCluster::start(place, WithHaproxy::IfInstalled).await?;
    let measured = run_on(&mut bench, args).await;
    let stopped = bench.shutdown().await;
    if let (Err(_), Err(e)) = (&measured, &stopped) {
        tracing::warn!("failed to {e:#}");
    }
    let mut table = measured?;
    stopped?;
    if args.leader_loss_runs > 0 {
        table.append(leader_loss::run(place, args.leader_loss_runs).await?);
    }
    Ok(table)
}

/// What the runs gathered so far.
struct Runs {
    crashes: Vec<CrashRun>,
    switchovers: Vec<SwitchoverRun>,
    switchover_missing: bool,
    notes: Vec<String>,
    fresh_left: usize,
}

/// Measures on a running cluster (which may be replaced by a fresh one when it does not heal).
pub async fn run_on(bench: &mut BenchCluster, args: &Args) -> anyhow::Result<Table> {
    let load_before = cluster::load_average();
    prepare(bench).await?;
    // Routes are rebuilt per run (a fresh cluster has new ports); their labels and order stay the same.
    let labelled = routes(bench);
    let notes = setup_notes(bench, &labelled, args);
    let mut runs = Runs {
        crashes: Vec::new(),
        switchovers: Vec::new(),
        switchover_missing: false,
        notes,
        fresh_left: MAX_FRESH_CLUSTERS,
    };
    let mut usable = true;
    for run_idx in 1..=args.runs {
        eprintln!("failover: crash run {run_idx}/{}", args.runs);
        let current = routes(bench);
        let broken = match crash::crash_run(&bench.cluster, &current).await {
            Ok(crash) => {
                runs.notes.push(format!("failover: crash run {run_idx}: {}", crash.describe(&current)));
                let broken = crash.healed.is_err();
                runs.crashes.push(crash);
                broken
            }
            Err(e) => {
                runs.notes.push(format!("failover: crash run {run_idx} measured nothing: {e:#}"));
                true
            }
        };
        if broken && !recover(bench, &mut runs).await? {
            usable = false;
            break;
        }
    }
    for run_idx in (1..=args.runs).take_while(|_| usable) {
        eprintln!("failover: switchover run {run_idx}/{}", args.runs);
        let current = routes(bench);
        let broken = match switchover::switchover_run(&bench.cluster, &current).await {
            Ok(SwitchoverOutcome::Done(done)) => {
                runs.notes.push(format!("failover: switchover run {run_idx}: {}", done.describe(&current)));
                let broken = done.healed.is_err();
                runs.switchovers.push(done);
                broken
            }
            Ok(SwitchoverOutcome::EndpointMissing(status)) => {
                runs.notes.push(format!("failover: POST /switchover answered {status}: {SWITCHOVER_MISSING}"));
                runs.switchover_missing = true;
                break;
            }
            Err(e) => {
                runs.notes.push(format!("failover: switchover run {run_idx} measured nothing: {e:#}"));
                true
            }
        };
        if broken && run_idx < args.runs && !recover(bench, &mut runs).await? {
            break;
        }
    }
    runs.notes.push(format!("failover: load average before {load_before}, after {}", cluster::load_average()));
    let mut rows = crash_rows(&runs.crashes, &labelled);
    rows.extend(switchover_rows(&runs.switchovers, &labelled, runs.switchover_missing));
    Ok(Table { rows, notes: runs.notes })
}

/// Creates the clients' table on the primary.
async fn prepare(bench: &BenchCluster) -> anyhow::Result<()> {
    let c = &bench.cluster;
    let primary_idx = cluster::wait_healthy(c, Instant::now() + cluster::HEALTHY_TIMEOUT).await?;
    let client = cluster::connect(c.pg_port(primary_idx), c.password()).await.context("connect to the primary")?;
    client.batch_execute(writer::CREATE_TABLE).await.context("create the benchmark table")
}

/// After a run left the cluster unhealthy: keeps its logs and replaces it with a fresh cluster;
/// false when no fresh cluster is left to use.
async fn recover(bench: &mut BenchCluster, runs: &mut Runs) -> anyhow::Result<bool> {
    runs.notes.push(bench.preserve_logs());
    if runs.fresh_left == 0 {
        runs.notes.push(format!("failover: {MAX_FRESH_CLUSTERS} fresh clusters used up; no further runs"));
        return Ok(false);
    }
    runs.fresh_left -= 1;
    bench.replace_with_fresh().await.context("start a fresh cluster for the remaining runs")?;
    prepare(bench).await?;
    runs.notes.push("failover: a fresh cluster was started for the remaining runs".to_string());
    Ok(true)
}

/// HAProxy's primary port when it runs, and always the direct route.
fn routes(bench: &BenchCluster) -> Vec<Route> {
    let c = &bench.cluster;
    let nodes = c.nodes().iter().map(|node| (c.api(node.node_idx), node.pg_port)).collect();
    let mut routes: Vec<Route> = bench.haproxy_primary_port().map(|port| Route::Haproxy { port }).into_iter().collect();
    routes.push(Route::FollowPrimary { nodes });
    routes
}

fn setup_notes(bench: &BenchCluster, routes: &[Route], args: &Args) -> Vec<String> {
    let labels: Vec<&str> = routes.iter().map(Route::label).collect();
    let mut notes = vec![
        format!(
            "failover: {} nodes, default HA timing (ttl {} s, loop_wait {} s, retry_timeout {} s), {} crash runs then {} \
             switchover runs; one client per route ({}) INSERTs every {} ms (statement_timeout 1 s, new connection \
             after any error)",
            cluster::N_NODES,
            raftgres::config::defaults::TTL.as_secs(),
            raftgres::config::defaults::LOOP_WAIT.as_secs(),
            raftgres::config::defaults::RETRY_TIMEOUT.as_secs(),
            args.runs,
            args.runs,
            labels.join("; "),
            writer::WRITE_INTERVAL.as_millis()
        ),
        "failover: crash = kill -9 of the primary's raftgres, then of its postmaster; times from the kill. Lease \
         expiry = the Raft leader's log line expiring the dead node's session; 'holds the lease' = another node \
         answers GET /leader 200; promotion = another node answers pg_is_in_recovery() = false (probed every 50 ms). \
         A write gap ends at the first write after the promotion was seen; its resolution is 50 ms"
            .to_string(),
    ];
    if let Some(why) = &bench.haproxy_note {
        notes.push(format!("failover: {why}: the client only follows GET /primary"));
    }
    notes
}

/// `1.23 s`, or "not seen".
fn secs(value: Option<Duration>) -> String {
    value.map_or_else(|| "not seen".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn crash_rows(crashes: &[CrashRun], routes: &[Route]) -> Vec<Row> {
    let durations =
        |pick: &dyn Fn(&CrashRun) -> Option<Duration>| -> Vec<Duration> { crashes.iter().filter_map(pick).collect() };
    let mut rows: Vec<Row> = routes
        .iter()
        .enumerate()
        .map(|(route_idx, route)| {
            let gaps = durations(&|crash| crash.gaps.get(route_idx).copied().flatten());
            Row::latency(NAME, format!("crash: client write gap {}", route.label()), &gaps)
        })
        .collect();
    rows.push(Row::latency(NAME, "crash: lease expiry (Raft leader's log)", &durations(&|c| c.lease_expiry)));
    rows.push(Row::latency(
        NAME,
        "crash: another node holds the lease (GET /leader 200)",
        &durations(&|c| c.holds_lease),
    ));
    rows.push(Row::latency(NAME, "crash: promotion (pg_is_in_recovery() = false)", &durations(&|c| c.promotion)));
    let n_unhealed = crashes.iter().filter(|c| c.healed.is_err()).count();
    let healed_path = format!("crash: killed node restarted → healthy again ({n_unhealed} runs never healed)");
    rows.push(Row::latency(NAME, healed_path, &durations(&|c| c.healed.as_ref().ok().copied())));
    rows
}

fn switchover_rows(runs: &[SwitchoverRun], routes: &[Route], missing: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    for (route_idx, route) in routes.iter().enumerate() {
        let path = format!("switchover: client write gap {}", route.label());
        if missing {
            rows.push(Row::unavailable(NAME, path, Unit::Millis, SWITCHOVER_MISSING));
        } else {
            let gaps: Vec<Duration> =
                runs.iter().filter_map(|run| run.gaps.get(route_idx).copied().flatten()).collect();
            rows.push(Row::latency(NAME, path, &gaps));
        }
    }
    if !missing {
        let promotions: Vec<Duration> = runs.iter().filter_map(|run| run.promotion).collect();
        rows.push(Row::latency(NAME, "switchover: a node promoted (from the request)", &promotions));
        let n_unhealed = runs.iter().filter(|run| run.healed.is_err()).count();
        let healed: Vec<Duration> = runs.iter().filter_map(|run| run.healed.as_ref().ok().copied()).collect();
        let path = format!("switchover: cluster healthy again (from the request; {n_unhealed} runs never healed)");
        rows.push(Row::latency(NAME, path, &healed));
    }
    rows
}
