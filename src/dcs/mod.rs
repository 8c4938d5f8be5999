//! Typed operations over the embedded store (`raft::RaftNode`): Patroni's DCS primitives
//! (leader lease, members, initialize, config, failover, sync, history, status).
//!
//! The HA loop talks to consensus only through this module; it never calls openraft.
//! "Lost the lock" (a guard failed: `Ok(false)`) is distinct from "store unavailable"
//! (`Err(DcsError::Unavailable)`), as Patroni requires of `update_leader`.

pub mod keys;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use raft::command::Command;
use raft::command::Guard;
use raft::command::Op;
use raft::lease::HolderLease;
use raft::ClusterState;
use raft::CommandResult;
use raft::RaftNode;
use serde_json::Value;
use tokio::sync::watch;

use self::view::ClusterView;
use self::view::FailoverTimeline;
use self::view::HistoryLine;
use self::view::MemberData;
use self::view::StatusData;

/// Errors of DCS operations.
#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    /// No quorum answered in time; the outcome of a write is unknown.
    #[error("DCS unavailable: {0}")]
    Unavailable(String),
    /// Any other store error.
    #[error("DCS: {0}")]
    Store(String),
    /// A value could not be encoded.
    #[error("encode {key}: {source}")]
    Encode {
        /// Key being written.
        key: String,
        /// Cause.
        source: serde_json::Error,
    },
}

impl From<raft::RaftError> for DcsError {
    fn from(e: raft::RaftError) -> Self {
        match e {
            raft::RaftError::Unavailable(msg) => DcsError::Unavailable(msg),
            raft::RaftError::NotLeader { .. } => DcsError::Unavailable(e.to_string()),
            other => DcsError::Store(other.to_string()),
        }
    }
}

/// The DCS as seen by one member.
#[derive(Clone)]
pub struct Dcs {
    node: RaftNode,
    name: String,
}

fn json<T: serde::Serialize>(key: &str, value: &T) -> Result<String, DcsError> {
    serde_json::to_string(value).map_err(|source| DcsError::Encode { key: key.to_string(), source })
}

fn json_value<T: serde::Serialize>(key: &str, value: &T) -> Result<Value, DcsError> {
    serde_json::to_value(value).map_err(|source| DcsError::Encode { key: key.to_string(), source })
}

/// Key of a member.
pub fn member_key(name: &str) -> String {
    format!("{}{name}", keys::MEMBERS_PREFIX)
}

/// Gives the raft replica what it needs to know of Patroni's keys: the lease keeper records the
/// expired holder of the leader key, and (`follow_primary`) Raft leadership follows the node whose
/// session owns the leader key (`raft.leadership_follows_primary`).
pub fn configure_raft(raft: &mut raft::RaftConfig, follow_primary: bool) {
    raft.expiry_record = Some(keys::expiry_record());
    raft.leadership_follows_key = follow_primary.then(|| keys::LEADER.to_string());
}

impl Dcs {
    /// Wraps the replica for member `name`.
    pub fn new(node: RaftNode, name: &str) -> Self {
        Dcs { node, name: name.to_string() }
    }

    /// The replica.
    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    /// The local view (may trail the Raft leader by a heartbeat).
    pub fn view(&self) -> ClusterView {
        ClusterView::from_state(&self.node.view())
    }

    /// A linearizable view, confirmed by a quorum.
    pub async fn view_linearizable(&self, timeout: Duration) -> Result<ClusterView, DcsError> {
        let state = self.node.read_linearizable(timeout).await?;
        Ok(ClusterView::from_state(&state))
    }

    /// Wakes on every applied change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.node.subscribe()
    }

    /// A Raft leader is known to this replica (before the first write, the only sign the store answers).
    pub fn raft_leader_known(&self) -> bool {
        self.node.status().leader.is_some()
    }

    /// This process's lease as it sees it.
    pub fn lease(&self) -> HolderLease {
        self.node.lease()
    }

    /// True when the view's leader key is attached to this process's session.
    pub fn leader_key_is_mine(&self, view: &ClusterView) -> bool {
        view.leader.as_ref().is_some_and(|l| l.session == Some(self.node.session_id()))
    }

    fn member_ops(&self, member: &MemberData, status: Option<&StatusData>) -> Result<Vec<Op>, DcsError> {
        let key = member_key(&self.name);
        let mut ops = vec![Op::Put { value: json(&key, member)?, key, attach: Some(self.node.session_id()) }];
        if let Some(status) = status {
            ops.push(Op::Put { key: keys::STATUS.into(), value: json(keys::STATUS, status)?, attach: None });
        }
        Ok(ops)
    }

    /// Renews the session and writes the member key (every cycle).
    pub async fn touch_member(&self, member: &MemberData, ttl: Duration, timeout: Duration) -> Result<(), DcsError> {
        let ops = self.member_ops(member, None)?;
        self.node.keep_alive(&self.name, ttl, ops, timeout).await?;
        Ok(())
    }

    /// Takes the vacant leader key; false when someone holds it.
    pub async fn acquire_leader(
        &self,
        member: &MemberData,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, DcsError> {
        let ops = self.member_ops(member, None)?;
        Ok(self.node.acquire_lease(keys::LEADER, &self.name, ttl, ops, timeout).await?)
    }

    /// Renews the leader key we hold, with the member key and `status`; false = lost it.
    pub async fn renew_leader(
        &self,
        member: &MemberData,
        status: Option<&StatusData>,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, DcsError> {
        let ops = self.member_ops(member, status)?;
        Ok(self.node.renew_lease(keys::LEADER, &self.name, ttl, ops, timeout).await?)
    }

    /// Takes over the leader key of this member's previous process.
    pub async fn take_over_leader(
        &self,
        member: &MemberData,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<bool, DcsError> {
        let ops = self.member_ops(member, None)?;
        Ok(self.node.take_over_lease(keys::LEADER, &self.name, ttl, ops, timeout).await?)
    }

    /// Writes `status` (when given) and deletes the leader key we hold.
    pub async fn release_leader(&self, status: Option<&StatusData>, timeout: Duration) -> Result<bool, DcsError> {
        if let Some(status) = status {
            let cmd = Command::put(keys::STATUS, json(keys::STATUS, status)?, Guard::Always);
            self.node.write(cmd, timeout).await?;
        }
        Ok(self.node.release_lease(keys::LEADER, timeout).await?)
    }

    /// Revokes the session: the member key (and the leader key, if held) vanish.
    pub async fn revoke(&self, timeout: Duration) -> Result<(), DcsError> {
        Ok(self.node.revoke_session(timeout).await?)
    }

    async fn txn(&self, cmd: Command, timeout: Duration) -> Result<bool, DcsError> {
        Ok(self.node.write(cmd, timeout).await?.is_applied())
    }

    /// The bootstrap race: create `initialize` with an empty value; true = we won.
    pub async fn race_initialize(&self, timeout: Duration) -> Result<bool, DcsError> {
        self.txn(Command::put(keys::INITIALIZE, "", Guard::Absent), timeout).await
    }

    /// Records the system identifier after a successful bootstrap.
    pub async fn set_initialize(&self, system_id: &str, timeout: Duration) -> Result<bool, DcsError> {
        self.txn(Command::put(keys::INITIALIZE, system_id, Guard::ValueEq(String::new())), timeout).await
    }

    /// Writes a missing `initialize` (after `raftgres remove`), guarded by our session holding `leader`.
    pub async fn restore_initialize(
        &self,
        system_id: &str,
        was_empty: bool,
        timeout: Duration,
    ) -> Result<bool, DcsError> {
        // Empty: a bootstrap won the race and its process stopped before recording the system identifier.
        let guard = if was_empty { Guard::ValueEq(String::new()) } else { Guard::Absent };
        let cmd = Command::Txn {
            guards: vec![
                (keys::LEADER.into(), Guard::SessionIs(self.node.session_id())),
                (keys::INITIALIZE.into(), guard),
            ],
            ops: vec![Op::Put { key: keys::INITIALIZE.into(), value: system_id.to_string(), attach: None }],
        };
        self.txn(cmd, timeout).await
    }

    /// Gives the bootstrap up so another node may try.
    pub async fn cancel_initialization(&self, timeout: Duration) -> Result<bool, DcsError> {
        self.txn(Command::delete(keys::INITIALIZE, Guard::ValueEq(String::new())), timeout).await
    }

    /// Writes the dynamic config unless one exists.
    pub async fn write_config_if_absent(&self, document: &Value, timeout: Duration) -> Result<bool, DcsError> {
        self.txn(Command::put(keys::CONFIG, json(keys::CONFIG, document)?, Guard::Absent), timeout).await
    }

    /// Writes the dynamic config with compare-and-set on its version; false = concurrent change.
    pub async fn write_config(
        &self,
        document: &Value,
        mod_rev: Option<u64>,
        timeout: Duration,
    ) -> Result<bool, DcsError> {
        let guard = mod_rev.map(Guard::ModRev).unwrap_or(Guard::Always);
        self.txn(Command::put(keys::CONFIG, json(keys::CONFIG, document)?, guard), timeout).await
    }

    /// Writes a switchover or failover request into the `failover` key, compare-and-set on the
    /// version the caller validated against (`None`: the key must be absent). The revision of the
    /// write, or `None` when the key changed meanwhile.
    pub async fn request_failover(
        &self,
        data: &self::view::FailoverData,
        expected_rev: Option<u64>,
        timeout: Duration,
    ) -> Result<Option<u64>, DcsError> {
        let guard = expected_rev.map_or(Guard::Absent, Guard::ModRev);
        let cmd = Command::put(keys::FAILOVER, json(keys::FAILOVER, data)?, guard);
        match self.node.write(cmd, timeout).await? {
            CommandResult::Applied { rev, .. } => Ok(Some(rev)),
            _ => Ok(None),
        }
    }

    /// Clears a consumed `failover` key (CAS on its version).
    pub async fn clear_failover(&self, mod_rev: u64, timeout: Duration) -> Result<bool, DcsError> {
        self.txn(Command::delete(keys::FAILOVER, Guard::ModRev(mod_rev)), timeout).await
    }

    /// Writes (or deletes, with `None`) the `sync` key: guarded by our session holding `leader`
    /// and compare-and-set on the key's version (`None`: it must be absent). The revision of the
    /// write (the key's new version), or `None` when a guard failed.
    pub async fn write_sync(
        &self,
        data: Option<&self::view::SyncData>,
        mod_rev: Option<u64>,
        timeout: Duration,
    ) -> Result<Option<u64>, DcsError> {
        let version_guard = mod_rev.map(Guard::ModRev).unwrap_or(Guard::Absent);
        let op = match data {
            Some(data) => Op::Put { key: keys::SYNC.into(), value: json(keys::SYNC, data)?, attach: None },
            None => Op::Delete { key: keys::SYNC.into() },
        };
        let cmd = Command::Txn {
            guards: vec![
                (keys::LEADER.into(), Guard::SessionIs(self.node.session_id())),
                (keys::SYNC.into(), version_guard),
            ],
            ops: vec![op],
        };
        match self.node.write(cmd, timeout).await? {
            CommandResult::Applied { rev, .. } => Ok(Some(rev)),
            _ => Ok(None),
        }
    }

    /// Deletes every key of the cluster (Patroni's `delete_cluster`, for `raftgres remove`); sessions and the Raft
    /// membership stay. Unguarded: the caller checks first that no leader runs.
    pub async fn delete_cluster(&self, timeout: Duration) -> Result<(), DcsError> {
        self.node.write(Command::DeletePrefix { prefix: String::new() }, timeout).await?;
        Ok(())
    }

    /// Appends a line to `history` (leader only, guarded by our session holding `leader`), with the
    /// promotion's timeline as a sixth element when known. Earlier lines are kept as stored.
    pub async fn append_history(
        &self,
        line: HistoryLine,
        timeline: Option<&FailoverTimeline>,
        timeout: Duration,
    ) -> Result<bool, DcsError> {
        let mut history = self.view().history_raw;
        let mut items = line.to_items();
        if let Some(timeline) = timeline {
            items.push(json_value(keys::HISTORY, timeline)?);
        }
        history.push(Value::Array(items));
        let cmd = Command::Txn {
            guards: vec![(keys::LEADER.into(), Guard::SessionIs(self.node.session_id()))],
            ops: vec![Op::Put { key: keys::HISTORY.into(), value: json(keys::HISTORY, &history)?, attach: None }],
        };
        self.txn(cmd, timeout).await
    }
}
