//! `POST /restart` and `DELETE /restart` (contract §1.9): immediate restarts go to the HA loop as
//! [`HaRequest::Restart`]; scheduled ones wait in [`RestartSchedule`], in this node's memory as in Patroni,
//! behind a timer task that hands them to the loop when due.
//!
//! A scheduled restart is cancelled when the postmaster's start time changes before it is due (PostgreSQL was
//! restarted some other way). It is published under `scheduled_restart` in `GET /patroni`, and, as in Patroni, in
//! the member key: the HA loop owns that key, so it reads the schedule through [`RestartSchedule::subscribe`].

use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::DateTime;
use chrono::FixedOffset;
use chrono::Utc;
use serde_json::Map;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::validate;
use super::validate::RestartRequest;
use crate::api::error::ApiError;
use crate::api::reply;
use crate::api::reply::BodyRule;
use crate::api::ApiState;
use crate::ha::requests::HaRequest;

/// The one restart this node may have scheduled.
#[derive(Debug)]
pub struct RestartSchedule {
    slot: Mutex<Option<Scheduled>>,
    /// [`RestartSchedule::describe`] plus `postmaster_start_time` after every change, for the HA loop's member
    /// key (Patroni keeps the start time in the member key and leaves it out of `GET /patroni`).
    published: watch::Sender<Option<Map<String, Value>>>,
}

impl Default for RestartSchedule {
    fn default() -> Self {
        RestartSchedule { slot: Mutex::new(None), published: watch::Sender::new(None) }
    }
}

#[derive(Debug)]
struct Scheduled {
    id: u64,
    request: RestartRequest,
    at: DateTime<FixedOffset>,
    /// `postmaster_start_time` when the restart was scheduled: a PostgreSQL restarted since cancels it.
    start_time: Option<String>,
    timer: JoinHandle<()>,
}

impl RestartSchedule {
    fn slot(&self) -> MutexGuard<'_, Option<Scheduled>> {
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The scheduled restart as [`RestartSchedule::describe`] shows it, updated on every change.
    pub fn subscribe(&self) -> watch::Receiver<Option<Map<String, Value>>> {
        self.published.subscribe()
    }

    /// Publishes what `slot` now holds to the receivers of [`RestartSchedule::subscribe`].
    fn publish(&self, slot: &Option<Scheduled>) {
        let mut member_key = describe(slot.as_ref());
        if let (Some(map), Some(start_time)) = (member_key.as_mut(), slot.as_ref().and_then(|s| s.start_time.clone())) {
            map.insert("postmaster_start_time".into(), Value::from(start_time));
        }
        self.published.send_replace(member_key);
    }

    /// `scheduled_restart` of the status object, when a restart is scheduled.
    pub fn describe(&self) -> Option<Map<String, Value>> {
        describe(self.slot().as_ref())
    }

    /// Removes the scheduled restart; true when there was one.
    pub fn cancel(&self) -> bool {
        let mut slot = self.slot();
        let res = match slot.take() {
            Some(scheduled) => {
                scheduled.timer.abort();
                true
            }
            None => false,
        };
        self.publish(&slot);
        res
    }

    /// Takes the restart scheduled under `id`, if it is still the scheduled one.
    fn take(&self, id: u64) -> Option<RestartRequest> {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|scheduled| scheduled.id == id) {
            let res = slot.take().map(|scheduled| scheduled.request);
            self.publish(&slot);
            return res;
        }
        None
    }
}

/// `scheduled_restart` of the status object and the member key.
fn describe(scheduled: Option<&Scheduled>) -> Option<Map<String, Value>> {
    let scheduled = scheduled?;
    let mut res = Map::new();
    res.insert("schedule".into(), Value::from(scheduled.at.to_rfc3339()));
    if scheduled.request.restart_pending {
        res.insert("restart_pending".into(), Value::Bool(true));
    }
    if let Some(role) = scheduled.request.role {
        res.insert("role".into(), Value::from(role.as_str()));
    }
    if let Some(version) = scheduled.request.postgres_version {
        res.insert("postgres_version".into(), Value::from(version));
    }
    if let Some(timeout) = scheduled.request.timeout {
        res.insert("timeout".into(), Value::from(timeout));
    }
    Some(res)
}

/// `POST /restart`.
pub async fn post_restart(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = reply::json_object(&headers, body, BodyRule::Optional).await?;
    let paused = state.status.borrow().paused;
    let request = match validate::check_restart(&body, paused, Utc::now()) {
        Ok(request) => request,
        Err(refusal) => return Ok(reply::text(refusal.code, refusal.text)),
    };
    if let Some(at) = request.schedule {
        return Ok(schedule(&state, request, at));
    }
    let (code, text) = restart_now(&state, &request).await?;
    Ok(reply::text(code, text))
}

/// `DELETE /restart`.
pub async fn delete_restart(State(state): State<ApiState>) -> Response {
    if state.restarts.cancel() {
        tracing::info!("scheduled restart deleted");
        reply::text(200, "scheduled restart deleted")
    } else {
        reply::text(404, "no restarts are scheduled")
    }
}

/// Stores the restart and starts its timer: 202, or 409 when another one is scheduled.
fn schedule(state: &ApiState, request: RestartRequest, at: DateTime<FixedOffset>) -> Response {
    let mut slot = state.restarts.slot();
    if slot.is_some() {
        return reply::text(409, "Another restart is already scheduled");
    }
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let delay = (at.with_timezone(&Utc) - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    let start_time = state.status.borrow().pg.postmaster_start_time.clone();
    let timer_state = state.clone();
    let timer_start_time = start_time.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        run_scheduled(timer_state, id, timer_start_time).await;
    });
    tracing::info!(at = %at.to_rfc3339(), "restart scheduled");
    *slot = Some(Scheduled { id, request, at, start_time, timer });
    state.restarts.publish(&slot);
    reply::text(202, "Restart scheduled")
}

async fn run_scheduled(state: ApiState, id: u64, start_time_at_schedule: Option<String>) {
    let Some(request) = state.restarts.take(id) else { return };
    let start_time_now = state.status.borrow().pg.postmaster_start_time.clone();
    if start_time_at_schedule.is_some() && start_time_now != start_time_at_schedule {
        tracing::info!("cancelled the scheduled restart: PostgreSQL was restarted since it was scheduled");
        return;
    }
    match restart_now(&state, &request).await {
        Ok((200, text)) => tracing::info!(result = %text, "scheduled restart done"),
        Ok((code, text)) => tracing::warn!(code, result = %text, "scheduled restart not done"),
        Err(e) => tracing::warn!(error = %e, "scheduled restart not done"),
    }
}

/// Checks the version filter here (the loop knows roles and pending restarts) and asks the HA loop to restart.
async fn restart_now(state: &ApiState, request: &RestartRequest) -> Result<(u16, String), ApiError> {
    let control = state.control()?;
    let server_version = state.status.borrow().pg.server_version.unwrap_or(0);
    if request.postgres_version.is_some_and(|wanted| wanted <= server_version) {
        return Ok((503, "restart conditions are not satisfied".into()));
    }
    let (reply, answer) = oneshot::channel();
    let ha_request = HaRequest::Restart {
        role: request.role,
        pending_only: request.restart_pending,
        timeout: request.timeout.map(Duration::from_secs),
        reply,
    };
    if control.ha.send(ha_request).await.is_err() {
        return Ok((503, "restart failed".into()));
    }
    Ok(match answer.await {
        Ok(Ok(text)) => (200, text),
        Ok(Err(refusal)) => (super::refusal_status(&refusal), refusal.to_string()),
        Err(_) => (503, "restart failed".into()),
    })
}
