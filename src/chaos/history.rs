//! What a chaos run records: client writes, write probes, leader-key grants seen, faults.
//! Plain data, filled by the workload, the sampler and the fault loop, read by the pure checkers.
//! Times are milliseconds since the run started, on one monotonic clock.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;

use tokio::time::Instant;

use super::schedule::FaultKind;

/// How a write ended for the client that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: the commit returned success.
    Acked,
    /// Certainly not committed: the connection never opened or the server refused the statement
    /// (read-only, shutting down) before running it.
    Failed,
    /// Sent, but no answer: timed out or the connection broke; it may or may not have committed.
    Unknown,
}

/// One client insert of a unique id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOp {
    /// The unique id inserted.
    pub id: i64,
    /// The client (0-based).
    pub client: usize,
    /// The node (1-based) the client sent it to.
    pub node: usize,
    /// When it was sent.
    pub sent_ms: u64,
    /// When the answer (or the timeout) came.
    pub done_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// One write probe on one node: an insert into the probe table with `synchronous_commit = local`,
/// so a node that accepts writes at all is seen, whatever synchronous replication does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The node probed (1-based).
    pub node: usize,
    /// When the insert was sent.
    pub sent_ms: u64,
    /// When it was acknowledged (or failed).
    pub done_ms: u64,
    /// Whether the node committed it.
    pub accepted: bool,
    /// The fencing token (leader key create revision) the node's own view said it held, read
    /// just before and just after the insert (the larger); `None` when it held none or did not answer.
    pub token: Option<u64>,
    /// The node's flushed WAL position (`pg_current_wal_flush_lsn()`) read with an accepted probe.
    pub wal_lsn: Option<u64>,
}

/// A leader key seen in some node's view: `holder` holds it with `token` no later than `seen_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// When the view that showed it was received.
    pub seen_ms: u64,
    /// The holder (1-based node index).
    pub holder: usize,
    /// The key's create revision.
    pub token: u64,
}

/// One injected fault, for the report and the timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRecord {
    /// What was done.
    pub kind: FaultKind,
    /// To which nodes (1-based).
    pub nodes: Vec<usize>,
    /// A short description (`node2 raft outbound`).
    pub detail: String,
    /// When the fault started.
    pub started_ms: u64,
    /// When it was healed.
    pub healed_ms: u64,
    /// When the cluster was healthy again (one primary, streaming replicas); `None` if it did not
    /// recover within the bound.
    pub recovered_ms: Option<u64>,
}

/// Everything recorded, shared between the recording tasks.
#[derive(Debug, Default)]
pub struct History {
    /// Client writes.
    pub writes: Vec<WriteOp>,
    /// Write probes.
    pub probes: Vec<Probe>,
    /// Leader-key grants seen (deduplicated on holder and token, first sighting kept).
    pub grants: Vec<Grant>,
    /// Faults.
    pub faults: Vec<FaultRecord>,
}

/// The run's clock and history, cheap to clone into tasks.
#[derive(Debug, Clone)]
pub struct Recorder {
    start: Instant,
    history: Arc<Mutex<History>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder { start: Instant::now(), history: Arc::default() }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Runs `update` on the history under its lock.
    pub fn with<T>(&self, update: impl FnOnce(&mut History) -> T) -> T {
        // A poisoned lock means a recording task panicked mid-push; the data is still usable.
        update(&mut self.history.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records a grant unless the same holder and token were already seen.
    pub fn grant(&self, grant: Grant) {
        self.with(|history| {
            if !history.grants.iter().any(|g| g.holder == grant.holder && g.token == grant.token) {
                history.grants.push(grant);
            }
        });
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}
