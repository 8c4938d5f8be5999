//! Handlers that answer from the latest [`NodeStatus`](crate::status::NodeStatus) snapshot: `GET /patroni`,
//! the health checks (JSON for GET, bare status for HEAD/OPTIONS), `/liveness`, `/readiness` and `/metrics`.
//!
//! Each handler reads the watch channel once and answers synchronously: no SQL, no raft read, no await while
//! the snapshot is borrowed, so probes stay fast during a failover (house rule 19).

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::response::Response;
use tokio::time::Instant;

use crate::api::error::Json;
use crate::api::health;
use crate::api::metrics;
use crate::api::types::PatroniStatus;
use crate::api::ApiState;

/// `GET /patroni`: always 200 with the status object, even with PostgreSQL down.
pub async fn get_patroni(State(state): State<ApiState>) -> Response {
    let mut wire = PatroniStatus::from_status(&state.status.borrow());
    wire.scheduled_restart = state.restarts.describe();
    Json(wire).into_response()
}

/// `GET` on any path without its own handler: the health verdict's code with the status object.
pub async fn health_with_body(State(state): State<ApiState>, uri: Uri) -> Response {
    let (code, wire) = {
        let status = state.status.borrow();
        let code = health::verdict(uri.path(), &query_of(&uri), &status, Instant::now());
        (code, PatroniStatus::from_status(&status))
    };
    tracing::debug!(code, "health check");
    (status_code(code), Json(wire)).into_response()
}

/// `HEAD` and `OPTIONS` on any path: the health verdict's code and an empty body.
///
/// Patroni writes a bare `HTTP/1.0 <code> <reason>` line with no headers; HAProxy reads only the status, so
/// the minimal headers hyper adds (`content-length: 0`, `date`) are harmless.
/// `HEAD /liveness` and `HEAD /patroni` come here too, as in Patroni.
pub async fn health_bare(State(state): State<ApiState>, uri: Uri) -> StatusCode {
    let code = health::verdict(uri.path(), &query_of(&uri), &state.status.borrow(), Instant::now());
    tracing::debug!(code, "health check");
    status_code(code)
}

/// `GET /liveness`: is the HA loop turning? Status only, empty body.
pub async fn get_liveness(State(state): State<ApiState>) -> StatusCode {
    let code = health::liveness(&state.status.borrow(), Instant::now());
    tracing::debug!(code, "liveness check");
    status_code(code)
}

/// `GET /readiness?lag=&mode=`: can this node take traffic? Status only, empty body.
pub async fn get_readiness(State(state): State<ApiState>, uri: Uri) -> StatusCode {
    let failure = health::readiness_failure(&query_of(&uri), &state.status.borrow(), Instant::now());
    match failure {
        None => StatusCode::OK,
        Some(reason) => {
            tracing::debug!(reason = %reason, "readiness check failed");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// `GET /metrics`: Prometheus text; with a raft store, raftgres's raft metrics follow Patroni's.
pub async fn get_metrics(State(state): State<ApiState>) -> Response {
    let facts = state.control.as_ref().map(|control| {
        let raft = control.dcs.node().status();
        let view = control.dcs.view();
        metrics::RaftFacts {
            term: raft.term,
            is_raft_leader: raft.leader == Some(raft.node_id),
            last_log_index: raft.last_log_index,
            last_applied: raft.last_applied,
            n_failovers: view.history.len(),
            last_failover: view.last_timeline,
        }
    });
    let mut text = metrics::render(&state.status.borrow(), Instant::now());
    if let Some(facts) = facts {
        text.push_str(&metrics::render_raft(&state.status.borrow(), &facts));
    }
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// The decoded query string; a malformed one counts as empty, as Python's lenient `parse_qs` would mostly see it.
fn query_of(uri: &Uri) -> health::Query {
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).map(|query| query.0);
    health::Query::from_pairs(pairs.unwrap_or_default())
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
}
