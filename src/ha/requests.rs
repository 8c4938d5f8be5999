//! Requests from the REST API to the HA loop (restart, reload, reinitialize). They arrive as one
//! more input of the loop's `select!`, so an action never races a cycle; long ones run as tracked
//! tasks like any other long action. A request the loop does not carry out is answered with a
//! [`Refusal`]; the REST API turns it into Patroni's status code and text (the loop knows nothing
//! of HTTP).

use std::fmt;
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::info;

use super::long;
use super::running::Running;
use super::types::ActionKind;
use super::HaLoop;
use crate::dcs::view::ClusterView;
use crate::postgres::slots::slot_name;
use crate::postgres::supervisor::StartRole;
use crate::status::Role;

/// Why the loop did not do what was asked; `Display` is Patroni's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another long action is running.
    InProgress(ActionKind),
    /// The request's role or pending-restart condition does not hold.
    ConditionsNotMet,
    /// The leader cannot reinitialize itself.
    IsLeader,
    /// There is no leader to clone from.
    NoLeader,
    /// The action ran and failed; the text says how.
    Failed(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::InProgress(kind) => write!(f, "{} already in progress", kind.describe()),
            Refusal::ConditionsNotMet => f.write_str("restart conditions are not satisfied"),
            Refusal::IsLeader => f.write_str("I am the leader, can not reinitialize"),
            Refusal::NoLeader => f.write_str("Cluster has no leader, can not reinitialize"),
            Refusal::Failed(text) => f.write_str(text),
        }
    }
}

/// A reply: `Ok(text)` when done, else the refusal.
pub type Reply = oneshot::Sender<Result<String, Refusal>>;

/// What the API asks of the loop.
#[derive(Debug)]
pub enum HaRequest {
    /// Restart PostgreSQL in its current role (`POST /restart`).
    Restart {
        /// Only when this node has this role.
        role: Option<Role>,
        /// Only when a parameter change is pending a restart.
        pending_only: bool,
        /// The request's `timeout`: how long the start may take, and for a primary what replaces
        /// `primary_start_timeout` until it runs as a primary again.
        timeout: Option<Duration>,
        /// Answered when the restart finished.
        reply: Reply,
    },
    /// Re-read the configuration and reload PostgreSQL (`POST /reload`).
    Reload {
        /// Answered at once.
        reply: Reply,
    },
    /// The `tags` of a reloaded configuration: published and obeyed from the next cycle on.
    SetTags {
        /// The new tags.
        tags: serde_json::Map<String, serde_json::Value>,
    },
    /// Wipe this replica and clone it again (`POST /reinitialize`).
    Reinitialize {
        /// Cancel a running action first.
        force: bool,
        /// Clone from the leader even when a member is tagged `clonefrom`.
        from_leader: bool,
        /// Answered when the reinitialization started.
        reply: Reply,
    },
}

/// The conditions and timeout of a `POST /restart`.
struct RestartFilter {
    /// Only when this node has this role.
    role: Option<Role>,
    /// Only when a parameter change is pending a restart.
    pending_only: bool,
    /// The request's `timeout`.
    timeout: Option<Duration>,
}

impl HaLoop {
    /// Serves one API request.
    pub(super) async fn handle_request(&mut self, request: HaRequest) {
        let view = self.dcs.view();
        match request {
            HaRequest::Reload { reply } => {
                // In the background: a reload waits behind a running restart or promote, and this loop must not.
                self.pg.reload_in_background("reload failed");
                let _ = reply.send(Ok("reload scheduled".into()));
            }
            HaRequest::SetTags { tags } => {
                if tags != self.settings.tags {
                    info!(?tags, "tags changed by a configuration reload");
                    self.settings.tags = tags;
                }
            }
            HaRequest::Restart { role, pending_only, timeout, reply } => {
                self.restart(&view, RestartFilter { role, pending_only, timeout }, reply)
            }
            HaRequest::Reinitialize { force, from_leader, reply } => {
                let answer = self.reinitialize(&view, force, from_leader);
                let _ = reply.send(answer);
            }
        }
    }

    fn restart(&mut self, view: &ClusterView, filter: RestartFilter, reply: Reply) {
        if let Some(running) = &self.state.running {
            let _ = reply.send(Err(Refusal::InProgress(running.kind)));
            return;
        }
        let status = self.status_tx.borrow().pg.clone();
        if filter.role.is_some_and(|r| r != status.role) || (filter.pending_only && !status.pending_restart) {
            let _ = reply.send(Err(Refusal::ConditionsNotMet));
            return;
        }
        let leader = view.leader.as_ref().filter(|leader| leader.name != self.settings.name);
        let start_role = match (&status.role, leader) {
            (Role::Primary, _) => StartRole::Primary,
            (_, Some(leader)) => match super::execute::target_of(view, &leader.name) {
                Some(primary) => StartRole::Replica { primary, slot: Some(slot_name(&self.settings.name)) },
                None => StartRole::Standby,
            },
            _ => StartRole::Standby,
        };
        // A primary's restart is timed like any start as primary (Patroni's `set_start_timeout`): the request's
        // timeout replaces `primary_start_timeout` until PostgreSQL runs as a primary again.
        let within = match start_role {
            StartRole::Primary => {
                self.state.start_timeout_override = filter.timeout;
                Some(filter.timeout.unwrap_or(self.dynamic.view().primary_start_timeout)).filter(|t| !t.is_zero())
            }
            _ => filter.timeout,
        };
        let handle = tokio::spawn(long::restart_on_request(self.pg.clone(), start_role, within));
        self.state.running = Some(Running { kind: ActionKind::Restart, handle, reply: Some(reply) });
    }

    fn reinitialize(&mut self, view: &ClusterView, force: bool, from_leader: bool) -> Result<String, Refusal> {
        if self.dcs.leader_key_is_mine(view) {
            return Err(Refusal::IsLeader);
        }
        let leader = view.leader.as_ref().map(|l| l.name.clone()).ok_or(Refusal::NoLeader)?;
        if let Some(running) = self.state.running.take() {
            if !force {
                let refusal = Refusal::InProgress(running.kind);
                self.state.running = Some(running);
                return Err(refusal);
            }
            running.handle.abort();
        }
        let source =
            if from_leader { leader.clone() } else { super::decide::clone_source(view, &self.settings.name, &leader) };
        let source = super::execute::upstream_target(view, &source).ok_or(Refusal::NoLeader)?;
        let follow = super::execute::follow_target(view, &self.settings, &leader);
        let follow = super::execute::upstream_target(view, &follow).ok_or(Refusal::NoLeader)?;
        let slot = slot_name(&self.settings.name);
        let handle = tokio::spawn(long::clone(self.pg.clone(), source, follow, slot, true));
        self.state.running = Some(Running { kind: ActionKind::Clone, handle, reply: None });
        Ok("reinitialize started".into())
    }
}
