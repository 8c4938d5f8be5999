//! The peers the leader race judges: every other member asked live for its `GET /patroni` when
//! this node is about to race for the vacant leader key, else their member keys.
//!
//! The HTTP calls live here; turning an answer into a [`PeerReport`] is pure and table-tested.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::types::HaConfig;
use super::types::PeerReport;
use super::types::PgProcess;
use crate::dcs::view::ClusterView;
use crate::dcs::view::MemberData;
use crate::postgres::types::Lsn;
use crate::status::Role;

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
/// `racing` is [`super::candidate::races_for_vacant_key`], evaluated once by the caller.
pub async fn race_peers(query: &PeerQuery<'_>, pg: &PgProcess, racing: bool) -> Vec<PeerReport> {
    let me = query.cfg.name.as_str();
    if query.view.leader.is_some() {
        return Vec::new();
    }
    if !racing {
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
/// * `watchdog_failed: true`: it cannot lead (its required watchdog cannot be armed), which the race honours.
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
        watchdog_failed: false,
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
    let watchdog_failed = answer.get("watchdog_failed").and_then(Value::as_bool).unwrap_or(false);
    PeerReport { name: name.to_string(), member: member.clone(), reachable: true, is_primary, wal, watchdog_failed }
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
            watchdog_failed: false,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::status::NodeStatus;
    use crate::status::PgState;
    use crate::status::PgStatus;
    use crate::status::WalPosition;

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
    fn a_peer_whose_watchdog_failed_is_marked() {
        let member = MemberData::default();
        let mut answer = replica(Some(120), Some(110), true);
        assert!(!peer_from_patroni("pg3", &member, Some(&answer), Lsn(100)).watchdog_failed);
        answer["watchdog_failed"] = json!(true);
        let peer = peer_from_patroni("pg3", &member, Some(&answer), Lsn(100));
        assert_eq!((peer.reachable, peer.watchdog_failed, peer.wal), (true, true, Some(Lsn(120))));
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
        let unlocked = crate::status::ClusterSummary {
            leader: None,
            leader_optime: None,
            sync_standbys: vec![],
            quorum_mode: true,
        };
        status.cluster = Some(unlocked.clone());
        let wire = |status: &NodeStatus| serde_json::to_value(crate::api::types::PatroniStatus::from_status(status));
        let answer = wire(&status).expect("the status object serializes");
        let peer = peer_from_patroni("pg3", &MemberData::default(), Some(&answer), Lsn(0));
        assert_eq!((peer.reachable, peer.is_primary, peer.wal), (true, false, Some(Lsn(0x0300_0060))));
        status.cluster = Some(crate::status::ClusterSummary { leader: Some("pg1".into()), ..unlocked });
        let answer = wire(&status).expect("the status object serializes");
        let peer = peer_from_patroni("pg3", &MemberData::default(), Some(&answer), Lsn(0x0300_0060));
        assert_eq!((peer.reachable, peer.wal), (true, None), "a snapshot from before the vacancy does not vote");
    }
}
