//! Patroni's wire JSON for the REST API: the status object of `GET /patroni` and of every JSON health check
//! (contract §1.2), built from a [`NodeStatus`] snapshot.
//!
//! Field names, nesting and key presence match Patroni exactly, because HAProxy scripts, patronictl and other
//! Patroni nodes parse them. These types also deserialize, so a node can read a peer's `GET /patroni`.
//! This module must not read clocks or PostgreSQL: it only converts.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Deserialize;
use serde::Serialize;

use crate::postgres::types::Lsn;
use crate::status::NodeStatus;
use crate::status::PgStatus;
use crate::status::WalPosition;

/// The status object (`GET /patroni`), keys in Patroni's order; optional keys appear only when meaningful.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatroniStatus {
    /// PostgreSQL state string (`running`, `stopped`, …, `unknown`).
    pub state: String,
    /// `pg_postmaster_start_time()` as `YYYY-MM-DD HH:MM:SS.ffffff+TZ`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postmaster_start_time: Option<String>,
    /// `primary`, `replica`, `standby_leader`, or an internal role when the probe failed.
    pub role: String,
    /// `server_version_num`, e.g. 160004.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<u32>,
    /// WAL positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xlog: Option<Xlog>,
    /// Listed in the `sync` key while `synchronous_mode` is on.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sync_standby: bool,
    /// Listed in the `sync` key while `synchronous_mode` is quorum.
    #[serde(default, skip_serializing_if = "is_false")]
    pub quorum_standby: bool,
    /// Current timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// Replicas only: `streaming` or `in archive recovery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    /// One entry per walsender; absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replication: Vec<Replication>,
    /// Maintenance mode.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pause: bool,
    /// No leader key, or no fresh view of the store.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cluster_unlocked: bool,
    /// Epoch seconds of the last successful read of the store, 0 if never.
    #[serde(default)]
    pub dcs_last_seen: u64,
    /// Effective tags; absent when empty.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub tags: serde_json::Map<String, serde_json::Value>,
    /// `Database system identifier`, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_system_identifier: Option<String>,
    /// A changed parameter needs a restart.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pending_restart: bool,
    /// Per parameter: the running and the configured value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending_restart_reason: BTreeMap<String, PendingRestartReason>,
    /// A restart scheduled through `POST /restart` (`{schedule, [restart_pending], [role], …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_restart: Option<serde_json::Map<String, serde_json::Value>>,
    /// raftgres' extension: a bootstrap, clone, start or rewind that keeps failing (action, attempts, error,
    /// retry_at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<crate::status::FailingAction>,
    /// `watchdog.mode` is required and the watchdog cannot be armed: no switchover or failover picks this node.
    #[serde(default, skip_serializing_if = "is_false")]
    pub watchdog_failed: bool,
    /// Who answers.
    pub patroni: PatroniInfo,
}

/// `xlog`: a primary's flush position, or a replica's receive/replay positions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Xlog {
    /// Primary: `{location}`.
    Primary {
        /// `pg_current_wal_flush_lsn()` in bytes.
        location: Lsn,
    },
    /// Replica: positions may be `null` when PostgreSQL has none yet.
    Replica {
        /// Written, else received, else replayed position.
        received_location: Option<Lsn>,
        /// `pg_last_wal_replay_lsn()`.
        replayed_location: Option<Lsn>,
        /// `pg_last_xact_replay_timestamp()` as text, `null` before the first replayed transaction.
        replayed_timestamp: Option<String>,
        /// `pg_is_wal_replay_paused()`.
        paused: bool,
    },
}

/// One walsender, as in `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// Connected role.
    pub usename: String,
    /// The standby's `application_name` (its member name).
    pub application_name: String,
    /// Client address, `null` for a Unix socket.
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// `async`, `sync`, `quorum`, `potential`.
    pub sync_state: String,
    /// Priority in `synchronous_standby_names`.
    pub sync_priority: i32,
}

/// Why a restart is pending for one parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRestartReason {
    /// The value PostgreSQL runs with.
    pub old_value: String,
    /// The configured value.
    pub new_value: String,
}

/// `patroni`: the answering program and member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatroniInfo {
    /// The Patroni version whose API raftgres implements (tools gate on it; see `status::PATRONI_VERSION`).
    pub version: String,
    /// raftgres' own version.
    pub raftgres_version: String,
    /// Cluster name.
    pub scope: String,
    /// Member name.
    pub name: String,
}

impl PatroniStatus {
    /// Builds the status object from the HA loop's latest snapshot.
    ///
    /// Like Patroni, the values its SQL query yields (start time, version, `xlog`, timeline, replication,
    /// sync flags) appear only when the last probe succeeded; otherwise only `state` and `role` describe
    /// PostgreSQL.
    pub fn from_status(status: &NodeStatus) -> PatroniStatus {
        let pg = &status.pg;
        let probed = probe_succeeded(pg);
        let cluster_unlocked = status.cluster.as_ref().is_none_or(|cluster| cluster.leader.is_none());
        PatroniStatus {
            state: pg.state.as_str().to_string(),
            postmaster_start_time: pg.postmaster_start_time.clone().filter(|_| probed),
            role: pg.role.as_str().to_string(),
            server_version: pg.server_version.filter(|_| probed),
            xlog: xlog(&pg.wal),
            sync_standby: probed && status.sync_standby,
            quorum_standby: probed && status.quorum_standby,
            timeline: pg.timeline.filter(|_| probed).map(|timeline| timeline.0),
            replication_state: pg.replication_state.clone().filter(|_| probed),
            replication: if probed { pg.replication.iter().map(Replication::from_row).collect() } else { Vec::new() },
            pause: status.paused,
            cluster_unlocked,
            dcs_last_seen: status.dcs_last_seen.map_or(0, epoch_seconds),
            tags: status.tags.clone(),
            database_system_identifier: pg.system_identifier.map(|id| id.to_string()),
            pending_restart: pg.pending_restart || !pg.pending_restart_reason.is_empty(),
            pending_restart_reason: pending_restart_reason(pg),
            scheduled_restart: None,
            failing: pg.failing.clone(),
            watchdog_failed: status.watchdog_failed,
            patroni: PatroniInfo {
                version: crate::status::PATRONI_VERSION.to_string(),
                raftgres_version: crate::status::RAFTGRES_VERSION.to_string(),
                scope: status.scope.clone(),
                name: status.name.clone(),
            },
        }
    }
}

impl Replication {
    fn from_row(row: &crate::status::ReplicationRow) -> Replication {
        Replication {
            usename: row.usename.clone(),
            application_name: row.application_name.clone(),
            client_addr: row.client_addr.clone(),
            state: row.state.clone(),
            sync_state: row.sync_state.clone(),
            sync_priority: row.sync_priority,
        }
    }
}

/// The probe that fills WAL positions also fills everything else Patroni reads with SQL.
fn probe_succeeded(pg: &PgStatus) -> bool {
    pg.wal != WalPosition::Unknown
}

fn xlog(wal: &WalPosition) -> Option<Xlog> {
    match wal {
        WalPosition::Unknown => None,
        WalPosition::Primary { location } => Some(Xlog::Primary { location: *location }),
        WalPosition::Replica { received, replayed, replayed_timestamp, paused, latest_end: _ } => Some(Xlog::Replica {
            received_location: *received,
            replayed_location: *replayed,
            replayed_timestamp: replayed_timestamp.clone(),
            paused: *paused,
        }),
    }
}

fn pending_restart_reason(pg: &PgStatus) -> BTreeMap<String, PendingRestartReason> {
    let reasons = pg.pending_restart_reason.iter();
    reasons
        .map(|(param, (old_value, new_value))| {
            let reason = PendingRestartReason { old_value: old_value.clone(), new_value: new_value.clone() };
            (param.clone(), reason)
        })
        .collect()
}

/// Whole seconds since the epoch; a time before 1970 (a badly set clock) shows as 0.
fn epoch_seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| since.as_secs())
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

/// The body of `GET /cluster` (Patroni's `cluster_as_json`, contract §1.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterJson {
    /// Every member, sorted by name.
    pub members: Vec<ClusterMember>,
    /// Cluster name.
    pub scope: String,
    /// Maintenance mode; present only when paused.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pause: bool,
    /// A switchover waiting for its time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_switchover: Option<ScheduledSwitchover>,
}

/// One member of `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// Member name.
    pub name: String,
    /// `leader`, `standby_leader`, `sync_standby`, `quorum_standby` or `replica`.
    pub role: String,
    /// Non-leaders: `replication_state` when published, else the PostgreSQL state.
    pub state: String,
    /// The member's REST API URL.
    pub api_url: String,
    /// PostgreSQL host from `conn_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// PostgreSQL port from `conn_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Current timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// A changed parameter needs a restart.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pending_restart: bool,
    /// Per parameter that needs a restart: `{"old_value", "new_value"}`, as the member key holds it.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub pending_restart_reason: serde_json::Map<String, serde_json::Value>,
    /// The member's scheduled restart (`{schedule, [restart_pending], [role], [postgres_version], [timeout]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_restart: Option<serde_json::Map<String, serde_json::Value>>,
    /// Member tags.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub tags: serde_json::Map<String, serde_json::Value>,
    /// raftgres' extension: the member's failing action, as its member key holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<crate::status::FailingAction>,
    /// Non-leaders: received position as `X/Y`, or `"unknown"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lsn: Option<serde_json::Value>,
    /// Bytes the received position trails the leader's optime, or `"unknown"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lag: Option<serde_json::Value>,
    /// Non-leaders: replayed position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<serde_json::Value>,
    /// Bytes the replayed position trails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lag: Option<serde_json::Value>,
    /// Non-leaders: the member's `xlog_location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<serde_json::Value>,
    /// Bytes `lsn` trails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<serde_json::Value>,
}

/// `scheduled_switchover` of `GET /cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledSwitchover {
    /// When, as stored (ISO 8601 with offset).
    pub at: String,
    /// The leader to demote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The member to promote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}
