//! The fuzz targets, shared by the short bounded run of the normal test suite (`tests/fuzz_short.rs`, stable
//! toolchain, a small mutation fuzzer) and the long cargo-fuzz runs (`fuzz/fuzz_targets/*.rs`, libFuzzer on
//! nightly). Each target takes arbitrary bytes and must neither panic nor hang; what it returns does not matter.
//!
//! A target feeds every parser an untrusted peer could reach with the same bytes, the way the server does:
//! the raft peer decoder (bodies of the peer port, and the replies a client decodes), the config loader (YAML
//! and environment overrides), the REST JSON bodies, the health-check query string and `scheduled_at`, and the
//! `postmaster.pid`, `/proc/<pid>/stat` and `pg_controldata` parsers.

#![allow(dead_code)] // Each fuzz binary uses one target.

use tokio::time::Instant;

use chrono::TimeZone;
use chrono::Utc;
use raftgres::api::actions::validate;
use raftgres::api::health;
use raftgres::api::reply;
use raftgres::config::EnvMap;
use raftgres::status::NodeStatus;
use serde_json::Value;

/// The names of the targets, as cargo-fuzz and `tests/fuzz_short.rs` know them.
pub const TARGETS: [&str; 6] = ["peer_message", "config_yaml", "rest_body", "query_params", "pidfile", "controldata"];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "peer_message" => peer_message(data),
        "config_yaml" => config_yaml(data),
        "rest_body" => rest_body(data),
        "query_params" => query_params(data),
        "pidfile" => pidfile(data),
        "controldata" => controldata(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

// ---------------------------------------------------------------------------------------------------------
// The raft peer decoder.

/// bincode encodes a struct as the tuple of its fields, so these mirror openraft's request types field by
/// field (openraft 0.9: `VoteRequest { vote, last_log_id }`, `AppendEntriesRequest { vote, prev_log_id,
/// leader_commit, entries }`, `InstallSnapshotRequest { vote, meta, offset, data, done }`) without naming
/// openraft, which only the raft crate depends on. The cargo-fuzz target decodes openraft's own types too.
type VoteMirror = (raft::typ::Vote, Option<raft::typ::LogId>);
type AppendMirror = (raft::typ::Vote, Option<raft::typ::LogId>, Option<raft::typ::LogId>, Vec<raft::typ::Entry>);
type SnapshotMirror = (raft::typ::Vote, raft::typ::SnapshotMeta, u64, Vec<u8>, bool);

/// Decodes `bytes` as `T` with the server's limit, and re-encodes what decoded.
fn decode_as<T: serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug>(bytes: &[u8]) {
    if let Ok(value) = raft::network::decode::<T, { raft::network::DECODE_LIMIT }>(bytes) {
        let _ = format!("{value:?}");
        // Whatever decoded must encode again: the server answers with values built from requests.
        if let Err(e) = raft::network::encode(&value) {
            panic!("a decoded peer message does not encode: {e}");
        }
    }
}

/// The first byte picks the message type; the rest is the body as the peer port receives it.
pub fn peer_message(data: &[u8]) {
    use raft::network::Wire;
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 12 {
        0 => decode_as::<Wire<AppendMirror>>(body),
        1 => decode_as::<Wire<VoteMirror>>(body),
        2 => decode_as::<Wire<SnapshotMirror>>(body),
        3 => decode_as::<Wire<raft::Envelope>>(body),
        4 => decode_as::<Wire<()>>(body),
        5 => decode_as::<Wire<raft::network::MembershipChange>>(body),
        // What a client decodes from a peer's reply.
        6 => decode_as::<raft::network::WriteReply>(body),
        7 => decode_as::<raft::network::ReadIndexReply>(body),
        8 => decode_as::<raft::network::MembershipReply>(body),
        9 => decode_as::<raft::network::PeerStatus>(body),
        10 => decode_as::<Result<VoteMirror, String>>(body),
        _ => decode_as::<Vec<raft::typ::Entry>>(body),
    }
}

/// Valid encodings of each peer message type, prefixed with their selector byte.
pub fn peer_seeds() -> Vec<Vec<u8>> {
    use raft::network::Wire;
    fn wire<T: serde::Serialize>(selector: u8, body: T) -> Vec<u8> {
        let wire = Wire { version: raft::network::PROTOCOL_VERSION, cluster_id: 0x5eed, from: 1, to: 2, body };
        let mut res = vec![selector];
        res.extend(raft::network::encode(&wire).unwrap_or_default());
        res
    }
    fn plain<T: serde::Serialize>(selector: u8, value: T) -> Vec<u8> {
        let mut res = vec![selector];
        res.extend(raft::network::encode(&value).unwrap_or_default());
        res
    }
    let envelope: Option<raft::Envelope> = serde_json::from_value(serde_json::json!({
        "issued_at_ms": 1, "command": {"Txn": {"guards": [], "ops": []}}
    }))
    .ok();
    let vote: raft::typ::Vote = serde_json::from_value(serde_json::json!({
        "leader_id": {"term": 3, "node_id": 1}, "committed": true
    }))
    .unwrap_or_default();
    let log_id: Option<raft::typ::LogId> = serde_json::from_value(serde_json::json!({
        "leader_id": {"term": 3, "node_id": 1}, "index": 7
    }))
    .ok();
    let mut seeds = vec![
        wire(0, (vote, log_id, log_id, Vec::<raft::typ::Entry>::new())),
        wire(1, (vote, log_id)),
        wire(4, ()),
        wire(5, raft::network::MembershipChange::RemoveNode { id: 3 }),
        plain(7, raft::network::ReadIndexReply::Ok(42)),
        plain(8, raft::network::MembershipReply::Err(raft::network::ForwardError::Refused("no".into()))),
        plain(
            9,
            raft::network::PeerStatus {
                node_id: 1,
                initialized: true,
                members: Default::default(),
                voters: vec![1, 2, 3],
                leader: Some(1),
                term: 3,
                last_log_index: 9,
            },
        ),
    ];
    if let Some(envelope) = envelope {
        seeds.push(wire(3, envelope));
    }
    seeds
}

// ---------------------------------------------------------------------------------------------------------
// The config loader.

/// A YAML document as `raftgres run -c` reads it; when the input holds a line `---env`, the lines after it are
/// `NAME=value` environment overrides (`PATRONI_*`, `RAFTGRES_*`), applied as at start-up.
pub fn config_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (yaml, env_text) = match text.split_once("\n---env\n") {
        Some((yaml, env_text)) => (yaml, env_text),
        None => (text.as_ref(), ""),
    };
    let env: EnvMap = env_text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    if let Ok(loaded) = raftgres::config::load_str(yaml, "fuzz.yml", &env) {
        let _ = format!("{:?}", loaded.config);
    }
    let _ = raftgres::config::load_from_env(&env);
    if let Ok(tree) = serde_yaml_ng::from_str::<Value>(yaml) {
        let _ = raftgres::config::load::secret_keys(&tree);
    }
}

/// Example configurations of the repository and a few broken ones.
pub fn config_seeds() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for dir in ["docs/examples", "tests/data/bad-configs", "tests/data/bad-environment"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        let mut files: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
        files.sort();
        seeds.extend(
            files.iter().filter(|f| f.extension().is_some_and(|e| e == "yml")).filter_map(|f| std::fs::read(f).ok()),
        );
    }
    seeds.push(b"name: n1\n---env\nRAFTGRES_RAFT_PEERS=[{id: 1}]\nPATRONI_RESTAPI_LISTEN=:8008\n".to_vec());
    seeds.push(b"{a: [1, {b: *x}]}".to_vec());
    seeds
}

// ---------------------------------------------------------------------------------------------------------
// The REST JSON bodies.

fn fixed_now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().unwrap_or_default()
}

/// A request body as `POST /switchover`, `/failover`, `/restart`, `/reinitialize` and `PATCH`/`PUT /config`
/// read it.
pub fn rest_body(data: &[u8]) {
    let now = fixed_now();
    for rule in [reply::BodyRule::Required, reply::BodyRule::Optional] {
        let Ok(body) = reply::parse_object(true, data, rule) else { continue };
        let req = validate::FailoverRequest::from_json(&body);
        for action in [validate::Action::Switchover, validate::Action::Failover] {
            for paused in [false, true] {
                let _ = validate::check_failover_request(action, &req, paused, now);
                let _ = validate::check_restart(&body, paused, now);
            }
        }
        for value in body.values() {
            let _ = validate::truthy(value);
            if let Some(text) = value.as_str() {
                let _ = validate::postgres_version_to_int(text);
                let _ = validate::parse_timestamp(text);
            }
        }
        let document = Value::Object(body);
        let _ = validate::candidate_status(Some(&document));
        let _ = raftgres::config::DynamicConfig::parse(document.clone(), "");
        let _ = raftgres::config::DynamicConfig::parse_lenient(document.clone());
        let merged = raftgres::config::merge_patch(&document, &document);
        let shown = raftgres::api::config::redact(&merged);
        let _ = raftgres::api::config::restore_redacted(&shown, Some(&document));
    }
}

/// Bodies of the protected endpoints.
pub fn rest_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"leader": "n1", "candidate": "n2", "scheduled_at": "2026-01-02T04:00:00+00:00"}"#,
        r#"{"candidate": "n2"}"#,
        r#"{"restart_pending": true, "role": "replica", "postgres_version": "15.4", "timeout": "30s", "schedule": "2026-02-01 10:00:00+02"}"#,
        r#"{"force": true, "from_leader": "yes"}"#,
        r#"{"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"max_connections": 200}, "recovery_conf": {"primary_conninfo": "host=a password='x\\'y'"}}, "pause": null}"#,
        r#"{"synchronous_mode": "quorum", "synchronous_node_count": 2, "tags": {"nofailover": "false", "failover_priority": "-1"}, "wal": {}}"#,
    ]
    .iter()
    .map(|seed| seed.as_bytes().to_vec())
    .collect()
}

// ---------------------------------------------------------------------------------------------------------
// The health-check query string and `scheduled_at`.

/// The health paths a load balancer probes.
const HEALTH_PATHS: [&str; 12] = [
    "/",
    "/primary",
    "/leader",
    "/replica",
    "/read-only",
    "/standby-leader",
    "/sync",
    "/async",
    "/health",
    "/read-write",
    "/quorum",
    "/nope",
];

/// A query string as the REST router decodes it (`?lag=1MB&tag_zone=a&mode=write`), judged against a replica
/// and a fresh node; the text is also tried as `scheduled_at`.
pub fn query_params(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut uri_text = String::from("/replica?");
    for byte in text.bytes() {
        // Keep what a query may hold as is (`%` escapes included), percent-encode the rest, as a client would.
        if byte.is_ascii_graphic() && byte != b'#' {
            uri_text.push(char::from(byte));
        } else {
            uri_text.push_str(&format!("%{byte:02X}"));
        }
    }
    let pairs = axum::http::Uri::try_from(uri_text.as_str())
        .ok()
        .and_then(|uri| axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).ok())
        .map(|query| query.0)
        .unwrap_or_default();
    let query = health::Query::from_pairs(pairs);
    let now = Instant::now();
    for status in statuses(now) {
        for path in HEALTH_PATHS {
            let code = health::verdict(path, &query, &status, now);
            assert!(code == 200 || code == 503, "{path}: {code}");
        }
        let _ = health::readiness(&query, &status, now);
        let _ = health::liveness(&status, now);
    }
    let _ = validate::parse_schedule(&text, "restart", fixed_now());
    if let Some(lag) = query.get("lag") {
        let _ = raftgres::postgres::types::parse_size(lag);
    }
}

fn statuses(now: Instant) -> [NodeStatus; 2] {
    let fresh = NodeStatus::initial("n1", "demo", now);
    let mut replica = NodeStatus::initial("n2", "demo", now);
    replica.tags.insert("zone".into(), Value::String("a".into()));
    replica.tags.insert("nofailover".into(), Value::Bool(true));
    replica.tags.insert("weight".into(), serde_json::json!(1.5));
    replica.cluster = Some(raftgres::status::ClusterSummary { leader: Some("n1".into()), ..Default::default() });
    [fresh, replica]
}

/// Query strings of the health checks.
pub fn query_seeds() -> Vec<Vec<u8>> {
    [
        "lag=1MB&mode=write",
        "lag=16777216&tag_zone=a&tag_nofailover=True",
        "tag_weight=1.5&lag=1.5GB",
        "lag=%31%30kB&lag=2",
        "2026-01-02T04:00:00+00:00",
        "2026-01-02 03:04:05.123456-07:30",
    ]
    .iter()
    .map(|seed| seed.as_bytes().to_vec())
    .collect()
}

// ---------------------------------------------------------------------------------------------------------
// `postmaster.pid`, `/proc/<pid>/stat` and `pg_controldata`.

/// A `postmaster.pid`, then the same bytes as `/proc/<pid>/stat` lines.
pub fn pidfile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(parsed) = raftgres::postgres::pidfile::parse_pidfile(&text) {
        let _ = format!("{parsed:?}");
    }
    let (pid_stat, proc_stat) = text.split_once("\n--\n").unwrap_or((text.as_ref(), "btime 1700000000\n"));
    for ticks in [0, 100] {
        let _ = raftgres::postgres::pidfile::process_start_time(pid_stat, proc_stat, ticks);
    }
}

/// PostgreSQL's pidfiles of `tests/data/postgres` and `/proc` lines.
pub fn pidfile_seeds() -> Vec<Vec<u8>> {
    let mut seeds = data_files("postmaster");
    seeds.push(
        b"4242 (postgres) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 12345 0\n--\nbtime 1700000000\n".to_vec(),
    );
    seeds.push(b"4242 (a) b) c) S 1 2 3\n--\ncpu 1\nbtime 17\n".to_vec());
    seeds
}

/// `pg_controldata` output.
pub fn controldata(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = raftgres::postgres::controldata::parse_controldata_map(&text);
    if let Ok(parsed) = raftgres::postgres::controldata::parse_controldata(&text) {
        let _ = format!("{parsed:?}");
    }
}

/// The `pg_controldata` outputs of `tests/data/postgres`.
pub fn controldata_seeds() -> Vec<Vec<u8>> {
    data_files("controldata")
}

fn data_files(prefix: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/postgres");
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<_> = entries.flatten().map(|entry| entry.path()).collect();
    files.sort();
    files
        .iter()
        .filter(|file| file.file_name().is_some_and(|name| name.to_string_lossy().starts_with(prefix)))
        .filter_map(|file| std::fs::read(file).ok())
        .collect()
}

/// The seeds of target `name`.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    match name {
        "peer_message" => peer_seeds(),
        "config_yaml" => config_seeds(),
        "rest_body" => rest_seeds(),
        "query_params" => query_seeds(),
        "pidfile" => pidfile_seeds(),
        "controldata" => controldata_seeds(),
        _ => Vec::new(),
    }
}
