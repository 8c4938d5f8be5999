//! Patroni's key names under the cluster prefix, what the lease keeper records when the leader's
//! session expires, and which changes wake the HA loops.
//!
//! PURE: constants and a function of one replicated state. The raft crate stores generic keys and
//! sessions; only this module (and the rest of `dcs`) gives them Patroni's meaning.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hash;
use std::hash::Hasher;

use raft::command::ExpiryRecord;
use raft::ClusterState;

/// The leader key: the member holding it runs the primary.
pub const LEADER: &str = "leader";
/// Prefix of member keys (`members/<name>`).
pub const MEMBERS_PREFIX: &str = "members/";
/// The dynamic configuration.
pub const CONFIG: &str = "config";
/// The system identifier of the cluster's data (Patroni's initialize race).
pub const INITIALIZE: &str = "initialize";
/// A requested switchover or failover.
pub const FAILOVER: &str = "failover";
/// Synchronous replication state.
pub const SYNC: &str = "sync";
/// Timeline history.
pub const HISTORY: &str = "history";
/// The leader's optime and slots.
pub const STATUS: &str = "status";
/// Where the lease keeper records the expired leader (who, its last renewal, the expiry): the
/// promoting node turns it into the failover's timeline.
pub const LEADER_EXPIRY: &str = "last_leader_expiry";

/// Keys whose change wakes the HA loops (besides members appearing or vanishing). Member keys and
/// `status` are rewritten every cycle and must not wake anyone, or the loops would wake each other
/// forever; the leader key's renewals rewrite it unchanged and do not wake anyone either.
pub const WATCHED: [&str; 6] = [LEADER, FAILOVER, SYNC, CONFIG, INITIALIZE, HISTORY];

/// What the Raft leader's lease keeper records on expiry: the holder of the leader key.
pub fn expiry_record() -> ExpiryRecord {
    ExpiryRecord { held_key: LEADER.to_string(), record_key: LEADER_EXPIRY.to_string() }
}

/// PURE: a fingerprint of what the HA loops watch in `state`: the value and session of every
/// watched key, and the set of members. Two states with the same fingerprint need no new cycle.
pub fn watched_fingerprint(state: &ClusterState) -> u64 {
    let mut hasher = DefaultHasher::new();
    for key in WATCHED {
        state.get(key).map(|v| (&v.value, v.session)).hash(&mut hasher);
    }
    for (name, _) in state.prefixed(MEMBERS_PREFIX) {
        name.hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use raft::command::Command;
    use raft::command::Envelope;
    use raft::command::Guard;
    use raft::command::Op;
    use raft::command::SessionId;

    use super::*;

    fn apply(state: &mut ClusterState, rev: u64, cmd: Command) {
        state.apply(rev, &Envelope { origin: 1, seq: rev, stamp_ms: rev, cmd });
    }

    #[test]
    fn member_refreshes_and_lease_renewals_do_not_wake_the_loops_but_arrivals_and_changes_do() {
        let session = SessionId(7);
        // A member key's value changes on every refresh (positions, timestamps), as here.
        let touch = |refresh: u64| Command::Txn {
            guards: vec![],
            ops: vec![
                Op::KeepAlive { session, node: 1, owner: "pg1".into(), ttl_ms: 3000 },
                Op::Put { key: "members/pg1".into(), value: format!("{{\"xlog\": {refresh}}}"), attach: Some(session) },
                Op::Put { key: LEADER.into(), value: "pg1".into(), attach: Some(session) },
            ],
        };
        let mut state = ClusterState::default();
        let empty = watched_fingerprint(&state);
        apply(&mut state, 1, touch(1));
        let with_member = watched_fingerprint(&state);
        assert_ne!(empty, with_member, "a member appearing and the leader key taken wake the loops");
        apply(&mut state, 2, touch(2));
        assert_eq!(watched_fingerprint(&state), with_member, "a member refresh and a lease renewal do not");
        apply(&mut state, 3, Command::put(STATUS, "{\"optime\": 5}", Guard::Always));
        assert_eq!(watched_fingerprint(&state), with_member, "the leader's status does not");
        apply(&mut state, 4, Command::put(FAILOVER, "{}", Guard::Always));
        assert_ne!(watched_fingerprint(&state), with_member, "a failover request does");
    }
}
