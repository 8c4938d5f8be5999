//! The raft crate's one error type: callers branch on not-leader, unavailable and config.

use crate::NodeId;
use crate::PeerNode;

/// Errors of the consensus store.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// The configuration is invalid; `path` names the offending key.
    #[error("{path}: {message}")]
    Config {
        /// Key path, e.g. `raft.peers[1].id`.
        path: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// This node is not the Raft leader; the hint names the leader when known.
    #[error("not the raft leader (leader: {})", leader_hint.as_ref().map(|(id, n)| format!("{id} {n}")).unwrap_or_else(|| "unknown".into()))]
    NotLeader {
        /// The leader, when known.
        leader_hint: Option<(NodeId, PeerNode)>,
    },
    /// No quorum or no leader answered in time; the write may or may not have been applied
    /// (a retry with the same sequence number is safe).
    #[error("consensus unavailable: {0}")]
    Unavailable(String),
    /// The local storage failed; the replica stops (a broken disk is not retried).
    #[error("storage: {0}")]
    Storage(String),
    /// A peer sent something we could not accept.
    #[error("peer protocol: {0}")]
    Protocol(String),
    /// Peer TLS: a certificate or key could not be loaded, is not valid now, or does not name
    /// this node; the text says which file and what to do.
    #[error("peer TLS: {0}")]
    Tls(String),
    /// Raft stopped (shutdown or a fatal error).
    #[error("raft stopped: {0}")]
    Stopped(String),
    /// I/O outside the store (listener bind, data directory).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl RaftError {
    /// Builds an [`RaftError::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        RaftError::Io { context: context.into(), source }
    }
}
