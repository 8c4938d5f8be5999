//! Leases never overlap: every node runs a lease client that acquires the vacant `leader` key
//! and renews it; we record, per node, the real-time intervals during which it *believed* it
//! held the lease, inject faults, and check that intervals of different nodes never overlap.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use raft::faultproxy::LinkMode;
use raft::NodeId;
use raft::RaftNode;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::eventually;
use crate::TestCluster;

const TTL: Duration = Duration::from_secs(3);
const LOOP: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_secs(1);

/// A belief interval: node `node` believed it held the lease in `[start, end)`, and that nobody else could take
/// the key before `floor` (`HolderLease::leader_expiry_floor`, which a host watchdog relies on).
#[derive(Debug, Clone, Copy)]
struct Interval {
    node: NodeId,
    start: Instant,
    end: Instant,
    floor: Instant,
}

type Log = Arc<Mutex<Vec<Interval>>>;

/// One node's lease client, Patroni-style: renew while holding, acquire when vacant.
async fn lease_client(node: RaftNode, log: Log, cancel: CancellationToken) {
    let id = node.node_id();
    let name = format!("node{id}");
    let mut current: Option<usize> = None;
    while !cancel.is_cancelled() {
        let held = node.lease().holds_leader(Instant::now());
        let ok = if held {
            node.renew_lease("leader", &name, TTL, vec![], TIMEOUT).await.unwrap_or(false)
        } else if node.view().get("leader").is_none() {
            node.acquire_lease("leader", &name, TTL, vec![], TIMEOUT).await.unwrap_or(false)
        } else {
            false
        };
        let lease = node.lease();
        let until = lease.leader_valid_until.zip(lease.leader_expiry_floor);
        record(&log, id, ok, held, until, &mut current);
        tokio::time::sleep(LOOP).await;
    }
}

/// Opens or extends this node's current belief interval after one client round; `until` is the lease's end and
/// its expiry floor.
fn record(log: &Log, id: NodeId, ok: bool, held: bool, until: Option<(Instant, Instant)>, current: &mut Option<usize>) {
    let mut entries = log.lock().expect("log lock");
    {
        match (ok, until, *current) {
            (true, Some((end, floor)), Some(idx)) if entries[idx].end >= Instant::now() => {
                entries[idx].end = end;
                entries[idx].floor = floor;
            }
            (true, Some((end, floor)), _) => {
                entries.push(Interval { node: id, start: Instant::now(), end, floor });
                *current = Some(entries.len() - 1);
            }
            _ => {
                if !held {
                    *current = None;
                }
            }
        }
    }
}

#[track_caller]
fn assert_no_overlap(log: &Log) {
    let entries = log.lock().expect("log lock").clone();
    for a in &entries {
        for b in &entries {
            if a.node != b.node {
                assert!(a.end <= b.start || b.end <= a.start, "lease intervals overlap: {a:?} and {b:?}");
                assert!(
                    a.floor <= b.start || b.end <= a.start,
                    "another node held the key before {a:?}'s floor: {b:?}"
                );
            }
        }
    }
}

fn start_clients(cluster: &TestCluster, log: &Log, cancel: &CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
    cluster.running().map(|(_, n)| tokio::spawn(lease_client(n.clone(), log.clone(), cancel.clone()))).collect()
}

async fn holder(cluster: &TestCluster) -> NodeId {
    eventually(Duration::from_secs(30), "some node holds the lease", || async {
        cluster.running().find(|(_, n)| n.lease().holds_leader(Instant::now())).map(|(id, _)| id)
    })
    .await
}

async fn isolate_holder(raft_leader_is_holder: bool) {
    let cluster = TestCluster::start(3).await;
    let log: Log = Arc::default();
    let cancel = CancellationToken::new();
    let raft_leader = cluster.wait_leader().await;
    // Make the wanted node take the lease first: only it runs a client until it holds.
    let wanted =
        if raft_leader_is_holder { raft_leader } else { (1..=3).find(|id| *id != raft_leader).expect("follower") };
    let first = tokio::spawn(lease_client(cluster.node(wanted).clone(), log.clone(), cancel.clone()));
    let first_holder = holder(&cluster).await;
    assert_eq!(first_holder, wanted);
    let mut clients = vec![first];
    for (id, n) in cluster.running() {
        if id != wanted {
            clients.push(tokio::spawn(lease_client(n.clone(), log.clone(), cancel.clone())));
        }
    }
    cluster.mesh.isolate(wanted, LinkMode::Blackhole);
    let successor = eventually(Duration::from_secs(40), "another node takes the lease", || async {
        cluster.running().find(|(id, n)| *id != wanted && n.lease().holds_leader(Instant::now())).map(|(id, _)| id)
    })
    .await;
    assert_ne!(successor, wanted);
    cluster.mesh.heal_all();
    tokio::time::sleep(TTL).await;
    cancel.cancel();
    for client in clients {
        let _ = client.await;
    }
    assert_no_overlap(&log);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_holder_that_is_raft_leader_is_expired_only_after_its_own_deadline() {
    isolate_holder(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_holder_that_follows_is_expired_only_after_its_own_deadline() {
    isolate_holder(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewal_racing_a_raft_reelection_keeps_leases_disjoint() {
    let mut cluster = TestCluster::start(3).await;
    let log: Log = Arc::default();
    let cancel = CancellationToken::new();
    let raft_leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != raft_leader).expect("follower");
    let first = tokio::spawn(lease_client(cluster.node(follower).clone(), log.clone(), cancel.clone()));
    assert_eq!(holder(&cluster).await, follower);
    // Kill the Raft leader while the holder keeps renewing: renewals race the re-election.
    cluster.stop_node(raft_leader).await;
    let mut clients = vec![first];
    clients.extend(start_clients(&cluster, &log, &cancel).into_iter());
    cluster.wait_leader().await;
    tokio::time::sleep(TTL * 2).await;
    cluster.start_node(raft_leader).await;
    cluster.wait_leader().await;
    holder(&cluster).await;
    cancel.cancel();
    for client in clients {
        let _ = client.await;
    }
    assert_no_overlap(&log);
    cluster.shutdown().await;
}
