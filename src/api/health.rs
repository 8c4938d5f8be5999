//! Patroni's health-check verdicts (contract §1.3 and §1.4): which HTTP code `/primary`, `/replica?lag=`,
//! `/read-only`, `/sync`, `/liveness`, `/readiness` and friends answer for one [`NodeStatus`] snapshot.
//!
//! PURE: no async, no I/O, no clock reads; `now` is a parameter. `tokio::time::Instant` appears only because it is
//! the value type `NodeStatus` carries (it follows `tokio::time::pause()` in tests); nothing here needs a runtime.
//! It must not look at anything but the snapshot and the query, so a probe never waits on PostgreSQL or raft.

use std::collections::HashSet;

use tokio::time::Instant;

use crate::postgres::types::parse_size;
use crate::status::NodeStatus;
use crate::status::PgState;
use crate::status::Role;
use crate::status::WalPosition;

/// A request's query string with the semantics of Python's `parse_qs`, which Patroni uses.
///
/// Parameters with an empty value are dropped (`?lag=` means no `lag`), and a lookup sees the first value
/// given for a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Distinct keys in order of first appearance, each with its first non-empty value.
    params: Vec<(String, String)>,
}

impl Query {
    /// Builds a query from already percent-decoded `(key, value)` pairs in request order.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Query {
        let mut params: Vec<(String, String)> = Vec::new();
        // A set, not a scan of `params`: a probe URL with thousands of keys must stay cheap.
        let mut seen: HashSet<String> = HashSet::new();
        for (key, value) in pairs {
            let (key, value) = (key.into(), value.into());
            if !value.is_empty() && seen.insert(key.clone()) {
                params.push((key, value));
            }
        }
        Query { params }
    }

    /// The first value of `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    /// `tag_<key>=<value>` filters as `(key, value)`.
    fn tag_filters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().filter_map(|(name, value)| Some((name.strip_prefix("tag_")?, value.as_str())))
    }
}

/// The code Patroni's generic GET evaluator answers for `path` (query string already split off).
///
/// `GET`, `HEAD` and `OPTIONS` on any path without a dedicated handler come here; an unknown path is 503.
pub fn verdict(path: &str, query: &Query, status: &NodeStatus, now: Instant) -> u16 {
    let path = if path == "/" { "/primary" } else { path };
    let codes = RoleCodes::new(query, status, now);
    let (code, check_tags) = dispatch(path, &codes, status);
    if check_tags && code == 200 && !tags_match(query, &status.tags) {
        return 503;
    }
    code
}

/// `GET /liveness`: is the HA loop still turning (§1.4)?
///
/// 200 when paused (a stuck loop is fine in maintenance mode) or when the next cycle is due less than a
/// threshold ago; the threshold is `ttl` on a running primary, whose lease expires at about the same time,
/// and `2*ttl` elsewhere, where a slow loop hurts less.
pub fn liveness(status: &NodeStatus, now: Instant) -> u16 {
    let is_running_primary = status.pg.role == Role::Primary && status.pg.state == PgState::Running;
    let threshold = if is_running_primary { status.ttl } else { status.ttl.saturating_mul(2) };
    // An overflowing deadline is "forever", which can only mean the loop is not late.
    let on_time = status.next_cycle_at.checked_add(threshold).is_none_or(|deadline| deadline > now);
    if status.paused || on_time {
        200
    } else {
        503
    }
}

/// `GET /readiness?lag=<max>&mode=apply|write` (Patroni 4.1 rules, §1.4).
pub fn readiness(query: &Query, status: &NodeStatus, now: Instant) -> u16 {
    match readiness_failure(query, status, now) {
        None => 200,
        Some(_) => 503,
    }
}

/// Why this node is not ready, in Patroni's words, or `None` when it is; the handler logs it at DEBUG.
pub fn readiness_failure(query: &Query, status: &NodeStatus, now: Instant) -> Option<String> {
    if status.is_leader(now) {
        // A node only becomes leader after bootstrap or once up as a standby, so it is ready.
        return None;
    }
    if status.pg.state != PgState::Running {
        return Some("PostgreSQL is not running".into());
    }
    if status.pg.replication_state.as_deref() != Some("streaming") {
        return Some("PostgreSQL replication state is not streaming".into());
    }
    let latest_end = latest_end_lsn(&status.pg.wal);
    if status.cluster.is_none() && latest_end == 0 {
        return Some("DCS is not accessible".into());
    }
    let mode_is_write = query.get("mode") == Some("write");
    let location = match &status.pg.wal {
        WalPosition::Replica { received, .. } if mode_is_write => received.map_or(0, |lsn| lsn.as_u64()),
        WalPosition::Replica { replayed, .. } => replayed.map_or(0, |lsn| lsn.as_u64()),
        _ => 0,
    };
    let lag = leader_optime(status).saturating_sub(location);
    let max_lag = query.get("lag").and_then(parse_size).unwrap_or(status.maximum_lag_on_failover);
    if lag > max_lag {
        let mode = if mode_is_write { "write" } else { "apply" };
        return Some(format!("Replication {mode} lag {lag} exceeds maximum allowable {max_lag}"));
    }
    None
}

/// The four codes Patroni computes before looking at the path (§1.3 steps 2–5).
#[derive(Debug, Clone, Copy)]
struct RoleCodes {
    replica: u16,
    leader: u16,
    primary: u16,
    standby_leader: u16,
}

impl RoleCodes {
    fn new(query: &Query, status: &NodeStatus, now: Instant) -> RoleCodes {
        let pg = &status.pg;
        let replica_ok = !is_truthy(status.tags.get("noloadbalance"))
            && !is_lagging(query, status)
            && pg.role == Role::Replica
            && pg.state == PgState::Running;
        let replica = code(replica_ok);
        if status.cluster.is_none() && status.paused {
            // The store is unreachable and nobody may fail over: answer from PostgreSQL's own role.
            return RoleCodes {
                replica,
                leader: code(matches!(pg.role, Role::Primary | Role::StandbyLeader)),
                primary: code(pg.role == Role::Primary),
                standby_leader: code(pg.role == Role::StandbyLeader),
            };
        }
        if !status.is_leader(now) {
            return RoleCodes { replica, leader: 503, primary: 503, standby_leader: 503 };
        }
        if is_standby_cluster(status) {
            let standby_leader = code(matches!(pg.role, Role::Replica | Role::StandbyLeader));
            return RoleCodes { replica: 503, leader: 200, primary: 503, standby_leader };
        }
        // A switchover's demotion has begun (PostgreSQL is being stopped and refuses new connections): the holder
        // still leads until it releases the key, but is no longer a primary to route writes to. Patroni answers
        // 200 until the key is gone; raftgres takes the primary out of HAProxy at once (docs/rest-api.md).
        let primary = code(pg.state != PgState::Stopping);
        RoleCodes { replica, leader: 200, primary, standby_leader: 503 }
    }
}

fn code(ok: bool) -> u16 {
    if ok {
        200
    } else {
        503
    }
}

/// Whether this node leads a standby cluster.
///
/// `NodeStatus` does not carry the `standby_cluster` setting yet, so it is inferred from the role the HA loop
/// reports: only the leader of a standby cluster reports `standby_leader`.
/// Patroni also treats a lease holder still reporting `replica` in a standby cluster as a standby leader;
/// that case needs the setting itself.
fn is_standby_cluster(status: &NodeStatus) -> bool {
    status.pg.role == Role::StandbyLeader
}

/// Picks the code for `path` by substring, first hit wins, in Patroni's order; the bool says whether
/// `tag_*` filters apply.
fn dispatch(path: &str, codes: &RoleCodes, status: &NodeStatus) -> (u16, bool) {
    let has = |needle: &str| path.contains(needle);
    let leadership_ok = codes.primary == 200 || codes.standby_leader == 200;
    if has("standby_leader") || has("standby-leader") {
        return (codes.standby_leader, false);
    }
    if has("leader") {
        return (codes.leader, false);
    }
    if has("master") || has("primary") || has("read-write") {
        return (codes.primary, false);
    }
    if has("replica") {
        return (codes.replica, true);
    }
    if has("read-only") && !has("sync") && !has("quorum") {
        return (if leadership_ok { 200 } else { codes.replica }, true);
    }
    if has("health") {
        return (code(status.pg.state == PgState::Running), true);
    }
    if status.cluster.is_none() {
        // Without a fresh view of the `sync` key, sync membership is unknown.
        return (503, true);
    }
    let (is_sync, is_quorum) = (status.sync_standby, status.quorum_standby);
    let res = match path {
        "/sync" | "/synchronous" if is_sync => codes.replica,
        "/quorum" if is_quorum => codes.replica,
        "/async" | "/asynchronous" if !is_sync && !is_quorum => codes.replica,
        "/read-only-quorum" if leadership_ok => 200,
        "/read-only-quorum" if is_quorum => codes.replica,
        "/read-only-sync" | "/read-only-synchronous" if leadership_ok => 200,
        "/read-only-sync" | "/read-only-synchronous" if is_sync => codes.replica,
        _ => 503,
    };
    (res, true)
}

/// `max(cluster status.optime, latest_end_lsn)` in bytes, 0 when neither is known.
fn leader_optime(status: &NodeStatus) -> u64 {
    let from_cluster = status.cluster.as_ref().and_then(|cluster| cluster.leader_optime).map_or(0, |lsn| lsn.as_u64());
    from_cluster.max(latest_end_lsn(&status.pg.wal))
}

fn latest_end_lsn(wal: &WalPosition) -> u64 {
    match wal {
        WalPosition::Replica { latest_end, .. } => latest_end.map_or(0, |lsn| lsn.as_u64()),
        _ => 0,
    }
}

/// Is the leader's known position more than `?lag=` bytes ahead of what this node replayed?
///
/// An absent or unparsable `lag` means unlimited; a node that replayed nothing counts from 0, so a primary
/// "lags" too, which does not matter because its replica code is 503 anyway.
fn is_lagging(query: &Query, status: &NodeStatus) -> bool {
    let max_lag = query.get("lag").and_then(parse_size).unwrap_or(u64::MAX);
    let replayed = match &status.pg.wal {
        WalPosition::Replica { replayed, .. } => replayed.map_or(0, |lsn| lsn.as_u64()),
        _ => 0,
    };
    let leader_optime = leader_optime(status);
    leader_optime > 0 && leader_optime > replayed.saturating_add(max_lag)
}

/// Every `tag_<key>=<value>` filter matches the node's tags, compared as Patroni does.
fn tags_match(query: &Query, tags: &serde_json::Map<String, serde_json::Value>) -> bool {
    query.tag_filters().all(|(key, wanted)| match tags.get(key) {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::String(value)) => value == wanted,
        Some(other) => python_str(other).to_lowercase() == wanted,
    })
}

/// Python's truthiness of a tag value: `bool(tags.get('noloadbalance', False))`.
fn is_truthy(value: Option<&serde_json::Value>) -> bool {
    use serde_json::Value;
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(Value::Number(number)) => number.as_f64().is_some_and(|n| n != 0.0),
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(Value::Object(map)) => !map.is_empty(),
    }
}

/// Python's `str()` of a JSON value, so `tag_nofailover=true` matches a boolean tag as in Patroni.
fn python_str(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::String(text) => text.clone(),
        other => python_repr(other),
    }
}

fn python_repr(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => format!("'{text}'"),
        Value::Array(items) => format!("[{}]", items.iter().map(python_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => {
            let entries: Vec<String> =
                map.iter().map(|(key, item)| format!("'{key}': {}", python_repr(item))).collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}
