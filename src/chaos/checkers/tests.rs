//! Table tests of the checkers over recorded histories, including histories that must produce
//! violations (the harness must be able to fail).

use super::*;

fn probe(node: usize, sent_ms: u64, accepted: bool, token: Option<u64>) -> Probe {
    Probe { node, sent_ms, done_ms: sent_ms + 20, accepted, token, wal_lsn: None }
}

fn grant(seen_ms: u64, holder: usize, token: u64) -> Grant {
    Grant { seen_ms, holder, token }
}

fn write(id: i64, outcome: Outcome) -> WriteOp {
    WriteOp { id, client: 0, node: 1, sent_ms: id as u64 * 10, done_ms: id as u64 * 10 + 5, outcome }
}

#[track_caller]
fn check_single(probes: &[Probe], grants: &[Grant], n_expected: usize) {
    let found = single_primary(probes, grants);
    assert_eq!(found.len(), n_expected, "{found:#?}");
}

#[test]
fn a_clean_failover_is_no_violation() {
    // node1 writable with token 3 until 1000 ms, fenced; node2 granted token 7 at 1500 ms.
    let probes = [
        probe(1, 800, true, Some(3)),
        probe(1, 950, true, Some(3)),
        probe(1, 1100, false, Some(3)),
        probe(2, 900, false, None),
        probe(2, 1700, true, Some(7)),
        probe(2, 1850, true, Some(7)),
        probe(1, 1800, false, None),
    ];
    check_single(&probes, &[grant(100, 1, 3), grant(1500, 2, 7)], 0);
}

#[test]
fn an_old_primary_accepting_writes_after_a_newer_grant_is_a_violation() {
    // The "no-demote" bug: node1 keeps writing with token 3 after node2 got token 7.
    let probes = [probe(1, 800, true, Some(3)), probe(1, 1600, true, Some(3)), probe(1, 1750, true, Some(3))];
    check_single(&probes, &[grant(100, 1, 3), grant(1500, 2, 7)], 1);
}

#[test]
fn a_write_sent_before_the_grant_was_seen_is_not_judged_stale() {
    let probes = [probe(1, 1490, true, Some(3))];
    check_single(&probes, &[grant(100, 1, 3), grant(1500, 2, 7)], 0);
}

#[test]
fn a_node_that_regained_the_key_is_judged_by_its_new_token() {
    // node1 took the key back (token 9); its view read failed around the probe (None).
    let probes = [probe(1, 3000, true, None)];
    check_single(&probes, &[grant(100, 1, 3), grant(1500, 2, 7), grant(3100, 1, 9)], 0);
}

#[test]
fn a_node_that_never_held_the_key_accepting_writes_is_a_violation() {
    check_single(&[probe(3, 2000, true, None)], &[grant(100, 1, 3)], 1);
}

#[test]
fn writes_accepted_between_two_writes_of_another_node_are_a_violation() {
    // Same token on both (a view that never changed): caught by the overlap rule alone.
    let probes = [probe(1, 1000, true, Some(3)), probe(2, 1100, true, Some(3)), probe(1, 1200, true, Some(3))];
    check_single(&probes, &[grant(100, 1, 3), grant(100, 2, 3)], 1);
}

#[test]
fn a_gap_too_long_is_not_taken_as_one_writable_stretch() {
    let probes = [probe(1, 1000, true, Some(3)), probe(2, 1500, true, Some(3)), probe(1, 3000, true, Some(3))];
    check_single(&probes, &[grant(100, 1, 3), grant(100, 2, 3)], 0);
}

#[test]
fn one_incident_counts_once() {
    let probes: Vec<Probe> = (0..20).map(|i| probe(1, 2000 + i * 150, true, Some(3))).collect();
    check_single(&probes, &[grant(100, 1, 3), grant(1500, 2, 7)], 1);
}

fn present(rows: &[(usize, &[i64])]) -> BTreeMap<usize, BTreeSet<i64>> {
    rows.iter().map(|(node, ids)| (*node, ids.iter().copied().collect())).collect()
}

fn all() -> BTreeSet<usize> {
    (1..=3).collect()
}

#[test]
fn a_replica_that_never_caught_up_is_not_a_loss() {
    let writes = [write(1, Outcome::Acked), write(2, Outcome::Acked)];
    let report = lost_writes(&writes, &present(&[(1, &[1, 2]), (2, &[1])]), &BTreeSet::new(), 1, true);
    assert_eq!(report.violations, vec![]);
    assert_eq!(report.lost_anywhere, 1, "still counted");
}

#[test]
fn every_acked_write_everywhere_is_no_violation() {
    let writes = [write(1, Outcome::Acked), write(2, Outcome::Unknown), write(3, Outcome::Failed)];
    let report = lost_writes(&writes, &present(&[(1, &[1, 2]), (2, &[1, 2]), (3, &[1])]), &all(), 1, true);
    assert_eq!(report.violations, vec![]);
    assert_eq!(report.unknown_committed, 1);
    assert_eq!(report.lost_anywhere, 0);
}

#[test]
fn an_acked_write_missing_in_sync_mode_is_a_violation() {
    let writes = [write(1, Outcome::Acked), write(2, Outcome::Acked)];
    let report = lost_writes(&writes, &present(&[(1, &[1]), (2, &[1, 2])]), &all(), 1, true);
    assert_eq!(report.violations.len(), 1, "{report:#?}");
    assert_eq!(report.lost_on_primary, 1);
    assert_eq!(report.missing_by_node.get(&2), Some(&0));
}

#[test]
fn an_acked_write_missing_in_async_mode_is_counted_only() {
    let writes = [write(1, Outcome::Acked), write(2, Outcome::Acked)];
    let report = lost_writes(&writes, &present(&[(1, &[1]), (2, &[])]), &all(), 1, false);
    assert_eq!(report.violations, vec![]);
    assert_eq!(report.lost_anywhere, 2);
}

#[test]
fn a_refused_or_unsent_id_that_appears_is_a_violation() {
    let writes = [write(1, Outcome::Failed)];
    let report = lost_writes(&writes, &present(&[(1, &[1, 99])]), &all(), 1, false);
    assert_eq!(report.violations.len(), 1, "{report:#?}");
}

#[test]
fn liveness_within_and_beyond_the_bound() {
    let bound = Duration::from_secs(60);
    assert_eq!(liveness(Some(Duration::from_secs(12)), bound), vec![]);
    assert_eq!(liveness(Some(Duration::from_secs(61)), bound).len(), 1);
    assert_eq!(liveness(None, bound).len(), 1);
}

#[test]
fn log_lines_allow_the_expected_and_catch_the_rest() {
    let lines = [
        (1, "2026-01-01T00:00:00Z  INFO raftgres::ha: ha decision".to_string()),
        (
            1,
            "2026-01-01T00:00:00Z ERROR raftgres::ha::fence: leader lease expired while running as primary; stopping"
                .to_string(),
        ),
        (2, "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m raftgres::x: something broke".to_string()),
        (2, "2026-01-01T00:00:01Z ERROR raftgres::x: something broke".to_string()),
        (3, "thread 'tokio-runtime-worker' panicked at src/ha/mod.rs:1:1:".to_string()),
        (3, "2026-01-01T00:00:00Z  WARN postgres: ERROR: relation does not exist".to_string()),
        (1, "2026-01-01T00:00:02Z ERROR raftgres::ha::long: failed to start postgres error=postgres exited during start-up (signal 9); last log lines:".to_string()),
        (3, "2026-01-01T00:00:02Z ERROR raftgres::ha::long: pg_rewind failed leader=\"node1\" error=exit code 1".to_string()),
    ];
    let found = log_lines(&lines, &[]);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].detail.contains("something broke"));
    assert!(found[1].detail.contains("panic"));
    assert!(found[2].detail.contains("pg_rewind failed"));
}

#[test]
fn the_write_gap_covers_the_edges() {
    let writes = [write(10, Outcome::Acked), write(50, Outcome::Acked), write(60, Outcome::Unknown)];
    // Acks at 105 and 505 ms within [0, 1000].
    assert_eq!(max_write_gap(&writes, 0, 1000), Duration::from_millis(495));
    assert_eq!(max_write_gap(&[], 0, 1000), Duration::from_millis(1000));
}

#[test]
fn failover_lag_is_the_old_primarys_wal_past_the_new_ones_first_position() {
    let lsn_probe = |node, token, lsn| Probe { wal_lsn: Some(lsn), ..probe(node, 0, true, Some(token)) };
    let probes = [
        lsn_probe(1, 10, 1000),
        lsn_probe(1, 10, 1800),
        // Failover to node2, which started at 1500: 300 bytes of node1's WAL are not on the new timeline.
        lsn_probe(2, 11, 1500),
        lsn_probe(2, 11, 2500),
        // Switchover to node3, which had everything.
        lsn_probe(3, 12, 2600),
        // Refused probes and probes without a token or a position do not count.
        Probe { accepted: false, ..lsn_probe(1, 12, 9000) },
        probe(1, 0, true, Some(12)),
    ];
    assert_eq!(failover_lag(&probes), vec![300, 0]);
    assert!(failover_lag(&[]).is_empty());
}

#[test]
fn the_write_gap_of_a_fault_is_the_longest_one_overlapping_it() {
    let acked = |done_ms: u64| WriteOp { done_ms, ..write(done_ms as i64, Outcome::Acked) };
    let writes = [acked(1_000), acked(1_100), acked(5_100), acked(5_200), acked(9_000)];
    // A fault from 2 s to 3 s sits inside the 4 s gap from 1.1 s to 5.1 s.
    assert_eq!(write_gap_during(&writes, 2_000, 3_000), Duration::from_millis(4_000));
    // One from 5.15 s to 5.18 s overlaps only the 100 ms gap.
    assert_eq!(write_gap_during(&writes, 5_150, 5_180), Duration::from_millis(100));
    // A failed write does not close a gap.
    let mut with_failure = writes.to_vec();
    with_failure.push(WriteOp { done_ms: 3_000, ..write(99, Outcome::Failed) });
    assert_eq!(write_gap_during(&with_failure, 2_000, 3_000), Duration::from_millis(4_000));
}
