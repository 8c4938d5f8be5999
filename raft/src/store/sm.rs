//! The state machine store: openraft's `RaftStateMachine` over the in-memory [`ClusterState`],
//! with snapshots kept durably in the `snap` tree, and the applied state published to readers.
//!
//! Owns the `snap` tree and the in-memory state (cluster state, last applied log id, last
//! membership). It must not interpret commands itself (that is [`ClusterState::apply`]), must not
//! read a clock, and must not merge a received snapshot into the old state: installing replaces
//! the whole state, so keys deleted on the leader cannot survive here.

use std::io::Cursor;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;

use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::StorageIOError;
use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use super::codec;
use super::Disk;
use super::DiskError;
use super::SNAP_CURRENT;
use crate::command::CommandResult;
use crate::error::RaftError;
use crate::state::ClusterState;
use crate::typ::Entry;
use crate::typ::LogId;
use crate::typ::Snapshot;
use crate::typ::SnapshotMeta;
use crate::typ::StorageError;
use crate::typ::StoredMembership;
use crate::TypeConfig;

/// Largest snapshot accepted from a peer (64 MiB); ours are a few KiB.
const MAX_SNAPSHOT_BYTES: usize = 64 << 20;

/// The replicated state machine of one node; clones share the same state.
#[derive(Clone)]
pub struct StateMachineStore {
    disk: Arc<Disk>,
    shared: Arc<Shared>,
}

/// What clones of a [`StateMachineStore`] share.
struct Shared {
    applied: Mutex<Applied>,
    published: watch::Sender<Arc<ClusterState>>,
    /// Distinguishes snapshots built at the same log id.
    n_built: AtomicU64,
    /// Serialises snapshot writes, so a slow build cannot overwrite a newer snapshot.
    snapshot_write: tokio::sync::Mutex<()>,
}

/// The snapshot bytes: the whole applied state. An on-disk and wire format: a change of its
/// shape (or of anything in it, such as `CommandResult` in the dedup table) needs a store format
/// step (`super::migrate`) and a new peer protocol version.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct Applied {
    pub(super) last_applied: Option<LogId>,
    pub(super) membership: StoredMembership,
    pub(super) state: ClusterState,
}

/// The `snap` tree record: the current snapshot's metadata and bytes.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta,
    pub(super) data: Vec<u8>,
}

/// Whether a snapshot write replaces a newer stored snapshot.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// Always (an installed snapshot is what the leader says the state is).
    Always,
    /// Only when the stored one is not newer (a built snapshot may have raced an install).
    IfNotOlder,
}

impl StateMachineStore {
    /// Builds the state machine from the current snapshot in `disk`, if any.
    pub(super) fn load(disk: Arc<Disk>) -> Result<Self, RaftError> {
        let applied = match read_snapshot(&disk).map_err(|e| e.into_raft("read current snapshot"))? {
            Some(stored) => {
                let applied: Applied = codec::decode(&stored.data)
                    .map_err(|e| RaftError::Storage(format!("decode current snapshot: {e}")))?;
                tracing::info!(snapshot_id = %stored.meta.snapshot_id, "loaded snapshot into state machine");
                Applied { last_applied: stored.meta.last_log_id, membership: stored.meta.last_membership, ..applied }
            }
            None => Applied::default(),
        };
        let (published, _) = watch::channel(Arc::new(applied.state.clone()));
        let shared = Shared {
            applied: Mutex::new(applied),
            published,
            n_built: AtomicU64::new(0),
            snapshot_write: tokio::sync::Mutex::new(()),
        };
        Ok(StateMachineStore { disk, shared: Arc::new(shared) })
    }

    /// A receiver of the applied state, updated after every apply batch and snapshot install.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.shared.published.subscribe()
    }

    /// The latest applied state.
    pub fn current(&self) -> Arc<ClusterState> {
        self.shared.published.borrow().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        self.shared.applied.lock().expect("state machine lock poisoned: a panic while applying is a bug")
    }

    /// Stores a snapshot as current and makes it durable; false when a newer one was kept.
    async fn save_snapshot(&self, stored: &StoredSnapshot, replace: Replace) -> Result<bool, StorageError> {
        let res = self.try_save_snapshot(stored, replace).await;
        res.map_err(|e| StorageIOError::write_snapshot(Some(stored.meta.signature()), &e).into())
    }

    async fn try_save_snapshot(&self, stored: &StoredSnapshot, replace: Replace) -> Result<bool, DiskError> {
        let _serial = self.shared.snapshot_write.lock().await;
        if replace == Replace::IfNotOlder {
            let current = read_snapshot(&self.disk)?;
            if current.is_some_and(|current| current.meta.last_log_id > stored.meta.last_log_id) {
                return Ok(false);
            }
        }
        self.disk.snap.insert(SNAP_CURRENT, codec::encode(stored)?)?;
        self.disk.make_durable().await?;
        Ok(true)
    }
}

pub(super) fn read_snapshot(disk: &Disk) -> Result<Option<StoredSnapshot>, DiskError> {
    match disk.snap.get(SNAP_CURRENT)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let applied = self.lock().clone();
        let n_built = self.shared.n_built.fetch_add(1, Ordering::Relaxed) + 1;
        let (term, index) = applied.last_applied.map_or((0, 0), |log_id| (log_id.leader_id.term, log_id.index));
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id: format!("{term}-{index}-{n_built}"),
        };
        let data = codec::encode(&applied).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot { meta, data };
        let saved = self.save_snapshot(&stored, Replace::IfNotOlder).await?;
        tracing::info!(snapshot_id = %stored.meta.snapshot_id, bytes = stored.data.len(), saved, "built snapshot");
        Ok(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let state = {
            let mut applied = self.lock();
            for entry in entries {
                let log_id = entry.log_id;
                let result = match entry.payload {
                    EntryPayload::Blank => applied.state.apply_marker(log_id.index),
                    EntryPayload::Normal(envelope) => applied.state.apply(log_id.index, &envelope),
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(log_id), membership);
                        applied.state.apply_marker(log_id.index)
                    }
                };
                applied.last_applied = Some(log_id);
                results.push(result);
            }
            (!results.is_empty()).then(|| Arc::new(applied.state.clone()))
        };
        if let Some(state) = state {
            self.shared.published.send_replace(state);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let received: Applied = codec::decode_limited::<_, MAX_SNAPSHOT_BYTES>(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        self.save_snapshot(&stored, Replace::Always).await?;
        // Replace, never merge: a key the snapshot lacks must vanish.
        let installed =
            Applied { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), state: received.state };
        let state = Arc::new(installed.state.clone());
        *self.lock() = installed;
        self.shared.published.send_replace(state);
        tracing::info!(snapshot_id = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = read_snapshot(&self.disk).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(stored.map(|stored| Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::collections::BTreeSet;

    use openraft::storage::RaftLogStorage;
    use openraft::CommittedLeaderId;
    use openraft::Membership;

    use super::*;
    use crate::command::Command;
    use crate::command::Envelope;
    use crate::command::Guard;
    use crate::store::Store;
    use crate::PeerNode;

    const CACHE: u64 = 4 << 20;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn put(index: u64, key: &str) -> Entry {
        let cmd = Command::put(key, format!("value-{index}"), Guard::Always);
        let envelope = Envelope { origin: 9, seq: index, stamp_ms: 1000 + index, cmd };
        Entry { log_id: log_id(index), payload: EntryPayload::Normal(envelope) }
    }

    fn membership(index: u64) -> Entry {
        let nodes: BTreeMap<u64, PeerNode> =
            [(1, PeerNode { name: "pg1".into(), raft_addr: "127.0.0.1:1".into(), api_addr: String::new() })].into();
        let membership = Membership::new(vec![BTreeSet::from([1])], nodes);
        Entry { log_id: log_id(index), payload: EntryPayload::Membership(membership) }
    }

    #[tokio::test]
    async fn install_snapshot_clears_stale_keys() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store_a = Store::open(dir_a.path(), CACHE).unwrap();
        let mut sm_a = store_a.state_machine();
        sm_a.apply([membership(1), put(2, "stale"), put(3, "kept")]).await.unwrap();
        let mut watcher = store_a.subscribe();
        watcher.borrow_and_update();

        let store_b = Store::open(dir_b.path(), CACHE).unwrap();
        let mut sm_b = store_b.state_machine();
        sm_b.apply([membership(1), put(2, "kept"), put(3, "fresh"), put(4, "fresh")]).await.unwrap();
        let snapshot = sm_b.get_snapshot_builder().await.build_snapshot().await.unwrap();

        sm_a.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        let state = store_a.current();
        assert!(state.get("stale").is_none(), "a key the snapshot lacks survived the install");
        assert_eq!(state.get("fresh").map(|v| v.value.as_str()), Some("value-4"));
        assert_eq!(state.get("kept").map(|v| v.mod_rev), Some(2));
        assert_eq!(*state, *store_b.current());
        assert!(watcher.has_changed().unwrap(), "install did not publish the new state");
        assert_eq!(sm_a.applied_state().await.unwrap().0, Some(log_id(4)));
        let current = sm_a.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);

        drop((sm_a, store_a, watcher));
        let reopened = Store::open(dir_a.path(), CACHE).unwrap();
        assert!(reopened.current().get("stale").is_none());
        assert_eq!(*reopened.current(), *store_b.current());
    }

    #[tokio::test]
    async fn snapshot_round_trips_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE).unwrap();
        let mut sm = store.state_machine();
        let results = sm.apply([membership(1), put(2, "leader"), put(3, "config"), put(4, "leader")]).await.unwrap();
        assert_eq!(results.len(), 4);
        // The put at index 4 rewrote `leader`, created at index 2.
        assert_eq!(results[3], CommandResult::Applied { rev: 4, renewed: None, create_rev: Some(2) });
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.snapshot_id, "1-4-1");
        let applied = sm.applied_state().await.unwrap();
        let state = store.current();
        drop((sm, store));

        let store = Store::open(dir.path(), CACHE).unwrap();
        let mut sm = store.state_machine();
        assert_eq!(sm.applied_state().await.unwrap(), applied);
        assert_eq!(applied.1.log_id(), &Some(log_id(1)));
        assert_eq!(store.current(), state);
        assert_eq!(*store.subscribe().borrow(), state);
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, snapshot.meta);
        assert_eq!(current.snapshot.into_inner(), snapshot.snapshot.into_inner());
    }

    #[tokio::test]
    async fn an_older_build_does_not_replace_a_newer_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE).unwrap();
        let mut sm = store.state_machine();
        sm.apply([membership(1), put(2, "a")]).await.unwrap();
        let mut old_builder = sm.get_snapshot_builder().await;
        let stale = Applied { last_applied: Some(log_id(2)), ..old_builder.lock().clone() };
        sm.apply([put(3, "b")]).await.unwrap();
        let newer = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        // Simulate a build that captured the state before index 3 and finishes last.
        *old_builder.lock() = stale;
        old_builder.build_snapshot().await.unwrap();
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(current.meta, newer.meta);
    }

    /// Opens the store at `dir` again once the dropped one released sled's file lock: its flusher and the
    /// tasks that held clones of the database let go asynchronously (bounded wait on that condition).
    async fn reopen(dir: &std::path::Path) -> Result<Store, crate::RaftError> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(dir, CACHE) {
                Err(e)
                    if e.to_string().contains("could not acquire lock") && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                res => return res,
            }
        }
    }

    #[tokio::test]
    async fn pristine_until_voted_and_identity_persists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE).unwrap();
        assert!(store.is_pristine().unwrap());
        assert_eq!(store.identity().unwrap(), None);
        store.set_identity(2, 0xfeed).await.unwrap();
        assert!(store.is_pristine().unwrap(), "the identity alone does not make a node a member");
        store.log_store().save_vote(&crate::typ::Vote::new(1, 2)).await.unwrap();
        assert!(!store.is_pristine().unwrap());
        drop(store);

        let store = reopen(dir.path()).await.unwrap();
        assert_eq!(store.identity().unwrap(), Some((2, 0xfeed)));
        assert!(!store.is_pristine().unwrap());
    }

    #[tokio::test]
    async fn unknown_store_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), CACHE).unwrap();
        store.disk.meta.insert(super::super::META_FORMAT, &[99u8]).unwrap();
        store.flush().await.unwrap();
        drop(store);
        let err = reopen(dir.path()).await.err().expect("format 99 must be refused");
        assert!(err.to_string().contains("store format [99]"), "{err}");
    }
}
