//! No fencing switch in a default build: with `CHAOS_UNSAFE_BREAK=no-demote` (the chaos harness'
//! broken mode) in the environment of every node, a binary built without the `chaos-break` feature
//! ignores it, says so in its log, and an isolated primary still stops writing while another node
//! is promoted.

use std::time::Duration;

use raft::faultproxy::LinkMode;
use raftgres::chaos::BREAK_ENV;
use raftgres::demo::cluster::LocalCluster;

use crate::harness::*;

/// The warning a default build logs when the variable is set.
const IGNORED: &str = "is set but ignored: this binary was built without the `chaos-break` feature";
/// The warning of a node that honours the variable.
const BROKEN: &str = "running with self-demotion disabled";

/// Whether node `node`'s `raftgres.log` contains `needle`.
fn logged(cluster: &LocalCluster, node: usize, needle: &str) -> bool {
    let path = cluster.dir().join(format!("node{node}")).join("raftgres.log");
    std::fs::read_to_string(path).unwrap_or_default().contains(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_default_build_fences_an_isolated_primary_despite_the_break_variable() {
    let test = "the_default_build_fences_an_isolated_primary_despite_the_break_variable";
    if cfg!(feature = "chaos-break") {
        println!("skipping {test}: it is about the default build, and this one has the `chaos-break` feature");
        return;
    }
    if !pg_available(test) {
        return;
    }
    let (mut spec, dir) = spec();
    let mesh = proxy_raft_links(&mut spec).await;
    spec.node_env.insert(BREAK_ENV.to_string(), "no-demote".to_string());
    let (tc, old) = start(spec, dir).await;
    let c = &tc.cluster;
    let silent: Vec<usize> = (1..=c.n_nodes()).filter(|node| !logged(c, *node, IGNORED)).collect();
    assert!(silent.is_empty(), "nodes {silent:?} did not log that {BREAK_ENV} is ignored\n{}", logs(c));
    assert!(execute(c, old, "CREATE TABLE fence_probe (x int); INSERT INTO fence_probe VALUES (1)").await);

    mesh.isolate(old as u64, LinkMode::Blackhole);
    let new = new_primary(c, old, Duration::from_secs(60)).await;
    assert_ne!(new, old);
    eventually(Duration::from_secs(30), "the isolated primary refuses writes", || async {
        let refused = !execute(c, old, "INSERT INTO fence_probe VALUES (2)").await;
        (refused && in_recovery(c, old).await != Some(false)).then_some(())
    })
    .await;
    let broken: Vec<usize> = (1..=c.n_nodes()).filter(|node| logged(c, *node, BROKEN)).collect();
    assert!(broken.is_empty(), "nodes {broken:?} ran with self-demotion disabled\n{}", logs(c));

    mesh.heal_all();
    // The isolated primary's fence stopping PostgreSQL at lease expiry is what this test is about.
    finish(c, &["leader lease expired while running as primary"]).await;
    mesh.shutdown().await;
}
