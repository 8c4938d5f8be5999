//! `raftgres chaos`: a local three-node cluster with real PostgreSQL under a seeded sequence of
//! faults, a write workload and a write-probe sampler, then four checkers (single primary, no lost
//! acknowledged write, liveness, clean logs) and a summary ending with `violations: N`.
//!
//! Modules: [`schedule`] (the seeded plan, pure), [`faults`] (inject and heal), [`workload`]
//! (clients), [`sampler`] (write probes and lease views), [`history`] (what is recorded),
//! [`checkers`] (pure), [`report`] (pure), [`net`] (short-timeout SQL and REST access).
//! It drives nodes only from outside, through [`LocalCluster`] and a [`ProxyMesh`] on the raft
//! links; the one thing it can change inside a node is the deliberately broken mode
//! ([`BREAK_ENV`]), which exists to prove the checkers can fail.

pub mod checkers;
pub mod faults;
pub mod history;
pub mod net;
pub mod netns;
pub mod report;
pub mod resources;
pub mod sampler;
pub mod schedule;
mod unsafe_break;
pub mod workload;

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use raft::faultproxy::ProxyMesh;
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use self::unsafe_break::unsafe_break_no_demote;
pub use self::unsafe_break::BREAK_ENV;

use self::checkers::Violation;
use self::history::FaultRecord;
use self::history::Outcome;
use self::history::Recorder;
use self::net::Endpoints;
use self::report::Summary;
use self::schedule::FaultKind;
use self::schedule::Plan;
use crate::demo::cluster::ClusterSpec;
use crate::demo::cluster::LocalCluster;

/// How long the cluster may take to become healthy at start.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the workload keeps running once the cluster healed, to show writes work again.
const AFTER_HEAL: Duration = Duration::from_secs(5);
/// How long the replicas may take to replay everything the primary has.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// `raftgres chaos`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Seconds of fault injection (the run takes longer: start, heal, convergence, checks).
    #[arg(long, default_value_t = 120)]
    pub duration: u64,
    /// Seed of the fault plan; the same seed replays the same sequence of faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// `sync` (synchronous_mode on: no acknowledged write may be lost) or `async` (losses counted).
    #[arg(long, default_value = "sync", value_parser = ["sync", "async"])]
    pub mode: String,
    /// Cluster directory (configs, data, logs); an old chaos directory there is wiped first.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the directory after a clean run (it is always kept after a violation).
    #[arg(long)]
    pub keep: bool,
    /// Number of writing clients.
    #[arg(long, default_value_t = 3)]
    pub clients: usize,
    /// Only these fault kinds, comma-separated (default: all).
    #[arg(long, default_value = "")]
    pub faults: String,
    /// Seconds the cluster may take to heal once the faults stop (the liveness bound).
    #[arg(long, default_value_t = 60)]
    pub liveness_bound: u64,
    /// Seconds the cluster may take to recover after one fault; a fault it does not recover from
    /// is a liveness violation and ends the fault loop.
    #[arg(long, default_value_t = 120)]
    pub recovery_timeout: u64,
    /// `loopback` (every node on 127.0.0.1; network faults cut the Raft links only) or `netns`
    /// (every node in a network namespace of its own: faults cut Raft, replication and clients).
    #[arg(long, default_value = "loopback", value_parser = ["loopback", "netns"])]
    pub net: String,
    /// `direct` (the clients find the primary with `GET /primary`) or `haproxy` (they write through
    /// HAProxy's primary port, configured as in Patroni's tutorial).
    #[arg(long, default_value = "direct", value_parser = ["direct", "haproxy"])]
    pub via: String,
    /// `ttl` of the cluster, seconds (default: the shipped default).
    #[arg(long)]
    pub ttl: Option<u64>,
    /// `loop_wait` of the cluster, seconds (default: the shipped default).
    #[arg(long)]
    pub loop_wait: Option<u64>,
    /// `retry_timeout` of the cluster, seconds (default: the shipped default).
    #[arg(long)]
    pub retry_timeout: Option<u64>,
    /// Test the harness: run deliberately broken nodes (`no-demote`).
    #[arg(long, hide = true, value_parser = ["no-demote"])]
    pub r#break: Option<String>,
}

/// Runs the chaos test and prints its summary; returns the number of violations.
pub async fn run(args: ChaosArgs) -> anyhow::Result<usize> {
    if args.r#break.is_some() && !cfg!(feature = "chaos-break") {
        anyhow::bail!(
            "--break needs a raftgres built with the `chaos-break` feature (this one ignores {BREAK_ENV}, so its \
             nodes would fence as always); build one with: cargo build --features chaos-break"
        );
    }
    let asked = schedule::parse_kinds(&args.faults).map_err(anyhow::Error::msg)?;
    if args.r#break.is_some() {
        // Inherited by the `raftgres run` children; set before any of them starts.
        std::env::set_var(BREAK_ENV, "no-demote");
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/raftgres-chaos-{}", args.seed)));
    prepare_dir(&dir)?;
    let haproxy_program = match args.via.as_str() {
        "haproxy" => Some(
            crate::demo::haproxy::find()
                .context("--via haproxy: HAProxy is not installed (apt-get install -y haproxy)")?,
        ),
        _ => None,
    };
    let netns = args.net == "netns";
    let lab = if netns {
        Some(netns::Lab::create(3).context("create the network namespaces for --net netns")?)
    } else {
        None
    };
    let cgroups = resources::Cgroups::detect();
    let volumes_ok = resources::Volumes::available();
    let kinds = available_kinds(&asked, netns, cgroups.as_ref().err(), volumes_ok.as_ref().err())?;
    let cgroups = cgroups.ok();
    let mut spec = ClusterSpec::new(&dir, std::env::current_exe().context("find the raftgres binary")?);
    spec.pg_port = free_port_block(3)?;
    spec.api_port = free_port_block(3)?;
    spec.raft_port = free_port_block(3)?;
    let hosts: Vec<String> = match &lab {
        Some(lab) => (1..=3).map(|node| lab.node_addr(node).to_string()).collect(),
        None => vec![crate::demo::nodeconf::HOST.to_string(); 3],
    };
    let targets: BTreeMap<u64, String> =
        (1..=3u64).map(|id| (id, format!("{}:{}", hosts[id as usize - 1], spec.raft_port + id as u16 - 1))).collect();
    let mesh = match &lab {
        Some(lab) => ProxyMesh::start_on(&lab.gateway().to_string(), &targets).await,
        None => ProxyMesh::start(&targets).await,
    }
    .context("start the raft proxy mesh")?;
    for from in 1..=3u64 {
        for to in (1..=3u64).filter(|to| *to != from) {
            spec.raft_addr_override.insert((from, to), mesh.addr(from, to));
        }
    }
    if let Some(lab) = &lab {
        spec.hosts = hosts.clone();
        spec.client_nets = vec![lab.network()];
        spec.wrappers = (1..=3).map(|node| (node, lab.wrapper(node))).collect();
    }
    spec.volumes = volumes_ok.is_ok();
    let sync = args.mode == "sync";
    let mut dcs = json!({"synchronous_mode": if sync { "on" } else { "off" }});
    for (key, value) in [("ttl", args.ttl), ("loop_wait", args.loop_wait), ("retry_timeout", args.retry_timeout)] {
        if let Some(value) = value {
            dcs[key] = json!(value);
        }
    }
    spec.dcs_overrides = dcs;
    // A pg_rewind whose source dies half-way (a kill during the rewind) leaves a data directory that only a new
    // clone repairs; with the default (false) raftgres keeps it for a human and the node stays down, which the
    // liveness checker would report. Operators who prefer self-healing set the same.
    spec.remove_data_directory_on_rewind_failure = true;
    let cluster = LocalCluster::generate(spec)?;
    let reaping = CancellationToken::new();
    let reaper = reap_orphans(reaping.clone());
    let volumes = if volumes_ok.is_ok() {
        Some(resources::Volumes::mount(&cluster).context("mount the nodes' filesystems")?)
    } else {
        None
    };
    println!(
        "chaos: cluster in {} (seed {}, mode {}, net {}, clients via {}, timing {})",
        dir.display(),
        args.seed,
        args.mode,
        args.net,
        args.via,
        timing_line(&args)
    );
    let (haproxy, haproxy_failed) = match &haproxy_program {
        Some(program) => match start_haproxy(&cluster, program, lab.as_ref()).await {
            Ok(started) => (Some(started), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };
    let tools = faults::Tools {
        cluster: &cluster,
        mesh: &mesh,
        lab: lab.as_ref(),
        cgroups: cgroups.as_ref(),
        volumes: volumes.as_ref(),
        observer: None,
    };
    // Interrupted (Ctrl-C, SIGTERM): the nodes, mounts, cgroups and namespaces are still cleaned up below.
    let via = haproxy.as_ref().map(|(_, addr)| addr.clone());
    let outcome = match haproxy_failed {
        Some(e) => Err(e),
        None => tokio::select! {
            outcome = drive(tools, &args, &kinds, sync, via) => outcome,
            signal = interrupted() => Err(anyhow::anyhow!("interrupted by {signal}; stopped the run and cleaned up")),
        },
    };
    if let Err(e) = cluster.stop_all().await {
        tracing::warn!("failed to {e:#}");
    }
    reaping.cancel();
    let _ = reaper.await;
    mesh.shutdown().await;
    if let Some((haproxy, _)) = haproxy {
        if let Err(e) = haproxy.stop().await {
            tracing::warn!("failed to stop HAProxy: {e:#}");
        }
    }
    if let Some(cgroups) = &cgroups {
        cgroups.release_all(cluster.n_nodes());
    }
    if let Some(volumes) = volumes {
        volumes.unmount_all();
    }
    if let Some(lab) = lab {
        lab.destroy();
    }
    let summary = outcome?;
    let n_violations = summary.violations.len();
    if n_violations == 0 && !args.keep {
        drop(cluster);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), "failed to remove the chaos directory: {e}");
        }
    } else {
        println!("chaos: logs and data kept in {}", dir.display());
    }
    // Last, so the output ends with `violations: N`.
    print!("{}", report::render(&summary));
    Ok(n_violations)
}

/// Writes `DIR/haproxy.cfg` (the demo's, with the clients' source address in namespaces) and
/// starts HAProxy; returns it with its primary port's address.
async fn start_haproxy(
    cluster: &LocalCluster,
    program: &std::path::Path,
    lab: Option<&netns::Lab>,
) -> anyhow::Result<(crate::demo::haproxy::Haproxy, String)> {
    use crate::demo::haproxy;
    let base = free_port_block(3)?;
    let ports = haproxy::HaproxyPorts { primary: base, replica: base + 1, stats: base + 2 };
    let config = cluster.dir().join("haproxy.cfg");
    let text = haproxy::render_from(ports, cluster.nodes(), lab.map(|lab| lab.clients()));
    std::fs::write(&config, text).with_context(|| format!("write {}", config.display()))?;
    let started = haproxy::Haproxy::start(program, &config, &cluster.dir().join("haproxy.log")).await?;
    Ok((started, format!("{}:{}", crate::demo::nodeconf::HOST, ports.primary)))
}

/// What an init process does for the nodes: the harness becomes a child subreaper, so a postmaster whose raftgres
/// died (a killed raftgres, or one that adopted a postmaster it did not start) is reparented to it rather than to
/// PID 1, and its zombie is reaped here. PID 1 of a sandbox may never reap, and PostgreSQL's socket lock check
/// takes a zombie's pid for a live postmaster and refuses every start. Only `postgres` zombies are reaped: the
/// harness's own children (raftgres, HAProxy, `ip`, `mount`, …) are waited for by their owners.
fn reap_orphans(stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::warn!("cannot become a child subreaper ({e}); orphaned postmasters are left to PID 1");
    }
    tokio::spawn(async move {
        let me = std::process::id();
        while !stop.is_cancelled() {
            for pid in resources::orphaned_postgres_zombies(me) {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            }
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    })
}

/// Waits for SIGINT or SIGTERM; names the one that came.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::signal;
    use tokio::signal::unix::SignalKind;
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// The kinds this run injects: the ones asked for (all when none), less what the machine cannot
/// do; a kind asked for by name that cannot run is an error, one left out of "all" is said.
fn available_kinds(
    asked: &[FaultKind],
    netns: bool,
    no_cgroups: Option<&String>,
    no_volumes: Option<&String>,
) -> anyhow::Result<Vec<FaultKind>> {
    let why_not = |kind: FaultKind| -> Option<String> {
        match kind.needs() {
            schedule::Need::Nothing => None,
            schedule::Need::Netns => (!netns).then(|| "it needs --net netns".to_string()),
            schedule::Need::Cgroups => no_cgroups.cloned(),
            schedule::Need::Volumes => no_volumes.cloned(),
        }
    };
    if !asked.is_empty() {
        for kind in asked {
            if let Some(why) = why_not(*kind) {
                anyhow::bail!("fault kind {kind} cannot run here: {why}");
            }
        }
        return Ok(asked.to_vec());
    }
    let mut kinds = Vec::new();
    for kind in schedule::ALL_KINDS {
        match why_not(kind) {
            None => kinds.push(kind),
            Some(why) if kind.needs() != schedule::Need::Netns => println!("chaos: skipping {kind}: {why}"),
            Some(_) => {}
        }
    }
    Ok(kinds)
}

/// `ttl/loop_wait/retry_timeout` as the run uses them.
fn timing_line(args: &ChaosArgs) -> String {
    use crate::config::defaults;
    let secs = |value: Option<u64>, default: Duration| value.unwrap_or(default.as_secs());
    format!(
        "ttl {} / loop_wait {} / retry_timeout {}{}",
        secs(args.ttl, defaults::TTL),
        secs(args.loop_wait, defaults::LOOP_WAIT),
        secs(args.retry_timeout, defaults::RETRY_TIMEOUT),
        if args.ttl.is_none() && args.loop_wait.is_none() && args.retry_timeout.is_none() { " (defaults)" } else { "" }
    )
}

/// The whole run on a generated cluster: start, workload and sampler, faults, heal, checks.
async fn drive(
    tools: faults::Tools<'_>,
    args: &ChaosArgs,
    kinds: &[FaultKind],
    sync: bool,
    via: Option<String>,
) -> anyhow::Result<Summary> {
    let cluster = tools.cluster;
    cluster.start_all()?;
    let primary = cluster.wait_healthy(Instant::now() + START_TIMEOUT).await?;
    // The application's clients and the observer reach the nodes from different addresses, so a network
    // fault can cut the one and never the other (`netns`); on loopback both are the kernel's choice.
    let from = |source: Option<std::net::IpAddr>| -> anyhow::Result<Endpoints> {
        Ok(Endpoints {
            pg_addrs: cluster.nodes().iter().map(|node| node.pg_addr()).collect(),
            apis: (1..=cluster.n_nodes()).map(|idx| cluster.api(idx)).collect(),
            source,
            via: None,
            password: cluster.password().to_string(),
            http: net::http_client(source)?,
        })
    };
    let clients = Endpoints { via, ..from(tools.lab.map(|lab| lab.clients()))? };
    let endpoints = from(tools.lab.map(|lab| lab.observer()))?;
    let setup = endpoints.connect(primary).await.context("connect to the primary")?;
    setup
        .batch_execute(&format!("{};{}", workload::WRITES_DDL, sampler::PROBES_DDL))
        .await
        .context("create the chaos tables")?;
    drop(setup);
    let recorder = Recorder::new();
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let next_id = Arc::new(AtomicI64::new(1));
    for client_idx in 0..args.clients {
        tasks.spawn(workload::client(clients.clone(), client_idx, next_id.clone(), recorder.clone(), stop.clone()));
    }
    for node_idx in 1..=cluster.n_nodes() {
        tasks.spawn(sampler::run(endpoints.clone(), node_idx, recorder.clone(), stop.clone()));
    }
    let mut summary = Summary {
        replay: replay_line(args),
        mode: args.mode.clone(),
        duration: Duration::from_secs(args.duration),
        ..Summary::default()
    };
    let mut violations = Vec::new();
    let faults_from_ms = recorder.now_ms();
    let tools = faults::Tools { observer: Some(&endpoints), ..tools };
    let setup = FaultSetup { tools, args, kinds, recorder: &recorder };
    inject_faults(&setup, primary, &mut summary, &mut violations).await;
    let faults_to_ms = recorder.now_ms();
    for (node, how) in faults::repair(tools).await {
        violations.push(exit_violation(node, &how));
    }
    let heal_start = Instant::now();
    let bound = Duration::from_secs(args.liveness_bound);
    let final_primary = cluster.wait_healthy(heal_start + bound).await;
    summary.healed_in = final_primary.as_ref().ok().map(|_| heal_start.elapsed());
    violations.extend(checkers::liveness(summary.healed_in, bound));
    tokio::time::sleep(AFTER_HEAL).await;
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    // An unhealthy cluster still gets checked: the node that says it is primary, else the last
    // holder of the leader key seen, stands in for the final primary.
    let last_holder = recorder.with(|history| history.grants.iter().max_by_key(|g| g.token).map(|g| g.holder));
    let final_primary = match final_primary {
        Ok(primary) => primary,
        Err(_) => endpoints.find_primary().await.or(last_holder).unwrap_or(1),
    };
    let converge = if summary.healed_in.is_some() { CONVERGE_TIMEOUT } else { Duration::ZERO };
    let (present, converged) = converge_and_read(&endpoints, final_primary, converge).await?;
    recorder.with(|history| {
        summary.n_acked = history.writes.iter().filter(|w| w.outcome == Outcome::Acked).count();
        summary.n_failed = history.writes.iter().filter(|w| w.outcome == Outcome::Failed).count();
        summary.n_unknown = history.writes.iter().filter(|w| w.outcome == Outcome::Unknown).count();
        summary.n_probes = history.probes.len();
        summary.n_probes_accepted = history.probes.iter().filter(|p| p.accepted).count();
        summary.n_grants = history.grants.len().saturating_sub(1);
        summary.max_write_gap = checkers::max_write_gap(&history.writes, faults_from_ms, faults_to_ms);
        summary.failover_lag = checkers::failover_lag(&history.probes);
        violations.extend(checkers::single_primary(&history.probes, &history.grants));
        summary.lost = checkers::lost_writes(&history.writes, &present, &converged, final_primary, sync);
        summary.faults = history.faults.clone();
        for fault in &history.faults {
            let end = fault.recovered_ms.unwrap_or(fault.healed_ms);
            let gap = checkers::write_gap_during(&history.writes, fault.started_ms, end);
            let worst = summary.gap_by_kind.entry(fault.kind).or_default();
            *worst = (*worst).max(gap);
        }
    });
    violations.extend(summary.lost.violations.iter().cloned());
    let disk_filled =
        summary.faults.iter().any(|fault| matches!(fault.kind, FaultKind::DiskFullRaft | FaultKind::DiskFullPg));
    let allowed = if disk_filled { checkers::DISK_FULL_ERRORS } else { &[] };
    violations.extend(checkers::log_lines(&read_logs(cluster), allowed));
    summary.violations = violations;
    Ok(summary)
}

/// What the fault loop works on.
struct FaultSetup<'a> {
    tools: faults::Tools<'a>,
    args: &'a ChaosArgs,
    kinds: &'a [FaultKind],
    recorder: &'a Recorder,
}

/// The fault loop: until `--duration` has passed, rest, inject, heal, wait for recovery.
async fn inject_faults(
    setup: &FaultSetup<'_>,
    mut primary: usize,
    summary: &mut Summary,
    violations: &mut Vec<Violation>,
) {
    let FaultSetup { tools, args, kinds, recorder } = *setup;
    let cluster = tools.cluster;
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut plan = Plan::new(args.seed, kinds);
    while Instant::now() < deadline {
        let Some(fault) = plan.next() else { break };
        tokio::time::sleep(fault.rest).await;
        let started_ms = recorder.now_ms();
        let injected = faults::inject(tools, &fault, primary).await;
        for (node, how) in faults::repair(tools).await {
            violations.push(exit_violation(node, &how));
        }
        let healed_ms = recorder.now_ms();
        let injected = match injected {
            Ok(injected) => injected,
            Err(e) => {
                tracing::info!(kind = %fault.kind, "fault skipped: {e:#}");
                *summary.skipped.entry(fault.kind).or_default() += 1;
                continue;
            }
        };
        let recovery_timeout = Duration::from_secs(args.recovery_timeout);
        let recovered = cluster.wait_healthy(Instant::now() + recovery_timeout).await;
        let recovered_ms = recovered.as_ref().ok().map(|_| recorder.now_ms());
        println!(
            "chaos: {:>7.1} s  {:<18} {}  recovered in {}",
            started_ms as f64 / 1000.0,
            fault.kind.as_str(),
            injected.detail,
            recovered_ms.map_or("-".to_string(), |ms| format!("{:.1} s", ms.saturating_sub(healed_ms) as f64 / 1000.0))
        );
        let record = FaultRecord {
            kind: fault.kind,
            nodes: injected.nodes,
            detail: injected.detail.clone(),
            started_ms,
            healed_ms,
            recovered_ms,
        };
        recorder.with(|history| history.faults.push(record));
        match recovered {
            Ok(now_primary) => primary = now_primary,
            Err(e) => {
                violations.push(Violation {
                    checker: checkers::Checker::Liveness,
                    at_ms: Some(healed_ms),
                    detail: format!("no recovery within {} s after {}: {e:#}", args.recovery_timeout, injected.detail),
                });
                // More faults on a cluster that did not recover would prove nothing more.
                break;
            }
        }
    }
}

fn exit_violation(node: usize, how: &str) -> Violation {
    Violation {
        checker: checkers::Checker::Logs,
        at_ms: None,
        detail: format!("node{node}'s raftgres exited on its own ({how})"),
    }
}

/// Waits until every replica has replayed what the primary has, then reads the client ids each
/// node holds; also returns the replicas that did catch up.
async fn converge_and_read(
    endpoints: &Endpoints,
    primary: usize,
    timeout: Duration,
) -> anyhow::Result<(BTreeMap<usize, BTreeSet<i64>>, BTreeSet<usize>)> {
    let target = match endpoints.connect(primary).await {
        Some(client) => {
            client.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.ok().map(|row| row.get::<_, String>(0))
        }
        None => None,
    };
    let target = target.unwrap_or_else(|| "0/0".to_string());
    let deadline = Instant::now() + timeout;
    let mut present = BTreeMap::new();
    let mut converged = BTreeSet::new();
    for node in 1..=endpoints.n_nodes() {
        if node != primary && wait_replayed(endpoints, node, &target, deadline).await {
            converged.insert(node);
        }
        let Some(client) = endpoints.connect(node).await else {
            tracing::warn!(node, "cannot read the ids of this node");
            continue;
        };
        let rows = match client.query("SELECT id FROM chaos_writes", &[]).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(node, "failed to read the ids: {e}");
                continue;
            }
        };
        present.insert(node, rows.iter().map(|row| row.get::<_, i64>(0)).collect());
    }
    Ok((present, converged))
}

async fn wait_replayed(endpoints: &Endpoints, node: usize, target: &str, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if let Some(client) = endpoints.connect(node).await {
            let sql = "SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn";
            if let Ok(row) = client.query_one(sql, &[&target]).await {
                if row.get::<_, Option<bool>>(0) == Some(true) {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tracing::warn!(node, "the replica did not replay up to {target} in time");
    false
}

/// Every node's log lines (node index, line).
fn read_logs(cluster: &LocalCluster) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    for node in 1..=cluster.n_nodes() {
        let path = cluster.node(node).log_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => lines.extend(text.lines().map(|line| (node, line.to_string()))),
            Err(e) => tracing::warn!(path = %path.display(), "failed to read the log: {e}"),
        }
    }
    lines
}

fn replay_line(args: &ChaosArgs) -> String {
    let mut line = format!(
        "raftgres chaos --duration {} --seed {} --mode {} --net {} --via {}",
        args.duration, args.seed, args.mode, args.net, args.via
    );
    for (flag, value) in [("--ttl", args.ttl), ("--loop-wait", args.loop_wait), ("--retry-timeout", args.retry_timeout)]
    {
        if let Some(value) = value {
            line.push_str(&format!(" {flag} {value}"));
        }
    }
    if !args.faults.is_empty() {
        line.push_str(&format!(" --faults {}", args.faults));
    }
    if let Some(broken) = &args.r#break {
        line.push_str(&format!(" --break {broken}"));
    }
    line
}

/// Removes an earlier chaos directory at `dir` (one holding `node1/raftgres.yml`); refuses a
/// non-empty directory that is not one.
fn prepare_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else { return Ok(()) };
    if entries.next().is_none() {
        return Ok(());
    }
    if !dir.join("node1").join("raftgres.yml").is_file() {
        anyhow::bail!("{} is not empty and holds no earlier chaos cluster; choose another --dir", dir.display());
    }
    // A run that died before its cleanup may have left the nodes' filesystems mounted.
    resources::unmount_stale(dir);
    for node in 1..=3 {
        let node_dir = dir.join(format!("node{node}"));
        if let Some(pid) = crate::demo::procs::live_process_from_pid_file(
            &node_dir.join("raftgres.pid"),
            &node_dir.join("raftgres.yml"),
        ) {
            anyhow::bail!("node{node} of an earlier run still runs as pid {pid} in {}; stop it first", dir.display());
        }
        if crate::demo::procs::postmaster_of(&node_dir.join("data")).is_some() {
            anyhow::bail!("a PostgreSQL of an earlier run still runs in {}; stop it first", node_dir.display());
        }
    }
    std::fs::remove_dir_all(dir).with_context(|| format!("remove the earlier chaos directory {}", dir.display()))
}

/// `n` consecutive free loopback ports below the ephemeral range for the chaos cluster.
fn free_port_block(n: u16) -> anyhow::Result<u16> {
    crate::demo::ports::free_port_block(n).with_context(|| format!("find {n} consecutive free loopback ports"))
}
