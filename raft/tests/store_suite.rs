//! openraft's storage conformance suite (`Suite::test_all`) against the sled store in a temp dir.
//!
//! Owns only the builder glue; it must not weaken the suite (every test of it runs).

use openraft::testing::StoreBuilder;
use openraft::testing::Suite;
use openraft::StorageIOError;
use raft::store::LogStore;
use raft::store::StateMachineStore;
use raft::store::Store;
use raft::typ::StorageError;
use raft::TypeConfig;
use tempfile::TempDir;

/// A small cache: the suite's stores hold a few entries each.
const CACHE_CAPACITY: u64 = 4 << 20;

/// Builds a fresh store in its own temp dir; the dir is the guard, removed after each test.
struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().map_err(|e| StorageIOError::write(&e))?;
        let store = Store::open(dir.path(), CACHE_CAPACITY).map_err(|e| StorageIOError::write(&e))?;
        Ok((dir, store.log_store(), store.state_machine()))
    }
}

#[test]
fn sled_store_passes_openraft_suite() {
    Suite::test_all(SledStoreBuilder).unwrap();
}
