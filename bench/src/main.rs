//! `raftgres-bench`: runs raftgres' benchmarks against real processes, sockets and disks, and
//! prints their numbers as one table.
//!
//! One module per benchmark, each a subcommand returning a [`report::Table`]; `all` runs every
//! benchmark with its defaults and prints one combined table. Numbers are measured and printed,
//! never asserted. This file only parses the command line, sets up logging and dispatches.

mod cluster;
mod failover;
mod footprint;
mod health;
mod nodelog;
mod raft_write;
mod report;
mod writer;

use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::Subcommand;

use crate::cluster::BenchCluster;
use crate::cluster::Placement;
use crate::cluster::WithHaproxy;
use crate::report::Table;

const AFTER_HELP: &str = "\
The cluster benchmarks (failover, health, footprint, all) run real `raftgres run` processes with real
PostgreSQL on 127.0.0.1 (free ports, a temp dir), and HAProxy for failover when it is installed.
The raftgres binary is $RAFTGRES_BIN, else `raftgres` next to this program (target/release/raftgres
for `cargo run --release`); build it first: cargo build --release -p raftgres -p raftgres-bench
Every child process is stopped at the end. Progress goes to stderr, the table to stdout.";

/// raftgres benchmarks.
#[derive(Debug, Parser)]
#[command(name = "raftgres-bench", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Directory under which each benchmark creates (and removes) its temp dir; pick the disk
    /// you want to measure (default: the system temp dir for raft-write, /tmp for the cluster
    /// benchmarks, whose PostgreSQL socket paths must stay short).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Keep the cluster directory (node configs, logs, data) after a cluster benchmark.
    #[arg(long, global = true)]
    keep: bool,
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Commit latency of guarded writes and keep-alives on an in-process 3-node Raft cluster.
    RaftWrite(raft_write::Args),
    /// Client-visible write gap, lease expiry and promotion after kill -9 of the primary, and the
    /// write gap of a planned switchover and of a graceful stop of the primary, on a local 3-node
    /// cluster, without and with the nodes pushing role changes to HAProxy.
    Failover(failover::Args),
    /// Throughput and latency of a REST health check (GET /primary) under a bounded keep-alive load.
    Health(health::Args),
    /// Bootstrap time, then idle RSS and CPU of each raftgres process.
    Footprint(footprint::Args),
    /// Every benchmark with its defaults on one cluster (then raft-write), printed as one table.
    All,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli).await {
        Ok(table) => {
            println!("{}", table.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            // One line with the whole context chain, no backtrace: the usual failure is a missing binary.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Table> {
    let raft_dir = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    let base_dir = cli.dir.unwrap_or_else(|| PathBuf::from(cluster::DEFAULT_CLUSTER_BASE));
    let place = Placement { base_dir, keep: cli.keep };
    match cli.command {
        BenchCommand::RaftWrite(args) => raft_write::run(&args, &raft_dir).await,
        BenchCommand::Failover(args) => failover::run(&args, &place).await,
        BenchCommand::Health(args) => health::run(&args, &place).await,
        BenchCommand::Footprint(args) => footprint::run(&args, &place).await,
        BenchCommand::All => all(&place, &raft_dir).await,
    }
}

/// One cluster for the cluster benchmarks (idle footprint first, then health, then failover), then
/// failover again on a fresh cluster whose nodes push to HAProxy (when installed), then raft-write
/// in-process once the clusters are gone; rows in the order of the table.
async fn all(place: &Placement, raft_dir: &Path) -> anyhow::Result<Table> {
    let mut bench = BenchCluster::start(place, WithHaproxy::IfInstalled).await?;
    let bootstrap = bench.bootstrap;
    let measured = async {
        let footprint = footprint::run_on(&bench, &footprint::Args::default()).await?;
        let health = health::run_on(&bench, &health::Args::default()).await?;
        let failover = failover::run_on(&mut bench, &failover::Args::default()).await?;
        anyhow::Ok((footprint, health, failover))
    }
    .await;
    let stopped = bench.shutdown().await;
    if let (Err(_), Err(e)) = (&measured, &stopped) {
        tracing::warn!("failed to {e:#}");
    }
    let (footprint, health, mut failover) = measured?;
    stopped?;
    let failover_args = failover::Args::default();
    if failover_args.push.with_push() {
        failover.append(failover::run_push(&failover_args, place).await?);
    }
    failover.append(failover::leader_loss::run(place, failover::leader_loss::DEFAULT_RUNS).await?);
    let raft_write = raft_write::run(&raft_write::Args::default(), raft_dir).await?;
    let mut table = Table { rows: vec![footprint::bootstrap_row(bootstrap)], notes: Vec::new() };
    table.append(failover);
    table.append(raft_write);
    table.append(health);
    table.append(footprint);
    Ok(table)
}

/// Logs go to stderr at WARN unless `RUST_LOG` says otherwise, so the table stays clean. openraft
/// is off by default, as in raftgres itself: the in-process raft-write cluster makes it log routine
/// peer refusals at ERROR. (`RUST_LOG` also reaches the nodes, which inherit the environment.)
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=off"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
