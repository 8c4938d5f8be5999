//! pgBackRest (Debian's package) as Patroni operators use it with raftgres: WAL archived with `archive-push`
//! through the dynamic `archive_command`, a full backup of the primary, and a replica reinitialized with
//! `pgbackrest restore` as its first `create_replica_method` (falling back to `basebackup` while the repository
//! has no backup yet), catching up through `archive-get` in `recovery_conf` and then streaming; a `nostream`
//! replica that only ever replays the archive; and a second cluster bootstrapped from the backup.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;

const TEST: &str = "pgbackrest_restores_a_replica_from_a_backup";

/// Runs pgBackRest as the PostgreSQL user (`postgres` when the tests run as root); its output on failure.
async fn pgbackrest(args: &[String]) -> Result<String, String> {
    let root = nix::unistd::geteuid().is_root();
    let mut command = if root {
        let mut command = tokio::process::Command::new("runuser");
        command.args(["-u", "postgres", "--", "pgbackrest"]);
        command
    } else {
        tokio::process::Command::new("pgbackrest")
    };
    command.args(args).current_dir("/");
    let out = command.output().await.map_err(|e| format!("run pgbackrest: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("pgbackrest {args:?}: {}\n{text}", out.status))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pgbackrest_restores_a_replica_from_a_backup() {
    if !pg_available(TEST) {
        return;
    }
    if std::process::Command::new("pgbackrest").arg("version").output().is_err() {
        println!("skipping {TEST}: pgBackRest not installed (apt-get install -y pgbackrest)");
        return;
    }
    let (mut spec, dir) = spec();
    let base = shared_dir(&dir.path().join("pgbackrest"));
    for sub in ["repo", "log", "lock", "spool"] {
        shared_dir(&base.join(sub));
    }
    let conf = base.join("pgbackrest.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={b}/repo\nlog-path={b}/log\nlock-path={b}/lock\nspool-path={b}/spool\n\
             log-level-console=warn\nlog-level-file=info\nstart-fast=y\n\n[demo]\n",
            b = base.display()
        ),
    )
    .expect("write pgbackrest.conf");
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).expect("make the config readable");
    let common = format!("pgbackrest --config={} --stanza=demo", conf.display());
    // archive_command runs in the data directory: $PWD is the pg1-path of whichever node is primary.
    spec.dcs_overrides = json!({"postgresql": {"parameters": {
        "archive_mode": "on",
        "archive_command": format!("{common} --pg1-path=\"$PWD\" archive-push %p"),
    }}});
    let data_dirs: Vec<PathBuf> = (1..=3).map(|n| dir.path().join(format!("node{n}/data"))).collect();
    for node in 1..=3 {
        let data_dir = data_dirs[node - 1].display().to_string();
        spec.node_overrides.insert(
            node,
            json!({"postgresql": {
                "create_replica_methods": ["pgbackrest", "basebackup"],
                "pgbackrest": {
                    "command": format!("{common} --pg1-path={data_dir} --delta restore --type=standby"),
                    "keep_data": true,
                    "no_params": true,
                },
                "recovery_conf": {"restore_command": format!("{common} --pg1-path={data_dir} archive-get %f \"%p\"")},
            }}),
        );
    }
    // node3 never streams: it replays what archive-get fetches (and may not lead, so the primary is node1 or 2).
    spec.tags.insert(3, json!({"nostream": true, "nofailover": true}).as_object().cloned().unwrap_or_default());
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let replica = (1..=2).find(|n| *n != primary).expect("a streaming replica");
    // No backup yet: the replicas were made by the fallback method.
    let log = std::fs::read_to_string(c.dir().join(format!("node{replica}/raftgres.log"))).unwrap_or_default();
    assert!(log.contains("replica has been created using basebackup"), "fallback to basebackup\n{}", logs(c));

    // A stanza and a full backup of the primary, WAL archived from the primary's archive_command.
    let layout = c.node(primary);
    let client = connect(c, primary).await.expect("connect to the primary");
    let row = client.query_one("SHOW unix_socket_directories", &[]).await.expect("SHOW unix_socket_directories");
    let socket_dir: String = row.get(0);
    let pg = [
        format!("--config={}", conf.display()),
        "--stanza=demo".to_owned(),
        format!("--pg1-path={}", layout.data_dir().display()),
        format!("--pg1-port={}", c.pg_port(primary)),
        format!("--pg1-socket-path={}", socket_dir.split(',').next().unwrap_or("/tmp").trim()),
    ];
    let run = |cmd: &str| {
        let mut args = pg.to_vec();
        args.push(cmd.to_owned());
        args
    };
    pgbackrest(&run("stanza-create")).await.unwrap_or_else(|e| panic!("{e}\n{}", logs(c)));
    pgbackrest(&run("backup")).await.unwrap_or_else(|e| panic!("{e}\n{}", logs(c)));
    let info = pgbackrest(&[format!("--config={}", conf.display()), "--stanza=demo".into(), "info".into()]).await;
    assert!(info.as_deref().is_ok_and(|i| i.contains("full backup")), "a full backup in the repository: {info:?}");

    // A row written after the backup, then the replica is rebuilt from the backup.
    assert!(execute(c, primary, "CREATE TABLE after_backup (x int); INSERT INTO after_backup VALUES (1)").await);
    let res = reqwest::Client::new()
        .post(format!("{}/reinitialize", c.api(replica)))
        .json(&json!({"force": true, "from_leader": true}))
        .send()
        .await;
    assert_eq!(res.map(|r| r.status().as_u16()).unwrap_or_default(), 200, "reinitialize\n{}", logs(c));
    eventually(Duration::from_secs(120), "the replica was restored by pgbackrest", || async {
        let log = std::fs::read_to_string(c.dir().join(format!("node{replica}/raftgres.log"))).ok()?;
        log.contains("replica has been created using pgbackrest").then_some(())
    })
    .await;
    eventually(Duration::from_secs(90), "the restored replica has the row written after the backup", || async {
        (count(c, replica, "SELECT count(*) FROM after_backup").await == Some(1)).then_some(())
    })
    .await;
    let streaming = format!(
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node{replica}' AND state = 'streaming'"
    );
    eventually(Duration::from_secs(60), "the restored replica streams from the primary", || async {
        (count(c, primary, &streaming).await == Some(1)).then_some(())
    })
    .await;

    // A new cluster bootstrapped from the backup (Patroni's custom bootstrap): restored, recovered to the end of
    // the archive, so it has the row written after the backup once that WAL is archived.
    let client = connect(c, primary).await.expect("connect to the primary");
    let row = client.query_one("SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())", &[]).await;
    let segment: String = row.expect("switch WAL").get(0);
    let archived = format!("SELECT count(*) FROM pg_catalog.pg_stat_archiver WHERE last_archived_wal >= '{segment}'");
    eventually(Duration::from_secs(60), "the WAL with the row is archived", || async {
        (count(c, primary, &archived).await == Some(1)).then_some(())
    })
    .await;
    // The nostream replica has it from the archive too, without ever streaming or a slot on the primary.
    eventually(Duration::from_secs(60), "the nostream replica replays the archived row", || async {
        (count(c, 3, "SELECT count(*) FROM after_backup").await == Some(1)).then_some(())
    })
    .await;
    let node3_streams = "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node3'";
    assert_eq!(count(c, primary, node3_streams).await, Some(0), "node3 does not stream");
    let node3_slot = "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'node3'";
    assert_eq!(count(c, primary, node3_slot).await, Some(0), "no slot is kept for a nostream member");
    let status: serde_json::Value =
        reqwest::get(format!("{}/patroni", c.api(3))).await.expect("GET /patroni").json().await.expect("JSON");
    assert_eq!(status["replication_state"], "in archive recovery", "{status}");

    let (mut spec2, dir2) = crate::harness::spec();
    spec2.n_nodes = 1;
    let restored_data = dir2.path().join("node1/data");
    spec2.node_overrides.insert(
        1,
        json!({"bootstrap": {
            "method": "pgbackrest",
            "pgbackrest": {
                "command": format!("{common} --pg1-path={} restore", restored_data.display()),
                "no_params": true,
                "keep_existing_recovery_conf": true,
            },
        }}),
    );
    let (tc2, restored) = start(spec2, dir2).await;
    let c2 = &tc2.cluster;
    assert_eq!(count(c2, restored, "SELECT count(*) FROM after_backup").await, Some(1), "{}", logs(c2));
    assert_eq!(in_recovery(c2, restored).await, Some(false), "the restored cluster is a primary");
    let log = std::fs::read_to_string(c2.dir().join("node1/raftgres.log")).unwrap_or_default();
    assert!(log.contains("the restored cluster left recovery"), "{}", logs(c2));
    finish(c2, &[]).await;
    finish(c, &["error creating the replica with pgbackrest"]).await;
}
