//! PURE: the summary a chaos run prints: faults by kind, writes, losses, unavailability,
//! violations per checker, and on a violation the seed and a timeline to reproduce it. The last
//! line is always `violations: N`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::checkers::Checker;
use super::checkers::LostReport;
use super::checkers::Violation;
use super::checkers::ALL_CHECKERS;
use super::history::FaultRecord;
use super::schedule::FaultKind;
use super::schedule::ALL_KINDS;

/// Everything the summary shows.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// The command line that replays the run.
    pub replay: String,
    /// `sync` or `async`.
    pub mode: String,
    /// How long faults were injected.
    pub duration: Duration,
    /// The faults injected.
    pub faults: Vec<FaultRecord>,
    /// Faults that could not be injected, by kind.
    pub skipped: BTreeMap<FaultKind, usize>,
    /// The longest write gap overlapping a fault of each kind (fault start to recovery).
    pub gap_by_kind: BTreeMap<FaultKind, Duration>,
    /// Client writes acknowledged, failed for certain, and of unknown outcome.
    pub n_acked: usize,
    /// Writes certainly not committed.
    pub n_failed: usize,
    /// Writes of unknown outcome.
    pub n_unknown: usize,
    /// Write probes sent and accepted.
    pub n_probes: usize,
    /// Write probes accepted.
    pub n_probes_accepted: usize,
    /// Distinct leader-key grants seen minus the first: how often the key moved or was re-created.
    pub n_grants: usize,
    /// What the lost-writes checker found.
    pub lost: LostReport,
    /// The longest time without an acknowledged write while faults ran.
    pub max_write_gap: Duration,
    /// Async mode: per leader change, bytes of the old primary's WAL past the new one's first position
    /// ([`super::checkers::failover_lag`]).
    pub failover_lag: Vec<u64>,
    /// How long the cluster took to heal once the faults stopped.
    pub healed_in: Option<Duration>,
    /// Every violation.
    pub violations: Vec<Violation>,
}

fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

/// Renders the summary; the last line is `violations: N`.
pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "chaos run: mode {}, {} of faults", summary.mode, secs(summary.duration));
    let _ = writeln!(out, "replay: {}", summary.replay);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<20} {:>8} {:>8} {:>14} {:>14}",
        "fault", "injected", "skipped", "max recovery", "max write gap"
    );
    for kind in ALL_KINDS {
        let of_kind: Vec<&FaultRecord> = summary.faults.iter().filter(|f| f.kind == kind).collect();
        let skipped = summary.skipped.get(&kind).copied().unwrap_or(0);
        if of_kind.is_empty() && skipped == 0 {
            continue;
        }
        let gap = summary.gap_by_kind.get(&kind).map_or("-".to_string(), |gap| secs(*gap));
        let recovery = of_kind
            .iter()
            .filter_map(|f| f.recovered_ms.map(|r| r.saturating_sub(f.healed_ms)))
            .max()
            .map_or("-".to_string(), |ms| secs(Duration::from_millis(ms)));
        let _ = writeln!(out, "{:<20} {:>8} {:>8} {:>14} {:>14}", kind.as_str(), of_kind.len(), skipped, recovery, gap);
    }
    let n_skipped: usize = summary.skipped.values().sum();
    let _ = writeln!(out, "{:<20} {:>8} {:>8}", "total", summary.faults.len(), n_skipped);
    let _ = writeln!(out);
    let rows: [(&str, String); 11] = [
        ("acknowledged writes", summary.n_acked.to_string()),
        ("failed writes", summary.n_failed.to_string()),
        ("unknown-outcome writes", format!("{} ({} committed)", summary.n_unknown, summary.lost.unknown_committed)),
        ("lost on final primary", summary.lost.lost_on_primary.to_string()),
        ("lost on any node", summary.lost.lost_anywhere.to_string()),
        ("missing by node", format!("{:?}", summary.lost.missing_by_node)),
        ("leader key grants", summary.n_grants.to_string()),
        ("write probes", format!("{} ({} accepted)", summary.n_probes, summary.n_probes_accepted)),
        ("max write gap", secs(summary.max_write_gap)),
        ("healed after faults", summary.healed_in.map_or("never".to_string(), secs)),
        ("violations", summary.violations.len().to_string()),
    ];
    for (label, value) in rows {
        let _ = writeln!(out, "{label:<24} {value}");
    }
    if summary.mode == "async" {
        let lost = summary.failover_lag.iter().filter(|bytes| **bytes > 0);
        let _ = writeln!(
            out,
            "{:<24} {} of {} leader changes lost WAL; max {} bytes, total {} bytes",
            "WAL lost at failover",
            lost.clone().count(),
            summary.failover_lag.len(),
            summary.failover_lag.iter().max().copied().unwrap_or(0),
            lost.sum::<u64>()
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<20} {:>10}", "checker", "violations");
    for checker in ALL_CHECKERS {
        let n = summary.violations.iter().filter(|v| v.checker == checker).count();
        let _ = writeln!(out, "{:<20} {:>10}", checker.to_string(), n);
    }
    if !summary.violations.is_empty() {
        let _ = writeln!(out);
        let _ = write!(out, "{}", timeline(summary));
    }
    let _ = writeln!(out, "violations: {}", summary.violations.len());
    out
}

/// Faults and violations in time order (violations without a time last), capped at 200 lines.
fn timeline(summary: &Summary) -> String {
    let mut events: Vec<(u64, String)> = Vec::new();
    for fault in &summary.faults {
        let recovered = fault.recovered_ms.map_or("not recovered".to_string(), |ms| format!("healthy at {ms} ms"));
        events.push((
            fault.started_ms,
            format!("fault {}: {} (healed at {} ms, {recovered})", fault.kind, fault.detail, fault.healed_ms),
        ));
    }
    for violation in &summary.violations {
        events.push((
            violation.at_ms.unwrap_or(u64::MAX),
            format!("VIOLATION [{}] {}", violation.checker, violation.detail),
        ));
    }
    events.sort_by_key(|(at, _)| *at);
    let mut out = format!("timeline (replay: {}):\n", summary.replay);
    for (at, line) in events.iter().take(200) {
        let when = if *at == u64::MAX { "end".to_string() } else { format!("{at} ms") };
        let _ = writeln!(out, "  {when:>10}  {line}");
    }
    if events.len() > 200 {
        let _ = writeln!(out, "  … {} more", events.len() - 200);
    }
    out
}

/// Whether any violation came from `checker`.
pub fn has(summary: &Summary, checker: Checker) -> bool {
    summary.violations.iter().any(|v| v.checker == checker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_line_counts_the_violations() {
        let mut summary =
            Summary { replay: "raftgres chaos --seed 1".into(), mode: "sync".into(), ..Summary::default() };
        assert!(render(&summary).ends_with("violations: 0\n"));
        summary.violations.push(Violation { checker: Checker::Logs, at_ms: None, detail: "node1 panic".into() });
        summary.faults.push(FaultRecord {
            kind: FaultKind::KillBoth,
            nodes: vec![1],
            detail: "node1".into(),
            started_ms: 10,
            healed_ms: 20,
            recovered_ms: Some(900),
        });
        let text = render(&summary);
        assert!(text.ends_with("violations: 1\n"), "{text}");
        assert!(text.contains("timeline (replay: raftgres chaos --seed 1)"), "{text}");
        assert!(text.contains("kill-both                   1        0          0.9 s"), "{text}");
        assert!(has(&summary, Checker::Logs));
    }
}
