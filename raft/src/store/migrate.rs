//! Store format steps: what a directory written by an older store format needs before this build
//! reads it, done once when the store opens.
//!
//! Format 1 → 2: `CommandResult::Applied` gained `create_rev`, and a snapshot keeps results in its
//! dedup table (a retried write gets its first result again), so format 1's snapshot bytes do not
//! decode as format 2's. The current snapshot is decoded with frozen copies of format 1's types and
//! written again; its remembered results get `create_rev: None` (nothing recorded it). The log holds
//! commands, not results, and no other record changed. The snapshot and the format byte are replaced
//! in one sled transaction, then made durable, so a crash leaves format 1 with the old snapshot or
//! format 2 with the new one, never a mix.
//!
//! The types here are frozen: they describe bytes already on disk and must never change. This
//! module must not be used for anything but reading older directories.

use std::collections::BTreeMap;
use std::convert::Infallible;

use serde::Deserialize;
use sled::transaction::ConflictableTransactionError;
use sled::transaction::TransactionError;
use sled::Transactional;

use super::codec;
use super::sm::read_snapshot;
use super::sm::Applied;
use super::sm::StoredSnapshot;
use super::Disk;
use super::DiskError;
use super::META_FORMAT;
use super::SNAP_CURRENT;
use crate::command::CommandResult;
use crate::command::SessionId;
use crate::state::ClusterState;
use crate::state::DedupEntry;
use crate::state::Session;
use crate::state::Versioned;
use crate::typ::LogId;
use crate::typ::StoredMembership;

/// Rewrites a format 1 directory as format 2: the current snapshot in format 2's layout and the
/// new format byte, atomically and durably.
pub(super) fn format_1_to_2(disk: &Disk) -> Result<(), DiskError> {
    let snapshot = match read_snapshot(disk)? {
        Some(stored) => {
            let old: AppliedV1 = codec::decode(&stored.data)?;
            let data = codec::encode(&Applied::from(old))?;
            Some(codec::encode(&StoredSnapshot { meta: stored.meta, data })?)
        }
        None => None,
    };
    let res = (&disk.meta, &disk.snap).transaction(|(meta, snap)| {
        if let Some(bytes) = &snapshot {
            snap.insert(SNAP_CURRENT, bytes.as_slice())?;
        }
        meta.insert(META_FORMAT, &[2u8])?;
        Ok::<(), ConflictableTransactionError<Infallible>>(())
    });
    match res {
        Ok(()) => {}
        Err(TransactionError::Storage(e)) => return Err(DiskError::Sled(e)),
        Err(TransactionError::Abort(never)) => match never {},
    }
    disk.make_durable_blocking()?;
    let rewrote_snapshot = snapshot.is_some();
    tracing::info!(dir = %disk.dir.display(), rewrote_snapshot, "upgraded the raft store from format 1 to 2");
    Ok(())
}

/// Format 1's snapshot bytes (`sm::Applied`).
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct AppliedV1 {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ClusterStateV1,
}

/// Format 1's `ClusterState`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct ClusterStateV1 {
    keys: BTreeMap<String, VersionedV1>,
    sessions: BTreeMap<u64, SessionV1>,
    clock_ms: u64,
    dedup: BTreeMap<u64, DedupEntryV1>,
    last_rev: u64,
    notify_seq: u64,
}

/// Format 1's `Versioned`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct VersionedV1 {
    value: String,
    create_rev: u64,
    mod_rev: u64,
    session: Option<u64>,
    updated_ms: u64,
}

/// Format 1's `Session`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct SessionV1 {
    node: u64,
    owner: String,
    ttl_ms: u64,
    granted_rev: u64,
    renewed_rev: u64,
    renewed_stamp_ms: u64,
}

/// Format 1's `DedupEntry`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct DedupEntryV1 {
    seq: u64,
    result: CommandResultV1,
    rev: u64,
}

/// Format 1's `CommandResult`: `Applied` without `create_rev`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
enum CommandResultV1 {
    Applied { rev: u64, renewed: Option<bool> },
    GuardFailed { key: String, current: Option<VersionedV1> },
    NoOp { rev: u64 },
    NoSession { session: u64 },
    Stale { last_seq: u64 },
}

impl From<AppliedV1> for Applied {
    fn from(old: AppliedV1) -> Applied {
        Applied { last_applied: old.last_applied, membership: old.membership, state: old.state.into() }
    }
}

impl From<ClusterStateV1> for ClusterState {
    fn from(old: ClusterStateV1) -> ClusterState {
        ClusterState {
            keys: old.keys.into_iter().map(|(key, value)| (key, value.into())).collect(),
            sessions: old.sessions.into_iter().map(|(id, session)| (SessionId(id), session.into())).collect(),
            clock_ms: old.clock_ms,
            dedup: old.dedup.into_iter().map(|(origin, entry)| (origin, entry.into())).collect(),
            last_rev: old.last_rev,
            notify_seq: old.notify_seq,
        }
    }
}

impl From<VersionedV1> for Versioned {
    fn from(old: VersionedV1) -> Versioned {
        Versioned {
            value: old.value,
            create_rev: old.create_rev,
            mod_rev: old.mod_rev,
            session: old.session.map(SessionId),
            updated_ms: old.updated_ms,
        }
    }
}

impl From<SessionV1> for Session {
    fn from(old: SessionV1) -> Session {
        Session {
            node: old.node,
            owner: old.owner,
            ttl_ms: old.ttl_ms,
            granted_rev: old.granted_rev,
            renewed_rev: old.renewed_rev,
            renewed_stamp_ms: old.renewed_stamp_ms,
        }
    }
}

impl From<DedupEntryV1> for DedupEntry {
    fn from(old: DedupEntryV1) -> DedupEntry {
        DedupEntry { seq: old.seq, result: old.result.into(), rev: old.rev }
    }
}

impl From<CommandResultV1> for CommandResult {
    fn from(old: CommandResultV1) -> CommandResult {
        match old {
            CommandResultV1::Applied { rev, renewed } => CommandResult::Applied { rev, renewed, create_rev: None },
            CommandResultV1::GuardFailed { key, current } => {
                CommandResult::GuardFailed { key, current: current.map(Versioned::from) }
            }
            CommandResultV1::NoOp { rev } => CommandResult::NoOp { rev },
            CommandResultV1::NoSession { session } => CommandResult::NoSession { session: SessionId(session) },
            CommandResultV1::Stale { last_seq } => CommandResult::Stale { last_seq },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;
    use std::path::Path;
    use std::time::Duration;

    use openraft::CommittedLeaderId;
    use openraft::Membership;

    use super::*;
    use crate::store::Store;
    use crate::store::STORE_FORMAT;
    use crate::typ::SnapshotMeta;
    use crate::PeerNode;

    const CACHE: u64 = 4 << 20;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn versioned(value: &str, create_rev: u64, mod_rev: u64, session: Option<u64>) -> VersionedV1 {
        VersionedV1 { value: value.into(), create_rev, mod_rev, session, updated_ms: 1000 * mod_rev }
    }

    /// A format 1 snapshot as a node wrote it: the leader key acquired at 2 and renewed at 4 by
    /// session 7, a config CAS that failed at 5, a session, and the results of those writes.
    fn old_snapshot() -> (SnapshotMeta, AppliedV1) {
        let nodes: BTreeMap<u64, PeerNode> =
            [(1, PeerNode { name: "pg1".into(), raft_addr: "127.0.0.1:1".into(), api_addr: String::new() })].into();
        let membership = StoredMembership::new(Some(log_id(1)), Membership::new(vec![BTreeSet::from([1])], nodes));
        let keys = [
            ("config".to_string(), versioned("{}", 3, 3, None)),
            ("leader".to_string(), versioned("pg1", 2, 4, Some(7))),
        ];
        let session = SessionV1 {
            node: 1,
            owner: "pg1".into(),
            ttl_ms: 30_000,
            granted_rev: 2,
            renewed_rev: 4,
            renewed_stamp_ms: 4000,
        };
        let dedup = [
            (11, DedupEntryV1 { seq: 2, result: CommandResultV1::Applied { rev: 4, renewed: Some(true) }, rev: 4 }),
            (
                12,
                DedupEntryV1 {
                    seq: 1,
                    result: CommandResultV1::GuardFailed {
                        key: "config".into(),
                        current: Some(versioned("{}", 3, 3, None)),
                    },
                    rev: 5,
                },
            ),
        ];
        let state = ClusterStateV1 {
            keys: keys.into(),
            sessions: [(7, session)].into(),
            clock_ms: 5000,
            dedup: dedup.into(),
            last_rev: 5,
            notify_seq: 0,
        };
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(5)),
            last_membership: membership.clone(),
            snapshot_id: "1-5-1".into(),
        };
        (meta, AppliedV1 { last_applied: Some(log_id(5)), membership, state })
    }

    /// Writes a format 1 directory at `dir`, with `snapshot` as its current snapshot.
    fn write_format_1(dir: &Path, snapshot: Option<(SnapshotMeta, AppliedV1)>) {
        let db = sled::Config::new().path(dir).open().unwrap();
        db.open_tree("meta").unwrap().insert(META_FORMAT, &[1u8]).unwrap();
        let snap = db.open_tree("snap").unwrap();
        if let Some((meta, applied)) = snapshot {
            let stored = StoredSnapshot { meta, data: codec::encode(&applied).unwrap() };
            snap.insert(SNAP_CURRENT, codec::encode(&stored).unwrap()).unwrap();
        }
        db.flush().unwrap();
    }

    /// Opens the store once sled's file lock of the dropped database is released (bounded wait).
    async fn open(dir: &Path) -> Store {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Store::open(dir, CACHE) {
                Err(e)
                    if e.to_string().contains("could not acquire lock") && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                res => return res.unwrap(),
            }
        }
    }

    #[tokio::test]
    async fn a_format_1_snapshot_is_read_and_rewritten_as_format_2() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, _) = old_snapshot();
        write_format_1(dir.path(), Some(old_snapshot()));
        let store = open(dir.path()).await;
        let state = store.current();
        let leader = state.get("leader").unwrap();
        assert_eq!((leader.value.as_str(), leader.create_rev, leader.mod_rev), ("pg1", 2, 4));
        assert_eq!(leader.session, Some(SessionId(7)));
        assert_eq!(state.sessions[&SessionId(7)].renewed_rev, 4);
        assert_eq!((state.clock_ms, state.last_rev), (5000, 5));
        assert_eq!(
            state.dedup[&11].result,
            CommandResult::Applied { rev: 4, renewed: Some(true), create_rev: None },
            "an old result keeps what it said and reports no create revision"
        );
        assert!(
            matches!(&state.dedup[&12].result, CommandResult::GuardFailed { key, current: Some(v) } if key == "config" && v.create_rev == 3)
        );
        assert_eq!(store.disk.meta.get(META_FORMAT).unwrap().as_deref(), Some(&[STORE_FORMAT][..]));
        let stored = read_snapshot(&store.disk).unwrap().unwrap();
        assert_eq!(stored.meta, meta, "the snapshot keeps its identity");
        let rewritten: Applied = codec::decode(&stored.data).unwrap();
        assert_eq!(rewritten.state, *state);
        drop((state, store));

        let reopened = open(dir.path()).await;
        assert_eq!(reopened.current().get("leader").map(|v| v.create_rev), Some(2), "format 2 opens as is");
    }

    #[tokio::test]
    async fn a_format_1_store_without_a_snapshot_only_gets_the_new_format() {
        let dir = tempfile::tempdir().unwrap();
        write_format_1(dir.path(), None);
        let store = open(dir.path()).await;
        assert!(store.current().keys.is_empty());
        assert!(store.disk.snap.is_empty());
        assert_eq!(store.disk.meta.get(META_FORMAT).unwrap().as_deref(), Some(&[STORE_FORMAT][..]));
    }
}
