//! Isolation: cut the primary's Raft links (a fault-injecting TCP proxy on every ordered pair of
//! nodes) → it demotes itself, another node promotes, and at no sampled instant do two nodes
//! both run a writable PostgreSQL and claim a valid lease (`GET /leader` is 200 only while the
//! node's own lease is valid).

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use raft::faultproxy::LinkMode;
use raftgres::demo::cluster::LocalCluster;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

/// One sampling round: per node, whether it was writable and claimed the lease.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    claims: Vec<(usize, bool, bool)>,
}

async fn sample(c: &LocalCluster) -> Sample {
    let at = Instant::now();
    let mut claims = Vec::new();
    for node in 1..=c.n_nodes() {
        let (writable, leader) = tokio::join!(in_recovery(c, node), c.health_check(node, "/leader"));
        claims.push((node, writable == Some(false), leader == Some(200)));
    }
    Sample { at, claims }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn isolated_primary_demotes_and_leases_never_overlap() {
    if !pg_available("isolated_primary_demotes_and_leases_never_overlap") {
        return;
    }
    let (mut spec, dir) = spec();
    let mesh = proxy_raft_links(&mut spec).await;
    let (tc, old) = start(spec, dir).await;
    let c = Arc::new(tc);
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let stop = CancellationToken::new();
    let sampler = {
        let (c, samples, stop) = (c.clone(), samples.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let s = sample(&c.cluster).await;
                samples.lock().expect("samples").push(s);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    mesh.isolate(old as u64, LinkMode::Blackhole);
    let new = new_primary(&c.cluster, old, Duration::from_secs(60)).await;
    eventually(Duration::from_secs(30), "the isolated primary stops being writable", || async {
        (in_recovery(&c.cluster, old).await != Some(false)).then_some(())
    })
    .await;
    mesh.heal_all();
    eventually(Duration::from_secs(90), "the old primary rejoins as a replica", || async {
        (in_recovery(&c.cluster, old).await == Some(true)).then_some(())
    })
    .await;
    stop.cancel();
    let _ = sampler.await;
    let samples = samples.lock().expect("samples").clone();
    assert!(samples.len() >= 5, "enough samples were taken ({})", samples.len());
    for s in &samples {
        let both: Vec<usize> = s.claims.iter().filter(|(_, w, l)| *w && *l).map(|(n, _, _)| *n).collect();
        assert!(both.len() <= 1, "two writable lease holders at {:?}: {both:?}", s.at);
    }
    assert_ne!(new, old);
    // The isolated primary's fence stopping PostgreSQL at lease expiry is what this test is about.
    finish(&c.cluster, &["leader lease expired while running as primary"]).await;
    mesh.shutdown().await;
}
