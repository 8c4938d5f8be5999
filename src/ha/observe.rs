//! Observation: read the local PostgreSQL, the data directory, the lease and the cluster view
//! into the plain data `decide` takes; and render what we publish (member key, NodeStatus).
//!
//! I/O lives here (SQL probe, pg_controldata); the conversions at the bottom are pure.

use std::time::SystemTime;

use serde_json::Map;
use serde_json::Value;
use tokio::time::Instant;

use super::types::DataDir;
use super::types::Observation;
use super::types::PeerReport;
use super::types::PgProcess;
use crate::dcs::view::ClusterView;
use crate::dcs::view::MemberData;
use crate::dcs::view::StatusData;
use crate::postgres::controldata::ClusterState as PgClusterState;
use crate::postgres::supervisor::DataDirState;
use crate::postgres::supervisor::Supervisor;
use crate::postgres::types::Lsn;
use crate::status::ClusterSummary;
use crate::status::NodeStatus;
use crate::status::PgState;
use crate::status::PgStatus;
use crate::status::Role;
use crate::status::WalPosition;

/// Reads the data directory through pg_controldata.
pub async fn data_dir(pg: &Supervisor) -> DataDir {
    match pg.data_dir_state().await {
        DataDirState::Missing => DataDir::Empty,
        DataDirState::Invalid(why) => DataDir::Invalid(why),
        DataDirState::Initialized { controldata } => DataDir::Initialized {
            system_id: controldata.system_id,
            was_primary: matches!(
                controldata.state,
                PgClusterState::InProduction
                    | PgClusterState::ShutDown
                    | PgClusterState::ShuttingDown
                    | PgClusterState::InCrashRecovery
            ),
            timeline: controldata.checkpoint_timeline,
        },
    }
}

/// Probes the running PostgreSQL.
pub async fn pg_process(pg: &Supervisor) -> PgProcess {
    if !pg.is_running() {
        return PgProcess::Stopped;
    }
    match pg.probe().await {
        Ok(probe) => PgProcess::Running(Box::new(PgStatus::from(probe))),
        Err(e) => {
            tracing::debug!(error = %e, "postgres probe failed");
            PgProcess::Unresponsive
        }
    }
}

/// Peer reports from the members' keys (published every cycle by each member).
pub fn peers_from_view(view: &ClusterView, me: &str) -> Vec<PeerReport> {
    view.members
        .iter()
        .filter(|(name, _)| name.as_str() != me)
        .map(|(name, member)| PeerReport {
            name: name.clone(),
            member: member.clone(),
            reachable: member.state == "running",
            is_primary: member.role == "primary",
            wal: member.xlog_location.map(Lsn),
        })
        .collect()
}

/// Builds the observation (pure, from the pieces read above).
#[allow(clippy::too_many_arguments)]
pub fn observation(
    data_dir: DataDir,
    pg: PgProcess,
    holds_lease: bool,
    leader_key_is_mine: bool,
    dcs_ok: bool,
    action: Option<super::types::ActionKind>,
    peers: Vec<PeerReport>,
    following: Option<String>,
    rewind_failed: bool,
) -> Observation {
    Observation { data_dir, pg, holds_lease, leader_key_is_mine, dcs_ok, action, peers, following, rewind_failed }
}

/// What this member publishes under `members/<name>`.
pub struct MemberIdentity<'a> {
    /// `postgres://host:port/postgres`.
    pub conn_url: &'a str,
    /// `http://host:port/patroni`.
    pub api_url: &'a str,
    /// Published tags.
    pub tags: &'a Map<String, Value>,
    /// Raft node id.
    pub raft_node_id: u64,
    /// The restart scheduled through the REST API, if any.
    pub scheduled_restart: Option<Map<String, Value>>,
}

/// PURE: the member key from the latest PostgreSQL status.
pub fn member_data(id: &MemberIdentity<'_>, pg: &PgStatus, paused: bool) -> MemberData {
    let (xlog, receive, replay) = match &pg.wal {
        WalPosition::Primary { location } => (Some(location.0), None, None),
        WalPosition::Replica { received, replayed, .. } => {
            (pg.wal.furthest().map(|l| l.0), received.map(|l| l.0), replayed.map(|l| l.0))
        }
        WalPosition::Unknown => (None, None, None),
    };
    let tags = id.tags.iter().filter(|(_, v)| **v != Value::Bool(false)).map(|(k, v)| (k.clone(), v.clone())).collect();
    MemberData {
        conn_url: id.conn_url.to_string(),
        api_url: id.api_url.to_string(),
        state: pg.state.as_str().to_string(),
        role: pg.role.as_str().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        xlog_location: xlog,
        receive_lsn: receive,
        replay_lsn: replay,
        replication_state: pg.replication_state.clone(),
        timeline: pg.timeline.map(|t| t.0),
        tags,
        pending_restart: pg.pending_restart || !pg.pending_restart_reason.is_empty(),
        pending_restart_reason: pending_restart_reason(pg),
        scheduled_restart: id.scheduled_restart.clone(),
        pause: paused,
        raft_node_id: Some(id.raft_node_id),
    }
}

/// PURE: Patroni's `pending_restart_reason` of the member key, `{param: {old_value, new_value}}`.
fn pending_restart_reason(pg: &PgStatus) -> Map<String, Value> {
    let reasons = pg.pending_restart_reason.iter();
    reasons
        .map(|(param, (old_value, new_value))| {
            let diff = serde_json::json!({"old_value": old_value, "new_value": new_value});
            (param.clone(), diff)
        })
        .collect()
}

/// PURE: the `status` key a leader writes.
pub fn status_data(pg: &PgStatus, previous: Option<&StatusData>) -> Option<StatusData> {
    let WalPosition::Primary { location } = pg.wal else { return None };
    let mut status = previous.cloned().unwrap_or_default();
    status.optime = location.0;
    Some(status)
}

/// PURE: the PostgreSQL status to publish when the process is not answering.
pub fn status_without_probe(process: &PgProcess, data_dir: &DataDir, state: PgState) -> PgStatus {
    match process {
        PgProcess::Running(status) => (**status).clone(),
        _ => PgStatus {
            state,
            role: match data_dir {
                DataDir::Empty | DataDir::Invalid(_) => Role::Uninitialized,
                DataDir::Initialized { was_primary: true, .. } => Role::Demoted,
                DataDir::Initialized { .. } => Role::Replica,
            },
            system_identifier: match data_dir {
                DataDir::Initialized { system_id, .. } => Some(*system_id),
                _ => None,
            },
            ..PgStatus::default()
        },
    }
}

/// PURE: the cluster summary for the API, `None` when the view is not trusted.
pub fn cluster_summary(view: &ClusterView, dcs_ok: bool) -> Option<ClusterSummary> {
    dcs_ok.then(|| ClusterSummary {
        leader: view.leader.as_ref().map(|l| l.name.clone()),
        leader_optime: view.leader_optime(),
        sync_standbys: view.sync.as_ref().map(|s| s.value.members()).unwrap_or_default(),
        quorum_mode: false,
    })
}

/// Fields of NodeStatus the loop fills each cycle.
pub struct Published<'a> {
    /// PostgreSQL.
    pub pg: PgStatus,
    /// The view.
    pub view: &'a ClusterView,
    /// Store trusted.
    pub dcs_ok: bool,
    /// Lease end.
    pub leader_until: Option<Instant>,
    /// Fencing token.
    pub fencing_token: Option<u64>,
    /// Sentence.
    pub reason: String,
    /// Next cycle.
    pub next_cycle_at: Instant,
    /// Last successful store contact.
    pub dcs_last_seen: Option<SystemTime>,
}

/// PURE: updates the published status.
pub fn publish(status: &mut NodeStatus, p: Published<'_>) {
    status.sync_standby = p.view.sync.as_ref().is_some_and(|s| s.value.members().contains(&status.name));
    status.pg = p.pg;
    status.cluster = cluster_summary(p.view, p.dcs_ok);
    status.leader_until = p.leader_until;
    status.fencing_token = p.fencing_token;
    status.reason = p.reason;
    status.next_cycle_at = p.next_cycle_at;
    status.dcs_last_seen = p.dcs_last_seen;
}
