//! `health`: throughput and latency of the REST health check HAProxy polls (`GET /primary` by
//! default) on one node of a running 3-node cluster, under a bounded load: `--connections`
//! keep-alive HTTP/1.1 connections, each sending its next request as soon as the last is answered,
//! for `--seconds`.
//!
//! Each connection is its own client with a one-connection pool, so the load really uses that many
//! sockets; the first request of each is a warm-up and not sampled. The load generator shares the
//! machine's cores with the node, so this measures the pair. Numbers are printed, never asserted.

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

/// The subcommand's name, the `benchmark` column of its rows.
pub const NAME: &str = "health";
/// Default load duration.
pub const DEFAULT_SECONDS: u64 = 10;
/// Default concurrent keep-alive connections.
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Longest accepted load, so the benchmark stays bounded.
const MAX_SECONDS: u64 = 600;
/// Bound of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Width of a throughput window.
const WINDOW: Duration = Duration::from_secs(1);

/// Options of `health`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds of load (at most 600).
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    pub seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = DEFAULT_CONNECTIONS)]
    pub connections: usize,
    /// The health endpoint to request; the node answering 200 on it is loaded (else the primary).
    #[arg(long, default_value = "/primary")]
    pub path: String,
}

impl Default for Args {
    fn default() -> Self {
        Args { seconds: DEFAULT_SECONDS, connections: DEFAULT_CONNECTIONS, path: "/primary".into() }
    }
}

/// Starts a cluster, loads one node, stops the cluster, and returns the rows.
pub async fn run(args: &Args, place: &Placement) -> anyhow::Result<Table> {
    let bench = BenchCluster::start(place, WithHaproxy::No).await?;
    let measured = run_on(&bench, args).await;
    let stopped = bench.shutdown().await;
    if let (Err(_), Err(e)) = (&measured, &stopped) {
        tracing::warn!("failed to {e:#}");
    }
    let table = measured?;
    stopped?;
    Ok(table)
}

/// One connection's samples: when each answer arrived (since the load started) and how long it took.
#[derive(Debug, Default)]
struct Samples {
    answered_at: Vec<Duration>,
    latencies: Vec<Duration>,
    non_200: usize,
    errors: usize,
}

/// Loads the node answering 200 on `args.path` (else the primary) and returns the rows.
pub async fn run_on(bench: &BenchCluster, args: &Args) -> anyhow::Result<Table> {
    anyhow::ensure!(args.connections >= 1, "--connections must be at least 1");
    anyhow::ensure!((1..=MAX_SECONDS).contains(&args.seconds), "--seconds must be within 1..={MAX_SECONDS}");
    let c = &bench.cluster;
    let primary_idx = cluster::wait_healthy(c, Instant::now() + cluster::HEALTHY_TIMEOUT).await?;
    let http = cluster::probe_client()?;
    let mut target_idx = primary_idx;
    for node in c.nodes() {
        if cluster::get_status(&http, &format!("{}{}", c.api(node.node_idx), args.path)).await == Some(200) {
            target_idx = node.node_idx;
            break;
        }
    }
    let url = format!("{}{}", c.api(target_idx), args.path);
    let load_before = cluster::load_average();
    eprintln!("health: {} connections on GET {url} for {} s", args.connections, args.seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        tasks.push(tokio::spawn(load(url.clone(), started, deadline)));
    }
    let mut all = Samples::default();
    for task in tasks {
        let samples = task.await.context("join a load connection")??;
        all.answered_at.extend(samples.answered_at);
        all.latencies.extend(samples.latencies);
        all.non_200 += samples.non_200;
        all.errors += samples.errors;
    }
    let load_after = cluster::load_average();
    let target = &c.node(target_idx).name;
    let per_window = per_window_counts(&all.answered_at, args.seconds);
    let rows = vec![
        Row::of(
            NAME,
            format!("GET {} on {target}: throughput per 1 s window", args.path),
            Unit::PerSecond,
            &per_window,
        ),
        Row::latency(NAME, format!("GET {} on {target}: latency", args.path), &all.latencies),
    ];
    let total = all.latencies.len();
    let notes = vec![
        format!(
            "health: {} keep-alive connections for {} s on {target} ({}); {total} sampled answers ({:.0} req/s \
             overall), {} not 200, {} errors",
            args.connections,
            args.seconds,
            if target_idx == primary_idx { "the primary" } else { "a replica" },
            total as f64 / args.seconds as f64,
            all.non_200,
            all.errors
        ),
        format!("health: load average before {load_before}, after {load_after} (the load generator shares the cores)"),
    ];
    Ok(Table { rows, notes })
}

/// One keep-alive connection sending requests back to back until `deadline`.
async fn load(url: String, started: Instant, deadline: Instant) -> anyhow::Result<Samples> {
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(1)
        .no_proxy()
        .build()
        .context("build the HTTP client")?;
    // Warm-up: opens the connection, not sampled.
    let _ = http.get(&url).send().await.map(|res| res.bytes());
    let mut samples = Samples::default();
    while Instant::now() < deadline {
        let sent = Instant::now();
        let answered = match http.get(&url).send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                // Read the whole body so the connection is reused.
                res.bytes().await.map(|_| status)
            }
            Err(e) => Err(e),
        };
        let now = Instant::now();
        match answered {
            Ok(status) => {
                samples.latencies.push(now.duration_since(sent));
                samples.answered_at.push(now.duration_since(started));
                if status != 200 {
                    samples.non_200 += 1;
                }
            }
            Err(_) => samples.errors += 1,
        }
    }
    Ok(samples)
}

/// PURE: answers per one-second window over the first `seconds` seconds.
fn per_window_counts(answered_at: &[Duration], seconds: u64) -> Vec<f64> {
    let mut counts = vec![0.0; usize::try_from(seconds).unwrap_or(0)];
    for at in answered_at {
        let window_idx = (at.as_nanos() / WINDOW.as_nanos()) as usize;
        if let Some(count) = counts.get_mut(window_idx) {
            *count += 1.0;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_in_their_window_and_late_ones_dropped() {
        let ms = |v: u64| Duration::from_millis(v);
        let counts = per_window_counts(&[ms(10), ms(999), ms(1000), ms(2500), ms(3000)], 3);
        assert_eq!(counts, vec![2.0, 1.0, 1.0]);
    }
}
