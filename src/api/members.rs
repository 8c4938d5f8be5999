//! raftgres' own endpoints for the Raft replica set (no Patroni counterpart): `GET /raft` (this replica's Raft
//! status, the membership with names and addresses, and the leader lease), `POST /raft/members` (add a node:
//! learner first, then voter) and `DELETE /raft/members/{id}` (remove one). The writes are protected like
//! Patroni's action endpoints and carried out by the Raft leader (`RaftNode::add_node` / `remove_node` forward
//! to it).
//!
//! [`raft_json`] and [`lease_json`] are PURE; the handlers read the replica and call it, nothing else. The lease
//! as seen by a node that does not hold it is an estimate from the leader's stamp of the holder's last renewal;
//! the holder reports its own lease from its monotonic clock.

use std::time::Duration;

use crate::dcs::view::ClusterView;
use axum::body::Body;
use axum::extract::Path;
use axum::extract::State;
use axum::handler::Handler as _;
use axum::http::HeaderMap;
use axum::http::Method;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use raft::NodeId;
use raft::PeerNode;
use raft::SessionId;
use serde::Deserialize;
use serde::Serialize;
use tokio::time::Instant;

use crate::api::error::ApiError;
use crate::api::error::Json;
use crate::api::reply;
use crate::api::reply::BodyRule;
use crate::api::security;
use crate::api::status;
use crate::api::ApiState;
use crate::config::HostPort;

/// How long adding a node may take: the learner must catch up before it becomes a voter.
const ADD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long removing a node may take.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The routes of this module, their writes behind the API's access rules; the router merges them.
pub fn routes(state: &ApiState) -> Router<ApiState> {
    let guard = axum::middleware::from_fn_with_state(state.clone(), security::protect);
    let read = || get(get_raft).head(status::health_bare).options(status::health_bare);
    Router::new()
        .route("/raft", read().fallback(method_not_allowed))
        .route("/raft/members", read().post(add_member.layer(guard.clone())).fallback(method_not_allowed))
        .route(
            "/raft/members/{id}",
            axum::routing::delete(remove_member.layer(guard))
                .head(status::health_bare)
                .options(status::health_bare)
                .fallback(method_not_allowed),
        )
}

/// `GET /raft`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RaftJson {
    /// This replica's Raft node id.
    pub node_id: NodeId,
    /// This member's name.
    pub name: String,
    /// `Leader`, `Follower`, `Candidate`, `Learner` or `Shutdown`.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// The Raft leader this replica knows of.
    pub leader: Option<RaftLeader>,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Index of the last applied entry.
    pub last_applied: u64,
    /// Voters and learners, by id.
    pub members: Vec<RaftMember>,
    /// The leader key's lease; `null` when no member holds it.
    pub leader_lease: Option<LeaseJson>,
}

/// The Raft leader of [`RaftJson`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftLeader {
    /// Its node id.
    pub id: NodeId,
    /// Its member name, when the membership knows it.
    pub name: Option<String>,
}

/// One node of the membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftMember {
    /// Raft node id.
    pub id: NodeId,
    /// Member name.
    pub name: String,
    /// Peer (Raft) listener address.
    pub raft_addr: String,
    /// REST API address; may be empty.
    pub api_addr: String,
    /// A voter (else a learner).
    pub voter: bool,
    /// On the Raft leader: entries this node is behind.
    pub lag: Option<u64>,
}

/// Who holds the leader key and for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseJson {
    /// The member holding the `leader` key.
    pub holder: String,
    /// The key's create revision: the fencing token.
    pub fencing_token: u64,
    /// The session's time to live, seconds.
    pub ttl: f64,
    /// Seconds left (the holder's own lease, else an estimate from the last renewal's stamp), never negative.
    pub remaining: Option<f64>,
}

/// The body of `POST /raft/members`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AddMember {
    /// Raft node id (unique, never reused).
    pub id: NodeId,
    /// Member name.
    pub name: String,
    /// Its Raft listener, `host:port`.
    pub raft_addr: String,
    /// Its REST API, `host:port`.
    #[serde(default)]
    pub api_addr: String,
}

/// `GET /raft`.
async fn get_raft(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let control = state.control()?;
    let node = control.dcs.node();
    let metrics = node.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let nodes: Vec<(NodeId, PeerNode, bool)> =
        membership.nodes().map(|(id, peer)| (*id, peer.clone(), voters.contains(id))).collect();
    let lease = control.dcs.lease();
    let now = Instant::now();
    let own = lease.holds_leader(now).then(|| lease.leader_remaining(now));
    let leader_lease = lease_json(&control.dcs.view(), node.session_id(), own, raft::lease::wall_ms());
    let name = state.status.borrow().name.clone();
    Ok(Json(raft_json(&node.status(), name, &nodes, leader_lease)).into_response())
}

/// PURE: the `GET /raft` document.
pub fn raft_json(
    status: &raft::node::RaftStatus,
    name: String,
    nodes: &[(NodeId, PeerNode, bool)],
    leader_lease: Option<LeaseJson>,
) -> RaftJson {
    let name_of =
        |id: NodeId| nodes.iter().find(|(node_id, _, _)| *node_id == id).map(|(_, peer, _)| peer.name.clone());
    let is_leader = status.leader == Some(status.node_id);
    let members = nodes
        .iter()
        .map(|(id, peer, voter)| RaftMember {
            id: *id,
            name: peer.name.clone(),
            raft_addr: peer.raft_addr.clone(),
            api_addr: peer.api_addr.clone(),
            voter: *voter,
            lag: if *id == status.node_id && is_leader { Some(0) } else { status.lag.get(id).copied() },
        })
        .collect();
    RaftJson {
        node_id: status.node_id,
        name,
        state: status.state.clone(),
        term: status.term,
        leader: status.leader.map(|id| RaftLeader { id, name: name_of(id) }),
        last_log_index: status.last_log_index,
        last_applied: status.last_applied,
        members,
        leader_lease,
    }
}

/// PURE: the leader key's lease in `view`. `own_remaining` is this node's own lease when it holds the key.
pub fn lease_json(
    view: &ClusterView,
    own_session: SessionId,
    own_remaining: Option<Duration>,
    wall_now_ms: u64,
) -> Option<LeaseJson> {
    let leader = view.leader.as_ref()?;
    let remaining = match (leader.session, leader.ttl_ms.zip(leader.renewed_stamp_ms), own_remaining) {
        (Some(id), Some(_), Some(own)) if id == own_session => Some(own.as_secs_f64()),
        (_, Some((ttl_ms, stamp_ms)), _) => {
            let expires_ms = stamp_ms.saturating_add(ttl_ms);
            Some(expires_ms.saturating_sub(wall_now_ms) as f64 / 1000.0)
        }
        (_, None, _) => None,
    };
    Some(LeaseJson {
        holder: leader.name.clone(),
        fencing_token: leader.create_rev,
        ttl: leader.ttl_ms.unwrap_or(0) as f64 / 1000.0,
        remaining,
    })
}

/// `POST /raft/members`: `{"id", "name", "raft_addr", "api_addr"}`.
async fn add_member(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = reply::json_object(&headers, body, BodyRule::Required).await?;
    let request: AddMember = serde_json::from_value(serde_json::Value::Object(body)).map_err(|e| {
        ApiError::BadRequest(format!("expected {{\"id\", \"name\", \"raft_addr\", \"api_addr\"}}: {e}"))
    })?;
    check_add(&request)?;
    let control = state.control()?;
    let node = control.dcs.node().clone();
    let peer =
        PeerNode { name: request.name.clone(), raft_addr: request.raft_addr.clone(), api_addr: request.api_addr };
    tracing::info!(id = request.id, name = %request.name, raft_addr = %request.raft_addr, "adding a raft member");
    // A spawned change finishes even when the client hangs up (house rule 14).
    let res = tokio::spawn(async move { node.add_node(request.id, peer, ADD_TIMEOUT).await })
        .await
        .map_err(|e| ApiError::Unavailable(format!("add the member: {e}")))?;
    answer(res, request.id)
}

/// `DELETE /raft/members/{id}`.
async fn remove_member(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id: NodeId = id.parse().map_err(|_| ApiError::BadRequest(format!("{id:?} is not a raft node id")))?;
    let control = state.control()?;
    let node = control.dcs.node().clone();
    tracing::info!(id, "removing a raft member");
    let res = tokio::spawn(async move { node.remove_node(id, REMOVE_TIMEOUT).await })
        .await
        .map_err(|e| ApiError::Unavailable(format!("remove the member: {e}")))?;
    answer(res, id)
}

/// PURE: what `POST /raft/members` refuses before asking the leader.
pub fn check_add(request: &AddMember) -> Result<(), ApiError> {
    if request.id == 0 {
        return Err(ApiError::BadRequest("id: raft node ids start at 1".into()));
    }
    if request.name.trim().is_empty() {
        return Err(ApiError::BadRequest("name: give the member's name".into()));
    }
    if HostPort::parse(&request.raft_addr).is_none_or(|addr| addr.is_wildcard()) {
        let addr = &request.raft_addr;
        return Err(ApiError::BadRequest(format!("raft_addr: {addr:?} is not a host:port other nodes can reach")));
    }
    if !request.api_addr.is_empty() && HostPort::parse(&request.api_addr).is_none() {
        return Err(ApiError::BadRequest(format!("api_addr: {:?} is not a host:port", request.api_addr)));
    }
    Ok(())
}

fn answer(res: Result<String, raft::RaftError>, id: NodeId) -> Result<Response, ApiError> {
    match res {
        Ok(result) => Ok(Json(serde_json::json!({ "id": id, "result": result })).into_response()),
        Err(raft::RaftError::Protocol(refusal)) => Err(ApiError::Conflict(refusal)),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not supported on {}", uri.path()))
}

#[cfg(test)]
mod tests {
    use raft::command::Command;
    use raft::command::Envelope;
    use raft::command::Guard;
    use raft::command::Op;
    use raft::ClusterState;

    use super::*;

    /// A state where member `pg1` took the leader key with a session of `ttl_ms`, renewed at `stamp_ms`.
    fn state_with_leader(ttl_ms: u64, stamp_ms: u64) -> (ClusterState, SessionId) {
        let mut state = ClusterState::default();
        let session = SessionId(7);
        let cmd = Command::Txn {
            guards: vec![("leader".into(), Guard::Absent)],
            ops: vec![
                Op::KeepAlive { session, node: 1, owner: "pg1".into(), ttl_ms },
                Op::Put { key: "leader".into(), value: "pg1".into(), attach: Some(session) },
            ],
        };
        state.apply(5, &Envelope { origin: 1, seq: 1, stamp_ms, cmd });
        (state, session)
    }

    #[test]
    fn the_lease_names_holder_and_fencing_token() {
        let (state, session) = state_with_leader(30_000, 1_000_000);
        let view = ClusterView::from_state(&state);
        let lease = lease_json(&view, SessionId(99), None, 1_010_000).expect("a lease");
        assert_eq!(lease.holder, "pg1");
        assert_eq!(lease.fencing_token, 5);
        assert_eq!(lease.ttl, 30.0);
        assert_eq!(lease.remaining, Some(20.0), "estimated from the renewal stamp");
        let own = lease_json(&view, session, Some(Duration::from_millis(12_500)), 1_010_000).expect("a lease");
        assert_eq!(own.remaining, Some(12.5), "the holder reports its own lease");
        let late = lease_json(&view, SessionId(99), None, 2_000_000).expect("a lease");
        assert_eq!(late.remaining, Some(0.0), "never negative");
        assert_eq!(lease_json(&ClusterView::default(), session, None, 0), None);
    }

    #[test]
    fn members_carry_names_addresses_and_lag() {
        let status = raft::node::RaftStatus {
            node_id: 1,
            state: "Leader".into(),
            term: 3,
            leader: Some(1),
            lag: [(2, 4)].into_iter().collect(),
            ..Default::default()
        };
        let peer = |name: &str, port: u16| PeerNode {
            name: name.into(),
            raft_addr: format!("127.0.0.1:{port}"),
            api_addr: String::new(),
        };
        let nodes = vec![(1, peer("pg1", 7000), true), (2, peer("pg2", 7001), true), (3, peer("pg3", 7002), false)];
        let json = raft_json(&status, "pg1".into(), &nodes, None);
        assert_eq!(json.leader, Some(RaftLeader { id: 1, name: Some("pg1".into()) }));
        let lags: Vec<Option<u64>> = json.members.iter().map(|m| m.lag).collect();
        assert_eq!(lags, [Some(0), Some(4), None]);
        assert!(!json.members[2].voter);
    }

    #[test]
    fn additions_need_an_id_a_name_and_a_reachable_address() {
        let ok = AddMember { id: 4, name: "pg4".into(), raft_addr: "10.0.0.4:7000".into(), api_addr: String::new() };
        assert_eq!(check_add(&ok), Ok(()));
        assert!(check_add(&AddMember { id: 0, ..ok.clone() }).is_err());
        assert!(check_add(&AddMember { name: " ".into(), ..ok.clone() }).is_err());
        assert!(check_add(&AddMember { raft_addr: "0.0.0.0:7000".into(), ..ok.clone() }).is_err());
        assert!(check_add(&AddMember { api_addr: "nope".into(), ..ok }).is_err());
    }
}
