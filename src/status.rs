//! What this node knows about itself, published by the HA loop after every cycle through a
//! `watch` channel: the REST API's health endpoints, `/patroni` and `/metrics` answer from the
//! latest [`NodeStatus`] and never run SQL per request.
//!
//! Internal type: it does not derive `Serialize`; the API builds Patroni's wire types from it.

use std::collections::BTreeMap;
use std::time::Duration;
use std::time::SystemTime;

use tokio::time::Instant;

use crate::postgres::types::Lsn;
use crate::postgres::types::SystemId;
use crate::postgres::types::TimelineId;

/// The Patroni release whose REST API, keys and member data raftgres implements
/// (`../shared/reference/patroni-compat.md`): what `patroni.version`, the member key's `version` and the
/// `patroni_version` metric report, since monitoring tools (check_patroni, patronictl) gate on it.
pub const PATRONI_VERSION: &str = "4.1.4";

/// raftgres' own version (`patroni.raftgres_version`, `raftgres_build_info`).
pub const RAFTGRES_VERSION: &str = env!("CARGO_PKG_VERSION");

/// PostgreSQL state, with Patroni's strings and metric indexes (contract §1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PgState {
    /// `initializing new cluster` (0).
    InitializingNewCluster,
    /// `initdb failed` (1): the last bootstrap failed (it is retried after a pause).
    InitdbFailed,
    /// `custom bootstrap failed` (3): the last `bootstrap.method` run failed.
    CustomBootstrapFailed,
    /// `creating replica` (4).
    CreatingReplica,
    /// `running` (5).
    Running,
    /// `starting` (6).
    Starting,
    /// `start failed` (8): the last start (or rewind and start) failed.
    StartFailed,
    /// `stopping` (11): a planned demotion is stopping it (a switchover, a clean stop of the primary); health
    /// checks no longer count it as a running primary.
    Stopping,
    /// `stopped` (12).
    #[default]
    Stopped,
    /// `unknown` (-1): believed running but the probe failed.
    Unknown,
}

impl PgState {
    /// Patroni's state string.
    pub fn as_str(self) -> &'static str {
        match self {
            PgState::InitializingNewCluster => "initializing new cluster",
            PgState::InitdbFailed => "initdb failed",
            PgState::CustomBootstrapFailed => "custom bootstrap failed",
            PgState::CreatingReplica => "creating replica",
            PgState::Running => "running",
            PgState::Starting => "starting",
            PgState::StartFailed => "start failed",
            PgState::Stopping => "stopping",
            PgState::Stopped => "stopped",
            PgState::Unknown => "unknown",
        }
    }

    /// Patroni's numeric index for `patroni_postgres_state`.
    pub fn index(self) -> i32 {
        match self {
            PgState::InitializingNewCluster => 0,
            PgState::InitdbFailed => 1,
            PgState::CustomBootstrapFailed => 3,
            PgState::CreatingReplica => 4,
            PgState::Running => 5,
            PgState::Starting => 6,
            PgState::StartFailed => 8,
            PgState::Stopping => 11,
            PgState::Stopped => 12,
            PgState::Unknown => -1,
        }
    }
}

/// The role this node reports (Patroni's member `role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Running as a writable primary.
    Primary,
    /// Running in recovery, following a primary.
    Replica,
    /// Leader of a standby cluster.
    StandbyLeader,
    /// Just demoted.
    Demoted,
    /// No data directory yet.
    #[default]
    Uninitialized,
    /// Promotion in progress.
    Promoted,
}

impl Role {
    /// The role a Patroni role string names (`master` is Patroni 3's name of `primary`), `None` for a
    /// word raftgres does not define.
    pub fn from_patroni(text: &str) -> Option<Role> {
        let role = match text {
            "primary" | "master" => Role::Primary,
            "replica" => Role::Replica,
            "standby_leader" => Role::StandbyLeader,
            "demoted" => Role::Demoted,
            "uninitialized" => Role::Uninitialized,
            "promoted" => Role::Promoted,
            _ => return None,
        };
        Some(role)
    }

    /// Patroni's role string.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::StandbyLeader => "standby_leader",
            Role::Demoted => "demoted",
            Role::Uninitialized => "uninitialized",
            Role::Promoted => "promoted",
        }
    }
}

/// WAL positions as PostgreSQL reports them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WalPosition {
    /// Nothing known (PostgreSQL down or probe failed).
    #[default]
    Unknown,
    /// A primary's flush position.
    Primary {
        /// `pg_current_wal_flush_lsn()`.
        location: Lsn,
    },
    /// A replica's positions.
    Replica {
        /// Written/received position (`pg_stat_wal_receiver.written_lsn`, else receive, else replay).
        received: Option<Lsn>,
        /// `pg_last_wal_replay_lsn()`.
        replayed: Option<Lsn>,
        /// `pg_last_xact_replay_timestamp()` rendered as text.
        replayed_timestamp: Option<String>,
        /// `pg_is_wal_replay_paused()`.
        paused: bool,
        /// `pg_stat_wal_receiver.latest_end_lsn` (internal, for lag math).
        latest_end: Option<Lsn>,
    },
}

impl WalPosition {
    /// The furthest position this node has (primary: flush; replica: max(received, replayed)).
    pub fn furthest(&self) -> Option<Lsn> {
        match self {
            WalPosition::Unknown => None,
            WalPosition::Primary { location } => Some(*location),
            WalPosition::Replica { received, replayed, .. } => (*received).max(*replayed),
        }
    }
}

/// One row of `pg_stat_replication` on a primary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicationRow {
    /// Connected role.
    pub usename: String,
    /// `application_name` (raftgres sets it to the member name).
    pub application_name: String,
    /// Client address.
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// `async`, `sync`, `quorum`, `potential`.
    pub sync_state: String,
    /// Priority in `synchronous_standby_names`.
    pub sync_priority: i32,
    /// Flushed position on the standby.
    pub flush_lsn: Option<Lsn>,
    /// Replayed position on the standby.
    pub replay_lsn: Option<Lsn>,
}

/// What the local PostgreSQL looked like at the last probe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PgStatus {
    /// State string source.
    pub state: PgState,
    /// Role from `pg_is_in_recovery()` (or the internal role when the probe failed).
    pub role: Role,
    /// `server_version_num`.
    pub server_version: Option<u32>,
    /// `pg_postmaster_start_time()` as `YYYY-MM-DD HH:MM:SS.ffffff+TZ`.
    pub postmaster_start_time: Option<String>,
    /// Current timeline.
    pub timeline: Option<TimelineId>,
    /// System identifier from pg_control.
    pub system_identifier: Option<SystemId>,
    /// WAL positions.
    pub wal: WalPosition,
    /// Replicas only: `streaming` or `in archive recovery`.
    pub replication_state: Option<String>,
    /// Primary only: walsenders.
    pub replication: Vec<ReplicationRow>,
    /// A changed parameter needs a restart.
    pub pending_restart: bool,
    /// Per parameter: (old value, new value).
    pub pending_restart_reason: BTreeMap<String, (String, String)>,
    /// A long action on PostgreSQL that keeps failing (raftgres' extension of `GET /patroni` and the member key).
    pub failing: Option<FailingAction>,
}

/// A bootstrap, clone, start or rewind that failed and waits for its retry (see `ha::retry`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailingAction {
    /// Patroni's word for the action (`bootstrap`, `clone from leader`, `starting`, `pg_rewind`).
    pub action: String,
    /// Failures in a row.
    pub attempts: u32,
    /// The last error, with its causes.
    pub error: String,
    /// When it is tried again.
    #[serde(with = "crate::status::rfc3339")]
    pub retry_at: SystemTime,
}

/// `SystemTime` as an RFC 3339 string with a `+00:00` offset, as Patroni writes times.
pub mod rfc3339 {
    use std::time::SystemTime;

    /// Serializes `time`.
    pub fn serialize<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        let time: chrono::DateTime<chrono::Utc> = (*time).into();
        serializer.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Millis, false))
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text: String = serde::Deserialize::deserialize(deserializer)?;
        chrono::DateTime::parse_from_rfc3339(&text).map(SystemTime::from).map_err(serde::de::Error::custom)
    }
}

/// One of the node's directories whose filesystem `/metrics` reports (the `directory` label of
/// `raftgres_filesystem_avail_bytes` and `raftgres_filesystem_size_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeDir {
    /// `postgresql.data_dir`.
    Data,
    /// `pg_wal` under the data directory, reported only when it resolves (through a symlink, as
    /// `initdb --waldir` makes it) to another filesystem than the data directory's.
    Wal,
    /// `raft.data_dir`, the Raft store.
    Raft,
}

impl NodeDir {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeDir::Data => "data",
            NodeDir::Wal => "wal",
            NodeDir::Raft => "raft",
        }
    }
}

/// Space on the filesystem holding one of the node's directories, from `statvfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesystemUsage {
    /// Which directory.
    pub dir: NodeDir,
    /// Bytes an unprivileged user can still write (`f_bavail × f_frsize`): PostgreSQL does not run as root, so
    /// the blocks reserved for root are not its to use.
    pub avail_bytes: u64,
    /// Size of the filesystem (`f_blocks × f_frsize`).
    pub size_bytes: u64,
}

/// What the cluster view (replicated store) told us at the last cycle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterSummary {
    /// Name in the `leader` key.
    pub leader: Option<String>,
    /// `status.optime` written by the leader.
    pub leader_optime: Option<Lsn>,
    /// Members named in the `sync` key.
    pub sync_standbys: Vec<String>,
    /// `synchronous_mode` is `quorum`.
    pub quorum_mode: bool,
}

/// Everything the API needs to answer about this node without touching PostgreSQL.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Member name.
    pub name: String,
    /// Cluster name.
    pub scope: String,
    /// Local PostgreSQL.
    pub pg: PgStatus,
    /// This node holds the leader lease until then (own monotonic clock); the API's "leader".
    pub leader_until: Option<Instant>,
    /// Create revision of the leader key while we hold it.
    pub fencing_token: Option<u64>,
    /// The cluster view, `None` when it is older than `ttl` (stale or unreachable store).
    pub cluster: Option<ClusterSummary>,
    /// Wall time of the last successful read of the store.
    pub dcs_last_seen: Option<SystemTime>,
    /// Maintenance mode.
    pub paused: bool,
    /// Effective tags (YAML/JSON map).
    pub tags: serde_json::Map<String, serde_json::Value>,
    /// Named in the `sync` key while `synchronous_mode` is on.
    pub sync_standby: bool,
    /// Named in the `sync` key while `synchronous_mode` is quorum.
    pub quorum_standby: bool,
    /// The last HA decision's sentence.
    pub reason: String,
    /// When the next HA cycle is due.
    pub next_cycle_at: Instant,
    /// Current `ttl`.
    pub ttl: Duration,
    /// Current `loop_wait`.
    pub loop_wait: Duration,
    /// Current `maximum_lag_on_failover`, bytes.
    pub maximum_lag_on_failover: u64,
    /// `watchdog.mode` is required and the watchdog cannot be armed: this node never becomes the leader.
    pub watchdog_failed: bool,
    /// The filesystems of the data, WAL and Raft directories as last sampled by the HA loop (`ha::disk`); a
    /// directory whose `statvfs` failed, or has not answered yet, is missing.
    pub filesystems: Vec<FilesystemUsage>,
}

impl NodeStatus {
    /// A status for a node that has not run a cycle yet.
    pub fn initial(name: &str, scope: &str, now: Instant) -> Self {
        NodeStatus {
            name: name.to_string(),
            scope: scope.to_string(),
            pg: PgStatus::default(),
            leader_until: None,
            fencing_token: None,
            cluster: None,
            dcs_last_seen: None,
            paused: false,
            tags: serde_json::Map::new(),
            sync_standby: false,
            quorum_standby: false,
            reason: "starting".into(),
            next_cycle_at: now,
            ttl: Duration::from_secs(5),
            loop_wait: Duration::from_secs(1),
            maximum_lag_on_failover: 1 << 20,
            watchdog_failed: false,
            filesystems: Vec::new(),
        }
    }

    /// True while this node holds a valid leader lease at `now`.
    pub fn is_leader(&self, now: Instant) -> bool {
        self.leader_until.is_some_and(|until| now < until)
    }
}
