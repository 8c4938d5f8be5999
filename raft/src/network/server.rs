//! Server side of the peer transport: the axum routes of the peer-only listener.
//!
//! Each handler decodes a [`Wire`] with a size limit, checks version, cluster id and target id,
//! and hands the body to openraft or to the node. Bad input gets an error response (400) and a
//! WARN line, never a panic. A node that is still deciding whether it may take part (pristine
//! bootstrap or rejoin after a wiped disk) answers Raft RPCs with 503.
//!
//! With TLS the handshake has already checked that the client certificate comes from the
//! cluster's CA; [`open`] then checks that it names the node the message claims to come from
//! (403 and a WARN line otherwise), so a node can speak only for itself.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::VoteRequest;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::debug;
use tracing::warn;

use super::decode;
use super::encode;
use super::tls::cert_names;
use super::tls::PeerIdentity;
use super::tls::PeerTls;
use super::tls::PeerTlsListener;
use super::MembershipChange;
use super::Wire;
use super::DECODE_LIMIT;
use super::PROTOCOL_VERSION;
use crate::command::Envelope;
use crate::node::Inner;
use crate::NodeId;
use crate::TypeConfig;

/// Builds the peer router.
pub fn router(inner: Arc<Inner>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/write", post(write))
        .route("/raft/read-index", post(read_index))
        .route("/raft/status", post(status))
        .route("/raft/membership", post(membership))
        .route("/raft/elect", post(elect))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(inner)
}

/// Serves `app` on `listener` until `shutdown`: over mutual TLS when `tls` is set, else plaintext.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<PeerTls>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(tls) => {
            let listener = PeerTlsListener::new(listener, tls)?;
            let service = app.into_make_service_with_connect_info::<PeerIdentity>();
            axum::serve(listener, service).with_graceful_shutdown(shutdown).await
        }
        None => {
            let service = app.into_make_service_with_connect_info::<PeerIdentity>();
            axum::serve(listener, service).with_graceful_shutdown(shutdown).await
        }
    }
}

fn reject(path: &str, status: StatusCode, message: String) -> Response {
    warn!(path, %status, reason = %message, "rejected peer message");
    (status, message).into_response()
}

fn reply<T: Serialize>(path: &str, value: &T) -> Response {
    match encode(value) {
        Ok(bytes) => (StatusCode::OK, bytes).into_response(),
        Err(message) => reject(path, StatusCode::INTERNAL_SERVER_ERROR, message),
    }
}

/// Decodes and checks the envelope; returns the sender and body, or the error response.
/// The response is returned unboxed: it is built once per rejected message, off the hot path.
#[allow(clippy::result_large_err)]
fn open<T: DeserializeOwned>(
    inner: &Inner,
    peer: &PeerIdentity,
    path: &str,
    bytes: &Bytes,
) -> Result<(NodeId, T), Response> {
    let wire: Wire<T> = decode::<Wire<T>, DECODE_LIMIT>(bytes)
        .map_err(|e| reject(path, StatusCode::BAD_REQUEST, format!("undecodable peer message: {e}")))?;
    let cfg = inner.config();
    if wire.version != PROTOCOL_VERSION {
        return Err(reject(
            path,
            StatusCode::BAD_REQUEST,
            format!("peer protocol version {} from node {} is not {PROTOCOL_VERSION}", wire.version, wire.from),
        ));
    }
    if wire.cluster_id != cfg.cluster_id() {
        return Err(reject(
            path,
            StatusCode::BAD_REQUEST,
            format!(
                "message from node {} is for cluster id {:016x}, this node serves cluster {:?} ({:016x}); check scope and raft.peers",
                wire.from,
                wire.cluster_id,
                cfg.cluster_name,
                cfg.cluster_id()
            ),
        ));
    }
    if wire.to != cfg.node_id {
        return Err(reject(
            path,
            StatusCode::BAD_REQUEST,
            format!(
                "message from node {} is addressed to node {}, this is node {}; check raft.peers addresses",
                wire.from, wire.to, cfg.node_id
            ),
        ));
    }
    authorize(inner, peer, wire.from).map_err(|message| reject(path, StatusCode::FORBIDDEN, message))?;
    Ok((wire.from, wire.body))
}

/// Checks that the client certificate names node `from`; the error says why not.
fn authorize(inner: &Inner, peer: &PeerIdentity, from: NodeId) -> Result<(), String> {
    let cfg = inner.config();
    let Some(cert) = &peer.cert else {
        return match cfg.transport {
            crate::config::PeerTransport::Tls(_) => {
                Err(format!("message from node {from} at {} carries no client certificate", peer.addr))
            }
            _ => Ok(()),
        };
    };
    let known = known_names(inner);
    match known.iter().find(|(id, _)| *id == from) {
        Some((_, name)) if cert_names(cert, name) => Ok(()),
        Some((_, name)) => {
            let claimed =
                known.iter().find(|(_, other)| cert_names(cert, other)).map(|(id, name)| format!("{name} (node {id})"));
            Err(format!(
                "message claims to come from node {from} ({name}) but the client certificate from {} does not name \
                 {name:?}{}; a node may only speak for itself",
                peer.addr,
                claimed.map(|c| format!(" (it names {c})")).unwrap_or_default()
            ))
        }
        // A node not yet in the membership (joining): it must not use a member's name.
        None => match known.iter().find(|(_, name)| cert_names(cert, name)) {
            Some((id, name)) => Err(format!(
                "message claims to come from unknown node {from} but the client certificate from {} names member \
                 {name:?} (node {id})",
                peer.addr
            )),
            None => Ok(()),
        },
    }
}

/// Names of the nodes this node knows: the static peers, then the membership.
fn known_names(inner: &Inner) -> Vec<(NodeId, String)> {
    let mut names: Vec<(NodeId, String)> = inner.config().peers.iter().map(|p| (p.id, p.name.clone())).collect();
    let metrics = inner.raft().metrics();
    let metrics = metrics.borrow();
    for (id, node) in metrics.membership_config.membership().nodes() {
        if !node.name.is_empty() && !names.iter().any(|(known, _)| known == id) {
            names.push((*id, node.name.clone()));
        }
    }
    names
}

fn guarded(inner: &Inner, path: &str) -> Option<Response> {
    if inner.is_guarded() {
        debug!(path, "refusing raft RPC while bootstrap or rejoin is undecided");
        return Some((StatusCode::SERVICE_UNAVAILABLE, "node is joining; retry later").into_response());
    }
    None
}

async fn append(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    bytes: Bytes,
) -> Response {
    const PATH: &str = "/raft/append";
    if let Some(res) = guarded(&inner, PATH) {
        return res;
    }
    match open::<AppendEntriesRequest<TypeConfig>>(&inner, &peer, PATH, &bytes) {
        Ok((_, req)) => {
            let res = inner.raft().append_entries(req).await;
            if matches!(&res, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                inner.heard_from_leader();
            }
            reply(PATH, &res)
        }
        Err(res) => res,
    }
}

async fn vote(State(inner): State<Arc<Inner>>, ConnectInfo(peer): ConnectInfo<PeerIdentity>, bytes: Bytes) -> Response {
    const PATH: &str = "/raft/vote";
    if let Some(res) = guarded(&inner, PATH) {
        return res;
    }
    match open::<VoteRequest<NodeId>>(&inner, &peer, PATH, &bytes) {
        Ok((_, req)) => reply(PATH, &inner.raft().vote(req).await),
        Err(res) => res,
    }
}

async fn snapshot(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    bytes: Bytes,
) -> Response {
    const PATH: &str = "/raft/snapshot";
    if let Some(res) = guarded(&inner, PATH) {
        return res;
    }
    match open::<InstallSnapshotRequest<TypeConfig>>(&inner, &peer, PATH, &bytes) {
        Ok((_, req)) => reply(PATH, &inner.raft().install_snapshot(req).await),
        Err(res) => res,
    }
}

/// The sender's wait budget from [`super::BUDGET_HEADER`], if it sent one.
fn budget(headers: &HeaderMap) -> Option<std::time::Duration> {
    let millis = headers.get(super::BUDGET_HEADER)?.to_str().ok()?.parse::<u64>().ok()?;
    Some(std::time::Duration::from_millis(millis))
}

async fn write(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    const PATH: &str = "/raft/write";
    match open::<Envelope>(&inner, &peer, PATH, &bytes) {
        // Served in a task: a dropped HTTP request must not cancel a write half-way.
        Ok((_, envelope)) => {
            let task_inner = inner.clone();
            let budget = budget(&headers);
            match tokio::spawn(async move { task_inner.serve_write(envelope, budget).await }).await {
                Ok(answer) => reply(PATH, &answer),
                Err(e) => reject(PATH, StatusCode::INTERNAL_SERVER_ERROR, format!("write task: {e}")),
            }
        }
        Err(res) => res,
    }
}

async fn read_index(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    bytes: Bytes,
) -> Response {
    const PATH: &str = "/raft/read-index";
    match open::<()>(&inner, &peer, PATH, &bytes) {
        Ok(_) => reply(PATH, &inner.serve_read_index().await),
        Err(res) => res,
    }
}

async fn status(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    bytes: Bytes,
) -> Response {
    const PATH: &str = "/raft/status";
    match open::<()>(&inner, &peer, PATH, &bytes) {
        Ok(_) => reply(PATH, &inner.peer_status().await),
        Err(res) => res,
    }
}

async fn membership(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    bytes: Bytes,
) -> Response {
    const PATH: &str = "/raft/membership";
    match open::<MembershipChange>(&inner, &peer, PATH, &bytes) {
        Ok((from, change)) => {
            let task_inner = inner.clone();
            match tokio::spawn(async move { task_inner.serve_membership(from, change).await }).await {
                Ok(answer) => reply(PATH, &answer),
                Err(e) => reject(PATH, StatusCode::INTERNAL_SERVER_ERROR, format!("membership task: {e}")),
            }
        }
        Err(res) => res,
    }
}

async fn elect(
    State(inner): State<Arc<Inner>>,
    ConnectInfo(peer): ConnectInfo<PeerIdentity>,
    bytes: Bytes,
) -> Response {
    const PATH: &str = "/raft/elect";
    if let Some(res) = guarded(&inner, PATH) {
        return res;
    }
    match open::<crate::node::handover::ElectRequest>(&inner, &peer, PATH, &bytes) {
        Ok((from, request)) => reply(PATH, &inner.serve_elect(from, request).await),
        Err(res) => res,
    }
}
