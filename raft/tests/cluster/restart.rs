//! Restarts: a follower whose disk was wiped rejoins without voting under its old identity;
//! all three nodes stopped and started together keep their state, 20 times.

use std::time::Duration;

use crate::eventually;
use crate::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_follower_rejoins_and_votes_again() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    cluster.put(leader, "before-wipe", "1").await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.wipe_node(follower).await;
    cluster.put(leader, "after-wipe", "2").await;
    cluster.converged("before-wipe", "1").await;
    cluster.converged("after-wipe", "2").await;
    eventually(Duration::from_secs(30), "the wiped node is a voter again, membership committed, caught up", || async {
        let status = cluster.node(leader).status();
        let caught_up = status.lag.get(&follower).is_some_and(|lag| *lag == 0);
        (status.voters.contains(&follower) && status.voters.len() == 3 && status.membership_settled && caught_up)
            .then_some(())
    })
    .await;
    // With the third node stopped, commits need the rejoined node's vote and acknowledgement.
    let third = (1..=3).find(|id| *id != leader && *id != follower).expect("third node");
    cluster.stop_node(third).await;
    cluster.wait_leader().await;
    let via = cluster.wait_leader().await;
    cluster.put(via, "needs-rejoined", "3").await;
    cluster.converged("needs-rejoined", "3").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_cluster_restarted_twenty_times_keeps_its_state() {
    let mut cluster = TestCluster::start(3).await;
    for round in 0..20u32 {
        let leader = cluster.wait_leader().await;
        cluster.put(leader, &format!("round{round}"), &round.to_string()).await;
        cluster.converged(&format!("round{round}"), &round.to_string()).await;
        let before = cluster.node(leader).view().keys.clone();
        for id in 1..=3 {
            cluster.stop_node(id).await;
        }
        for id in 1..=3 {
            cluster.start_node(id).await;
        }
        cluster.wait_leader().await;
        eventually(Duration::from_secs(30), &format!("round {round}: every node has its state back"), || async {
            cluster.running().all(|(_, n)| n.view().keys == before).then_some(())
        })
        .await;
    }
    cluster.shutdown().await;
}
