//! The floating address (`vip` section) in network namespaces: three nodes, each in a namespace of its own on a
//! bridge (the chaos lab), every one configured with the same `vip` on its `eth0`. A client on the bridge writes
//! through the floating address every 50 ms across a switchover and a crash failover (raftgres and the postmaster
//! killed, the fence guard left running as it would on the host), while a sampler lists the address on every
//! node's interface every 20 ms. Never two holders; after each change the writes reach the new primary through the
//! address (its gratuitous ARP moved the client's neighbour entry). Skips without PostgreSQL or root's network namespaces.

use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use raftgres::chaos::netns::Lab;
use raftgres::demo::cluster::LocalCluster;
use serde_json::json;

use crate::harness::eventually;
use crate::harness::pg_available;
use crate::harness::spec;
use crate::harness::start;

const ROUTE_DEADLINE: Duration = Duration::from_secs(60);

/// `10.213.<slot>.100/24`: on the lab's network, next to the nodes' own addresses.
fn floating_address(lab: &Lab) -> Ipv4Addr {
    let [a, b, slot, _] = lab.node_addr(1).octets();
    Ipv4Addr::new(a, b, slot, 100)
}

/// The nodes whose `eth0` has `address` now, by `ip -n <namespace> -4 -o addr show dev eth0`.
fn holders(lab: &Lab, n_nodes: usize, address: Ipv4Addr) -> Vec<usize> {
    let needle = format!(" {address}/");
    (1..=n_nodes)
        .filter(|node| {
            let out = std::process::Command::new("ip")
                .args(["-n", &lab.namespace(*node), "-4", "-o", "addr", "show", "dev", "eth0"])
                .output();
            out.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(&needle))
        })
        .collect()
}

struct Samples {
    taken: usize,
    /// Samples that found the address on more than one node, with the nodes.
    doubled: Vec<Vec<usize>>,
}

async fn sample_holders(lab: Arc<Lab>, address: Ipv4Addr, stop: Arc<AtomicBool>) -> Samples {
    let mut samples = Samples { taken: 0, doubled: Vec::new() };
    while !stop.load(Ordering::SeqCst) {
        let lab = lab.clone();
        let found = tokio::task::spawn_blocking(move || holders(&lab, 3, address)).await.unwrap_or_default();
        samples.taken += 1;
        if found.len() > 1 {
            samples.doubled.push(found);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    samples
}

/// Connects to PostgreSQL at `host` (the floating address or a node's own) from the bridge.
async fn connect(c: &LocalCluster, host: &str, port: u16) -> Option<tokio_postgres::Client> {
    let conn =
        format!("host={host} port={port} user=postgres password={} dbname=postgres connect_timeout=1", c.password());
    let (client, connection) =
        tokio::time::timeout(Duration::from_secs(2), tokio_postgres::connect(&conn, tokio_postgres::NoTls))
            .await
            .ok()?
            .ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(client)
}

/// One write through the floating address, on a connection of its own (as an application reconnecting after a
/// failover): the member whose data directory took it.
async fn write_through(password: &str, address: Ipv4Addr, port: u16, id: i64) -> Option<String> {
    let conn =
        format!("host={address} port={port} user=postgres password={password} dbname=postgres connect_timeout=1");
    let write = async {
        // Half a second to connect: an attempt that started while nobody held the address is given up soon.
        let connecting = tokio_postgres::connect(&conn, tokio_postgres::NoTls);
        let (client, connection) = tokio::time::timeout(Duration::from_millis(500), connecting).await.ok()?.ok()?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let sql = "INSERT INTO vip_writes (id) VALUES ($1) RETURNING current_setting('data_directory')";
        let row = client.query_one(sql, &[&id]).await.ok()?;
        let data_dir: String = row.try_get(0).ok()?;
        // `<cluster dir>/nodeN/data`: the member that acknowledged the write.
        std::path::Path::new(&data_dir).parent()?.file_name()?.to_str().map(str::to_owned)
    };
    tokio::time::timeout(Duration::from_secs(2), write).await.ok().flatten()
}

/// Waits until node `node` (the `nth` primary) alone holds `address`.
async fn wait_for_holder(lab: &Arc<Lab>, address: Ipv4Addr, node: usize, nth: &str) {
    eventually(ROUTE_DEADLINE, &format!("the {nth} primary, node{node}, alone holds the floating address"), || {
        let lab = lab.clone();
        async move { (holders(&lab, 3, address) == vec![node]).then_some(()) }
    })
    .await;
}

/// The node running as primary other than `not`, asked on each node's own address.
async fn new_primary(c: &LocalCluster, not: usize) -> usize {
    eventually(ROUTE_DEADLINE, &format!("a node other than node{not} is primary"), || async move {
        let mut primaries = Vec::new();
        for node in (1..=c.n_nodes()).filter(|n| *n != not && c.is_running(*n)) {
            let Some(client) = connect(c, &c.node(node).host, c.pg_port(node)).await else { continue };
            let recovering =
                tokio::time::timeout(Duration::from_secs(2), client.query_one("SELECT pg_is_in_recovery()", &[]));
            if let Ok(Ok(row)) = recovering.await {
                if !row.get::<_, bool>(0) {
                    primaries.push(node);
                }
            }
        }
        (primaries.len() == 1).then(|| primaries[0])
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn floating_address_follows_the_primary_through_switchover_and_crash() {
    const TEST: &str = "floating_address_follows_the_primary_through_switchover_and_crash";
    if !pg_available(TEST) {
        return;
    }
    if let Err(why) = Lab::available() {
        println!("skipping {TEST}: {why}");
        return;
    }
    let lab = Arc::new(Lab::create(3).expect("create the network lab"));
    let address = floating_address(&lab);
    let (mut spec, dir) = spec();
    spec.hosts = (1..=3).map(|node| lab.node_addr(node).to_string()).collect();
    spec.client_nets = vec![lab.network()];
    spec.wrappers = (1..=3).map(|node| (node, lab.wrapper(node))).collect();
    spec.shared_pg_port = true;
    let port = spec.pg_port;
    for node in 1..=3 {
        let vip = json!({"address": format!("{address}/24"), "interface": "eth0", "arping_count": 3});
        let listen = format!("0.0.0.0:{port}");
        let overrides = json!({"vip": vip, "postgresql": {"listen": listen}});
        spec.node_overrides.insert(node, overrides);
    }
    // With one port on every node, each PostgreSQL's UNIX socket must be in its own directory: the node's, which
    // raftgres uses only when the PostgreSQL user owns it (else /tmp, where the three would collide).
    let owner = nix::unistd::User::from_name("postgres").ok().flatten().expect("the postgres user");
    for node in 1..=3 {
        let node_dir = spec.dir.join(format!("node{node}"));
        std::fs::create_dir_all(&node_dir).expect("create the node directory");
        nix::unistd::chown(&node_dir, Some(owner.uid), Some(owner.gid)).expect("chown the node directory");
    }
    let (tc, first) = start(spec, dir).await;
    let c = &tc.cluster;
    let first_name = format!("node{first}");

    // The first primary takes the address; a table for the writes.
    wait_for_holder(&lab, address, first, "first").await;
    let setup = connect(c, &address.to_string(), port).await.expect("connect through the floating address");
    setup.batch_execute("CREATE TABLE vip_writes (id bigint PRIMARY KEY)").await.expect("create the table");

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_holders(lab.clone(), address, stop.clone()));
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(i64, String, std::time::Instant)>::new()));
    let attempted = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let writer = {
        let (stop, acked, password) = (stop.clone(), acked.clone(), c.password().to_string());
        let attempted = attempted.clone();
        tokio::spawn(async move {
            let mut id = 0i64;
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                attempted.store(id, Ordering::SeqCst);
                if let Some(node) = write_through(&password, address, port, id).await {
                    if let Ok(mut acked) = acked.lock() {
                        acked.push((id, node, std::time::Instant::now()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let reached = |name: String| {
        let acked = acked.clone();
        async move {
            let acked = acked.lock().ok()?;
            acked.iter().rev().take(3).all(|(_, node, _)| *node == name).then_some(()).filter(|_| acked.len() >= 3)
        }
    };
    eventually(ROUTE_DEADLINE, "writes through the floating address reach the first primary", || {
        reached(first_name.clone())
    })
    .await;

    // A switchover to a named candidate.
    let candidate = (1..=3).find(|n| *n != first).expect("a replica");
    let request = json!({"leader": first_name, "candidate": format!("node{candidate}")});
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("HTTP client");
    let res = http.post(format!("{}/switchover", c.api(candidate))).json(&request).send().await;
    let res = res.expect("POST /switchover is answered");
    assert_eq!(res.status().as_u16(), 200, "switchover to node{candidate}: {}", res.text().await.unwrap_or_default());
    let second = new_primary(c, first).await;
    wait_for_holder(&lab, address, second, "second").await;
    eventually(ROUTE_DEADLINE, "writes through the floating address reach the second primary", || {
        reached(format!("node{second}"))
    })
    .await;

    // A crash: raftgres and the postmaster killed; the guard removes the address when the lease ends.
    c.kill_node(second).await.expect("kill -9 the primary's raftgres");
    c.kill_postmaster(second).expect("kill -9 the primary's postmaster");
    let third = new_primary(c, second).await;
    wait_for_holder(&lab, address, third, "third").await;
    eventually(ROUTE_DEADLINE, "writes through the floating address reach the third primary", || {
        reached(format!("node{third}"))
    })
    .await;

    // The killed node's raftgres could not remove the address: its fence guard did, when the lease ran out.
    let guard_log = c.dir().join(format!("node{second}/raft/fence-guard.log"));
    let guard_said = std::fs::read_to_string(&guard_log).unwrap_or_default();
    assert!(
        guard_said.contains("removed the floating address"),
        "node{second}'s fence guard removed the address ({}):\n{guard_said}",
        guard_log.display()
    );

    stop.store(true, Ordering::SeqCst);
    writer.await.expect("the writer ends");
    let samples = sampler.await.expect("the sampler ends");
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    // The longest pause between two acknowledged writes that went to different members: each role change's write
    // gap through the floating address, as a client reconnecting every 50 ms sees it.
    let gaps: Vec<String> = acked
        .windows(2)
        .filter(|pair| pair[0].1 != pair[1].1)
        .map(|pair| format!("{} -> {}: {:.2} s", pair[0].1, pair[1].1, (pair[1].2 - pair[0].2).as_secs_f64()))
        .collect();
    println!("write gaps through the floating address: {}", gaps.join(", "));
    println!(
        "primaries node{first} -> node{second} -> node{third}; {} samples of the address, {} of {} writes acknowledged",
        samples.taken,
        acked.len(),
        attempted.load(Ordering::SeqCst)
    );
    for node in 1..=3 {
        let log = std::fs::read_to_string(c.dir().join(format!("node{node}/raftgres.log"))).unwrap_or_default();
        for line in log.lines().filter(|line| line.contains("floating address")) {
            println!("node{node}: {}", crate::harness::strip_ansi(line));
        }
    }
    assert!(samples.taken > 50, "the sampler ran ({} samples)", samples.taken);
    assert!(samples.doubled.is_empty(), "two holders of {address} at once: {:?}", samples.doubled);

    let last_write = write_through(c.password(), address, port, i64::MAX).await;
    assert_eq!(last_write.as_deref(), Some(format!("node{third}").as_str()));

    c.stop_all().await.expect("stop the cluster");
    drop(tc);
    match Arc::try_unwrap(lab) {
        Ok(lab) => lab.destroy(),
        Err(_) => println!("{TEST}: the network lab is still shared; it is removed on drop"),
    }
}
