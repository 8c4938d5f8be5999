//! Bootstrap: three nodes → exactly one primary, two replicas streaming through active slots,
//! and a row written on the primary appears on both replicas; the dynamic `postgresql.recovery_conf` reaches the
//! replicas.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bootstrap_gives_one_primary_and_two_streaming_replicas() {
    if !pg_available("bootstrap_gives_one_primary_and_two_streaming_replicas") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let replicas: Vec<usize> = (1..=3).filter(|n| *n != primary).collect();
    for node in 1..=3 {
        let want = node != primary;
        assert_eq!(in_recovery(c, node).await, Some(want), "node{node} recovery state\n{}", logs(c));
    }
    let streaming = "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'";
    eventually(Duration::from_secs(30), "both replicas stream from the primary", || async {
        (count(c, primary, streaming).await == Some(2)).then_some(())
    })
    .await;
    let active_slots = "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_type = 'physical'";
    eventually(Duration::from_secs(30), "both replicas use their physical slots", || async {
        (count(c, primary, active_slots).await == Some(2)).then_some(())
    })
    .await;
    assert!(
        execute(c, primary, "CREATE TABLE bootstrap_check (id int); INSERT INTO bootstrap_check VALUES (42)").await
    );
    for replica in &replicas {
        eventually(Duration::from_secs(30), &format!("the row reaches node{replica}"), || async {
            (count(c, *replica, "SELECT count(*) FROM bootstrap_check WHERE id = 42").await == Some(1)).then_some(())
        })
        .await;
    }

    // The dynamic postgresql.recovery_conf reaches every replica by reload (the nodes' files have none), never
    // the primary.
    let patch = serde_json::json!({"postgresql": {"recovery_conf": {"recovery_min_apply_delay": "2s"}}});
    let res = reqwest::Client::new().patch(format!("{}/config", c.api(primary))).json(&patch).send().await;
    assert_eq!(res.map(|r| r.status().as_u16()).unwrap_or_default(), 200, "PATCH /config\n{}", logs(c));
    for node in 1..=3 {
        let want = if node == primary { "0" } else { "2s" };
        eventually(Duration::from_secs(30), &format!("node{node} has recovery_min_apply_delay {want}"), || async {
            let client = connect(c, node).await?;
            let row = client.query_one("SHOW recovery_min_apply_delay", &[]).await.ok()?;
            (row.get::<_, String>(0) == want).then_some(())
        })
        .await;
    }
    finish(c, &[]).await;
}
