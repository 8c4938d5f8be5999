//! A clean stop of the primary is a switchover.
//!
//! On SIGTERM (`systemctl stop`, a rolling restart) a primary that holds the leader key does not simply stop
//! PostgreSQL and release the key, which leaves the replicas to notice the vacant key and race for it (each asks
//! its peers first). It writes the `failover` key naming itself as leader and the replica that would win
//! ([`successor`]) as candidate, exactly as `POST /switchover` does, and keeps its HA loop running: the loop
//! demotes gracefully (a fast stop with its shutdown checkpoint, which every connected replica receives, then the
//! key is released) and the named candidate takes the vacant key at once, without a race. The REST API keeps
//! answering meanwhile, from statuses the loop still publishes. Only then does the node shut down.
//!
//! Patroni stops the primary and deletes the leader key, and its replicas race; this is a deliberate difference
//! (docs/operations.md): a stop costs what a switchover costs.
//!
//! PURE: [`successor`] and [`Handover::step`] take the clock and the view as parameters.

use std::fmt;
use std::time::Duration;
use std::time::Instant;

use super::candidate;
use super::types::ActionKind;
use super::types::HaConfig;
use crate::dcs::view::ClusterView;

/// The member a stopping primary hands its key to: of the members that could take over
/// ([`candidate::failover_candidates`]: running replicas allowed to fail over, within `maximum_lag_on_failover`, on
/// the cluster's timeline, named in the `sync` key in synchronous mode, enough voters in quorum mode) the one
/// with the most WAL, then the highest `failover_priority`, then the first name. `None` when nobody can.
pub fn successor(view: &ClusterView, cfg: &HaConfig) -> Option<String> {
    candidate::failover_candidates(view, cfg)
        .into_iter()
        .filter_map(|name| view.members.get(&name).map(|member| (name.clone(), member)))
        .max_by(|(a_name, a), (b_name, b)| {
            (a.xlog_location.unwrap_or(0), a.failover_priority())
                .cmp(&(b.xlog_location.unwrap_or(0), b.failover_priority()))
                // The first name wins a tie: `max_by` keeps the last of equals, so compare names reversed.
                .then_with(|| b_name.cmp(a_name))
        })
        .map(|(name, _)| name)
}

/// A hand-over in progress on the stopping primary.
#[derive(Debug, Clone)]
pub struct Handover {
    /// The member the `failover` key names.
    pub successor: String,
    /// The demotion must have begun by then, or the node stops the plain way.
    begin_by: Instant,
    /// How long the released key may stay vacant before the node stops anyway.
    ttl: Duration,
    /// The local view has shown our `failover` request.
    request_seen: bool,
    /// The graceful demotion ran.
    demote_seen: bool,
    /// When the demotion was seen finished.
    demoted_at: Option<Instant>,
}

/// What the loop does next during a hand-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run an HA cycle (it demotes, or renews while the demotion runs).
    Cycle,
    /// PostgreSQL is stopped and the key released: run no cycle (it would start PostgreSQL again), look again soon.
    Wait,
    /// The hand-over is over; shut down.
    Done(Outcome),
}

/// How a hand-over ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Another member holds the leader key.
    TakenBy(String),
    /// Demoted and released, but nobody took the key within ttl (or the successor left meanwhile).
    NobodyTookOver,
    /// The successor left the cluster (its member key is gone: it is stopping too, as in a stop of every node)
    /// before the demotion began; the node stops the plain way at once.
    SuccessorGone,
    /// The `failover` key went away while this node still led: the loop refused the switchover (the candidate
    /// was no longer a healthy replica) or someone deleted the request.
    Refused,
    /// The key was lost before any demotion (the lease ran out, or another member's key was seen).
    LostKey,
    /// The demotion did not begin in time.
    TimedOut,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::TakenBy(name) => write!(f, "{name} holds the leader key"),
            Outcome::NobodyTookOver => write!(f, "demoted and released the key, but nobody took it"),
            Outcome::SuccessorGone => write!(f, "the successor left the cluster before the demotion"),
            Outcome::Refused => write!(f, "the switchover request was withdrawn before the demotion"),
            Outcome::LostKey => write!(f, "the leader key was lost before the demotion"),
            Outcome::TimedOut => write!(f, "the demotion did not begin in time"),
        }
    }
}

impl Handover {
    /// A hand-over to `successor` requested at `now`: the demotion must begin within two ttls (a cycle runs at
    /// least every `loop_wait`, which is shorter than ttl; a renewal may take up to ttl).
    pub fn new(successor: String, now: Instant, ttl: Duration) -> Self {
        Handover { successor, begin_by: now + 2 * ttl, ttl, request_seen: false, demote_seen: false, demoted_at: None }
    }

    /// The next step, given the local view (`leader`: the holder's name; `mine`: our session holds it;
    /// `request_pending`: a `failover` key with a request exists; `successor_present`: the successor's member key
    /// exists) and the long action running, if any.
    pub fn step(
        &mut self,
        now: Instant,
        leader: Option<&str>,
        mine: bool,
        request_pending: bool,
        successor_present: bool,
        running: Option<ActionKind>,
    ) -> Step {
        if let Some(holder) = leader.filter(|_| !mine) {
            return Step::Done(Outcome::TakenBy(holder.to_string()));
        }
        if running == Some(ActionKind::Demote) {
            self.demote_seen = true;
            return Step::Cycle;
        }
        if self.demote_seen {
            let demoted_at = *self.demoted_at.get_or_insert(now);
            let waited_out = now >= demoted_at + self.ttl;
            return if waited_out || !successor_present { Step::Done(Outcome::NobodyTookOver) } else { Step::Wait };
        }
        if !mine {
            return Step::Done(Outcome::LostKey);
        }
        if !successor_present {
            return Step::Done(Outcome::SuccessorGone);
        }
        if request_pending {
            self.request_seen = true;
        } else if self.request_seen {
            return Step::Done(Outcome::Refused);
        }
        if now >= self.begin_by {
            return Step::Done(Outcome::TimedOut);
        }
        Step::Cycle
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::config::SynchronousMode;
    use crate::dcs::view::MemberData;
    use crate::dcs::view::SyncData;
    use crate::dcs::view::Versioned;

    const TTL: Duration = Duration::from_secs(3);

    fn cfg(mode: SynchronousMode) -> HaConfig {
        HaConfig { ttl: TTL, synchronous_mode: mode, ..crate::ha::tests::cfg() }
    }

    fn member(role: &str, xlog: u64, tags: serde_json::Value) -> MemberData {
        serde_json::from_value(json!({
            "conn_url": "postgres://127.0.0.1:5432/postgres",
            "api_url": "http://127.0.0.1:8008/patroni",
            "state": "running",
            "role": role,
            "xlog_location": xlog,
            "timeline": 1,
            "tags": tags,
        }))
        .expect("a member key")
    }

    fn view(members: &[(&str, MemberData)]) -> ClusterView {
        let members: BTreeMap<String, MemberData> =
            members.iter().map(|(name, member)| (name.to_string(), member.clone())).collect();
        ClusterView { members, ..ClusterView::default() }
    }

    fn pick(view: &ClusterView, mode: SynchronousMode) -> Option<String> {
        successor(view, &cfg(mode))
    }

    #[test]
    fn successor_is_the_replica_with_most_wal() {
        let v = view(&[
            ("pg1", member("primary", 900, json!({}))),
            ("pg2", member("replica", 500, json!({}))),
            ("pg3", member("replica", 700, json!({}))),
        ]);
        assert_eq!(pick(&v, SynchronousMode::Off).as_deref(), Some("pg3"));
    }

    #[test]
    fn successor_ties_go_to_priority_then_first_name() {
        let v = view(&[
            ("pg2", member("replica", 700, json!({}))),
            ("pg3", member("replica", 700, json!({"failover_priority": 2}))),
            ("pg4", member("replica", 700, json!({"failover_priority": 2}))),
        ]);
        assert_eq!(pick(&v, SynchronousMode::Off).as_deref(), Some("pg3"));
    }

    #[test]
    fn successor_skips_nofailover_and_stopped_members() {
        let mut stopped = member("replica", 800, json!({}));
        stopped.state = "stopped".into();
        let v = view(&[
            ("pg2", member("replica", 900, json!({"nofailover": true}))),
            ("pg3", stopped),
            ("pg4", member("replica", 100, json!({}))),
        ]);
        assert_eq!(pick(&v, SynchronousMode::Off).as_deref(), Some("pg4"));
    }

    #[test]
    fn successor_in_sync_mode_is_a_synchronous_standby() {
        let mut v = view(&[("pg2", member("replica", 900, json!({}))), ("pg3", member("replica", 100, json!({})))]);
        v.sync = Some(Versioned {
            value: SyncData { leader: Some("pg1".into()), sync_standby: Some("pg3".into()), ..SyncData::default() },
            mod_rev: 7,
        });
        assert_eq!(pick(&v, SynchronousMode::On).as_deref(), Some("pg3"));
    }

    #[test]
    fn no_successor_without_a_running_replica() {
        let v = view(&[("pg1", member("primary", 900, json!({})))]);
        assert_eq!(pick(&v, SynchronousMode::Off), None);
    }

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn handover_cycles_until_the_successor_holds_the_key() {
        let t0 = Instant::now();
        let mut h = Handover::new("pg2".into(), t0, TTL);
        assert_eq!(h.step(at(t0, 0), Some("pg1"), true, false, true, None), Step::Cycle, "request not applied yet");
        assert_eq!(h.step(at(t0, 100), Some("pg1"), true, true, true, None), Step::Cycle);
        assert_eq!(h.step(at(t0, 200), Some("pg1"), true, true, true, Some(ActionKind::Demote)), Step::Cycle);
        assert_eq!(h.step(at(t0, 900), None, false, true, true, None), Step::Wait, "released, nobody holds it yet");
        assert_eq!(
            h.step(at(t0, 1000), Some("pg2"), false, false, true, None),
            Step::Done(Outcome::TakenBy("pg2".into()))
        );
    }

    #[test]
    fn handover_released_key_left_vacant_ends_after_ttl() {
        let t0 = Instant::now();
        let mut h = Handover::new("pg2".into(), t0, TTL);
        h.step(t0, Some("pg1"), true, true, true, Some(ActionKind::Demote));
        assert_eq!(h.step(at(t0, 1000), None, false, false, true, None), Step::Wait);
        assert_eq!(h.step(at(t0, 3999), None, false, false, true, None), Step::Wait);
        assert_eq!(h.step(at(t0, 4000), None, false, false, true, None), Step::Done(Outcome::NobodyTookOver));
    }

    #[test]
    fn handover_demote_that_kept_the_key_never_cycles_again() {
        // The release failed: the key is still ours and PostgreSQL is stopped; a cycle would start it again.
        let t0 = Instant::now();
        let mut h = Handover::new("pg2".into(), t0, TTL);
        h.step(t0, Some("pg1"), true, true, true, Some(ActionKind::Demote));
        assert_eq!(h.step(at(t0, 500), Some("pg1"), true, true, true, None), Step::Wait);
        assert_eq!(h.step(at(t0, 3500), Some("pg1"), true, true, true, None), Step::Done(Outcome::NobodyTookOver));
    }

    #[test]
    fn handover_withdrawn_request_is_refused() {
        let t0 = Instant::now();
        let mut h = Handover::new("pg2".into(), t0, TTL);
        assert_eq!(h.step(t0, Some("pg1"), true, true, true, None), Step::Cycle);
        assert_eq!(h.step(at(t0, 1000), Some("pg1"), true, false, true, None), Step::Done(Outcome::Refused));
    }

    #[test]
    fn handover_key_lost_before_demotion() {
        let t0 = Instant::now();
        let mut h = Handover::new("pg2".into(), t0, TTL);
        assert_eq!(h.step(t0, None, false, true, true, None), Step::Done(Outcome::LostKey));
    }

    #[test]
    fn handover_demotion_that_never_begins_times_out() {
        let t0 = Instant::now();
        let mut h = Handover::new("pg2".into(), t0, TTL);
        assert_eq!(h.step(at(t0, 5999), Some("pg1"), true, true, true, None), Step::Cycle);
        assert_eq!(h.step(at(t0, 6000), Some("pg1"), true, true, true, None), Step::Done(Outcome::TimedOut));
    }

    #[test]
    fn handover_successor_gone_before_demotion_stops_at_once() {
        // Every node is being stopped: the successor's session is revoked before the demotion began.
        let t0 = Instant::now();
        let mut h = Handover::new("pg2".into(), t0, TTL);
        assert_eq!(h.step(t0, Some("pg1"), true, true, false, None), Step::Done(Outcome::SuccessorGone));
    }

    #[test]
    fn handover_successor_gone_after_demotion_does_not_wait_out_ttl() {
        let t0 = Instant::now();
        let mut h = Handover::new("pg2".into(), t0, TTL);
        h.step(t0, Some("pg1"), true, true, true, Some(ActionKind::Demote));
        assert_eq!(h.step(at(t0, 500), None, false, true, true, None), Step::Wait);
        assert_eq!(h.step(at(t0, 600), None, false, true, false, None), Step::Done(Outcome::NobodyTookOver));
    }

    #[test]
    fn handover_running_other_action_keeps_cycling() {
        let t0 = Instant::now();
        let mut h = Handover::new("pg2".into(), t0, TTL);
        assert_eq!(h.step(t0, Some("pg1"), true, true, true, Some(ActionKind::CopySlots)), Step::Cycle);
    }
}
