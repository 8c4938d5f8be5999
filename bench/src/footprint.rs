//! `footprint`: what an idle raftgres costs. Bootstrap time of a 3-node cluster (`start_all` →
//! one primary, two streaming replicas), then each node's raftgres process sampled once a second
//! for `--seconds`: resident memory (`VmRSS` in `/proc/<pid>/status`) and CPU (`utime + stime` of
//! `/proc/<pid>/stat`, per one-second window, in percent of one core).
//!
//! Only the raftgres processes are measured, not PostgreSQL. The `/proc` parsing is PURE; numbers
//! are printed, never asserted.

use std::time::Duration;

use anyhow::Context;
use nix::unistd::SysconfVar;
use tokio::time::Instant;

use crate::cluster;
use crate::cluster::BenchCluster;
use crate::cluster::Placement;
use crate::cluster::WithHaproxy;
use crate::report::Row;
use crate::report::Table;
use crate::report::Unit;

/// The subcommand's name, the `benchmark` column of its rows.
pub const NAME: &str = "footprint";
/// Default idle sampling duration.
pub const DEFAULT_SECONDS: u64 = 10;
/// Longest accepted sampling, so the benchmark stays bounded.
const MAX_SECONDS: u64 = 600;
/// Sampling interval (also the CPU window).
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Options of `footprint`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds of idle sampling (at most 600).
    #[arg(long, default_value_t = DEFAULT_SECONDS)]
    pub seconds: u64,
}

impl Default for Args {
    fn default() -> Self {
        Args { seconds: DEFAULT_SECONDS }
    }
}

/// Starts a cluster (timing the bootstrap), samples it idle, stops it, and returns the rows.
pub async fn run(args: &Args, place: &Placement) -> anyhow::Result<Table> {
    let bench = BenchCluster::start(place, WithHaproxy::No).await?;
    let bootstrap = bench.bootstrap;
    let measured = run_on(&bench, args).await;
    let stopped = bench.shutdown().await;
    if let (Err(_), Err(e)) = (&measured, &stopped) {
        tracing::warn!("failed to {e:#}");
    }
    let mut table = Table { rows: vec![bootstrap_row(bootstrap)], notes: Vec::new() };
    table.append(measured?);
    stopped?;
    Ok(table)
}

/// The bootstrap row: `start_all` until one primary and two streaming replicas.
pub fn bootstrap_row(bootstrap: Duration) -> Row {
    let path = format!("bootstrap: start {} nodes → one primary, two streaming replicas", cluster::N_NODES);
    Row::latency(NAME, path, &[bootstrap])
}

/// Samples every node's raftgres process while the cluster is idle.
pub async fn run_on(bench: &BenchCluster, args: &Args) -> anyhow::Result<Table> {
    anyhow::ensure!((1..=MAX_SECONDS).contains(&args.seconds), "--seconds must be within 1..={MAX_SECONDS}");
    let c = &bench.cluster;
    let primary_idx = cluster::wait_healthy(c, Instant::now() + cluster::HEALTHY_TIMEOUT).await?;
    let ticks_per_sec = clock_ticks_per_second()?;
    let mut procs = Vec::new();
    for node in c.nodes() {
        let pid = c.pid(node.node_idx).with_context(|| format!("{} is not running", node.name))?;
        let role = if node.node_idx == primary_idx { "primary" } else { "replica" };
        procs.push(Sampled {
            label: format!("{} ({role})", node.name),
            pid,
            guard: find_guard(pid),
            rss_mib: Vec::new(),
            anon_mib: Vec::new(),
            file_mib: Vec::new(),
            guard_rss_mib: Vec::new(),
            cpu_percent: Vec::new(),
            total_cpu_secs: 0.0,
            total_wall_secs: 0.0,
        });
    }
    let load_before = cluster::load_average();
    eprintln!("footprint: sampling {} raftgres processes for {} s", procs.len(), args.seconds);
    let mut last = read_all_ticks(&procs)?;
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.tick().await;
    for _ in 0..args.seconds {
        ticks.tick().await;
        let now = read_all_ticks(&procs)?;
        for (sampled, (before, after)) in procs.iter_mut().zip(last.iter().zip(&now)) {
            let cpu_secs = after.1.saturating_sub(before.1) as f64 / ticks_per_sec;
            let wall_secs = after.0.duration_since(before.0).as_secs_f64();
            sampled.cpu_percent.push(100.0 * cpu_secs / wall_secs.max(f64::EPSILON));
            sampled.total_cpu_secs += cpu_secs;
            sampled.total_wall_secs += wall_secs;
            let status = read_status(sampled.pid)?;
            let kib = |key: &str| parse_status_kib(&status, key).map_or(0.0, |kib| kib as f64 / 1024.0);
            sampled.rss_mib.push(kib("VmRSS:"));
            sampled.anon_mib.push(kib("RssAnon:"));
            sampled.file_mib.push(kib("RssFile:"));
            if let Some(guard) = sampled.guard {
                // A guard that exited (it should not while its raftgres runs) counts as 0.
                let guard_status = read_status(guard).unwrap_or_default();
                let guard_kib = parse_status_kib(&guard_status, "VmRSS:").unwrap_or(0);
                sampled.guard_rss_mib.push(guard_kib as f64 / 1024.0);
            }
        }
        last = now;
    }
    let mut rows = Vec::new();
    for sampled in &procs {
        rows.push(Row::of(NAME, format!("idle RSS of raftgres {}", sampled.label), Unit::MiB, &sampled.rss_mib));
        let label = &sampled.label;
        rows.push(Row::of(NAME, format!("  of which anonymous (heap, stacks) {label}"), Unit::MiB, &sampled.anon_mib));
        rows.push(Row::of(NAME, format!("  of which the binary's code (file) {label}"), Unit::MiB, &sampled.file_mib));
        if !sampled.guard_rss_mib.is_empty() {
            rows.push(Row::of(NAME, format!("idle RSS of the fence guard {label}"), Unit::MiB, &sampled.guard_rss_mib));
            let both: Vec<f64> = sampled.rss_mib.iter().zip(&sampled.guard_rss_mib).map(|(a, b)| a + b).collect();
            rows.push(Row::of(NAME, format!("idle RSS of raftgres + guard {label}"), Unit::MiB, &both));
        }
    }
    for sampled in &procs {
        rows.push(Row::of(
            NAME,
            format!("idle CPU of raftgres {}", sampled.label),
            Unit::CpuPercent,
            &sampled.cpu_percent,
        ));
    }
    let means: Vec<String> = procs
        .iter()
        .map(|p| format!("{} {:.2}%", p.label, 100.0 * p.total_cpu_secs / p.total_wall_secs.max(f64::EPSILON)))
        .collect();
    let notes = vec![
        format!(
            "footprint: raftgres and its fence guard (not PostgreSQL), sampled every second for {} s; CPU per 1 s window \
             has a resolution of {:.0}% ({ticks_per_sec} ticks/s); mean CPU over the whole period: {}",
            args.seconds,
            100.0 / ticks_per_sec,
            means.join(", ")
        ),
        format!("footprint: load average before {load_before}, after {}", cluster::load_average()),
    ];
    Ok(Table { rows, notes })
}

struct Sampled {
    label: String,
    pid: u32,
    /// The node's fence guard (`raftgres-guard` or `raftgres guard`), a child of its raftgres.
    guard: Option<u32>,
    rss_mib: Vec<f64>,
    anon_mib: Vec<f64>,
    file_mib: Vec<f64>,
    guard_rss_mib: Vec<f64>,
    cpu_percent: Vec<f64>,
    total_cpu_secs: f64,
    total_wall_secs: f64,
}

/// `(when, utime + stime ticks)` of every sampled process.
fn read_all_ticks(procs: &[Sampled]) -> anyhow::Result<Vec<(Instant, u64)>> {
    procs.iter().map(|sampled| Ok((Instant::now(), read_cpu_ticks(sampled.pid)?))).collect()
}

fn read_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    parse_cpu_ticks(&text).with_context(|| format!("parse utime and stime in {path}"))
}

fn read_status(pid: u32) -> anyhow::Result<String> {
    let path = format!("/proc/{pid}/status");
    std::fs::read_to_string(&path).with_context(|| format!("read {path}"))
}

/// The fence guard child (`raftgres-guard`, or `raftgres guard` without it) of the raftgres process `parent`,
/// found in `/proc`.
fn find_guard(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
        let ppid = parse_status_kib(&status, "PPid:")?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let mut words = cmdline.split(|byte| *byte == 0);
        let program = words.next().unwrap_or_default();
        let small = program.ends_with(b"/raftgres-guard") || program == b"raftgres-guard";
        let is_guard = small || words.next() == Some(b"guard".as_slice());
        (u64::from(parent) == ppid && is_guard).then_some(pid)
    })
}

fn clock_ticks_per_second() -> anyhow::Result<f64> {
    let ticks = nix::unistd::sysconf(SysconfVar::CLK_TCK).context("read sysconf(_SC_CLK_TCK)")?;
    let ticks = ticks.filter(|t| *t > 0).context("sysconf(_SC_CLK_TCK) has no value")?;
    Ok(ticks as f64)
}

/// PURE: `utime + stime` (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the comm, field 3 (state) is index 0, so field N is index N - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// PURE: the number after `key` (`VmRSS:`, `RssAnon:`, `RssFile:` in KiB; `PPid:`) in `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_after_a_tricky_comm() {
        let stat = "4242 (raft gres) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 250 75 0 0 20 0 12 0 9000 1000000 2500";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn short_stat_has_no_ticks() {
        assert_eq!(parse_cpu_ticks("4242 (raftgres) S 1 2"), None);
    }

    #[test]
    fn rss_is_read_in_kib() {
        let status = "Name:\traftgres\nVmPeak:\t  900000 kB\nVmRSS:\t   23456 kB\nThreads:\t5\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(23456));
        assert_eq!(parse_status_kib("Name:\tkthreadd\n", "VmRSS:"), None);
        let status = "PPid:\t4100\nRssAnon:\t    5148 kB\nRssFile:\t   21940 kB\n";
        assert_eq!(parse_status_kib(status, "RssAnon:"), Some(5148));
        assert_eq!(parse_status_kib(status, "RssFile:"), Some(21940));
        assert_eq!(parse_status_kib(status, "PPid:"), Some(4100));
    }
}
