//! [`ClusterView`]: Patroni's `Cluster` object read from the replicated state, and the JSON
//! shapes of the values stored under Patroni's keys (member, failover, sync, status, history).
//!
//! PURE: built from a `raft::ClusterState` snapshot; no I/O, no clock. The JSON types are a
//! compatibility boundary (Patroni's field names, §2.1-2.2 of the contract).

use std::collections::BTreeMap;

use raft::ClusterState;
use raft::SessionId;
use serde::Deserialize;
use serde::Serialize;
use serde_json::Map;
use serde_json::Value;

use crate::postgres::types::Lsn;

/// The value of `members/<name>` (Patroni's `touch_member` JSON).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberData {
    /// `postgres://host:port/postgres`.
    #[serde(default)]
    pub conn_url: String,
    /// `http://host:port/patroni`.
    #[serde(default)]
    pub api_url: String,
    /// PostgreSQL state string (`running`, `stopped`, …).
    #[serde(default)]
    pub state: String,
    /// `primary`, `replica`, `demoted`, `uninitialized`, `promoted`.
    #[serde(default)]
    pub role: String,
    /// raftgres version.
    #[serde(default)]
    pub version: String,
    /// Primary: current LSN; replica: max(receive, replay); as an integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xlog_location: Option<u64>,
    /// Replica receive LSN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lsn: Option<u64>,
    /// Replica replay LSN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<u64>,
    /// `streaming` / `in archive recovery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    /// Current timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// Tags (false booleans are not published).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub tags: Map<String, Value>,
    /// A parameter change needs a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_restart: bool,
    /// Per parameter that needs a restart: `{"old_value": running, "new_value": configured}`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub pending_restart_reason: Map<String, Value>,
    /// The restart scheduled through `POST /restart` (`{schedule, [restart_pending], [role], …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_restart: Option<Map<String, Value>>,
    /// Maintenance mode seen by this member.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
    /// raftgres: the member's Raft node id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_node_id: Option<u64>,
    /// raftgres' extension: a bootstrap, clone, start or rewind that keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<crate::status::FailingAction>,
}

impl MemberData {
    /// The role the member published, `None` for a word raftgres does not define.
    pub fn role(&self) -> Option<crate::status::Role> {
        crate::status::Role::from_patroni(&self.role)
    }

    /// The member published PostgreSQL as running.
    pub fn is_running(&self) -> bool {
        self.state == crate::status::PgState::Running.as_str()
    }

    /// `host` and `port` parsed from `conn_url`.
    pub fn host_port(&self) -> Option<(String, u16)> {
        let rest = self.conn_url.strip_prefix("postgres://").or_else(|| self.conn_url.strip_prefix("postgresql://"))?;
        let authority = rest.split('/').next()?;
        let authority = authority.rsplit('@').next()?;
        let (host, port) = authority.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some((host.to_string(), port.parse().ok()?))
    }

    /// A boolean tag (`nofailover`, `noloadbalance`, …).
    pub fn tag_bool(&self, key: &str) -> bool {
        self.tags.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    /// `failover_priority` (default 1; 0 when `nofailover`).
    pub fn failover_priority(&self) -> i64 {
        if self.tag_bool("nofailover") {
            return 0;
        }
        self.tags.get("failover_priority").and_then(Value::as_i64).unwrap_or(1)
    }
}

/// The value of `failover`: a requested switchover or failover.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverData {
    /// Current leader the request applies to (switchover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Wanted new leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// ISO 8601 time for a scheduled switchover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
}

/// The value of `sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncData {
    /// The primary that owns this state.
    #[serde(default)]
    pub leader: Option<String>,
    /// Comma-separated synchronous standbys, or null.
    #[serde(default)]
    pub sync_standby: Option<String>,
    /// Quorum size (quorum mode).
    #[serde(default)]
    pub quorum: u32,
}

impl SyncData {
    /// The named standbys.
    pub fn members(&self) -> Vec<String> {
        self.sync_standby
            .as_deref()
            .map(|s| s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }
}

/// The value of `status`: what the leader last wrote about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusData {
    /// Leader's last known WAL position.
    #[serde(default)]
    pub optime: u64,
    /// Permanent and member slots with their positions.
    #[serde(default)]
    pub slots: BTreeMap<String, u64>,
    /// Slots of absent members kept for `member_slots_ttl`.
    #[serde(default)]
    pub retain_slots: Vec<String>,
}

/// One line of `history`, stored as Patroni's array `[timeline, switch_lsn, reason, timestamp, new_leader]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryLine {
    /// The timeline that ended.
    pub timeline: u32,
    /// Where it ended (the new timeline's first LSN).
    pub switch_lsn: u64,
    /// Why (`no recovery target specified` for a promotion).
    pub reason: String,
    /// When, ISO 8601 with offset.
    pub timestamp: String,
    /// The member that promoted.
    pub new_leader: String,
}

impl HistoryLine {
    /// Patroni's array form (five elements).
    pub fn to_items(&self) -> Vec<Value> {
        let HistoryLine { timeline, switch_lsn, reason, timestamp, new_leader } = self.clone();
        vec![timeline.into(), switch_lsn.into(), reason.into(), timestamp.into(), new_leader.into()]
    }
}

/// How a promotion came about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromotionKind {
    /// The old primary's lease expired.
    #[default]
    Failover,
    /// The old primary handed the lease over.
    Switchover,
}

impl PromotionKind {
    /// The word used in `/history`, `/metrics` and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            PromotionKind::Failover => "failover",
            PromotionKind::Switchover => "switchover",
        }
    }
}

/// How one promotion unfolded: raftgres stores it as a sixth element of its `history` line
/// (Patroni's readers take the first five). Times are ms since the epoch; `last_renewal_ms` and
/// `lease_expired_ms` are stamps of the Raft leader that expired the old primary's session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverTimeline {
    /// `failover` (the old primary's lease expired) or `switchover` (it handed the lease over).
    pub kind: PromotionKind,
    /// The old primary's last successful lease renewal (failovers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_renewal_ms: Option<u64>,
    /// Its session expired (failovers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expired_ms: Option<u64>,
    /// This node held the lease and started `pg_promote`.
    pub promote_started_ms: u64,
    /// PostgreSQL left recovery.
    pub promoted_ms: u64,
    /// Written by raftgres before the promoting action wrote its own history line: the cycle after
    /// the promotion that published this node as a primary holding the lease. Read from older
    /// rows, never written now (`GET /primary` answers 200 from that cycle, shortly after `promoted_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_healthy_ms: Option<u64>,
}

/// The record the lease keeper's expiry leaves when the leader's session expires
/// (`dcs::keys::LEADER_EXPIRY`; entries written before expiry records were configurable call the
/// owner `member`, newer ones `owner`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderExpiry {
    /// Member whose session expired.
    #[serde(alias = "owner")]
    pub member: String,
    /// Its last renewal.
    pub last_renewal_ms: u64,
    /// The expiry.
    pub expired_ms: u64,
}

/// The `leader` key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderKey {
    /// Member name holding it.
    pub name: String,
    /// Session it is attached to.
    pub session: Option<SessionId>,
    /// Create revision: the fencing token.
    pub create_rev: u64,
    /// Last write revision.
    pub mod_rev: u64,
    /// The session's time to live, ms (`None` when the session is gone).
    pub ttl_ms: Option<u64>,
    /// Raft leader stamp of the session's last renewal, ms since the epoch (information only).
    pub renewed_stamp_ms: Option<u64>,
}

/// A key's value with its CAS version.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// Parsed value.
    pub value: T,
    /// `mod_rev` for compare-and-set.
    pub mod_rev: u64,
}

/// Patroni's `Cluster`: everything under the cluster prefix, in one consistent snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// `initialize`: `None` absent, `Some("")` while bootstrapping, else the system identifier.
    pub initialize: Option<String>,
    /// Dynamic configuration document.
    pub config: Option<Versioned<Value>>,
    /// The leader key.
    pub leader: Option<LeaderKey>,
    /// Members by name (unparsable member values are skipped).
    pub members: BTreeMap<String, MemberData>,
    /// Pending switchover/failover.
    pub failover: Option<Versioned<FailoverData>>,
    /// Version of the stored `failover` key, also when it holds no request (`{}`): what a new
    /// request's compare-and-set expects.
    pub failover_key_rev: Option<u64>,
    /// Synchronous replication state.
    pub sync: Option<Versioned<SyncData>>,
    /// Timeline history.
    pub history: Vec<HistoryLine>,
    /// The raw `history` lines, as stored (with raftgres' timelines as sixth elements).
    pub history_raw: Vec<Value>,
    /// The timeline of the last promotion, when its history line carries one.
    pub last_timeline: Option<FailoverTimeline>,
    /// The last expiry of a leader's session.
    pub leader_expiry: Option<LeaderExpiry>,
    /// Leader status (optime, slots).
    pub status: Option<StatusData>,
    /// `failsafe` member map.
    pub failsafe: Option<BTreeMap<String, String>>,
    /// Revision of the snapshot.
    pub revision: u64,
}

impl ClusterView {
    /// Reads the view from a replicated state snapshot.
    pub fn from_state(state: &ClusterState) -> ClusterView {
        let parse_json = |key: &str| state.get(key).and_then(|v| serde_json::from_str::<Value>(&v.value).ok());
        ClusterView {
            initialize: state.get(super::keys::INITIALIZE).map(|v| v.value.clone()),
            config: state.get(super::keys::CONFIG).map(|v| Versioned {
                value: serde_json::from_str(&v.value).unwrap_or(Value::Null),
                mod_rev: v.mod_rev,
            }),
            leader: state.get(super::keys::LEADER).filter(|v| !v.value.is_empty()).map(|v| {
                let session = v.session.and_then(|id| state.sessions.get(&id));
                LeaderKey {
                    name: v.value.clone(),
                    session: v.session,
                    create_rev: v.create_rev,
                    mod_rev: v.mod_rev,
                    ttl_ms: session.map(|s| s.ttl_ms),
                    renewed_stamp_ms: session.map(|s| s.renewed_stamp_ms),
                }
            }),
            members: state
                .prefixed(super::keys::MEMBERS_PREFIX)
                .filter_map(|(name, v)| serde_json::from_str(&v.value).ok().map(|m| (name.to_string(), m)))
                .collect(),
            failover: versioned::<FailoverData>(state, super::keys::FAILOVER).filter(|f: &Versioned<FailoverData>| {
                f.value.leader.is_some() || f.value.member.is_some() || f.value.scheduled_at.is_some()
            }),
            failover_key_rev: state.get(super::keys::FAILOVER).map(|v| v.mod_rev),
            sync: versioned::<SyncData>(state, super::keys::SYNC),
            history: parse_json(super::keys::HISTORY).and_then(|v| parse_history(&v)).unwrap_or_default(),
            history_raw: parse_json(super::keys::HISTORY)
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            last_timeline: parse_json(super::keys::HISTORY).and_then(|v| {
                let last = v.as_array()?.last()?.as_array()?.get(5)?.clone();
                serde_json::from_value(last).ok()
            }),
            leader_expiry: parse_json(super::keys::LEADER_EXPIRY).and_then(|v| serde_json::from_value(v).ok()),
            status: parse_json(super::keys::STATUS).and_then(|v| serde_json::from_value(v).ok()),
            failsafe: parse_json("failsafe").and_then(|v| serde_json::from_value(v).ok()),
            revision: state.last_rev,
        }
    }

    /// The leader's member record, if both exist.
    pub fn leader_member(&self) -> Option<(&str, &MemberData)> {
        let leader = self.leader.as_ref()?;
        self.members.get(&leader.name).map(|m| (leader.name.as_str(), m))
    }

    /// The leader's last written optime.
    pub fn leader_optime(&self) -> Option<Lsn> {
        self.status.as_ref().map(|s| Lsn(s.optime)).filter(|l| l.0 > 0)
    }

    /// The cluster timeline: last history line's timeline + 1 (1 without history).
    pub fn timeline(&self) -> u32 {
        self.history.last().map(|line| line.timeline + 1).unwrap_or(1)
    }
}

/// A key parsed as JSON of type `T`, with its CAS version.
fn versioned<T: serde::de::DeserializeOwned>(state: &ClusterState, key: &str) -> Option<Versioned<T>> {
    let stored = state.get(key)?;
    let value = serde_json::from_str(&stored.value).ok()?;
    Some(Versioned { value, mod_rev: stored.mod_rev })
}

/// Accepts history lines of 3 to 5 elements (older Patroni wrote fewer).
fn parse_history(value: &Value) -> Option<Vec<HistoryLine>> {
    let lines = value.as_array()?;
    let mut res = Vec::with_capacity(lines.len());
    for line in lines {
        let items = line.as_array()?;
        let timeline = items.first()?.as_u64()? as u32;
        let lsn = items.get(1)?.as_u64()?;
        let text = |i: usize| items.get(i).and_then(Value::as_str).unwrap_or_default().to_string();
        res.push(HistoryLine { timeline, switch_lsn: lsn, reason: text(2), timestamp: text(3), new_leader: text(4) });
    }
    Some(res)
}

#[cfg(test)]
mod tests {
    use raft::command::Command;
    use raft::command::Envelope;
    use raft::command::Guard;

    use super::*;

    fn state_with(pairs: &[(&str, &str)]) -> ClusterState {
        let mut state = ClusterState::default();
        for (idx, (key, value)) in pairs.iter().enumerate() {
            let rev = idx as u64 + 1;
            state.apply(
                rev,
                &Envelope { origin: rev, seq: 1, stamp_ms: 0, cmd: Command::put(*key, *value, Guard::Always) },
            );
        }
        state
    }

    #[test]
    fn reads_patroni_keys() {
        let member = r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","xlog_location":100,"tags":{"nofailover":true}}"#;
        let state = state_with(&[
            ("initialize", "7277694203142172922"),
            ("leader", "pg1"),
            ("members/pg2", member),
            ("members/broken", "not json"),
            ("failover", "{}"),
            ("sync", r#"{"leader":"pg1","sync_standby":"pg2,pg3","quorum":0}"#),
            (
                "history",
                r#"[[1,25165984,"no recovery target specified","2024-01-01T00:00:00+00:00","pg1"],[2,33554592,"x"]]"#,
            ),
            ("status", r#"{"optime":4096,"slots":{"pg2":4000}}"#),
        ]);
        let view = ClusterView::from_state(&state);
        assert_eq!(view.initialize.as_deref(), Some("7277694203142172922"));
        assert_eq!(view.leader.as_ref().map(|l| l.name.as_str()), Some("pg1"));
        assert_eq!(view.members.len(), 1, "unparsable member values are skipped");
        let pg2 = &view.members["pg2"];
        assert_eq!(pg2.host_port(), Some(("127.0.0.1".to_string(), 5433)));
        assert_eq!(pg2.failover_priority(), 0);
        assert!(view.failover.is_none(), "an empty failover object means no request");
        assert_eq!(view.sync.as_ref().map(|s| s.value.members()), Some(vec!["pg2".to_string(), "pg3".to_string()]));
        assert_eq!(view.timeline(), 3);
        assert_eq!(view.leader_optime(), Some(Lsn(4096)));
    }
}
