//! Restarts: a follower whose disk was wiped rejoins without voting under its old identity;
//! all three nodes stopped and started together keep their state, 20 times; a restarted follower that
//! does not hear from the leader at once waits for it instead of deposing it.

use std::time::Duration;

use raft::faultproxy::LinkMode;

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

/// Slow timers for the test below, so its margins are seconds: openraft's election timer fires after its
/// leader lease (`election_timeout_max`, 2 s) plus 1–2 s, the restarted node's grace is 8 s.
fn slow_elections(cfg: &mut raft::RaftConfig) {
    cfg.election_timeout_min = Duration::from_millis(1000);
    cfg.election_timeout_max = Duration::from_millis(2000);
}

/// A follower restarted while the leader's messages do not reach it (as when the leader retries a refused
/// peer only every 500 ms and a loaded host starts the follower slowly) hears nothing for longer than
/// openraft's election timer. Without PreVote it would campaign with the next term, and the leader's next
/// append, meeting that term, would depose the leader. It holds its elections instead until it hears from the
/// leader (or the grace ends): it never campaigns with a term of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_follower_waits_for_the_leader_instead_of_deposing_it() {
    let mut cluster = TestCluster::start_tuned(3, slow_elections).await;
    let leader = cluster.wait_leader().await;
    cluster.put(leader, "before-restart", "1").await;
    cluster.converged("before-restart", "1").await;
    let term = cluster.node(leader).status().term;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    cluster.stop_node(follower).await;
    cluster.mesh.set_link(leader, follower, LinkMode::Blackhole);
    cluster.start_node(follower).await;
    // Longer than the election timer (at most 4 s), shorter than the grace (8 s): this is the fault's
    // duration, not a wait for a condition.
    let grace = raft::node::elections::grace(&cluster.config(follower));
    tokio::time::sleep(grace * 5 / 8).await;
    // It did not campaign: its vote is still the one it restarted with, or one it gave another candidate (on a
    // loaded host the third node may time out and campaign; that is not this node deposing the leader).
    let vote = cluster.node(follower).raft().metrics().borrow().vote;
    let campaigned = vote.leader_id().voted_for() == Some(follower) && vote.leader_id().term > term;
    assert!(!campaigned, "the restarted follower campaigned: vote {vote} (term before {term})");
    cluster.mesh.set_link(leader, follower, LinkMode::Pass);
    eventually(Duration::from_secs(30), "the restarted follower follows a leader again", || async {
        cluster.node(follower).status().leader.is_some_and(|l| cluster.nodes.contains_key(&l)).then_some(())
    })
    .await;
    let via = cluster.wait_leader().await;
    cluster.put(via, "after-restart", "2").await;
    cluster.converged("after-restart", "2").await;
    cluster.shutdown().await;
}
