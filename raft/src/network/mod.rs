//! The peer transport: bincode bodies over HTTPS with mutual TLS (`tls`, certificates from
//! `certs`) on a peer-only listener; plaintext HTTP only with `raft.insecure` on loopback.
//!
//! Every message is a [`Wire`] carrying the protocol version, the cluster id and the sender and
//! target node ids; the receiver rejects any mismatch with an error response and a log line.
//! Bodies are decoded with a size limit. This module must not serve the REST API: the peer
//! port and the REST port are separate listeners.

pub mod certs;
pub mod client;
pub mod server;
pub mod tls;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;

use crate::command::CommandResult;
use crate::NodeId;
use crate::PeerNode;

/// Header carrying how long the sender waits for the answer (ms): a forwarded write is not
/// proposed for longer than its writer waits (the holder's lease renewal derives that from its
/// lease). Absent from older senders; the receiver then uses its own bound.
pub const BUDGET_HEADER: &str = "x-raftgres-budget-ms";

/// Version of the peer protocol; bumped on incompatible changes.
/// 1: the first; 2: `CommandResult::Applied` (a forwarded write's answer, and the dedup table in
/// snapshots) gained `create_rev`.
pub const PROTOCOL_VERSION: u8 = 2;

/// Envelope of every peer message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wire<T> {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u8,
    /// Hash of the cluster name (see `RaftConfig::cluster_id`).
    pub cluster_id: u64,
    /// Sender node id.
    pub from: NodeId,
    /// Intended receiver node id.
    pub to: NodeId,
    /// The payload.
    pub body: T,
}

/// Why a forwarded request could not be served by the node that received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The receiver is not the Raft leader.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The leader the receiver knows of.
        leader: Option<(NodeId, PeerNode)>,
    },
    /// The receiver could not complete the request (no quorum, timeout, shutdown).
    #[error("{0}")]
    Unavailable(String),
    /// The request itself was refused.
    #[error("{0}")]
    Refused(String),
}

/// Answer of `POST /raft/write`.
pub type WriteReply = Result<CommandResult, ForwardError>;
/// Answer of `POST /raft/read-index`: the log index a linearizable read must wait for.
pub type ReadIndexReply = Result<u64, ForwardError>;
/// Answer of `POST /raft/membership`.
pub type MembershipReply = Result<String, ForwardError>;

/// What `POST /raft/status` reports: used by the bootstrap probe and by tooling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The node's id.
    pub node_id: NodeId,
    /// True once the node belongs to an initialized cluster (its log has a membership).
    pub initialized: bool,
    /// Voters and learners of the node's current membership, with their records.
    pub members: BTreeMap<NodeId, PeerNode>,
    /// Voter ids of the node's current membership.
    pub voters: Vec<NodeId>,
    /// The leader the node knows of.
    pub leader: Option<NodeId>,
    /// The node's current term.
    pub term: u64,
    /// Index of the node's last log entry (a freshly initialized cluster has only its
    /// initial membership entry).
    pub last_log_index: u64,
}

/// Membership requests a node sends to the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Add a node as a learner, wait until it caught up, then make it a voter.
    AddNode {
        /// Its id.
        id: NodeId,
        /// Its record.
        node: PeerNode,
    },
    /// Remove a voter or learner.
    RemoveNode {
        /// Its id.
        id: NodeId,
    },
    /// A node whose data directory was wiped asks to be forgotten before it rejoins, so it
    /// never votes or acknowledges under its old identity with an empty log.
    Forget {
        /// Its id.
        id: NodeId,
    },
}

/// Encodes a peer message body.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| format!("encode: {e}"))
}

/// Decodes a peer message body; `LIMIT` caps what the decoder may allocate.
pub fn decode<T: DeserializeOwned, const LIMIT: usize>(bytes: &[u8]) -> Result<T, String> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    match bincode::serde::decode_from_slice::<T, _>(bytes, config) {
        Ok((value, used)) if used == bytes.len() => Ok(value),
        Ok((_, used)) => Err(format!("decode: {} trailing bytes after the message", bytes.len() - used)),
        Err(e) => Err(format!("decode: {e}")),
    }
}

/// Decoder allocation limit for peer messages (the HTTP body limit is applied first).
pub const DECODE_LIMIT: usize = 64 << 20;
