//! `raftgres demo`: a local three-node cluster, the README's first command.
//!
//! It checks what is installed and says exactly what is missing (it installs nothing), writes the
//! configs under `--dir` through [`cluster::LocalCluster`] (reusing an existing cluster's passwords
//! and data), starts `node1..node3` as separate `raftgres run` processes with real PostgreSQL on
//! 127.0.0.1, waits until exactly one node answers 200 on `/primary` and the others on `/replica`,
//! prints how to connect, starts HAProxy when it is installed ([`haproxy`]), and keeps running
//! until `shutdown` (Ctrl-C/SIGTERM), then stops the replicas, the primary and HAProxy.
//! It must not decide anything about HA: it only runs processes and reads the REST API.
//! `println!` here is the command's output, not logging.

pub mod cluster;
pub mod files;
pub mod haproxy;
pub mod nodeconf;
pub mod ports;
pub mod probe;
pub mod procs;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use cluster::ClusterSpec;
use cluster::LocalCluster;
use haproxy::Haproxy;
use haproxy::HaproxyPorts;

/// How often the demo looks at the cluster.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Progress is printed when it changes, and at least this often while waiting.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);
/// Lines of a node's log shown when it dies before the cluster is healthy.
const LOG_TAIL_LINES: usize = 15;
/// Number of nodes of the demo cluster.
const N_NODES: usize = 3;

/// Arguments of `raftgres demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Directory for configs, data and logs; an existing demo directory is reused (same passwords and data).
    #[arg(long, default_value = "/tmp/raftgres-demo")]
    pub dir: PathBuf,
    /// PostgreSQL port of node1 (node2 and node3 use the next ports).
    #[arg(long, default_value_t = 5432)]
    pub pg_port: u16,
    /// REST API port of node1 (node2 and node3 use the next ports).
    #[arg(long, default_value_t = 8008)]
    pub api_port: u16,
    /// Raft port of node1 (node2 and node3 use the next ports).
    #[arg(long, default_value_t = 7000)]
    pub raft_port: u16,
    /// HAProxy port that routes to the primary.
    #[arg(long, default_value_t = 5000)]
    pub primary_port: u16,
    /// HAProxy port that round-robins over the replicas.
    #[arg(long, default_value_t = 5001)]
    pub replica_port: u16,
    /// HAProxy stats page port.
    #[arg(long, default_value_t = 7100)]
    pub stats_port: u16,
    /// Seconds to wait for the cluster to become healthy.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
}

/// Loads every node's configuration and checks the host for it (`raftgres check`), so a problem that would make
/// every node fail (say, a parent of `--dir` the PostgreSQL user cannot enter) stops the demo at once with the
/// key, the directory and the fix, instead of nodes retrying.
fn check_nodes(cluster: &LocalCluster) -> anyhow::Result<()> {
    for node in cluster.nodes() {
        let path = node.config_path();
        let loaded = crate::config::load(&path, &crate::config::EnvMap::new())
            .with_context(|| format!("read the generated configuration {}", path.display()))?;
        if let Some(problem) = crate::config::check_environment(&loaded.config).into_iter().next() {
            anyhow::bail!("{}: {problem}; fix it or pick another --dir", path.display());
        }
    }
    Ok(())
}

/// Runs the demo until `shutdown` is cancelled, then stops everything it started.
pub async fn run(args: DemoArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pg_bin_dir = cluster::find_pg_bin_dir()?;
    let haproxy_program = haproxy::find();
    if haproxy_program.is_none() {
        println!("HAProxy not installed (apt-get install -y haproxy); skipping the load balancer");
    }
    check_ports_free(&args, haproxy_program.is_some())?;
    let binary = std::env::current_exe().context("find the raftgres binary")?;
    // With HAProxy, every node pushes its role changes to HAProxy's runtime API (the `haproxy` section).
    let socket = std::path::absolute(&args.dir).context("resolve --dir")?.join(RUNTIME_API_SOCKET);
    let node_overrides = match haproxy_program {
        Some(_) => {
            (1..=N_NODES).map(|idx| (idx, serde_json::json!({"haproxy": haproxy::node_section(&socket)}))).collect()
        }
        None => Default::default(),
    };
    let spec = ClusterSpec {
        pg_port: args.pg_port,
        api_port: args.api_port,
        raft_port: args.raft_port,
        n_nodes: N_NODES,
        pg_bin_dir: Some(pg_bin_dir.clone()),
        node_overrides,
        ..ClusterSpec::new(&args.dir, binary)
    };
    let cluster = tokio::task::spawn_blocking(move || {
        let cluster = LocalCluster::generate(spec)?;
        check_nodes(&cluster)?;
        anyhow::Ok(cluster)
    })
    .await
    .context("write the cluster configuration")??;
    println!(
        "Starting a {N_NODES}-node raftgres cluster in {} (PostgreSQL from {})",
        cluster.dir().display(),
        pg_bin_dir.display()
    );
    let mut load_balancer = None;
    let res = serve(&cluster, &args, haproxy_program.as_deref(), &mut load_balancer, &shutdown).await;
    println!("Stopping the cluster: replicas first, then the primary (a second Ctrl-C leaves them running)");
    let stopped = cluster.stop_all().await.context("stop the cluster");
    let haproxy_stopped = match load_balancer {
        Some(load_balancer) => load_balancer.stop().await.context("stop HAProxy"),
        None => Ok(()),
    };
    let cleanup = [stopped, haproxy_stopped];
    if res.is_err() {
        // `res` is the error returned; a cleanup failure on top of it is only logged.
        for e in cleanup.iter().filter_map(|r| r.as_ref().err()) {
            tracing::error!("failed to {e:#}");
        }
    }
    res?;
    for cleanup_res in cleanup {
        cleanup_res?;
    }
    println!("Stopped. Run `raftgres demo --dir {}` again to restart the same cluster.", cluster.dir().display());
    Ok(())
}

/// Fails with the port and the flag to change when something already listens on a port the
/// demo needs (typically Debian's own `postgresql` service on 5432).
fn check_ports_free(args: &DemoArgs, with_haproxy: bool) -> anyhow::Result<()> {
    let mut wanted: Vec<(u16, String, &str)> = Vec::new();
    for idx in 0..N_NODES as u16 {
        let node = idx + 1;
        wanted.push((args.pg_port + idx, format!("node{node} PostgreSQL"), "--pg-port"));
        wanted.push((args.api_port + idx, format!("node{node} REST API"), "--api-port"));
        wanted.push((args.raft_port + idx, format!("node{node} raft"), "--raft-port"));
    }
    if with_haproxy {
        wanted.push((args.primary_port, "HAProxy primary".into(), "--primary-port"));
        wanted.push((args.replica_port, "HAProxy replicas".into(), "--replica-port"));
        wanted.push((args.stats_port, "HAProxy stats".into(), "--stats-port"));
    }
    for (port, what, flag) in wanted {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            anyhow::bail!(
                "port {port} ({what}) is already in use on 127.0.0.1; stop what listens there (for example `systemctl stop postgresql` for Debian's own cluster on 5432) or pick other ports with {flag}"
            );
        }
    }
    Ok(())
}

/// Starts the nodes, waits for health, starts HAProxy and watches until `shutdown`.
async fn serve(
    cluster: &LocalCluster,
    args: &DemoArgs,
    haproxy_program: Option<&Path>,
    load_balancer: &mut Option<Haproxy>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    cluster.start_all()?;
    for node in cluster.nodes() {
        println!(
            "  {} started: pid {}, log {}",
            node.name,
            cluster.pid(node.node_idx).unwrap_or(0),
            node.log_path().display()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let Some(primary_idx) = wait_until_healthy(cluster, deadline, shutdown).await? else { return Ok(()) };
    print_connection_help(cluster, primary_idx);
    if let Some(program) = haproxy_program {
        let ports = HaproxyPorts { primary: args.primary_port, replica: args.replica_port, stats: args.stats_port };
        *load_balancer = start_haproxy(cluster, program, ports).await;
    }
    println!("\nPress Ctrl-C to stop the cluster.");
    watch(cluster, primary_idx, shutdown).await;
    Ok(())
}

/// Polls until exactly one node answers 200 on `/primary` and every other on `/replica`, printing
/// progress; `None` if `shutdown` came first.
async fn wait_until_healthy(
    cluster: &LocalCluster,
    deadline: Instant,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<usize>> {
    let started = Instant::now();
    let mut last_summary = String::new();
    let mut last_print = started;
    loop {
        for node in cluster.nodes() {
            if let Some(status) = cluster.take_exit(node.node_idx) {
                let tail = log_tail(&node.log_path());
                anyhow::bail!(
                    "{} exited ({status}) before the cluster became healthy; its log ends with:\n{tail}",
                    node.name
                );
            }
        }
        let members = cluster.members().await;
        let summary = probe::describe(&members);
        if summary != last_summary || last_print.elapsed() >= PROGRESS_INTERVAL {
            println!("[{:>4}s] {summary}", started.elapsed().as_secs());
            last_summary = summary;
            last_print = Instant::now();
        }
        if let Some(primary_idx) = endpoints_healthy(cluster).await {
            return Ok(Some(primary_idx));
        }
        if Instant::now() >= deadline {
            let logs = cluster.dir().join("node*").join("raftgres.log");
            anyhow::bail!("the cluster did not become healthy in time ({last_summary}); see {}", logs.display());
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// The primary's node index when exactly one node answers 200 on `/primary` and the others 200 on `/replica`.
async fn endpoints_healthy(cluster: &LocalCluster) -> Option<usize> {
    let mut primaries = Vec::new();
    for node in cluster.nodes() {
        if cluster.health_check(node.node_idx, "/primary").await == Some(200) {
            primaries.push(node.node_idx);
        }
    }
    let [primary_idx] = primaries.as_slice() else { return None };
    for node in cluster.nodes().iter().filter(|node| node.node_idx != *primary_idx) {
        if cluster.health_check(node.node_idx, "/replica").await != Some(200) {
            return None;
        }
    }
    Some(*primary_idx)
}

fn print_connection_help(cluster: &LocalCluster, primary_idx: usize) {
    let primary = cluster.node(primary_idx);
    let pgpass = cluster.pgpass_path();
    println!("\nThe cluster is healthy: {} is the primary.\n", primary.name);
    println!("  {:<6} {:<8} {:<16} {:<22} raftgres pid", "node", "role", "PostgreSQL", "REST API");
    for node in cluster.nodes() {
        let role = if node.node_idx == primary_idx { "primary" } else { "replica" };
        let pid = cluster.pid(node.node_idx).map_or_else(|| "-".to_string(), |pid| pid.to_string());
        println!("  {:<6} {role:<8} {:<16} {:<22} {pid}", node.name, node.pg_addr(), cluster.api(node.node_idx));
    }
    println!("\nConnect to any node (superuser postgres, password in {}):", pgpass.display());
    println!("  PGPASSFILE={} psql -h 127.0.0.1 -p {} -U postgres", pgpass.display(), primary.pg_port);
    println!("Member status:  curl -s {}/patroni", cluster.api(primary_idx));
    println!("Try a failover: kill $(cat {})", primary.pid_path().display());
    println!("Logs:           {}", cluster.dir().join("nodeN").join("raftgres.log").display());
}

/// HAProxy's runtime API socket in the demo's directory, which the nodes push role changes to.
const RUNTIME_API_SOCKET: &str = "haproxy.sock";

/// Writes `DIR/haproxy.cfg` and starts HAProxy; a failure is reported and the demo goes on without it.
async fn start_haproxy(cluster: &LocalCluster, program: &Path, ports: HaproxyPorts) -> Option<Haproxy> {
    let config = cluster.dir().join("haproxy.cfg");
    let log = cluster.dir().join("haproxy.log");
    let socket = match std::path::absolute(cluster.dir()) {
        Ok(dir) => dir.join(RUNTIME_API_SOCKET),
        Err(e) => {
            println!("HAProxy not started: resolve {}: {e}", cluster.dir().display());
            return None;
        }
    };
    let rendered = haproxy::with_runtime_api(&haproxy::render(ports, cluster.nodes()), &socket);
    if let Err(e) = std::fs::write(&config, rendered) {
        println!("HAProxy not started: write {}: {e}", config.display());
        return None;
    }
    match Haproxy::start(program, &config, &log).await {
        Ok(load_balancer) => {
            let pgpass = cluster.pgpass_path();
            println!("\nHAProxy ({}, pid {}):", config.display(), load_balancer.pid().unwrap_or(0));
            println!("  primary:  PGPASSFILE={} psql -h 127.0.0.1 -p {} -U postgres", pgpass.display(), ports.primary);
            println!("  replicas: PGPASSFILE={} psql -h 127.0.0.1 -p {} -U postgres", pgpass.display(), ports.replica);
            println!("  stats:    http://127.0.0.1:{}/", ports.stats);
            Some(load_balancer)
        }
        Err(e) => {
            println!("HAProxy not started: {e:#}");
            None
        }
    }
}

/// Until `shutdown`: reports nodes that exit and primary changes, so a failover can be watched.
async fn watch(cluster: &LocalCluster, primary_idx: usize, shutdown: &CancellationToken) {
    let mut primary = Some(primary_idx);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        for node in cluster.nodes() {
            if let Some(status) = cluster.take_exit(node.node_idx) {
                println!(
                    "{} exited ({status}); the others carry on. Run the demo again after Ctrl-C to bring it back.",
                    node.name
                );
            }
        }
        let now = cluster.primary().await;
        if now != primary {
            match now {
                Some(node_idx) => println!("{} is now the primary", cluster.node(node_idx).name),
                None => println!("no primary at the moment (failover in progress?)"),
            }
            primary = now;
        }
    }
}

/// The last lines of a log file, indented, or a note that it cannot be read.
fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..].iter().map(|line| format!("    {line}")).collect::<Vec<_>>().join("\n")
        }
        Err(e) => format!("    (cannot read {}: {e})", path.display()),
    }
}
