//! Raft leadership hand-over (`raft::node::handover`): to a named voter, to the owner of the
//! followed key, and before a clean stop, with writes flowing throughout.

use std::time::Duration;

use raft::NodeId;

use crate::eventually;
use crate::TestCluster;
use crate::WRITE_TIMEOUT;

const TTL: Duration = Duration::from_secs(3);

/// Some voter other than `not`.
fn other(cluster: &TestCluster, not: NodeId) -> NodeId {
    cluster.running().map(|(id, _)| id).find(|id| *id != not).expect("another running node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfer_hands_leadership_to_the_named_voter_and_writes_go_on() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let target = other(&cluster, leader);
    let term = cluster.node(leader).status().term;
    cluster.node(leader).transfer_leadership(target, Duration::from_secs(10)).await.expect("hand leadership over");
    assert_eq!(cluster.node(leader).status().leader, Some(target), "the old leader follows the target");
    assert_eq!(cluster.wait_leader().await, target);
    assert_eq!(cluster.node(target).status().term, term + 1, "one campaign, no election rounds");
    for (id, _) in cluster.running() {
        cluster.put(id, &format!("after{id}"), "1").await;
    }
    // A non-leader refuses, and a leader cannot hand over to itself or a non-member.
    let res = cluster.node(leader).transfer_leadership(target, Duration::from_secs(2)).await;
    assert!(matches!(res, Err(raft::RaftError::NotLeader { .. })), "{res:?}");
    let res = cluster.node(target).transfer_leadership(42, Duration::from_secs(2)).await;
    assert!(matches!(res, Err(raft::RaftError::Protocol(_))), "{res:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_follows_the_owner_of_the_leader_key() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    let holder = other(&cluster, leader);
    let node = cluster.node(holder).clone();
    let taken = node.acquire_lease("leader", &format!("node{holder}"), TTL, vec![], WRITE_TIMEOUT).await;
    assert!(matches!(taken, Ok(true)), "take the vacant leader key: {taken:?}");
    eventually(Duration::from_secs(30), "raft leadership moves to the key holder", || async {
        (cluster.node(holder).status().state == "Leader").then_some(())
    })
    .await;
    // The holder's renewals now commit locally, and the key stays where it is.
    for _ in 0..5 {
        let renewed = node.renew_lease("leader", &format!("node{holder}"), TTL, vec![], WRITE_TIMEOUT).await;
        assert!(matches!(renewed, Ok(true)), "{renewed:?}");
    }
    assert_eq!(cluster.wait_leader().await, holder);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_stopping_cleanly_hands_over_first() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.wait_leader().await;
    cluster.put(leader, "before-stop", "1").await;
    cluster.stop_node(leader).await;
    // The hand-over completed before shutdown returned: the others already follow a leader among
    // them, without waiting out an election timeout.
    let remaining: Vec<NodeId> = cluster.running().map(|(id, _)| id).collect();
    let leaders: Vec<Option<NodeId>> = remaining.iter().map(|id| cluster.node(*id).status().leader).collect();
    assert!(
        leaders.iter().any(|l| l.is_some_and(|id| remaining.contains(&id))),
        "a stopped leader hands over first: {leaders:?} among {remaining:?}"
    );
    cluster.put(remaining[0], "after-stop", "1").await;
    cluster.shutdown().await;
}
