//! `raftgres drill` run as a process against a live local three-node cluster: a switchover drill under the
//! write load through a multi-host DSN (`target_session_attrs=read-write`, so writes follow the primary as an
//! application's would), once within a generous bound (PASS, exit 0) and once against an impossible one (FAIL,
//! exit 1); and a crash drill that SIGKILLs the primary's raftgres and postmaster on this host.

use std::process::Stdio;
use std::time::Duration;

use raftgres::demo::cluster::LocalCluster;

use crate::harness::*;

/// How long one drill may take (its own `--timeout` is 120 s by default).
const DRILL_TIMEOUT: Duration = Duration::from_secs(240);

/// The application's view of the cluster: every node's PostgreSQL, the writable one picked at each connection.
fn dsn(c: &LocalCluster) -> String {
    let hosts = vec!["127.0.0.1"; c.n_nodes()].join(",");
    let ports: Vec<String> = (1..=c.n_nodes()).map(|node| c.pg_port(node).to_string()).collect();
    format!("host={hosts} port={} user=postgres dbname=postgres target_session_attrs=read-write", ports.join(","))
}

/// Runs `raftgres drill --force --url <every node> --dsn <dsn> <extra>`, the password from the cluster's pgpass.
async fn drill(c: &LocalCluster, extra: &[&str]) -> Ran {
    let urls: Vec<String> = (1..=c.n_nodes()).map(|node| c.api(node)).collect();
    let mut command = tokio::process::Command::new(binary());
    command
        .args(["drill", "--force", "--url", &urls.join(","), "--dsn", &dsn(c)])
        .args(extra)
        .env_remove("PATRONICTL_CONFIG_FILE")
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", c.pgpass_path())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(DRILL_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("raftgres drill did not finish within {DRILL_TIMEOUT:?}"))
        .expect("run raftgres drill");
    let ran = Ran::from(output);
    println!("raftgres drill {extra:?} exited {:?}\n{}{}", ran.code, ran.stdout, ran.stderr);
    ran
}

/// Waits until a node other than `old` is the primary with two streaming replicas; returns it.
async fn healthy_without(c: &LocalCluster, old: usize) -> usize {
    eventually(Duration::from_secs(90), &format!("a healthy cluster led by another node than node{old}"), || async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        c.wait_healthy(deadline).await.ok().filter(|primary| *primary != old)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_switchover_reports_the_write_gap_and_fails_an_impossible_bound() {
    if !pg_available("drill_switchover_reports_the_write_gap_and_fails_an_impossible_bound") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, first) = start(spec, dir).await;
    let c = &tc.cluster;

    let ran = drill(c, &["--max-gap", "60s"]).await;
    assert_eq!(ran.code, Some(0), "the drill failed\n{}\n{}\n{}", ran.stdout, ran.stderr, logs(c));
    let action = ran.line("drill: switchover ");
    assert!(action.starts_with(&format!("drill: switchover node{first} -> node")), "{action}");
    assert!(!action.ends_with(&format!("-> node{first}")), "{action}");
    ran.line("drill: writes: ");
    ran.line("drill: client write gap: ");
    ran.line("drill: promotion kind: switchover");
    ran.line("drill: phase promoted: ");
    ran.line("drill: verdict: PASS (write gap ");
    let second = healthy_without(c, first).await;
    assert_eq!(count(c, second, "SELECT count(*) FROM pg_tables WHERE tablename = 'raftgres_drill'").await, Some(0));

    // The bound cannot be met (one write every 100 ms): the verdict fails and so does the exit status.
    let ran = drill(c, &["--max-gap", "1ms"]).await;
    assert_eq!(ran.code, Some(1), "the drill did not fail\n{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.line("drill: verdict: ").starts_with("drill: verdict: FAIL (write gap "), "{}", ran.stdout);
    assert!(ran.stderr.trim_end().ends_with("error: the client write gap exceeded --max-gap"), "{}", ran.stderr);
    healthy_without(c, second).await;
    finish(c, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drill_crash_kills_the_local_primary_and_measures_the_failover() {
    if !pg_available("drill_crash_kills_the_local_primary_and_measures_the_failover") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, first) = start(spec, dir).await;
    let c = &tc.cluster;

    let ran = drill(c, &["--crash", "--max-gap", "120s"]).await;
    assert_eq!(ran.code, Some(0), "the drill failed\n{}\n{}\n{}", ran.stdout, ran.stderr, logs(c));
    let action = ran.line("drill: crash ");
    assert!(action.starts_with(&format!("drill: crash node{first} -> node")), "{action}");
    ran.line("drill: client write gap: ");
    ran.line("drill: promotion kind: failover");
    ran.line("drill: phase lease_expired: ");
    ran.line("drill: verdict: PASS (write gap ");
    assert!(!c.is_running(first), "node{first}'s raftgres still runs after the crash drill");
    let primary = c.primary().await;
    assert!(primary.is_some_and(|primary| primary != first), "no new primary: {primary:?}\n{}", logs(c));

    c.take_exit(first);
    c.start_node(first).expect("start the crashed node again");
    healthy_without(c, first).await;
    finish(c, &[]).await;
}
