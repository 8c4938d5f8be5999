//! `failover`: what a client sees when the primary crashes, during a planned switchover and during a graceful
//! stop of the primary's raftgres, on a local 3-node cluster with real PostgreSQL and the default HA timing.
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
//! a 404/501 answer prints "switchover endpoint not available" instead of failing. A graceful-stop run ([`stop`])
//! SIGTERMs the primary's raftgres, which hands the primary over as a switchover does, measures the write gap from
//! the SIGTERM, and starts the node again.
//!
//! Every run kind is measured on a cluster whose nodes have no `haproxy` section (HAProxy's health checks alone)
//! and, when HAProxy is installed, again on a fresh cluster whose nodes push role changes to HAProxy's runtime API
//! (issue #17); `--push only|off|both` picks, and the push cluster's rows say "(push)".
//! When a cluster does not heal after a run (a raftgres bug, not a benchmark result), its node logs
//! are copied aside and a fresh cluster takes over the remaining runs, at most a few times.
//! Every wait is bounded; numbers are printed, never asserted.

mod crash;
pub mod leader_loss;
mod observer;
mod stop;
mod switchover;

use std::time::Duration;

use anyhow::Context;
use raftgres::demo::haproxy;
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
use stop::StopRun;
use switchover::SwitchoverOutcome;
use switchover::SwitchoverRun;

/// The subcommand's name, the `benchmark` column of its rows.
pub const NAME: &str = "failover";
/// Default number of crash, switchover and graceful-stop runs (the issue asks for at least 5).
pub const DEFAULT_RUNS: usize = 5;
/// Bound from the kill (or the switchover request, or the SIGTERM) until promotion and resumed writes.
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
    /// Crash runs, and as many switchover and graceful-stop runs; min / median / max are over these runs.
    #[arg(long, default_value_t = DEFAULT_RUNS)]
    pub runs: usize,
    /// Kills of a Raft leader that is not the primary (and of a replica with leadership following
    /// the primary), idle and as many under load, each on its own cluster; 0 skips them.
    #[arg(long, default_value_t = leader_loss::DEFAULT_RUNS)]
    pub leader_loss_runs: usize,
    /// Measure on a cluster whose nodes push role changes to HAProxy's runtime API (`only`), on one without the
    /// push (`off`), or on both, one after the other (the push needs HAProxy installed).
    #[arg(long, value_enum, default_value_t = Push::Both)]
    pub push: Push,
}

impl Default for Args {
    fn default() -> Self {
        Args { runs: DEFAULT_RUNS, leader_loss_runs: leader_loss::DEFAULT_RUNS, push: Push::Both }
    }
}

/// Which clusters the runs are measured on (issue #17: the write gap through HAProxy with and without the push).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Push {
    /// Only on a cluster whose nodes push role changes to HAProxy's runtime API.
    Only,
    /// Only on a cluster without the `haproxy` section: HAProxy's health checks alone.
    Off,
    /// On both, the cluster without the push first.
    Both,
}

impl Push {
    /// Whether a cluster without the push is measured.
    pub fn without_push(self) -> bool {
        matches!(self, Push::Off | Push::Both)
    }

    /// Whether a cluster with the push is measured.
    pub fn with_push(self) -> bool {
        matches!(self, Push::Only | Push::Both)
    }
}

/// Measures on a cluster without the push and (when HAProxy is installed) on a fresh one with it, as `args.push`
/// asks, each started (with HAProxy when installed) and stopped here, then the leader-loss runs; returns the rows.
pub async fn run(args: &Args, place: &Placement) -> anyhow::Result<Table> {
    let mut table = Table::default();
    if args.push.without_push() {
        table.append(run_cluster(args, place, WithHaproxy::IfInstalled).await?);
    }
    if args.push.with_push() {
        table.append(run_push(args, place).await?);
    }
    if args.leader_loss_runs > 0 {
        table.append(leader_loss::run(place, args.leader_loss_runs).await?);
    }
    Ok(table)
}

/// The runs on a fresh cluster whose nodes push role changes to HAProxy's runtime API; only a note when HAProxy is
/// not installed.
pub async fn run_push(args: &Args, place: &Placement) -> anyhow::Result<Table> {
    if haproxy::find().is_none() {
        let note =
            format!("{NAME} (push): HAProxy is not installed (apt-get install -y haproxy): no runs with the push");
        return Ok(Table { rows: Vec::new(), notes: vec![note] });
    }
    run_cluster(args, place, WithHaproxy::IfInstalledWithPush).await
}

/// Starts a cluster, measures, stops it, and returns the rows.
async fn run_cluster(args: &Args, place: &Placement, with_haproxy: WithHaproxy) -> anyhow::Result<Table> {
    let mut bench = BenchCluster::start(place, with_haproxy).await?;
    let measured = run_on(&mut bench, args).await;
    let stopped = bench.shutdown().await;
    if let (Err(_), Err(e)) = (&measured, &stopped) {
        tracing::warn!("failed to {e:#}");
    }
    let table = measured?;
    stopped?;
    Ok(table)
}

/// How a cluster's rows and notes are labelled: the plain run kinds, or with " (push)" on a pushing cluster.
struct Labels {
    /// The notes' prefix: "failover" or "failover (push)".
    notes: String,
    crash: String,
    switchover: String,
    stop: String,
}

impl Labels {
    fn of(push: bool) -> Labels {
        let label = |kind: &str| if push { format!("{kind} (push)") } else { kind.to_string() };
        Labels {
            notes: label(NAME),
            crash: label("crash"),
            switchover: label("switchover"),
            stop: label("graceful stop"),
        }
    }
}

/// What the runs gathered so far.
struct Runs {
    crashes: Vec<CrashRun>,
    switchovers: Vec<SwitchoverRun>,
    switchover_missing: bool,
    stops: Vec<StopRun>,
    notes: Vec<String>,
    fresh_left: usize,
    labels: Labels,
}

/// Measures on a running cluster (which may be replaced by a fresh one when it does not heal): crash runs, then
/// switchover runs, then graceful-stop runs; the rows are labelled " (push)" when its nodes push to HAProxy.
pub async fn run_on(bench: &mut BenchCluster, args: &Args) -> anyhow::Result<Table> {
    let load_before = cluster::load_average();
    prepare(bench).await?;
    // Routes are rebuilt per run (a fresh cluster has new ports); their labels and order stay the same.
    let labelled = routes(bench);
    let labels = Labels::of(bench.pushes());
    let notes = setup_notes(bench, &labelled, args, &labels);
    let mut runs = Runs {
        crashes: Vec::new(),
        switchovers: Vec::new(),
        switchover_missing: false,
        stops: Vec::new(),
        notes,
        fresh_left: MAX_FRESH_CLUSTERS,
        labels,
    };
    if crash_runs(bench, args, &mut runs).await? && switchover_runs(bench, args, &mut runs).await? {
        stop_runs(bench, args, &mut runs).await?;
    }
    let after = cluster::load_average();
    runs.notes.push(format!("{}: load average before {load_before}, after {after}", runs.labels.notes));
    let mut rows = crash_rows(&runs.crashes, &labelled, &runs.labels.crash);
    rows.extend(switchover_rows(&runs.switchovers, &labelled, runs.switchover_missing, &runs.labels.switchover));
    rows.extend(stop::stop_rows(&runs.stops, &labelled, &runs.labels.stop));
    Ok(Table { rows, notes: runs.notes })
}

/// The crash runs; false when the cluster is left unusable (no fresh cluster left).
async fn crash_runs(bench: &mut BenchCluster, args: &Args, runs: &mut Runs) -> anyhow::Result<bool> {
    for run_idx in 1..=args.runs {
        let kind = &runs.labels.crash;
        eprintln!("{NAME}: {kind} run {run_idx}/{}", args.runs);
        let current = routes(bench);
        let broken = match crash::crash_run(&bench.cluster, &current).await {
            Ok(crash) => {
                runs.notes.push(format!("{NAME}: {kind} run {run_idx}: {}", crash.describe(&current)));
                let broken = crash.healed.is_err();
                runs.crashes.push(crash);
                broken
            }
            Err(e) => {
                runs.notes.push(format!("{NAME}: {kind} run {run_idx} measured nothing: {e:#}"));
                true
            }
        };
        if broken && !recover(bench, runs).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The switchover runs (stopped early when the endpoint is missing); false when the cluster is left unusable.
async fn switchover_runs(bench: &mut BenchCluster, args: &Args, runs: &mut Runs) -> anyhow::Result<bool> {
    for run_idx in 1..=args.runs {
        let kind = &runs.labels.switchover;
        eprintln!("{NAME}: {kind} run {run_idx}/{}", args.runs);
        let current = routes(bench);
        let broken = match switchover::switchover_run(&bench.cluster, &current).await {
            Ok(SwitchoverOutcome::Done(done)) => {
                runs.notes.push(format!("{NAME}: {kind} run {run_idx}: {}", done.describe(&current)));
                let broken = done.healed.is_err();
                runs.switchovers.push(done);
                broken
            }
            Ok(SwitchoverOutcome::EndpointMissing(status)) => {
                let note = format!("{}: POST /switchover answered {status}: {SWITCHOVER_MISSING}", runs.labels.notes);
                runs.notes.push(note);
                runs.switchover_missing = true;
                return Ok(true);
            }
            Err(e) => {
                runs.notes.push(format!("{NAME}: {kind} run {run_idx} measured nothing: {e:#}"));
                true
            }
        };
        // The graceful-stop runs follow, so a cluster that did not heal is replaced even after the last run.
        if broken && !recover(bench, runs).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The graceful-stop runs (SIGTERM of the primary's raftgres: a hand-over).
async fn stop_runs(bench: &mut BenchCluster, args: &Args, runs: &mut Runs) -> anyhow::Result<()> {
    for run_idx in 1..=args.runs {
        let kind = &runs.labels.stop;
        eprintln!("{NAME}: {kind} run {run_idx}/{}", args.runs);
        let current = routes(bench);
        let broken = match stop::stop_run(&bench.cluster, &current).await {
            Ok(stopped) => {
                runs.notes.push(format!("{NAME}: {kind} run {run_idx}: {}", stopped.describe(&current)));
                let broken = stopped.healed.is_err();
                runs.stops.push(stopped);
                broken
            }
            Err(e) => {
                runs.notes.push(format!("{NAME}: {kind} run {run_idx} measured nothing: {e:#}"));
                true
            }
        };
        if broken && run_idx < args.runs && !recover(bench, runs).await? {
            break;
        }
    }
    Ok(())
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
        runs.notes.push(format!("{}: {MAX_FRESH_CLUSTERS} fresh clusters used up; no further runs", runs.labels.notes));
        return Ok(false);
    }
    runs.fresh_left -= 1;
    bench.replace_with_fresh().await.context("start a fresh cluster for the remaining runs")?;
    prepare(bench).await?;
    runs.notes.push(format!("{}: a fresh cluster was started for the remaining runs", runs.labels.notes));
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

fn setup_notes(bench: &BenchCluster, routes: &[Route], args: &Args, labels: &Labels) -> Vec<String> {
    let route_labels: Vec<&str> = routes.iter().map(Route::label).collect();
    let prefix = &labels.notes;
    let push = match &bench.push_socket {
        Some(socket) => format!("the nodes push role changes to HAProxy's runtime API ({})", socket.display()),
        None => "the nodes have no haproxy section (HAProxy's health checks alone)".to_string(),
    };
    let mut notes = vec![
        format!(
            "{prefix}: {} nodes, default HA timing (ttl {} s, loop_wait {} s, retry_timeout {} s), {} crash runs, then \
             {} switchover runs, then {} graceful-stop runs; {push}; one client per route ({}) INSERTs every {} ms \
             (statement_timeout 1 s, new connection after any error)",
            cluster::N_NODES,
            raftgres::config::defaults::TTL.as_secs(),
            raftgres::config::defaults::LOOP_WAIT.as_secs(),
            raftgres::config::defaults::RETRY_TIMEOUT.as_secs(),
            args.runs,
            args.runs,
            args.runs,
            route_labels.join("; "),
            writer::WRITE_INTERVAL.as_millis()
        ),
        format!(
            "{prefix}: crash = kill -9 of the primary's raftgres, then of its postmaster; times from the kill. Lease \
             expiry = the Raft leader's log line expiring the dead node's session; 'holds the lease' = another node \
             answers GET /leader 200; promotion = another node answers pg_is_in_recovery() = false (probed every 50 \
             ms). Switchover and graceful stop (SIGTERM of the primary's raftgres, a hand-over) time from the request \
             and from the SIGTERM. A write gap ends at the first write after the promotion was seen; its resolution \
             is 50 ms"
        ),
    ];
    if let Some(why) = &bench.haproxy_note {
        notes.push(format!("{prefix}: {why}: the client only follows GET /primary"));
    }
    notes
}

/// `1.23 s`, or "not seen".
fn secs(value: Option<Duration>) -> String {
    value.map_or_else(|| "not seen".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn crash_rows(crashes: &[CrashRun], routes: &[Route], kind: &str) -> Vec<Row> {
    let durations =
        |pick: &dyn Fn(&CrashRun) -> Option<Duration>| -> Vec<Duration> { crashes.iter().filter_map(pick).collect() };
    let mut rows: Vec<Row> = routes
        .iter()
        .enumerate()
        .map(|(route_idx, route)| {
            let gaps = durations(&|crash| crash.gaps.get(route_idx).copied().flatten());
            Row::latency(NAME, format!("{kind}: client write gap {}", route.label()), &gaps)
        })
        .collect();
    rows.push(Row::latency(NAME, format!("{kind}: lease expiry (Raft leader's log)"), &durations(&|c| c.lease_expiry)));
    let holds_path = format!("{kind}: another node holds the lease (GET /leader 200)");
    rows.push(Row::latency(NAME, holds_path, &durations(&|c| c.holds_lease)));
    let promotion_path = format!("{kind}: promotion (pg_is_in_recovery() = false)");
    rows.push(Row::latency(NAME, promotion_path, &durations(&|c| c.promotion)));
    let n_unhealed = crashes.iter().filter(|c| c.healed.is_err()).count();
    let healed_path = format!("{kind}: killed node restarted → healthy again ({n_unhealed} runs never healed)");
    rows.push(Row::latency(NAME, healed_path, &durations(&|c| c.healed.as_ref().ok().copied())));
    rows
}

fn switchover_rows(runs: &[SwitchoverRun], routes: &[Route], missing: bool, kind: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for (route_idx, route) in routes.iter().enumerate() {
        let path = format!("{kind}: client write gap {}", route.label());
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
        rows.push(Row::latency(NAME, format!("{kind}: a node promoted (from the request)"), &promotions));
        let n_unhealed = runs.iter().filter(|run| run.healed.is_err()).count();
        let healed: Vec<Duration> = runs.iter().filter_map(|run| run.healed.as_ref().ok().copied()).collect();
        let path = format!("{kind}: cluster healthy again (from the request; {n_unhealed} runs never healed)");
        rows.push(Row::latency(NAME, path, &healed));
    }
    rows
}
