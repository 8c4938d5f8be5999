//! raftgres' embedded consensus store: an openraft 0.9 replica on sled that holds the keys
//! Patroni keeps in its DCS (`leader`, `members/<name>`, `config`, …) plus TTL'd sessions.
//!
//! This crate knows nothing about PostgreSQL processes or SQL: it offers guarded writes,
//! sessions with leases that cannot overlap, a local watched view and linearizable reads.
//! The rest of raftgres talks to it only through [`RaftNode`].
//!
//! Map:
//! - [`command`]: the on-disk vocabulary ([`Envelope`], [`Command`], [`CommandResult`]).
//! - [`state`]: the deterministic state machine ([`ClusterState::apply`]).
//! - [`store`]: sled-backed `RaftLogStorage` and `RaftStateMachine` (durable, fsynced).
//! - [`network`]: the peer transport (bincode over HTTP, envelope checks, forwarding).
//! - [`node`]: [`RaftNode`], the handle the binary uses; [`lease`] the Raft leader's lease keeper.
//! - [`faultproxy`]: a TCP proxy that injects link faults, used by tests and the chaos harness.

pub mod command;
pub mod config;
pub mod error;
pub mod faultproxy;
pub mod lease;
pub mod network;
pub mod node;
pub mod state;
pub mod store;

use std::io::Cursor;

use serde::Deserialize;
use serde::Serialize;

pub use command::Command;
pub use command::CommandResult;
pub use command::Envelope;
pub use command::Guard;
pub use command::Op;
pub use command::SessionId;
pub use config::PeerConfig;
pub use config::RaftConfig;
pub use error::RaftError;
pub use node::RaftNode;

pub use state::ClusterState;
pub use state::Versioned;

/// Raft node identifier, stable for the life of a member (never reused).
pub type NodeId = u64;

/// What the membership config stores about every node: it doubles as the address book.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// The member name (Patroni's `name`).
    pub name: String,
    /// Address of the node's peer-only Raft listener (`host:port`).
    pub raft_addr: String,
    /// Address of the node's REST API (`host:port`), for tooling; may be empty.
    pub api_addr: String,
}

impl std::fmt::Display for PeerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.raft_addr)
    }
}

openraft::declare_raft_types!(
    /// openraft type configuration of raftgres.
    pub TypeConfig:
        D = Envelope,
        R = CommandResult,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// openraft types pinned to [`TypeConfig`].
pub mod typ {
    use super::NodeId;
    use super::PeerNode;
    use super::TypeConfig;

    /// The openraft handle.
    pub type Raft = openraft::Raft<TypeConfig>;
    /// A log entry.
    pub type Entry = openraft::Entry<TypeConfig>;
    /// A log id.
    pub type LogId = openraft::LogId<NodeId>;
    /// A vote.
    pub type Vote = openraft::Vote<NodeId>;
    /// Storage error.
    pub type StorageError = openraft::StorageError<NodeId>;
    /// Stored membership.
    pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
    /// Snapshot metadata.
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
    /// A snapshot.
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    /// Metrics.
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, PeerNode>;
    /// Raft error with an API-specific inner error.
    pub type RaftApiError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    /// Client write error.
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, PeerNode>;
    /// Linearizable read error.
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, PeerNode>;
    /// Client write response.
    pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
    /// RPC error.
    pub type RpcError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, PeerNode, openraft::error::RaftError<NodeId, E>>;
}
