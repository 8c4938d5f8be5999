//! The action endpoints (contract §1.8-§1.11): switchover and failover ([`failover`]), restarts ([`restart`]),
//! `POST /reload` and `POST /reinitialize` (here), and raftgres' `DELETE /cluster` ([`remove`]). Validation is
//! PURE ([`validate`]); the work is done by the HA loop (through [`HaRequest`]) or by the leader's loop reading
//! the `failover` key, never by the API itself: the API never touches PostgreSQL. `DELETE /cluster` is the one
//! action that writes the store itself (it deletes every key).

pub mod failover;
pub mod remove;
pub mod restart;
pub mod validate;

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use tokio::sync::oneshot;

use crate::api::error::ApiError;
use crate::api::reply;
use crate::api::reply::BodyRule;
use crate::api::ApiState;
use crate::ha::requests::HaRequest;
use crate::ha::requests::Refusal;

/// How long `POST /reinitialize` waits for the HA loop to accept the request.
const REINITIALIZE_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `POST /reload` waits for room in the HA loop's request queue.
const RELOAD_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The status code Patroni answers a refused restart or reinitialize with: 503 whatever the reason
/// (a busy node, unmet conditions, the leader asked to reinitialize, no leader, a failed action).
pub fn refusal_status(refusal: &Refusal) -> u16 {
    match refusal {
        Refusal::InProgress(_)
        | Refusal::ConditionsNotMet
        | Refusal::IsLeader
        | Refusal::NoLeader
        | Refusal::Failed(_) => 503,
    }
}

/// `POST /reload`: read the node's configuration again and apply it (see `crate::reload`), then reload
/// PostgreSQL: 202 with what changed, or 500 with why the new configuration was refused (the running one is kept).
/// A server without a configuration (tests) re-reads the TLS certificate and reloads PostgreSQL.
pub async fn post_reload(State(state): State<ApiState>) -> Result<Response, ApiError> {
    if let Some(reloader) = state.reload.clone() {
        return Ok(match reloader.reload().await {
            Ok(answer) => reply::text(202, answer),
            Err(e) => return Err(ApiError::Internal(e)),
        });
    }
    let control = state.control()?;
    if let Some(tls) = state.tls.clone() {
        match tokio::task::spawn_blocking(move || tls.reload()).await {
            Ok(Ok(())) => tracing::info!("reloaded the REST API certificate"),
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "failed to reload the REST API certificate"),
            Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
        }
    }
    let (reply, _answer) = oneshot::channel();
    match tokio::time::timeout(RELOAD_SEND_TIMEOUT, control.ha.send(HaRequest::Reload { reply })).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => tracing::warn!("the HA loop is not running; reload not delivered"),
        Err(_) => tracing::warn!("the HA loop is busy; reload not delivered"),
    }
    Ok(reply::text(202, "reload scheduled"))
}

/// `POST /reinitialize` with an optional `{"force": bool, "from_leader": bool}`.
pub async fn post_reinitialize(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = reply::json_object(&headers, body, BodyRule::Optional).await?;
    let control = state.control()?;
    let flag = |key: &str| body.get(key).is_some_and(validate::truthy);
    let (force, from_leader) = (flag("force"), flag("from_leader"));
    tracing::info!(force, from_leader, "received a reinitialize request");
    let (reply, answer) = oneshot::channel();
    if control.ha.send(HaRequest::Reinitialize { force, from_leader, reply }).await.is_err() {
        return Ok(reply::text(503, "reinitialize failed: the HA loop is not running"));
    }
    Ok(match tokio::time::timeout(REINITIALIZE_ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Ok(text))) => reply::text(200, text),
        Ok(Ok(Err(refusal))) => reply::text(refusal_status(&refusal), refusal.to_string()),
        Ok(Err(_)) | Err(_) => reply::text(503, "reinitialize failed: the HA loop did not answer"),
    })
}
