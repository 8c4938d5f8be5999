//! Replication slots on a real cluster: permanent physical and logical slots from the dynamic `slots:` are created
//! on the primary and again on a new primary after a switchover; a slot matched by `ignore_slots` is left alone
//! while an unknown one is dropped (and the log says why); a demoted primary drops the slots of its time as primary.

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

    // Switchover: the new primary creates the permanent slots; the demoted one drops what it had as primary
    // except the ignored slot.
    let candidate = others[0];
    let request = json!({"leader": format!("node{first}"), "candidate": format!("node{candidate}")});
    let res = reqwest::Client::new().post(format!("{}/switchover", c.api(first))).json(&request).send().await;
    assert_eq!(res.map(|r| r.status().as_u16()).unwrap_or_default(), 200, "switchover\n{}", logs(c));
    assert_eq!(new_primary(c, first, Duration::from_secs(60)).await, candidate, "the candidate won\n{}", logs(c));
    wait_slots(c, candidate, &expected_on(candidate, &[])).await;
    wait_slots(c, first, &["external_cdc:logical:test_decoding".to_owned()]).await;
    finish(c, &[]).await;
}
