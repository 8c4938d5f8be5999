//! kill -9 tests of the sled store: nothing acknowledged may be lost, and no hole may appear.
//!
//! Each parent test re-runs this test binary as a child (`--exact <child> --nocapture`) with
//! `RAFTGRES_CRASH_CHILD_DIR` set; the child tests return at once when it is absent.
//! The child writes, and prints `ACK <index>` only after `log_io_completed` fired (and
//! `VOTE <term>` after `save_vote` returned); the parent SIGKILLs it mid-stream, reopens the
//! store and checks every acknowledged write. No timing is asserted; `durable_append_latency`
//! only prints what it measured.

// Test helpers outside `#[test]` fns: a failed unwrap is the test failing, with its location.
#![allow(clippy::unwrap_used)]

use std::io::BufRead;
use std::io::BufReader;
use std::io::Write;
use std::path::Path;
use std::process::Command as Process;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use openraft::storage::RaftLogStorage;
use openraft::storage::RaftLogStorageExt;
use openraft::CommittedLeaderId;
use openraft::EntryPayload;
use openraft::RaftLogReader;
use raft::store::LogStore;
use raft::store::Store;
use raft::typ::Entry;
use raft::typ::LogId;
use raft::typ::Vote;
use raft::Command;
use raft::Envelope;
use raft::Guard;

/// Tells a child test where its store lives; absent, the child tests do nothing.
const CHILD_DIR_ENV: &str = "RAFTGRES_CRASH_CHILD_DIR";
/// Acknowledged appends the parent waits for before the kill.
const ACKS_BEFORE_KILL: u64 = 200;
/// Upper bound on a child's batches, so an orphaned child ends by itself.
const MAX_BATCHES: u64 = 100_000;
const CACHE_CAPACITY: u64 = 4 << 20;
const NODE_ID: u64 = 1;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, NODE_ID), index)
}

/// The entry at `index` written in `term`: its payload names both, so a stale one is detected.
fn entry(term: u64, index: u64) -> Entry {
    let cmd = Command::put(format!("members/pg{index}"), format!("term {term} index {index}"), Guard::Always);
    let envelope = Envelope { origin: 7, seq: index, stamp_ms: 1_700_000_000_000 + index, cmd };
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(envelope) }
}

/// Batch `n_batch` holds 1 to 5 entries, so batches of every size get killed mid-flight.
fn batch_len(n_batch: u64) -> u64 {
    1 + n_batch % 5
}

/// Prefix of the child's report lines: libtest may print `test <name> ... ` on the same line.
const MARK: &str = "@crash ";

fn say(line: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{MARK}{line}").unwrap();
    stdout.flush().unwrap();
}

fn child_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(CHILD_DIR_ENV).map(Into::into)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// Appends `from..` in `term` batch after batch, acknowledging each; returns the next index.
async fn append_acknowledged(log: &mut LogStore, term: u64, from: u64, n_batches: u64) -> u64 {
    let mut next = from;
    for n_batch in 0..n_batches {
        let len = batch_len(n_batch);
        log.blocking_append((next..next + len).map(|index| entry(term, index))).await.unwrap();
        next += len;
        say(&format!("ACK {}", next - 1));
    }
    next
}

#[test]
fn child_append_until_killed() {
    let Some(dir) = child_dir() else { return };
    runtime().block_on(async {
        let store = Store::open(&dir, CACHE_CAPACITY).unwrap();
        let mut log = store.log_store();
        let mut next = 1;
        // A new vote every 50 batches; 50 is a multiple of 5, so batch sizes keep cycling.
        for vote_term in 1..=MAX_BATCHES / 50 {
            log.save_vote(&Vote::new(vote_term, NODE_ID)).await.unwrap();
            say(&format!("VOTE {vote_term}"));
            next = append_acknowledged(&mut log, 1, next, 50).await;
        }
    });
}

#[test]
fn child_truncate_purge_then_append() {
    let Some(dir) = child_dir() else { return };
    runtime().block_on(async {
        let store = Store::open(&dir, CACHE_CAPACITY).unwrap();
        let mut log = store.log_store();
        log.save_vote(&Vote::new(1, NODE_ID)).await.unwrap();
        log.blocking_append((1..=100).map(|index| entry(1, index))).await.unwrap();
        log.purge(log_id(1, 30)).await.unwrap();
        log.truncate(log_id(1, 80)).await.unwrap();
        say("REWRITTEN");
        append_acknowledged(&mut log, 2, 80, MAX_BATCHES).await;
    });
}

/// What the parent read from the child before and after the kill.
#[derive(Default)]
struct Heard {
    last_ack: u64,
    n_acks: u64,
    last_vote: u64,
    rewritten: bool,
}

impl Heard {
    fn take(&mut self, line: &str) {
        let Some((_, line)) = line.split_once(MARK) else { return };
        if let Some(index) = line.strip_prefix("ACK ") {
            let index: u64 = index.parse().unwrap();
            assert!(index > self.last_ack, "acks must grow: {index} after {}", self.last_ack);
            self.last_ack = index;
            self.n_acks += 1;
        } else if let Some(term) = line.strip_prefix("VOTE ") {
            self.last_vote = term.parse().unwrap();
        } else if line == "REWRITTEN" {
            self.rewritten = true;
        }
    }
}

/// Runs child test `name` on `dir`, SIGKILLs it after `ACKS_BEFORE_KILL` acks, and returns
/// everything it acknowledged (including lines still in the pipe at the kill).
fn run_child_and_kill(name: &str, dir: &Path) -> Heard {
    let exe = std::env::current_exe().unwrap();
    let mut child = Process::new(exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut heard = Heard::default();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        heard.take(&line.unwrap());
        if !killed && heard.n_acks >= ACKS_BEFORE_KILL {
            // Child::kill sends SIGKILL on unix: no destructor, no sled flush on drop.
            child.kill().unwrap();
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(killed, "child {name} ended after {} acks: {status}", heard.n_acks);
    heard
}

#[test]
fn acknowledged_appends_and_vote_survive_sigkill() {
    if child_dir().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let heard = run_child_and_kill("child_append_until_killed", dir.path());
    runtime().block_on(async {
        let store = Store::open(dir.path(), CACHE_CAPACITY).unwrap();
        let mut log = store.log_store();
        let vote = log.read_vote().await.unwrap();
        // The next vote may have become durable before the child could print it.
        let expected = [Vote::new(heard.last_vote, NODE_ID), Vote::new(heard.last_vote + 1, NODE_ID)];
        assert!(vote.is_some_and(|vote| expected.contains(&vote)), "vote {vote:?} after VOTE {}", heard.last_vote);

        let entries = log.try_get_log_entries(1..=heard.last_ack).await.unwrap();
        assert_eq!(entries.len() as u64, heard.last_ack, "acknowledged entries are missing");
        for (entry_idx, got) in entries.iter().enumerate() {
            assert_eq!(*got, entry(1, entry_idx as u64 + 1));
        }
        let state = log.get_log_state().await.unwrap();
        let last = state.last_log_id.unwrap().index;
        let all = log.try_get_log_entries(..).await.unwrap();
        assert_eq!(all.len() as u64, last, "a hole in the log after the kill");
        // A batch is atomic: the log ends on a batch boundary.
        let batch_ends = (0..MAX_BATCHES).scan(0, |end, n_batch| {
            *end += batch_len(n_batch);
            Some(*end)
        });
        assert_eq!(batch_ends.take_while(|&end| end <= last).last(), Some(last), "the log ends inside a batch");
        println!("killed after {} acks; {} entries on disk, last ack {}", heard.n_acks, last, heard.last_ack);
    });
}

#[test]
fn truncate_and_purge_leave_no_holes_after_sigkill() {
    if child_dir().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let heard = run_child_and_kill("child_truncate_purge_then_append", dir.path());
    assert!(heard.rewritten);
    runtime().block_on(async {
        let store = Store::open(dir.path(), CACHE_CAPACITY).unwrap();
        let mut log = store.log_store();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 30)));
        let last = state.last_log_id.unwrap().index;
        assert!(last >= heard.last_ack, "last entry {last} is before the last ack {}", heard.last_ack);

        let all = log.try_get_log_entries(..).await.unwrap();
        assert_eq!(all.first().map(|e| e.log_id.index), Some(31), "purged entries came back");
        assert_eq!(all.len() as u64, last - 30, "a hole in the log after the kill");
        for got in &all {
            let index = got.log_id.index;
            let term = if index < 80 { 1 } else { 2 };
            assert_eq!(*got, entry(term, index), "entry {index} is not the one written last");
        }
    });
}

#[test]
fn durable_append_latency() {
    if child_dir().is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut latencies: Vec<Duration> = runtime().block_on(async {
        let store = Store::open(dir.path(), CACHE_CAPACITY).unwrap();
        let mut log = store.log_store();
        let mut latencies = Vec::new();
        for index in 1..=200 {
            let started = Instant::now();
            log.blocking_append([entry(1, index)]).await.unwrap();
            latencies.push(started.elapsed());
        }
        latencies
    });
    latencies.sort();
    let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile) as usize];
    // Information only (never asserted): append = sled write + flush + fsync of <dir>/db.
    println!(
        "durable append latency over {} appends: p50 {:?} p99 {:?} max {:?}",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
}
