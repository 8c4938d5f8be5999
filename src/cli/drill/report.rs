//! PURE: what `raftgres drill` concludes from what it recorded: the `--max-gap`/`--interval` durations, the
//! client-visible write gap, the promotion phases relative to the trigger, the verdict, and their `drill:` lines.
//!
//! No I/O, no clock: the shell in `cli::drill` records the attempts and the trigger as offsets from the start of
//! the drill and hands them over.

use std::time::Duration;

use serde_json::Value;

/// One write attempt of the load: when it finished (from the start of the drill) and whether it was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// When the attempt ended (the acknowledgement, or the error), from the start of the drill.
    pub at: Duration,
    /// The INSERT was acknowledged.
    pub ok: bool,
}

/// The longest silence between two acknowledged writes around the trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteGap {
    /// The acknowledgement that opened the gap.
    pub from: Duration,
    /// The acknowledgement that closed it.
    pub to: Duration,
}

impl WriteGap {
    /// How long the clients saw no acknowledged write.
    pub fn length(&self) -> Duration {
        self.to.saturating_sub(self.from)
    }
}

/// The bound and how the write gap compares with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The gap stayed within the bound.
    Pass { gap: Duration, bound: Duration },
    /// The gap exceeded the bound: the drill's exit status is 1.
    Fail { gap: Duration, bound: Duration },
    /// `--max-gap` was not given.
    NoBound,
}

impl Verdict {
    /// The verdict of `gap` against `bound`.
    pub fn of(gap: Duration, bound: Option<Duration>) -> Verdict {
        match bound {
            None => Verdict::NoBound,
            Some(bound) if gap <= bound => Verdict::Pass { gap, bound },
            Some(bound) => Verdict::Fail { gap, bound },
        }
    }

    /// The `drill: verdict: …` line.
    pub fn line(&self) -> String {
        match self {
            Verdict::Pass { gap, bound } => {
                format!("drill: verdict: PASS (write gap {} s <= {} s)", secs(*gap), bound_secs(*bound))
            }
            Verdict::Fail { gap, bound } => {
                format!("drill: verdict: FAIL (write gap {} s > {} s)", secs(*gap), bound_secs(*bound))
            }
            Verdict::NoBound => "drill: verdict: no bound given (--max-gap)".to_string(),
        }
    }
}

/// The client-visible write gap: the longest time between two consecutive acknowledged writes, counted from the
/// last acknowledgement at or before the trigger (the switchover request returns only when it is over, so the
/// outage starts after the trigger). `None` when no write was acknowledged after the trigger, or none before it.
pub fn write_gap(attempts: &[Attempt], trigger: Duration) -> Option<WriteGap> {
    let mut acks: Vec<Duration> = attempts.iter().filter(|attempt| attempt.ok).map(|attempt| attempt.at).collect();
    acks.sort();
    let first_idx = acks.iter().rposition(|at| *at <= trigger)?;
    acks[first_idx..]
        .windows(2)
        .map(|pair| WriteGap { from: pair[0], to: pair[1] })
        .max_by_key(|gap| (gap.length(), std::cmp::Reverse(gap.from)))
}

/// Whether the last `n` attempts all succeeded (and there are at least `n`), counting only those ended after
/// `after`.
pub fn ends_with_successes(attempts: &[Attempt], n: usize, after: Duration) -> bool {
    let recent: Vec<&Attempt> = attempts.iter().filter(|attempt| attempt.at > after).collect();
    recent.len() >= n && recent[recent.len() - n..].iter().all(|attempt| attempt.ok)
}

/// The phases of a promotion record (`GET /history/promotions`) that are present, in order, as names and
/// milliseconds since the epoch.
pub const PHASES: [&str; 4] = ["last_renewal_ms", "lease_expired_ms", "promote_started_ms", "promoted_ms"];

/// The promotion record of `new_leader`: the last element of `GET /history/promotions` naming it, among those after
/// the first `n_before` (the records that existed before the trigger, so an earlier promotion is never reported).
pub fn promotion_of<'a>(promotions: &'a Value, new_leader: &str, n_before: usize) -> Option<&'a Value> {
    let rows = promotions.as_array()?;
    rows.get(n_before..)?.iter().rev().find(|row| row.get("new_leader").and_then(Value::as_str) == Some(new_leader))
}

/// The `drill: …` lines of a promotion record: its kind, then each phase present as seconds from the trigger
/// (`trigger_ms`, wall clock of the host that ran the drill; the phases are the nodes' clocks).
pub fn phase_lines(promotion: &Value, trigger_ms: u64) -> Vec<String> {
    let kind = promotion.get("kind").and_then(Value::as_str).unwrap_or("unknown");
    let mut lines = vec![format!("drill: promotion kind: {kind}")];
    for phase in PHASES {
        let Some(at_ms) = promotion.get(phase).and_then(Value::as_u64) else { continue };
        let name = phase.trim_end_matches("_ms");
        lines.push(format!("drill: phase {name}: {} s", signed_secs(at_ms, trigger_ms)));
    }
    lines
}

/// `1.23` seconds with two decimals.
pub fn secs(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64())
}

/// The bound as given: two decimals, three when it has single milliseconds (`1ms` is `0.001`, not `0.00`).
fn bound_secs(bound: Duration) -> String {
    match bound.as_millis() % 10 {
        0 => secs(bound),
        _ => format!("{:.3}", bound.as_secs_f64()),
    }
}

/// `+1.23` or `-0.40`: `at_ms - origin_ms` in seconds.
fn signed_secs(at_ms: u64, origin_ms: u64) -> String {
    // Rounded to hundredths first, so a few milliseconds before the origin read `+0.00`, not `-0.00`.
    let hundredths = ((i128::from(at_ms) - i128::from(origin_ms)) as f64 / 10.0).round();
    let sign = if hundredths < 0.0 { '-' } else { '+' };
    format!("{sign}{:.2}", hundredths.abs() / 100.0)
}

/// `+1.23` seconds: `at` relative to `origin`.
pub fn relative(at: Duration, origin: Duration) -> String {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    signed_secs(ms(at), ms(origin))
}

/// Parses a duration as the flags take it: `2s`, `1.5s`, `1500ms`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 2s, 1500ms, 1m)"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?} is not a duration: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Attempts from `(ms, ok)` pairs.
    fn attempts(rows: &[(u64, bool)]) -> Vec<Attempt> {
        rows.iter().map(|(at, ok)| Attempt { at: ms(*at), ok: *ok }).collect()
    }

    #[track_caller]
    fn check_gap(rows: &[(u64, bool)], trigger_ms: u64, expected: Option<(u64, u64)>) {
        let got = write_gap(&attempts(rows), ms(trigger_ms)).map(|gap| (gap.from.as_millis(), gap.to.as_millis()));
        assert_eq!(got, expected.map(|(from, to)| (u128::from(from), u128::from(to))));
    }

    #[test]
    fn write_gaps() {
        // A switchover: writes fail a while after the trigger, then succeed on the new primary.
        check_gap(
            &[(100, true), (200, true), (300, true), (400, false), (900, false), (1000, true), (1100, true)],
            250,
            Some((300, 1000)),
        );
        // Writes never failed: the gap is the longest plain interval after the trigger.
        check_gap(&[(100, true), (200, true), (350, true), (400, true)], 150, Some((200, 350)));
        // A longer gap before the last acknowledgement before the trigger does not count.
        check_gap(&[(0, true), (5000, true), (5100, true), (5300, true)], 5050, Some((5100, 5300)));
        // Nothing acknowledged after the trigger: no gap to report.
        check_gap(&[(100, true), (200, true), (300, false)], 250, None);
        // Nothing acknowledged before the trigger: no gap either.
        check_gap(&[(100, false), (300, true)], 200, None);
        // Two equal gaps: the first one is reported.
        check_gap(&[(0, true), (100, true), (200, true)], 50, Some((0, 100)));
        // The acknowledgements arrive out of order: sorted first.
        check_gap(&[(300, true), (100, true), (1000, true)], 150, Some((300, 1000)));
    }

    #[test]
    fn consecutive_successes_count_only_after_the_mark() {
        let rows = attempts(&[(100, true), (200, false), (300, true), (400, true)]);
        assert!(ends_with_successes(&rows, 2, ms(0)));
        assert!(!ends_with_successes(&rows, 3, ms(0)));
        assert!(!ends_with_successes(&rows, 2, ms(300)));
        assert!(ends_with_successes(&rows, 1, ms(300)));
    }

    #[track_caller]
    fn check_verdict(gap_ms: u64, bound_ms: Option<u64>, expected: &str) {
        assert_eq!(Verdict::of(ms(gap_ms), bound_ms.map(ms)).line(), expected);
    }

    #[test]
    fn verdicts() {
        check_verdict(420, Some(2000), "drill: verdict: PASS (write gap 0.42 s <= 2.00 s)");
        check_verdict(2000, Some(2000), "drill: verdict: PASS (write gap 2.00 s <= 2.00 s)");
        check_verdict(3100, Some(2000), "drill: verdict: FAIL (write gap 3.10 s > 2.00 s)");
        check_verdict(3100, None, "drill: verdict: no bound given (--max-gap)");
        check_verdict(650, Some(1), "drill: verdict: FAIL (write gap 0.65 s > 0.001 s)");
        check_verdict(1500, Some(1505), "drill: verdict: PASS (write gap 1.50 s <= 1.505 s)");
    }

    #[test]
    fn phases_are_seconds_from_the_trigger_and_absent_ones_are_skipped() {
        let promotions = json!([
            {"new_leader": "node2", "kind": "failover", "promoted_ms": 1},
            {"new_leader": "node1", "kind": "switchover", "promote_started_ms": 10_500, "promoted_ms": 11_230},
            {"new_leader": "node3", "kind": "failover", "promoted_ms": 2},
        ]);
        let promotion = promotion_of(&promotions, "node1", 0).expect("node1's record");
        assert_eq!(
            phase_lines(promotion, 10_000),
            [
                "drill: promotion kind: switchover",
                "drill: phase promote_started: +0.50 s",
                "drill: phase promoted: +1.23 s"
            ]
        );
        let failover = json!({"kind": "failover", "last_renewal_ms": 9_600, "lease_expired_ms": 12_600,
            "promote_started_ms": 12_700, "promoted_ms": 13_000});
        assert_eq!(
            phase_lines(&failover, 10_000),
            [
                "drill: promotion kind: failover",
                "drill: phase last_renewal: -0.40 s",
                "drill: phase lease_expired: +2.60 s",
                "drill: phase promote_started: +2.70 s",
                "drill: phase promoted: +3.00 s",
            ]
        );
        assert_eq!(promotion_of(&promotions, "node4", 0), None);
        assert_eq!(promotion_of(&promotions, "node1", 2), None, "an earlier promotion is not this drill's");
        assert_eq!(promotion_of(&promotions, "node1", 9), None);
        assert_eq!(relative(ms(998), ms(1000)), "+0.00");
        assert_eq!(relative(ms(990), ms(1000)), "-0.01");
        assert_eq!(relative(ms(2_345), ms(1000)), "+1.35");
    }

    #[track_caller]
    fn check_duration(text: &str, expected_ms: Option<u64>) {
        assert_eq!(parse_duration(text).ok(), expected_ms.map(ms), "{text}");
    }

    #[test]
    fn durations() {
        check_duration("2s", Some(2000));
        check_duration("1500ms", Some(1500));
        check_duration("1.5s", Some(1500));
        check_duration("2m", Some(120_000));
        check_duration("3", Some(3000));
        check_duration("1ms", Some(1));
        check_duration("2 s", Some(2000));
        check_duration("s", None);
        check_duration("2 parsecs", None);
        check_duration("-1s", None);
    }
}
