//! What `raftgres demo` and `LocalCluster::generate` write, checked without starting anything:
//! every node config loads cleanly with the real config loader, ports are consecutive, the shared
//! pgpass is private and complete, test hooks land in the right keys, a second generate keeps the
//! passwords, and the HAProxy config uses Patroni's REST checks.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;

use raftgres::config::Config;
use raftgres::config::EnvMap;
use raftgres::demo::cluster::ClusterSpec;
use raftgres::demo::cluster::LocalCluster;
use raftgres::demo::haproxy;
use raftgres::demo::haproxy::HaproxyPorts;
use serde_json::json;

/// A fixed bin dir: loading a config does not look at the host, so the test needs no PostgreSQL.
const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

fn spec(dir: &Path) -> ClusterSpec {
    ClusterSpec { pg_bin_dir: Some(PathBuf::from(PG_BIN_DIR)), ..ClusterSpec::new(dir, env!("CARGO_BIN_EXE_raftgres")) }
}

/// Loads a node's generated config and fails on any warning (unknown or ignored keys included).
#[track_caller]
fn load_clean(cluster: &LocalCluster, node_idx: usize) -> Config {
    let path = cluster.node(node_idx).config_path();
    let loaded = raftgres::config::load(&path, &EnvMap::new()).expect("generated config loads");
    assert!(loaded.warnings.is_empty(), "{}: {:?}", path.display(), loaded.warnings);
    loaded.config
}

#[test]
fn every_node_config_loads_without_warnings_and_ports_are_consecutive() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = LocalCluster::generate(spec(tmp.path())).expect("generate");
    assert_eq!(cluster.n_nodes(), 3);
    for node_idx in 1..=3usize {
        let config = load_clean(&cluster, node_idx);
        let offset = u16::try_from(node_idx - 1).expect("small");
        let name = format!("node{node_idx}");
        assert_eq!(config.name, name);
        assert_eq!(config.scope, "demo");
        assert_eq!(config.postgresql.listen.to_string(), format!("127.0.0.1:{}", 5432 + offset));
        assert_eq!(config.postgresql.connect_address.to_string(), format!("127.0.0.1:{}", 5432 + offset));
        assert_eq!(config.restapi.listen.to_string(), format!("127.0.0.1:{}", 8008 + offset));
        assert_eq!(config.restapi.connect_address.to_string(), format!("127.0.0.1:{}", 8008 + offset));
        assert_eq!(config.raft.listen.to_string(), format!("127.0.0.1:{}", 7000 + offset));
        assert_eq!(config.raft.node_id, node_idx as u64);
        assert!(!config.raft.insecure);
        assert_eq!(config.raft.tls, Some(cluster.node(node_idx).peer_tls()), "peer TLS by default");
        let peers: Vec<(u64, String, String, String)> =
            config.raft.peers.iter().map(|p| (p.id, p.name.clone(), p.raft_addr.clone(), p.api_addr.clone())).collect();
        let expected: Vec<(u64, String, String, String)> = (1..=3u16)
            .map(|i| {
                (u64::from(i), format!("node{i}"), format!("127.0.0.1:{}", 6999 + i), format!("127.0.0.1:{}", 8007 + i))
            })
            .collect();
        assert_eq!(peers, expected);
        let node_dir = cluster.dir().join(&name);
        assert_eq!(config.postgresql.data_dir, node_dir.join("data"));
        assert_eq!(config.raft.data_dir, node_dir.join("raft"));
        assert_eq!(config.postgresql.pgpass, Some(node_dir.join("pgpass")));
        assert_eq!(config.postgresql.bin_dir, Some(PathBuf::from(PG_BIN_DIR)));
        assert!(config.postgresql.use_pg_rewind);
        assert_eq!(config.postgresql.authentication.superuser.username, "postgres");
        assert_eq!(config.postgresql.authentication.replication.username, "replicator");
        let superuser_password = config.postgresql.authentication.superuser.password.as_ref().expect("password");
        assert_eq!(superuser_password.expose(), cluster.password());
        assert_eq!(cluster.pg_port(node_idx), 5432 + offset);
        assert_eq!(cluster.api(node_idx), format!("http://127.0.0.1:{}", 8008 + offset));
        let dcs = config.bootstrap.dcs.view();
        assert!(dcs.postgresql.use_pg_rewind);
        assert_eq!(dcs.postgresql.parameters.get("max_connections"), Some(&json!(100)));
        let initdb: Vec<String> = config.bootstrap.initdb.iter().map(|o| o.to_arg()).collect();
        assert_eq!(initdb, ["--encoding=UTF8", "--data-checksums"]);
        assert_eq!(
            config.bootstrap.pg_hba,
            ["host all all 127.0.0.1/32 scram-sha-256", "host replication replicator 127.0.0.1/32 scram-sha-256"]
        );
        let mode = std::fs::metadata(&node_dir).expect("node dir").permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{} must be traversable by the PostgreSQL user", node_dir.display());
    }
    let mode = std::fs::metadata(cluster.dir()).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
}

#[test]
fn shared_pgpass_is_private_and_lists_both_roles() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = LocalCluster::generate(spec(tmp.path())).expect("generate");
    let pgpass = cluster.pgpass_path();
    assert_eq!(pgpass, cluster.dir().join("pgpass"));
    let mode = std::fs::metadata(&pgpass).expect("pgpass").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&pgpass).expect("read pgpass");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], format!("*:*:*:postgres:{}", cluster.password()));
    let replication = lines[1].strip_prefix("*:*:*:replicator:").expect("replication line");
    assert!(replication.len() >= 16 && replication.chars().all(|c| c.is_ascii_alphanumeric()), "{replication}");
    assert!(cluster.password().len() >= 16 && cluster.password() != replication);
    let config = load_clean(&cluster, 2);
    let configured = config.postgresql.authentication.replication.password.expect("replication password");
    assert_eq!(configured.expose(), replication);
}

#[test]
fn a_second_generate_keeps_the_passwords() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = LocalCluster::generate(spec(tmp.path())).expect("generate");
    let password = first.password().to_string();
    drop(first);
    let second = LocalCluster::generate(spec(tmp.path())).expect("generate again");
    assert_eq!(second.password(), password);
    // Without the shared pgpass, node1's config still holds them.
    std::fs::remove_file(second.pgpass_path()).expect("remove pgpass");
    drop(second);
    let third = LocalCluster::generate(spec(tmp.path())).expect("generate a third time");
    assert_eq!(third.password(), password);
}

#[test]
fn test_hooks_reach_the_node_configs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut spec = spec(tmp.path());
    spec.pg_port = 25432;
    spec.api_port = 28008;
    spec.raft_port = 27000;
    spec.raft_addr_override = BTreeMap::from([((1, 2), "127.0.0.1:39001".to_string())]);
    spec.dcs_overrides = json!({"ttl": 10, "loop_wait": 2, "retry_timeout": 3});
    let tags = json!({"nofailover": true, "zone": "a"});
    spec.tags = BTreeMap::from([(3, tags.as_object().expect("map").clone())]);
    let cluster = LocalCluster::generate(spec).expect("generate");
    let node1 = load_clean(&cluster, 1);
    let peer_addrs: Vec<&str> = node1.raft.peers.iter().map(|p| p.raft_addr.as_str()).collect();
    assert_eq!(peer_addrs, ["127.0.0.1:27000", "127.0.0.1:39001", "127.0.0.1:27002"]);
    let node2 = load_clean(&cluster, 2);
    assert_eq!(node2.raft.peers[1].raft_addr, "127.0.0.1:27001", "only node1's route to node2 is overridden");
    assert_eq!(node2.postgresql.listen.port, 25433);
    let timing = node2.bootstrap.dcs.view().timing;
    assert_eq!((timing.ttl.as_secs(), timing.loop_wait.as_secs(), timing.retry_timeout.as_secs()), (10, 2, 3));
    assert!(node2.bootstrap.dcs.view().postgresql.use_pg_rewind, "overrides merge into, not replace, bootstrap.dcs");
    let node3 = load_clean(&cluster, 3);
    assert!(node3.tags.nofailover());
    assert_eq!(node3.tags.0.get("zone"), Some(&json!("a")));
    assert!(node1.tags.0.is_empty());
}

#[test]
fn haproxy_config_uses_the_rest_health_checks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = LocalCluster::generate(spec(tmp.path())).expect("generate");
    let cfg = haproxy::render(HaproxyPorts::default(), cluster.nodes());
    let expected = [
        "listen primary\n    bind 127.0.0.1:5000\n    option httpchk /primary\n    http-check expect status 200\n",
        "listen standbys\n    bind 127.0.0.1:5001\n    balance roundrobin\n    option httpchk /replica\n",
        "    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n",
        "    server node1 127.0.0.1:5432 maxconn 100 check port 8008\n",
        "    server node2 127.0.0.1:5433 maxconn 100 check port 8009\n",
        "    server node3 127.0.0.1:5434 maxconn 100 check port 8010\n",
        "    bind 127.0.0.1:7100\n    stats enable\n",
    ];
    for line in expected {
        assert!(cfg.contains(line), "missing {line:?} in:\n{cfg}");
    }
    assert_eq!(cfg.matches("http-check expect status 200").count(), 2);
    assert_eq!(cfg.matches("check port 8008").count(), 2, "node1 is in both listen sections");
}

#[test]
fn haproxy_accepts_the_config_when_installed() {
    let Some(program) = haproxy::find() else {
        println!("skipped: HAProxy is not installed (apt-get install -y haproxy)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = LocalCluster::generate(spec(tmp.path())).expect("generate");
    let path = cluster.dir().join("haproxy.cfg");
    std::fs::write(&path, haproxy::render(HaproxyPorts::default(), cluster.nodes())).expect("write haproxy.cfg");
    let output = std::process::Command::new(&program).arg("-c").arg("-f").arg(&path).output().expect("run haproxy -c");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "haproxy -c rejects the config: {stderr}");
    assert!(!stderr.contains("[WARNING]"), "haproxy -c warns: {stderr}");
}
