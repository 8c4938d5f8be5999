//! Test cluster harness: start, stop, restart, wipe nodes; wait for conditions.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use raft::command::Command;
use raft::command::Guard;
use raft::config::PeerConfig;
use raft::faultproxy::ProxyMesh;
use raft::NodeId;
use raft::RaftConfig;
use raft::RaftNode;
use tempfile::TempDir;
use tokio::time::Instant;

/// Default write timeout in tests.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs a tracing subscriber once (RUST_LOG controls the level).
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// Polls `probe` until it returns `Some` or `deadline` passes; panics naming `what`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub use crate::ports::free_addr;

/// A cluster of `n` nodes (ids 1..=n) whose links all go through a proxy mesh.
pub struct TestCluster {
    pub nodes: BTreeMap<NodeId, Option<RaftNode>>,
    pub listen: BTreeMap<NodeId, String>,
    pub mesh: ProxyMesh,
    pub dir: TempDir,
    /// Applied to every node's config after the defaults (a test's own timers).
    pub tune: fn(&mut RaftConfig),
}

impl TestCluster {
    /// Starts `n` nodes and waits until they elected a leader.
    pub async fn start(n: u64) -> TestCluster {
        TestCluster::start_tuned(n, |_| {}).await
    }

    /// Starts `n` nodes whose configs `tune` changes, and waits until they elected a leader.
    pub async fn start_tuned(n: u64, tune: fn(&mut RaftConfig)) -> TestCluster {
        init_tracing();
        let listen: BTreeMap<NodeId, String> = (1..=n).map(|id| (id, free_addr())).collect();
        let mesh = ProxyMesh::start(&listen).await.expect("start proxy mesh");
        let dir = tempfile::tempdir().expect("create temp dir");
        let mut cluster = TestCluster { nodes: BTreeMap::new(), listen, mesh, dir, tune };
        for id in 1..=n {
            cluster.start_node(id).await;
        }
        cluster.wait_leader().await;
        cluster
    }

    /// The config node `id` runs with: peers reached through the mesh.
    pub fn config(&self, id: NodeId) -> RaftConfig {
        let peers = self
            .listen
            .iter()
            .map(|(&peer, addr)| PeerConfig {
                id: peer,
                name: format!("node{peer}"),
                raft_addr: if peer == id { addr.clone() } else { self.mesh.addr(id, peer) },
                api_addr: String::new(),
            })
            .collect();
        let mut cfg = RaftConfig::new(id, "test-cluster", peers, self.data_dir(id));
        // Plaintext on loopback: these tests are about consensus; raft/tests/tls.rs covers TLS.
        cfg.transport = raft::config::PeerTransport::Insecure;
        // As raftgres runs it: Raft leadership follows the holder of the `leader` key.
        cfg.leadership_follows_key = Some("leader".into());
        (self.tune)(&mut cfg);
        cfg
    }

    /// Data directory of node `id`.
    pub fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// Starts node `id` on its directory.
    pub async fn start_node(&mut self, id: NodeId) {
        let node = RaftNode::start(self.config(id)).await.expect("start raft node");
        self.nodes.insert(id, Some(node));
    }

    /// Stops node `id` (clean shutdown of the replica; its directory stays).
    pub async fn stop_node(&mut self, id: NodeId) {
        if let Some(Some(node)) = self.nodes.insert(id, None) {
            node.shutdown().await.expect("shut down raft node");
        }
    }

    /// Stops node `id`, deletes its directory and starts it again (a replaced disk).
    pub async fn wipe_node(&mut self, id: NodeId) {
        self.stop_node(id).await;
        std::fs::remove_dir_all(self.data_dir(id)).expect("wipe data dir");
        self.start_node(id).await;
    }

    /// The running node `id`.
    pub fn node(&self, id: NodeId) -> &RaftNode {
        self.nodes.get(&id).and_then(|n| n.as_ref()).expect("node is running")
    }

    /// Running nodes.
    pub fn running(&self) -> impl Iterator<Item = (NodeId, &RaftNode)> {
        self.nodes.iter().filter_map(|(id, n)| n.as_ref().map(|n| (*id, n)))
    }

    /// Waits until every running node agrees on one leader; returns it.
    pub async fn wait_leader(&self) -> NodeId {
        eventually(Duration::from_secs(30), "all running nodes agree on a raft leader", || async {
            let leaders: Vec<Option<NodeId>> = self.running().map(|(_, n)| n.status().leader).collect();
            let first = leaders.first().copied().flatten()?;
            let agreed = leaders.iter().all(|l| *l == Some(first));
            let leader_running = self.nodes.get(&first).is_some_and(|n| n.is_some());
            (agreed && leader_running && self.node(first).status().state == "Leader").then_some(first)
        })
        .await
    }

    /// Waits until a write through `via` succeeds; returns its revision.
    pub async fn put(&self, via: NodeId, key: &str, value: &str) -> u64 {
        let node = self.node(via).clone();
        eventually(Duration::from_secs(30), &format!("write {key} through node {via}"), || {
            let node = node.clone();
            async move {
                match node.write(Command::put(key, value, Guard::Always), WRITE_TIMEOUT).await {
                    Ok(raft::CommandResult::Applied { rev, .. }) => Some(rev),
                    _ => None,
                }
            }
        })
        .await
    }

    /// Waits until every running node's local view has `key == value`.
    pub async fn converged(&self, key: &str, value: &str) {
        eventually(Duration::from_secs(30), &format!("every node sees {key}={value}"), || async {
            self.running().all(|(_, n)| n.view().get(key).is_some_and(|v| v.value == value)).then_some(())
        })
        .await
    }

    /// Stops every node and the mesh.
    pub async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop_node(id).await;
        }
        self.mesh.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_election_and_forwarded_writes() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    for (id, _) in cluster.running() {
        cluster.put(id, &format!("k{id}"), &format!("from {id}")).await;
    }
    for id in 1..=3 {
        cluster.converged(&format!("k{id}"), &format!("from {id}")).await;
    }
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let read = cluster.node(follower).read_linearizable(WRITE_TIMEOUT).await.expect("linearizable read on a follower");
    assert_eq!(read.get("k1").map(|v| v.value.as_str()), Some("from 1"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_peers_are_rejected_at_start() {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let peer =
        |id, addr: &str| PeerConfig { id, name: format!("n{id}"), raft_addr: addr.into(), api_addr: String::new() };
    let cfg = RaftConfig::new(1, "c", vec![peer(1, "127.0.0.1:1"), peer(1, "127.0.0.1:2")], dir.path().join("a"));
    let err = RaftNode::start(cfg).await.err().expect("duplicate ids must be rejected").to_string();
    assert!(err.starts_with("raft.peers[1].id: duplicate node id 1"), "{err}");
    let cfg = RaftConfig::new(1, "c", vec![peer(1, "127.0.0.1:1"), peer(2, "127.0.0.1:1")], dir.path().join("b"));
    let err = RaftNode::start(cfg).await.err().expect("duplicate addresses must be rejected").to_string();
    assert!(err.starts_with("raft.peers[1].raft_addr: duplicate address 127.0.0.1:1"), "{err}");
}
