//! Synchronous replication: the sync standby is named in `/sync` and in
//! `synchronous_standby_names`, failover goes only to it and loses no acknowledged commit, and
//! strict mode blocks commits with no standby and resumes when one returns.
//! Quorum mode: `ANY k (…)` lists every standby, the `sync` key names them as voters (`/quorum`),
//! losing one standby keeps commits flowing, and a failover keeps every acknowledged commit.

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
    finish(c, &[]).await;
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
    // Placement made explicit: Raft leadership is on the primary's node, so stopping the standby
    // costs no Raft election and the primary keeps its lease; what blocks is strict mode alone.
    wait_raft_leader(c, primary).await;
    assert!(execute(c, primary, "CREATE TABLE strict_check (id int)").await);
    c.stop_node(standby).await.expect("stop the synchronous standby");
    let client = connect(c, primary).await.expect("connect to the primary");
    client.batch_execute("SET statement_timeout = 0").await.expect("no statement timeout");
    let mut insert = tokio::spawn(async move {
        match client.execute("INSERT INTO strict_check VALUES (1)", &[]).await {
            Ok(_) => CommitOutcome::Committed,
            Err(e) => CommitOutcome::Failed(e.to_string()),
        }
    });
    // Blocked means the backend waits for a synchronous standby (wait event SyncRep).
    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'";
    let outcome = eventually(Duration::from_secs(30), "the INSERT waits for a synchronous standby", || async {
        if insert.is_finished() {
            return Some(None);
        }
        (count(c, primary, waiting).await? > 0).then_some(Some(CommitOutcome::Blocked))
    })
    .await;
    let outcome = match outcome {
        Some(blocked) => blocked,
        None => (&mut insert).await.unwrap_or_else(|e| CommitOutcome::Failed(format!("insert task: {e}"))),
    };
    assert_eq!(
        outcome,
        CommitOutcome::Blocked,
        "with no synchronous standby left, strict mode must hold the commit (committed = a strict-mode violation, \
         failed = the primary or the session went away)\n{}",
        logs(c)
    );
    assert_eq!(c.primary().await, Some(primary), "the primary stays primary while it blocks");
    c.start_node(standby).expect("bring the standby back");
    let finished = tokio::time::timeout(Duration::from_secs(60), insert).await;
    let finished = finished.map(|joined| joined.unwrap_or_else(|e| CommitOutcome::Failed(format!("insert task: {e}"))));
    assert_eq!(
        finished.ok(),
        Some(CommitOutcome::Committed),
        "the commit completes once a standby returns\n{}",
        logs(c)
    );
    finish(c, &[]).await;
}

/// How a commit under strict synchronous replication ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CommitOutcome {
    /// Still waiting for a synchronous standby.
    Blocked,
    /// Acknowledged.
    Committed,
    /// Refused, or the session ended; the text says how.
    Failed(String),
}

/// `synchronous_standby_names` on `node`.
async fn standby_names(c: &raftgres::demo::cluster::LocalCluster, node: usize) -> Option<String> {
    let client = connect(c, node).await?;
    let row = tokio::time::timeout(Duration::from_secs(5), client.query_one("SHOW synchronous_standby_names", &[]))
        .await
        .ok()?
        .ok()?;
    Some(row.get(0))
}

/// Waits until the primary lists exactly `standbys` as `ANY 1 (…)` and each of them answers `/quorum` with 200.
async fn quorum_of(c: &raftgres::demo::cluster::LocalCluster, primary: usize, standbys: &[usize]) {
    let names: Vec<String> = standbys.iter().map(|n| format!("node{n}")).collect();
    let wanted = format!("ANY 1 ({})", names.join(","));
    eventually(Duration::from_secs(90), &format!("the primary asks for {wanted} and the key names them"), || async {
        if standby_names(c, primary).await? != wanted {
            return None;
        }
        for node in standbys {
            if c.health_check(*node, "/quorum").await != Some(200) {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Inserts `ids` one by one on `node`; returns the acknowledged ones.
async fn insert_acked(c: &raftgres::demo::cluster::LocalCluster, node: usize, ids: std::ops::Range<i64>) -> Vec<i64> {
    let client = connect(c, node).await.expect("connect to the primary");
    let mut acked = Vec::new();
    for id in ids {
        if client.execute("INSERT INTO quorum_rows VALUES ($1)", &[&id]).await.is_ok() {
            acked.push(id);
        }
    }
    acked
}

/// The roles `GET /cluster` on `node` reports, by member name.
async fn cluster_roles(c: &raftgres::demo::cluster::LocalCluster, node: usize) -> Vec<(String, String)> {
    let Ok(res) = reqwest::get(format!("{}/cluster", c.api(node))).await else { return Vec::new() };
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    let members = body["members"].as_array().cloned().unwrap_or_default();
    members
        .iter()
        .map(|m| (m["name"].as_str().unwrap_or("").to_string(), m["role"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quorum_mode_keeps_commits_through_a_lost_standby_and_a_failover() {
    if !pg_available("quorum_mode_keeps_commits_through_a_lost_standby_and_a_failover") {
        return;
    }
    let (mut spec, dir) = spec();
    spec.dcs_overrides = json!({"synchronous_mode": "quorum", "synchronous_node_count": 1});
    let (tc, old) = start(spec, dir).await;
    let c = &tc.cluster;
    let replicas: Vec<usize> = (1..=3).filter(|n| *n != old).collect();
    quorum_of(c, old, &replicas).await;
    for node in &replicas {
        assert_eq!(c.health_check(*node, "/sync").await, Some(503), "quorum standbys are not /sync");
        assert_eq!(c.health_check(*node, "/async").await, Some(503), "quorum standbys are not /async");
    }
    let roles = cluster_roles(c, old).await;
    let quorum_standbys = roles.iter().filter(|(_, role)| role == "quorum_standby").count();
    assert_eq!(quorum_standbys, 2, "both replicas are quorum standbys in /cluster: {roles:?}");
    assert!(execute(c, old, "CREATE TABLE quorum_rows (id bigint PRIMARY KEY)").await);
    let mut acked = insert_acked(c, old, 0..100).await;
    assert_eq!(acked.len(), 100, "commits succeed with both standbys");

    // Losing one standby: k = 1 is still met by the other, and the primary narrows to it.
    let (gone, kept) = (replicas[0], replicas[1]);
    c.stop_node(gone).await.expect("stop a standby");
    let _ = c.kill_postmaster(gone);
    let client = connect(c, old).await.expect("connect to the primary");
    client.batch_execute("SET statement_timeout = '60s'").await.expect("set statement_timeout");
    for id in 100..150i64 {
        let inserted = client.execute("INSERT INTO quorum_rows VALUES ($1)", &[&id]).await;
        assert!(inserted.is_ok(), "a commit succeeds with one standby left: {inserted:?}\n{}", logs(c));
        acked.push(id);
    }
    quorum_of(c, old, &[kept]).await;

    // It returns and becomes a voter again; then the primary dies with raftgres and postmaster.
    c.start_node(gone).expect("restart the standby");
    quorum_of(c, old, &replicas).await;
    acked.extend(insert_acked(c, old, 150..300).await);
    c.kill_node(old).await.expect("kill -9 the primary's raftgres");
    c.kill_postmaster(old).expect("kill -9 the primary's postmaster");
    let new = new_primary(c, old, Duration::from_secs(90)).await;
    assert!(replicas.contains(&new), "a quorum standby took over\n{}", logs(c));
    let present = count(c, new, "SELECT count(*) FROM quorum_rows").await.unwrap_or(0);
    assert_eq!(present as usize, acked.len(), "every acknowledged commit survives the failover\n{}", logs(c));
    finish(c, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_quorum_mode_blocks_commits_without_an_eligible_standby() {
    if !pg_available("strict_quorum_mode_blocks_commits_without_an_eligible_standby") {
        return;
    }
    let (mut spec, dir) = spec();
    spec.dcs_overrides =
        json!({"synchronous_mode": "quorum", "synchronous_mode_strict": true, "synchronous_node_count": 1});
    // node3 keeps the Raft majority and streams, but is `nosync`: it must never acknowledge a commit.
    let tags = json!({"nofailover": true, "nosync": true});
    spec.tags.insert(3, tags.as_object().cloned().unwrap_or_default());
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let standby = (1..=2).find(|n| *n != primary).expect("the eligible standby");
    quorum_of(c, primary, &[standby]).await;
    assert_eq!(c.health_check(3, "/quorum").await, Some(503), "a nosync member is no quorum standby");
    assert!(execute(c, primary, "CREATE TABLE strict_quorum (id int)").await);
    c.stop_node(standby).await.expect("stop the only eligible standby");
    let _ = c.kill_postmaster(standby);
    // Every standby that could acknowledge is gone: the primary waits for a name nobody has.
    eventually(Duration::from_secs(60), "the primary waits for the strict placeholder", || async {
        standby_names(c, primary).await.filter(|names| names.contains("placeholder"))
    })
    .await;
    let client = connect(c, primary).await.expect("connect to the primary");
    client.batch_execute("SET statement_timeout = 0").await.expect("no statement timeout");
    let blocked =
        tokio::spawn(async move { client.execute("INSERT INTO strict_quorum VALUES (1)", &[]).await.is_ok() });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!blocked.is_finished(), "with no eligible standby, strict quorum mode holds the commit");
    c.start_node(standby).expect("bring the standby back");
    let committed = tokio::time::timeout(Duration::from_secs(90), blocked).await;
    assert!(matches!(committed, Ok(Ok(true))), "the commit completes once a standby returns\n{}", logs(c));
    finish(c, &[]).await;
}
