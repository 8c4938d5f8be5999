//! The durable Raft storage of one node: a single sled database shared by the log store
//! ([`LogStore`]) and the state machine ([`StateMachineStore`]), opened through [`Store`].
//!
//! Layout of `<data_dir>`: sled's files, with three trees.
//! - `meta`: format version (older ones are upgraded by `migrate` on open), vote, committed log id,
//!   last purged log id, node identity.
//! - `log`: big-endian `u64` index → versioned bincode [`crate::typ::Entry`] (key order = index order).
//! - `snap`: the current snapshot (meta + bytes); the state machine itself lives in memory.
//!
//! Durability: a write counts as done only after [`Disk::make_durable`], which is sled's flush
//! *and* an fsync of sled's data file, because sled 0.34 flushes with `sync_file_range` on Linux,
//! which survives a process crash but not a power cut (sled #1452).
//! sled reads and writes run inline: they touch sled's page cache and in-memory log buffer, and
//! sled hands the buffer writes to its own thread pool. Only the waits for the disk leave the
//! runtime: the flush runs on sled's pool (`flush_async`) and the fsync on `spawn_blocking`.
//!
//! This module must not know about the network, PostgreSQL or the HA loop, and must not decide
//! anything about Raft: openraft drives it through the v2 storage traits.

pub mod codec;
mod log;
mod migrate;
mod sm;

use std::fs::File;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

pub use self::codec::CodecError;
pub use self::log::LogStore;
pub use self::sm::StateMachineStore;
use crate::error::RaftError;
use crate::state::ClusterState;

/// `meta` key of the store format version (one raw byte, not a codec record).
const META_FORMAT: &[u8] = b"format";
/// `meta` key of the vote.
const META_VOTE: &[u8] = b"vote";
/// `meta` key of the last committed log id.
const META_COMMITTED: &[u8] = b"committed";
/// `meta` key of the last purged log id.
const META_LAST_PURGED: &[u8] = b"last_purged";
/// `meta` key of the node identity `(node_id, cluster_id)`.
const META_IDENTITY: &[u8] = b"identity";
/// `snap` key of the current snapshot.
const SNAP_CURRENT: &[u8] = b"current";

/// Store layout version: bump it when a tree or key changes meaning, or a record's shape changes
/// (bincode cannot skip or default a field), and add the step from the previous one to `migrate`.
/// 1: the first; 2: `CommandResult::Applied` gained `create_rev` (in snapshots' dedup table).
const STORE_FORMAT: u8 = 2;

/// One node's Raft storage: the shared sled database plus the in-memory state machine.
///
/// Cloning is cheap and clones share everything.
#[derive(Clone)]
pub struct Store {
    disk: Arc<Disk>,
    sm: StateMachineStore,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with a sled page cache of `cache_capacity`
    /// bytes, and loads the current snapshot into the state machine.
    ///
    /// Blocking: it reads the snapshot and fsyncs, so call it at start-up or in `spawn_blocking`.
    pub fn open(dir: &Path, cache_capacity: u64) -> Result<Store, RaftError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| RaftError::io(format!("create data directory {}", dir.display()), e))?;
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_capacity)
            .open()
            .map_err(|e| storage_error(format!("open sled database at {}", dir.display()), e))?;
        let open_tree = |name: &str| {
            db.open_tree(name).map_err(|e| storage_error(format!("open tree {name} in {}", dir.display()), e))
        };
        let (meta, log, snap) = (open_tree("meta")?, open_tree("log")?, open_tree("snap")?);
        let data_path = dir.join("db");
        let data_file = File::open(&data_path)
            .map_err(|e| RaftError::io(format!("open sled data file {}", data_path.display()), e))?;
        let disk = Arc::new(Disk { dir: dir.to_path_buf(), db, meta, log, snap, data_file: Arc::new(data_file) });
        disk.check_format()?;
        let sm = StateMachineStore::load(disk.clone())?;
        tracing::info!(dir = %dir.display(), cache_capacity, "opened raft store");
        Ok(Store { disk, sm })
    }

    /// The Raft log store (vote, log, committed); clones share this store.
    pub fn log_store(&self) -> LogStore {
        LogStore::new(self.disk.clone())
    }

    /// The state machine; clones share this store's in-memory state.
    pub fn state_machine(&self) -> StateMachineStore {
        self.sm.clone()
    }

    /// True when this store has never taken part in a cluster: no vote, no log entry, no snapshot,
    /// nothing purged. Only a pristine node may consider calling `initialize`.
    pub fn is_pristine(&self) -> Result<bool, RaftError> {
        let disk = &self.disk;
        let has_meta = |key: &[u8]| {
            disk.meta.contains_key(key).map_err(|e| storage_error(format!("read {}", disk.dir.display()), e))
        };
        let touched = has_meta(META_VOTE)?
            || has_meta(META_LAST_PURGED)?
            || has_meta(META_COMMITTED)?
            || !disk.log.is_empty()
            || !disk.snap.is_empty();
        Ok(!touched)
    }

    /// The node identity `(node_id, cluster_id)` recorded by [`Store::set_identity`], if any.
    pub fn identity(&self) -> Result<Option<(u64, u64)>, RaftError> {
        self.disk.get_meta(META_IDENTITY).map_err(|e| e.into_raft("read node identity"))
    }

    /// Records the node identity `(node_id, cluster_id)` durably. The caller compares it with
    /// [`Store::identity`] first: a data directory must never change identity.
    pub async fn set_identity(&self, node_id: u64, cluster_id: u64) -> Result<(), RaftError> {
        self.disk.put_meta(META_IDENTITY, &(node_id, cluster_id)).map_err(|e| e.into_raft("write node identity"))?;
        self.disk.make_durable().await.map_err(|e| RaftError::io("flush node identity", e))?;
        tracing::info!(node_id, cluster_id, "recorded node identity");
        Ok(())
    }

    /// A receiver of the applied state, updated after every apply batch and snapshot install.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.sm.subscribe()
    }

    /// The latest applied state.
    pub fn current(&self) -> Arc<ClusterState> {
        self.sm.current()
    }

    /// Makes every write so far durable (flush + fsync); the last step of shutdown.
    pub async fn flush(&self) -> Result<(), RaftError> {
        self.disk.make_durable().await.map_err(|e| RaftError::io(format!("flush {}", self.disk.dir.display()), e))
    }
}

/// The sled handles shared by the log store and the state machine.
pub(crate) struct Disk {
    dir: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    log: sled::Tree,
    snap: sled::Tree,
    /// sled's data file `<dir>/db`, kept open for fsync.
    data_file: Arc<File>,
}

impl Disk {
    /// Flushes sled and fsyncs its files: after this, every earlier write survives a power cut.
    ///
    /// sled recovers a prefix of its log, so one flush covers all trees and all earlier writes.
    pub(crate) async fn make_durable(&self) -> io::Result<()> {
        self.db.flush_async().await.map_err(io::Error::other)?;
        let data_file = self.data_file.clone();
        let blobs_dir = self.dir.join("blobs");
        tokio::task::spawn_blocking(move || fsync_files(&data_file, &blobs_dir)).await.map_err(io::Error::other)?
    }

    /// [`Disk::make_durable`] for blocking callers.
    fn make_durable_blocking(&self) -> io::Result<()> {
        self.db.flush().map_err(io::Error::other)?;
        fsync_files(&self.data_file, &self.dir.join("blobs"))
    }

    /// Reads and decodes a `meta` record.
    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DiskError> {
        match self.meta.get(key)? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Encodes and writes a `meta` record (not yet durable).
    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), DiskError> {
        self.meta.insert(key, codec::encode(value)?)?;
        Ok(())
    }

    /// Upgrades a directory written by an older store format, refuses any other format; stamps a
    /// new one.
    fn check_format(&self) -> Result<(), RaftError> {
        let context = || format!("read store format of {}", self.dir.display());
        match self.meta.get(META_FORMAT).map_err(|e| storage_error(context(), e))? {
            Some(found) if found.as_ref() == [STORE_FORMAT] => Ok(()),
            Some(found) if found.as_ref() == [1] => migrate::format_1_to_2(self)
                .map_err(|e| e.into_raft(&format!("upgrade the store format of {} from 1 to 2", self.dir.display()))),
            Some(found) => Err(RaftError::Storage(format!(
                "{}: store format {:?} is not the format {STORE_FORMAT} this build reads",
                self.dir.display(),
                found.as_ref()
            ))),
            None => {
                self.meta.insert(META_FORMAT, &[STORE_FORMAT]).map_err(|e| storage_error(context(), e))?;
                self.make_durable_blocking()
                    .map_err(|e| RaftError::io(format!("flush new store in {}", self.dir.display()), e))?;
                // The data file is new too: make its directory entry durable.
                File::open(&self.dir)
                    .and_then(|dir| dir.sync_all())
                    .map_err(|e| RaftError::io(format!("fsync directory {}", self.dir.display()), e))
            }
        }
    }
}

/// fsyncs sled's data file and any blob file.
///
/// sled writes values over 128 KiB (a quarter segment) to `blobs/<lsn>` without ever syncing them,
/// so a big snapshot or a big key would otherwise be lost on power failure.
fn fsync_files(data_file: &File, blobs_dir: &Path) -> io::Result<()> {
    data_file.sync_all()?;
    let blobs = match std::fs::read_dir(blobs_dir) {
        Ok(blobs) => blobs,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut n_synced = 0;
    for blob in blobs {
        match File::open(blob?.path()).and_then(|f| f.sync_all()) {
            Ok(()) => n_synced += 1,
            // sled garbage-collects blobs concurrently.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if n_synced > 0 {
        File::open(blobs_dir)?.sync_all()?;
    }
    Ok(())
}

/// What can go wrong reading or writing a record.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiskError {
    /// sled failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// A file operation (flush, fsync) failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A record did not encode or decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A `log` key is not 8 bytes long.
    #[error("log key of {len} bytes is not a big-endian u64 index")]
    BadKey {
        /// The key's length.
        len: usize,
    },
    /// A `log` record does not hold the entry its key names.
    #[error("log key {key} holds the entry of index {found}")]
    MisplacedEntry {
        /// The index in the key.
        key: u64,
        /// The index of the entry stored under it.
        found: u64,
    },
}

impl DiskError {
    fn into_raft(self, context: &str) -> RaftError {
        RaftError::Storage(format!("{context}: {self}"))
    }
}

fn storage_error(context: String, e: impl std::fmt::Display) -> RaftError {
    RaftError::Storage(format!("{context}: {e}"))
}
