//! Table rows of a stopped data directory that went past the point where the cluster's timeline forked off its
//! own (Patroni's `_check_timeline_and_lsn`): it is rewound before it starts as a replica.

use super::*;

/// A stopped data directory on timeline 1 at `lsn` (`in_recovery`: a standby's minimum recovery point, else a
/// checkpoint); the cluster's history says timeline 1 ended at 150 and pg2 leads timeline 2.
fn stopped_on_timeline_1(lsn: u64, in_recovery: bool) -> (Observation, ClusterView) {
    let position = crate::postgres::controldata::LocalPosition {
        in_recovery,
        timeline: TimelineId(1),
        lsn: crate::postgres::types::Lsn(lsn),
    };
    let data_dir = DataDir::Initialized {
        system_id: SystemId(SYSID),
        was_primary: false,
        timeline: TimelineId(1),
        position: Some(position),
    };
    let (_, v, _) = diverged_case(0, false, true, false);
    (Observation { data_dir, ..obs(PgProcess::Stopped) }, v)
}

#[test]
fn a_stopped_standby_past_the_fork_point_is_rewound_before_it_starts() {
    // A primary fenced after a partition started as a standby without a leader, replayed its own WAL past the fork,
    // and was stopped to follow the new leader: pg_control no longer says it was a primary, and a plain start fails
    // ("requested timeline 2 does not contain minimum recovery point").
    for (lsn, in_recovery) in [(200, true), (150, false), (151, false)] {
        let (o, v) = stopped_on_timeline_1(lsn, in_recovery);
        check(
            o,
            v,
            cfg(),
            vec![Action::StartReplica { leader: Some("pg2".into()), rewind: true }],
            "running pg_rewind from pg2",
        );
    }
}

#[test]
fn a_stopped_standby_at_or_before_the_fork_point_just_follows() {
    for (lsn, in_recovery) in [(150, true), (100, true), (149, false)] {
        let (o, v) = stopped_on_timeline_1(lsn, in_recovery);
        check(
            o,
            v,
            cfg(),
            vec![Action::StartReplica { leader: Some("pg2".into()), rewind: false }],
            "starting as a secondary",
        );
    }
}
