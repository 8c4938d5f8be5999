//! Peer TLS on live `raftgres run` processes: the local cluster runs with mutual TLS by default,
//! and a full CA rotation by SIGHUP (trust both CAs, switch every node's certificate, drop the old
//! CA) keeps the primary and the raft cluster up, with each node logging the certificate it loaded.

use std::time::Duration;

use nix::sys::signal::kill;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use raft::network::certs::write_file;
use raft::network::certs::ClusterCa;
use raft::network::certs::Validity;
use raftgres::demo::cluster::LocalCluster;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;

use crate::harness::*;

/// Sends SIGHUP to every node and waits until each logged its `n_reloads`-th reload.
async fn sighup_all(c: &LocalCluster, n_reloads: usize) {
    for node in 1..=3 {
        let pid = c.pid(node).expect("node runs");
        let pid = i32::try_from(pid).expect("pid fits");
        kill(Pid::from_raw(pid), Signal::SIGHUP).expect("send SIGHUP");
    }
    for node in 1..=3 {
        let log = c.dir().join(format!("node{node}")).join("raftgres.log");
        eventually(Duration::from_secs(20), &format!("node{node} reloads its peer certificate"), || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.matches("reloaded the raft peer certificate").count() >= n_reloads).then_some(())
        })
        .await;
    }
}

fn not_after(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM certificate");
    raft::network::tls::validity(&der).expect("validity").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ca_rotation_by_sighup_keeps_the_cluster_up() {
    if !pg_available("ca_rotation_by_sighup_keeps_the_cluster_up") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let old_ca = std::fs::read_to_string(c.node(1).peer_tls().cafile).expect("read the demo CA");
    let new_ca = ClusterCa::generate("demo", Validity::days_from_now(365)).expect("new CA");
    let new_ca_pem = new_ca.pem().cert_pem;
    // 1. Every node trusts both CAs.
    for node in 1..=3 {
        write_file(&c.node(node).peer_tls().cafile, &format!("{old_ca}{new_ca_pem}"), 0o644).expect("write CA bundle");
    }
    sighup_all(c, 1).await;
    // 2. Every node switches to a certificate from the new CA (40 days: told apart in the logs).
    let mut expiries = Vec::new();
    for node in 1..=3 {
        let layout = c.node(node);
        let pair = new_ca.issue_node(&layout.name, &["127.0.0.1".into()], Validity::days_from_now(40)).expect("issue");
        write_file(&layout.peer_tls().certfile, &pair.cert_pem, 0o644).expect("write cert");
        write_file(&layout.peer_tls().keyfile, &pair.key_pem, 0o600).expect("write key");
        expiries.push(not_after(&pair.cert_pem));
    }
    sighup_all(c, 2).await;
    // 3. The old CA is dropped.
    for node in 1..=3 {
        write_file(&c.node(node).peer_tls().cafile, &new_ca_pem, 0o644).expect("write new CA");
    }
    sighup_all(c, 3).await;
    for (node_idx, expiry) in expiries.iter().enumerate() {
        let log = c.dir().join(format!("node{}", node_idx + 1)).join("raftgres.log");
        let text = std::fs::read_to_string(&log).expect("read log");
        assert!(
            text.contains(&format!("valid until {expiry}")),
            "node{} did not log the new certificate",
            node_idx + 1
        );
    }
    // The primary keeps its lease through several renewals, which are raft writes over the new certificates.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = c
        .wait_healthy(Instant::now() + Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("cluster unhealthy after rotation: {e:#}\n{}", logs(c)));
    assert_eq!(after, primary, "the primary survives the rotation\n{}", logs(c));
    assert!(execute(c, primary, "CREATE TABLE tls_rotation (id int)").await, "the primary still takes writes");
    finish(c, &[]).await;
}
