//! Replication slots on a real cluster: permanent physical and logical slots from the dynamic `slots:` are created
//! on the primary and kept on every replica (member slots for every other member, the permanent physical slots,
//! the logical ones copied from the primary), so a new primary after a switchover has them all; a slot matched by
//! `ignore_slots` is left alone while an unknown one is dropped (and the log says why). A logical slot survives a
//! crash failover without losing the changes its consumer had not confirmed (PostgreSQL 15: the slot is copied
//! from the primary's `pg_replslot` and advanced on the replicas, as Patroni does before PostgreSQL 17).

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

/// The slots of node `node` as `name:type:plugin` lines, sorted.
async fn slots(c: &raftgres::demo::cluster::LocalCluster, node: usize) -> Option<Vec<String>> {
    let client = connect(c, node).await?;
    let rows = client
        .query(
            "SELECT slot_name || ':' || slot_type || ':' || coalesce(plugin, '') FROM pg_catalog.pg_replication_slots \
             ORDER BY slot_name",
            &[],
        )
        .await
        .ok()?;
    Some(rows.iter().map(|row| row.get::<_, String>(0)).collect())
}

/// Waits until node `node` has exactly the slots `expected` (`name:type:plugin`, sorted).
async fn wait_slots(c: &raftgres::demo::cluster::LocalCluster, node: usize, expected: &[String]) {
    let what = format!("node{node} has the slots {expected:?}");
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if slots(c, node).await.as_deref() == Some(expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if found.is_err() {
        panic!("{what}; it has {:?}\n{}", slots(c, node).await, logs(c));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permanent_slots_follow_the_primary_and_unknown_ones_are_dropped() {
    if !pg_available("permanent_slots_follow_the_primary_and_unknown_ones_are_dropped") {
        return;
    }
    let (mut spec, dir) = spec();
    spec.dcs_overrides = json!({
        "postgresql": {"parameters": {"wal_level": "logical"}},
        "slots": {"archiver": null, "cdc": {"type": "logical", "database": "postgres", "plugin": "test_decoding"}},
        "ignore_slots": [{"name": "external_cdc"}],
    });
    let (tc, first) = start(spec, dir).await;
    let c = &tc.cluster;
    let others: Vec<usize> = (1..=3).filter(|n| *n != first).collect();
    let expected_on = |primary: usize, extra: &[&str]| {
        let mut all: Vec<String> = ["archiver:physical:", "cdc:logical:test_decoding"].map(str::to_owned).to_vec();
        all.extend((1..=3).filter(|n| *n != primary).map(|n| format!("node{n}:physical:")));
        all.extend(extra.iter().map(|s| (*s).to_owned()));
        all.sort();
        all
    };
    wait_slots(c, first, &expected_on(first, &[])).await;
    // Every replica keeps the same slots: its own is the only member slot it lacks.
    for replica in &others {
        wait_slots(c, *replica, &expected_on(*replica, &[])).await;
    }

    // The logical slot decodes: a change made now is there to consume.
    assert!(execute(c, first, "CREATE TABLE cdc_probe (id int); INSERT INTO cdc_probe VALUES (1)").await);
    let peek = "SELECT count(*) FROM pg_catalog.pg_logical_slot_peek_changes('cdc', NULL, NULL) \
                WHERE data LIKE 'table public.cdc_probe: INSERT%'";
    assert_eq!(count(c, first, peek).await, Some(1), "the permanent logical slot decodes the insert");

    // A slot someone made by hand is dropped; one matched by ignore_slots stays.
    assert!(execute(c, first, "SELECT pg_catalog.pg_create_physical_replication_slot('stray')").await);
    assert!(
        execute(c, first, "SELECT pg_catalog.pg_create_logical_replication_slot('external_cdc', 'test_decoding')")
            .await
    );
    wait_slots(c, first, &expected_on(first, &["external_cdc:logical:test_decoding"])).await;
    let log = std::fs::read_to_string(c.dir().join(format!("node{first}/raftgres.log"))).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains("dropped replication slot") && l.contains("stray") && l.contains("unknown")),
        "the log says which slot was dropped and why\n{}",
        logs(c)
    );

    // Switchover: the new primary has the permanent slots; the demoted one keeps them as every replica does, and
    // the ignored slot.
    let candidate = others[0];
    let request = json!({"leader": format!("node{first}"), "candidate": format!("node{candidate}")});
    let res = reqwest::Client::new().post(format!("{}/switchover", c.api(first))).json(&request).send().await;
    assert_eq!(res.map(|r| r.status().as_u16()).unwrap_or_default(), 200, "switchover\n{}", logs(c));
    assert_eq!(new_primary(c, first, Duration::from_secs(60)).await, candidate, "the candidate won\n{}", logs(c));
    wait_slots(c, candidate, &expected_on(candidate, &[])).await;
    wait_slots(c, first, &expected_on(first, &["external_cdc:logical:test_decoding"])).await;
    finish(c, &[]).await;
}

/// The slot `name`'s `confirmed_flush_lsn` on node `node` as an integer, `None` when it has no such slot.
async fn confirmed_flush(c: &raftgres::demo::cluster::LocalCluster, node: usize, name: &str) -> Option<i64> {
    let client = connect(c, node).await?;
    let sql =
        "SELECT pg_catalog.pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint FROM pg_catalog.pg_replication_slots \
               WHERE slot_name = $1";
    let row = tokio::time::timeout(Duration::from_secs(5), client.query_opt(sql, &[&name])).await.ok()?.ok()??;
    row.get(0)
}

/// The inserts of table `cdc_orders` that slot `cdc` on node `node` decodes without consuming them.
async fn peek_orders(c: &raftgres::demo::cluster::LocalCluster, node: usize) -> Option<Vec<String>> {
    let client = connect(c, node).await?;
    let sql = "SELECT data FROM pg_catalog.pg_logical_slot_peek_changes('cdc', NULL, NULL) \
               WHERE data LIKE 'table public.cdc_orders: INSERT%'";
    let rows = tokio::time::timeout(Duration::from_secs(10), client.query(sql, &[])).await.ok()?.ok()?;
    Some(rows.iter().map(|row| row.get::<_, String>(0)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logical_slot_keeps_unconfirmed_changes_across_a_crash_failover() {
    if !pg_available("logical_slot_keeps_unconfirmed_changes_across_a_crash_failover") {
        return;
    }
    let (mut spec, dir) = spec();
    spec.dcs_overrides = json!({
        "postgresql": {"parameters": {"wal_level": "logical"}},
        "slots": {"cdc": {"type": "logical", "database": "postgres", "plugin": "test_decoding"}},
    });
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let others: Vec<usize> = (1..=3).filter(|n| *n != primary).collect();
    eventually(Duration::from_secs(60), "the primary has the permanent logical slot", || async {
        confirmed_flush(c, primary, "cdc").await.map(|_| ())
    })
    .await;

    // A consumer reads and confirms the first order; the second is written but not consumed.
    assert!(execute(c, primary, "CREATE TABLE cdc_orders (id int primary key, item text)").await);
    assert!(execute(c, primary, "INSERT INTO cdc_orders VALUES (1, 'consumed')").await);
    let consume = "SELECT count(*) FROM pg_catalog.pg_logical_slot_get_changes('cdc', NULL, NULL)";
    assert!(count(c, primary, consume).await.is_some_and(|n| n > 0), "the consumer read the first order");
    let confirmed = confirmed_flush(c, primary, "cdc").await.unwrap_or_default();
    assert!(execute(c, primary, "INSERT INTO cdc_orders VALUES (2, 'not yet consumed')").await);
    let written =
        count(c, primary, "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::bigint")
            .await
            .unwrap_or_default();

    // Each replica holds the slot (copied from the primary), advanced to what the consumer confirmed, and has
    // replayed the unconsumed order.
    for replica in &others {
        let what = format!("node{replica} holds slot cdc at the consumer's position and replayed the second order");
        eventually(Duration::from_secs(90), &what, || async {
            let at = confirmed_flush(c, *replica, "cdc").await?;
            let replayed = count(
                c,
                *replica,
                "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_replay_lsn(), '0/0')::bigint",
            )
            .await?;
            (at >= confirmed && replayed >= written).then_some(())
        })
        .await;
        // Patroni's readiness check: the primary's physical slot for the replica holds, through hot standby
        // feedback, the catalog rows the copied slot needs.
        eventually(Duration::from_secs(60), &format!("node{replica} finds its copy of cdc ready"), || async {
            let log = std::fs::read_to_string(c.dir().join(format!("node{replica}/raftgres.log"))).ok()?;
            log.lines()
                .any(|l| l.contains("logical slot is safe to be used after a failover") && l.contains("cdc"))
                .then_some(())
        })
        .await;
    }

    // The primary crashes (raftgres and PostgreSQL killed); a replica takes over.
    c.kill_node(primary).await.expect("kill -9 the primary's raftgres");
    c.kill_postmaster(primary).expect("kill -9 the primary's postmaster");
    let new = new_primary(c, primary, Duration::from_secs(60)).await;

    // The consumer reconnects to the new primary: the order it had not confirmed is there, the one it had is not.
    let orders =
        eventually(Duration::from_secs(30), "slot cdc decodes on the new primary", || peek_orders(c, new)).await;
    assert_eq!(
        orders,
        ["table public.cdc_orders: INSERT: id[integer]:2 item[text]:'not yet consumed'"],
        "the unconfirmed change is kept, the confirmed one is not decoded again\n{}",
        logs(c)
    );
    // And the slot goes on: a change made on the new primary is decoded after it.
    assert!(execute(c, new, "INSERT INTO cdc_orders VALUES (3, 'after the failover')").await);
    let orders = peek_orders(c, new).await.unwrap_or_default();
    assert_eq!(orders.len(), 2, "both orders are there to consume: {orders:?}");
    finish(c, &[]).await;
}
