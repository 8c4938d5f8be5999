//! The operator's scripts, run when Patroni runs them: the callbacks (`postgresql.callbacks`), `pre_promote`,
//! `before_stop` and `bootstrap.post_bootstrap` (Patroni 4.1's `callback_executor.py`, `Postgresql.call_nowait`,
//! `_pre_promote`, `_before_stop` and `Bootstrap.call_post_bootstrap`).
//!
//! Callbacks are asynchronous, `<command...> <action> <role> <scope>`: one runs at a time, and a new one kills
//! the one still running with its children (`on_reload` has its own slot). Role words are `primary`, `replica`,
//! `standby_leader`, `demoted`. None fires while a new cluster is bootstrapped (the HA loop fires `on_start` once
//! the bootstrap finished). When PostgreSQL changes role without the operator seeing a plain start (a demoted
//! primary started as a replica) only `on_role_change` fires, as in Patroni's `follow`.
//! The hooks are synchronous: `pre_promote` decides whether a promotion goes ahead, `before_stop` runs before
//! PostgreSQL is asked to stop, `post_bootstrap` gets the superuser's connection string.
//! Scripts run as the PostgreSQL user (`run_as` when raftgres runs as root) with a scrubbed `PG*` environment;
//! their output is logged under target `script`. This module decides nothing about HA: it is told what happened.

use std::ffi::OsString;
use std::sync::MutexGuard;
use std::time::Duration;

use super::{PgError, StartRole, Supervisor};
use crate::postgres::conf::{self, ConnInfo};
use crate::postgres::process;

/// The operator's scripts, each a command line split with shell rules (Patroni's `shlex.split`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// `postgresql.callbacks.on_start`.
    pub on_start: Option<String>,
    /// `postgresql.callbacks.on_stop`.
    pub on_stop: Option<String>,
    /// `postgresql.callbacks.on_restart`.
    pub on_restart: Option<String>,
    /// `postgresql.callbacks.on_reload`.
    pub on_reload: Option<String>,
    /// `postgresql.callbacks.on_role_change`.
    pub on_role_change: Option<String>,
    /// `postgresql.pre_promote`: a non-zero exit stops this node's promotion.
    pub pre_promote: Option<String>,
    /// `postgresql.before_stop`.
    pub before_stop: Option<String>,
    /// `bootstrap.post_bootstrap` (or `post_init`).
    pub post_bootstrap: Option<String>,
}

/// A callback, by its Patroni name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callback {
    /// PostgreSQL started.
    OnStart,
    /// PostgreSQL stopped.
    OnStop,
    /// PostgreSQL restarted.
    OnRestart,
    /// The configuration was reloaded.
    OnReload,
    /// The role changed without a plain start or restart (promotion, demotion, a demoted primary following).
    OnRoleChange,
}

impl Callback {
    /// Patroni's action word, passed as the script's first argument after its own.
    pub fn as_str(self) -> &'static str {
        match self {
            Callback::OnStart => "on_start",
            Callback::OnStop => "on_stop",
            Callback::OnRestart => "on_restart",
            Callback::OnReload => "on_reload",
            Callback::OnRoleChange => "on_role_change",
        }
    }
}

/// The role a callback reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackRole {
    /// A writable primary.
    Primary,
    /// A replica (or a standby without an upstream).
    Replica,
    /// The leader of a standby cluster.
    StandbyLeader,
    /// A primary that stopped being one.
    Demoted,
}

impl CallbackRole {
    /// Patroni's role word.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackRole::Primary => "primary",
            CallbackRole::Replica => "replica",
            CallbackRole::StandbyLeader => "standby_leader",
            CallbackRole::Demoted => "demoted",
        }
    }

    fn of(role: &StartRole) -> CallbackRole {
        match role {
            StartRole::Primary => CallbackRole::Primary,
            StartRole::Replica { .. } | StartRole::Standby => CallbackRole::Replica,
        }
    }
}

/// What the supervisor keeps about callbacks.
#[derive(Debug, Default)]
pub(super) struct HookState {
    /// The role callbacks report, once known.
    role: Option<CallbackRole>,
    /// A start, stop, restart or role-change callback fired in this process (Patroni's `cb_called`).
    called: bool,
    /// A new cluster is being bootstrapped: no callbacks.
    bootstrapping: bool,
    /// Process group of the running callback, and of the running `on_reload` one.
    running: Option<u32>,
    running_reload: Option<u32>,
}

/// How long a synchronous hook may run before its process group is killed: long enough for a fencing or
/// backup script, bounded so that a hung script cannot hold a promotion or a stop for ever.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// PURE: the callback a start (`restart`: a restart) of PostgreSQL as `new` fires after a start in role `old`,
/// and whether one fired before in this process: a demoted primary coming back as a replica (or a replica
/// becoming a standby leader) reports `on_role_change`, anything else `on_start` / `on_restart`.
pub fn start_callback(old: Option<CallbackRole>, new: CallbackRole, called: bool, restart: bool) -> Callback {
    let leaves_primary =
        matches!(old, Some(CallbackRole::Primary | CallbackRole::Demoted)) && new != old.unwrap_or(new);
    let to_standby_leader = new == CallbackRole::StandbyLeader && old == Some(CallbackRole::Replica);
    match (called && (leaves_primary || to_standby_leader), restart) {
        (true, _) => Callback::OnRoleChange,
        (false, true) => Callback::OnRestart,
        (false, false) => Callback::OnStart,
    }
}

/// PURE: the command line of a callback: the operator's command split with shell rules, then the action, the
/// role and the cluster name. `None` when the command does not split (unbalanced quotes).
pub fn callback_argv(command: &str, action: Callback, role: CallbackRole, scope: &str) -> Option<Vec<String>> {
    let mut argv = shlex::split(command)?;
    argv.extend([action.as_str().to_owned(), role.as_str().to_owned(), scope.to_owned()]);
    Some(argv)
}

impl Supervisor {
    fn hook_state(&self) -> MutexGuard<'_, HookState> {
        // Plain values: a poisoned lock (a panic elsewhere) leaves them usable.
        self.inner.hooks.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Bootstrapping a new cluster: no callback fires until it is over (Patroni's `bootstrapping`).
    pub fn set_bootstrapping(&self, bootstrapping: bool) {
        self.hook_state().bootstrapping = bootstrapping;
    }

    /// Marks PostgreSQL as a primary that stopped being one (a demotion): the next callbacks say `demoted`.
    pub fn mark_demoted(&self) {
        self.hook_state().role = Some(CallbackRole::Demoted);
    }

    /// Fires `callback` with the current role, asynchronously; the one still running (its slot's) is killed.
    pub fn fire(&self, callback: Callback) {
        let (role, command) = {
            let mut state = self.hook_state();
            if state.bootstrapping {
                return;
            }
            if callback != Callback::OnReload {
                state.called = true;
            }
            (state.role, self.callback_command(callback))
        };
        let (Some(role), Some(command)) = (role, command) else { return };
        let Some(argv) = callback_argv(&command, callback, role, &self.inner.cfg.scope) else {
            tracing::warn!(
                callback = callback.as_str(),
                command,
                "callback command does not split into words; not run"
            );
            return;
        };
        self.spawn_callback(callback, argv);
    }

    /// After PostgreSQL started (`restart`: restarted) as `role`: records the role and fires the callback
    /// Patroni fires for that transition.
    pub(super) fn started(&self, role: &StartRole, restart: bool) {
        let new = CallbackRole::of(role);
        let callback = {
            let mut state = self.hook_state();
            let callback = start_callback(state.role, new, state.called, restart);
            state.role = Some(new);
            callback
        };
        self.fire(callback);
    }

    /// The HA loop saw PostgreSQL running as a primary (`primary`) or a replica. When no callback fired yet in
    /// this process (PostgreSQL was adopted after a restart of raftgres, or its start outlasted `pg_ctl_timeout`),
    /// the role is learnt from it and `on_start` fires once, as Patroni's loop does when `cb_called` is false.
    pub fn observed_running(&self, primary: bool) {
        {
            let mut state = self.hook_state();
            if state.bootstrapping || state.called {
                return;
            }
            state.role.get_or_insert(if primary { CallbackRole::Primary } else { CallbackRole::Replica });
        }
        self.fire(Callback::OnStart);
    }

    /// After a promotion: the role is `primary` now.
    pub(super) fn promoted(&self) {
        self.hook_state().role = Some(CallbackRole::Primary);
        self.fire(Callback::OnRoleChange);
    }

    fn callback_command(&self, callback: Callback) -> Option<String> {
        let hooks = &self.local().hooks;
        let command = match callback {
            Callback::OnStart => &hooks.on_start,
            Callback::OnStop => &hooks.on_stop,
            Callback::OnRestart => &hooks.on_restart,
            Callback::OnReload => &hooks.on_reload,
            Callback::OnRoleChange => &hooks.on_role_change,
        };
        command.clone().filter(|command| !command.trim().is_empty())
    }

    /// Starts the callback in its slot, killing the one still running there, and logs its output and exit.
    fn spawn_callback(&self, callback: Callback, argv: Vec<String>) {
        let reload = callback == Callback::OnReload;
        let previous = {
            let mut state = self.hook_state();
            if reload {
                state.running_reload.take()
            } else {
                state.running.take()
            }
        };
        if let Some(pgid) = previous {
            tracing::info!(pgid, "killing the callback still running before the next one");
            process::kill_script(pgid);
        }
        let mut child = match process::spawn_script(&argv, &[], self.inner.owner.as_ref()) {
            Ok(child) => child,
            Err(e) => {
                tracing::warn!(callback = callback.as_str(), "failed to start the callback: {e:#}");
                return;
            }
        };
        let Some(pgid) = child.id() else { return };
        {
            let mut state = self.hook_state();
            if reload {
                state.running_reload = Some(pgid);
            } else {
                state.running = Some(pgid);
            }
        }
        tracing::info!(callback = callback.as_str(), ?argv, pgid, "running callback");
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let name = callback.as_str();
            let output = process::capture_output(&mut child, name);
            let waited = child.wait().await;
            output.finish().await;
            match waited {
                Ok(status) => {
                    tracing::info!(callback = name, status = %process::describe_status(status), "callback ended")
                }
                Err(e) => tracing::warn!(callback = name, error = %e, "failed to wait for the callback"),
            }
            let mut state = this.hook_state();
            let slot = if reload { &mut state.running_reload } else { &mut state.running };
            if *slot == Some(pgid) {
                *slot = None;
            }
        });
    }

    /// Runs `pre_promote` (when set): true when the promotion may go ahead (no script, or it exited 0).
    pub async fn run_pre_promote(&self) -> Result<bool, PgError> {
        let Some(command) = self.local().hooks.pre_promote.clone() else { return Ok(true) };
        let run = self.run_hook("pre_promote", &command, Vec::new(), &[]).await?;
        tracing::info!(command, status = %run.status, "pre_promote script ended");
        Ok(run.code == Some(0))
    }

    /// Runs `before_stop` (when set) before PostgreSQL is asked to stop; its failure is logged, not returned.
    pub(super) async fn run_before_stop(&self) {
        let Some(command) = self.local().hooks.before_stop.clone() else { return };
        match self.run_hook("before_stop", &command, Vec::new(), &[]).await {
            Ok(run) => tracing::info!(command, status = %run.status, "before_stop script ended"),
            Err(e) => tracing::warn!(command, "failed to run before_stop: {e:#}"),
        }
    }

    /// Runs `post_bootstrap` (when set) with the superuser's connection string as its last argument,
    /// `PGPASSFILE` pointing at raftgres' pgpass file and `PGOPTIONS` as Patroni sets them. A failure means
    /// the new cluster is not ready: the bootstrap is undone.
    pub async fn run_post_bootstrap(&self) -> Result<(), PgError> {
        let Some(command) = self.local().hooks.post_bootstrap.clone() else { return Ok(()) };
        let cfg = &self.inner.cfg;
        let target = ConnInfo {
            host: super::probe::sql_host(cfg, self.state().socket_dir.clone()),
            port: cfg.port,
            user: cfg.superuser.username.clone(),
            password: None,
            passfile: None,
            application_name: String::new(),
            sslmode: None,
            options: [("dbname".to_owned(), "postgres".to_owned())].into_iter().collect(),
        };
        let connstring =
            conf::render_conninfo(&target).map_err(|e| PgError::Config(format!("render conninfo: {e}")))?;
        let env: [(&str, OsString); 2] = [
            ("PGPASSFILE", cfg.pgpass.clone().into_os_string()),
            ("PGOPTIONS", "-c synchronous_commit=local -c statement_timeout=0".into()),
        ];
        let run = self.run_hook("post_bootstrap", &command, vec![connstring], &env).await?;
        tracing::info!(command, status = %run.status, "post_bootstrap script ended");
        if run.code == Some(0) {
            return Ok(());
        }
        Err(PgError::CommandFailed {
            program: "post_bootstrap".into(),
            status: run.status,
            stderr_tail: run.output_tail,
        })
    }

    /// Runs a synchronous hook: `command` split with shell rules, then `extra` arguments.
    async fn run_hook(
        &self,
        hook: &'static str,
        command: &str,
        extra: Vec<String>,
        env: &[(&str, OsString)],
    ) -> Result<process::ScriptRun, PgError> {
        let mut argv = shlex::split(command)
            .ok_or_else(|| PgError::Config(format!("{hook}: {command:?} does not split into words (quotes?)")))?;
        argv.extend(extra);
        tracing::info!(hook, ?argv, "running hook");
        process::run_script(&argv, env, self.inner.owner.as_ref(), HOOK_TIMEOUT).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(old: Option<CallbackRole>, new: CallbackRole, called: bool, restart: bool, expected: Callback) {
        assert_eq!(start_callback(old, new, called, restart), expected, "{old:?} -> {new:?}, called {called}");
    }

    #[test]
    fn starts_fire_patronis_callback_for_the_transition() {
        use CallbackRole::*;
        // A first start in this process, whatever the data directory was: on_start.
        check(None, Replica, false, false, Callback::OnStart);
        check(Some(Demoted), Replica, false, false, Callback::OnStart);
        // A demoted or stopped primary coming back as a replica after callbacks ran: on_role_change only.
        check(Some(Demoted), Replica, true, false, Callback::OnRoleChange);
        check(Some(Primary), Replica, true, true, Callback::OnRoleChange);
        // The same role again: on_start / on_restart.
        check(Some(Replica), Replica, true, false, Callback::OnStart);
        check(Some(Replica), Replica, true, true, Callback::OnRestart);
        check(Some(Primary), Primary, true, true, Callback::OnRestart);
        // A replica becoming a standby leader.
        check(Some(Replica), StandbyLeader, true, false, Callback::OnRoleChange);
    }

    #[test]
    fn callback_arguments_follow_the_command() {
        let argv =
            callback_argv("/usr/local/bin/vip 'eth0 main'", Callback::OnRoleChange, CallbackRole::Primary, "batman");
        assert_eq!(
            argv,
            Some(vec![
                "/usr/local/bin/vip".to_owned(),
                "eth0 main".to_owned(),
                "on_role_change".to_owned(),
                "primary".to_owned(),
                "batman".to_owned()
            ])
        );
        assert_eq!(callback_argv("broken 'quote", Callback::OnStart, CallbackRole::Replica, "x"), None);
    }
}
