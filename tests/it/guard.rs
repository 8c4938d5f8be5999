//! The fence guard: when raftgres on the primary is killed or frozen, PostgreSQL (which outlives
//! raftgres by design) is stopped by the guard process when the lease runs out, before any
//! replica can promote; so at no sampled instant do two nodes accept writes.

use std::sync::Arc;
use std::time::Duration;

use raftgres::demo::cluster::LocalCluster;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

/// Samples `pg_is_in_recovery()` on every node every 100 ms; returns the rounds with two or
/// more writable nodes.
fn sampler(c: Arc<TestCluster>, stop: CancellationToken) -> tokio::task::JoinHandle<(usize, Vec<Vec<usize>>)> {
    tokio::spawn(async move {
        let mut n_rounds = 0;
        let mut violations = Vec::new();
        while !stop.is_cancelled() {
            let mut writable = Vec::new();
            for node in 1..=c.cluster.n_nodes() {
                if in_recovery(&c.cluster, node).await == Some(false) {
                    writable.push(node);
                }
            }
            if writable.len() > 1 {
                violations.push(writable);
            }
            n_rounds += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (n_rounds, violations)
    })
}

async fn manager_loss(freeze: bool) {
    let (spec, dir) = spec();
    let (tc, old) = start(spec, dir).await;
    let c = Arc::new(tc);
    let stop = CancellationToken::new();
    let samples = sampler(c.clone(), stop.clone());
    let cl: &LocalCluster = &c.cluster;
    if freeze {
        cl.sigstop_node(old).expect("SIGSTOP the primary's raftgres");
    } else {
        cl.kill_node(old).await.expect("kill -9 the primary's raftgres");
    }
    let new = new_primary(cl, old, Duration::from_secs(60)).await;
    eventually(Duration::from_secs(30), "the orphaned primary stops accepting writes", || async {
        (in_recovery(cl, old).await != Some(false)).then_some(())
    })
    .await;
    if freeze {
        cl.sigcont_node(old).expect("SIGCONT the primary's raftgres");
    } else {
        cl.start_node(old).expect("restart the killed raftgres");
    }
    eventually(Duration::from_secs(90), "the old primary rejoins as a replica", || async {
        (in_recovery(cl, old).await == Some(true)).then_some(())
    })
    .await;
    stop.cancel();
    let (n_rounds, violations) = samples.await.expect("sampler");
    assert!(n_rounds > 10, "enough samples were taken");
    assert!(violations.is_empty(), "two writable primaries at once: {violations:?}\n{}", logs(cl));
    let guard_log =
        std::fs::read_to_string(cl.dir().join(format!("node{old}/raft/fence-guard.log"))).unwrap_or_default();
    println!("node{old} guard log:\n{guard_log}");
    assert_ne!(new, old);
    cl.stop_all().await.expect("stop the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_manager_primary_is_fenced_before_a_replica_promotes() {
    if pg_available("killed_manager_primary_is_fenced_before_a_replica_promotes") {
        manager_loss(false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn frozen_manager_primary_is_fenced_before_a_replica_promotes() {
    if pg_available("frozen_manager_primary_is_fenced_before_a_replica_promotes") {
        manager_loss(true).await;
    }
}
