//! `no_leader` replica methods (Patroni's "bootstrap (without leader)"): a node whose data directory is gone,
//! in a cluster with no leader to clone from, restores it with a replica method marked `no_leader` (here a copy
//! of a base backup taken with pg_basebackup), starts as a standby and wins the leader race.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_no_leader_method_restores_a_node_while_the_cluster_has_no_leader() {
    if !pg_available("a_no_leader_method_restores_a_node_while_the_cluster_has_no_leader") {
        return;
    }
    let (mut spec, dir) = spec();
    spec.n_nodes = 1;
    let shared = shared_dir(&dir.path().join("shared"));
    let backup = shared.join("base");
    let calls = shared.join("from_backup.log");
    let script = shared.join("from_backup.sh");
    write_script(&script, &format!("echo \"$@\" >> {}\n{}", calls.display(), copy_backup_method(&backup)));
    spec.node_overrides.insert(
        1,
        json!({"postgresql": {
            "create_replica_methods": ["from_backup", "basebackup"],
            "from_backup": {"command": script.display().to_string(), "no_leader": true},
        }}),
    );
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    assert!(execute(c, primary, "CREATE TABLE kept (id int); INSERT INTO kept VALUES (1)").await);

    // A base backup, as a backup tool would keep it.
    base_backup(c, primary, &backup).await;

    // The node crashes and loses its data directory: the cluster has no leader and nobody to clone from.
    c.kill_node(primary).await.expect("kill -9 raftgres");
    c.kill_postmaster(primary).expect("kill -9 the postmaster");
    let data_dir = c.dir().join(format!("node{primary}/data"));
    std::fs::remove_dir_all(&data_dir).expect("remove the data directory");
    c.start_node(primary).expect("start the node again");

    eventually(Duration::from_secs(120), "the restored node leads the cluster again", || async {
        (in_recovery(c, primary).await == Some(false)).then_some(())
    })
    .await;
    assert_eq!(count(c, primary, "SELECT count(*) FROM kept").await, Some(1), "the backup's row\n{}", logs(c));
    let recorded = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(recorded.lines().count(), 1, "from_backup ran once: {recorded}");
    assert!(recorded.trim_end().ends_with("--connstring="), "no member to copy from: {recorded}");
    let log = std::fs::read_to_string(c.dir().join(format!("node{primary}/raftgres.log"))).unwrap_or_default();
    assert!(log.contains("trying to bootstrap (without leader)"), "{}", logs(c));
    finish(c, &[]).await;
}
