//! `raft-write`: commit latency of guarded writes on a real three-node Raft cluster.
//!
//! The cluster runs in this process on 127.0.0.1 with real sockets, real sled directories under
//! a temp dir (fsync on) and the default timers of `RaftConfig::new`. It measures the writes the
//! HA loop depends on (openraft-notes §2.6): compare-and-set puts through the Raft leader and
//! through a follower (forwarded), session keep-alives, and the disk's flush + fsync alone.
//!
//! It owns the cluster it starts and always shuts it down; it must not assert on timing.

use std::net::TcpListener;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use openraft::storage::RaftLogStorage;
use raft::config::DEFAULT_CACHE_CAPACITY;
use raft::store::Store;
use raft::typ::Vote;
use raft::Command;
use raft::CommandResult;
use raft::Guard;
use raft::NodeId;
use raft::PeerConfig;
use raft::RaftConfig;
use raft::RaftNode;

use crate::report::fmt2;
use crate::report::Row;
use crate::report::Summary;
use crate::report::Table;

/// The subcommand's name, the `benchmark` column of its rows.
pub const NAME: &str = "raft-write";
/// Default number of guarded writes through the leader.
pub const DEFAULT_WRITES: usize = 2000;

const N_NODES: u64 = 3;
const CLUSTER_NAME: &str = "raftgres-bench";
/// The key the writes compare-and-set, as the HA loop does with the dynamic config.
const CONFIG_KEY: &str = "config";
/// Unmeasured writes per path, so connection set-up and the session grant are not sampled.
const N_WARMUP: usize = 10;
/// Single durable writes timed to measure the disk alone.
const N_FSYNC: usize = 200;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const LEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// The session TTL of the keep-alives (the design's default `ttl`).
const SESSION_TTL: Duration = Duration::from_secs(5);

/// Options of `raft-write`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Guarded writes through the Raft leader; a quarter as many go through a follower, and a
    /// quarter as many session keep-alives.
    #[arg(long, default_value_t = DEFAULT_WRITES)]
    pub writes: usize,
}

impl Default for Args {
    fn default() -> Self {
        Args { writes: DEFAULT_WRITES }
    }
}

/// Starts a cluster in a temp dir under `base_dir`, measures, shuts it down, and returns the rows.
pub async fn run(args: &Args, base_dir: &Path) -> anyhow::Result<Table> {
    let dir = tempfile::Builder::new()
        .prefix("raftgres-bench-")
        .tempdir_in(base_dir)
        .with_context(|| format!("create a temp dir in {}", base_dir.display()))?;
    eprintln!("raft-write: timing {N_FSYNC} durable single writes in {}", dir.path().display());
    let fsync = measure_fsync(dir.path().join("fsync")).await?;
    eprintln!("raft-write: starting {N_NODES} nodes on 127.0.0.1");
    let cluster = Cluster::start(dir.path()).await?;
    let measured = measure_writes(&cluster, args).await;
    let stopped = cluster.shutdown().await;
    let (rows, mut notes) = measured?;
    stopped?;
    notes.insert(
        0,
        format!(
            "raft-write: {N_NODES} nodes on 127.0.0.1, sled under {} (fsync on), default timers; \
             {N_WARMUP} unmeasured warm-up writes per path",
            base_dir.display()
        ),
    );
    if let Some(disk) = Summary::of_durations(&fsync) {
        notes.push(format!(
            "disk: {} single sled writes + flush + fsync (raft vote saves): p50 {} ms, p99 {} ms",
            disk.n,
            fmt2(disk.p50),
            fmt2(disk.p99)
        ));
    }
    Ok(Table { rows, notes })
}

/// Times single durable writes of the raft store (a vote save: sled insert, flush, fsync).
async fn measure_fsync(dir: PathBuf) -> anyhow::Result<Vec<Duration>> {
    let open_dir = dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&open_dir, DEFAULT_CACHE_CAPACITY))
        .await
        .context("join the store opener")?
        .with_context(|| format!("open a raft store in {}", dir.display()))?;
    let mut log_store = store.log_store();
    let mut samples = Vec::with_capacity(N_FSYNC);
    for term in 1..=N_FSYNC as u64 {
        let vote = Vote::new(term, 1);
        let started = Instant::now();
        log_store.save_vote(&vote).await.with_context(|| format!("save vote {vote} in {}", dir.display()))?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// Measures every path; returns the rows and the notes about the run.
async fn measure_writes(cluster: &Cluster, args: &Args) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    let leader_id = cluster.wait_leader().await?;
    let leader = cluster.node(leader_id)?;
    let follower = cluster.nodes.iter().find(|node| node.node_id() != leader_id).context("find a follower")?;
    let term_before = leader.status().term;
    eprintln!("raft-write: leader is node {leader_id}; measuring");

    let mut last_rev = seed(leader).await?;
    let n_side = args.writes / 4;
    cas_writes(leader, N_WARMUP, &mut last_rev).await?;
    let via_leader = cas_writes(leader, args.writes, &mut last_rev).await?;
    cas_writes(follower, N_WARMUP, &mut last_rev).await?;
    let via_follower = cas_writes(follower, n_side, &mut last_rev).await?;
    keep_alives(follower, N_WARMUP).await?;
    let keep_alive = keep_alives(follower, n_side).await?;

    let mut notes = Vec::new();
    let term_after = leader.status().term;
    if term_after != term_before || leader.status().leader != Some(leader_id) {
        notes.push(format!(
            "raft-write: the Raft leader changed during the run (term {term_before} -> {term_after}): \
             some writes counted as 'via leader' were forwarded"
        ));
    }
    let rows = vec![
        Row::latency(NAME, "CAS put via leader", &via_leader),
        Row::latency(NAME, "CAS put via follower (forwarded)", &via_follower),
        Row::latency(NAME, "session keep-alive via follower (forwarded)", &keep_alive),
    ];
    Ok((rows, notes))
}

/// Writes the key unconditionally once; returns its revision, the start of the CAS chain.
async fn seed(node: &RaftNode) -> anyhow::Result<u64> {
    let cmd = Command::put(CONFIG_KEY, "{}", Guard::Always);
    match node.write(cmd, WRITE_TIMEOUT).await.with_context(|| format!("seed {CONFIG_KEY}"))? {
        CommandResult::Applied { rev, .. } => Ok(rev),
        other => bail!("seeding {CONFIG_KEY} was not applied: {other:?}"),
    }
}

/// `n` sequential compare-and-set puts through `node`, each guarded by the previous revision.
async fn cas_writes(node: &RaftNode, n: usize, last_rev: &mut u64) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for write_idx in 0..n {
        let value = format!("{{\"bench_write\":{write_idx}}}");
        let cmd = Command::put(CONFIG_KEY, value, Guard::ModRev(*last_rev));
        let started = Instant::now();
        let res = node
            .write(cmd, WRITE_TIMEOUT)
            .await
            .with_context(|| format!("write {CONFIG_KEY} through node {}", node.node_id()))?;
        samples.push(started.elapsed());
        match res {
            CommandResult::Applied { rev, .. } => *last_rev = rev,
            other => bail!("CAS of {CONFIG_KEY} at revision {last_rev} was not applied: {other:?}"),
        }
    }
    Ok(samples)
}

/// `n` sequential renewals of `node`'s session.
async fn keep_alives(node: &RaftNode, n: usize) -> anyhow::Result<Vec<Duration>> {
    let owner = format!("node{}", node.node_id());
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let res = node
            .keep_alive(&owner, SESSION_TTL, Vec::new(), WRITE_TIMEOUT)
            .await
            .with_context(|| format!("renew the session of node {}", node.node_id()))?;
        samples.push(started.elapsed());
        if !res.is_applied() {
            bail!("keep-alive through node {} was not applied: {res:?}", node.node_id());
        }
    }
    Ok(samples)
}

/// The in-process cluster: nodes 1..=N_NODES, each with its own sled directory.
struct Cluster {
    nodes: Vec<RaftNode>,
}

impl Cluster {
    async fn start(dir: &Path) -> anyhow::Result<Cluster> {
        let mut peers = Vec::new();
        for id in 1..=N_NODES {
            peers.push(PeerConfig { id, name: format!("node{id}"), raft_addr: free_addr()?, api_addr: String::new() });
        }
        let mut cluster = Cluster { nodes: Vec::new() };
        for id in 1..=N_NODES {
            let mut cfg = RaftConfig::new(id, CLUSTER_NAME, peers.clone(), dir.join(format!("node{id}")));
            // Loopback only: the benchmark measures consensus, not TLS.
            cfg.transport = raft::config::PeerTransport::Insecure;
            match RaftNode::start(cfg).await {
                Ok(node) => cluster.nodes.push(node),
                Err(e) => {
                    // Already started nodes must not outlive the failed start; this error wins.
                    let _ = cluster.shutdown().await;
                    return Err(e).with_context(|| format!("start raft node {id}"));
                }
            }
        }
        Ok(cluster)
    }

    fn node(&self, id: NodeId) -> anyhow::Result<&RaftNode> {
        self.nodes.iter().find(|node| node.node_id() == id).with_context(|| format!("find node {id}"))
    }

    /// Waits until every node names the same leader and that leader says it leads.
    async fn wait_leader(&self) -> anyhow::Result<NodeId> {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let leaders: Vec<Option<NodeId>> = self.nodes.iter().map(|node| node.status().leader).collect();
            if let Some(Some(first)) = leaders.first().copied() {
                let agreed = leaders.iter().all(|leader| *leader == Some(first));
                if agreed && self.node(first)?.status().state == "Leader" {
                    return Ok(first);
                }
            }
            if Instant::now() >= deadline {
                bail!("no Raft leader agreed by all {N_NODES} nodes within {LEADER_TIMEOUT:?} (saw {leaders:?})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Shuts every node down; reports the first failure after trying them all.
    async fn shutdown(self) -> anyhow::Result<()> {
        let mut first_error = None;
        for node in &self.nodes {
            if let Err(e) = node.shutdown().await {
                first_error.get_or_insert(anyhow::Error::new(e).context(format!("shut down node {}", node.node_id())));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A free loopback address: binds port 0, reads the port, releases it for the node to bind.
fn free_addr() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind an ephemeral loopback port")?;
    Ok(listener.local_addr().context("read the ephemeral port")?.to_string())
}
