//! Requests from the REST API to the HA loop (restart, reload, reinitialize), answered with
//! Patroni's texts. They arrive as one more input of the loop's `select!`, so an action never
//! races a cycle; long ones run as tracked tasks like any other long action.

use tokio::sync::oneshot;

use crate::status::Role;

/// A reply: `Ok(text)` for success codes, `Err((status, text))` otherwise.
pub type Reply = oneshot::Sender<Result<String, (u16, String)>>;

/// What the API asks of the loop.
#[derive(Debug)]
pub enum HaRequest {
    /// Restart PostgreSQL in its current role (`POST /restart`).
    Restart {
        /// Only when this node has this role.
        role: Option<Role>,
        /// Only when a parameter change is pending a restart.
        pending_only: bool,
        /// Answered when the restart finished.
        reply: Reply,
    },
    /// Re-read the configuration and reload PostgreSQL (`POST /reload`).
    Reload {
        /// Answered at once.
        reply: Reply,
    },
    /// Wipe this replica and clone it again (`POST /reinitialize`).
    Reinitialize {
        /// Cancel a running action first.
        force: bool,
        /// Always clone from the leader (there is no `clonefrom` member selection yet).
        from_leader: bool,
        /// Answered when the reinitialization started.
        reply: Reply,
    },
}

/// Patroni's text when an action is already running.
pub fn already_in_progress(kind: super::types::ActionKind) -> (u16, String) {
    (503, format!("{} already in progress", kind.describe()))
}
