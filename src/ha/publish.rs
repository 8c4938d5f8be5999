//! What a node publishes: its member key (`members/<name>`), the leader's `status` key, and its
//! `NodeStatus` (what the REST API answers from), rendered PURE from one cycle's snapshot; and the
//! loop's two writers of them, [`HaLoop::publish`] (once per cycle) and [`HaLoop::touch_member`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Map;
use serde_json::Value;
use tokio::time::Instant;
use tracing::warn;

use super::types::ActionKind;
use super::types::DataDir;
use super::types::Observation;
use super::types::PgProcess;
use super::HaLoop;
use crate::config::dynamic::SynchronousMode;
use crate::dcs::view::ClusterView;
use crate::dcs::view::MemberData;
use crate::dcs::view::StatusData;
use crate::status::ClusterSummary;
use crate::status::NodeStatus;
use crate::status::PgState;
use crate::status::PgStatus;
use crate::status::Role;
use crate::status::WalPosition;

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
        version: crate::status::PATRONI_VERSION.to_string(),
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
        failing: pg.failing.clone(),
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

/// What a leader publishes about its slots in `status` (see `postgres::slot_positions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusSlots {
    /// The kept slots' positions and the leader's own slot at its WAL position.
    pub slots: BTreeMap<String, u64>,
    /// Member slots kept for `member_slots_ttl` after their member left.
    pub retain_slots: Vec<String>,
}

/// PURE: the `status` key a leader writes: its WAL position (a standby leader's replay position, as Patroni's
/// standby leader publishes it), and its slots when this process listed them (else the slots the key holds stay
/// as they are).
pub fn status_data(pg: &PgStatus, previous: Option<&StatusData>, slots: Option<&StatusSlots>) -> Option<StatusData> {
    let location = match pg.wal {
        WalPosition::Primary { location } => location,
        WalPosition::Replica { replayed: Some(replayed), .. } if pg.role == Role::StandbyLeader => replayed,
        _ => return None,
    };
    let mut status = previous.cloned().unwrap_or_default();
    status.optime = location.0;
    if let Some(slots) = slots {
        status.slots = slots.slots.clone();
        status.retain_slots = slots.retain_slots.clone();
    }
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

/// PURE: the PostgreSQL status to publish after a cycle: the probe when PostgreSQL answered, else
/// a state from the process and the long action the cycle started.
pub fn pg_status_after(obs: &Observation, running: Option<ActionKind>) -> PgStatus {
    let state = match (&obs.pg, running) {
        // From the cycle that starts a switchover's demotion on: HAProxy's next check already takes the primary out.
        (_, Some(ActionKind::Demote)) => PgState::Stopping,
        (PgProcess::Running(_), _) => PgState::Running,
        (_, Some(ActionKind::Clone)) => PgState::CreatingReplica,
        (_, Some(ActionKind::Bootstrap)) => PgState::InitializingNewCluster,
        (_, Some(_)) | (PgProcess::Starting, None) => PgState::Starting,
        (PgProcess::Unresponsive, None) => PgState::Unknown,
        (PgProcess::Stopped, None) => PgState::Stopped,
    };
    status_without_probe(&obs.pg, &obs.data_dir, state)
}

/// PURE: in a standby cluster the key holder running as a replica is the standby leader (Patroni's role
/// `standby_leader`, which `/standby-leader` and `/cluster` report).
pub fn standby_leader_role(mut pg: PgStatus, standby_cluster: bool, holds_key: bool) -> PgStatus {
    if standby_cluster && holds_key && pg.role == Role::Replica {
        pg.role = Role::StandbyLeader;
    }
    pg
}

/// PURE: the cluster summary for the API, `None` when the view is not trusted.
pub fn cluster_summary(view: &ClusterView, dcs_ok: bool, mode: SynchronousMode) -> Option<ClusterSummary> {
    dcs_ok.then(|| ClusterSummary {
        leader: view.leader.as_ref().map(|l| l.name.clone()),
        leader_optime: view.leader_optime(),
        sync_standbys: view.sync.as_ref().map(|s| s.value.members()).unwrap_or_default(),
        quorum_mode: mode == SynchronousMode::Quorum,
    })
}

/// Everything a cycle publishes in `NodeStatus`.
pub struct Published<'a> {
    /// PostgreSQL.
    pub pg: PgStatus,
    /// The cycle's view.
    pub view: &'a ClusterView,
    /// Store trusted.
    pub dcs_ok: bool,
    /// Lease end.
    pub leader_until: Option<Instant>,
    /// Fencing token.
    pub fencing_token: Option<u64>,
    /// The decision's sentence.
    pub reason: String,
    /// Next cycle.
    pub next_cycle_at: Instant,
    /// Last successful store contact.
    pub dcs_last_seen: Option<SystemTime>,
    /// Maintenance mode.
    pub paused: bool,
    /// The timers in force.
    pub timing: crate::config::dynamic::Timing,
    /// This member's tags.
    pub tags: Map<String, Value>,
    /// Dynamic `maximum_lag_on_failover`.
    pub maximum_lag_on_failover: u64,
    /// Dynamic `synchronous_mode`.
    pub synchronous_mode: SynchronousMode,
    /// The required watchdog cannot be armed.
    pub watchdog_failed: bool,
    /// The latest sample of the node's filesystems.
    pub filesystems: Vec<crate::status::FilesystemUsage>,
}

/// PURE: publishes the probe a node about to race took after seeing the leader key vacant (its `GET /patroni`
/// then says `cluster_unlocked`, which peers racing at the same moment require before counting its vote); the
/// rest of the status waits for the end of the cycle. The only status written before a cycle ends.
pub fn publish_race_probe(
    status: &mut NodeStatus,
    pg: PgStatus,
    view: &ClusterView,
    dcs_ok: bool,
    mode: SynchronousMode,
) {
    status.pg = pg;
    status.cluster = cluster_summary(view, dcs_ok, mode);
}

/// PURE: the status a cycle publishes. `/sync` and `/quorum` follow Patroni: a member named in the
/// `sync` key of a leader is a synchronous standby in mode `on`, a quorum standby in mode `quorum`.
pub fn publish(status: &mut NodeStatus, p: Published<'_>) {
    let named =
        p.view.sync.as_ref().is_some_and(|s| s.value.leader.is_some() && s.value.members().contains(&status.name));
    status.sync_standby = named && p.synchronous_mode == SynchronousMode::On;
    status.quorum_standby = named && p.synchronous_mode == SynchronousMode::Quorum;
    status.pg = p.pg;
    status.cluster = cluster_summary(p.view, p.dcs_ok, p.synchronous_mode);
    status.leader_until = p.leader_until;
    status.fencing_token = p.fencing_token;
    status.reason = p.reason;
    status.next_cycle_at = p.next_cycle_at;
    status.dcs_last_seen = p.dcs_last_seen;
    status.paused = p.paused;
    status.ttl = p.timing.ttl;
    status.loop_wait = p.timing.loop_wait;
    status.tags = p.tags;
    status.maximum_lag_on_failover = p.maximum_lag_on_failover;
    status.watchdog_failed = p.watchdog_failed;
    status.filesystems = p.filesystems;
}

impl HaLoop {
    /// Publishes the cycle's status once, at its end.
    pub(super) fn publish(&mut self, view: &ClusterView, pg: PgStatus, reason: String) {
        let lease = self.dcs.lease();
        let dynamic = self.dynamic.view();
        let published = Published {
            pg,
            view,
            dcs_ok: self.dcs_ok(Instant::now()),
            leader_until: lease.leader_valid_until,
            fencing_token: lease.fencing_token,
            reason,
            next_cycle_at: Instant::now() + self.timing.loop_wait,
            dcs_last_seen: self.state.last_dcs_seen_wall,
            paused: dynamic.pause,
            timing: self.timing,
            tags: self.settings.tags.clone(),
            maximum_lag_on_failover: dynamic.maximum_lag_on_failover,
            synchronous_mode: dynamic.synchronous_mode,
            watchdog_failed: self.state.watchdog_failed,
            filesystems: self.disk.latest().to_vec(),
        };
        self.status_tx.send_modify(|status| publish(status, published));
    }

    /// Publishes what we know of PostgreSQL while the store is not reachable yet.
    pub(super) async fn publish_waiting(&mut self) {
        let data_dir = super::observe::data_dir(&self.pg).await;
        let process = super::observe::pg_process(&self.pg).await;
        let pg_status = status_without_probe(&process, &data_dir, PgState::Stopped);
        let loop_wait = self.timing.loop_wait;
        // A node that cannot reach the Raft cluster may be one whose Raft disk is full: show it.
        self.disk.refresh().await;
        let filesystems = self.disk.latest().to_vec();
        self.status_tx.send_modify(|status| {
            status.pg = pg_status;
            status.filesystems = filesystems;
            status.cluster = None;
            status.reason = "waiting for the raft cluster".into();
            status.next_cycle_at = Instant::now() + loop_wait;
        });
    }

    /// Writes this member's key (and keeps the session alive).
    pub(super) async fn touch_member(&mut self, pg_status: &PgStatus) {
        let member = self.settings.member_data(pg_status, self.dynamic.view().pause);
        match self.dcs.touch_member(&member, self.timing.ttl, self.timing.retry_timeout).await {
            Ok(()) => {
                self.state.last_dcs_ok = Some(Instant::now());
                self.state.last_dcs_seen_wall = Some(SystemTime::now());
            }
            Err(e) => warn!(error = %e, "failed to update the member key"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::types::Lsn;

    fn replica_at(replayed: u64, role: Role) -> PgStatus {
        let wal = WalPosition::Replica {
            received: Some(Lsn(replayed + 10)),
            replayed: Some(Lsn(replayed)),
            replayed_timestamp: None,
            paused: false,
            latest_end: None,
        };
        PgStatus { role, wal, ..PgStatus::default() }
    }

    #[test]
    fn the_key_holder_publishes_its_position_and_slots() {
        let slots = StatusSlots { slots: [("node2".to_owned(), 90)].into(), retain_slots: vec!["node2".into()] };
        let primary =
            PgStatus { role: Role::Primary, wal: WalPosition::Primary { location: Lsn(100) }, ..PgStatus::default() };
        let status = status_data(&primary, None, Some(&slots)).map(|s| (s.optime, s.slots, s.retain_slots));
        assert_eq!(status, Some((100, slots.slots.clone(), slots.retain_slots.clone())));
        // Without a listing of its own yet, the slots the key holds stay.
        let previous = StatusData { optime: 50, slots: [("old".to_owned(), 7)].into(), retain_slots: vec![] };
        assert_eq!(status_data(&primary, Some(&previous), None).map(|s| s.slots), Some(previous.slots.clone()));
        // A standby leader publishes its replay position; a plain replica publishes nothing.
        assert_eq!(status_data(&replica_at(80, Role::StandbyLeader), None, None).map(|s| s.optime), Some(80));
        assert_eq!(status_data(&replica_at(80, Role::Replica), None, None), None);
    }
}
