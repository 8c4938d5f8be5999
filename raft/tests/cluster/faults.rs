//! Link faults: leader isolation, one-way partitions, delays.

use std::time::Duration;

use raft::faultproxy::LinkMode;

use crate::eventually;
use crate::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_leader_is_replaced_and_rejoins() {
    let cluster = TestCluster::start(3).await;
    let old = cluster.wait_leader().await;
    cluster.put(old, "before", "1").await;
    cluster.mesh.isolate(old, LinkMode::Blackhole);
    let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
    let new = eventually(Duration::from_secs(30), "the majority elects a new leader", || async {
        let leader = cluster.node(others[0]).status().leader?;
        (leader != old && cluster.node(leader).status().state == "Leader").then_some(leader)
    })
    .await;
    cluster.put(others[0], "during", "2").await;
    // The cut-off old leader cannot commit anything.
    let res =
        cluster.node(old).write(raft::Command::put("lost", "x", raft::Guard::Always), Duration::from_secs(2)).await;
    assert!(res.is_err(), "an isolated node must not commit: {res:?}");
    cluster.mesh.heal_all();
    cluster.converged("during", "2").await;
    eventually(Duration::from_secs(30), "the old leader follows the new term", || async {
        let status = cluster.node(old).status();
        (status.state != "Leader" && status.leader.is_some()).then_some(())
    })
    .await;
    assert_ne!(new, old);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_survive_one_way_partitions_and_delay() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    // The leader can no longer reach one follower, but that follower can reach the leader.
    cluster.mesh.one_way(leader, follower);
    cluster.put(leader, "one-way", "1").await;
    cluster.mesh.heal_all();
    for (from, to) in [(1, 2), (2, 3), (3, 1), (2, 1)] {
        cluster.mesh.set_link(from, to, LinkMode::Delay(Duration::from_millis(20)));
    }
    cluster.put(follower, "delayed", "2").await;
    cluster.mesh.heal_all();
    cluster.converged("one-way", "1").await;
    cluster.converged("delayed", "2").await;
    cluster.shutdown().await;
}
