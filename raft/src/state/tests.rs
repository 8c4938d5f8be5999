//! Table tests of the DCS state machine: one row per behaviour, each a sequence of commands
//! and the expected results and keys afterwards.

use super::*;
use crate::command::Command;
use crate::command::Envelope;
use crate::command::ExpiryRecord;
use crate::command::Guard;
use crate::command::Op;
use crate::command::SessionId;

const ME: SessionId = SessionId(1);
const OTHER: SessionId = SessionId(2);

fn keep_alive(session: SessionId, owner: &str) -> Op {
    Op::KeepAlive { session, node: session.0, owner: owner.into(), ttl_ms: 5000 }
}

fn acquire(session: SessionId, owner: &str) -> Command {
    Command::Txn {
        guards: vec![("leader".into(), Guard::Absent)],
        ops: vec![
            keep_alive(session, owner),
            Op::Put { key: "leader".into(), value: owner.into(), attach: Some(session) },
        ],
    }
}

fn renew(session: SessionId, owner: &str) -> Command {
    Command::Txn {
        guards: vec![("leader".into(), Guard::SessionIs(session))],
        ops: vec![
            keep_alive(session, owner),
            Op::Put { key: "leader".into(), value: owner.into(), attach: Some(session) },
        ],
    }
}

/// The holder's next incarnation (same member name, new session) taking over the key it left.
fn take_over(session: SessionId, owner: &str) -> Command {
    Command::Txn {
        guards: vec![("leader".into(), Guard::ValueEq(owner.into()))],
        ops: vec![
            keep_alive(session, owner),
            Op::Put { key: "leader".into(), value: owner.into(), attach: Some(session) },
        ],
    }
}

/// Expected outcome of one step, compared loosely (revisions are positional).
#[derive(Debug, PartialEq)]
enum Want {
    Applied,
    Renewed(bool),
    GuardFailed(&'static str),
    NoOp,
    NoSession,
    Stale,
}

fn classify(res: &CommandResult) -> Want {
    match res {
        CommandResult::Applied { renewed: Some(r), .. } => Want::Renewed(*r),
        CommandResult::Applied { .. } => Want::Applied,
        CommandResult::GuardFailed { key, .. } => Want::GuardFailed(match key.as_str() {
            "leader" => "leader",
            "config" => "config",
            _ => "other",
        }),
        CommandResult::NoOp { .. } => Want::NoOp,
        CommandResult::NoSession { .. } => Want::NoSession,
        CommandResult::Stale { .. } => Want::Stale,
    }
}

/// Applies `steps` (origin, seq, command) from revision 1 on; checks each result and the final
/// value of `leader`.
#[track_caller]
fn check(steps: Vec<(u64, u64, Command, Want)>, leader_after: Option<&str>) {
    let mut state = ClusterState::default();
    for (idx, (origin, seq, cmd, want)) in steps.into_iter().enumerate() {
        let rev = idx as u64 + 1;
        let res = state.apply(rev, &Envelope { origin, seq, stamp_ms: 1000 * rev, cmd });
        assert_eq!(classify(&res), want, "step {idx} result {res:?}");
        assert_eq!(state.last_rev, rev);
    }
    assert_eq!(state.get("leader").map(|v| v.value.as_str()), leader_after);
}

#[test]
fn acquire_vacant_leader_key() {
    check(vec![(1, 1, acquire(ME, "pg1"), Want::Renewed(false))], Some("pg1"));
}

#[test]
fn second_acquire_fails_while_held() {
    check(
        vec![
            (1, 1, acquire(ME, "pg1"), Want::Renewed(false)),
            (2, 1, acquire(OTHER, "pg2"), Want::GuardFailed("leader")),
        ],
        Some("pg1"),
    );
}

#[test]
fn holder_renews_its_lease() {
    check(
        vec![(1, 1, acquire(ME, "pg1"), Want::Renewed(false)), (1, 2, renew(ME, "pg1"), Want::Renewed(true))],
        Some("pg1"),
    );
}

#[test]
fn non_holder_cannot_renew() {
    check(
        vec![
            (1, 1, acquire(ME, "pg1"), Want::Renewed(false)),
            (2, 1, renew(OTHER, "pg2"), Want::GuardFailed("leader")),
        ],
        Some("pg1"),
    );
}

#[test]
fn expire_with_current_renewal_deletes_leader_key() {
    check(
        vec![
            (1, 1, acquire(ME, "pg1"), Want::Renewed(false)),
            (9, 1, Command::ExpireSession { session: ME, expected_renewed_rev: 1 }, Want::Applied),
            (2, 1, acquire(OTHER, "pg2"), Want::Renewed(false)),
        ],
        Some("pg2"),
    );
}

#[test]
fn expire_after_a_renewal_is_a_noop() {
    check(
        vec![
            (1, 1, acquire(ME, "pg1"), Want::Renewed(false)),
            (1, 2, renew(ME, "pg1"), Want::Renewed(true)),
            (9, 1, Command::ExpireSession { session: ME, expected_renewed_rev: 1 }, Want::NoOp),
        ],
        Some("pg1"),
    );
}

#[test]
fn renewal_after_expiry_fails_its_holder_guard() {
    check(
        vec![
            (1, 1, acquire(ME, "pg1"), Want::Renewed(false)),
            (9, 1, Command::ExpireSession { session: ME, expected_renewed_rev: 1 }, Want::Applied),
            (1, 2, renew(ME, "pg1"), Want::GuardFailed("leader")),
        ],
        None,
    );
}

#[test]
fn revoke_releases_the_leader_key() {
    check(
        vec![
            (1, 1, acquire(ME, "pg1"), Want::Renewed(false)),
            (1, 2, Command::RevokeSession { session: ME }, Want::Applied),
            (1, 3, Command::RevokeSession { session: ME }, Want::NoOp),
        ],
        None,
    );
}

#[test]
fn put_attached_to_a_dead_session_is_refused() {
    let put = Command::Txn {
        guards: vec![],
        ops: vec![Op::Put { key: "members/pg1".into(), value: "{}".into(), attach: Some(ME) }],
    };
    check(vec![(1, 1, put, Want::NoSession)], None);
}

#[test]
fn retried_write_returns_the_first_result() {
    check(
        vec![
            (1, 1, acquire(ME, "pg1"), Want::Renewed(false)),
            (1, 1, acquire(ME, "pg1"), Want::Renewed(false)),
            (1, 0, acquire(ME, "pg1"), Want::Stale),
        ],
        Some("pg1"),
    );
}

#[test]
fn config_compare_and_set() {
    check(
        vec![
            (1, 1, Command::put("config", "{\"ttl\":5}", Guard::Absent), Want::Applied),
            (1, 2, Command::put("config", "{\"ttl\":6}", Guard::ModRev(1)), Want::Applied),
            (2, 1, Command::put("config", "{\"ttl\":7}", Guard::ModRev(1)), Want::GuardFailed("config")),
        ],
        None,
    );
}

#[test]
fn failed_guard_in_txn_writes_nothing() {
    let txn = Command::Txn {
        guards: vec![("initialize".into(), Guard::Absent), ("config".into(), Guard::Present)],
        ops: vec![Op::Put { key: "initialize".into(), value: "".into(), attach: None }],
    };
    let mut state = ClusterState::default();
    let res = state.apply(1, &Envelope { origin: 1, seq: 1, stamp_ms: 0, cmd: txn });
    assert!(matches!(res, CommandResult::GuardFailed { ref key, .. } if key == "config"));
    assert!(state.get("initialize").is_none());
}

#[test]
fn fencing_token_grows_with_each_holder() {
    let mut state = ClusterState::default();
    state.apply(1, &Envelope { origin: 1, seq: 1, stamp_ms: 0, cmd: acquire(ME, "pg1") });
    let first = state.get("leader").map(|v| v.create_rev);
    state.apply(2, &Envelope { origin: 1, seq: 2, stamp_ms: 0, cmd: renew(ME, "pg1") });
    assert_eq!(state.get("leader").map(|v| v.create_rev), first, "a renewal keeps the token");
    state.apply(3, &Envelope { origin: 1, seq: 3, stamp_ms: 0, cmd: Command::RevokeSession { session: ME } });
    state.apply(4, &Envelope { origin: 2, seq: 1, stamp_ms: 0, cmd: acquire(OTHER, "pg2") });
    assert_eq!(state.get("leader").map(|v| v.create_rev), Some(4));
}

#[test]
fn dedup_table_is_bounded_and_deterministic() {
    let mut a = ClusterState::default();
    let mut b = ClusterState::default();
    for i in 0..(DEDUP_CAPACITY as u64 + 10) {
        let env = Envelope { origin: i, seq: 1, stamp_ms: i, cmd: Command::put("status", "{}", Guard::Always) };
        a.apply(i + 1, &env);
        b.apply(i + 1, &env);
    }
    assert_eq!(a.dedup.len(), DEDUP_CAPACITY);
    assert_eq!(a, b);
    assert!(!a.dedup.contains_key(&0), "the oldest origin is forgotten first");
}

#[test]
fn prefixed_lists_members() {
    let mut state = ClusterState::default();
    for (rev, name) in [(1, "pg1"), (2, "pg2")] {
        state.apply(
            rev,
            &Envelope {
                origin: rev,
                seq: 1,
                stamp_ms: 0,
                cmd: Command::put(format!("members/{name}"), name, Guard::Always),
            },
        );
    }
    state.apply(3, &Envelope { origin: 3, seq: 1, stamp_ms: 0, cmd: Command::put("membersx", "no", Guard::Always) });
    let names: Vec<&str> = state.prefixed("members/").map(|(k, _)| k).collect();
    assert_eq!(names, vec!["pg1", "pg2"]);
}

#[test]
fn delete_prefix_removes_the_cluster_keys() {
    let mut state = ClusterState::default();
    state.apply(1, &Envelope { origin: 1, seq: 1, stamp_ms: 0, cmd: Command::put("config", "{}", Guard::Always) });
    state.apply(2, &Envelope { origin: 1, seq: 2, stamp_ms: 0, cmd: Command::DeletePrefix { prefix: String::new() } });
    assert!(state.keys.is_empty());
}

/// Applies the leader's acquire and renewal (`ME`, revs 1–2) and another session (`OTHER`, rev 3).
fn leader_and_another_session() -> ClusterState {
    let mut state = ClusterState::default();
    let steps = [
        (1, 1, acquire(ME, "pg1")),
        (1, 2, renew(ME, "pg1")),
        (2, 1, Command::Txn { guards: vec![], ops: vec![keep_alive(OTHER, "pg2")] }),
    ];
    for (idx, (origin, seq, cmd)) in steps.into_iter().enumerate() {
        let rev = idx as u64 + 1;
        state.apply(rev, &Envelope { origin, seq, stamp_ms: 1000 * rev, cmd });
    }
    state
}

#[test]
fn expiry_records_the_holder_of_the_named_key() {
    let mut state = leader_and_another_session();
    let record = Some(ExpiryRecord { held_key: "leader".into(), record_key: "expired_holder".into() });
    let expire =
        |session, expected_renewed_rev| Command::Expire { session, expected_renewed_rev, record: record.clone() };
    state.apply(4, &Envelope { origin: 9, seq: 1, stamp_ms: 4000, cmd: expire(OTHER, 3) });
    assert_eq!(state.get("expired_holder"), None, "a session without the named key leaves no record");
    state.apply(5, &Envelope { origin: 9, seq: 2, stamp_ms: 5000, cmd: expire(ME, 2) });
    let record: serde_json::Value =
        serde_json::from_str(&state.get("expired_holder").expect("a record").value).expect("JSON");
    assert_eq!(record, serde_json::json!({"owner": "pg1", "last_renewal_ms": 2000, "expired_ms": 5000}));
    assert_eq!(state.get("leader"), None);
    let mut unrecorded = leader_and_another_session();
    let cmd = Command::Expire { session: ME, expected_renewed_rev: 2, record: None };
    unrecorded.apply(4, &Envelope { origin: 9, seq: 1, stamp_ms: 4000, cmd });
    assert_eq!((unrecorded.get("leader"), unrecorded.keys.len()), (None, 0), "no record asked, none written");
}

#[test]
fn legacy_expiry_entries_replay_to_the_state_they_always_produced() {
    // `ExpireSession` entries in existing logs recorded the `leader` key's holder under
    // `last_leader_expiry` with a `member` field; replaying them must keep doing exactly that.
    let mut state = leader_and_another_session();
    let expire = Command::ExpireSession { session: ME, expected_renewed_rev: 2 };
    state.apply(4, &Envelope { origin: 9, seq: 1, stamp_ms: 5000, cmd: expire });
    let record: serde_json::Value =
        serde_json::from_str(&state.get("last_leader_expiry").expect("a record").value).expect("JSON");
    assert_eq!(record, serde_json::json!({"member": "pg1", "last_renewal_ms": 2000, "expired_ms": 5000}));
}

/// Applies `steps` (origin, seq, command) from revision 1 on; checks the `create_rev` each result
/// reports (`None` for a result that is not `Applied`).
#[track_caller]
fn check_create_revs(steps: Vec<(u64, u64, Command)>, want: &[Option<u64>]) {
    let mut state = ClusterState::default();
    let mut reported = Vec::new();
    for (idx, (origin, seq, cmd)) in steps.into_iter().enumerate() {
        let rev = idx as u64 + 1;
        let res = state.apply(rev, &Envelope { origin, seq, stamp_ms: 1000 * rev, cmd });
        reported.push(match res {
            CommandResult::Applied { create_rev, .. } => create_rev,
            _ => None,
        });
    }
    assert_eq!(reported, want);
}

#[test]
fn a_create_reports_its_own_revision() {
    check_create_revs(
        vec![(1, 1, Command::put("config", "{}", Guard::Absent)), (2, 1, acquire(OTHER, "pg2"))],
        &[Some(1), Some(2)],
    );
}

#[test]
fn a_renewal_reports_the_original_create_revision() {
    check_create_revs(
        vec![
            (1, 1, acquire(ME, "pg1")),
            (2, 1, Command::put("config", "{}", Guard::Always)),
            (1, 2, renew(ME, "pg1")),
            // A retry of the renewal gets the first answer again, create revision included.
            (1, 2, renew(ME, "pg1")),
        ],
        &[Some(1), Some(2), Some(1), Some(1)],
    );
}

#[test]
fn a_take_over_reports_the_original_create_revision() {
    check_create_revs(
        vec![(1, 1, acquire(ME, "pg1")), (1, 2, renew(ME, "pg1")), (3, 1, take_over(OTHER, "pg1"))],
        &[Some(1), Some(1), Some(1)],
    );
}

#[test]
fn only_a_transaction_with_a_put_reports_a_create_revision() {
    let keep_alive_only = Command::Txn { guards: vec![], ops: vec![keep_alive(ME, "pg1")] };
    let put_then_delete = Command::Txn {
        guards: vec![],
        ops: vec![
            Op::Put { key: "initialize".into(), value: "x".into(), attach: None },
            Op::Delete { key: "initialize".into() },
        ],
    };
    check_create_revs(
        vec![
            (1, 1, keep_alive_only),
            (1, 2, put_then_delete),
            (2, 1, Command::put("config", "{}", Guard::Always)),
            (1, 3, Command::RevokeSession { session: ME }),
            (2, 2, Command::put("config", "{}", Guard::Absent)),
        ],
        &[None, None, Some(3), None, None],
    );
}
