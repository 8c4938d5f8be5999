//! [`LocalCluster`]: n `raftgres run` OS processes on 127.0.0.1, each with its own real PostgreSQL,
//! configs and data under one directory. `raftgres demo` runs on it; integration tests and the
//! chaos harness use it to start, stop, kill, freeze and probe single nodes.
//!
//! Layout: `DIR/pgpass` (the shared pgpass of the superuser and the replication user) and, per
//! node, `DIR/nodeN/{raftgres.yml, raftgres.pid, raftgres.log, pgpass, raft/, data/}`. Node indexes
//! are 1-based. A cluster never leaks processes: dropping it SIGKILLs the raftgres processes it
//! started and the postmasters they left behind (PostgreSQL outlives raftgres by design).
//! It must not decide anything about HA: it only runs processes and reads the REST API.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use serde_json::Map;
use serde_json::Value;
use tokio::process::Child;
use tokio::process::Command;
use tokio::time::Instant;

use super::files;
use super::nodeconf;
use super::nodeconf::BasePorts;
use super::nodeconf::Credentials;
use super::nodeconf::NodeInputs;
use super::nodeconf::NodeLayout;
use super::probe;
use super::probe::MemberProbe;
use super::probe::MemberView;
use super::procs;
use crate::status::Role;

/// The error when no PostgreSQL server programs are installed.
pub const PG_MISSING: &str = "PostgreSQL server binaries not found; install them with: apt-get install -y postgresql";
/// How long a node may take to stop after SIGTERM (a primary stops PostgreSQL and releases its lease).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a leftover postmaster may take for a fast shutdown.
const POSTMASTER_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one REST API request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two probes while waiting for a healthy cluster.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Where [`ClusterSpec::volumes`] puts a node's PostgreSQL data directory, under the node directory.
pub const VOLUME_PG: &str = "pgfs";
/// Where [`ClusterSpec::volumes`] puts a node's Raft directory, under the node directory.
pub const VOLUME_RAFT: &str = "raftfs";
/// Environment prefixes the config loader reads: the nodes must see only their YAML.
const CONFIG_ENV_PREFIXES: [&str; 2] = ["RAFTGRES_", "PATRONI_"];

/// What to generate: where, how many nodes, which ports, and test hooks.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The cluster directory (created, made traversable: mode 0755).
    pub dir: PathBuf,
    /// Number of nodes (the demo uses 3).
    pub n_nodes: usize,
    /// PostgreSQL port of node1; node N gets `pg_port + N - 1`.
    pub pg_port: u16,
    /// REST API port of node1, consecutive likewise.
    pub api_port: u16,
    /// Raft port of node1, consecutive likewise.
    pub raft_port: u16,
    /// The raftgres binary each node runs (`run -c DIR/nodeN/raftgres.yml`).
    pub binary: PathBuf,
    /// `postgresql.bin_dir`; `None` finds the newest `/usr/lib/postgresql/<v>/bin`, else `postgres` on `PATH`.
    pub pg_bin_dir: Option<PathBuf>,
    /// `(from, to)` node ids → the address node `from` dials for node `to`'s raft (e.g. a fault proxy).
    pub raft_addr_override: BTreeMap<(u64, u64), String>,
    /// Merged into `bootstrap.dcs` (e.g. `{"ttl": 10, "loop_wait": 2}`); `null` for none.
    pub dcs_overrides: Value,
    /// Extra `tags` by node index.
    pub tags: BTreeMap<usize, Map<String, Value>>,
    /// Merged into every node's `restapi` section (e.g. `{"authentication": {"username": …, "password": …}}`);
    /// `null` for none.
    pub restapi_overrides: Value,
    /// `postgresql.remove_data_directory_on_rewind_failure` of every node (clone again when pg_rewind fails).
    pub remove_data_directory_on_rewind_failure: bool,
    /// `raft.leadership_follows_primary` of every node (`false` lets the bench place Raft leadership).
    pub leadership_follows_primary: bool,
    /// Each node's address, node1 first (empty: every node on 127.0.0.1); for nodes in network
    /// namespaces of their own.
    pub hosts: Vec<String>,
    /// Every node's PostgreSQL on `pg_port`, as on hosts of their own (needs `hosts`: nodes in network
    /// namespaces); clients of a floating address reach whichever node holds it on one port.
    pub shared_pg_port: bool,
    /// Networks (CIDR) besides loopback allowed to connect to PostgreSQL.
    pub client_nets: Vec<String>,
    /// A command each node's `raftgres run` is started under, by node index (e.g. `ip netns exec NS`).
    pub wrappers: BTreeMap<usize, Vec<String>>,
    /// Put the data directory under `nodeN/pgfs` and the Raft directory under `nodeN/raftfs`, so each
    /// can be a filesystem of its own (mounted by the caller before the nodes start).
    pub volumes: bool,
    /// Merged into the whole configuration of a node, by node index, with `PATCH /config` semantics (e.g.
    /// `{"postgresql": {"callbacks": {"on_start": "/path/to/script"}}}`).
    pub node_overrides: BTreeMap<usize, Value>,
    /// Extra environment variables of every node's `raftgres run` process (set after the config
    /// variables are cleared), e.g. `CHAOS_UNSAFE_BREAK` for a test that the default build ignores it.
    pub node_env: BTreeMap<String, String>,
}

impl ClusterSpec {
    /// Three nodes on the default ports (PostgreSQL 5432, REST API 8008, raft 7000), no overrides.
    pub fn new(dir: impl Into<PathBuf>, binary: impl Into<PathBuf>) -> ClusterSpec {
        ClusterSpec {
            dir: dir.into(),
            n_nodes: 3,
            pg_port: 5432,
            api_port: 8008,
            raft_port: 7000,
            binary: binary.into(),
            pg_bin_dir: None,
            raft_addr_override: BTreeMap::new(),
            dcs_overrides: Value::Null,
            tags: BTreeMap::new(),
            restapi_overrides: Value::Null,
            remove_data_directory_on_rewind_failure: false,
            leadership_follows_primary: true,
            hosts: Vec::new(),
            shared_pg_port: false,
            client_nets: Vec::new(),
            wrappers: BTreeMap::new(),
            volumes: false,
            node_overrides: BTreeMap::new(),
            node_env: BTreeMap::new(),
        }
    }
}

/// The PostgreSQL programs directory: the newest `/usr/lib/postgresql/<v>/bin`, else the real
/// directory of `postgres` on `PATH`; fails with [`PG_MISSING`].
pub fn find_pg_bin_dir() -> anyhow::Result<PathBuf> {
    let found = crate::config::load::find_bin_dir("postgres", std::env::var_os("PATH").as_deref());
    let dir = found.context(PG_MISSING)?;
    // `postgres` on PATH may be a symlink into the real directory, the one that also holds initdb.
    if dir.join("initdb").is_file() {
        return Ok(dir);
    }
    let real = fs::canonicalize(dir.join("postgres")).with_context(|| format!("resolve {}/postgres", dir.display()))?;
    Ok(real.parent().map_or(dir, Path::to_path_buf))
}

/// One node's process slot.
#[derive(Default)]
struct Slot {
    child: Mutex<Option<Child>>,
    /// Set once this cluster started the node: only then does `Drop` clean up its postmaster.
    started: AtomicBool,
}

/// A local cluster of `raftgres run` processes; see the module docs. All methods take `&self`, so
/// a test may share it (`Arc`) between tasks.
pub struct LocalCluster {
    dir: PathBuf,
    binary: PathBuf,
    nodes: Vec<NodeLayout>,
    credentials: Credentials,
    slots: Vec<Slot>,
    http: reqwest::Client,
    wrappers: BTreeMap<usize, Vec<String>>,
    node_env: BTreeMap<String, String>,
}

impl LocalCluster {
    /// Writes every node's config and the shared pgpass under `spec.dir`; starts nothing. When the
    /// directory already holds a cluster, its passwords (from `DIR/pgpass`, else node1's config)
    /// and data are kept, so starting it again restarts the same cluster.
    pub fn generate(spec: ClusterSpec) -> anyhow::Result<LocalCluster> {
        let dir = std::path::absolute(&spec.dir).with_context(|| format!("resolve {}", spec.dir.display()))?;
        let base = BasePorts { pg: spec.pg_port, api: spec.api_port, raft: spec.raft_port };
        let mut nodes = nodeconf::layouts(&dir, spec.n_nodes, base)?;
        if !spec.hosts.is_empty() {
            anyhow::ensure!(
                spec.hosts.len() == nodes.len(),
                "{} node addresses for {} nodes",
                spec.hosts.len(),
                nodes.len()
            );
            for (node, host) in nodes.iter_mut().zip(&spec.hosts) {
                node.host = host.clone();
                if spec.shared_pg_port {
                    node.pg_port = spec.pg_port;
                }
            }
        }
        if spec.volumes {
            for node in &mut nodes {
                node.data_parent = node.dir.join(VOLUME_PG);
                node.raft_parent = node.dir.join(VOLUME_RAFT);
            }
        }
        let pg_bin_dir = match &spec.pg_bin_dir {
            Some(bin_dir) => bin_dir.clone(),
            None => find_pg_bin_dir()?,
        };
        // PostgreSQL runs as `postgresql.run_as` when we are root and must reach its data dir and pgpass.
        files::create_traversable_dir(&dir)?;
        for node in &nodes {
            files::create_traversable_dir(&node.dir)?;
        }
        files::ensure_peer_certs(&nodes)?;
        let credentials = match files::existing_credentials(&dir, &nodes)? {
            Some(credentials) => credentials,
            None => Credentials { superuser: files::generate_password(), replication: files::generate_password() },
        };
        files::write_private(&dir.join("pgpass"), &nodeconf::render_pgpass(&credentials))?;
        for node in &nodes {
            let inputs = NodeInputs {
                layouts: &nodes,
                credentials: &credentials,
                pg_bin_dir: &pg_bin_dir,
                raft_addr_override: &spec.raft_addr_override,
                dcs_overrides: &spec.dcs_overrides,
                tags: spec.tags.get(&node.node_idx),
                restapi_overrides: &spec.restapi_overrides,
                leadership_follows_primary: spec.leadership_follows_primary,
                remove_data_directory_on_rewind_failure: spec.remove_data_directory_on_rewind_failure,
                node_overrides: spec.node_overrides.get(&node.node_idx),
                client_nets: &spec.client_nets,
            };
            let yaml = nodeconf::render_node_config(node, &inputs)?;
            files::write_private(&node.config_path(), &yaml)?;
        }
        let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build().context("build the HTTP client")?;
        let slots = nodes.iter().map(|_| Slot::default()).collect();
        Ok(LocalCluster {
            dir,
            binary: spec.binary,
            nodes,
            credentials,
            slots,
            http,
            wrappers: spec.wrappers,
            node_env: spec.node_env,
        })
    }

    /// The cluster directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every node's layout, node1 first.
    pub fn nodes(&self) -> &[NodeLayout] {
        &self.nodes
    }

    /// Number of nodes.
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// One node's layout. Panics unless `1 <= node_idx <= n_nodes`: like an out-of-bounds index,
    /// that is a bug in the caller.
    pub fn node(&self, node_idx: usize) -> &NodeLayout {
        match node_idx.checked_sub(1).and_then(|idx| self.nodes.get(idx)) {
            Some(node) => node,
            None => panic!("node index {node_idx} is outside 1..={}", self.nodes.len()),
        }
    }

    fn slot(&self, node_idx: usize) -> &Slot {
        let _in_range = self.node(node_idx);
        &self.slots[node_idx - 1]
    }

    fn child(&self, node_idx: usize) -> MutexGuard<'_, Option<Child>> {
        self.slot(node_idx).child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The REST API base URL of a node, `http://127.0.0.1:<port>`.
    pub fn api(&self, node_idx: usize) -> String {
        format!("http://{}", self.node(node_idx).api_addr())
    }

    /// The PostgreSQL port of a node.
    pub fn pg_port(&self, node_idx: usize) -> u16 {
        self.node(node_idx).pg_port
    }

    /// The superuser (`postgres`) password.
    pub fn password(&self) -> &str {
        self.credentials.superuser.expose()
    }

    /// The shared pgpass file (`DIR/pgpass`): `PGPASSFILE=<it> psql -h 127.0.0.1 -p PORT -U postgres`.
    pub fn pgpass_path(&self) -> PathBuf {
        self.dir.join("pgpass")
    }

    /// The raftgres process id of a node, while this cluster runs it.
    pub fn pid(&self, node_idx: usize) -> Option<u32> {
        self.child(node_idx).as_ref().and_then(Child::id)
    }

    /// Starts a node's `raftgres run` process and writes its pid file; returns the pid. Fails if
    /// the node already runs, here or as a process from an earlier run (its pid file).
    pub fn start_node(&self, node_idx: usize) -> anyhow::Result<u32> {
        let node = self.node(node_idx);
        let mut child = self.child(node_idx);
        if let Some(pid) = running_pid(&mut child) {
            anyhow::bail!("{} is already running (pid {pid})", node.name);
        }
        let config = node.config_path();
        if let Some(pid) = procs::live_process_from_pid_file(&node.pid_path(), &config) {
            anyhow::bail!(
                "{} is already running as pid {pid} from an earlier run; stop it with: kill {pid}",
                node.name
            );
        }
        let mut command = match self.wrappers.get(&node_idx).and_then(|w| w.split_first()) {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command.arg("run").arg("-c").arg(&config);
        for (key, _) in std::env::vars_os() {
            if CONFIG_ENV_PREFIXES.iter().any(|prefix| key.to_string_lossy().starts_with(prefix)) {
                command.env_remove(key);
            }
        }
        command.envs(&self.node_env);
        let spawned = procs::spawn_logged(command, &node.log_path())?;
        let pid = spawned.id().context("read the pid of the new process")?;
        *child = Some(spawned);
        self.slot(node_idx).started.store(true, Ordering::SeqCst);
        procs::write_pid_file(&node.pid_path(), pid)?;
        Ok(pid)
    }

    /// Starts every node, node1 first.
    pub fn start_all(&self) -> anyhow::Result<()> {
        for node_idx in 1..=self.n_nodes() {
            self.start_node(node_idx)?;
        }
        Ok(())
    }

    /// Whether a node's raftgres process (started by this cluster) is running.
    pub fn is_running(&self, node_idx: usize) -> bool {
        running_pid(&mut self.child(node_idx)).is_some()
    }

    /// If a node's process has exited since the last call, forgets it, removes its pid file and
    /// returns how it exited.
    pub fn take_exit(&self, node_idx: usize) -> Option<ExitStatus> {
        let mut child = self.child(node_idx);
        let status = child.as_mut().and_then(|c| c.try_wait().ok().flatten())?;
        *child = None;
        if let Err(e) = procs::remove_pid_file(&self.node(node_idx).pid_path()) {
            tracing::warn!(node = %self.node(node_idx).name, "failed to {e:#}");
        }
        Some(status)
    }

    /// SIGTERM (and SIGCONT, in case it is frozen), then waits up to [`STOP_TIMEOUT`] before
    /// SIGKILL. Returns the exit status, `None` when the node was not running.
    pub async fn stop_node(&self, node_idx: usize) -> anyhow::Result<Option<ExitStatus>> {
        let node = self.node(node_idx);
        let Some(mut child) = self.child(node_idx).take() else { return Ok(None) };
        if let Some(pid) = child.id() {
            procs::send(pid, Signal::SIGTERM)?;
            procs::send(pid, Signal::SIGCONT)?;
        }
        let status = match procs::wait_child(&mut child, STOP_TIMEOUT).await? {
            Some(status) => status,
            None => {
                tracing::warn!(node = %node.name, timeout = ?STOP_TIMEOUT, "did not stop in time; killing it");
                child.kill().await.with_context(|| format!("kill {}", node.name))?;
                child.wait().await.with_context(|| format!("wait for {} to exit", node.name))?
            }
        };
        procs::remove_pid_file(&node.pid_path())?;
        Ok(Some(status))
    }

    /// SIGKILLs a node's raftgres process only (its PostgreSQL keeps running) and reaps it.
    pub async fn kill_node(&self, node_idx: usize) -> anyhow::Result<()> {
        let node = self.node(node_idx);
        let Some(mut child) = self.child(node_idx).take() else {
            anyhow::bail!("{} is not running", node.name);
        };
        child.kill().await.with_context(|| format!("kill {}", node.name))?;
        procs::remove_pid_file(&node.pid_path())
    }

    /// SIGKILLs a node's postmaster (from `data/postmaster.pid`); returns its pid.
    pub fn kill_postmaster(&self, node_idx: usize) -> anyhow::Result<u32> {
        let node = self.node(node_idx);
        let pid = procs::postmaster_of(&node.data_dir())
            .with_context(|| format!("{} has no running postmaster in {}", node.name, node.data_dir().display()))?;
        procs::send(pid, Signal::SIGKILL)?;
        Ok(pid)
    }

    fn signal_node(&self, node_idx: usize, signal: Signal) -> anyhow::Result<()> {
        let pid = self.pid(node_idx).with_context(|| format!("{} is not running", self.node(node_idx).name))?;
        procs::send(pid, signal)?;
        Ok(())
    }

    /// Freezes a node's raftgres process (SIGSTOP): it stops renewing its lease and answering.
    pub fn sigstop_node(&self, node_idx: usize) -> anyhow::Result<()> {
        self.signal_node(node_idx, Signal::SIGSTOP)
    }

    /// Resumes a node frozen by [`LocalCluster::sigstop_node`].
    pub fn sigcont_node(&self, node_idx: usize) -> anyhow::Result<()> {
        self.signal_node(node_idx, Signal::SIGCONT)
    }

    /// GETs `path` on a node's REST API; the status code, `None` when unreachable.
    pub async fn health_check(&self, node_idx: usize, path: &str) -> Option<u16> {
        let url = format!("{}{path}", self.api(node_idx));
        self.http.get(url).send().await.ok().map(|res| res.status().as_u16())
    }

    /// A node's `GET /patroni`, `None` when unreachable or not a status object.
    pub async fn probe(&self, node_idx: usize) -> Option<MemberProbe> {
        let res = self.http.get(format!("{}/patroni", self.api(node_idx))).send().await.ok()?;
        let body: Value = res.json().await.ok()?;
        probe::parse_patroni(&body)
    }

    /// Every node as the health verdict sees it: running, and its `GET /patroni` answer.
    pub async fn members(&self) -> Vec<MemberView> {
        let mut res = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let probe = self.probe(node.node_idx).await;
            let running = self.is_running(node.node_idx);
            res.push(MemberView { node_idx: node.node_idx, name: node.name.clone(), running, probe });
        }
        res
    }

    /// Each node's role from `GET /patroni` (index 0 is node1), `None` when unreachable.
    pub async fn roles(&self) -> Vec<Option<Role>> {
        self.members().await.into_iter().map(|member| member.probe.and_then(|p| p.role)).collect()
    }

    /// The node that reports itself primary, if exactly one does.
    pub async fn primary(&self) -> Option<usize> {
        let roles = self.roles().await;
        let mut primaries = (1..=roles.len()).filter(|node_idx| roles[node_idx - 1] == Some(Role::Primary));
        match (primaries.next(), primaries.next()) {
            (Some(node_idx), None) => Some(node_idx),
            _ => None,
        }
    }

    /// Waits until one running node is a running primary and every other running node a
    /// streaming replica; returns the primary's node index, or fails at `deadline` saying why.
    pub async fn wait_healthy(&self, deadline: Instant) -> anyhow::Result<usize> {
        loop {
            let members = self.members().await;
            let reason = match probe::healthy_primary(&members) {
                Ok(primary_idx) => return Ok(primary_idx),
                Err(reason) => reason,
            };
            if Instant::now() >= deadline {
                anyhow::bail!("the cluster is not healthy: {reason} ({})", probe::describe(&members));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Stops every node (replicas first, the primary last, so it does not fail over needlessly),
    /// then gives any postmaster still running a fast shutdown.
    pub async fn stop_all(&self) -> anyhow::Result<()> {
        let primary_idx = self.primary().await;
        let order = (1..=self.n_nodes()).filter(|idx| Some(*idx) != primary_idx).chain(primary_idx);
        for node_idx in order {
            self.stop_node(node_idx).await?;
        }
        self.stop_postmasters().await
    }

    /// Fast shutdown (SIGINT) of every postmaster left running in a data dir of this cluster, SIGKILL
    /// if one takes longer than 30 s.
    pub async fn stop_postmasters(&self) -> anyhow::Result<()> {
        for node in &self.nodes {
            let Some(pid) = procs::postmaster_of(&node.data_dir()) else { continue };
            tracing::info!(node = %node.name, pid, "stopping the PostgreSQL left running by the node");
            procs::send(pid, Signal::SIGINT)?;
            if !procs::wait_gone(pid, POSTMASTER_STOP_TIMEOUT).await {
                procs::send_group(pid, Signal::SIGKILL)?;
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    /// SIGKILLs every raftgres process still running and the postmasters of the nodes this cluster
    /// started, so a failing test leaks nothing. Errors are ignored: there is no one to tell.
    fn drop(&mut self) {
        for (slot, node) in self.slots.iter().zip(&self.nodes) {
            let mut child = slot.child.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(pid) = running_pid(&mut child) {
                let _ = procs::send(pid, Signal::SIGKILL);
                let _ = procs::remove_pid_file(&node.pid_path());
            }
            if slot.started.load(Ordering::SeqCst) {
                if let Some(pid) = procs::postmaster_of(&node.data_dir()) {
                    let _ = procs::send_group(pid, Signal::SIGKILL);
                }
            }
        }
    }
}

/// The pid of a child that has not exited.
fn running_pid(child: &mut Option<Child>) -> Option<u32> {
    let child = child.as_mut()?;
    match child.try_wait() {
        Ok(None) => child.id(),
        Ok(Some(_)) | Err(_) => None,
    }
}
