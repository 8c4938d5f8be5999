//! The fence guard: when raftgres on the primary is killed or frozen, PostgreSQL (which outlives
//! raftgres by design) is stopped by the guard process when the lease runs out, before any
//! replica can promote; so no probe ever proves two nodes accepting writes at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use raftgres::demo::cluster::LocalCluster;
use tokio_util::sync::CancellationToken;

use crate::harness::*;

/// One `pg_is_in_recovery()` probe: the node, when it was sent and answered, and whether it was writable.
struct Probe {
    node: usize,
    sent: Instant,
    answered: Instant,
    writable: bool,
}

/// Probes `pg_is_in_recovery()` on every node at once, every 100 ms, until `stop`; returns every answer.
fn sampler(c: Arc<TestCluster>, stop: CancellationToken) -> tokio::task::JoinHandle<Vec<Probe>> {
    tokio::spawn(async move {
        let mut probes = Vec::new();
        while !stop.is_cancelled() {
            let mut round = tokio::task::JoinSet::new();
            for node in 1..=c.cluster.n_nodes() {
                let c = c.clone();
                round.spawn(async move {
                    let sent = Instant::now();
                    let answer = in_recovery(&c.cluster, node).await;
                    answer.map(|in_recovery| Probe { node, sent, answered: Instant::now(), writable: !in_recovery })
                });
            }
            while let Some(joined) = round.join_next().await {
                probes.extend(joined.ok().flatten());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        probes
    })
}

/// PURE: the proven overlaps of two writable primaries. In this test `old` is writable from the start until it is
/// fenced, and any other node from its promotion to the end; so a probe of `old` sent after another node's
/// writable probe was answered, and still writable, proves both were writable at that instant. (Comparing probes
/// of one round instead would accuse a primary fenced between two slow probes.)
fn overlaps(probes: &[Probe], old: usize) -> Vec<String> {
    let mut found = Vec::new();
    let promoted: Vec<&Probe> = probes.iter().filter(|p| p.node != old && p.writable).collect();
    let mut promoted_nodes: Vec<usize> = promoted.iter().map(|p| p.node).collect();
    promoted_nodes.sort_unstable();
    promoted_nodes.dedup();
    if promoted_nodes.len() > 1 {
        found.push(format!("more than one node was promoted: {promoted_nodes:?}"));
    }
    if let Some(first) = promoted.iter().min_by_key(|p| p.answered) {
        for late in probes.iter().filter(|p| p.node == old && p.writable && p.sent >= first.answered) {
            found.push(format!(
                "node{old} still writable {:?} after node{} was seen writable",
                late.sent.duration_since(first.answered),
                first.node
            ));
        }
    }
    found
}

async fn manager_loss(freeze: bool) {
    let (spec, dir) = spec();
    let (tc, old) = start(spec, dir).await;
    let c = Arc::new(tc);
    let stop = CancellationToken::new();
    let samples = sampler(c.clone(), stop.clone());
    let cl: &LocalCluster = &c.cluster;
    // The sampler holds the cluster too, and may drop it on a worker thread after a failure.
    let _keep_logs = KeepLogsOnPanic(cl);
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
    let probes = samples.await.expect("sampler");
    assert!(probes.len() >= 10, "enough samples were taken: {}", probes.len());
    let violations = overlaps(&probes, old);
    assert!(violations.is_empty(), "two writable primaries at once: {violations:?}\n{}", logs(cl));
    let guard_log =
        std::fs::read_to_string(cl.dir().join(format!("node{old}/raft/fence-guard.log"))).unwrap_or_default();
    println!("node{old} guard log:\n{guard_log}");
    // The small program beside raftgres did the fencing (cargo builds it next to the raftgres under test).
    let node_log = std::fs::read_to_string(cl.dir().join(format!("node{old}/raftgres.log"))).unwrap_or_default();
    let started = node_log.lines().find(|line| line.contains("started the fence guard")).unwrap_or_default();
    assert!(started.contains("raftgres-guard"), "node{old} runs raftgres-guard: {started}");
    assert!(guard_log.contains("stopped postmaster"), "the guard stopped the orphaned postmaster:\n{guard_log}");
    assert_ne!(new, old);
    finish(cl, &[]).await;
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

/// A primary whose PostgreSQL does not stop when its raftgres is stopped (SIGTERM with a frozen postmaster, as a
/// server stuck on its disk would be) keeps the leader key until its lease runs out, and leaves the guard armed,
/// which stops the postmaster at that point (Patroni keeps the key too: "PostgreSQL shutdown failed, leader key
/// not removed"). Before, raftgres released the key and cleared the guard file: a replica promoted at once and the
/// old postmaster, once it resumed, was a second primary that nothing would ever stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_that_does_not_stop_on_shutdown_keeps_its_key_and_is_fenced() {
    if !pg_available("a_primary_that_does_not_stop_on_shutdown_keeps_its_key_and_is_fenced") {
        return;
    }
    let (mut spec, dir) = spec();
    for node in 1..=3 {
        // Each stop attempt gives up after 2 s fast + 2 s immediate instead of a minute each.
        spec.node_overrides.insert(node, serde_json::json!({"postgresql": {"pg_ctl_timeout": 2}}));
    }
    let (tc, old) = start(spec, dir).await;
    let cl: &LocalCluster = &tc.cluster;
    let _keep_logs = KeepLogsOnPanic(cl);
    let data_dir = cl.node(old).data_dir();
    let postmaster = raftgres::demo::procs::postmaster_of(&data_dir).expect("the primary's postmaster");
    raftgres::demo::procs::send(postmaster, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP the postmaster");
    let resume = Resume(postmaster);

    // SIGTERM: the hand-over's demotion and the shutdown's stop both fail; raftgres exits all the same.
    let stopped = cl.stop_node(old).await.expect("stop the primary's raftgres");
    assert!(stopped.is_some_and(|status| status.success()), "raftgres exits cleanly: {stopped:?}\n{}", logs(cl));
    let node_log = std::fs::read_to_string(cl.dir().join(format!("node{old}/raftgres.log"))).unwrap_or_default();
    assert!(
        node_log.contains("PostgreSQL did not stop on shutdown; the leader key is kept"),
        "the failed stop kept the key:\n{}",
        logs(cl)
    );
    let new = new_primary(cl, old, Duration::from_secs(60)).await;
    assert_ne!(new, old);
    let guard_log = cl.dir().join(format!("node{old}/raft/fence-guard.log"));
    eventually(Duration::from_secs(30), "the guard stops the old postmaster at the lease's end", || async {
        std::fs::read_to_string(&guard_log).unwrap_or_default().contains("stopped postmaster").then_some(())
    })
    .await;

    // The stall ends: the old postmaster handles the guard's pending SIGQUIT instead of serving as a primary.
    drop(resume);
    eventually(Duration::from_secs(30), "the resumed old postmaster exits", || async {
        raftgres::demo::procs::postmaster_of(&data_dir).is_none().then_some(())
    })
    .await;
    assert_ne!(in_recovery(cl, old).await, Some(false), "the old node answers as a primary next to node{new}");
    finish(
        cl,
        &[
            "PostgreSQL did not stop on shutdown",
            "failed to stop postgres for the switchover",
            "failed to stop postgres; a human must check this node",
            // The frozen primary's lease may run out before the shutdown: the in-process fence tries and fails too.
            "leader lease expired while running as primary",
            "failed to stop postgres at lease expiry",
        ],
    )
    .await;
}

#[test]
fn overlap_needs_a_writable_old_primary_probed_after_the_new_one_answered() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let probe = |node, sent, answered, writable| Probe { node, sent: at(sent), answered: at(answered), writable };
    // One slow round: node1 answered writable at 900 ms for a probe sent at 0, node2 writable at 50 ms.
    // node1 may have been fenced right after 0: no proof.
    let slow_round = [probe(1, 0, 900, true), probe(2, 0, 50, true), probe(1, 1000, 1010, false)];
    assert!(overlaps(&slow_round, 1).is_empty());
    // node1 still writable for a probe sent after node2's writable answer: proven.
    let late = [probe(2, 0, 50, true), probe(1, 60, 70, true)];
    assert_eq!(overlaps(&late, 1).len(), 1);
    // Two different nodes promoted.
    let two = [probe(2, 0, 50, true), probe(3, 100, 150, true)];
    assert_eq!(overlaps(&two, 1), vec!["more than one node was promoted: [2, 3]".to_string()]);
}
