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

/// Writes `DIR/haproxy.cfg` for the cluster (with the runtime API on `socket`, when given) on three free ports and
/// starts HAProxy, logging to `DIR/haproxy.log`.
async fn start_haproxy(c: &LocalCluster, program: &Path, socket: Option<&Path>) -> (HaproxyPorts, Haproxy) {
    let first_port = free_port_block(3);
    let ports = HaproxyPorts { primary: first_port, replica: first_port + 1, stats: first_port + 2 };
    let config_path = c.dir().join("haproxy.cfg");
    let rendered = haproxy::render(ports, c.nodes());
    let config = match socket {
        Some(socket) => haproxy::with_runtime_api(&rendered, socket),
        None => rendered,
    };
    std::fs::write(&config_path, &config).expect("write haproxy.cfg");
    let load_balancer = Haproxy::start(program, &config_path, &c.dir().join("haproxy.log"))
        .await
        .unwrap_or_else(|e| panic!("HAProxy starts: {e:#}\n{config}"));
    (ports, load_balancer)
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

    let log_path = c.dir().join("haproxy.log");
    let _logs_on_panic = LogsOnPanic { cluster: c, haproxy_log: &log_path };
    let (ports, load_balancer) = start_haproxy(c, &program, None).await;
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

/// What the sampler saw through HAProxy's runtime API.
#[derive(Default)]
struct Samples {
    /// Samples taken.
    taken: usize,
    /// Samples in which more than one server of the primary backend was routable: `(seconds, servers)`.
    doubles: Vec<(f64, Vec<String>)>,
}

/// Every 20 ms until `stop`: `show servers state primary` through the runtime API on `socket`, counting samples
/// in which HAProxy would send a new connection to more than one server.
async fn sample_primary_backend(
    socket: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Samples {
    use raftgres::config::RuntimeApi;
    use raftgres::haproxy::plan::parse_servers_state;
    let api = RuntimeApi::Unix(socket);
    let started = Instant::now();
    let mut samples = Samples::default();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        if let Ok(answer) = raftgres::haproxy::command(&api, "show servers state primary", Duration::from_secs(1)).await
        {
            let routable: Vec<String> =
                parse_servers_state(&answer).into_iter().filter(|s| s.routable()).map(|s| s.server).collect();
            samples.taken += 1;
            if routable.len() > 1 {
                samples.doubles.push((started.elapsed().as_secs_f64(), routable));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples
}

/// With the `haproxy` section on every node (the demo's setup: `stats socket … level admin`, backends `primary` and
/// `standbys`), the nodes push their role changes to HAProxy's runtime API. Sampled every 20 ms through the runtime
/// API's own `show servers state primary`, the primary backend never has two routable servers through a
/// switchover, a clean stop of the primary (a hand-over) and a crash failover, and each new primary is reached
/// through the primary port. Without the push the switchover alone leaves both up for about a second (the old
/// primary needs two failed checks, the new one one good check), which this test then reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_push_never_leaves_two_servers_routable_in_the_primary_backend() {
    const TEST: &str = "haproxy_push_never_leaves_two_servers_routable_in_the_primary_backend";
    if !pg_available(TEST) {
        return;
    }
    let Some(program) = haproxy::find() else {
        println!("skipping {TEST}: HAProxy not installed (apt-get install -y haproxy)");
        return;
    };
    let (mut spec, dir) = spec();
    let socket = spec.dir.join("haproxy.sock");
    for node in 1..=spec.n_nodes {
        spec.node_overrides.insert(node, json!({"haproxy": haproxy::node_section(&socket)}));
    }
    let (tc, first_primary) = start(spec, dir).await;
    let c = &tc.cluster;

    let log_path = c.dir().join("haproxy.log");
    let _logs_on_panic = LogsOnPanic { cluster: c, haproxy_log: &log_path };
    let (ports, load_balancer) = start_haproxy(c, &program, Some(&socket)).await;
    check_primary_port(c, ports, first_primary, 1).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample_primary_backend(socket.clone(), stop.clone()));

    // A switchover to a named candidate.
    let candidate = others(c, first_primary)[0];
    let request = json!({"leader": format!("node{first_primary}"), "candidate": format!("node{candidate}")});
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client");
    let res = http.post(format!("{}/switchover", c.api(candidate))).json(&request).send().await;
    let res = res.expect("POST /switchover is answered");
    assert_eq!(res.status().as_u16(), 200, "switchover to node{candidate}: {}", res.text().await.unwrap_or_default());
    let second_primary = new_primary(c, first_primary, ROUTE_DEADLINE).await;
    check_primary_port(c, ports, second_primary, 2).await;
    wait_replica(c, first_primary).await;

    // A clean stop of the primary's raftgres: a hand-over.
    let status = c.stop_node(second_primary).await.expect("SIGTERM the primary's raftgres");
    assert!(status.is_some_and(|s| s.success()), "stopped cleanly: {status:?}");
    let third_primary = new_primary(c, second_primary, ROUTE_DEADLINE).await;
    check_primary_port(c, ports, third_primary, 3).await;
    c.start_node(second_primary).expect("start the stopped node again");
    wait_replica(c, second_primary).await;

    // A crash of the primary: raftgres and the postmaster killed; the new primary pushes.
    c.kill_node(third_primary).await.expect("kill -9 the primary's raftgres");
    c.kill_postmaster(third_primary).expect("kill -9 the primary's postmaster");
    let fourth_primary = new_primary(c, third_primary, ROUTE_DEADLINE).await;
    check_primary_port(c, ports, fourth_primary, 4).await;

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler.await.expect("the sampler ends");
    println!(
        "primaries node{first_primary} -> node{second_primary} -> node{third_primary} -> node{fourth_primary}; \
         {} samples of `show servers state primary`",
        samples.taken
    );
    assert!(samples.taken > 100, "the runtime API answered the sampler ({} samples)", samples.taken);
    let pushes: Vec<String> = (1..=c.n_nodes())
        .flat_map(|node| {
            std::fs::read_to_string(c.dir().join(format!("node{node}/raftgres.log")))
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|l| l.contains("HAProxy") || l.contains("demot") || l.contains("promoted postgres"))
        .collect();
    assert!(
        samples.doubles.is_empty(),
        "HAProxy had more than one routable server in the primary backend: {:?}\n{}",
        samples.doubles,
        pushes.join("\n")
    );
    // Each push is in the log of the node that made it.
    let pushed = |node: usize, what: &str| {
        std::fs::read_to_string(c.dir().join(format!("node{node}/raftgres.log")))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("pushed the role change to HAProxy") && l.contains(&format!("what=\"{what}\"")))
    };
    for (node, what) in [
        (first_primary, "demoting"),
        (second_primary, "promoted"),
        (second_primary, "demoting"),
        (third_primary, "promoted"),
        (fourth_primary, "promoted"),
    ] {
        assert!(pushed(node, what), "node{node} pushed {what:?} to HAProxy");
    }
    load_balancer.stop().await.expect("stop HAProxy");
    c.start_node(third_primary).expect("start the crashed node again");
    wait_replica(c, third_primary).await;
    finish(c, &[]).await;
}
