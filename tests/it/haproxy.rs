//! A real HAProxy in front of a live three-node cluster, configured like Patroni's tutorial (the
//! demo's [`raftgres::demo::haproxy::render`]): `listen primary` checks `/primary`, `listen standbys`
//! round-robins over the nodes answering `/replica`, both with `http-check expect status 200`,
//! `default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions` and `check port <restapi>`.
//!
//! Through the primary port every new connection reaches the primary and writes succeed; through the
//! standby port every new connection reaches a replica, both replicas are reached and they have the
//! row just written. This holds at the start, after a crash failover (with the old primary down, then
//! rejoined) and after a switchover to a named candidate. Skips without PostgreSQL or HAProxy.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use raftgres::demo::cluster::LocalCluster;
use raftgres::demo::haproxy;
use raftgres::demo::haproxy::Haproxy;
use raftgres::demo::haproxy::HaproxyPorts;
use serde_json::json;
use tokio::time::Instant;

use crate::harness::*;

const USER: &str = "admin";
const PASSWORD: &str = "haproxy-test";
/// How long HAProxy may take to follow a role change (checks every 1 s, `fall 2 rise 1`, plus the
/// cluster's own failover or switchover).
const ROUTE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a killed or demoted primary may take to rejoin as a replica (pg_rewind included).
const REJOIN_DEADLINE: Duration = Duration::from_secs(90);
/// New connections per round through the primary port: with two servers up, round-robin would
/// alternate, so all reaching one node means HAProxy routes to that node only.
const PRIMARY_ROUND: usize = 3;
/// New connections per round through the standby port: enough for round-robin to reach both replicas.
const STANDBY_ROUND: usize = 6;

/// Where one new connection through HAProxy landed.
struct Reached {
    client: tokio_postgres::Client,
    node: usize,
    in_recovery: bool,
}

/// Opens a new connection through HAProxy's `port`; `None` when it is refused, closed or slow.
async fn reach(c: &LocalCluster, port: u16) -> Option<Reached> {
    let conn =
        format!("host=127.0.0.1 port={port} user=postgres password={} dbname=postgres connect_timeout=2", c.password());
    let attempt = async {
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let row = client.query_one("SELECT pg_is_in_recovery(), current_setting('port')::int", &[]).await.ok()?;
        let pg_port: i32 = row.get(1);
        let node = (1..=c.n_nodes()).find(|node| i32::from(c.pg_port(*node)) == pg_port)?;
        Some(Reached { client, node, in_recovery: row.get(0) })
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.ok().flatten()
}

/// Waits until every new connection through the primary port reaches `primary` out of recovery, then
/// writes the row of `phase` through it and checks the write landed on `primary`.
async fn check_primary_port(c: &LocalCluster, ports: HaproxyPorts, primary: usize, phase: i32) {
    let what = format!("{PRIMARY_ROUND} connections in a row through the primary port reach node{primary}, writable");
    eventually(ROUTE_DEADLINE, &what, || async {
        for _ in 0..PRIMARY_ROUND {
            let reached = reach(c, ports.primary).await?;
            if reached.node != primary || reached.in_recovery {
                return None;
            }
        }
        Some(())
    })
    .await;
    let reached = reach(c, ports.primary).await.expect("a connection through the primary port");
    reached
        .client
        .batch_execute("CREATE TABLE IF NOT EXISTS via_haproxy (phase int PRIMARY KEY, pg_port int NOT NULL)")
        .await
        .expect("DDL through the primary port succeeds");
    let row = reached
        .client
        .query_one("INSERT INTO via_haproxy VALUES ($1, current_setting('port')::int) RETURNING pg_port", &[&phase])
        .await
        .expect("a write through the primary port succeeds");
    assert_eq!(row.get::<_, i32>(0), i32::from(c.pg_port(primary)), "the write landed on node{primary}");
}

/// Waits until new connections through the standby port reach exactly `replicas` (every one of
/// them, in recovery, holding the row of `phase`) and never another node.
async fn check_standby_port(c: &LocalCluster, ports: HaproxyPorts, replicas: &[usize], phase: i32) {
    let expected: BTreeSet<usize> = replicas.iter().copied().collect();
    let what = format!("{STANDBY_ROUND} connections through the standby port reach exactly the replicas {expected:?}");
    eventually(ROUTE_DEADLINE, &what, || async {
        let mut seen = BTreeSet::new();
        for _ in 0..STANDBY_ROUND {
            let reached = reach(c, ports.replica).await?;
            if !reached.in_recovery || !expected.contains(&reached.node) {
                return None;
            }
            let row = reached.client.query_one("SELECT count(*) FROM via_haproxy WHERE phase = $1", &[&phase]).await;
            if row.ok()?.get::<_, i64>(0) != 1 {
                return None;
            }
            seen.insert(reached.node);
        }
        (seen == expected).then_some(())
    })
    .await;
}

/// Waits until `node` answers as a replica again.
async fn wait_replica(c: &LocalCluster, node: usize) {
    eventually(REJOIN_DEADLINE, &format!("node{node} rejoins as a replica"), || async {
        (in_recovery(c, node).await == Some(true)).then_some(())
    })
    .await;
}

/// The nodes other than `primary`.
fn others(c: &LocalCluster, primary: usize) -> Vec<usize> {
    (1..=c.n_nodes()).filter(|node| *node != primary).collect()
}

/// Prints the node logs and HAProxy's log when the test panics.
struct LogsOnPanic<'a> {
    cluster: &'a LocalCluster,
    haproxy_log: &'a Path,
}

impl Drop for LogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let haproxy_log = std::fs::read_to_string(self.haproxy_log).unwrap_or_default();
            eprintln!("{}--- haproxy ---\n{haproxy_log}", logs(self.cluster));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_routes_by_role_through_crash_failover_and_switchover() {
    const TEST: &str = "haproxy_routes_by_role_through_crash_failover_and_switchover";
    if !pg_available(TEST) {
        return;
    }
    let Some(program) = haproxy::find() else {
        println!("skipping {TEST}: HAProxy not installed (apt-get install -y haproxy)");
        return;
    };
    let (mut spec, dir) = spec();
    spec.restapi_overrides = json!({"authentication": {"username": USER, "password": PASSWORD}});
    let (tc, first_primary) = start(spec, dir).await;
    let c = &tc.cluster;

    let first_port = free_port_block(3);
    let ports = HaproxyPorts { primary: first_port, replica: first_port + 1, stats: first_port + 2 };
    let config_path = c.dir().join("haproxy.cfg");
    let log_path = c.dir().join("haproxy.log");
    let config = haproxy::render(ports, c.nodes());
    std::fs::write(&config_path, &config).expect("write haproxy.cfg");
    let _logs_on_panic = LogsOnPanic { cluster: c, haproxy_log: &log_path };
    let load_balancer = Haproxy::start(&program, &config_path, &log_path)
        .await
        .unwrap_or_else(|e| panic!("HAProxy starts: {e:#}\n{config}"));
    println!("HAProxy {:?}: primary port {}, standby port {}", load_balancer.pid(), ports.primary, ports.replica);

    // The healthy cluster.
    check_primary_port(c, ports, first_primary, 1).await;
    check_standby_port(c, ports, &others(c, first_primary), 1).await;

    // Crash failover: kill -9 the primary's raftgres and postmaster.
    let crashed_at = Instant::now();
    c.kill_node(first_primary).await.expect("kill -9 the primary's raftgres");
    c.kill_postmaster(first_primary).expect("kill -9 the primary's postmaster");
    let second_primary = new_primary(c, first_primary, ROUTE_DEADLINE).await;
    println!("crash failover: node{first_primary} -> node{second_primary}");
    check_primary_port(c, ports, second_primary, 2).await;
    println!("crash failover: the primary port routes to node{second_primary} after {:?}", crashed_at.elapsed());
    let survivor: Vec<usize> = others(c, second_primary).into_iter().filter(|node| *node != first_primary).collect();
    check_standby_port(c, ports, &survivor, 2).await;
    c.start_node(first_primary).expect("restart the crashed node");
    wait_replica(c, first_primary).await;
    check_standby_port(c, ports, &others(c, second_primary), 2).await;

    // Switchover to a named candidate through the REST API.
    let candidate = survivor[0];
    let switched_at = Instant::now();
    let request = json!({"leader": format!("node{second_primary}"), "candidate": format!("node{candidate}")});
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client");
    let res = http
        .post(format!("{}/switchover", c.api(candidate)))
        .basic_auth(USER, Some(PASSWORD))
        .json(&request)
        .send()
        .await
        .expect("POST /switchover is answered");
    let code = res.status().as_u16();
    let body = res.text().await.unwrap_or_default();
    assert_eq!(code, 200, "switchover to node{candidate}: {body}");
    let third_primary = new_primary(c, second_primary, ROUTE_DEADLINE).await;
    assert_eq!(third_primary, candidate, "the named candidate is the new primary");
    println!("switchover: node{second_primary} -> node{third_primary}");
    check_primary_port(c, ports, third_primary, 3).await;
    println!("switchover: the primary port routes to node{third_primary} after {:?}", switched_at.elapsed());
    wait_replica(c, second_primary).await;
    check_standby_port(c, ports, &others(c, third_primary), 3).await;

    load_balancer.stop().await.expect("stop HAProxy");
    finish(c, &[]).await;
}
