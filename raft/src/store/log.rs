//! The Raft log store on sled: openraft's `RaftLogStorage` (vote, log entries, committed id,
//! truncate and purge) and its `RaftLogReader`.
//!
//! Owns the `log` tree and the vote/committed/last-purged keys of the `meta` tree.
//! It must not report a write as done before it is durable: `save_vote` returns, and `append`
//! calls `log_io_completed`, only after [`Disk::make_durable`]. It must not leave holes:
//! truncation removes a suffix in one atomic batch, and a purge removes a prefix in the same sled
//! transaction that records `last_purged`.

use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::time::Instant;

use openraft::storage::LogFlushed;
use openraft::storage::RaftLogStorage;
use openraft::LogState;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::StorageIOError;
use sled::transaction::ConflictableTransactionError;
use sled::transaction::TransactionError;
use sled::Transactional;

use super::codec;
use super::Disk;
use super::DiskError;
use super::META_COMMITTED;
use super::META_LAST_PURGED;
use super::META_VOTE;
use crate::typ::Entry;
use crate::typ::LogId;
use crate::typ::StorageError;
use crate::typ::Vote;
use crate::TypeConfig;

/// The Raft log, vote and commit index of one node; clones share the same sled trees.
#[derive(Clone)]
pub struct LogStore {
    disk: Arc<Disk>,
}

impl LogStore {
    pub(super) fn new(disk: Arc<Disk>) -> Self {
        LogStore { disk }
    }

    /// Reads the consecutive entries at the start of `range` that are present.
    fn read_range(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, DiskError> {
        let start = match range.start_bound() {
            Bound::Included(&index) => index,
            Bound::Excluded(&index) => match index.checked_add(1) {
                Some(index) => index,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&index) if index < start => return Ok(Vec::new()),
            Bound::Excluded(&index) if index <= start => return Ok(Vec::new()),
            Bound::Included(&index) => Bound::Included(index.to_be_bytes()),
            Bound::Excluded(&index) => Bound::Excluded(index.to_be_bytes()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries: Vec<Entry> = Vec::new();
        for item in self.disk.log.range((Bound::Included(start.to_be_bytes()), end)) {
            let (key, value) = item?;
            let entry = decode_entry(&key, &value)?;
            if entries.last().is_some_and(|prev| prev.log_id.index + 1 != entry.log_id.index) {
                // A gap: only the consecutive run may be returned.
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, DiskError> {
        let last_purged_log_id: Option<LogId> = self.disk.get_meta(META_LAST_PURGED)?;
        let last_log_id = match self.disk.log.last()? {
            Some((key, value)) => Some(decode_entry(&key, &value)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    /// Writes a batch of entries (not yet durable); returns the last log id written.
    fn write_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<Option<LogId>, DiskError> {
        let mut batch = sled::Batch::default();
        let mut last = None;
        for entry in entries {
            batch.insert(&entry.log_id.index.to_be_bytes(), codec::encode(&entry)?);
            last = Some(entry.log_id);
        }
        self.disk.log.apply_batch(batch)?;
        Ok(last)
    }

    /// Removes the entries at `since` and after, in one atomic batch (not yet durable).
    fn remove_suffix(&self, since: u64) -> Result<usize, DiskError> {
        let mut batch = sled::Batch::default();
        let mut n_removed = 0;
        for key in self.disk.log.range(since.to_be_bytes()..).keys() {
            batch.remove(key?);
            n_removed += 1;
        }
        self.disk.log.apply_batch(batch)?;
        Ok(n_removed)
    }

    /// Records `upto` as last purged and removes the entries up to it, in one sled transaction
    /// over `meta` and `log` (not yet durable).
    fn remove_prefix(&self, upto: LogId) -> Result<usize, DiskError> {
        let purged = codec::encode(&upto)?;
        let keys = self
            .disk
            .log
            .range(..=upto.index.to_be_bytes())
            .keys()
            .collect::<Result<Vec<sled::IVec>, sled::Error>>()?;
        let res = (&self.disk.meta, &self.disk.log).transaction(|(meta, log)| {
            meta.insert(META_LAST_PURGED, purged.as_slice())?;
            for key in &keys {
                log.remove(key)?;
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match res {
            Ok(()) => Ok(keys.len()),
            Err(TransactionError::Storage(e)) => Err(DiskError::Sled(e)),
            Err(TransactionError::Abort(())) => {
                Err(DiskError::Sled(sled::Error::Unsupported("purge transaction aborted without a reason".to_string())))
            }
        }
    }
}

/// Decodes a `log` record and checks that it sits under its own index.
fn decode_entry(key: &[u8], value: &[u8]) -> Result<Entry, DiskError> {
    let key: [u8; 8] = key.try_into().map_err(|_| DiskError::BadKey { len: key.len() })?;
    let key = u64::from_be_bytes(key);
    let entry: Entry = codec::decode(value)?;
    if entry.log_id.index != key {
        return Err(DiskError::MisplacedEntry { key, found: entry.log_id.index });
    }
    Ok(entry)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_range(range).map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        self.log_state().map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.disk.put_meta(META_VOTE, vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.disk.make_durable().await.map_err(|e| StorageIOError::write_vote(&e))?;
        tracing::debug!(vote = %vote, "saved vote");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.disk.get_meta(META_VOTE).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// Written without an fsync: losing the last update is harmless (the leader resends the commit
    /// index), and sled recovers a prefix of its log, so a recovered commit id never runs ahead of
    /// the entries written before it.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let res = match committed {
            Some(log_id) => self.disk.put_meta(META_COMMITTED, &log_id),
            None => self.disk.meta.remove(META_COMMITTED).map(|_| ()).map_err(DiskError::from),
        };
        res.map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.disk.get_meta(META_COMMITTED).map_err(|e| StorageIOError::read(&e).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let written = match self.write_entries(entries) {
            Ok(last) => last,
            Err(e) => return Err(report_failure(callback, StorageIOError::write_logs(&e))),
        };
        if let Err(e) = self.disk.make_durable().await {
            return Err(report_failure(callback, StorageIOError::write_logs(&e)));
        }
        // Only now, with the entries on disk, may openraft count them (towards the quorum, too).
        callback.log_io_completed(Ok(()));
        tracing::debug!(
            last_index = written.map(|log_id| log_id.index),
            elapsed_us = started.elapsed().as_micros() as u64,
            "appended log entries"
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let n_removed = self.remove_suffix(log_id.index).map_err(|e| StorageIOError::write_logs(&e))?;
        self.disk.make_durable().await.map_err(|e| StorageIOError::write_logs(&e))?;
        tracing::debug!(since = log_id.index, n_removed, "truncated log");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let n_removed = self.remove_prefix(log_id).map_err(|e| StorageIOError::write_logs(&e))?;
        self.disk.make_durable().await.map_err(|e| StorageIOError::write_logs(&e))?;
        tracing::debug!(upto = log_id.index, n_removed, "purged log");
        Ok(())
    }
}

/// Tells openraft the append failed, and returns the error for the caller to propagate.
fn report_failure(callback: LogFlushed<TypeConfig>, err: StorageIOError<u64>) -> StorageError {
    callback.log_io_completed(Err(io::Error::other(err.clone())));
    err.into()
}
