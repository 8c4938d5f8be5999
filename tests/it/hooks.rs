//! The operator's scripts, run for real by three `raftgres run` processes: callbacks that record their
//! arguments through a bootstrap, a switchover and a crash failover; `post_bootstrap` creating a table through
//! the connection URL it is given; a failing `pre_promote` that makes another member win.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use serde_json::Value;

use crate::harness::*;

/// The callback lines node `node` recorded, oldest first (`<action> <role> <scope>`).
fn recorded(events: &Path, node: usize) -> Vec<String> {
    let text = std::fs::read_to_string(events.join(format!("node{node}"))).unwrap_or_default();
    text.lines().map(str::to_owned).collect()
}

/// True when `lines` holds lines starting with each of `expected`, in this order (others may come between).
fn in_order(lines: &[String], expected: &[&str]) -> bool {
    let mut wanted = expected.iter().peekable();
    for line in lines {
        if wanted.peek().is_some_and(|prefix| line.starts_with(**prefix)) {
            wanted.next();
        }
    }
    wanted.peek().is_none()
}

/// Waits until node `node` recorded `expected` in order.
async fn wait_recorded(c: &raftgres::demo::cluster::LocalCluster, events: &Path, node: usize, expected: &[&str]) {
    let what = format!("node{node} records {expected:?}");
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if in_order(&recorded(events, node), expected) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if found.is_err() {
        panic!("{what}; it recorded {:?}\n{}", recorded(events, node), logs(c));
    }
}

/// Every node's `postgresql` (and `bootstrap`) overrides: the same keys, each node's own name in its callbacks.
fn with_node_overrides(spec: &mut raftgres::demo::cluster::ClusterSpec, per_node: impl Fn(usize) -> Value) {
    for node in 1..=spec.n_nodes {
        spec.node_overrides.insert(node, per_node(node));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callbacks_report_roles_through_bootstrap_switchover_and_crash_failover() {
    if !pg_available("callbacks_report_roles_through_bootstrap_switchover_and_crash_failover") {
        return;
    }
    let (mut spec, dir) = spec();
    let scripts = shared_dir(&dir.path().join("scripts"));
    let events = shared_dir(&dir.path().join("events"));
    let archive = shared_dir(&dir.path().join("archive"));
    let restore_command = format!("cp {}/%f %p", archive.display());
    let record = scripts.join("record");
    write_script(&record, &format!("node=$1; shift\necho \"$*\" >> {}/\"$node\"\n", events.display()));
    let psql = raftgres::demo::cluster::find_pg_bin_dir().expect("PostgreSQL's bin dir").join("psql");
    let post_bootstrap = scripts.join("post_bootstrap");
    write_script(
        &post_bootstrap,
        &format!("exec {} \"$1\" -v ON_ERROR_STOP=1 -c 'CREATE TABLE made_by_post_bootstrap ()'\n", psql.display()),
    );
    with_node_overrides(&mut spec, |node| {
        let cb = format!("{} node{node}", record.display());
        json!({
            "bootstrap": {"post_bootstrap": post_bootstrap.display().to_string()},
            "postgresql": {
                "callbacks": {"on_start": cb, "on_stop": cb, "on_restart": cb, "on_reload": cb, "on_role_change": cb},
                "before_stop": format!("{cb} before_stop - demo"),
                "recovery_conf": {"restore_command": restore_command, "recovery_min_apply_delay": "0"},
            },
        })
    });
    let (tc, first) = start(spec, dir).await;
    let c = &tc.cluster;
    let others: Vec<usize> = (1..=3).filter(|n| *n != first).collect();

    // Bootstrap: post_bootstrap ran with a working superuser URL; on_start fired once the cluster was ready.
    let made = "SELECT count(*) FROM pg_class WHERE relname = 'made_by_post_bootstrap'";
    assert_eq!(count(c, first, made).await, Some(1), "post_bootstrap created its table\n{}", logs(c));
    wait_recorded(c, &events, first, &["on_start primary demo"]).await;
    for node in &others {
        wait_recorded(c, &events, *node, &["on_start replica demo"]).await;
    }

    // recovery_conf is written for replicas only.
    assert_eq!(show(c, first, "restore_command").await.as_deref(), Some(""), "the primary has no restore_command");
    assert_eq!(show(c, others[0], "restore_command").await, Some(restore_command.clone()), "a replica has it");

    // Switchover: the candidate reports its promotion; the old primary its stop, then its new role.
    let candidate = others[0];
    let request = json!({"leader": format!("node{first}"), "candidate": format!("node{candidate}")});
    let res = reqwest::Client::new().post(format!("{}/switchover", c.api(first))).json(&request).send().await;
    let code = res.map(|r| r.status().as_u16()).unwrap_or_default();
    assert_eq!(code, 200, "switchover to node{candidate}\n{}", logs(c));
    assert_eq!(new_primary(c, first, Duration::from_secs(60)).await, candidate, "the candidate won\n{}", logs(c));
    wait_recorded(c, &events, candidate, &["on_start replica", "on_role_change primary demo"]).await;
    wait_recorded(
        c,
        &events,
        first,
        &["on_start primary", "before_stop", "on_stop primary demo", "on_role_change replica demo"],
    )
    .await;
    // recovery_conf is a replica's: the demoted primary runs with it now.
    eventually(Duration::from_secs(30), "the demoted primary has the recovery_conf restore_command", || async {
        (show(c, first, "restore_command").await.as_deref() == Some(restore_command.as_str())).then_some(())
    })
    .await;
    assert!(
        !recorded(&events, first).iter().skip(1).any(|line| line.starts_with("on_start")),
        "a demoted primary following the new one reports on_role_change, not on_start: {:?}",
        recorded(&events, first)
    );

    // Crash failover: the candidate dies with its PostgreSQL; whoever wins reports its promotion.
    let promotions =
        |node: usize| recorded(&events, node).iter().filter(|l| l.starts_with("on_role_change primary")).count();
    let before: Vec<usize> = (0..=3).map(promotions).collect();
    c.kill_node(candidate).await.expect("kill -9 the primary's raftgres");
    c.kill_postmaster(candidate).expect("kill -9 the primary's postmaster");
    let winner = new_primary(c, candidate, Duration::from_secs(60)).await;
    eventually(Duration::from_secs(60), "the winner reports on_role_change primary", || async {
        (promotions(winner) > before[winner]).then_some(())
    })
    .await;
    // The crashed node comes back in a new process: on_start in the role PostgreSQL starts in.
    let before_restart = recorded(&events, candidate).len();
    c.start_node(candidate).expect("restart the crashed node");
    eventually(Duration::from_secs(90), "the crashed primary rejoins as a replica", || async {
        (in_recovery(c, candidate).await == Some(true)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), "the crashed node reports on_start replica", || async {
        recorded(&events, candidate)[before_restart..].iter().any(|l| l.starts_with("on_start replica")).then_some(())
    })
    .await;
    // A change of the dynamic configuration reloads every PostgreSQL: on_reload.
    let patch = json!({"postgresql": {"parameters": {"work_mem": "8MB"}}});
    let res = reqwest::Client::new().patch(format!("{}/config", c.api(winner))).json(&patch).send().await;
    assert_eq!(res.map(|r| r.status().as_u16()).unwrap_or_default(), 200, "PATCH /config\n{}", logs(c));
    for node in 1..=3 {
        let role = if node == winner { "primary" } else { "replica" };
        let line = format!("on_reload {role} demo");
        eventually(Duration::from_secs(60), &format!("node{node} reports {line}"), || async {
            recorded(&events, node).contains(&line).then_some(())
        })
        .await;
    }
    for node in 1..=3 {
        for line in recorded(&events, node) {
            assert_eq!(line.split(' ').count(), 3, "node{node}: `<action> <role> <scope>`, got {line:?}");
        }
    }
    finish(c, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_pre_promote_releases_the_key_and_another_member_wins() {
    if !pg_available("failing_pre_promote_releases_the_key_and_another_member_wins") {
        return;
    }
    let (mut spec, dir) = spec();
    let scripts = shared_dir(&dir.path().join("scripts"));
    let control = shared_dir(&dir.path().join("control"));
    // The test's rules, read when the script runs: `fail-<node>` refuses every promotion of that node;
    // `after-<node>` (holding another node's name) refuses until that other node's script ran.
    let pre_promote = scripts.join("pre_promote");
    write_script(
        &pre_promote,
        &format!(
            "ctl={ctl}\nnode=$1\necho \"$node\" >> $ctl/ran\n\
             [ -e $ctl/fail-$node ] && exit 1\n\
             if [ -e $ctl/after-$node ]; then grep -qx \"$(cat $ctl/after-$node)\" $ctl/ran || exit 3; fi\n\
             exit 0\n",
            ctl = control.display()
        ),
    );
    with_node_overrides(
        &mut spec,
        |node| json!({"postgresql": {"pre_promote": format!("{} node{node}", pre_promote.display())}}),
    );
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let others: Vec<usize> = (1..=3).filter(|n| *n != primary).collect();
    let (refuses, wins) = (others[0], others[1]);
    std::fs::write(control.join(format!("fail-node{refuses}")), "").expect("write the rule");
    std::fs::write(control.join(format!("after-node{wins}")), format!("node{refuses}\n")).expect("write the rule");
    for node in &others {
        eventually(Duration::from_secs(60), "the replicas stream", || async {
            let streaming = format!(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node{node}' AND state = 'streaming'"
            );
            (count(c, primary, &streaming).await == Some(1)).then_some(())
        })
        .await;
    }

    c.kill_node(primary).await.expect("kill -9 the primary's raftgres");
    c.kill_postmaster(primary).expect("kill -9 the primary's postmaster");
    let new = new_primary(c, primary, Duration::from_secs(90)).await;
    assert_eq!(new, wins, "the member whose pre_promote passes is the new primary\n{}", logs(c));
    let ran = std::fs::read_to_string(control.join("ran")).unwrap_or_default();
    assert!(ran.lines().any(|l| l == format!("node{refuses}")), "node{refuses}'s pre_promote ran: {ran:?}");
    let log = std::fs::read_to_string(c.dir().join(format!("node{refuses}/raftgres.log"))).unwrap_or_default();
    assert!(
        log.contains("releasing the leader key voluntarily because the pre_promote script failed"),
        "node{refuses} released the key after its pre_promote failed\n{}",
        logs(c)
    );
    eventually(Duration::from_secs(60), "the refusing member stays a replica and follows the new primary", || async {
        let streaming = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node{refuses}' AND state = 'streaming'"
        );
        let follows = count(c, new, &streaming).await == Some(1);
        (follows && in_recovery(c, refuses).await == Some(true)).then_some(())
    })
    .await;
    finish(c, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_methods_are_tried_in_order_with_patronis_arguments() {
    if !pg_available("replica_methods_are_tried_in_order_with_patronis_arguments") {
        return;
    }
    let (mut spec, dir) = spec();
    let scripts = shared_dir(&dir.path().join("scripts"));
    let runs = shared_dir(&dir.path().join("runs"));
    let bin = raftgres::demo::cluster::find_pg_bin_dir().expect("PostgreSQL's bin dir");
    // `broken` records its arguments and fails; `scripted` records them and clones with pg_basebackup through
    // the connection string it is given.
    let broken = scripts.join("broken");
    write_script(&broken, &format!("echo \"broken $*\" >> {}/log\nexit 1\n", runs.display()));
    let scripted = scripts.join("scripted");
    write_script(
        &scripted,
        &format!(
            "echo \"scripted $*\" >> {runs}/log\n\
             for arg in \"$@\"; do case $arg in --datadir=*) dir=${{arg#--datadir=}};; \
             --connstring=*) conn=${{arg#--connstring=}};; esac; done\n\
             exec {bin}/pg_basebackup -D \"$dir\" -d \"$conn\" -X stream -c fast\n",
            runs = runs.display(),
            bin = bin.display()
        ),
    );
    with_node_overrides(&mut spec, |_| {
        json!({"postgresql": {
            "create_replica_methods": ["broken", "scripted", "basebackup"],
            "broken": {"command": broken.display().to_string(), "no_params": true, "keep_data": true, "tier": "cold"},
            "scripted": {"command": scripted.display().to_string()},
        }})
    });
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    for node in (1..=3).filter(|n| *n != primary) {
        let log = std::fs::read_to_string(c.dir().join(format!("node{node}/raftgres.log"))).unwrap_or_default();
        assert!(
            log.lines().any(|l| l.contains("replica has been created using scripted")),
            "node{node} was created by the second method after the first failed\n{}",
            logs(c)
        );
    }
    let log = std::fs::read_to_string(runs.join("log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    // Two replicas cloned at the same time, two methods each, each starting with the first method.
    assert_eq!(lines.len(), 4, "two replicas, two methods each: {lines:?}");
    assert!(lines[0].starts_with("broken"), "{lines:?}");
    // no_params: only the section's other options; the flags are not passed.
    assert_eq!(lines.iter().filter(|l| **l == "broken --tier=cold").count(), 2, "{lines:?}");
    for scripted in lines.iter().filter(|l| l.starts_with("scripted")) {
        assert!(scripted.starts_with("scripted --scope=demo --role=replica --datadir=/"), "{scripted}");
        assert!(scripted.contains("--connstring=") && scripted.contains("user='replicator'"), "{scripted}");
    }
    finish(c, &["error creating the replica with broken"]).await;
}
