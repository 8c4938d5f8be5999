//! Table tests of the action validation: one row per line of Patroni's tables (contract §1.8, §1.9).

use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::dcs::view::FailoverData;
use crate::dcs::view::LeaderKey;
use crate::dcs::view::MemberData;
use crate::dcs::view::SyncData;
use crate::dcs::view::Versioned;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).single().expect("valid date")
}

fn body(value: serde_json::Value) -> Map<String, Value> {
    value.as_object().expect("bodies are objects").clone()
}

#[track_caller]
fn check_request(
    action: Action,
    request: serde_json::Value,
    paused: bool,
    expected: Result<(Action, bool), (u16, &str)>,
) {
    let req = FailoverRequest::from_json(&body(request));
    let res = check_failover_request(action, &req, paused, now());
    match (res, expected) {
        (Ok(accepted), Ok((action, scheduled))) => {
            assert_eq!((accepted.action, accepted.scheduled_at.is_some()), (action, scheduled));
        }
        (Err(refusal), Err((code, text))) => assert_eq!((refusal.code, refusal.text.as_str()), (code, text)),
        (res, expected) => panic!("got {res:?}, expected {expected:?}"),
    }
}

#[test]
fn failover_and_switchover_body_rows() {
    use Action::*;
    let future = "2025-06-01T13:00:00+00:00";
    check_request(
        Failover,
        json!({"leader": "pg0"}),
        false,
        Err((400, "Failover could be performed only to a specific candidate")),
    );
    check_request(
        Failover,
        json!({"candidate": ""}),
        false,
        Err((400, "Failover could be performed only to a specific candidate")),
    );
    check_request(
        Switchover,
        json!({"candidate": "pg1"}),
        false,
        Err((400, "Switchover could be performed only from a specific leader")),
    );
    check_request(
        Failover,
        json!({"candidate": "pg1", "scheduled_at": future}),
        false,
        Err((400, "Failover can't be scheduled")),
    );
    check_request(
        Switchover,
        json!({"leader": "pg0", "scheduled_at": future}),
        true,
        Err((400, "Can't schedule switchover in the paused state")),
    );
    check_request(
        Switchover,
        json!({"leader": "pg0", "scheduled_at": "2025-06-01T13:00:00"}),
        false,
        Err((400, "Timezone information is mandatory for the scheduled switchover")),
    );
    check_request(
        Switchover,
        json!({"leader": "pg0", "scheduled_at": "2025-06-01T11:00:00Z"}),
        false,
        Err((422, "Cannot schedule switchover in the past")),
    );
    check_request(
        Switchover,
        json!({"leader": "pg0", "scheduled_at": "tomorrow-ish"}),
        false,
        Err((422, "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601")),
    );
    check_request(
        Switchover,
        json!({"leader": "pg0"}),
        true,
        Err((400, "Switchover is possible only to a specific candidate in a paused state")),
    );
    check_request(
        Switchover,
        json!({"leader": "pg0", "candidate": "pg0"}),
        false,
        Err((400, "Switchover target and source are the same")),
    );
    check_request(
        Failover,
        json!({"leader": "pg0", "member": "pg0"}),
        false,
        Err((400, "Switchover target and source are the same")),
    );
    // Accepted rows.
    check_request(Switchover, json!({"leader": "pg0"}), false, Ok((Switchover, false)));
    check_request(Switchover, json!({"leader": "pg0", "candidate": "pg1"}), true, Ok((Switchover, false)));
    check_request(Failover, json!({"candidate": "pg1"}), true, Ok((Failover, false)));
    check_request(Failover, json!({"member": "pg1"}), false, Ok((Failover, false)));
    check_request(Failover, json!({"leader": "pg0", "candidate": "pg1"}), false, Ok((Switchover, false)));
    check_request(Switchover, json!({"leader": "pg0", "scheduled_at": future}), false, Ok((Switchover, true)));
    check_request(
        Switchover,
        json!({"leader": "pg0", "scheduled_at": "2025-06-01 14:00+02"}),
        false,
        Ok((Switchover, true)),
    );
}

#[track_caller]
fn check_timestamp(text: &str, expected: Option<&str>) {
    let got = match parse_timestamp(text) {
        Timestamp::WithZone(at) => Some(at.to_rfc3339()),
        Timestamp::WithoutZone => Some("naive".to_string()),
        Timestamp::Invalid => None,
    };
    assert_eq!(got.as_deref(), expected, "{text}");
}

#[test]
fn timestamps_parse_like_dateutil_for_iso_forms() {
    check_timestamp("2025-06-01T13:00:00+00:00", Some("2025-06-01T13:00:00+00:00"));
    check_timestamp("2025-06-01T13:00:00.5+00:00", Some("2025-06-01T13:00:00.500+00:00"));
    check_timestamp("2025-06-01 13:00:00+0200", Some("2025-06-01T13:00:00+02:00"));
    check_timestamp("2025-06-01T13:00Z", Some("2025-06-01T13:00:00+00:00"));
    check_timestamp("2025-06-01T13:00:00-05", Some("2025-06-01T13:00:00-05:00"));
    check_timestamp("2025-06-01T13:00:00", Some("naive"));
    check_timestamp("2025-06-01", Some("naive"));
    check_timestamp("13:00 tomorrow", None);
    check_timestamp("", None);
}

fn member(api_url: &str, state: &str) -> MemberData {
    MemberData { api_url: api_url.into(), state: state.into(), role: "replica".into(), ..MemberData::default() }
}

/// pg0 leads, pg1 and pg2 replicate; `sync` names pg2.
fn view(leader: Option<&str>) -> ClusterView {
    let leader = leader.map(|name| LeaderKey {
        name: name.into(),
        session: None,
        create_rev: 1,
        mod_rev: 1,
        ..LeaderKey::default()
    });
    let mut view = ClusterView { leader, ..ClusterView::default() };
    for name in ["pg0", "pg1", "pg2"] {
        view.members.insert(name.into(), member(&format!("http://{name}:8008/patroni"), "running"));
    }
    view.sync = Some(Versioned {
        value: SyncData { leader: Some("pg0".into()), sync_standby: Some("pg2".into()), quorum: 0 },
        mod_rev: 1,
    });
    view
}

fn accepted(action: Action, leader: Option<&str>, candidate: Option<&str>) -> Accepted {
    Accepted { action, leader: leader.map(Into::into), candidate: candidate.map(Into::into), scheduled_at: None }
}

#[track_caller]
fn check_members(view: &ClusterView, sync: SynchronousMode, request: Accepted, expected: Result<&[&str], &str>) {
    let got = members_to_check(view, sync, &request);
    match (got, expected) {
        (Ok(members), Ok(names)) => assert_eq!(members, names.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
        (Err(refusal), Err(text)) => assert_eq!((refusal.code, refusal.text.as_str()), (412, text)),
        (got, expected) => panic!("got {got:?}, expected {expected:?}"),
    }
}

#[test]
fn precheck_rows() {
    use Action::*;
    use SynchronousMode::*;
    let led = view(Some("pg0"));
    check_members(&led, Off, accepted(Switchover, Some("pg1"), None), Err("leader name does not match"));
    check_members(&view(None), Off, accepted(Switchover, Some("pg0"), None), Err("leader name does not match"));
    check_members(
        &led,
        On,
        accepted(Switchover, Some("pg0"), Some("pg1")),
        Err("candidate name does not match with sync_standby"),
    );
    check_members(&led, Quorum, accepted(Switchover, Some("pg0"), Some("pg1")), Ok(&["pg1"]));
    check_members(&led, On, accepted(Failover, None, Some("pg1")), Ok(&["pg1"]));
    check_members(&led, Off, accepted(Failover, None, Some("pg9")), Err("candidate does not exists"));
    check_members(&led, On, accepted(Switchover, Some("pg0"), None), Ok(&["pg2"]));
    let mut no_sync = led.clone();
    no_sync.sync = None;
    check_members(
        &no_sync,
        On,
        accepted(Switchover, Some("pg0"), None),
        Err("switchover is not possible: can not find sync_standby"),
    );
    check_members(&led, Off, accepted(Switchover, Some("pg0"), None), Ok(&["pg1", "pg2"]));
    let mut alone = led.clone();
    alone.members.retain(|name, _| name == "pg0");
    check_members(
        &alone,
        Off,
        accepted(Switchover, Some("pg0"), None),
        Err("switchover is not possible: cluster does not have members except leader"),
    );
    // Without a leader every member is a candidate, even without an api_url.
    let mut leaderless = view(None);
    leaderless.members.insert("pg3".into(), member("", "running"));
    check_members(&leaderless, Off, accepted(Failover, None, Some("pg3")), Ok(&["pg3"]));
}

#[track_caller]
fn check_candidate(document: Option<serde_json::Value>, expected: CandidateStatus) {
    assert_eq!(candidate_status(document.as_ref()), expected, "{document:?}");
}

#[test]
fn candidates_qualify_like_patroni_member_status() {
    use CandidateStatus::*;
    let xlog = json!({"received_location": 1, "replayed_location": 1, "paused": false});
    check_candidate(None, NotReachable);
    check_candidate(Some(json!({"state": "stopped", "role": "replica"})), NotReachable);
    check_candidate(Some(json!({"state": "running", "xlog": xlog})), Good);
    check_candidate(Some(json!({"xlog": xlog, "tags": {"nofailover": true}})), NotAllowedToPromote);
    check_candidate(Some(json!({"xlog": xlog, "tags": {"failover_priority": 0}})), NotAllowedToPromote);
    check_candidate(Some(json!({"xlog": xlog, "tags": {"nofailover": false, "failover_priority": 0}})), Good);
    check_candidate(Some(json!({"xlog": xlog, "watchdog_failed": true})), NotWatchdogCapable);
    assert_eq!(no_good_candidate(Action::Failover, &[NotReachable, Good]), None);
    let refusal = no_good_candidate(Action::Failover, &[NotReachable, NotAllowedToPromote]).expect("refused");
    assert_eq!(
        (refusal.code, refusal.text.as_str()),
        (412, "failover is not possible: no good candidates have been found")
    );
    let refusal = no_good_candidate(Action::Switchover, &[]).expect("refused");
    assert_eq!(refusal.text, "switchover is not possible: no good candidates have been found");
}

#[test]
fn polling_outcomes() {
    use Action::*;
    let done = |code: u16, text: &str| PollVerdict::Done(code, text.to_string());
    assert_eq!(poll_verdict(Switchover, Some("pg0"), Some("pg1"), Some("pg0"), true), PollVerdict::Pending);
    assert_eq!(poll_verdict(Switchover, Some("pg0"), Some("pg1"), None, true), PollVerdict::Pending);
    assert_eq!(
        poll_verdict(Switchover, Some("pg0"), Some("pg1"), Some("pg1"), false),
        done(200, r#"Successfully switched over to "pg1""#)
    );
    assert_eq!(
        poll_verdict(Switchover, Some("pg0"), None, Some("pg2"), true),
        done(200, r#"Successfully switched over to "pg2""#)
    );
    assert_eq!(
        poll_verdict(Switchover, Some("pg0"), Some("pg1"), Some("pg2"), false),
        done(200, r#"Switched over to "pg2" instead of "pg1""#)
    );
    assert_eq!(
        poll_verdict(Failover, None, Some("pg1"), Some("pg1"), false),
        done(200, r#"Successfully failed over to "pg1""#)
    );
    assert_eq!(
        poll_verdict(Failover, None, Some("pg1"), Some("pg2"), false),
        done(200, r#"Failed over to "pg2" instead of "pg1""#)
    );
    assert_eq!(poll_verdict(Switchover, Some("pg0"), Some("pg1"), Some("pg0"), false), done(503, "Switchover failed"));
    assert_eq!(poll_verdict(Failover, None, Some("pg1"), None, false), done(503, "Failover failed"));
    assert_eq!(poll_timed_out(Switchover).text, "Switchover status unknown");
    assert_eq!((poll_iterations(1), poll_iterations(30)), (20, 60));
}

#[track_caller]
fn check_restart_body(request: serde_json::Value, paused: bool, expected: Result<RestartRequest, (u16, &str)>) {
    let got = check_restart(&body(request), paused, now());
    match (got, expected) {
        (Ok(got), Ok(want)) => assert_eq!(got, want),
        (Err(refusal), Err((code, text))) => assert_eq!((refusal.code, refusal.text.as_str()), (code, text)),
        (got, expected) => panic!("got {got:?}, expected {expected:?}"),
    }
}

#[test]
fn restart_filter_rows() {
    let at = DateTime::parse_from_rfc3339("2025-06-01T13:00:00+00:00").expect("valid");
    check_restart_body(json!({}), false, Ok(RestartRequest::default()));
    check_restart_body(
        json!({"schedule": "2025-06-01T13:00:00+00:00"}),
        true,
        Err((500, "Can't schedule restart in the paused state")),
    );
    check_restart_body(json!({"when": "now"}), false, Err((400, "Unknown filter for the scheduled restart: when")));
    check_restart_body(
        json!({"role": "master"}),
        false,
        Err((400, "PostgreSQL role should be either primary, standby_leader, or replica")),
    );
    check_restart_body(
        json!({"postgres_version": "9.6"}),
        false,
        Err((400, "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: 9.6")),
    );
    check_restart_body(json!({"postgres_version": "a.b"}), false, Err((400, "Invalid PostgreSQL version: a.b")));
    check_restart_body(json!({"timeout": 0}), false, Err((400, "Timeout should be a positive number of seconds")));
    check_restart_body(json!({"timeout": "soon"}), false, Err((400, "Timeout should be a positive number of seconds")));
    check_restart_body(
        json!({"schedule": "2025-06-01T13:00:00"}),
        false,
        Err((400, "Timezone information is mandatory for the scheduled restart")),
    );
    check_restart_body(
        json!({"schedule": "2025-06-01T11:00:00+00:00"}),
        false,
        Err((422, "Cannot schedule restart in the past")),
    );
    check_restart_body(
        json!({"schedule": "2025-06-01T13:00:00+00:00", "role": "replica", "postgres_version": "15.4", "timeout": "2min", "restart_pending": true}),
        false,
        Ok(RestartRequest {
            schedule: Some(at),
            role: Some(Role::Replica),
            postgres_version: Some(150004),
            timeout: Some(120),
            restart_pending: true,
        }),
    );
    assert_eq!(postgres_version_to_int("9.5.3"), Ok(90503));
    assert_eq!(postgres_version_to_int("10.1"), Ok(100001));
}

#[test]
fn scheduled_failover_data_round_trips_the_timestamp() {
    let failover = FailoverData {
        leader: Some("pg0".into()),
        member: None,
        scheduled_at: Some("2025-06-01T13:00:00+00:00".into()),
    };
    let text = failover.scheduled_at.as_deref().expect("scheduled");
    assert!(matches!(parse_timestamp(text), Timestamp::WithZone(_)));
}
