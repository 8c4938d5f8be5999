//! Raft metrics in raftgres' terms (term, leader, indexes, lag per peer).

use std::collections::BTreeMap;

use crate::typ::RaftMetrics;
use crate::NodeId;

/// A point-in-time summary of this replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node.
    pub node_id: NodeId,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Index of the last applied entry.
    pub last_applied: u64,
    /// Index covered by the latest snapshot.
    pub snapshot_index: u64,
    /// On the leader: entries each follower is behind.
    pub lag: BTreeMap<NodeId, u64>,
    /// On the leader: ms since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Voter ids of the current membership (the union of both halves while a change is in joint state).
    pub voters: Vec<NodeId>,
    /// The current membership is a single configuration whose log entry this node has applied:
    /// no membership change is in flight as far as this node knows.
    pub membership_settled: bool,
}

pub(super) fn status(m: &RaftMetrics) -> RaftStatus {
    let last_log_index = m.last_log_index.unwrap_or(0);
    let lag = m
        .replication
        .as_ref()
        .map(|r| {
            r.iter()
                .filter(|(id, _)| **id != m.id)
                .map(|(id, matched)| (*id, last_log_index.saturating_sub(matched.map(|l| l.index).unwrap_or(0))))
                .collect()
        })
        .unwrap_or_default();
    RaftStatus {
        node_id: m.id,
        state: format!("{:?}", m.state),
        term: m.current_term,
        leader: m.current_leader,
        last_log_index,
        last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
        lag,
        millis_since_quorum_ack: m.millis_since_quorum_ack,
        voters: m.membership_config.membership().voter_ids().collect(),
        membership_settled: m.membership_config.membership().get_joint_config().len() == 1
            && m.membership_config.log_id().map(|l| l.index) <= m.last_applied.map(|l| l.index),
    }
}
