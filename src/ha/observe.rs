//! Observation: read the local PostgreSQL, the data directory, the lease and the cluster view
//! into the plain data `decide` takes; and render what we publish (member key, NodeStatus).
//!
//! I/O lives here (SQL probe, pg_controldata, peers' `GET /patroni` during the leader race); the conversions
//! are pure.

use std::time::Duration;
use std::time::SystemTime;

use serde_json::Map;
use serde_json::Value;
use tokio::time::Instant;

use super::types::DataDir;
use super::types::HaConfig;
use super::types::Observation;
use super::types::PeerReport;
use super::types::PgProcess;
use crate::dcs::view::ClusterView;
use crate::dcs::view::MemberData;
use crate::dcs::view::StatusData;
use crate::postgres::controldata::ClusterState as PgClusterState;
use crate::postgres::supervisor::DataDirState;
use crate::postgres::supervisor::Supervisor;
use crate::postgres::types::Lsn;
use crate::status::ClusterSummary;
use crate::status::NodeStatus;
use crate::status::PgState;
use crate::status::PgStatus;
use crate::status::Role;
use crate::status::WalPosition;

/// Reads the data directory through pg_controldata.
pub async fn data_dir(pg: &Supervisor) -> DataDir {
    match pg.data_dir_state().await {
        DataDirState::Missing => DataDir::Empty,
        DataDirState::Invalid(why) => DataDir::Invalid(why),
        DataDirState::Initialized { controldata } => DataDir::Initialized {
            system_id: controldata.system_id,
            was_primary: matches!(
                controldata.state,
                PgClusterState::InProduction
                    | PgClusterState::ShutDown
                    | PgClusterState::ShuttingDown
                    | PgClusterState::InCrashRecovery
            ),
            timeline: controldata.checkpoint_timeline,
        },
    }
}

/// Probes the running PostgreSQL.
pub async fn pg_process(pg: &Supervisor) -> PgProcess {
    if !pg.is_running() {
        return PgProcess::Stopped;
    }
    match pg.probe().await {
        Ok(probe) => PgProcess::Running(Box::new(PgStatus::from(probe))),
        Err(e) => {
            tracing::debug!(error = %e, "postgres probe failed");
            PgProcess::Unresponsive
        }
    }
}

/// Longest a peer's `GET /patroni` may take during the leader race (Patroni's 2 s).
pub const PEER_STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before asking again a peer whose answer predates the vacant leader key.
const STALE_ANSWER_RETRY: Duration = Duration::from_millis(100);

/// What [`race_peers`] needs besides the local PostgreSQL.
pub struct PeerQuery<'a> {
    /// The client for peers' REST APIs (the REST API's own peer client: `restapi.cafile` trusted).
    pub http: &'a reqwest::Client,
    /// Budget for all peers together: `min(retry_timeout, PEER_STATUS_TIMEOUT)`.
    pub timeout: Duration,
    /// The cycle's view: which members exist, their `api_url` and tags.
    pub view: &'a ClusterView,
    /// The policy (this member's name, pause, `nofailover`).
    pub cfg: &'a HaConfig,
}

/// The peers the decision judges this cycle.
///
/// When this node is about to race for the vacant leader key ([`super::candidate::races_for_vacant_key`]), every
/// other member is asked live for its `GET /patroni`, all at once, as Patroni's `fetch_nodes_statuses` does:
/// a member key may be up to `ttl` old (a frozen manager, a PostgreSQL that just died, WAL that moved since),
/// and in quorum mode a stale key would count as a vote. Otherwise the member keys suffice: no HTTP per cycle.
pub async fn race_peers(query: &PeerQuery<'_>, pg: &PgProcess, dcs_ok: bool) -> Vec<PeerReport> {
    let me = query.cfg.name.as_str();
    if query.view.leader.is_some() {
        return Vec::new();
    }
    if !super::candidate::races_for_vacant_key(query.view, pg, query.cfg, dcs_ok) {
        return peers_from_view(query.view, me);
    }
    let my_wal = match pg {
        PgProcess::Running(status) => status.wal.furthest().unwrap_or_default(),
        _ => Lsn::default(),
    };
    let deadline = Instant::now() + query.timeout;
    let mut fetches = tokio::task::JoinSet::new();
    for (name, member) in query.view.members.iter().filter(|(name, _)| name.as_str() != me) {
        let (http, name, member) = (query.http.clone(), name.clone(), member.clone());
        fetches.spawn(async move {
            let answer = fetch_peer_status(&http, &member.api_url, deadline).await;
            match &answer {
                Some(_) => tracing::debug!(member = %name, "peer answered during the leader race"),
                None => tracing::info!(member = %name, api_url = %member.api_url, "peer did not answer during the leader race"),
            }
            peer_from_patroni(&name, &member, answer.as_ref(), my_wal)
        });
    }
    let mut peers = Vec::with_capacity(fetches.len());
    while let Some(joined) = fetches.join_next().await {
        match joined {
            Ok(peer) => peers.push(peer),
            Err(e) => tracing::debug!(error = %e, "peer status task ended abnormally"),
        }
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    peers
}

/// A peer's `GET /patroni` document, `None` when it did not answer with JSON before `deadline`. An answer
/// published before the peer saw the leader key vacant (see [`peer_from_patroni`]) is asked for again until
/// `deadline`: peers woken by the same change usually publish a fresh one within a few hundred milliseconds.
async fn fetch_peer_status(http: &reqwest::Client, api_url: &str, deadline: Instant) -> Option<Value> {
    if api_url.is_empty() {
        return None;
    }
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return last;
        }
        let attempt = async {
            let response = http.get(api_url).timeout(left).send().await.ok()?;
            response.json::<Value>().await.ok()
        };
        // Cancel-safe: dropping an unfinished request only closes its connection.
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Some(answer)) if answer_is_fresh(&answer) => return Some(answer),
            Ok(Some(answer)) => last = Some(answer),
            Ok(None) | Err(_) => return last,
        }
        tokio::time::sleep(STALE_ANSWER_RETRY.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// PURE: the answer was published by a cycle that already saw the leader key vacant (`cluster_unlocked`), so its
/// WAL position was probed after the old primary stopped (its fence stops PostgreSQL before the key expires).
fn answer_is_fresh(answer: &Value) -> bool {
    answer.get("cluster_unlocked").and_then(Value::as_bool).unwrap_or(false)
}

/// PURE: a peer report from its live `GET /patroni` answer (`None`: it did not answer), as Patroni's
/// `_MemberStatus.from_api_response`; `member` (its member key) supplies tags and `failover_priority`.
///
/// * No answer, or an answer without `xlog` (PostgreSQL not probed): not reachable, so it neither blocks nor votes.
/// * `role: primary` (or a primary's `xlog.location`): a primary still alive.
/// * Otherwise WAL = `max(received_location, replayed_location)`, the member key's `xlog_location`.
/// * An answer published before the peer saw the leader key vacant (`cluster_unlocked` absent) may predate WAL
///   it received from the old primary since: it still blocks when already ahead of `my_wal`, but never votes
///   (reported without a position). Failure scenario: (1) quorum `ANY 1 (b,c)`, key `{b,c}`, q 1; (2) the
///   primary's last commit is acknowledged by c just before its fence stops it; (3) c's snapshot predates that
///   WAL and shows c level with b; (4) b counts c's vote and promotes without the commit.
pub fn peer_from_patroni(name: &str, member: &MemberData, answer: Option<&Value>, my_wal: Lsn) -> PeerReport {
    let unreachable = || PeerReport {
        name: name.to_string(),
        member: member.clone(),
        reachable: false,
        is_primary: false,
        wal: None,
    };
    let Some(answer) = answer else { return unreachable() };
    let Some(xlog) = answer.get("xlog").or_else(|| answer.get("wal")).filter(|x| x.is_object()) else {
        return unreachable();
    };
    let lsn = |key: &str| xlog.get(key).and_then(Value::as_u64);
    let role = answer.get("role").and_then(Value::as_str).unwrap_or_default();
    let location = lsn("location").filter(|l| *l > 0);
    let is_primary = location.is_some() || matches!(role, "primary" | "master");
    let wal = if is_primary { location } else { lsn("received_location").max(lsn("replayed_location")) }.map(Lsn);
    let wal = if answer_is_fresh(answer) { wal } else { wal.filter(|wal| *wal > my_wal) };
    PeerReport { name: name.to_string(), member: member.clone(), reachable: true, is_primary, wal }
}

/// Peer reports from the members' keys (published every cycle by each member).
pub fn peers_from_view(view: &ClusterView, me: &str) -> Vec<PeerReport> {
    view.members
        .iter()
        .filter(|(name, _)| name.as_str() != me)
        .map(|(name, member)| PeerReport {
            name: name.clone(),
            member: member.clone(),
            reachable: member.is_running(),
            is_primary: member.role() == Some(Role::Primary),
            wal: member.xlog_location.map(Lsn),
        })
        .collect()
}

/// Builds the observation (pure, from the pieces read above).
#[allow(clippy::too_many_arguments)]
pub fn observation(
    data_dir: DataDir,
    pg: PgProcess,
    holds_lease: bool,
    leader_key_is_mine: bool,
    dcs_ok: bool,
    action: Option<super::types::ActionKind>,
    peers: Vec<PeerReport>,
    following: Option<String>,
    rewind_failed: bool,
    rewind_incomplete: bool,
) -> Observation {
    Observation {
        data_dir,
        pg,
        holds_lease,
        leader_key_is_mine,
        dcs_ok,
        action,
        peers,
        following,
        rewind_failed,
        rewind_incomplete,
    }
}

/// What this member publishes under `members/<name>`.
pub struct MemberIdentity<'a> {
    /// `postgres://host:port/postgres`.
    pub conn_url: &'a str,
    /// `http://host:port/patroni`.
    pub api_url: &'a str,
    /// Published tags.
    pub tags: &'a Map<String, Value>,
    /// Raft node id.
    pub raft_node_id: u64,
    /// The restart scheduled through the REST API, if any.
    pub scheduled_restart: Option<Map<String, Value>>,
}

/// PURE: the member key from the latest PostgreSQL status.
pub fn member_data(id: &MemberIdentity<'_>, pg: &PgStatus, paused: bool) -> MemberData {
    let (xlog, receive, replay) = match &pg.wal {
        WalPosition::Primary { location } => (Some(location.0), None, None),
        WalPosition::Replica { received, replayed, .. } => {
            (pg.wal.furthest().map(|l| l.0), received.map(|l| l.0), replayed.map(|l| l.0))
        }
        WalPosition::Unknown => (None, None, None),
    };
    let tags = id.tags.iter().filter(|(_, v)| **v != Value::Bool(false)).map(|(k, v)| (k.clone(), v.clone())).collect();
    MemberData {
        conn_url: id.conn_url.to_string(),
        api_url: id.api_url.to_string(),
        state: pg.state.as_str().to_string(),
        role: pg.role.as_str().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        xlog_location: xlog,
        receive_lsn: receive,
        replay_lsn: replay,
        replication_state: pg.replication_state.clone(),
        timeline: pg.timeline.map(|t| t.0),
        tags,
        pending_restart: pg.pending_restart || !pg.pending_restart_reason.is_empty(),
        pending_restart_reason: pending_restart_reason(pg),
        scheduled_restart: id.scheduled_restart.clone(),
        pause: paused,
        raft_node_id: Some(id.raft_node_id),
    }
}

/// PURE: Patroni's `pending_restart_reason` of the member key, `{param: {old_value, new_value}}`.
fn pending_restart_reason(pg: &PgStatus) -> Map<String, Value> {
    let reasons = pg.pending_restart_reason.iter();
    reasons
        .map(|(param, (old_value, new_value))| {
            let diff = serde_json::json!({"old_value": old_value, "new_value": new_value});
            (param.clone(), diff)
        })
        .collect()
}

/// PURE: the `status` key a leader writes.
pub fn status_data(pg: &PgStatus, previous: Option<&StatusData>) -> Option<StatusData> {
    let WalPosition::Primary { location } = pg.wal else { return None };
    let mut status = previous.cloned().unwrap_or_default();
    status.optime = location.0;
    Some(status)
}

/// PURE: the PostgreSQL status to publish when the process is not answering.
pub fn status_without_probe(process: &PgProcess, data_dir: &DataDir, state: PgState) -> PgStatus {
    match process {
        PgProcess::Running(status) => (**status).clone(),
        _ => PgStatus {
            state,
            role: match data_dir {
                DataDir::Empty | DataDir::Invalid(_) => Role::Uninitialized,
                DataDir::Initialized { was_primary: true, .. } => Role::Demoted,
                DataDir::Initialized { .. } => Role::Replica,
            },
            system_identifier: match data_dir {
                DataDir::Initialized { system_id, .. } => Some(*system_id),
                _ => None,
            },
            ..PgStatus::default()
        },
    }
}

/// PURE: the cluster summary for the API, `None` when the view is not trusted.
pub fn cluster_summary(view: &ClusterView, dcs_ok: bool) -> Option<ClusterSummary> {
    dcs_ok.then(|| ClusterSummary {
        leader: view.leader.as_ref().map(|l| l.name.clone()),
        leader_optime: view.leader_optime(),
        sync_standbys: view.sync.as_ref().map(|s| s.value.members()).unwrap_or_default(),
        quorum_mode: false,
    })
}

/// Fields of NodeStatus the loop fills each cycle.
pub struct Published<'a> {
    /// PostgreSQL.
    pub pg: PgStatus,
    /// The view.
    pub view: &'a ClusterView,
    /// Store trusted.
    pub dcs_ok: bool,
    /// Lease end.
    pub leader_until: Option<Instant>,
    /// Fencing token.
    pub fencing_token: Option<u64>,
    /// Sentence.
    pub reason: String,
    /// Next cycle.
    pub next_cycle_at: Instant,
    /// Last successful store contact.
    pub dcs_last_seen: Option<SystemTime>,
}

/// PURE: publishes the probe a node about to race took after seeing the leader key vacant (its `GET /patroni`
/// then says `cluster_unlocked`, which peers racing at the same moment require before counting its vote); the
/// rest of the status waits for the end of the cycle.
pub fn publish_race_probe(status: &mut NodeStatus, pg: PgStatus, view: &ClusterView, dcs_ok: bool) {
    let quorum_mode = status.cluster.as_ref().is_some_and(|c| c.quorum_mode);
    status.pg = pg;
    status.cluster = cluster_summary(view, dcs_ok).map(|summary| ClusterSummary { quorum_mode, ..summary });
}

/// PURE: updates the published status.
pub fn publish(status: &mut NodeStatus, p: Published<'_>) {
    status.sync_standby = p.view.sync.as_ref().is_some_and(|s| s.value.members().contains(&status.name));
    status.pg = p.pg;
    status.cluster = cluster_summary(p.view, p.dcs_ok);
    status.leader_until = p.leader_until;
    status.fencing_token = p.fencing_token;
    status.reason = p.reason;
    status.next_cycle_at = p.next_cycle_at;
    status.dcs_last_seen = p.dcs_last_seen;
}

#[cfg(test)]
mod peer_tests {
    use serde_json::json;

    use super::*;

    /// (answer, my WAL) → (reachable, is_primary, wal).
    #[track_caller]
    fn check(answer: Option<Value>, my_wal: u64, expected: (bool, bool, Option<u64>)) {
        let member = MemberData { xlog_location: Some(999), ..MemberData::default() };
        let peer = peer_from_patroni("pg3", &member, answer.as_ref(), Lsn(my_wal));
        assert_eq!(peer.name, "pg3");
        assert_eq!(peer.member, member, "tags and failover_priority still come from the member key");
        let got = (peer.reachable, peer.is_primary, peer.wal.map(|l| l.0));
        assert_eq!(got, expected, "answer {answer:?}, my WAL {my_wal}");
    }

    fn replica(received: Option<u64>, replayed: Option<u64>, unlocked: bool) -> Value {
        json!({"state": "running", "role": "replica", "cluster_unlocked": unlocked,
               "xlog": {"received_location": received, "replayed_location": replayed,
                        "replayed_timestamp": null, "paused": false}})
    }

    #[test]
    fn patroni_answers_become_peer_reports() {
        // No answer: neither blocks nor votes, whatever its member key says.
        check(None, 100, (false, false, None));
        // PostgreSQL not probed (no xlog), or a body that is no status object: not reachable (Patroni's KeyError).
        check(
            Some(json!({"state": "stopped", "role": "replica", "cluster_unlocked": true})),
            100,
            (false, false, None),
        );
        check(Some(json!({"error": "busy"})), 100, (false, false, None));
        check(Some(json!({"role": "replica", "xlog": 5})), 100, (false, false, None));
        // A replica that saw the key vacant: WAL is max(received, replayed).
        check(Some(replica(Some(120), Some(110), true)), 100, (true, false, Some(120)));
        check(Some(replica(Some(90), Some(95), true)), 100, (true, false, Some(95)));
        check(Some(replica(None, Some(80), true)), 100, (true, false, Some(80)));
        check(Some(replica(None, None, true)), 100, (true, false, None));
        // Patroni's `wal` spelling is read too.
        let wal_key = json!({"role": "replica", "cluster_unlocked": true, "wal": {"replayed_location": 70}});
        check(Some(wal_key), 100, (true, false, Some(70)));
        // A primary, by role or by its `xlog.location`.
        let primary = json!({"role": "primary", "xlog": {"location": 300}});
        check(Some(primary), 100, (true, true, Some(300)));
        check(Some(json!({"role": "demoted", "xlog": {"location": 300}})), 100, (true, true, Some(300)));
        check(Some(json!({"role": "master", "xlog": {"location": 0}})), 100, (true, true, None));
    }

    #[test]
    fn answers_from_before_the_vacancy_block_but_never_vote() {
        // Still seeing the old leader: its position may predate WAL it received since.
        check(Some(replica(Some(100), Some(100), false)), 100, (true, false, None));
        check(Some(replica(Some(50), Some(50), false)), 100, (true, false, None));
        // Already ahead of us in that snapshot: it is ahead now too, and blocks.
        check(Some(replica(Some(150), Some(140), false)), 100, (true, false, Some(150)));
        // A key absent from the answer means the peer saw a leader (Patroni omits false flags).
        let no_flag = json!({"role": "replica", "xlog": {"received_location": 100, "replayed_location": 100}});
        check(Some(no_flag), 100, (true, false, None));
    }

    #[test]
    fn our_own_status_object_reads_back() {
        let mut status = NodeStatus::initial("pg3", "demo", Instant::now());
        status.pg = PgStatus {
            state: PgState::Running,
            role: Role::Replica,
            wal: WalPosition::Replica {
                received: Some(Lsn(0x0300_0060)),
                replayed: Some(Lsn(0x0300_0028)),
                replayed_timestamp: None,
                paused: false,
                latest_end: None,
            },
            ..PgStatus::default()
        };
        let unlocked = ClusterSummary { leader: None, leader_optime: None, sync_standbys: vec![], quorum_mode: true };
        status.cluster = Some(unlocked.clone());
        let wire = |status: &NodeStatus| serde_json::to_value(crate::api::types::PatroniStatus::from_status(status));
        let answer = wire(&status).expect("the status object serializes");
        let peer = peer_from_patroni("pg3", &MemberData::default(), Some(&answer), Lsn(0));
        assert_eq!((peer.reachable, peer.is_primary, peer.wal), (true, false, Some(Lsn(0x0300_0060))));
        status.cluster = Some(ClusterSummary { leader: Some("pg1".into()), ..unlocked });
        let answer = wire(&status).expect("the status object serializes");
        let peer = peer_from_patroni("pg3", &MemberData::default(), Some(&answer), Lsn(0x0300_0060));
        assert_eq!((peer.reachable, peer.wal), (true, None), "a snapshot from before the vacancy does not vote");
    }
}
