//! `POST /switchover`, `POST /failover` and `DELETE /switchover` (contract §1.8).
//!
//! The handler validates with the PURE rules of [`validate`], asks each candidate's `GET /patroni` (2 s, no
//! retry) for the 412 pre-check, writes the `failover` key with compare-and-set (`Absent`, or the revision it
//! read), and for an immediate request polls the local view every second for the outcome. The leader's HA loop
//! does the work: it demotes gracefully and the candidate takes the vacant lock at once; without a leader the
//! named candidate wins the race. A scheduled switchover (`scheduled_at`) is executed by the leader when due.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;

use super::validate;
use super::validate::Action;
use super::validate::CandidateStatus;
use super::validate::FailoverRequest;
use super::validate::PollVerdict;
use crate::api::cluster;
use crate::api::cluster::LINEARIZABLE_READ_TIMEOUT;
use crate::api::error::ApiError;
use crate::api::reply;
use crate::api::reply::BodyRule;
use crate::api::ApiState;
use crate::api::Control;
use crate::dcs::view::ClusterView;
use crate::dcs::view::FailoverData;

/// How long a candidate's `GET /patroni` may take (Patroni: 2 s, no retries).
pub const CANDIDATE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long writing the `failover` key may wait for a quorum.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// `POST /switchover`.
pub async fn post_switchover(state: State<ApiState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    handle(state, Action::Switchover, headers, body).await
}

/// `POST /failover`.
pub async fn post_failover(state: State<ApiState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    handle(state, Action::Failover, headers, body).await
}

async fn handle(
    State(state): State<ApiState>,
    action: Action,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = reply::json_object(&headers, body, BodyRule::Required).await?;
    let control = state.control()?;
    let request = FailoverRequest::from_json(&body);
    tracing::info!(
        action = action.word(),
        leader = ?request.leader,
        candidate = ?request.candidate,
        scheduled_at = ?request.scheduled_at,
        "received a manual failover request"
    );
    let view = control.dcs.view_linearizable(LINEARIZABLE_READ_TIMEOUT).await.map_err(unavailable)?;
    let dynamic = cluster::dynamic_view(&view);
    let accepted = match validate::check_failover_request(action, &request, dynamic.pause, Utc::now()) {
        Ok(accepted) => accepted,
        Err(refusal) => return Ok(reply::text(refusal.code, refusal.text)),
    };
    if accepted.scheduled_at.is_none() {
        let members = match validate::members_to_check(&view, dynamic.synchronous_mode, &accepted) {
            Ok(members) => members,
            Err(refusal) => return Ok(reply::text(refusal.code, refusal.text)),
        };
        let statuses = candidate_statuses(control, &view, &members).await;
        if let Some(refusal) = validate::no_good_candidate(accepted.action, &statuses) {
            return Ok(reply::text(refusal.code, refusal.text));
        }
    }
    let failover = FailoverData {
        leader: accepted.leader.clone(),
        member: accepted.candidate.clone(),
        scheduled_at: accepted.scheduled_at.map(|at| at.to_rfc3339()),
    };
    let Some(rev) = write_failover(control, &failover, view.failover_key_rev).await else {
        return Ok(reply::text(503, "failed to write failover key into DCS"));
    };
    if accepted.scheduled_at.is_some() {
        return Ok(reply::text(202, format!("{} scheduled", accepted.action.title())));
    }
    let old_leader = view.leader.as_ref().map(|leader| leader.name.clone());
    let loop_wait = state.status.borrow().loop_wait.as_secs();
    let (code, text) =
        poll(control, accepted.action, old_leader.as_deref(), accepted.candidate.as_deref(), rev, loop_wait).await;
    Ok(reply::text(code, text))
}

/// Judges every candidate from its `GET /patroni`, in parallel.
async fn candidate_statuses(control: &Control, view: &ClusterView, members: &[String]) -> Vec<CandidateStatus> {
    let mut fetches = tokio::task::JoinSet::new();
    for name in members {
        let api_url = view.members.get(name).map(|member| member.api_url.clone()).unwrap_or_default();
        let (http, name) = (control.http.clone(), name.clone());
        fetches.spawn(async move {
            if api_url.is_empty() {
                return CandidateStatus::NotReachable;
            }
            let document = fetch_status(&http, &api_url).await;
            if document.is_none() {
                tracing::warn!(member = %name, api_url, "failover candidate did not answer");
            }
            validate::candidate_status(document.as_ref())
        });
    }
    let mut res = Vec::with_capacity(members.len());
    while let Some(joined) = fetches.join_next().await {
        res.push(joined.unwrap_or(CandidateStatus::NotReachable));
    }
    res
}

async fn fetch_status(http: &reqwest::Client, api_url: &str) -> Option<serde_json::Value> {
    let res = http.get(api_url).timeout(CANDIDATE_TIMEOUT).send().await.ok()?;
    res.json().await.ok()
}

/// Writes the `failover` key (compare-and-set on `expected_rev`) in a spawned task (a dropped request cannot cut
/// it short); the revision of the write, `None` when it failed.
async fn write_failover(control: &Control, failover: &FailoverData, expected_rev: Option<u64>) -> Option<u64> {
    let (dcs, failover) = (control.dcs.clone(), failover.clone());
    let written = tokio::spawn(async move { dcs.request_failover(&failover, expected_rev, WRITE_TIMEOUT).await });
    match written.await {
        Ok(Ok(Some(rev))) => Some(rev),
        Ok(Ok(None)) => {
            tracing::warn!("the failover key changed concurrently; not written");
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "failed to write the failover key");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "failover key write task failed");
            None
        }
    }
}

/// Polls the local view once a second until the outcome is known or `2 * max(10, loop_wait)` polls passed.
async fn poll(
    control: &Control,
    action: Action,
    old_leader: Option<&str>,
    candidate: Option<&str>,
    written_rev: u64,
    loop_wait_secs: u64,
) -> (u16, String) {
    for _ in 0..validate::poll_iterations(loop_wait_secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let view = control.dcs.view();
        // Until the local replica applied our write, a missing key says nothing about the outcome.
        if view.revision < written_rev {
            continue;
        }
        let leader = view.leader.as_ref().map(|leader| leader.name.as_str());
        if let PollVerdict::Done(code, text) =
            validate::poll_verdict(action, old_leader, candidate, leader, view.failover.is_some())
        {
            tracing::info!(code, result = %text, "manual failover finished");
            return (code, text);
        }
    }
    let refusal = validate::poll_timed_out(action);
    (refusal.code, refusal.text)
}

/// `DELETE /switchover`: clears a scheduled switchover.
pub async fn delete_switchover(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let control = state.control()?;
    let view = control.dcs.view_linearizable(LINEARIZABLE_READ_TIMEOUT).await.map_err(unavailable)?;
    let Some(failover) = view.failover.filter(|failover| failover.value.scheduled_at.is_some()) else {
        return Ok(reply::text(404, "no switchover is scheduled"));
    };
    let dcs = control.dcs.clone();
    let cleared = tokio::spawn(async move { dcs.clear_failover(failover.mod_rev, WRITE_TIMEOUT).await })
        .await
        .map_err(|e| ApiError::Unavailable(format!("clear the failover key: {e}")))?
        .map_err(unavailable)?;
    if !cleared {
        return Err(ApiError::Conflict("the failover key changed concurrently; read it and try again".into()));
    }
    tracing::info!("scheduled switchover deleted");
    Ok(reply::text(200, "scheduled switchover deleted"))
}

fn unavailable(e: impl Into<crate::dcs::DcsError>) -> ApiError {
    ApiError::Unavailable(format!("the cluster store is unavailable: {}", e.into()))
}
