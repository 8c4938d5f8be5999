//! The on-disk DCS vocabulary: what a Raft log entry carries ([`Envelope`]) and what applying
//! it returns ([`CommandResult`]).
//!
//! These types are serialized into the Raft log and snapshots, so they are a compatibility
//! boundary: add variants at the end, never change what an existing field means.
//! Plain derives only: bincode cannot decode `flatten`, `untagged` or `skip_serializing_if`.
//! bincode also cannot skip a missing field, so a new field needs a store format step (snapshots
//! keep results in the dedup table: `store::migrate`) and a new peer protocol version (forwarded
//! writes answer with a `CommandResult`), as `CommandResult::Applied::create_rev` had.

use serde::Deserialize;
use serde::Serialize;

use crate::state::Versioned;
use crate::NodeId;

/// A session (etcd's lease): keys attached to it vanish when it expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One proposed write, as stored in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The writer's per-process client id: retried writes with the same `(origin, seq)` are
    /// applied once (the Raft paper's §8 client dedup).
    pub origin: u64,
    /// Monotonic sequence number per `origin`.
    pub seq: u64,
    /// Wall clock of the Raft leader that proposed the entry, in ms since the epoch.
    /// Informational (`updated_at`) and for the stamped lease carry-over; `apply` never reads a clock.
    pub stamp_ms: u64,
    /// What to do.
    pub cmd: Command,
}

/// A precondition on one key, checked atomically with the write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Guard {
    /// No condition.
    Always,
    /// The key must not exist (create-only).
    Absent,
    /// The key must exist.
    Present,
    /// The key must exist with this mod revision (compare-and-set).
    ModRev(u64),
    /// The key must exist with exactly this value.
    ValueEq(String),
    /// The key must exist and be attached to this session (the holder check of the leader key).
    SessionIs(SessionId),
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Write a key, optionally attaching it to a session that must be alive.
    Put {
        /// Key, relative to the cluster (`leader`, `members/pg1`, …).
        key: String,
        /// Value (Patroni stores strings; JSON is written compactly).
        value: String,
        /// Session to attach the key to; `None` makes it permanent.
        attach: Option<SessionId>,
    },
    /// Delete a key (no error when absent).
    Delete {
        /// Key.
        key: String,
    },
    /// Grant or renew a session.
    KeepAlive {
        /// The session.
        session: SessionId,
        /// Raft node that owns it.
        node: NodeId,
        /// Member name that owns it.
        owner: String,
        /// Time to live in milliseconds.
        ttl_ms: u64,
    },
}

/// A replicated command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// All guards hold, then every op is applied; otherwise nothing is.
    Txn {
        /// Preconditions, checked in order; the first failing one is reported.
        guards: Vec<(String, Guard)>,
        /// Operations applied in order when every guard holds.
        ops: Vec<Op>,
    },
    /// Expire a session whose deadline passed on the Raft leader's monotonic clock.
    /// A no-op when the session was renewed after the keeper read `expected_renewed_rev`.
    ExpireSession {
        /// The session.
        session: SessionId,
        /// The renewal the keeper's deadline was derived from.
        expected_renewed_rev: u64,
    },
    /// Revoke a session now (graceful shutdown, voluntary release): its keys are deleted.
    RevokeSession {
        /// The session.
        session: SessionId,
    },
    /// Delete every key under a prefix (`patronictl remove`); sessions are kept.
    DeletePrefix {
        /// The prefix ("" deletes every key).
        prefix: String,
    },
    /// Expire a session as [`Command::ExpireSession`] does, and when it held `record.held_key`,
    /// leave a record of who held it (see [`ExpiryRecord`]). What the keeper proposes since the
    /// record's keys became the caller's choice (`RaftConfig::expiry_record`); `ExpireSession`
    /// stays for log entries written before.
    Expire {
        /// The session.
        session: SessionId,
        /// The renewal the keeper's deadline was derived from.
        expected_renewed_rev: u64,
        /// The record to leave, if any.
        record: Option<ExpiryRecord>,
    },
}

/// Which key's holder an expiry records, and where: when the expired session held `held_key`,
/// `record_key` receives `{"owner", "last_renewal_ms", "expired_ms"}` (the session's owner, the
/// leader stamp of its last renewal and of the expiry), as a permanent key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryRecord {
    /// The key whose holder is recorded.
    pub held_key: String,
    /// Where the record goes.
    pub record_key: String,
}

impl Command {
    /// A single guarded put.
    pub fn put(key: impl Into<String>, value: impl Into<String>, guard: Guard) -> Self {
        let key = key.into();
        Command::Txn {
            guards: vec![(key.clone(), guard)],
            ops: vec![Op::Put { key, value: value.into(), attach: None }],
        }
    }

    /// A single guarded delete.
    pub fn delete(key: impl Into<String>, guard: Guard) -> Self {
        let key = key.into();
        Command::Txn { guards: vec![(key.clone(), guard)], ops: vec![Op::Delete { key }] }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Txn { .. } => "txn",
            Command::ExpireSession { .. } => "expire_session",
            Command::RevokeSession { .. } => "revoke_session",
            Command::DeletePrefix { .. } => "delete_prefix",
            Command::Expire { .. } => "expire",
        }
    }
}

/// What applying an entry returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// The entry took effect at revision `rev` (its log index).
    Applied {
        /// The revision (log index) of the write.
        rev: u64,
        /// For transactions with a `KeepAlive`: true when an existing session was renewed,
        /// false when the session had to be granted afresh (continuity was lost).
        renewed: Option<bool>,
        /// For transactions with a `Put`: the create revision of the first put's key once the
        /// transaction applied (`rev` itself when the put created the key). A writer learns it from
        /// its own write, which a view it reads afterwards may not show yet (a write forwarded to
        /// the Raft leader is applied there first); the holder of a lease key takes its fencing
        /// token from it. `None` for other commands, and in results stored by store format 1.
        create_rev: Option<u64>,
    },
    /// A guard did not hold; nothing was written.
    GuardFailed {
        /// The key whose guard failed.
        key: String,
        /// Its current value, if any.
        current: Option<Versioned>,
    },
    /// A command referred to a session that does not exist or was renewed since (no-op).
    NoOp {
        /// The revision of the entry.
        rev: u64,
    },
    /// A write named a session to attach to that is not alive; nothing was written.
    NoSession {
        /// The missing session.
        session: SessionId,
    },
    /// A retried write with a sequence number older than the last one applied for its origin.
    Stale {
        /// The newest applied sequence number of that origin.
        last_seq: u64,
    },
}

impl CommandResult {
    /// True when the write took effect.
    pub fn is_applied(&self) -> bool {
        matches!(self, CommandResult::Applied { .. })
    }
}

impl Default for CommandResult {
    fn default() -> Self {
        CommandResult::NoOp { rev: 0 }
    }
}
