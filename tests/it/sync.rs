//! Synchronous replication: the sync standby is named in `/sync` and in
//! `synchronous_standby_names`, failover goes only to it and loses no acknowledged commit, and
//! strict mode blocks commits with no standby and resumes when one returns.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// The replica PostgreSQL reports as `sync` on `primary`, once exactly one is.
async fn sync_standby(c: &raftgres::demo::cluster::LocalCluster, primary: usize) -> usize {
    eventually(Duration::from_secs(60), "one replica becomes the synchronous standby", || async {
        let client = connect(c, primary).await?;
        let rows = client
            .query("SELECT application_name FROM pg_stat_replication WHERE sync_state = 'sync'", &[])
            .await
            .ok()?;
        let [row] = rows.as_slice() else { return None };
        let name: String = row.get(0);
        let node: usize = name.strip_prefix("node")?.parse().ok()?;
        // The key names it, so its REST API answers /sync with 200.
        (c.health_check(node, "/sync").await == Some(200)).then_some(node)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_mode_fails_over_only_to_the_sync_standby_without_losing_commits() {
    if !pg_available("sync_mode_fails_over_only_to_the_sync_standby_without_losing_commits") {
        return;
    }
    let (mut spec, dir) = spec();
    spec.dcs_overrides = json!({"synchronous_mode": "on"});
    let (tc, old) = start(spec, dir).await;
    let c = &tc.cluster;
    let standby = sync_standby(c, old).await;
    let other = (1..=3).find(|n| *n != old && *n != standby).expect("the async replica");
    assert_eq!(c.health_check(other, "/sync").await, Some(503), "the async replica is not /sync");
    assert_eq!(c.health_check(other, "/async").await, Some(200));
    let guc =
        count(c, old, "SELECT count(*) FROM pg_settings WHERE name = 'synchronous_standby_names' AND setting <> ''")
            .await;
    assert_eq!(guc, Some(1), "synchronous_standby_names is set on the primary");
    assert!(execute(c, old, "CREATE TABLE synced (id bigint PRIMARY KEY)").await);
    let client = connect(c, old).await.expect("connect to the primary");
    let mut acked = Vec::new();
    for id in 0..300i64 {
        if client.execute("INSERT INTO synced VALUES ($1)", &[&id]).await.is_ok() {
            acked.push(id);
        }
    }
    c.kill_node(old).await.expect("kill -9 the primary's raftgres");
    c.kill_postmaster(old).expect("kill -9 the primary's postmaster");
    let new = new_primary(c, old, Duration::from_secs(60)).await;
    assert_eq!(new, standby, "only the synchronous standby may take over\n{}", logs(c));
    let present = count(c, new, "SELECT count(*) FROM synced").await.unwrap_or(0);
    assert_eq!(present as usize, acked.len(), "every acknowledged commit survives the failover");
    c.stop_all().await.expect("stop the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_mode_blocks_commits_without_a_standby_and_resumes() {
    if !pg_available("strict_mode_blocks_commits_without_a_standby_and_resumes") {
        return;
    }
    let (mut spec, dir) = spec();
    spec.dcs_overrides = json!({"synchronous_mode": "on", "synchronous_mode_strict": true});
    // node3 votes in Raft and replicates but may neither lead nor be a synchronous standby, so
    // stopping the one eligible standby leaves a Raft majority and no standby to wait for.
    let tags = json!({"nofailover": true, "nosync": true});
    spec.tags.insert(3, tags.as_object().cloned().unwrap_or_default());
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let standby = sync_standby(c, primary).await;
    assert_ne!(standby, 3, "a nosync member is never the synchronous standby");
    assert!(execute(c, primary, "CREATE TABLE strict_check (id int)").await);
    c.stop_node(standby).await.expect("stop the synchronous standby");
    let client = connect(c, primary).await.expect("connect to the primary");
    client.batch_execute("SET statement_timeout = 0").await.expect("no statement timeout");
    let blocked = tokio::spawn(async move { client.execute("INSERT INTO strict_check VALUES (1)", &[]).await.is_ok() });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!blocked.is_finished(), "with no standby left, strict mode holds the commit");
    c.start_node(standby).expect("bring the standby back");
    let committed = tokio::time::timeout(Duration::from_secs(60), blocked).await;
    assert!(matches!(committed, Ok(Ok(true))), "the commit completes once a standby returns\n{}", logs(c));
    c.stop_all().await.expect("stop the cluster");
}
