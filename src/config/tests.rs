//! Table tests of the configuration: the shipped example, bad documents (exact first error
//! line), environment precedence, unknown-key warnings, the timing rule, `merge_patch` and the
//! dynamic view. Bad documents are written as patches over one valid base, so a row shows
//! only what it breaks (`null` deletes a key).

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use raft::config::LeaseMode;
use serde_json::json;
use serde_json::Value;

use super::*;

const BASE: &str = r#"
name: pg1
scope: batman
restapi: {listen: "127.0.0.1:8008", connect_address: "127.0.0.1:8008"}
raft:
  node_id: 1
  listen: "127.0.0.1:7001"
  data_dir: /tmp/raft
  insecure: true
  peers:
    - {id: 1, name: pg1, raft_addr: "127.0.0.1:7001", api_addr: "127.0.0.1:8008"}
    - {id: 2, name: pg2, raft_addr: "127.0.0.1:7002", api_addr: "127.0.0.1:8009"}
postgresql:
  listen: "127.0.0.1:5432"
  connect_address: "127.0.0.1:5432"
  data_dir: /tmp/pg
  authentication:
    superuser: {username: postgres, password: pw}
    replication: {username: replicator, password: pw}
"#;

fn yaml(text: &str) -> Value {
    walk::parse_yaml(text, "test").expect("test YAML parses")
}

fn env_of(vars: &[(&str, &str)]) -> EnvMap {
    vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Loads BASE patched with `patch` (YAML) under `env`; JSON text is valid YAML.
pub(super) fn load_patched(patch: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    let merged = merge_patch(&yaml(BASE), &yaml(patch));
    load_str(&merged.to_string(), "test", &env_of(vars))
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[track_caller]
fn check_error(patch: &str, expected: &str) {
    match load_patched(patch, &[]) {
        Ok(_) => panic!("loaded, want error {expected:?}"),
        Err(e) => assert_eq!(e.to_string().lines().next(), Some(expected)),
    }
}

#[test]
fn bad_documents_name_the_key() {
    let rows = [
        ("postgresql: {data_dir: null}", "postgresql.data_dir: missing; set the PostgreSQL data directory"),
        ("bootstrap: {dcs: {ttl: abc}}", "bootstrap.dcs.ttl: expected a number of seconds, got \"abc\""),
        ("restapi: {listen: 8008}", "restapi.listen: expected host:port, got \"8008\""),
        ("restapi: x", "restapi: expected a map, got \"x\""),
        ("scope: null", "scope: missing; set the cluster name, the same on every member"),
        (
            "name: pg-1",
            "name: \"pg-1\" does not match raft.peers[0].name \"pg1\" of raft.node_id 1; use the same member name in both",
        ),
        ("raft: {node_id: 7}", "raft.node_id: node id 7 is not in raft.peers (ids: 1, 2); add this node to the peer list"),
        ("raft: {node_id: one}", "raft.node_id: expected an integer node id, got \"one\""),
        (
            "raft: {peers: [{id: 1, name: pg1, raft_addr: 'h:1'}, {id: 2, name: pg1, raft_addr: 'h:2'}]}",
            "raft.peers[1].name: duplicate name \"pg1\" (also used by raft.peers[0])",
        ),
        (
            "raft: {peers: [{id: 1, name: pg1, raft_addr: 'h:1'}, {id: 1, name: pg2, raft_addr: 'h:2'}]}",
            "raft.peers[1].id: duplicate node id 1 (also used by raft.peers[0]); node ids must be unique",
        ),
        ("raft: {peers: [{id: 1, name: pg1}]}", "raft.peers[0].raft_addr: missing; set the host:port of its raft listener"),
        ("raft: {peers: []}", "raft.peers: is empty; list every node of the cluster, this one included"),
        (
            "raft: {partner_addrs: ['h:1']}",
            "raft.partner_addrs: is Patroni's pysyncobj setting; list every member, this one included, in raft.peers \
             as {id, name, raft_addr, api_addr}",
        ),
        ("raft: {bind_addr: 'h:1'}", "raft.bind_addr: is Patroni's pysyncobj setting; use raft.listen (the host:port the peer listener binds)"),
        ("raft: {lease_mode: lax}", "raft.lease_mode: expected strict or stamped, got \"lax\""),
        ("raft: {election_timeout_max: 250ms}", "raft.election_timeout_max: 250ms must be greater than raft.election_timeout_min (300ms)"),
        (
            "raft: {heartbeat_interval: soon}",
            "raft.heartbeat_interval: expected a duration (milliseconds, or a string such as \"500ms\" or \"2s\"), got \"soon\"",
        ),
        (
            "raft: {listen: '0.0.0.0:7001', advertise: null, peers: [{id: 1, name: pg1, raft_addr: '0.0.0.0:7001'}]}",
            "raft.advertise: missing; raft.listen 0.0.0.0:7001 is a wildcard address, set the host:port peers use to reach this node",
        ),
        ("raft: {listen: '127.0.0.1:8008'}", "raft.listen: 127.0.0.1:8008 is also restapi.listen; the raft peer listener needs its own port"),
        (
            "postgresql: {connect_address: '0.0.0.0:5432'}",
            "postgresql.connect_address: 0.0.0.0:5432 is a wildcard address; set an address others can connect to",
        ),
        ("postgresql: {listen: 'localhost'}", "postgresql.listen: expected host[,host...]:port, got \"localhost\""),
        ("postgresql: {use_pg_rewind: maybe}", "postgresql.use_pg_rewind: expected true or false, got \"maybe\""),
        (
            "postgresql: {authentication: {replication: null}}",
            "postgresql.authentication.replication: missing; add the replication role (username, password)",
        ),
        ("postgresql: {authentication: {superuser: {username: null}}}", "postgresql.authentication.superuser.username: missing; set the superuser role name"),
        ("postgresql: {parameters: {work_mem: [1, 2]}}", "postgresql.parameters.work_mem: expected a scalar (string, number or boolean), got a list"),
        ("postgresql: {pg_hba: 'host all all'}", "postgresql.pg_hba: expected a list of strings, got \"host all all\""),
        ("postgresql: {basebackup: [{format: tar}]}", "postgresql.basebackup[0]: --format is set by raftgres itself; remove it"),
        (
            "postgresql: {create_replica_methods: [wal_g, basebackup]}",
            "postgresql.wal_g: missing; create_replica_methods lists \"wal_g\"; add a postgresql.wal_g section with its command",
        ),
        ("bootstrap: {initdb: [pgdata]}", "bootstrap.initdb[0]: --pgdata is set by raftgres itself; remove it"),
        ("bootstrap: {method: clone}", "bootstrap.clone: missing; bootstrap.method is \"clone\"; add a bootstrap.clone section with its command"),
        ("bootstrap: {method: clone, clone: {keep_existing_recovery_conf: true}}", "bootstrap.clone.command: missing; set the bootstrap command"),
        ("bootstrap: {dcs: {synchronous_mode: sometimes}}", "bootstrap.dcs.synchronous_mode: expected off, on or quorum, got \"sometimes\""),
        ("bootstrap: {dcs: {synchronous_node_count: 0}}", "bootstrap.dcs.synchronous_node_count: expected an integer of at least 1, got 0"),
        ("bootstrap: {dcs: {postgresql: {pg_hba: [[1]]}}}", "bootstrap.dcs.postgresql.pg_hba[0]: expected a string, got a list"),
        ("tags: {failover_priority: -1}", "tags.failover_priority: expected an integer priority of at least 0, got -1"),
        ("tags: {nofailover: perhaps}", "tags.nofailover: expected true or false, got \"perhaps\""),
        ("watchdog: {mode: sometimes}", "watchdog.mode: expected off, automatic or required, got \"sometimes\""),
        ("log: {level: LOUD}", "log.level: expected DEBUG, INFO, WARNING or ERROR, got \"LOUD\""),
        (
            "restapi: {verify_client: required}",
            "restapi.verify_client: client certificates need HTTPS; set restapi.certfile and restapi.cafile, or verify_client: none",
        ),
        ("restapi: {authentication: {username: admin}}", "restapi.authentication.password: missing; set the password, or remove the authentication section"),
    ];
    for (patch, expected) in rows {
        check_error(patch, expected);
    }
}

#[test]
fn yaml_syntax_error_names_the_origin() {
    let res = load_str("name: [unclosed", "node.yml", &EnvMap::new()).map(|_| ()).map_err(|e| e.to_string());
    let message = res.expect_err("unclosed list is a syntax error");
    assert!(message.starts_with("parse node.yml: "), "{message}");
}

#[test]
fn missing_file_is_a_read_error() {
    let res = load(Path::new("/nonexistent/raftgres.yml"), &EnvMap::new()).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(res, Err("read /nonexistent/raftgres.yml: No such file or directory (os error 2)".to_string()));
}

#[track_caller]
fn check_warnings(patch: &str, expected: &[&str]) {
    let loaded = load_patched(patch, &[]).unwrap_or_else(|e| panic!("load failed: {e}"));
    assert_eq!(loaded.warnings, expected);
}

#[test]
fn base_has_no_warnings() {
    check_warnings("{}", &[]);
}

#[test]
fn primary_start_timeout_is_used_so_not_warned() {
    check_warnings("bootstrap: {dcs: {primary_start_timeout: 0}}", &[]);
    // The pre-4.0 name is read when the new one is absent, and ignored out loud only when both are given.
    check_warnings("bootstrap: {dcs: {master_start_timeout: 30}}", &[]);
    check_warnings(
        "bootstrap: {dcs: {primary_start_timeout: 10, master_start_timeout: 30}}",
        &["bootstrap.dcs.master_start_timeout is superseded by its primary_* name (ignored)"],
    );
    check_warnings(
        "bootstrap: {dcs: {master_stop_timeout: 30}}",
        &["bootstrap.dcs.master_stop_timeout has no effect in raftgres: stopping PostgreSQL is bounded by raftgres' \
           own stop timeouts instead"],
    );
}

#[test]
fn unknown_keys_are_warned_with_their_path() {
    check_warnings("postgresql: {paramters: {work_mem: 4MB}}", &["unknown key postgresql.paramters (ignored)"]);
    check_warnings("restapi: {listn: 'x'}", &["unknown key restapi.listn (ignored)"]);
    check_warnings(
        "raft: {peers: [{id: 1, name: pg1, raft_addr: '127.0.0.1:7001', port: 1}]}",
        &["unknown key raft.peers[0].port (ignored)"],
    );
    check_warnings("bootstrap: {dcs: {tll: 10}}", &["unknown key bootstrap.dcs.tll (ignored)"]);
    check_warnings("colour: blue", &["unknown key colour (ignored)"]);
}

#[test]
fn bad_permanent_and_ignored_slots_are_refused_with_their_path() {
    check_error(
        "bootstrap: {dcs: {slots: {cdc: {type: logical, database: app}}}}",
        "bootstrap.dcs.slots.cdc: a logical slot needs database and plugin",
    );
    check_error(
        "bootstrap: {dcs: {slots: {Bad-Slot: null}}}",
        "bootstrap.dcs.slots.Bad-Slot: invalid slot name \"Bad-Slot\": use 1 to 63 lower case letters, digits and underscores",
    );
    check_error(
        "bootstrap: {dcs: {ignore_slots: [{name: a}, {typ: logical}]}}",
        "bootstrap.dcs.ignore_slots[1]: unknown property \"typ\": use name, type, database and plugin",
    );
    let loaded = load_patched(
        "bootstrap: {dcs: {slots: {archiver: null, cdc: {database: app, plugin: pgoutput}}, ignore_slots: [{type: logical}]}}",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dcs = loaded.config.bootstrap.dcs.view();
    assert_eq!(dcs.slots.keys().collect::<Vec<_>>(), ["archiver", "cdc"]);
    assert_eq!(dcs.ignore_slots.len(), 1);
}

#[test]
fn a_standby_cluster_streams_from_host_and_port_only() {
    let loaded = load_patched(
        "bootstrap: {dcs: {standby_cluster: {host: 10.0.0.1, port: 5433, primary_slot_name: dr, \
         restore_command: 'cp /a/%f %p', recovery_min_apply_delay: 60000, \
         create_replica_methods: [pgbackrest, basebackup]}}}\n\
         postgresql: {pgbackrest: {command: 'pgbackrest restore', keep_data: true}}",
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let standby = loaded.config.bootstrap.dcs.view().standby_cluster.clone();
    let recovery = [("recovery_min_apply_delay", "60000"), ("restore_command", "cp /a/%f %p")];
    assert_eq!(
        standby,
        Some(crate::config::StandbyCluster {
            host: Some("10.0.0.1".into()),
            port: 5433,
            primary_slot_name: Some("dr".into()),
            recovery: recovery.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            create_replica_methods: vec!["pgbackrest".into(), "basebackup".into()],
        })
    );
    assert!(
        loaded.config.postgresql.replica_methods.contains_key("pgbackrest"),
        "a method section the local list does not name is kept for standby_cluster"
    );
    check_error(
        "bootstrap: {dcs: {standby_cluster: {host: h, create_replica_methods: [wal_g]}}}",
        "bootstrap.dcs.standby_cluster.create_replica_methods: lists \"wal_g\"; add a postgresql.wal_g section with \
         its command",
    );
    check_error(
        "bootstrap: {dcs: {standby_cluster: {host: h, create_replica_methods: pgbackrest}}}",
        "bootstrap.dcs.standby_cluster.create_replica_methods: expected a list of method names, got \"pgbackrest\"",
    );
    check_error(
        "bootstrap: {dcs: {standby_cluster: {port: 5432}}}",
        "bootstrap.dcs.standby_cluster.host: missing; set the remote primary's host, or restore_command for a \
         standby cluster that replays the primary cluster's WAL archive",
    );
    let archive_only = load_patched("bootstrap: {dcs: {standby_cluster: {restore_command: 'cp /a/%f %p'}}}", &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let standby = archive_only.config.bootstrap.dcs.view().standby_cluster.clone();
    assert_eq!(standby.map(|s| s.host), Some(None), "an archive-only standby cluster has no host");
    assert!(load_patched("bootstrap: {dcs: {standby_cluster: {host: null}}}", &[]).is_ok(), "an emptied section");
}

#[test]
fn recovery_conf_keeps_archive_settings_and_drops_what_raftgres_manages_out_loud() {
    let patch = "postgresql: {recovery_conf: {restore_command: 'cp /a/%f %p', recovery_min_apply_delay: 0, \
                 primary_conninfo: 'host=x', recovery_target_time: '2026-01-01'}}";
    let loaded = load_patched(patch, &[]).unwrap_or_else(|e| panic!("load failed: {e}"));
    let keys: Vec<&str> = loaded.config.postgresql.recovery_conf.keys().map(String::as_str).collect();
    assert_eq!(keys, ["recovery_min_apply_delay", "restore_command"]);
    assert_eq!(
        loaded.warnings,
        [
            "postgresql.recovery_conf.primary_conninfo is set by raftgres from the leader key and tags (ignored, as Patroni does)",
            "postgresql.recovery_conf.recovery_target_time would stop a replica that must follow its leader (ignored, as Patroni does)",
        ]
    );
}

#[test]
fn patroni_only_settings_are_warned() {
    check_warnings(
        "etcd: {hosts: 'h:2379'}",
        &["etcd is a Patroni DCS section; raftgres keeps the cluster state in its embedded raft (ignored)"],
    );
    check_warnings(
        "postgresql: {parameters: {max_connections: 200, work_mem: 4MB}}",
        &["postgresql.parameters.max_connections can only be set cluster-wide in the dynamic configuration \
           (bootstrap.dcs.postgresql.parameters or PATCH /config) (ignored)"],
    );
    check_warnings(
        "bootstrap: {dcs: {postgresql: {parameters: {port: 5433}, data_dir: /x}}}",
        &[
            "bootstrap.dcs.postgresql.parameters.port is set by raftgres itself (ignored)",
            "bootstrap.dcs.postgresql.data_dir is local-only and cannot be set in the dynamic configuration (ignored)",
        ],
    );
    check_warnings(
        "tags: {nofailover: true, failover_priority: 1}",
        &["Conflicting configuration between nofailover: True and failover_priority: 1. Defaulting to nofailover: True"],
    );
    check_warnings(
        "raft: {max_clock_skew: 200ms}",
        &["raft.max_clock_skew is used only with lease_mode: stamped (ignored)"],
    );
}

#[test]
fn timing_warnings_come_from_bootstrap_dcs() {
    check_warnings(
        "bootstrap: {dcs: {ttl: 2, retry_timeout: 2}}",
        &[
            "bootstrap.dcs: ttl=2 can't be smaller than 3, adjusting...",
            "bootstrap.dcs: Violated the rule \"loop_wait + 2*retry_timeout <= ttl\", where ttl=3. \
             Adjusting loop_wait from 1 to 1 and retry_timeout from 2 to 1",
        ],
    );
    check_warnings(
        "raft: {election_timeout_min: 1000, election_timeout_max: 2000}",
        &["raft.election_timeout_max: a raft election can take 4.1s (2 * election_timeout_max + heartbeat_interval) \
           but the primary's lease only rides out 1.5s without a renewal (bootstrap.dcs ttl 3s - max(0.1 ttl, 0.5s) \
           - loop_wait 1s); raise ttl or lower election_timeout_max, or losing a raft leader that is not the \
           primary's node makes the primary demote"],
    );
    // The timers raftgres shipped before leadership followed the primary: an election (2.1 s) outlasted the lease.
    check_warnings(
        "raft: {election_timeout_min: 500, election_timeout_max: 1000}",
        &["raft.election_timeout_max: a raft election can take 2.1s (2 * election_timeout_max + heartbeat_interval) \
           but the primary's lease only rides out 1.5s without a renewal (bootstrap.dcs ttl 3s - max(0.1 ttl, 0.5s) \
           - loop_wait 1s); raise ttl or lower election_timeout_max, or losing a raft leader that is not the \
           primary's node makes the primary demote"],
    );
    check_warnings("raft: {election_timeout_min: 500, election_timeout_max: 1000}\nbootstrap: {dcs: {ttl: 4}}", &[]);
    check_warnings(
        "watchdog: {mode: automatic, safety_margin: 5}",
        &["watchdog.safety_margin: ttl 3s - safety_margin 5s leaves no watchdog timeout of at least 1s (bootstrap.dcs \
           ttl); the watchdog is not used"],
    );
    check_warnings(
        "watchdog: {mode: required, safety_margin: 0}",
        &["watchdog.safety_margin: a watchdog timeout of 3s (ttl 3s - safety_margin 0s) is not shorter than the lease \
           (2.5s), so it could never be fed (bootstrap.dcs ttl); this node never becomes the leader"],
    );
    check_warnings("watchdog: {mode: required, safety_margin: -1}", &[]);
    check_warnings("watchdog: {mode: off, safety_margin: 5}", &[]);
}

#[test]
fn watchdog_section_reads_patroni_words_and_refuses_other_drivers() {
    let watchdog =
        |patch: &str| load_patched(patch, &[]).map(|loaded| loaded.config.watchdog).map_err(|e| e.to_string());
    let device = PathBuf::from("/dev/watchdog");
    for (mode, expected) in [
        ("'off'", WatchdogMode::Off),
        ("false", WatchdogMode::Off),
        ("disabled", WatchdogMode::Off),
        ("auto", WatchdogMode::Automatic),
        ("Automatic", WatchdogMode::Automatic),
        ("require", WatchdogMode::Required),
        ("required", WatchdogMode::Required),
    ] {
        let config = watchdog(&format!("watchdog: {{mode: {mode}}}")).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(config.mode, expected, "mode {mode}");
        assert_eq!(
            (config.device.as_path(), config.safety_margin),
            (device.as_path(), SafetyMargin::Fixed(Duration::from_secs(2)))
        );
    }
    assert_eq!(
        watchdog("watchdog: {mode: 'on'}"),
        Err("watchdog.mode: expected off, automatic or required, got \"on\"".to_string())
    );
    assert!(watchdog("watchdog: {mode: true}").is_err(), "YAML true is refused, as Patroni's validator does");
    let config = watchdog("watchdog: {device: /dev/watchdog1, safety_margin: -1, driver: default}")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((config.device, config.safety_margin), (PathBuf::from("/dev/watchdog1"), SafetyMargin::HalfTtl));
    assert_eq!(
        watchdog("watchdog: {driver: testing}"),
        Err("watchdog.driver: only Linux's watchdog driver \"default\" exists in raftgres, got \"testing\"; remove the key".to_string())
    );
    assert_eq!(
        watchdog("watchdog: {safety_margin: -2}"),
        Err("watchdog.safety_margin: expected a number of seconds, or -1 for half of ttl, got -2".to_string())
    );
}

#[test]
fn watchdog_timeout_follows_ttl() {
    let config = |margin: SafetyMargin| WatchdogConfig {
        mode: WatchdogMode::Required,
        device: PathBuf::from("/dev/watchdog"),
        safety_margin: margin,
    };
    let secs = Duration::from_secs;
    let timeout = |margin: SafetyMargin, ttl: Duration| config(margin).timeout(ttl).map(|t| t.as_secs());
    assert_eq!(timeout(SafetyMargin::Fixed(secs(2)), secs(3)), Ok(1), "the defaults");
    assert_eq!(timeout(SafetyMargin::Fixed(Duration::from_millis(500)), secs(3)), Ok(2), "rounded down");
    assert_eq!(timeout(SafetyMargin::Fixed(secs(5)), secs(30)), Ok(25), "Patroni's defaults");
    assert_eq!(timeout(SafetyMargin::HalfTtl, secs(3)), Ok(1), "Patroni's ttl // 2");
    assert_eq!(timeout(SafetyMargin::HalfTtl, secs(30)), Ok(15));
    assert!(timeout(SafetyMargin::Fixed(secs(3)), secs(3)).is_err(), "no timeout left");
    assert!(timeout(SafetyMargin::Fixed(secs(2)), secs(30)).is_err(), "28 s is not shorter than the 27 s lease");
}

#[test]
fn example_node1_loads_without_warnings() {
    let loaded = load(&repo_path("docs/examples/node1.yml"), &EnvMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let config = loaded.config;
    assert_eq!(
        (config.name.as_str(), config.scope.as_str(), config.namespace.as_str()),
        ("pg1", "batman", "/service/")
    );
    assert_eq!(config.restapi.connect_address.to_string(), "10.0.0.11:8008");
    assert_eq!(config.postgresql.listen.listen_addresses(), "0.0.0.0");
    assert_eq!(config.postgresql.listen.port, 5432);
    assert_eq!(config.postgresql.authentication.rewind.as_ref().map(|u| u.username.as_str()), Some("rewind_user"));
    assert_eq!(
        config.postgresql.basebackup,
        vec![ProgramOption { name: "checkpoint".into(), value: Some("fast".into()) }]
    );
    let initdb: Vec<String> = config.bootstrap.initdb.iter().map(ProgramOption::to_arg).collect();
    assert_eq!(initdb, ["--encoding=UTF8", "--data-checksums"]);
    assert_eq!(config.bootstrap.dcs.view().postgresql.parameters.get("max_connections"), Some(&json!(100)));
    assert!(!config.tags.nofailover());
    assert_eq!(config.tags.failover_priority(), 1);
    let shown = format!("{config:?}");
    assert!(!shown.contains("change-me") && !shown.contains("rep-pass"), "Debug shows a password");
    assert_eq!(config.postgresql.authentication.replication.password.as_ref().map(Secret::expose), Some("rep-pass"));

    let raft_config = config.raft_config();
    assert_eq!(raft_config.node_id, 1);
    assert_eq!(raft_config.cluster_name, "batman");
    assert_eq!((raft_config.listen.as_str(), raft_config.advertise.as_str()), ("0.0.0.0:7001", "10.0.0.11:7001"));
    assert_eq!(raft_config.api_addr, "10.0.0.11:8008");
    assert_eq!(raft_config.peers.len(), 3);
    assert_eq!(raft_config.election_timeout_max, Duration::from_millis(600));
    assert_eq!(raft_config.lease_mode, LeaseMode::Strict);
    raft_config.validate().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn bad_config_files_fail_with_their_expected_line() {
    let dir = repo_path("tests/data/bad-configs");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("read bad-configs").map(|e| e.expect("entry").path()).collect();
    files.sort();
    assert!(files.len() >= 5, "bad-configs has {} files", files.len());
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read bad config");
        let expected = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("first line is # expect:");
        let res = load(&file, &EnvMap::new()).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(res, Err(expected.to_string()), "{}", file.display());
    }
}

#[track_caller]
fn check_env(vars: &[(&str, &str)], expected_name: &str, expected_data_dir: &str) {
    let loaded = load_patched("{}", vars).unwrap_or_else(|e| panic!("{e}"));
    let data_dir = loaded.config.postgresql.data_dir.display().to_string();
    assert_eq!((loaded.config.name.as_str(), data_dir.as_str()), (expected_name, expected_data_dir));
}

#[test]
fn environment_overrides_the_file() {
    // Renaming the member needs the peer list to agree, so the peers come from the environment too.
    let peers = "{id: 1, name: pg9, raft_addr: '127.0.0.1:7001'}";
    check_env(&[], "pg1", "/tmp/pg");
    check_env(&[("PATRONI_POSTGRESQL_DATA_DIR", "/p")], "pg1", "/p");
    check_env(&[("PATRONI_POSTGRESQL_DATA_DIR", "/p"), ("RAFTGRES_POSTGRESQL_DATA_DIR", "/r")], "pg1", "/r");
    check_env(&[("RAFTGRES_NAME", "pg9"), ("RAFTGRES_RAFT_PEERS", peers)], "pg9", "/tmp/pg");
    // A whole-document variable is only for runs without a config file.
    check_env(&[("RAFTGRES_CONFIGURATION", "name: other")], "pg1", "/tmp/pg");
}

#[test]
fn environment_errors_name_the_variable() {
    let res = load_patched("{}", &[("RAFTGRES_RAFT_NODE_ID", "x")]).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(res, Err("RAFTGRES_RAFT_NODE_ID: expected an integer, got \"x\"".to_string()));
}

#[test]
fn load_from_env_prefers_the_configuration_document() {
    let document = yaml(BASE).to_string();
    let env = env_of(&[("PATRONI_CONFIGURATION", &document), ("RAFTGRES_POSTGRESQL_DATA_DIR", "/ignored")]);
    let loaded = load_from_env(&env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.postgresql.data_dir, PathBuf::from("/tmp/pg"));
}

#[test]
fn load_from_env_builds_from_variables_alone() {
    let env = env_of(&[
        ("PATRONI_NAME", "pg1"),
        ("PATRONI_SCOPE", "batman"),
        ("PATRONI_RESTAPI_LISTEN", "127.0.0.1:8008"),
        ("PATRONI_RESTAPI_CONNECT_ADDRESS", "127.0.0.1:8008"),
        ("RAFTGRES_RAFT_NODE_ID", "1"),
        ("RAFTGRES_RAFT_LISTEN", "127.0.0.1:7001"),
        ("RAFTGRES_RAFT_DATA_DIR", "/tmp/raft"),
        ("RAFTGRES_RAFT_PEERS", "{id: 1, name: pg1, raft_addr: '127.0.0.1:7001'}"),
        ("RAFTGRES_RAFT_INSECURE", "true"),
        ("PATRONI_POSTGRESQL_LISTEN", "127.0.0.1,::1:5432"),
        ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "127.0.0.1:5432"),
        ("PATRONI_POSTGRESQL_DATA_DIR", "/tmp/pg"),
        ("PATRONI_SUPERUSER_USERNAME", "postgres"),
        ("PATRONI_REPLICATION_USERNAME", "replicator"),
        ("PATRONI_REPLICATION_SSLMODE", "verify-full"),
    ]);
    let loaded = load_from_env(&env).unwrap_or_else(|e| panic!("{e}"));
    let pg = &loaded.config.postgresql;
    assert_eq!(pg.listen.hosts, ["127.0.0.1", "::1"]);
    assert_eq!(pg.authentication.replication.options.get("sslmode").map(String::as_str), Some("verify-full"));
    assert_eq!(pg.authentication.superuser.password, None);
}

#[test]
fn directory_of_files_merges_in_sorted_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("20-local.yaml"), "name: pg2\nraft: {node_id: 2, listen: '127.0.0.1:7002'}\n")
        .expect("write");
    std::fs::write(dir.path().join("10-base.yml"), BASE).expect("write");
    std::fs::write(dir.path().join("30-notes.txt"), "not: yaml: at: all").expect("write");
    let loaded = load(dir.path(), &EnvMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((loaded.config.name.as_str(), loaded.config.raft.node_id), ("pg2", 2));
    assert_eq!(loaded.config.raft.advertise.to_string(), "127.0.0.1:7002");
}

#[test]
fn defaults_fill_what_is_not_written() {
    let config = load_patched("{}", &[]).unwrap_or_else(|e| panic!("{e}")).config;
    assert_eq!(config.raft.advertise, config.raft.listen);
    assert_eq!(config.raft.heartbeat_interval, defaults::RAFT_HEARTBEAT_INTERVAL);
    assert_eq!(config.postgresql.create_replica_methods, ["basebackup"]);
    assert_eq!(config.postgresql.run_as, "postgres");
    assert_eq!(config.postgresql.pg_ctl_timeout, Duration::from_secs(60));
    assert_eq!(config.postgresql.program("pg_ctl"), Some(PathBuf::from("pg_ctl")));
    assert_eq!(config.watchdog.mode, WatchdogMode::Off);
    assert_eq!(config.bootstrap.method, BootstrapMethod::Initdb);
    assert_eq!(config.bootstrap.dcs.timing(), (Timing::default(), vec![]));
}

#[test]
fn raft_keys_accept_durations_and_stamped_leases() {
    let patch = "raft: {heartbeat_interval: 50, election_timeout_min: '0.3s', election_timeout_max: 1s, \
                 lease_mode: stamped, max_clock_skew: 250ms}";
    let config = load_patched(patch, &[]).unwrap_or_else(|e| panic!("{e}")).config;
    assert_eq!(config.raft.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(config.raft.election_timeout_min, Duration::from_millis(300));
    assert_eq!(config.raft.election_timeout_max, Duration::from_secs(1));
    assert_eq!(config.raft_config().lease_mode, LeaseMode::Stamped { max_clock_skew_ms: 250 });
}

#[test]
fn connect_addresses_default_from_the_peer_list() {
    // A wildcard listener is not loopback, so it needs peer TLS.
    let patch = "raft: {listen: '0.0.0.0:7001', insecure: null, tls: {cafile: c, certfile: c, keyfile: k}}\n\
                 restapi: {connect_address: null}";
    let config = load_patched(patch, &[]).unwrap_or_else(|e| panic!("{e}")).config;
    assert_eq!(config.raft.advertise.to_string(), "127.0.0.1:7001");
    assert_eq!(config.restapi.connect_address.to_string(), "127.0.0.1:8008");
}

#[track_caller]
fn check_address(text: &str, expected: Option<(&str, u16, &str)>) {
    let res = HostPort::parse(text);
    let res = res.as_ref().map(|hp| (hp.host.as_str(), hp.port, hp.to_string()));
    assert_eq!(res, expected.map(|(host, port, shown)| (host, port, shown.to_string())));
}

#[test]
fn host_port_syntax() {
    check_address("127.0.0.1:8008", Some(("127.0.0.1", 8008, "127.0.0.1:8008")));
    check_address("[::1]:8008", Some(("::1", 8008, "[::1]:8008")));
    check_address("::1:8008", Some(("::1", 8008, "[::1]:8008")));
    check_address(":8008", Some(("", 8008, ":8008")));
    check_address("db.example.com:5432", Some(("db.example.com", 5432, "db.example.com:5432")));
    check_address("8008", None);
    check_address("host:99999", None);
    check_address("a,b:1", None);
    check_address("::1", None);
}

#[track_caller]
fn check_timing(requested: (f64, f64, f64), expected: (f64, f64, f64), expected_warnings: &[&str]) {
    let d = Duration::from_secs_f64;
    let (timing, warnings) =
        adjust_timing(Timing { ttl: d(requested.0), loop_wait: d(requested.1), retry_timeout: d(requested.2) });
    let expected = Timing { ttl: d(expected.0), loop_wait: d(expected.1), retry_timeout: d(expected.2) };
    assert_eq!((timing, warnings), (expected, expected_warnings.iter().map(|w| w.to_string()).collect()));
}

const RULE: &str = "Violated the rule \"loop_wait + 2*retry_timeout <= ttl\"";

#[test]
fn timing_rule_matches_patroni() {
    check_timing((5.0, 1.0, 2.0), (5.0, 1.0, 2.0), &[]);
    check_timing((30.0, 10.0, 10.0), (30.0, 10.0, 10.0), &[]);
    check_timing(
        (30.0, 10.0, 15.0),
        (30.0, 1.0, 14.0),
        &[&format!("{RULE}, where ttl=30. Adjusting loop_wait from 10 to 1 and retry_timeout from 15 to 14")],
    );
    check_timing(
        (8.0, 1.0, 4.0),
        (8.0, 1.0, 3.0),
        &[&format!("{RULE}, where ttl=8. Adjusting loop_wait from 1 to 1 and retry_timeout from 4 to 3")],
    );
    check_timing(
        (10.0, 5.0, 3.0),
        (10.0, 4.0, 3.0),
        &[&format!("{RULE}, where ttl=10 and retry_timeout=3. Adjusting loop_wait from 5 to 4")],
    );
    check_timing(
        (2.0, 0.0, 0.0),
        (3.0, 1.0, 1.0),
        &[
            "loop_wait=0 can't be smaller than 1, adjusting...",
            "retry_timeout=0 can't be smaller than 1, adjusting...",
            "ttl=2 can't be smaller than 3, adjusting...",
        ],
    );
    check_timing((4.5, 0.5, 1.5), (4.5, 1.0, 1.5), &["loop_wait=0.5 can't be smaller than 1, adjusting..."]);
    check_timing(
        (6.5, 2.0, 2.5),
        (6.5, 1.5, 2.5),
        &[&format!("{RULE}, where ttl=6.5 and retry_timeout=2.5. Adjusting loop_wait from 2 to 1.5")],
    );
}

#[track_caller]
fn check_merge(base: Value, patch: Value, expected: Value) {
    assert_eq!(merge_patch(&base, &patch), expected);
}

#[test]
fn merge_patch_follows_patch_config() {
    check_merge(json!({"ttl": 30}), json!({"ttl": 20}), json!({"ttl": 20}));
    check_merge(json!({"ttl": 30}), json!({"loop_wait": 5}), json!({"ttl": 30, "loop_wait": 5}));
    check_merge(json!({"ttl": 30, "pause": true}), json!({"pause": null}), json!({"ttl": 30}));
    check_merge(json!({"ttl": 30}), json!({"absent": null}), json!({"ttl": 30}));
    check_merge(
        json!({"postgresql": {"parameters": {"a": 1, "b": 2}, "use_slots": true}}),
        json!({"postgresql": {"parameters": {"a": null, "c": 3}}}),
        json!({"postgresql": {"parameters": {"b": 2, "c": 3}, "use_slots": true}}),
    );
    check_merge(
        json!({"slots": "x"}),
        json!({"slots": {"s": {"type": "physical"}}}),
        json!({"slots": {"s": {"type": "physical"}}}),
    );
    check_merge(json!({"slots": {"s": {"type": "physical"}}}), json!({"slots": 1}), json!({"slots": 1}));
    check_merge(json!({"ignore_slots": [1, 2]}), json!({"ignore_slots": [3]}), json!({"ignore_slots": [3]}));
    // Like Patroni, a new key takes the patch value as is, nested nulls included.
    check_merge(json!({}), json!({"standby_cluster": {"host": null}}), json!({"standby_cluster": {"host": null}}));
    check_merge(json!({"a": 1}), json!([1]), json!([1]));
}

#[track_caller]
fn check_dynamic(document: Value, expected: Result<fn(&DynamicView) -> bool, &str>) {
    match (DynamicConfig::parse(document, ""), expected) {
        (Ok((config, _)), Ok(predicate)) => assert!(predicate(config.view()), "{:?}", config.view()),
        (Err(e), Err(want)) => assert_eq!(e.to_string(), want),
        (res, _) => panic!("unexpected {res:?}"),
    }
}

#[test]
fn dynamic_view_reads_patroni_values() {
    check_dynamic(json!({}), Ok(|v| *v == DynamicView::default()));
    check_dynamic(json!({"synchronous_mode": true}), Ok(|v| v.synchronous_mode == SynchronousMode::On));
    check_dynamic(json!({"synchronous_mode": "on"}), Ok(|v| v.synchronous_mode == SynchronousMode::On));
    check_dynamic(json!({"synchronous_mode": "quorum"}), Ok(|v| v.synchronous_mode == SynchronousMode::Quorum));
    check_dynamic(json!({"synchronous_mode": false}), Ok(|v| v.synchronous_mode == SynchronousMode::Off));
    check_dynamic(
        json!({"ttl": "30", "loop_wait": 0.5}),
        Ok(|v| v.timing.ttl == Duration::from_secs(30) && v.timing.loop_wait == Duration::from_millis(500)),
    );
    check_dynamic(json!({"master_start_timeout": 10}), Ok(|v| v.primary_start_timeout == Duration::from_secs(10)));
    check_dynamic(
        json!({"maximum_lag_on_syncnode": -1, "member_slots_ttl": "30min"}),
        Ok(|v| v.member_slots_ttl == Duration::from_secs(1800)),
    );
    check_dynamic(
        json!({"postgresql": {"use_slots": false}}),
        Ok(|v| !v.postgresql.use_slots && v.postgresql.use_pg_rewind),
    );
    check_dynamic(json!({"slots": {"s": {"type": "physical"}}}), Ok(|v| v.slots.contains_key("s")));
    check_dynamic(
        json!({"postgresql": {"recovery_conf": {"recovery_min_apply_delay": "5min", "primary_slot_name": "x"}}}),
        Ok(|v| {
            let keys: Vec<&String> = v.postgresql.recovery_conf.keys().collect();
            keys == ["recovery_min_apply_delay"]
        }),
    );
    check_dynamic(json!({"ttl": -5}), Err("ttl: expected a number of seconds, got -5"));
    check_dynamic(
        json!({"maximum_lag_on_failover": "1MB"}),
        Err("maximum_lag_on_failover: expected an integer number of bytes, got \"1MB\""),
    );
    check_dynamic(
        json!({"ignore_slots": [{"name": "x"}, 1]}),
        Err("ignore_slots[1]: expected a map (name, type, database, plugin), got 1"),
    );
    check_dynamic(json!([1]), Err("configuration: expected a map, got a list"));
}

#[test]
fn dynamic_document_keeps_unknown_keys_and_patches_recheck() {
    let (config, warnings) =
        DynamicConfig::parse(json!({"ttl": 10, "future_key": 1}), "").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(warnings, ["unknown key future_key (ignored)"]);
    assert_eq!(config.document(), &json!({"ttl": 10, "future_key": 1}));
    let (patched, _) = config.patched(&json!({"ttl": null, "pause": true})).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(patched.document(), &json!({"future_key": 1, "pause": true}));
    assert!(patched.view().pause);
    let res = config.patched(&json!({"loop_wait": "often"})).map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(res, Err("loop_wait: expected a number of seconds, got \"often\"".to_string()));
}

#[test]
fn lenient_dynamic_parse_falls_back_to_defaults() {
    let (config, warnings) = DynamicConfig::parse_lenient(json!({"ttl": "abc", "pause": true}));
    assert_eq!(config.view().timing.ttl, defaults::TTL);
    assert!(config.view().pause);
    assert_eq!(warnings, ["ttl: expected a number of seconds, got \"abc\"; using the default"]);
}

#[test]
fn peer_transport_must_be_tls_or_loopback_plaintext() {
    check_error(
        "raft: {insecure: null}",
        "raft.tls: missing; peer traffic must be authenticated: run `raftgres certs init --nodes NAME,NAME,... --dir \
         DIR` and set raft.tls.cafile, raft.tls.certfile and raft.tls.keyfile (or raft.insecure: true for a cluster \
         whose raft addresses are all loopback)",
    );
    check_error(
        "raft: {peers: [{id: 1, name: pg1, raft_addr: '127.0.0.1:7001'}, {id: 2, name: pg2, raft_addr: '10.0.0.2:7001'}]}",
        "raft.insecure: plaintext peer traffic is allowed only on loopback, but raft.peers[1].raft_addr is \
         10.0.0.2:7001; configure raft.tls (see `raftgres certs init`) and remove raft.insecure",
    );
    check_error(
        "raft: {tls: {cafile: /c/ca.crt, certfile: /c/pg1.crt, keyfile: /c/pg1.key}}",
        "raft.insecure: is set together with raft.tls; remove raft.insecure to use TLS",
    );
    check_error(
        "raft: {insecure: null, tls: {cafile: /c/ca.crt}}",
        "raft.tls.certfile: missing; set the file `raftgres certs init` wrote for this node",
    );
    let tls = "raft: {insecure: null, tls: {cafile: /c/ca.crt, certfile: /c/pg1.crt, keyfile: /c/pg1.key}, \
               listen: '0.0.0.0:7001', advertise: '10.0.0.1:7001'}";
    let config = load_patched(tls, &[]).unwrap_or_else(|e| panic!("{e}")).config;
    let files = raft::config::TlsFiles {
        cafile: PathBuf::from("/c/ca.crt"),
        certfile: PathBuf::from("/c/pg1.crt"),
        keyfile: PathBuf::from("/c/pg1.key"),
    };
    assert_eq!(config.raft_config().transport, raft::config::PeerTransport::Tls(files));
}

#[test]
fn well_known_tags_are_stored_typed() {
    let loaded = load_patched("tags: {nofailover: 'yes', nosync: 'off', failover_priority: '2', rack: 'r1'}", &[])
        .unwrap_or_else(|e| panic!("load failed: {e}"));
    let tags = &loaded.config.tags.0;
    assert_eq!(tags.get("nofailover"), Some(&json!(true)));
    assert_eq!(tags.get("nosync"), Some(&json!(false)));
    assert_eq!(tags.get("failover_priority"), Some(&json!(2)));
    assert_eq!(tags.get("rack"), Some(&json!("r1")), "other tags are kept as written");
}

#[test]
fn a_renewal_keeps_trying_until_the_lease_runs_out() {
    let timing = crate::config::dynamic::Timing::default();
    assert_eq!(timing.renewal_timeout(Duration::from_millis(2300)), Duration::from_millis(2300));
    assert_eq!(timing.renewal_timeout(Duration::ZERO), timing.retry_timeout, "no lease left: retry_timeout");
    assert_eq!(timing.renewal_timeout(Duration::from_secs(99)), timing.ttl, "never longer than ttl");
}

#[test]
fn check_refuses_a_required_watchdog_device_it_cannot_write_without_opening_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stand_in = dir.path().join("watchdog");
    std::fs::write(&stand_in, "").expect("create the stand-in");
    let problem = |patch: String| {
        let config = load_patched(&patch, &[]).unwrap_or_else(|e| panic!("{e}")).config;
        check_watchdog_device(&config).map(|e| e.to_string())
    };
    let required = |device: &Path| format!("watchdog: {{mode: required, device: {}}}", device.display());
    assert_eq!(problem(required(&stand_in)), None);
    assert_eq!(std::fs::read_to_string(&stand_in).expect("read back"), "", "never opened for writing");
    let missing = dir.path().join("missing");
    let text = problem(required(&missing)).unwrap_or_default();
    assert!(text.starts_with(&format!("watchdog.device: {} cannot be read (", missing.display())), "{text}");
    assert!(text.ends_with("; watchdog.mode required refuses to lead without it"), "{text}");
    let automatic = format!("watchdog: {{mode: automatic, device: {}}}", missing.display());
    assert_eq!(problem(automatic), None, "automatic leads without it");
}
