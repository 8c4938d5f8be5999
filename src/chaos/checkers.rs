//! PURE: the four checkers of a chaos run, over the recorded history and the final table contents.
//!
//! (1) single primary, (2) no lost acknowledged write (sync mode; counted in async mode),
//! (3) liveness after the faults stop, (4) no panic and no unexpected ERROR line in the logs.
//! Every checker leans towards the node: a violation is reported only when the history proves it,
//! so a violation is always a real bug (of raftgres or of the harness), never noise.
//! It must not do I/O or read the clock.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use super::history::Grant;
use super::history::Outcome;
use super::history::Probe;
use super::history::WriteOp;

/// A node's own token counts grants to it seen up to this long after its probe's answer, so a
/// node that just took the key is never judged by a token the sampler has not read yet.
pub const TOKEN_LENIENCY_MS: u64 = 2000;
/// Two accepted probes of one node count as one writable stretch when at most this far apart.
pub const STRETCH_GAP_MS: u64 = 1000;

/// Which checker found a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Checker {
    /// (1) at most one node accepts writes at any instant.
    SinglePrimary,
    /// (2) every acknowledged write survives.
    LostWrites,
    /// (3) the cluster heals once the faults stop.
    Liveness,
    /// (4) no panic, no unexpected ERROR line.
    Logs,
}

/// Every checker, in report order.
pub const ALL_CHECKERS: [Checker; 4] = [Checker::SinglePrimary, Checker::LostWrites, Checker::Liveness, Checker::Logs];

impl fmt::Display for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Checker::SinglePrimary => "single primary",
            Checker::LostWrites => "lost writes",
            Checker::Liveness => "liveness",
            Checker::Logs => "logs",
        })
    }
}

/// One violation: which checker, when (ms since start, when known) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The checker.
    pub checker: Checker,
    /// When it happened, when the history says.
    pub at_ms: Option<u64>,
    /// One sentence.
    pub detail: String,
}

/// The token `probe`'s node held, as favourably as the history allows: the larger of what its
/// own view said around the probe and every grant to it seen up to [`TOKEN_LENIENCY_MS`] after.
fn own_token(probe: &Probe, grants: &[Grant]) -> u64 {
    let granted = grants
        .iter()
        .filter(|g| g.holder == probe.node && g.seen_ms <= probe.done_ms + TOKEN_LENIENCY_MS)
        .map(|g| g.token)
        .max();
    probe.token.max(granted).unwrap_or(0)
}

/// (1) single primary, two ways:
/// - *stale token*: a node accepted a write sent after a newer leader key was already granted to
///   another node (the old primary should have fenced itself before the key could move);
/// - *overlap*: node B accepted a write strictly between two accepted probes of node A that are
///   at most [`STRETCH_GAP_MS`] apart (A was writable all along, so both were at once).
///
/// One violation per incident: (node, its token, the newer token) or (A, B, A's token).
pub fn single_primary(probes: &[Probe], grants: &[Grant]) -> Vec<Violation> {
    let mut res = Vec::new();
    let mut seen_stale = BTreeSet::new();
    let accepted: Vec<&Probe> = probes.iter().filter(|p| p.accepted).collect();
    for probe in &accepted {
        let own = own_token(probe, grants);
        let newer = grants.iter().filter(|g| g.holder != probe.node && g.token > own && g.seen_ms < probe.sent_ms);
        if let Some(newer) = newer.min_by_key(|g| g.seen_ms) {
            if seen_stale.insert((probe.node, own, newer.token)) {
                res.push(Violation {
                    checker: Checker::SinglePrimary,
                    at_ms: Some(probe.sent_ms),
                    detail: format!(
                        "node{} accepted a write at {} ms with token {own}, after node{} was granted token {} (seen at {} ms)",
                        probe.node, probe.sent_ms, newer.holder, newer.token, newer.seen_ms
                    ),
                });
            }
        }
    }
    let mut by_node: BTreeMap<usize, Vec<&Probe>> = BTreeMap::new();
    for probe in probes {
        by_node.entry(probe.node).or_default().push(probe);
    }
    let mut seen_overlap = BTreeSet::new();
    for (node, own_probes) in &by_node {
        for pair in own_probes.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            if !before.accepted || !after.accepted || after.sent_ms > before.done_ms + STRETCH_GAP_MS {
                continue;
            }
            let inside =
                accepted.iter().find(|p| p.node != *node && p.sent_ms > before.done_ms && p.done_ms < after.sent_ms);
            if let Some(other) = inside {
                if seen_overlap.insert((*node, other.node, own_token(before, grants))) {
                    res.push(Violation {
                        checker: Checker::SinglePrimary,
                        at_ms: Some(other.sent_ms),
                        detail: format!(
                            "node{} and node{node} both accepted writes: node{} at [{}, {}] ms while node{node} was writable from {} to {} ms",
                            other.node, other.node, other.sent_ms, other.done_ms, before.done_ms, after.sent_ms
                        ),
                    });
                }
            }
        }
    }
    res
}

/// What (2) found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LostReport {
    /// Acknowledged ids missing on each node (node index → count).
    pub missing_by_node: BTreeMap<usize, usize>,
    /// Acknowledged ids missing on the final primary.
    pub lost_on_primary: usize,
    /// Acknowledged ids missing on at least one node.
    pub lost_anywhere: usize,
    /// Unknown-outcome writes that turned out committed (on the primary).
    pub unknown_committed: usize,
    /// The violations (empty in async mode unless something impossible happened).
    pub violations: Vec<Violation>,
}

/// (2) lost writes: `present` holds the ids each node has after convergence (node index → ids),
/// `converged` the replicas that replayed everything the final primary `primary` had. In sync mode every acknowledged id must be on every node; in
/// async mode losses are only counted. In both modes an id that was certainly not committed (or
/// never sent) must not appear.
pub fn lost_writes(
    writes: &[WriteOp],
    present: &BTreeMap<usize, BTreeSet<i64>>,
    converged: &BTreeSet<usize>,
    primary: usize,
    sync: bool,
) -> LostReport {
    let mut report = LostReport::default();
    let acked: Vec<&WriteOp> = writes.iter().filter(|w| w.outcome == Outcome::Acked).collect();
    let mut lost_ids = BTreeSet::new();
    for (node, ids) in present {
        let missing: Vec<&&WriteOp> = acked.iter().filter(|w| !ids.contains(&w.id)).collect();
        report.missing_by_node.insert(*node, missing.len());
        if *node == primary {
            report.lost_on_primary = missing.len();
        }
        // A replica that never caught up is the liveness checker's business, not a loss.
        if sync && (*node == primary || converged.contains(node)) {
            if let Some(first) = missing.first() {
                report.violations.push(Violation {
                    checker: Checker::LostWrites,
                    at_ms: Some(first.done_ms),
                    detail: format!(
                        "node{node} lacks {} acknowledged writes (first: id {} acked by node{} at {} ms)",
                        missing.len(),
                        first.id,
                        first.node,
                        first.done_ms
                    ),
                });
            }
        }
        lost_ids.extend(missing.iter().map(|w| w.id));
    }
    report.lost_anywhere = lost_ids.len();
    let by_id: BTreeMap<i64, &WriteOp> = writes.iter().map(|w| (w.id, w)).collect();
    if let Some(ids) = present.get(&primary) {
        report.unknown_committed =
            ids.iter().filter(|id| by_id.get(id).is_some_and(|w| w.outcome == Outcome::Unknown)).count();
    }
    let mut phantom = BTreeSet::new();
    for ids in present.values() {
        phantom.extend(ids.iter().filter(|id| by_id.get(id).is_none_or(|w| w.outcome == Outcome::Failed)));
    }
    if let Some(first) = phantom.first() {
        report.violations.push(Violation {
            checker: Checker::LostWrites,
            at_ms: by_id.get(first).map(|w| w.done_ms),
            detail: format!("{} ids that were refused or never sent are present (first: {first})", phantom.len()),
        });
    }
    report
}

/// (3) liveness: the cluster must be healthy within `bound` of the last heal.
pub fn liveness(healed_in: Option<Duration>, bound: Duration) -> Vec<Violation> {
    match healed_in {
        Some(took) if took <= bound => Vec::new(),
        Some(took) => vec![Violation {
            checker: Checker::Liveness,
            at_ms: None,
            detail: format!("the cluster healed only after {:.1} s (bound {} s)", took.as_secs_f64(), bound.as_secs()),
        }],
        None => vec![Violation {
            checker: Checker::Liveness,
            at_ms: None,
            detail: format!(
                "the cluster did not heal to one primary and two streaming replicas within {} s",
                bound.as_secs()
            ),
        }],
    }
}

/// An ERROR line that chaos is expected to cause, and why it is expected.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    /// A substring of the line.
    pub pattern: &'static str,
    /// Why a chaos run produces it.
    pub reason: &'static str,
}

/// The ERROR lines a chaos run causes on purpose.
pub const ALLOWED_ERRORS: &[Allowed] = &[
    Allowed {
        pattern: "leader lease expired while running as primary",
        reason: "the fence doing its job: a frozen or partitioned primary lost its lease",
    },
    Allowed {
        pattern: "failed to start postgres error=postgres exited during start-up",
        reason: "a postmaster killed while starting, or started while the killed one's lock file still named a \
                 live (zombie) pid; raftgres starts it again and liveness catches one that never starts",
    },
    Allowed {
        pattern: "failed to start the new replica error=postgres exited during start-up",
        reason: "the same after a clone: the node's killed postmaster still held the socket lock (zombie pid); the \
                 clone is retried and liveness catches one that never starts",
    },
    Allowed {
        pattern: "the leader lock belongs to someone else; demoting self now",
        reason: "a primary that was cut off learns, once healed, that the key moved; it demotes",
    },
];

/// ERROR lines a full disk (`disk-full-raft`, `disk-full-pg`) explains; allowed only in runs that injected one.
pub const DISK_FULL_ERRORS: &[Allowed] = &[
    Allowed {
        pattern: "No space left on device",
        reason: "sled, or PostgreSQL (a PANIC when it cannot create a WAL segment), reporting the full disk the \
                 fault made",
    },
    Allowed {
        pattern: "the raft store failed",
        reason: "raftgres reporting the same, before it waits for room and restarts itself in place",
    },
];

/// (4) logs: `lines` are (node index, line) pairs. A panic is always a violation; an ERROR line
/// is one unless it matches [`ALLOWED_ERRORS`] or `extra_allowed`. One violation per distinct
/// message (the part after the level), so a repeated line counts once.
pub fn log_lines(lines: &[(usize, String)], extra_allowed: &[Allowed]) -> Vec<Violation> {
    let mut res = Vec::new();
    let mut seen = BTreeSet::new();
    for (node, raw) in lines {
        let line = &strip_ansi(raw);
        let panicked = line.contains("panicked at");
        let error = is_error_line(line);
        if !panicked && !error {
            continue;
        }
        if !panicked && ALLOWED_ERRORS.iter().chain(extra_allowed).any(|allowed| line.contains(allowed.pattern)) {
            continue;
        }
        let message = line
            .split_once(if panicked { "panicked at" } else { "ERROR" })
            .map_or(line.as_str(), |(_, message)| message);
        if seen.insert(message.trim().to_string()) {
            let what = if panicked { "panic" } else { "unexpected ERROR" };
            res.push(Violation {
                checker: Checker::Logs,
                at_ms: None,
                detail: format!("node{node} {what}: {}", line.trim()),
            });
        }
    }
    res
}

/// `line` without terminal colour sequences (`ESC [ … m`), which tracing may write to a log file.
pub fn strip_ansi(line: &str) -> String {
    let mut res = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            res.push(c);
        }
    }
    res
}

/// Whether a tracing line has level ERROR (`<timestamp>  ERROR <target>: …`).
fn is_error_line(line: &str) -> bool {
    line.split_whitespace().take(3).any(|word| word == "ERROR")
}

/// Async mode: for each change of the leader key (consecutive fencing tokens both seen on accepted probes), the
/// bytes of WAL the old primary had flushed past the first position seen under the new one: WAL (and the
/// commits in it) the new timeline does not have. A lower bound, since the new primary wrote on before its
/// first probe; 0 where the new primary started at or past the old one's last position.
pub fn failover_lag(probes: &[Probe]) -> Vec<u64> {
    let mut by_token: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for probe in probes.iter().filter(|p| p.accepted) {
        let (Some(token), Some(lsn)) = (probe.token, probe.wal_lsn) else { continue };
        let range = by_token.entry(token).or_insert((lsn, lsn));
        range.0 = range.0.min(lsn);
        range.1 = range.1.max(lsn);
    }
    let ranges: Vec<(u64, u64)> = by_token.into_values().collect();
    ranges.windows(2).map(|pair| pair[0].1.saturating_sub(pair[1].0)).collect()
}

/// The longest stretch without any acknowledged client write between `from_ms` and `to_ms`.
pub fn max_write_gap(writes: &[WriteOp], from_ms: u64, to_ms: u64) -> Duration {
    let mut acks: Vec<u64> = writes
        .iter()
        .filter(|w| w.outcome == Outcome::Acked && (from_ms..=to_ms).contains(&w.done_ms))
        .map(|w| w.done_ms)
        .collect();
    acks.push(from_ms);
    acks.push(to_ms);
    acks.sort_unstable();
    let gap = acks.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap_or(0);
    Duration::from_millis(gap)
}

/// The longest time between two consecutive acknowledged writes (by answer time) that overlaps
/// `from_ms..=to_ms`: the unavailability one fault caused, its recovery included.
pub fn write_gap_during(writes: &[WriteOp], from_ms: u64, to_ms: u64) -> Duration {
    let mut acks: Vec<u64> = writes.iter().filter(|w| w.outcome == Outcome::Acked).map(|w| w.done_ms).collect();
    acks.sort_unstable();
    let gap = acks
        .windows(2)
        .filter(|pair| pair[1] >= from_ms && pair[0] <= to_ms)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or(0);
    Duration::from_millis(gap)
}

#[cfg(test)]
mod tests;
