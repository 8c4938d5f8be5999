//! The DCS state machine: Patroni's keys plus TTL'd sessions, applied deterministically.
//!
//! PURE: no clock reads, no I/O, no async. Time inside the machine is the largest leader stamp
//! seen (`clock_ms`), used only for `updated_at`-style information; expiry happens only through
//! an explicit, replicated `ExpireSession` decided by the Raft leader's lease keeper.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::Serialize;

use crate::command::Command;
use crate::command::CommandResult;
use crate::command::Envelope;
use crate::command::ExpiryRecord;
use crate::command::Guard;
use crate::command::Op;
use crate::command::SessionId;
use crate::NodeId;

/// How many origins the dedup table remembers; the oldest (by revision) is dropped beyond it.
pub const DEDUP_CAPACITY: usize = 1024;

/// What [`Command::ExpireSession`] entries, written before expiry records became the caller's
/// choice ([`Command::Expire`]), record: replaying them must keep producing the same state.
pub(crate) const LEGACY_EXPIRY_RECORD: (&str, &str) = ("leader", "last_leader_expiry");

/// A stored value with its revisions (etcd's `create_revision`/`mod_revision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The value.
    pub value: String,
    /// Revision (log index) that created the key; for `leader` this is the fencing token.
    pub create_rev: u64,
    /// Revision that last wrote the key (the CAS version).
    pub mod_rev: u64,
    /// Session the key is attached to, if any.
    pub session: Option<SessionId>,
    /// Leader stamp of the last write, ms since the epoch (information only).
    pub updated_ms: u64,
}

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Raft node owning it.
    pub node: NodeId,
    /// Member name owning it.
    pub owner: String,
    /// Time to live, ms.
    pub ttl_ms: u64,
    /// Revision that granted it.
    pub granted_rev: u64,
    /// Revision of the last renewal (equals `granted_rev` until renewed).
    pub renewed_rev: u64,
    /// Leader stamp of the last renewal, ms since the epoch.
    pub renewed_stamp_ms: u64,
}

/// Last applied write of one origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupEntry {
    /// Its sequence number.
    pub seq: u64,
    /// Its result, returned again for a retry.
    pub result: CommandResult,
    /// Revision at which it was applied (for deterministic pruning).
    pub rev: u64,
}

/// The whole replicated state; snapshotted whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Keys relative to the cluster (`leader`, `members/pg1`, …).
    pub keys: BTreeMap<String, Versioned>,
    /// Live sessions.
    pub sessions: BTreeMap<SessionId, Session>,
    /// Largest leader stamp seen, ms since the epoch.
    pub clock_ms: u64,
    /// Retry dedup table per origin.
    pub dedup: BTreeMap<u64, DedupEntry>,
    /// Revision (log index) of the last applied entry.
    pub last_rev: u64,
    /// Retired: once bumped when one of Patroni's keys changed; watching is now the subscriber's
    /// business (`RaftNode::subscribe` and a diff of the states). Kept, never written, so that
    /// snapshots written before keep decoding.
    pub notify_seq: u64,
}

impl ClusterState {
    /// Returns a key's stored value.
    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.keys.get(key)
    }

    /// Returns the keys under a prefix, with the prefix stripped.
    pub fn prefixed<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Versioned)> + 'a {
        self.keys
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(move |(k, v)| (&k[prefix.len()..], v))
    }

    /// Records an entry without an application payload (blank or membership) at `rev`.
    pub fn apply_marker(&mut self, rev: u64) -> CommandResult {
        self.last_rev = rev;
        CommandResult::NoOp { rev }
    }

    /// Applies one log entry at revision `rev` (its log index). Deterministic.
    pub fn apply(&mut self, rev: u64, envelope: &Envelope) -> CommandResult {
        self.last_rev = rev;
        self.clock_ms = self.clock_ms.max(envelope.stamp_ms);
        if let Some(previous) = self.dedup.get(&envelope.origin) {
            if envelope.seq == previous.seq {
                return previous.result.clone();
            }
            if envelope.seq < previous.seq {
                return CommandResult::Stale { last_seq: previous.seq };
            }
        }
        let result = self.apply_command(rev, &envelope.cmd);
        self.remember(envelope.origin, envelope.seq, rev, result.clone());
        result
    }

    fn remember(&mut self, origin: u64, seq: u64, rev: u64, result: CommandResult) {
        self.dedup.insert(origin, DedupEntry { seq, result, rev });
        while self.dedup.len() > DEDUP_CAPACITY {
            let oldest = self.dedup.iter().min_by_key(|(origin, e)| (e.rev, **origin)).map(|(origin, _)| *origin);
            match oldest {
                Some(origin) => self.dedup.remove(&origin),
                None => break,
            };
        }
    }

    fn apply_command(&mut self, rev: u64, cmd: &Command) -> CommandResult {
        match cmd {
            Command::Txn { guards, ops } => self.apply_txn(rev, guards, ops),
            Command::ExpireSession { session, expected_renewed_rev } => {
                let (held_key, record_key) = LEGACY_EXPIRY_RECORD;
                let record = ExpiryRecord { held_key: held_key.into(), record_key: record_key.into() };
                self.expire(rev, *session, *expected_renewed_rev, Some(&record), "member")
            }
            Command::Expire { session, expected_renewed_rev, record } => {
                self.expire(rev, *session, *expected_renewed_rev, record.as_ref(), "owner")
            }
            Command::RevokeSession { session } => {
                if self.sessions.contains_key(session) {
                    self.drop_session(*session);
                    CommandResult::Applied { rev, renewed: None, create_rev: None }
                } else {
                    CommandResult::NoOp { rev }
                }
            }
            Command::DeletePrefix { prefix } => {
                let doomed: Vec<String> =
                    self.keys.keys().filter(|k| k.starts_with(prefix.as_str())).cloned().collect();
                for key in doomed {
                    self.remove_key(&key);
                }
                CommandResult::Applied { rev, renewed: None, create_rev: None }
            }
        }
    }

    /// Drops `session` unless it was renewed after `expected_renewed_rev`; when it held
    /// `record.held_key`, first writes the record (`owner_field` names the owner's field: legacy
    /// entries wrote `member`).
    fn expire(
        &mut self,
        rev: u64,
        session: SessionId,
        expected_renewed_rev: u64,
        record: Option<&ExpiryRecord>,
        owner_field: &str,
    ) -> CommandResult {
        let Some(s) = self.sessions.get(&session).filter(|s| s.renewed_rev == expected_renewed_rev) else {
            return CommandResult::NoOp { rev };
        };
        let held = record.filter(|r| self.keys.get(&r.held_key).is_some_and(|v| v.session == Some(session)));
        if let Some(record) = held {
            let json = serde_json::json!({
                owner_field: s.owner,
                "last_renewal_ms": s.renewed_stamp_ms,
                "expired_ms": self.clock_ms,
            });
            self.put(rev, &record.record_key, &json.to_string(), None);
        }
        self.drop_session(session);
        CommandResult::Applied { rev, renewed: None, create_rev: None }
    }

    fn apply_txn(&mut self, rev: u64, guards: &[(String, Guard)], ops: &[Op]) -> CommandResult {
        for (key, guard) in guards {
            if !guard_holds(self.keys.get(key), guard) {
                return CommandResult::GuardFailed { key: key.clone(), current: self.keys.get(key).cloned() };
            }
        }
        // Sessions named by puts must be alive (or granted earlier in this same txn).
        let mut granted_here: Vec<SessionId> = Vec::new();
        for op in ops {
            match op {
                Op::KeepAlive { session, .. } => granted_here.push(*session),
                Op::Put { attach: Some(session), .. }
                    if !self.sessions.contains_key(session) && !granted_here.contains(session) =>
                {
                    return CommandResult::NoSession { session: *session };
                }
                _ => {}
            }
        }
        let mut renewed = None;
        for op in ops {
            match op {
                Op::Put { key, value, attach } => self.put(rev, key, value, *attach),
                Op::Delete { key } => self.remove_key(key),
                Op::KeepAlive { session, node, owner, ttl_ms } => {
                    renewed = Some(self.keep_alive(rev, *session, *node, owner, *ttl_ms));
                }
            }
        }
        // Read after every op applied: a later op of the same transaction may delete the key again.
        let first_put = ops.iter().find_map(|op| match op {
            Op::Put { key, .. } => Some(key),
            _ => None,
        });
        let create_rev = first_put.and_then(|key| self.keys.get(key)).map(|v| v.create_rev);
        CommandResult::Applied { rev, renewed, create_rev }
    }

    fn keep_alive(&mut self, rev: u64, id: SessionId, node: NodeId, owner: &str, ttl_ms: u64) -> bool {
        let stamp = self.clock_ms;
        match self.sessions.get_mut(&id) {
            Some(session) => {
                session.renewed_rev = rev;
                session.renewed_stamp_ms = stamp;
                session.ttl_ms = ttl_ms;
                true
            }
            None => {
                let session = Session {
                    node,
                    owner: owner.to_string(),
                    ttl_ms,
                    granted_rev: rev,
                    renewed_rev: rev,
                    renewed_stamp_ms: stamp,
                };
                self.sessions.insert(id, session);
                false
            }
        }
    }

    fn put(&mut self, rev: u64, key: &str, value: &str, attach: Option<SessionId>) {
        let updated_ms = self.clock_ms;
        match self.keys.get_mut(key) {
            Some(existing) => {
                existing.value = value.to_string();
                existing.mod_rev = rev;
                existing.session = attach;
                existing.updated_ms = updated_ms;
            }
            None => {
                let versioned =
                    Versioned { value: value.to_string(), create_rev: rev, mod_rev: rev, session: attach, updated_ms };
                self.keys.insert(key.to_string(), versioned);
            }
        }
    }

    fn remove_key(&mut self, key: &str) {
        self.keys.remove(key);
    }

    fn drop_session(&mut self, id: SessionId) {
        self.sessions.remove(&id);
        let attached: Vec<String> =
            self.keys.iter().filter(|(_, v)| v.session == Some(id)).map(|(k, _)| k.clone()).collect();
        for key in attached {
            self.remove_key(&key);
        }
    }
}

/// Evaluates one guard against the current value of its key.
pub fn guard_holds(current: Option<&Versioned>, guard: &Guard) -> bool {
    match (guard, current) {
        (Guard::Always, _) => true,
        (Guard::Absent, current) => current.is_none(),
        (Guard::Present, current) => current.is_some(),
        (Guard::ModRev(rev), Some(v)) => v.mod_rev == *rev,
        (Guard::ValueEq(value), Some(v)) => v.value == *value,
        (Guard::SessionIs(session), Some(v)) => v.session == Some(*session),
        (_, None) => false,
    }
}

#[cfg(test)]
mod tests;
