//! A standby cluster (`standby_cluster` in `bootstrap.dcs`): a second raftgres cluster whose leader streams from
//! the first cluster's primary and is never writable; its other members cascade from it; a crash of its standby
//! leader moves the role to another member, which follows the remote primary; removing `standby_cluster`
//! promotes it.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

async fn code(url: String) -> Option<u16> {
    reqwest::get(url).await.ok().map(|r| r.status().as_u16())
}

/// The member of `c` answering 200 on `/standby-leader`.
async fn standby_leader(c: &raftgres::demo::cluster::LocalCluster, not: Option<usize>) -> Option<usize> {
    for node in (1..=c.n_nodes()).filter(|n| Some(*n) != not) {
        if code(format!("{}/standby-leader", c.api(node))).await == Some(200) {
            return Some(node);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn standby_cluster_follows_the_remote_primary_fails_over_and_is_promoted() {
    if !pg_available("standby_cluster_follows_the_remote_primary_fails_over_and_is_promoted") {
        return;
    }
    let (spec_a, dir_a) = spec();
    let (tc_a, primary_a) = start(spec_a, dir_a).await;
    let a = &tc_a.cluster;
    assert!(execute(a, primary_a, "CREATE TABLE dr (id int); INSERT INTO dr VALUES (1)").await);

    // Cluster B: the same replication credentials (pgpass), standby of A's primary.
    let (mut spec_b, dir_b) = spec();
    std::fs::copy(a.dir().join("pgpass"), dir_b.path().join("pgpass")).expect("share the credentials");
    spec_b.dcs_overrides = json!({"standby_cluster": {
        "host": "127.0.0.1",
        "port": a.pg_port(primary_a),
        "restore_command": "/bin/false %f %p",
        "recovery_min_apply_delay": "1s",
        "create_replica_methods": ["dr_copy", "basebackup"],
    }});
    // The standby leader is created by the method standby_cluster names (a local postgresql.dr_copy section the
    // node's own create_replica_methods does not list): it records its arguments, then runs pg_basebackup.
    let shared = shared_dir(&dir_b.path().join("shared"));
    let bin = raftgres::demo::cluster::find_pg_bin_dir().expect("PostgreSQL's bin directory");
    let script = shared.join("dr_copy.sh");
    write_script(
        &script,
        &format!(
            "echo \"$@\" >> {log}\nfor a in \"$@\"; do case $a in --datadir=*) d=${{a#--datadir=}};; \
             --connstring=*) c=${{a#--connstring=}};; esac; done\nexec {bin}/pg_basebackup -D \"$d\" -d \"$c\" -X stream -c fast\n",
            log = shared.join("dr_copy.log").display(),
            bin = bin.display()
        ),
    );
    for node in 1..=3 {
        let section = json!({"command": script.display().to_string(), "keep_data": false});
        spec_b.node_overrides.insert(node, json!({"postgresql": {"dr_copy": section}}));
    }
    let (tc_b, leader_b) = start(spec_b, dir_b).await;
    let b = &tc_b.cluster;
    assert_eq!(
        standby_leader(b, None).await,
        Some(leader_b),
        "the standby leader answers /standby-leader\n{}",
        logs(b)
    );
    let calls = std::fs::read_to_string(shared.join("dr_copy.log")).unwrap_or_default();
    assert_eq!(calls.lines().count(), 1, "the standby leader, and only it, was made by dr_copy: {calls}");
    assert!(calls.contains("--role=replica") && calls.contains(&format!("port='{}'", a.pg_port(primary_a))), "{calls}");
    assert_eq!(code(format!("{}/primary", b.api(leader_b))).await, Some(503), "a standby leader is not a primary");
    assert_eq!(in_recovery(b, leader_b).await, Some(true));
    let role = reqwest::get(format!("{}/patroni", b.api(leader_b))).await.expect("GET /patroni");
    let role: serde_json::Value = role.json().await.expect("JSON");
    assert_eq!(role["role"], "standby_leader", "{role}");
    // standby_cluster's recovery_min_apply_delay applies to the standby leader only.
    for node in 1..=3 {
        // (Its members get restore_command too, as in Patroni, to fall back to the primary cluster's archive.)
        let expected = if node == leader_b { ("1s", "/bin/false %f %p") } else { ("0", "/bin/false %f %p") };
        let what = format!(
            "B's node{node} runs with recovery_min_apply_delay {} and restore_command {:?}",
            expected.0, expected.1
        );
        eventually(Duration::from_secs(30), &what, || async {
            let delay = show(b, node, "recovery_min_apply_delay").await?;
            let restore = show(b, node, "restore_command").await?;
            (delay == expected.0 && restore == expected.1).then_some(())
        })
        .await;
    }
    for node in 1..=3 {
        eventually(Duration::from_secs(60), &format!("B's node{node} has A's row"), || async {
            (count(b, node, "SELECT count(*) FROM dr").await == Some(1)).then_some(())
        })
        .await;
    }
    // B's replicas keep a slot for B's standby leader, moved forward to the replay position it publishes, so it
    // holds no old WAL there.
    assert!(execute(a, primary_a, "CREATE TABLE filler AS SELECT g FROM generate_series(1, 10000) g").await);
    eventually(Duration::from_secs(60), "B's standby leader replays A's new WAL", || async {
        (count(b, leader_b, "SELECT count(*) FROM filler").await == Some(10000)).then_some(())
    })
    .await;
    let replayed = "SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_replay_lsn(), '0/0')::bigint";
    let at = count(b, leader_b, replayed).await.unwrap_or_default();
    for node in (1..=3).filter(|n| *n != leader_b) {
        let slot = format!(
            "SELECT pg_catalog.pg_wal_lsn_diff(restart_lsn, '0/0')::bigint FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = 'node{leader_b}'"
        );
        eventually(
            Duration::from_secs(60),
            &format!("B's node{node} advances its slot for the standby leader"),
            || async { (count(b, node, &slot).await? >= at).then_some(()) },
        )
        .await;
    }

    // The standby leader crashes: another member takes the role and follows A.
    b.kill_node(leader_b).await.expect("kill -9 B's standby leader");
    b.kill_postmaster(leader_b).expect("kill -9 its postmaster");
    let new_leader = eventually(Duration::from_secs(60), "a new standby leader in B", || async {
        standby_leader(b, Some(leader_b)).await
    })
    .await;
    assert!(execute(a, primary_a, "INSERT INTO dr VALUES (2)").await);
    eventually(Duration::from_secs(60), "the new standby leader has A's new row", || async {
        (count(b, new_leader, "SELECT count(*) FROM dr").await == Some(2)).then_some(())
    })
    .await;
    assert!(!execute(b, new_leader, "INSERT INTO dr VALUES (3)").await, "a standby leader refuses writes");
    eventually(Duration::from_secs(30), "the new standby leader applies with standby_cluster's delay", || async {
        (show(b, new_leader, "recovery_min_apply_delay").await? == "1s").then_some(())
    })
    .await;

    // Removing standby_cluster promotes B's standby leader.
    let res = reqwest::Client::new()
        .patch(format!("{}/config", b.api(new_leader)))
        .json(&json!({"standby_cluster": null}))
        .send()
        .await;
    assert_eq!(res.map(|r| r.status().as_u16()).unwrap_or_default(), 200, "PATCH /config\n{}", logs(b));
    eventually(Duration::from_secs(60), "B's leader is promoted", || async {
        (in_recovery(b, new_leader).await == Some(false)).then_some(())
    })
    .await;
    assert!(execute(b, new_leader, "INSERT INTO dr VALUES (3)").await, "B is writable now");
    assert_eq!(code(format!("{}/primary", b.api(new_leader))).await, Some(200));
    // A running cluster cannot become a standby cluster by a config change.
    let res = reqwest::Client::new()
        .patch(format!("{}/config", a.api(primary_a)))
        .json(&json!({"standby_cluster": {"host": "127.0.0.1", "port": 5432}}))
        .send()
        .await;
    assert_eq!(res.map(|r| r.status().as_u16()).unwrap_or_default(), 400);
    finish(b, &[]).await;
    finish(a, &[]).await;
}

/// An archive-only standby cluster: `standby_cluster` with `restore_command` and no `host`. Its standby leader is
/// created from a base backup of the primary cluster by a `no_leader` method, runs without `primary_conninfo`
/// and replays what the primary cluster archives; the other members clone from it and stream from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archive_only_standby_cluster_replays_the_primary_clusters_archive() {
    if !pg_available("archive_only_standby_cluster_replays_the_primary_clusters_archive") {
        return;
    }
    let (mut spec_a, dir_a) = spec();
    spec_a.n_nodes = 1;
    let shared = shared_dir(&dir_a.path().join("shared"));
    let archive = shared_dir(&shared.join("archive"));
    spec_a.dcs_overrides = json!({"postgresql": {"parameters": {
        "archive_mode": "on",
        "archive_command": format!("test ! -f {a}/%f && cp %p {a}/%f", a = archive.display()),
    }}});
    let (tc_a, primary_a) = start(spec_a, dir_a).await;
    let a = &tc_a.cluster;
    assert!(execute(a, primary_a, "CREATE TABLE dr (id int); INSERT INTO dr VALUES (1)").await);

    // A base backup of A, as a backup tool keeps it.
    let backup = shared.join("base");
    base_backup(a, primary_a, &backup).await;
    let script = shared.join("from_backup.sh");
    write_script(&script, &copy_backup_method(&backup));

    // Cluster B: A's credentials (its data is A's), standby of A's archive.
    let (mut spec_b, dir_b) = spec();
    std::fs::copy(a.dir().join("pgpass"), dir_b.path().join("pgpass")).expect("share the credentials");
    let restore = format!("cp {}/%f %p", archive.display());
    spec_b.dcs_overrides =
        json!({"standby_cluster": {"restore_command": restore, "create_replica_methods": ["from_backup"]}});
    for node in 1..=3 {
        let section = json!({"command": script.display().to_string(), "no_leader": true});
        spec_b.node_overrides.insert(node, json!({"postgresql": {"from_backup": section}}));
    }
    let (tc_b, leader_b) = start(spec_b, dir_b).await;
    let b = &tc_b.cluster;
    assert_eq!(standby_leader(b, None).await, Some(leader_b), "B has a standby leader\n{}", logs(b));
    assert_eq!(in_recovery(b, leader_b).await, Some(true));
    assert_eq!(show(b, leader_b, "primary_conninfo").await.as_deref(), Some(""), "it streams from nobody");
    assert_eq!(show(b, leader_b, "restore_command").await.as_deref(), Some(restore.as_str()));

    // What A writes reaches B through the archive, and B's members through B's standby leader.
    // Two statements: a switch inside the inserting transaction would leave its commit in the next segment.
    assert!(execute(a, primary_a, "INSERT INTO dr VALUES (2)").await);
    assert!(execute(a, primary_a, "SELECT pg_catalog.pg_switch_wal()").await);
    for node in 1..=3 {
        let arrived = tokio::time::timeout(Duration::from_secs(90), async {
            while count(b, node, "SELECT count(*) FROM dr").await != Some(2) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        if arrived.await.is_err() {
            let archived: Vec<String> = std::fs::read_dir(&archive)
                .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let mode = show(a, primary_a, "archive_mode").await;
            panic!(
                "B's node{node} does not have A's archived row; archive {archived:?}, A's archive_mode {mode:?}\n\
                 --- B ---\n{}\n--- A ---\n{}",
                logs(b),
                logs(a)
            );
        }
    }
    finish(b, &[]).await;
    finish(a, &[]).await;
}
