//! Tags that shape the replication topology, on a real cluster: `replicatefrom` (a replica streams from another
//! replica, through a slot on it, and re-points to the leader when that member goes away, then back) and
//! `clonefrom` (a replica is cloned from a tagged replica instead of the primary); `noloadbalance` (out of the
//! `/replica` pool) and `failover_priority` (among equally healthy replicas, the higher priority is promoted).

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// The members streaming from node `node` (`application_name`s), sorted.
async fn streaming_from(c: &raftgres::demo::cluster::LocalCluster, node: usize) -> Option<Vec<String>> {
    let client = connect(c, node).await?;
    let rows = client
        .query(
            "SELECT application_name FROM pg_catalog.pg_stat_replication WHERE state = 'streaming' \
             ORDER BY application_name",
            &[],
        )
        .await
        .ok()?;
    Some(rows.iter().map(|row| row.get::<_, String>(0)).collect())
}

async fn wait_streaming(c: &raftgres::demo::cluster::LocalCluster, node: usize, expected: &[&str]) {
    let what = format!("exactly {expected:?} stream from node{node}");
    eventually(Duration::from_secs(90), &what, || async {
        let names = streaming_from(c, node).await?;
        (names == expected).then_some(())
    })
    .await;
}

/// The physical slots of node `node`, sorted.
async fn physical_slots(c: &raftgres::demo::cluster::LocalCluster, node: usize) -> Option<Vec<String>> {
    let client = connect(c, node).await?;
    let rows = client
        .query(
            "SELECT slot_name::text FROM pg_catalog.pg_replication_slots WHERE slot_type = 'physical' ORDER BY 1",
            &[],
        )
        .await
        .ok()?;
    Some(rows.iter().map(|row| row.get::<_, String>(0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicatefrom_cascades_and_clonefrom_clones_from_a_replica() {
    if !pg_available("replicatefrom_cascades_and_clonefrom_clones_from_a_replica") {
        return;
    }
    let (mut spec, dir) = spec();
    // node1 is the only node that may bootstrap or be promoted, so the roles are known.
    let tags = |extra: serde_json::Value| {
        let mut tags = json!({"nofailover": true});
        if let (Some(tags), Some(extra)) = (tags.as_object_mut(), extra.as_object()) {
            tags.extend(extra.clone());
        }
        tags.as_object().cloned().unwrap_or_default()
    };
    spec.tags.insert(2, tags(json!({"clonefrom": true})));
    spec.tags.insert(3, tags(json!({"replicatefrom": "node2"})));
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    assert_eq!(primary, 1, "only node1 may lead\n{}", logs(c));

    // node3 streams from node2 through a slot on node2. The primary keeps a slot for every member (Patroni's
    // member_slots_ttl retention): node3's is idle there and follows the position node3 reports. node2, tagged
    // nofailover, keeps only the slot of the member cascading from it.
    wait_streaming(c, 2, &["node3"]).await;
    wait_streaming(c, 1, &["node2"]).await;
    eventually(Duration::from_secs(30), "node2 keeps node3's slot and node1 both members'", || async {
        let on2 = physical_slots(c, 2).await?;
        let on1 = physical_slots(c, 1).await?;
        (on2 == ["node3"] && on1 == ["node2", "node3"]).then_some(())
    })
    .await;
    assert!(execute(c, 1, "CREATE TABLE cascade (x int); INSERT INTO cascade VALUES (1)").await);
    eventually(Duration::from_secs(30), "the row reaches node3 through node2", || async {
        (count(c, 3, "SELECT count(*) FROM cascade").await == Some(1)).then_some(())
    })
    .await;
    // The idle slot for node3 on the primary moves forward with node3's replay, so it holds no old WAL.
    let wal_now = "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::bigint";
    let written = count(c, 1, wal_now).await.unwrap_or_default();
    eventually(Duration::from_secs(60), "node3's idle slot on the primary is advanced", || async {
        let sql = "SELECT pg_catalog.pg_wal_lsn_diff(restart_lsn, '0/0')::bigint FROM pg_catalog.pg_replication_slots \
                   WHERE slot_name = 'node3' AND NOT active";
        (count(c, 1, sql).await? >= written).then_some(())
    })
    .await;

    // clonefrom: node3 reinitialized is cloned from node2, the running replica tagged clonefrom.
    let res = reqwest::Client::new().post(format!("{}/reinitialize", c.api(3))).json(&json!({"force": true})).send();
    assert_eq!(res.await.map(|r| r.status().as_u16()).unwrap_or_default(), 200, "reinitialize\n{}", logs(c));
    eventually(Duration::from_secs(90), "node3 was cloned from node2", || async {
        let log = std::fs::read_to_string(c.dir().join("node3/raftgres.log")).ok()?;
        log.lines()
            .any(|l| l.contains("creating the replica (create_replica_methods)") && l.contains("node2"))
            .then_some(())
    })
    .await;
    wait_streaming(c, 2, &["node3"]).await;
    eventually(Duration::from_secs(30), "the reinitialized node3 has the row", || async {
        (count(c, 3, "SELECT count(*) FROM cascade").await == Some(1)).then_some(())
    })
    .await;

    // node2 goes away: node3 streams from the leader, through a slot the leader now keeps; node2 comes back and
    // node3 returns to it.
    c.stop_node(2).await.expect("stop node2");
    wait_streaming(c, 1, &["node3"]).await;
    eventually(Duration::from_secs(30), "the leader keeps node3's slot", || async {
        physical_slots(c, 1).await?.contains(&"node3".to_owned()).then_some(())
    })
    .await;
    c.start_node(2).expect("start node2 again");
    wait_streaming(c, 2, &["node3"]).await;
    wait_streaming(c, 1, &["node2"]).await;
    finish(c, &[]).await;
}

/// The WAL position node `node` replayed (a replica) or wrote (the primary), as an integer.
async fn wal_position(c: &raftgres::demo::cluster::LocalCluster, node: usize) -> Option<i64> {
    let sql = "SELECT pg_catalog.pg_wal_lsn_diff(CASE WHEN pg_catalog.pg_is_in_recovery() \
               THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END, '0/0')::bigint";
    count(c, node, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn noloadbalance_leaves_the_replica_pool_and_failover_priority_picks_the_new_primary() {
    if !pg_available("noloadbalance_leaves_the_replica_pool_and_failover_priority_picks_the_new_primary") {
        return;
    }
    let (mut spec, dir) = spec();
    spec.tags
        .insert(2, json!({"noloadbalance": true, "failover_priority": 1}).as_object().cloned().unwrap_or_default());
    spec.tags.insert(3, json!({"failover_priority": 5}).as_object().cloned().unwrap_or_default());
    let (tc, first) = start(spec, dir).await;
    let c = &tc.cluster;
    // node1 leads (a switchover if another node won the bootstrap race), so both tagged nodes are replicas.
    if first != 1 {
        let request = json!({"leader": format!("node{first}"), "candidate": "node1"});
        let res = reqwest::Client::new().post(format!("{}/switchover", c.api(first))).json(&request).send().await;
        assert_eq!(res.map(|r| r.status().as_u16()).unwrap_or_default(), 200, "switchover\n{}", logs(c));
        assert_eq!(new_primary(c, first, Duration::from_secs(60)).await, 1, "node1 leads\n{}", logs(c));
    }
    eventually(Duration::from_secs(30), "node3 is in the replica pool and node2 (noloadbalance) is not", || async {
        let (two, three) = (c.health_check(2, "/replica").await?, c.health_check(3, "/replica").await?);
        (two == 503 && three == 200).then_some(())
    })
    .await;

    // Both replicas replayed everything the primary wrote: equally healthy, so the priority decides (Patroni 4).
    assert!(execute(c, 1, "CREATE TABLE prio (x int); INSERT INTO prio VALUES (1)").await);
    eventually(Duration::from_secs(30), "both replicas replayed the primary's WAL", || async {
        let at = wal_position(c, 1).await?;
        (wal_position(c, 2).await? >= at && wal_position(c, 3).await? >= at).then_some(())
    })
    .await;
    c.kill_node(1).await.expect("kill -9 node1's raftgres");
    c.kill_postmaster(1).expect("kill -9 node1's postmaster");
    assert_eq!(new_primary(c, 1, Duration::from_secs(60)).await, 3, "the higher failover_priority wins\n{}", logs(c));
    finish(c, &[]).await;
}
