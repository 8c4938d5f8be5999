//! Bad input on the peer port gets an error response, never a panic, and the node keeps working.

use raft::network::encode;
use raft::network::Wire;
use raft::network::PROTOCOL_VERSION;

use crate::TestCluster;

async fn post(addr: &str, path: &str, body: Vec<u8>) -> (u16, String) {
    let res =
        reqwest::Client::new().post(format!("http://{addr}{path}")).body(body).send().await.expect("peer port answers");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_peer_messages_are_rejected() {
    let cluster = TestCluster::start(3).await;
    let target = 1;
    let addr = cluster.listen[&target].clone();
    let cluster_id = cluster.config(target).cluster_id();
    let status_msg = |cluster_id: u64, to: u64| Wire { version: PROTOCOL_VERSION, cluster_id, from: 2, to, body: () };

    let (code, text) = post(&addr, "/raft/vote", b"garbage, not bincode".to_vec()).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("undecodable"), "{text}");

    let mut truncated = encode(&status_msg(cluster_id, target)).expect("encode");
    truncated.truncate(truncated.len() / 2);
    let (code, text) = post(&addr, "/raft/append", truncated).await;
    assert_eq!(code, 400, "{text}");

    let (code, _) = post(&addr, "/raft/append", vec![0u8; 17 << 20]).await;
    assert_eq!(code, 413, "an oversize body is refused before decoding");

    let (code, text) = post(&addr, "/raft/status", encode(&status_msg(cluster_id ^ 1, target)).expect("encode")).await;
    assert_eq!(code, 400);
    assert!(text.contains("cluster id"), "{text}");

    let (code, text) = post(&addr, "/raft/status", encode(&status_msg(cluster_id, 7)).expect("encode")).await;
    assert_eq!(code, 400);
    assert!(text.contains("addressed to node 7"), "{text}");

    let (code, _) = post(&addr, "/raft/status", encode(&status_msg(cluster_id, target)).expect("encode")).await;
    assert_eq!(code, 200, "a well-formed message is served");

    let leader = cluster.wait_leader().await;
    cluster.put(leader, "still-alive", "yes").await;
    cluster.converged("still-alive", "yes").await;
    cluster.shutdown().await;
}
