//! Table tests of the API's pure cores: the health verdict (every endpoint × role × tags × lag, and Patroni's
//! quirks), liveness, readiness, the `/patroni` wire JSON and `/metrics`; plus a few router rows driven
//! without a socket.
//!
//! Every row starts from one of a handful of named nodes and changes only what it is about.

use std::sync::OnceLock;
use std::time::Duration;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::Request;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use super::health::Query;
use super::types::PatroniStatus;
use super::*;
use crate::postgres::types::Lsn;
use crate::postgres::types::SystemId;
use crate::postgres::types::TimelineId;
use crate::status::ClusterSummary;
use crate::status::PgState;
use crate::status::ReplicationRow;
use crate::status::Role;
use crate::status::WalPosition;

const MB: u64 = 1 << 20;
/// The leader's `status.optime` in every row that has one.
const LEADER_LSN: u64 = 0x5000_0000;

/// One monotonic origin for the whole test binary, so rows can say "10 s after the origin".
fn at(secs: u64) -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now) + Duration::from_secs(secs)
}

/// The instant every verdict is evaluated at.
fn now() -> Instant {
    at(1000)
}

#[derive(Debug, Clone, Copy)]
enum Node {
    /// Running primary that holds the lease, with one streaming replica.
    PrimaryWithLease,
    /// Running primary whose lease expired; the cluster is unlocked.
    PrimaryWithoutLease,
    /// Streaming replica that has replayed everything.
    ReplicaStreaming,
    /// Streaming replica 64 MiB behind the leader's optime.
    ReplicaLagging,
    /// PostgreSQL stopped; nothing probed.
    Stopped,
    /// Leader of a standby cluster, holding the lease.
    StandbyLeader,
}

const ROLES: [Node; 5] =
    [Node::PrimaryWithLease, Node::PrimaryWithoutLease, Node::ReplicaStreaming, Node::ReplicaLagging, Node::Stopped];

fn cluster(leader: Option<&str>) -> Option<ClusterSummary> {
    Some(ClusterSummary {
        leader: leader.map(str::to_string),
        leader_optime: Some(Lsn(LEADER_LSN)),
        sync_standbys: Vec::new(),
        quorum_mode: false,
    })
}

fn replica_wal(replayed: u64) -> WalPosition {
    WalPosition::Replica {
        received: Some(Lsn(LEADER_LSN)),
        replayed: Some(Lsn(replayed)),
        replayed_timestamp: Some("2024-08-28 19:39:26.352526+00:00".into()),
        paused: false,
        latest_end: Some(Lsn(LEADER_LSN)),
    }
}

fn node(kind: Node) -> NodeStatus {
    let mut status = NodeStatus::initial("pg1", "batman", at(0));
    status.next_cycle_at = now();
    status.ttl = Duration::from_secs(30);
    status.dcs_last_seen = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_724_873_966));
    status.pg.state = PgState::Running;
    status.pg.server_version = Some(160004);
    status.pg.postmaster_start_time = Some("2024-08-28 19:39:26.352526+00:00".into());
    status.pg.timeline = Some(TimelineId(2));
    status.pg.system_identifier = Some(SystemId(7_710_784_912_710_558_201));
    status.cluster = cluster(Some("pg0"));
    match kind {
        Node::PrimaryWithLease | Node::PrimaryWithoutLease => {
            status.pg.role = Role::Primary;
            status.pg.wal = WalPosition::Primary { location: Lsn(LEADER_LSN) };
            status.pg.replication = vec![ReplicationRow {
                usename: "replicator".into(),
                application_name: "pg2".into(),
                client_addr: Some("10.0.0.2".into()),
                state: "streaming".into(),
                sync_state: "async".into(),
                sync_priority: 0,
                flush_lsn: Some(Lsn(LEADER_LSN)),
                replay_lsn: Some(Lsn(LEADER_LSN)),
            }];
            if matches!(kind, Node::PrimaryWithLease) {
                status.leader_until = Some(now() + Duration::from_secs(10));
                status.cluster = cluster(Some("pg1"));
            } else {
                status.cluster = cluster(None);
            }
        }
        Node::ReplicaStreaming | Node::ReplicaLagging => {
            status.pg.role = Role::Replica;
            status.pg.replication_state = Some("streaming".into());
            let replayed = if matches!(kind, Node::ReplicaLagging) { LEADER_LSN - 64 * MB } else { LEADER_LSN };
            status.pg.wal = replica_wal(replayed);
        }
        Node::Stopped => {
            status.pg = Default::default();
            status.pg.role = Role::Replica;
            status.pg.system_identifier = Some(SystemId(7_710_784_912_710_558_201));
        }
        Node::StandbyLeader => {
            status.pg.role = Role::StandbyLeader;
            status.pg.replication_state = Some("streaming".into());
            status.pg.wal = replica_wal(LEADER_LSN);
            status.leader_until = Some(now() + Duration::from_secs(10));
            status.cluster = cluster(Some("pg1"));
        }
    }
    status
}

fn with(kind: Node, change: impl FnOnce(&mut NodeStatus)) -> NodeStatus {
    let mut status = node(kind);
    change(&mut status);
    status
}

fn tagged(kind: Node, tags: serde_json::Value) -> NodeStatus {
    with(kind, |status| status.tags = tags.as_object().expect("tags are an object").clone())
}

/// `"/path?a=1&b=2"` split into the path and an undecoded query (rows need no percent-decoding).
fn request(request: &str) -> (&str, Query) {
    let (path, query) = request.split_once('?').unwrap_or((request, ""));
    let pairs = query.split('&').filter(|pair| !pair.is_empty()).map(|pair| pair.split_once('=').unwrap_or((pair, "")));
    (path, Query::from_pairs(pairs))
}

#[track_caller]
fn check(status: &NodeStatus, request_line: &str, expected: u16) {
    let (path, query) = request(request_line);
    assert_eq!(health::verdict(path, &query, status, now()), expected, "GET {request_line}");
}

/// One request against every role in [`ROLES`]: primary with lease, primary without, streaming replica,
/// lagging replica, stopped.
#[track_caller]
fn check_roles(request_line: &str, expected: [u16; 5]) {
    let (path, query) = request(request_line);
    let actual = ROLES.map(|kind| health::verdict(path, &query, &node(kind), now()));
    assert_eq!(actual, expected, "GET {request_line} for {ROLES:?}");
}

#[test]
fn leader_paths_follow_the_lease() {
    check_roles("/", [200, 503, 503, 503, 503]);
    check_roles("/primary", [200, 503, 503, 503, 503]);
    check_roles("/master", [200, 503, 503, 503, 503]);
    check_roles("/read-write", [200, 503, 503, 503, 503]);
    check_roles("/leader", [200, 503, 503, 503, 503]);
    check_roles("/standby-leader", [503, 503, 503, 503, 503]);
    check_roles("/standby_leader", [503, 503, 503, 503, 503]);
}

#[test]
fn replica_paths_need_a_running_replica() {
    check_roles("/replica", [503, 503, 200, 200, 503]);
    check_roles("/read-only", [200, 503, 200, 200, 503]);
    check_roles("/async", [503, 503, 200, 200, 503]);
    check_roles("/asynchronous", [503, 503, 200, 200, 503]);
    check_roles("/sync", [503, 503, 503, 503, 503]);
    check_roles("/quorum", [503, 503, 503, 503, 503]);
    check_roles("/read-only-sync", [200, 503, 503, 503, 503]);
    check_roles("/read-only-quorum", [200, 503, 503, 503, 503]);
    check_roles("/health", [200, 200, 200, 200, 503]);
}

#[test]
fn lag_limit_applies_to_every_replica_code_path() {
    check_roles("/replica?lag=16MB", [503, 503, 200, 503, 503]);
    check_roles("/replica?lag=128MB", [503, 503, 200, 200, 503]);
    check_roles("/read-only?lag=16MB", [200, 503, 200, 503, 503]);
    check_roles("/async?lag=16MB", [503, 503, 200, 503, 503]);
    check_roles("/health?lag=16MB", [200, 200, 200, 200, 503]);
    check_roles("/primary?lag=16MB", [200, 503, 503, 503, 503]);
}

#[test]
fn lag_limit_edges() {
    let lagging = node(Node::ReplicaLagging);
    check(&lagging, "/replica?lag=67108864", 200);
    check(&lagging, "/replica?lag=67108863", 503);
    check(&lagging, "/replica?lag=64MB", 200);
    check(&lagging, "/replica?lag=garbage", 200);
    check(&lagging, "/replica?lag=-1", 200);
    check(&lagging, "/replica?lag=", 200);
    check(&lagging, "/replica?lag=16MB&lag=1GB", 503);
    check(&node(Node::ReplicaStreaming), "/replica?lag=0", 200);
    // With no optime from the leader and no wal receiver position, nothing can be measured.
    let blind = with(Node::ReplicaLagging, |status| {
        status.cluster = cluster(Some("pg0"));
        if let Some(view) = status.cluster.as_mut() {
            view.leader_optime = None;
        }
        status.pg.wal = WalPosition::Replica {
            received: None,
            replayed: Some(Lsn(1)),
            replayed_timestamp: None,
            paused: false,
            latest_end: None,
        };
    });
    check(&blind, "/replica?lag=0", 200);
    // The wal receiver's latest_end_lsn counts when it is ahead of the leader's published optime.
    let receiver_ahead = with(Node::ReplicaStreaming, |status| {
        status.pg.wal = WalPosition::Replica {
            received: Some(Lsn(LEADER_LSN)),
            replayed: Some(Lsn(LEADER_LSN)),
            replayed_timestamp: None,
            paused: false,
            latest_end: Some(Lsn(LEADER_LSN + 32 * MB)),
        };
    });
    check(&receiver_ahead, "/replica?lag=16MB", 503);
    check(&receiver_ahead, "/replica?lag=32MB", 200);
}

#[test]
fn noloadbalance_hides_replicas_but_not_the_primary() {
    let replica = tagged(Node::ReplicaStreaming, json!({"noloadbalance": true}));
    check(&replica, "/replica", 503);
    check(&replica, "/read-only", 503);
    check(&replica, "/async", 503);
    check(&replica, "/health", 200);
    let primary = tagged(Node::PrimaryWithLease, json!({"noloadbalance": true}));
    check(&primary, "/primary", 200);
    check(&primary, "/read-only", 200);
    // Python truthiness: false and 0 are off, but the string "false" is on.
    check(&tagged(Node::ReplicaStreaming, json!({"noloadbalance": false})), "/replica", 200);
    check(&tagged(Node::ReplicaStreaming, json!({"noloadbalance": 0})), "/replica", 200);
    check(&tagged(Node::ReplicaStreaming, json!({"noloadbalance": "false"})), "/replica", 503);
    // nofailover never affects health endpoints.
    check(&tagged(Node::ReplicaStreaming, json!({"nofailover": true})), "/replica", 200);
}

#[test]
fn tag_filters_match_like_patroni() {
    let replica = tagged(Node::ReplicaStreaming, json!({"dc": "east", "nofailover": true, "weight": 1.4, "n": 3}));
    check(&replica, "/replica?tag_dc=east", 200);
    check(&replica, "/replica?tag_dc=East", 503);
    check(&replica, "/replica?tag_dc=west", 503);
    check(&replica, "/replica?tag_rack=r1", 503);
    check(&replica, "/replica?tag_dc=", 200);
    check(&replica, "/replica?tag_nofailover=true", 200);
    check(&replica, "/replica?tag_nofailover=True", 503);
    check(&replica, "/replica?tag_weight=1.4", 200);
    check(&replica, "/replica?tag_n=3", 200);
    check(&replica, "/replica?tag_dc=east&tag_n=4", 503);
    check(&replica, "/read-only?tag_dc=west", 503);
    check(&replica, "/health?tag_dc=west", 503);
    check(&replica, "/async?tag_dc=west", 503);
    check(&replica, "/foo?tag_dc=east", 503);
    check(&tagged(Node::ReplicaStreaming, json!({"dc": null})), "/replica?tag_dc=None", 503);
    check(&tagged(Node::ReplicaStreaming, json!({"zones": ["a", "b"]})), "/replica?tag_zones=['a', 'b']", 200);
}

#[test]
fn tag_filters_never_apply_to_leader_paths() {
    let primary = tagged(Node::PrimaryWithLease, json!({"dc": "east"}));
    check(&primary, "/primary?tag_dc=west", 200);
    check(&primary, "/leader?tag_rack=r1", 200);
    check(&primary, "/?tag_dc=west", 200);
    check(&primary, "/read-only?tag_dc=west", 503);
}

#[test]
fn sync_and_quorum_standbys() {
    let sync = with(Node::ReplicaStreaming, |status| status.sync_standby = true);
    check(&sync, "/sync", 200);
    check(&sync, "/synchronous", 200);
    check(&sync, "/read-only-sync", 200);
    check(&sync, "/read-only-synchronous", 200);
    check(&sync, "/async", 503);
    check(&sync, "/quorum", 503);
    check(&sync, "/read-only-quorum", 503);
    check(&sync, "/sync?tag_dc=east", 503);
    let lagging_sync = with(Node::ReplicaLagging, |status| status.sync_standby = true);
    check(&lagging_sync, "/sync", 200);
    check(&lagging_sync, "/sync?lag=16MB", 503);
    let quorum = with(Node::ReplicaStreaming, |status| status.quorum_standby = true);
    check(&quorum, "/quorum", 200);
    check(&quorum, "/read-only-quorum", 200);
    check(&quorum, "/sync", 503);
    check(&quorum, "/async", 503);
    check(&quorum, "/read-only-sync", 503);
    let quorum_noloadbalance = with(Node::ReplicaStreaming, |status| {
        status.quorum_standby = true;
        status.tags.insert("noloadbalance".into(), json!(true));
    });
    check(&quorum_noloadbalance, "/quorum", 503);
}

#[test]
fn stale_view_turns_sync_paths_to_503() {
    let stale = |kind| with(kind, |status| status.cluster = None);
    let sync = with(Node::ReplicaStreaming, |status| {
        status.cluster = None;
        status.sync_standby = true;
    });
    check(&sync, "/sync", 503);
    check(&sync, "/read-only-sync", 503);
    check(&stale(Node::ReplicaStreaming), "/async", 503);
    check(&stale(Node::ReplicaStreaming), "/quorum", 503);
    check(&stale(Node::PrimaryWithLease), "/read-only-quorum", 503);
    // The other paths do not need the view; lag comes from the wal receiver.
    check(&stale(Node::ReplicaStreaming), "/replica", 200);
    check(&stale(Node::ReplicaLagging), "/replica?lag=128MB", 200);
    check(&stale(Node::ReplicaStreaming), "/read-only", 200);
    // Leadership is the lease as this node sees it, not a live view.
    check(&stale(Node::PrimaryWithLease), "/primary", 200);
    check(&stale(Node::PrimaryWithLease), "/read-only", 200);
}

#[test]
fn stale_view_while_paused_answers_from_postgres_role() {
    let paused_stale = |kind| {
        with(kind, |status| {
            status.cluster = None;
            status.paused = true;
        })
    };
    let primary = paused_stale(Node::PrimaryWithoutLease);
    check(&primary, "/primary", 200);
    check(&primary, "/leader", 200);
    check(&primary, "/standby-leader", 503);
    check(&primary, "/read-only", 200);
    let replica = paused_stale(Node::ReplicaStreaming);
    check(&replica, "/primary", 503);
    check(&replica, "/leader", 503);
    check(&replica, "/replica", 200);
    let standby_leader = with(Node::StandbyLeader, |status| {
        status.cluster = None;
        status.paused = true;
        status.leader_until = None;
    });
    check(&standby_leader, "/standby-leader", 200);
    check(&standby_leader, "/leader", 200);
    check(&standby_leader, "/primary", 503);
    // Paused with a fresh view changes nothing: the lease decides.
    let paused = with(Node::PrimaryWithoutLease, |status| status.paused = true);
    check(&paused, "/primary", 503);
    check(&paused, "/leader", 503);
}

#[test]
fn stopping_primary_still_leads_but_is_no_primary_to_route_to() {
    // A switchover's demotion marks PostgreSQL `stopping` before it tells HAProxy: from then on no health check
    // takes the old primary back in, while it still holds the key until it releases it.
    let stopping = with(Node::PrimaryWithLease, |s| s.pg.state = PgState::Stopping);
    check(&stopping, "/primary", 503);
    check(&stopping, "/read-write", 503);
    check(&stopping, "/", 503);
    check(&stopping, "/leader", 200);
    check(&stopping, "/replica", 503);
}

#[test]
fn standby_leader_holds_the_lease_without_being_primary() {
    let standby_leader = node(Node::StandbyLeader);
    check(&standby_leader, "/standby-leader", 200);
    check(&standby_leader, "/standby_leader", 200);
    check(&standby_leader, "/leader", 200);
    check(&standby_leader, "/primary", 503);
    check(&standby_leader, "/", 503);
    check(&standby_leader, "/replica", 503);
    check(&standby_leader, "/read-only", 200);
    check(&standby_leader, "/read-only-sync", 200);
    check(&standby_leader, "/health", 200);
    let expired = with(Node::StandbyLeader, |status| status.leader_until = Some(now()));
    check(&expired, "/standby-leader", 503);
    check(&expired, "/leader", 503);
}

#[test]
fn paths_match_by_substring_in_patroni_order() {
    let primary = node(Node::PrimaryWithLease);
    let replica = node(Node::ReplicaStreaming);
    check(&primary, "/primary-or-replica", 200);
    check(&replica, "/primary-or-replica", 503);
    check(&primary, "/leader/primary", 200);
    check(&replica, "/replica/anything", 200);
    check(&replica, "/healthz", 200);
    check(&replica, "/read-only/", 200);
    check(&replica, "/readonly", 503);
    check(&replica, "/sync/", 503);
    check(&replica, "/foo", 503);
    check(&primary, "/foo", 503);
    check(&primary, "/liveness", 503);
    check(&primary, "/patroni", 503);
}

#[test]
fn liveness_allows_ttl_on_a_primary_and_twice_ttl_elsewhere() {
    #[track_caller]
    fn check_liveness(kind: Node, next_cycle_secs: u64, paused: bool, expected: u16) {
        let status = with(kind, |status| {
            status.next_cycle_at = at(next_cycle_secs);
            status.paused = paused;
        });
        assert_eq!(health::liveness(&status, now()), expected);
    }
    // ttl is 30 s and now is 1000 s.
    check_liveness(Node::PrimaryWithLease, 1005, false, 200);
    check_liveness(Node::PrimaryWithLease, 971, false, 200);
    check_liveness(Node::PrimaryWithLease, 970, false, 503);
    check_liveness(Node::PrimaryWithoutLease, 969, false, 503);
    check_liveness(Node::ReplicaStreaming, 969, false, 200);
    check_liveness(Node::ReplicaStreaming, 941, false, 200);
    check_liveness(Node::ReplicaStreaming, 940, false, 503);
    check_liveness(Node::Stopped, 941, false, 200);
    check_liveness(Node::PrimaryWithLease, 100, true, 200);
    // A primary that is not running is judged like a replica.
    let stopped_primary = with(Node::Stopped, |status| {
        status.pg.role = Role::Primary;
        status.next_cycle_at = at(950);
    });
    assert_eq!(health::liveness(&stopped_primary, now()), 200);
}

#[track_caller]
fn check_readiness(status: &NodeStatus, request_line: &str, expected: Option<&str>) {
    let (_, query) = request(request_line);
    assert_eq!(health::readiness_failure(&query, status, now()).as_deref(), expected, "GET {request_line}");
    let code = if expected.is_none() { 200 } else { 503 };
    assert_eq!(health::readiness(&query, status, now()), code);
}

#[test]
fn readiness_follows_patroni_4_1() {
    check_readiness(&node(Node::PrimaryWithLease), "/readiness", None);
    check_readiness(&node(Node::StandbyLeader), "/readiness", None);
    check_readiness(&node(Node::Stopped), "/readiness", Some("PostgreSQL is not running"));
    check_readiness(
        &node(Node::PrimaryWithoutLease),
        "/readiness",
        Some("PostgreSQL replication state is not streaming"),
    );
    let archive =
        with(Node::ReplicaStreaming, |status| status.pg.replication_state = Some("in archive recovery".into()));
    check_readiness(&archive, "/readiness", Some("PostgreSQL replication state is not streaming"));
    check_readiness(&node(Node::ReplicaStreaming), "/readiness", None);
    let lagging = node(Node::ReplicaLagging);
    let too_far = "Replication apply lag 67108864 exceeds maximum allowable 1048576";
    check_readiness(&lagging, "/readiness", Some(too_far));
    check_readiness(&lagging, "/readiness?lag=garbage", Some(too_far));
    check_readiness(&lagging, "/readiness?lag=64MB", None);
    check_readiness(&lagging, "/readiness?mode=write", None);
    check_readiness(&lagging, "/readiness?mode=apply&lag=1MB", Some(too_far));
    let write_lag = with(Node::ReplicaLagging, |status| status.maximum_lag_on_failover = 0);
    check_readiness(&write_lag, "/readiness?mode=write", None);
}

#[test]
fn readiness_without_a_view_relies_on_the_wal_receiver_or_failsafe() {
    let receiver_only = with(Node::ReplicaStreaming, |status| status.cluster = None);
    check_readiness(&receiver_only, "/readiness", None);
    let blind = with(Node::ReplicaStreaming, |status| {
        status.cluster = None;
        status.pg.wal = WalPosition::Replica {
            received: Some(Lsn(LEADER_LSN)),
            replayed: Some(Lsn(LEADER_LSN)),
            replayed_timestamp: None,
            paused: false,
            latest_end: None,
        };
    });
    check_readiness(&blind, "/readiness", Some("DCS is not accessible"));
}

#[track_caller]
fn check_json(status: &NodeStatus, expected: serde_json::Value) {
    let wire = PatroniStatus::from_status(status);
    let value = serde_json::to_value(&wire).expect("status serializes");
    assert_eq!(value, expected);
    let back: PatroniStatus = serde_json::from_value(value).expect("status deserializes");
    assert_eq!(back, wire);
}

fn patroni_info() -> serde_json::Value {
    json!({"version": "4.1.4", "raftgres_version": env!("CARGO_PKG_VERSION"), "scope": "batman", "name": "pg1"})
}

#[test]
fn status_json_of_a_primary() {
    let primary = with(Node::PrimaryWithLease, |status| {
        status.tags.insert("dc".into(), json!("east"));
        status.pg.pending_restart = true;
        status.pg.pending_restart_reason.insert("max_connections".into(), ("100".into(), "200".into()));
    });
    check_json(
        &primary,
        json!({
            "state": "running",
            "postmaster_start_time": "2024-08-28 19:39:26.352526+00:00",
            "role": "primary",
            "server_version": 160004,
            "xlog": {"location": LEADER_LSN},
            "timeline": 2,
            "replication": [{
                "usename": "replicator", "application_name": "pg2", "client_addr": "10.0.0.2",
                "state": "streaming", "sync_state": "async", "sync_priority": 0
            }],
            "dcs_last_seen": 1_724_873_966,
            "tags": {"dc": "east"},
            "database_system_identifier": "7710784912710558201",
            "pending_restart": true,
            "pending_restart_reason": {"max_connections": {"old_value": "100", "new_value": "200"}},
            "patroni": patroni_info(),
        }),
    );
    let text = serde_json::to_string(&PatroniStatus::from_status(&primary)).expect("status serializes");
    assert!(text.starts_with(r#"{"state":"running","postmaster_start_time":"#), "{text}");
    let info = concat!(
        r#""patroni":{"version":"4.1.4","raftgres_version":""#,
        env!("CARGO_PKG_VERSION"),
        r#"","scope":"batman","name":"pg1"}}"#
    );
    assert!(text.ends_with(info), "{text}");
}

#[test]
fn status_json_says_watchdog_failed_only_when_it_did() {
    let failed = with(Node::ReplicaStreaming, |status| status.watchdog_failed = true);
    let value = serde_json::to_value(PatroniStatus::from_status(&failed)).expect("status serializes");
    assert_eq!(value["watchdog_failed"], json!(true));
    let text = serde_json::to_string(&PatroniStatus::from_status(&failed)).expect("status serializes");
    assert!(text.contains(r#""watchdog_failed":true,"patroni":"#), "Patroni's place, before `patroni`: {text}");
    let value =
        serde_json::to_value(PatroniStatus::from_status(&node(Node::ReplicaStreaming))).expect("status serializes");
    assert!(value.get("watchdog_failed").is_none(), "absent unless true: {value}");
}

#[test]
fn status_json_of_a_sync_replica() {
    let replica = with(Node::ReplicaStreaming, |status| {
        status.sync_standby = true;
        status.paused = true;
    });
    check_json(
        &replica,
        json!({
            "state": "running",
            "postmaster_start_time": "2024-08-28 19:39:26.352526+00:00",
            "role": "replica",
            "server_version": 160004,
            "xlog": {
                "received_location": LEADER_LSN,
                "replayed_location": LEADER_LSN,
                "replayed_timestamp": "2024-08-28 19:39:26.352526+00:00",
                "paused": false
            },
            "sync_standby": true,
            "timeline": 2,
            "replication_state": "streaming",
            "pause": true,
            "dcs_last_seen": 1_724_873_966,
            "database_system_identifier": "7710784912710558201",
            "patroni": patroni_info(),
        }),
    );
}

#[test]
fn status_json_of_a_stopped_node_without_a_view() {
    let stopped = with(Node::Stopped, |status| {
        status.cluster = None;
        status.dcs_last_seen = None;
        status.sync_standby = true;
    });
    check_json(
        &stopped,
        json!({
            "state": "stopped",
            "role": "replica",
            "cluster_unlocked": true,
            "dcs_last_seen": 0,
            "database_system_identifier": "7710784912710558201",
            "patroni": patroni_info(),
        }),
    );
    let unlocked = PatroniStatus::from_status(&node(Node::PrimaryWithoutLease));
    assert!(unlocked.cluster_unlocked);
    let null_positions = with(Node::ReplicaStreaming, |status| {
        status.pg.wal = WalPosition::Replica {
            received: None,
            replayed: None,
            replayed_timestamp: None,
            paused: true,
            latest_end: None,
        };
    });
    let value = serde_json::to_value(PatroniStatus::from_status(&null_positions)).expect("status serializes");
    assert_eq!(
        value["xlog"],
        json!({"received_location": null, "replayed_location": null, "replayed_timestamp": null, "paused": true})
    );
}

/// The value of the sample `name` in rendered metrics text.
fn sample<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!(r#"{name}{{scope="batman",name="pg1"}} "#);
    text.lines().find_map(|line| line.strip_prefix(&prefix))
}

#[test]
fn metrics_carry_patroni_names_and_values() {
    let primary = metrics::render(&node(Node::PrimaryWithLease), now());
    let rows = [
        ("patroni_version", "040104"),
        ("patroni_postgres_running", "1"),
        ("patroni_postmaster_start_time", "1724873966.352526"),
        ("patroni_primary", "1"),
        ("patroni_xlog_location", "1342177280"),
        ("patroni_replica", "0"),
        ("patroni_xlog_replayed_location", "0"),
        ("patroni_postgres_streaming", "0"),
        ("patroni_postgres_server_version", "160004"),
        ("patroni_cluster_unlocked", "0"),
        ("patroni_postgres_timeline", "2"),
        ("patroni_dcs_last_seen", "1724873966"),
        ("patroni_is_paused", "0"),
        ("patroni_postgres_state", "5"),
        ("raftgres_lease_remaining_seconds", "10"),
    ];
    let build_info =
        format!(r#"raftgres_build_info{{version="{}",scope="batman",name="pg1"}} 1"#, env!("CARGO_PKG_VERSION"));
    assert!(primary.lines().any(|line| line == build_info), "raftgres' own version: {build_info}");
    for (name, value) in rows {
        assert_eq!(sample(&primary, name), Some(value), "{name}");
    }
    assert!(primary.contains("# TYPE patroni_xlog_location counter\n"));
    assert!(primary.contains(
        "# HELP patroni_postgres_state Numeric representation of Postgres state.\n# Values: 0=initdb, 1=initdb_failed,"
    ));
    let replica = metrics::render(&node(Node::ReplicaLagging), now());
    assert_eq!(sample(&replica, "patroni_xlog_replayed_location"), Some("1275068416"));
    assert_eq!(sample(&replica, "patroni_xlog_replayed_timestamp"), Some("1724873966.352526"));
    assert_eq!(sample(&replica, "patroni_postgres_streaming"), Some("1"));
    assert_eq!(sample(&replica, "raftgres_lease_remaining_seconds"), Some("0"));
    let stopped = metrics::render(&node(Node::Stopped), now());
    assert_eq!(sample(&stopped, "patroni_postgres_state"), Some("12"));
    assert_eq!(sample(&stopped, "patroni_postmaster_start_time"), Some("0"));
    assert_eq!(sample(&stopped, "patroni_postgres_streaming"), None);
}

#[test]
fn metrics_lines_are_well_formed() {
    let text = metrics::render(&tagged(Node::ReplicaStreaming, json!({"dc": "east"})), now());
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        assert!(series.ends_with(r#"scope="batman",name="pg1"}"#), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    let quoted = with(Node::Stopped, |status| status.name = "pg\"1".into());
    assert!(metrics::render(&quoted, now()).contains(r#"name="pg\"1""#));
}

#[test]
fn version_and_timestamps_render_like_patroni() {
    assert_eq!(metrics::padded_version("4.1.4"), "040104");
    assert_eq!(metrics::padded_version("0.1.0-rc1"), "000100");
    let rows = [
        ("1970-01-01 00:00:00+00", Some(0.0)),
        ("2024-08-28 19:39:26.352526+00:00", Some(1_724_873_966.352526)),
        ("2024-08-28 21:39:26.5+02", Some(1_724_873_966.5)),
        ("2024-08-28 14:09:26-0530", Some(1_724_873_966.0)),
        ("2024-08-28T19:39:26Z", Some(1_724_873_966.0)),
        ("2000-02-29 00:00:00+00", Some(951_782_400.0)),
        ("2024-08-28 19:39:26", Some(1_724_873_966.0)),
        ("2024-13-01 00:00:00+00", None),
        ("yesterday", None),
        ("2024-08-28 19:39+00", None),
    ];
    for (text, expected) in rows {
        assert_eq!(metrics::parse_pg_timestamp(text), expected, "{text}");
    }
}

/// Sends one request through the router (no socket); returns status, content type and body.
async fn call(status: NodeStatus, method: &str, uri: &str) -> (u16, String, String) {
    let (_tx, rx) = watch::channel(status);
    let req = Request::builder().method(method).uri(uri).body(Body::empty()).expect("static request parts are valid");
    let res = router(ApiState::new(rx)).oneshot(req).await.expect("router is infallible");
    let code = res.status().as_u16();
    let content_type =
        res.headers().get("content-type").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body reads");
    (code, content_type, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn router_dispatches_like_patroni() {
    let primary = || node(Node::PrimaryWithLease);
    let (code, content_type, body) = call(primary(), "GET", "/patroni/").await;
    assert_eq!((code, content_type.as_str()), (200, "application/json"));
    assert!(body.contains(r#""role":"primary""#), "{body}");
    let (code, _, body) = call(node(Node::Stopped), "GET", "/patroni").await;
    assert_eq!(code, 200, "{body}");
    let (code, _, body) = call(primary(), "GET", "/replica?lag=1kB").await;
    assert_eq!(code, 503);
    assert!(body.contains(r#""state":"running""#), "{body}");
    assert_eq!(call(primary(), "HEAD", "/liveness").await.0, 503);
    assert_eq!(call(primary(), "HEAD", "/patroni").await.0, 503);
    assert_eq!(call(primary(), "HEAD", "/").await, (200, String::new(), String::new()));
    assert_eq!(call(primary(), "OPTIONS", "/primary").await, (200, String::new(), String::new()));
    assert_eq!(call(primary(), "GET", "/liveness").await, (200, String::new(), String::new()));
    assert_eq!(call(primary(), "GET", "/readiness").await, (200, String::new(), String::new()));
    let (code, content_type, body) = call(primary(), "GET", "/metrics").await;
    assert_eq!((code, content_type.as_str()), (200, metrics::CONTENT_TYPE));
    assert!(body.contains("patroni_primary{"), "{body}");
}

#[tokio::test]
async fn router_answers_501_json_for_unknown_methods() {
    for (method, uri) in [("PUT", "/switchover"), ("POST", "/cluster"), ("DELETE", "/config"), ("POST", "/patroni")] {
        let (code, content_type, body) = call(node(Node::ReplicaStreaming), method, uri).await;
        assert_eq!((code, content_type.as_str()), (501, "application/json"), "{method} {uri}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("error body is JSON");
        assert_eq!(error, json!({"error": format!("unsupported method {method} {uri}")}));
    }
}

#[tokio::test]
async fn action_segments_without_a_get_handler_run_the_health_evaluator() {
    let (code, content_type, body) = call(node(Node::PrimaryWithLease), "GET", "/switchover").await;
    assert_eq!((code, content_type.as_str()), (503, "application/json"));
    assert!(body.contains(r#""role":"primary""#), "{body}");
    assert_eq!(call(node(Node::PrimaryWithLease), "HEAD", "/restart").await.0, 503);
}

#[tokio::test]
async fn cluster_endpoints_without_a_store_are_503_json() {
    for (method, uri) in [("GET", "/cluster"), ("GET", "/config"), ("POST", "/reload"), ("DELETE", "/switchover")] {
        let (code, content_type, _) = call(node(Node::ReplicaStreaming), method, uri).await;
        assert_eq!((code, content_type.as_str()), (503, "application/json"), "{method} {uri}");
    }
}

#[test]
fn history_rows_keep_patronis_five_elements_and_promotions_have_their_own_answer() {
    let rows = vec![
        json!([1, 100, "no recovery target specified", "2026-11-22T01:00:00+00:00", "node2",
               {"kind": "failover", "promoted_ms": 5}]),
        json!([2, 200, "no recovery target specified", "2026-11-22T02:00:00+00:00", "node1"]),
    ];
    let patroni = crate::api::cluster::patroni_history(&rows);
    assert!(patroni.iter().all(|row| row.as_array().map(Vec::len) == Some(5)), "{patroni:?}");
    assert_eq!(
        crate::api::cluster::promotions(&rows),
        vec![json!({"timeline": 1, "lsn": 100, "new_leader": "node2", "kind": "failover", "promoted_ms": 5})]
    );
}
