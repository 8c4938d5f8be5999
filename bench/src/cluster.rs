//! The local cluster the cluster benchmarks (`failover`, `health`, `footprint`, `all`) run on: three
//! `raftgres run` processes with real PostgreSQL on 127.0.0.1 (the demo's [`LocalCluster`]) on free
//! ports in a temp dir, optionally HAProxy in front (optionally with its runtime API, which every node's `haproxy`
//! section pushes role changes to), plus the SQL and REST helpers they share.
//!
//! It owns every process it starts: [`BenchCluster::shutdown`] stops them in order, and dropping a
//! [`BenchCluster`] (an error half-way) SIGKILLs the nodes, their postmasters and HAProxy. It must
//! not decide anything about HA and never times a benchmark path itself, except bootstrap.

use std::net::TcpListener;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use raftgres::demo::cluster::find_pg_bin_dir;
use raftgres::demo::cluster::ClusterSpec;
use raftgres::demo::cluster::LocalCluster;
use raftgres::demo::haproxy;
use raftgres::demo::haproxy::Haproxy;
use raftgres::demo::haproxy::HaproxyPorts;
use raftgres::demo::probe;
use tokio::time::Instant;

/// The environment variable naming the raftgres binary the nodes run.
pub const BINARY_ENV: &str = "RAFTGRES_BIN";
/// Where the cluster temp dir goes without `--dir`: PostgreSQL's socket path (in the node dir)
/// must stay under 107 bytes, so not `$TMPDIR`, which may be long.
pub const DEFAULT_CLUSTER_BASE: &str = "/tmp";
/// Number of nodes of every benchmark cluster.
pub const N_NODES: usize = 3;
/// How long a cluster may take to become healthy (bootstrap, or a node rejoining).
pub const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);
/// The statement timeout of every benchmark SQL session (short, so a hung primary is an error).
const STATEMENT_TIMEOUT_MS: u32 = 1000;
/// Bound of a connection attempt, including authentication.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound of one REST probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Poll interval while waiting for health: finer than LocalCluster's 500 ms, so bootstrap time is
/// measured to about 0.1 s.
const HEALTH_POLL: Duration = Duration::from_millis(100);
/// How long HAProxy may take to route a first query to the primary.
const HAPROXY_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a node's log quoted when it dies during start-up.
const LOG_TAIL_LINES: usize = 20;
/// The file name of HAProxy's runtime API socket in the cluster dir (with [`WithHaproxy::IfInstalledWithPush`]).
pub const RUNTIME_API_SOCKET: &str = "haproxy.sock";

/// Where a benchmark cluster lives.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The directory the cluster's temp dir is created in.
    pub base_dir: PathBuf,
    /// Keep the temp dir (configs, logs, data) after the benchmark, for inspection.
    pub keep: bool,
}

/// Whether to put HAProxy in front of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WithHaproxy {
    /// Start it when installed (the failover benchmark's client writes through it).
    IfInstalled,
    /// Start it when installed, with its runtime API on [`RUNTIME_API_SOCKET`] in the cluster dir, and give every
    /// node the `haproxy` section that pushes role changes to it (issue #17).
    IfInstalledWithPush,
    /// Never (benchmarks that do not route SQL).
    No,
}

/// A running benchmark cluster; see the module docs.
pub struct BenchCluster {
    /// The nodes. Declared first so that on drop the nodes die before the temp dir is removed.
    pub cluster: LocalCluster,
    /// HAProxy and its primary port, when installed and asked for.
    pub haproxy: Option<(Haproxy, HaproxyPorts)>,
    /// `start_all` → healthy.
    pub bootstrap: Duration,
    /// Why HAProxy is not running, when it is not (for the notes).
    pub haproxy_note: Option<String>,
    /// The runtime API socket the nodes push to, when they were given the `haproxy` section.
    pub push_socket: Option<PathBuf>,
    dir: tempfile::TempDir,
    place: Placement,
    with_haproxy: WithHaproxy,
}

impl BenchCluster {
    /// Generates a cluster in a fresh temp dir under `place.base_dir`, starts every node, waits until it
    /// is healthy (timing it: the bootstrap time) and starts HAProxy when asked and installed.
    pub async fn start(place: &Placement, with_haproxy: WithHaproxy) -> anyhow::Result<BenchCluster> {
        BenchCluster::start_with_leadership(place, with_haproxy, true).await
    }

    /// [`BenchCluster::start`] with `raft.leadership_follows_primary` set to `follows`.
    pub async fn start_with_leadership(
        place: &Placement,
        with_haproxy: WithHaproxy,
        follows: bool,
    ) -> anyhow::Result<BenchCluster> {
        let binary = raftgres_binary()?;
        let pg_bin_dir = find_pg_bin_dir()?;
        let mut dir = tempfile::Builder::new()
            .prefix("rgbench")
            .tempdir_in(&place.base_dir)
            .with_context(|| format!("create a temp dir in {}", place.base_dir.display()))?;
        if place.keep {
            dir.disable_cleanup(true);
            eprintln!("cluster: keeping {} after the benchmark", dir.path().display());
        }
        let [pg_port, api_port, raft_port] = free_port_blocks(N_NODES)?;
        let mut spec = ClusterSpec {
            pg_port,
            api_port,
            raft_port,
            n_nodes: N_NODES,
            pg_bin_dir: Some(pg_bin_dir),
            leadership_follows_primary: follows,
            ..ClusterSpec::new(dir.path(), binary)
        };
        // Without HAProxy there is nothing to push to: the nodes then get no `haproxy` section.
        let push_socket = (with_haproxy == WithHaproxy::IfInstalledWithPush && haproxy::find().is_some())
            .then(|| dir.path().join(RUNTIME_API_SOCKET));
        if let Some(socket) = &push_socket {
            for node_idx in 1..=N_NODES {
                spec.node_overrides.insert(node_idx, serde_json::json!({"haproxy": haproxy::node_section(socket)}));
            }
        }
        let cluster = tokio::task::spawn_blocking(move || LocalCluster::generate(spec))
            .await
            .context("join the config writer")??;
        eprintln!("cluster: starting {N_NODES} nodes in {}", cluster.dir().display());
        let started = Instant::now();
        cluster.start_all()?;
        wait_healthy(&cluster, Instant::now() + HEALTHY_TIMEOUT).await?;
        let bootstrap = started.elapsed();
        eprintln!("cluster: healthy after {:.1} s", bootstrap.as_secs_f64());
        let mut bench = BenchCluster {
            cluster,
            haproxy: None,
            bootstrap,
            haproxy_note: None,
            push_socket,
            dir,
            place: place.clone(),
            with_haproxy,
        };
        if with_haproxy != WithHaproxy::No {
            bench.start_haproxy().await?;
        }
        Ok(bench)
    }

    async fn start_haproxy(&mut self) -> anyhow::Result<()> {
        let Some(program) = haproxy::find() else {
            self.haproxy_note = Some("HAProxy is not installed (apt-get install -y haproxy)".into());
            return Ok(());
        };
        let ports = free_ports::<3>()?;
        let ports = HaproxyPorts { primary: ports[0], replica: ports[1], stats: ports[2] };
        let config = self.dir.path().join("haproxy.cfg");
        let rendered = haproxy::render(ports, self.cluster.nodes());
        let rendered = match &self.push_socket {
            Some(socket) => haproxy::with_runtime_api(&rendered, socket),
            None => rendered,
        };
        std::fs::write(&config, rendered).with_context(|| format!("write {}", config.display()))?;
        let log = self.dir.path().join("haproxy.log");
        let load_balancer = Haproxy::start(&program, &config, &log).await?;
        self.haproxy = Some((load_balancer, ports));
        // HAProxy must have marked the primary up before anyone measures through it.
        let deadline = Instant::now() + HAPROXY_READY_TIMEOUT;
        loop {
            if let Some(client) = connect(ports.primary, self.cluster.password()).await {
                if in_recovery(&client).await == Some(false) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "HAProxy did not route to the primary within {HAPROXY_READY_TIMEOUT:?}; see {}",
                    log.display()
                );
            }
            tokio::time::sleep(HEALTH_POLL).await;
        }
    }

    /// Replaces this cluster with a fresh one (new temp dir, new ports, new bootstrap time) and
    /// shuts the old one down: the way on after a run left the cluster unable to heal.
    pub async fn replace_with_fresh(&mut self) -> anyhow::Result<()> {
        let fresh = BenchCluster::start(&self.place, self.with_haproxy).await?;
        let broken = std::mem::replace(self, fresh);
        if let Err(e) = broken.shutdown().await {
            tracing::warn!("failed to {e:#}");
        }
        Ok(())
    }

    /// Copies every node's log (and HAProxy's) to a new directory next to the cluster's, which
    /// survives the benchmark, for a post-mortem of a failed run; returns a note saying where.
    pub fn preserve_logs(&self) -> String {
        let parent = self.dir.path().parent().unwrap_or(self.dir.path());
        let kept = match tempfile::Builder::new().prefix("rgbench-logs").tempdir_in(parent) {
            Ok(kept) => kept.keep(),
            Err(e) => return format!("cluster: logs not kept: create a directory in {}: {e}", parent.display()),
        };
        let mut sources: Vec<(String, PathBuf)> =
            self.cluster.nodes().iter().map(|node| (format!("{}.log", node.name), node.log_path())).collect();
        sources.push(("haproxy.log".into(), self.dir.path().join("haproxy.log")));
        for (name, source) in sources.iter().filter(|(_, source)| source.is_file()) {
            if let Err(e) = std::fs::copy(source, kept.join(name)) {
                return format!("cluster: logs partly kept in {}: copy {}: {e}", kept.display(), source.display());
            }
        }
        format!("cluster: node logs of the failed run kept in {}", kept.display())
    }

    /// Whether the nodes push role changes to HAProxy's runtime API.
    pub fn pushes(&self) -> bool {
        self.push_socket.is_some()
    }

    /// HAProxy's primary port, when it runs.
    pub fn haproxy_primary_port(&self) -> Option<u16> {
        self.haproxy.as_ref().map(|(_, ports)| ports.primary)
    }

    /// Stops HAProxy, then the nodes (replicas first, then the primary, then leftover postmasters),
    /// then removes the temp dir.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let BenchCluster { cluster, haproxy, dir, .. } = self;
        let haproxy_stopped = match haproxy {
            Some((load_balancer, _)) => load_balancer.stop().await.context("stop HAProxy"),
            None => Ok(()),
        };
        let stopped = cluster.stop_all().await.context("stop the cluster");
        drop(cluster);
        drop(dir);
        haproxy_stopped.and(stopped)
    }
}

/// The raftgres binary: `$RAFTGRES_BIN`, else `raftgres` next to this program (`target/release`).
pub fn raftgres_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os(BINARY_ENV) {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().context("find the path of raftgres-bench")?;
            exe.parent().context("find the directory of raftgres-bench")?.join("raftgres")
        }
    };
    if !path.is_file() {
        anyhow::bail!(
            "the raftgres binary {} does not exist: build it first with `cargo build --release -p raftgres`, \
             or set {BINARY_ENV} to its path",
            path.display()
        );
    }
    Ok(path)
}

/// Polls every 100 ms until one running node is a running primary and the others stream from it;
/// fails at `deadline`, or as soon as a node exits, quoting its log.
pub async fn wait_healthy(cluster: &LocalCluster, deadline: Instant) -> anyhow::Result<usize> {
    loop {
        for node in cluster.nodes() {
            if let Some(status) = cluster.take_exit(node.node_idx) {
                anyhow::bail!("{} exited ({status}); its log ends with:\n{}", node.name, log_tail(&node.log_path()));
            }
        }
        let members = cluster.members().await;
        match probe::healthy_primary(&members) {
            Ok(primary_idx) => return Ok(primary_idx),
            Err(reason) if Instant::now() >= deadline => {
                anyhow::bail!("the cluster is not healthy: {reason} ({})", probe::describe(&members))
            }
            Err(_) => tokio::time::sleep(HEALTH_POLL).await,
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Connects as the superuser to 127.0.0.1:`port` with a short statement timeout; `None` on any
/// failure (the benchmarks treat "cannot connect" as a failed attempt, not an error).
pub async fn connect(port: u16, password: &str) -> Option<tokio_postgres::Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password(password)
        .dbname("postgres")
        .connect_timeout(CONNECT_TIMEOUT)
        .options(format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
    let connecting = config.connect(tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting).await.ok()?.ok()?;
    tokio::spawn(async move {
        // The connection ends with an error when the server dies; the client sees that on its next query.
        let _ = connection.await;
    });
    Some(client)
}

/// `SELECT pg_is_in_recovery()`, `None` when the server does not answer in time.
pub async fn in_recovery(client: &tokio_postgres::Client) -> Option<bool> {
    let query = client.query_one("SELECT pg_is_in_recovery()", &[]);
    let row = tokio::time::timeout(PROBE_TIMEOUT, query).await.ok()?.ok()?;
    row.try_get(0).ok()
}

/// A REST client for probes: short timeout, no proxy.
pub fn probe_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder().timeout(PROBE_TIMEOUT).no_proxy().build().context("build the HTTP client")
}

/// The status code of `GET url`, `None` when unreachable or slower than the probe timeout.
pub async fn get_status(http: &reqwest::Client, url: &str) -> Option<u16> {
    http.get(url).send().await.ok().map(|res| res.status().as_u16())
}

/// `/proc/loadavg`'s three load averages, for the notes (the machine is shared: numbers are noisy).
pub fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(text) => text.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        Err(e) => format!("unknown ({e})"),
    }
}

/// The first ports of three blocks of `n` consecutive free loopback ports (PostgreSQL, REST API,
/// raft), none overlapping: every probe socket stays bound until all blocks are found.
fn free_port_blocks(n: usize) -> anyhow::Result<[u16; 3]> {
    let mut held: Vec<TcpListener> = Vec::new();
    let mut firsts = [0u16; 3];
    for first_port in &mut firsts {
        let block = (0..1000).find_map(|_| try_block(n).ok().flatten()).context("find free consecutive ports")?;
        *first_port = block.first().and_then(|l| l.local_addr().ok()).map(|a| a.port()).context("read a port")?;
        held.extend(block);
    }
    Ok(firsts)
}

/// `n` consecutive free ports starting at an ephemeral one, bound; `None` when one is taken.
fn try_block(n: usize) -> std::io::Result<Option<Vec<TcpListener>>> {
    let first = TcpListener::bind("127.0.0.1:0")?;
    let first_port = first.local_addr()?.port();
    let mut block = vec![first];
    for offset in 1..n {
        let Some(port) = u16::try_from(offset).ok().and_then(|o| first_port.checked_add(o)) else { return Ok(None) };
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => block.push(listener),
            Err(_) => return Ok(None),
        }
    }
    Ok(Some(block))
}

/// `N` distinct free loopback ports.
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let mut held = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind an ephemeral loopback port")?;
        *port = listener.local_addr().context("read the ephemeral port")?.port();
        held.push(listener);
    }
    Ok(ports)
}
