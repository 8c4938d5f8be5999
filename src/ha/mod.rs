//! The HA loop: observe → decide → act → publish, once per `loop_wait` and whenever the
//! store's watched keys change, PostgreSQL exits or a long action finishes.
//!
//! [`decide::decide`] is pure; everything that touches the store, PostgreSQL or the clock
//! lives here and in [`execute`]. Every input arrives through one `select!`; long actions run
//! as tracked tasks that the loop sees as "in progress". [`fence`] demotes a primary whose
//! lease ran out even when no cycle runs.

pub mod candidate;
pub mod decide;
pub mod execute;
pub mod fence;
pub mod long;
pub mod observe;
pub mod requests;
pub mod sync;
pub mod types;

#[cfg(test)]
mod tests;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;

use serde_json::Map;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use tracing::info;
use tracing::warn;
use tracing::Instrument;

use self::types::ActionKind;
use self::types::HaConfig;
use self::types::PgProcess;
use crate::config::dynamic::DynamicConfig;
use crate::config::dynamic::Timing;
use crate::dcs::view::ClusterView;
use crate::dcs::view::FailoverTimeline;
use crate::dcs::view::HistoryLine;
use crate::dcs::Dcs;
use crate::postgres::supervisor::Supervisor;
use crate::status::NodeStatus;
use crate::status::PgState;

/// Local (static) settings the loop needs, taken from the YAML config by `node.rs`.
#[derive(Debug, Clone)]
pub struct HaSettings {
    /// Member name.
    pub name: String,
    /// Cluster name.
    pub scope: String,
    /// `postgres://host:port/postgres`.
    pub conn_url: String,
    /// `http://host:port/patroni`.
    pub api_url: String,
    /// Member tags.
    pub tags: Map<String, Value>,
    /// `bootstrap.dcs`: the initial dynamic config.
    pub bootstrap_dcs: Value,
    /// `postgresql.use_pg_rewind` from the local file, when set (wins over the dynamic one).
    pub use_pg_rewind: Option<bool>,
    /// `postgresql.remove_data_directory_on_rewind_failure`.
    pub remove_data_directory_on_rewind_failure: bool,
    /// This node's Raft id.
    pub raft_node_id: u64,
    /// Stop PostgreSQL when raftgres stops (default true).
    pub stop_postgres_on_shutdown: bool,
    /// The restart the REST API scheduled on this node, published in the member key (`scheduled_restart`).
    pub scheduled_restart: watch::Receiver<Option<Map<String, Value>>>,
}

/// A long action running in the background.
struct Running {
    kind: ActionKind,
    handle: JoinHandle<ActionOutcome>,
    /// The API request waiting for this action to finish, if any.
    reply: Option<requests::Reply>,
}

/// What a long action reports back to the loop.
#[derive(Debug, Clone, Default)]
pub struct ActionOutcome {
    /// Member PostgreSQL now follows, when the action (re)started a replica.
    pub following: Option<Option<String>>,
    /// Rewind from the current leader failed.
    pub rewind_failed: bool,
    /// The action failed; the text is reported to a waiting API request.
    pub failed: Option<String>,
    /// A promotion: its `history` line and timeline, written once the node is published healthy.
    pub promotion: Option<(HistoryLine, FailoverTimeline)>,
}

/// How long a node whose pg_rewind failed waits before trying again.
const REWIND_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Mutable state carried between cycles (kept explicit, not as scattered flags).
#[derive(Default)]
struct LoopState {
    running: Option<Running>,
    following: Option<String>,
    rewind_failed: bool,
    /// When the last pg_rewind failed: it is retried after [`REWIND_RETRY_AFTER`] (the source
    /// may just have been starting up), unless the data directory may be wiped instead.
    rewind_failed_at: Option<Instant>,
    last_reason: String,
    n_cycles: u64,
    last_dcs_ok: Option<Instant>,
    last_dcs_seen_wall: Option<SystemTime>,
    /// A finished promotion whose `history` line is still to be written.
    pending_history: Option<(HistoryLine, FailoverTimeline)>,
    /// Whether a replica found running at start-up was checked against the leader (see `adopt_following`).
    adopted_checked: bool,
}

/// The HA loop of one node.
pub struct HaLoop {
    settings: HaSettings,
    dcs: Dcs,
    pg: Supervisor,
    status_tx: watch::Sender<NodeStatus>,
    is_primary: Arc<AtomicBool>,
    state: LoopState,
    dynamic: DynamicConfig,
    timing: Timing,
    requests: tokio::sync::mpsc::Receiver<requests::HaRequest>,
    requests_tx: tokio::sync::mpsc::Sender<requests::HaRequest>,
    /// Asks peers' `GET /patroni` during the leader race (`observe::race_peers`).
    peer_http: reqwest::Client,
}

impl HaLoop {
    /// A loop over `dcs` and `pg`, publishing into `status_tx`; `peer_http` reaches the other members' REST APIs
    /// (the REST API's peer client, trusting `restapi.cafile`).
    pub fn new(
        settings: HaSettings,
        dcs: Dcs,
        pg: Supervisor,
        status_tx: watch::Sender<NodeStatus>,
        peer_http: reqwest::Client,
    ) -> Self {
        let (dynamic, _) = DynamicConfig::parse_lenient(settings.bootstrap_dcs.clone());
        let (timing, _) = dynamic.timing();
        let (requests_tx, requests) = tokio::sync::mpsc::channel(16);
        HaLoop {
            requests,
            requests_tx,
            settings,
            dcs,
            pg,
            status_tx,
            is_primary: Arc::new(AtomicBool::new(false)),
            state: LoopState::default(),
            dynamic,
            timing,
            peer_http,
        }
    }

    /// The sender the REST API uses to ask this loop for restarts, reloads and reinits.
    pub fn requests(&self) -> tokio::sync::mpsc::Sender<requests::HaRequest> {
        self.requests_tx.clone()
    }

    /// Shared flag: PostgreSQL currently runs as primary (read by the fence).
    pub fn primary_flag(&self) -> Arc<AtomicBool> {
        self.is_primary.clone()
    }

    /// Runs until `shutdown` fires, then performs the shutdown sequence.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Decide nothing on a stale view: after a restart the local state machine may still
        // show our old leader key until it caught up with the Raft leader.
        let mut waited_logged = false;
        loop {
            let attempt = self.dcs.view_linearizable(self.timing.retry_timeout);
            tokio::select! {
                _ = shutdown.cancelled() => return self.shutdown().await,
                res = attempt => match res {
                    Ok(_) => break,
                    Err(e) => {
                        if !waited_logged {
                            info!(error = %e, "waiting for the raft cluster before the first HA cycle");
                            waited_logged = true;
                        }
                        self.publish_waiting().await;
                    }
                },
            }
        }
        let mut view_rx = self.dcs.subscribe();
        let mut watched = crate::dcs::keys::watched_fingerprint(&view_rx.borrow());
        let mut pg_exit = self.pg.exit_watch();
        let mut next = Instant::now();
        loop {
            let action_done = async {
                match self.state.running.as_mut() {
                    Some(running) => (&mut running.handle).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
                changed = view_rx.changed() => {
                    if changed.is_err() { break; }
                    let fingerprint = crate::dcs::keys::watched_fingerprint(&view_rx.borrow_and_update());
                    if fingerprint == watched { continue; }
                    watched = fingerprint;
                    debug!("woken by a change of the cluster view");
                }
                _ = pg_exit.changed() => debug!("woken by a postgres exit"),
                joined = action_done => self.finish_action(joined),
                Some(request) = self.requests.recv() => {
                    self.handle_request(request).await;
                    continue;
                }
            }
            let started = Instant::now();
            self.state.n_cycles += 1;
            let span = tracing::debug_span!("ha_cycle", n = self.state.n_cycles);
            self.cycle().instrument(span).await;
            next = started + self.timing.loop_wait;
        }
        self.shutdown().await;
    }

    /// Publishes what we know of PostgreSQL while the store is not reachable yet.
    async fn publish_waiting(&mut self) {
        let data_dir = observe::data_dir(&self.pg).await;
        let process = observe::pg_process(&self.pg).await;
        let pg_status = observe::status_without_probe(&process, &data_dir, PgState::Stopped);
        let timing = self.timing;
        self.status_tx.send_modify(|status| {
            status.pg = pg_status;
            status.cluster = None;
            status.reason = "waiting for the raft cluster".into();
            status.next_cycle_at = Instant::now() + timing.loop_wait;
        });
    }

    fn finish_action(&mut self, joined: Result<ActionOutcome, tokio::task::JoinError>) {
        let Some(running) = self.state.running.take() else { return };
        let answer = match joined {
            Ok(outcome) => {
                if let Some(following) = outcome.following {
                    self.state.following = following;
                }
                self.state.rewind_failed = outcome.rewind_failed;
                self.state.rewind_failed_at = outcome.rewind_failed.then(Instant::now);
                if outcome.promotion.is_some() {
                    self.state.pending_history = outcome.promotion;
                }
                info!(action = running.kind.describe(), "long action finished");
                outcome.failed.map_or_else(|| Ok("restarted successfully".to_string()), |e| Err((503, e)))
            }
            Err(e) => {
                warn!(action = running.kind.describe(), error = %e, "long action task failed");
                Err((503, format!("{} failed", running.kind.describe())))
            }
        };
        if let Some(reply) = running.reply {
            let _ = reply.send(answer);
        }
    }

    fn ha_config(&self) -> HaConfig {
        let view = self.dynamic.view();
        let tags = &self.settings.tags;
        let bool_tag = |key: &str| tags.get(key).and_then(Value::as_bool).unwrap_or(false);
        let priority = tags.get("failover_priority").and_then(Value::as_i64).unwrap_or(1);
        HaConfig {
            name: self.settings.name.clone(),
            ttl: self.timing.ttl,
            paused: view.pause,
            nofailover: bool_tag("nofailover") || priority <= 0,
            failover_priority: if bool_tag("nofailover") { 0 } else { priority },
            maximum_lag_on_failover: view.maximum_lag_on_failover,
            use_pg_rewind: self.settings.use_pg_rewind.unwrap_or(view.postgresql.use_pg_rewind),
            remove_data_directory_on_rewind_failure: self.settings.remove_data_directory_on_rewind_failure,
            check_timeline: view.check_timeline,
            synchronous_mode: view.synchronous_mode,
        }
    }

    fn refresh_dynamic(&mut self, view: &ClusterView) {
        let document =
            view.config.as_ref().map(|c| c.value.clone()).unwrap_or_else(|| self.settings.bootstrap_dcs.clone());
        if &document != self.dynamic.document() {
            let (dynamic, warnings) = DynamicConfig::parse_lenient(document);
            for warning in warnings {
                warn!(warning, "dynamic configuration");
            }
            let (timing, adjustments) = dynamic.timing();
            for adjustment in adjustments {
                warn!(adjustment, "dynamic configuration timing");
            }
            self.dynamic = dynamic;
            self.timing = timing;
            // Changed `postgresql.parameters` reach PostgreSQL by reload; restart-only ones show as pending_restart.
            let parameters = &self.dynamic.view().postgresql.parameters;
            self.pg.apply_dynamic_parameters(&self.settings.bootstrap_dcs, parameters);
        }
    }

    async fn cycle(&mut self) {
        if self.state.rewind_failed_at.is_some_and(|at| at.elapsed() >= REWIND_RETRY_AFTER) {
            info!("retrying pg_rewind");
            self.state.rewind_failed = false;
            self.state.rewind_failed_at = None;
        }
        let view = self.dcs.view();
        self.refresh_dynamic(&view);
        if let Some(kind) = self.state.running.as_ref().map(|r| r.kind) {
            // While a long action runs, observing PostgreSQL can wait behind it (the supervisor
            // serialises state changes), so the holder renews its lease first and observes
            // nothing: a slow promote must never let the new leader's session expire.
            self.renew_during_action(&view, kind).await;
            return;
        }
        let now = Instant::now();
        let dcs_ok = self.dcs_ok(now);
        let lease = self.dcs.lease();
        let data_dir = observe::data_dir(&self.pg).await;
        let process = observe::pg_process(&self.pg).await;
        self.is_primary.store(process.role() == Some(crate::status::Role::Primary), Ordering::SeqCst);
        let leader_key_is_mine = self.dcs.leader_key_is_mine(&view);
        self.adopt_following(&view, &process).await;
        let cfg = self.ha_config();
        if candidate::races_for_vacant_key(&view, &process, &cfg, dcs_ok) {
            // Peers racing at the same instant ask us too: they must read this probe, taken after the key
            // went vacant, not the status of our previous cycle (which they would not count as a vote).
            let probed = observe::status_without_probe(&process, &data_dir, PgState::Running);
            self.status_tx.send_modify(|status| observe::publish_race_probe(status, probed, &view, dcs_ok));
        }
        let peer_query = observe::PeerQuery {
            http: &self.peer_http,
            timeout: self.timing.retry_timeout.min(observe::PEER_STATUS_TIMEOUT),
            view: &view,
            cfg: &cfg,
        };
        let peers = observe::race_peers(&peer_query, &process, dcs_ok).await;
        let obs = observe::observation(
            data_dir.clone(),
            process.clone(),
            lease.holds_leader(now),
            leader_key_is_mine,
            dcs_ok,
            self.state.running.as_ref().map(|r| r.kind),
            peers,
            self.state.following.clone(),
            self.state.rewind_failed,
            self.pg.rewind_incomplete(),
        );
        let decision = decide::decide(&obs, &view, &cfg, SystemTime::now());
        let sentence = decision.reason.to_string();
        if sentence != self.state.last_reason {
            info!(reason = %sentence, actions = ?decision.actions, "ha decision");
            self.state.last_reason = sentence.clone();
        } else {
            debug!(reason = %sentence, "ha decision");
        }
        let dynamic = self.dynamic.view();
        let sync_policy = sync::SyncPolicy {
            mode: dynamic.synchronous_mode,
            strict: dynamic.synchronous_mode_strict,
            node_count: dynamic.synchronous_node_count,
            maximum_lag_on_syncnode: dynamic.maximum_lag_on_syncnode,
        };
        let ctx = execute::Context {
            settings: &self.settings,
            dcs: &self.dcs,
            pg: &self.pg,
            view: &view,
            timing: self.timing,
            sync_policy,
        };
        let result = execute::run(&ctx, &decision.actions, &process, &data_dir).await;
        if result.dcs_contacted {
            self.state.last_dcs_ok = Some(Instant::now());
            self.state.last_dcs_seen_wall = Some(SystemTime::now());
        }
        if let Some(following) = result.following {
            self.state.following = following;
        }
        self.restore_cluster_keys(&data_dir).await;
        if result.clear_rewind_failed {
            self.state.rewind_failed = false;
        }
        if let Some((kind, handle)) = result.spawned {
            self.state.running = Some(Running { kind, handle, reply: None });
        }
        if result.demoted {
            self.is_primary.store(false, Ordering::SeqCst);
        }
        let pg_state = match (&process, self.state.running.as_ref().map(|r| r.kind)) {
            (PgProcess::Running(_), _) => PgState::Running,
            (_, Some(ActionKind::Clone)) => PgState::CreatingReplica,
            (_, Some(ActionKind::Bootstrap)) => PgState::InitializingNewCluster,
            (_, Some(_)) => PgState::Starting,
            (PgProcess::Unresponsive, None) => PgState::Unknown,
            (PgProcess::Stopped, None) => PgState::Stopped,
        };
        let pg_status = observe::status_without_probe(&process, &data_dir, pg_state);
        if !result.member_touched && dcs_ok_or_trying(dcs_ok) {
            self.touch_member(&pg_status).await;
        }
        let lease = self.dcs.lease();
        let paused = self.dynamic.view().pause;
        let timing = self.timing;
        let settings_tags = self.settings.tags.clone();
        let max_lag = self.dynamic.view().maximum_lag_on_failover;
        let dcs_last_seen = self.state.last_dcs_seen_wall;
        let trusted = self.dcs_ok(Instant::now());
        self.status_tx.send_modify(|status| {
            observe::publish(
                status,
                observe::Published {
                    pg: pg_status,
                    view: &view,
                    dcs_ok: trusted,
                    leader_until: lease.leader_valid_until,
                    fencing_token: lease.fencing_token,
                    reason: sentence,
                    next_cycle_at: Instant::now() + timing.loop_wait,
                    dcs_last_seen,
                },
            );
            status.paused = paused;
            status.ttl = timing.ttl;
            status.loop_wait = timing.loop_wait;
            status.tags = settings_tags;
            status.maximum_lag_on_failover = max_lag;
            sync::publish_flags(status, &view, self.dynamic.view().synchronous_mode);
        });
        self.record_promotion().await;
    }

    /// Writes the last promotion's `history` line, stamping the first cycle that published this
    /// node as a primary holding the lease (what `GET /primary` answers 200 on).
    /// Once, on the first cycle that sees a running replica and a leader: if this raftgres restarted while
    /// PostgreSQL kept running already configured to follow that leader, note so, and the replica keeps
    /// running (and streaming, and acknowledging synchronous commits) instead of being restarted to follow it.
    async fn adopt_following(&mut self, view: &ClusterView, process: &types::PgProcess) {
        if self.state.adopted_checked || self.state.following.is_some() {
            return;
        }
        let types::PgProcess::Running(status) = process else { return };
        let Some(leader) = view.leader.as_ref().filter(|l| l.name != self.settings.name) else { return };
        self.state.adopted_checked = true;
        if status.role != crate::status::Role::Replica {
            return;
        }
        let Some((host, port)) = view.members.get(&leader.name).and_then(|m| m.host_port()) else { return };
        let target = crate::postgres::supervisor::ConnTarget { host, port };
        let slot = crate::postgres::slots::slot_name(&self.settings.name);
        match self.pg.follows(&target, &slot).await {
            Ok(true) => {
                info!(leader = %leader.name, "the running replica already follows the leader; keeping it running");
                self.state.following = Some(leader.name.clone());
            }
            Ok(false) => {}
            Err(e) => debug!(error = %e, "could not read the running replica's recovery settings"),
        }
    }

    async fn record_promotion(&mut self) {
        let Some((line, mut timeline)) = self.state.pending_history.take() else { return };
        let healthy = {
            let status = self.status_tx.borrow();
            status.pg.role == crate::status::Role::Primary
                && status.leader_until.is_some_and(|until| Instant::now() < until)
        };
        if healthy {
            timeline.first_healthy_ms = Some(raft::lease::wall_ms());
        }
        info!(?timeline, "recording the promotion in history");
        if let Err(e) = self.dcs.append_history(line, Some(&timeline), self.timing.retry_timeout).await {
            warn!(error = %e, "failed to record the timeline switch in history");
        }
    }

    /// One cycle while a long action runs: renew the lease when we hold the key, publish.
    async fn renew_during_action(&mut self, view: &ClusterView, kind: ActionKind) {
        let reason = if self.dcs.leader_key_is_mine(view) {
            let pg_status = self.status_tx.borrow().pg.clone();
            let identity = observe::MemberIdentity {
                conn_url: &self.settings.conn_url,
                api_url: &self.settings.api_url,
                tags: &self.settings.tags,
                raft_node_id: self.settings.raft_node_id,
                scheduled_restart: self.settings.scheduled_restart.borrow().clone(),
            };
            let member = observe::member_data(&identity, &pg_status, self.dynamic.view().pause);
            let lease_left = self.dcs.lease().leader_remaining(Instant::now());
            let timeout = self.timing.renewal_timeout(lease_left);
            match self.dcs.renew_leader(&member, None, self.timing.ttl, timeout).await {
                Ok(true) => {
                    self.state.last_dcs_ok = Some(Instant::now());
                    self.state.last_dcs_seen_wall = Some(SystemTime::now());
                }
                Ok(false) => warn!(action = kind.describe(), "lost the leader lock during a long action"),
                Err(e) => {
                    warn!(action = kind.describe(), error = %e, "leader lock renewal during a long action failed")
                }
            }
            types::Reason::InProgressRenewing(kind)
        } else {
            // Keep our session and member key alive through a long action (a clone, a rewind
            // and restart): without them the primary would take us for gone and drop our
            // replication slot, and the replica we are starting could not stream.
            let pg_status = self.status_tx.borrow().pg.clone();
            self.touch_member(&pg_status).await;
            types::Reason::InProgress(kind)
        };
        let sentence = reason.to_string();
        if sentence != self.state.last_reason {
            info!(reason = %sentence, "ha decision");
            self.state.last_reason = sentence.clone();
        }
        let lease = self.dcs.lease();
        let loop_wait = self.timing.loop_wait;
        self.status_tx.send_modify(|status| {
            status.reason = sentence;
            status.leader_until = lease.leader_valid_until;
            status.fencing_token = lease.fencing_token;
            status.next_cycle_at = Instant::now() + loop_wait;
        });
    }

    /// As Patroni's leader does, writes `initialize` and `config` again when they are missing (`raftgres remove`
    /// wiped them): the system identifier of our data directory and the dynamic configuration we run with.
    async fn restore_cluster_keys(&self, data_dir: &types::DataDir) {
        let view = self.dcs.view();
        if !self.dcs.leader_key_is_mine(&view) {
            return;
        }
        let timeout = self.timing.retry_timeout;
        if let (None, types::DataDir::Initialized { system_id, .. }) = (&view.initialize, data_dir) {
            match self.dcs.restore_initialize(&system_id.to_string(), timeout).await {
                Ok(true) => info!(system_id = %system_id, "wrote the missing initialize key"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "failed to write the missing initialize key"),
            }
        }
        if view.config.is_none() {
            match self.dcs.write_config_if_absent(self.dynamic.document(), timeout).await {
                Ok(true) => info!("wrote the missing dynamic configuration"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "failed to write the missing dynamic configuration"),
            }
        }
    }

    /// The store is trusted while a write succeeded within `ttl` (or before the first one).
    fn dcs_ok(&self, now: Instant) -> bool {
        match self.state.last_dcs_ok {
            Some(at) => now.duration_since(at) < self.timing.ttl,
            None => self.dcs.node().status().leader.is_some(),
        }
    }

    async fn touch_member(&mut self, pg_status: &crate::status::PgStatus) {
        let identity = observe::MemberIdentity {
            conn_url: &self.settings.conn_url,
            api_url: &self.settings.api_url,
            tags: &self.settings.tags,
            raft_node_id: self.settings.raft_node_id,
            scheduled_restart: self.settings.scheduled_restart.borrow().clone(),
        };
        let member = observe::member_data(&identity, pg_status, self.dynamic.view().pause);
        match self.dcs.touch_member(&member, self.timing.ttl, self.timing.retry_timeout).await {
            Ok(()) => {
                self.state.last_dcs_ok = Some(Instant::now());
                self.state.last_dcs_seen_wall = Some(SystemTime::now());
            }
            Err(e) => warn!(error = %e, "failed to update the member key"),
        }
    }

    /// Serves one API request.
    async fn handle_request(&mut self, request: requests::HaRequest) {
        use requests::HaRequest;
        let view = self.dcs.view();
        match request {
            HaRequest::Reload { reply } => {
                let res = if self.pg.is_running() { self.pg.reload().await.map_err(|e| e.to_string()) } else { Ok(()) };
                if let Err(e) = res {
                    warn!(error = %e, "reload failed");
                }
                let _ = reply.send(Ok("reload scheduled".into()));
            }
            HaRequest::Restart { role, pending_only, reply } => {
                if let Some(running) = &self.state.running {
                    let _ = reply.send(Err(requests::already_in_progress(running.kind)));
                    return;
                }
                let status = self.status_tx.borrow().pg.clone();
                if role.is_some_and(|r| r != status.role) || (pending_only && !status.pending_restart) {
                    let _ = reply.send(Err((503, "restart conditions are not satisfied".into())));
                    return;
                }
                let start_role = match (&status.role, view.leader.as_ref()) {
                    (crate::status::Role::Primary, _) => crate::postgres::supervisor::StartRole::Primary,
                    (_, Some(leader)) if leader.name != self.settings.name => {
                        match view.members.get(&leader.name).and_then(|m| m.host_port()) {
                            Some((host, port)) => crate::postgres::supervisor::StartRole::Replica {
                                primary: crate::postgres::supervisor::ConnTarget { host, port },
                                slot: Some(crate::postgres::slots::slot_name(&self.settings.name)),
                            },
                            None => crate::postgres::supervisor::StartRole::Standby,
                        }
                    }
                    _ => crate::postgres::supervisor::StartRole::Standby,
                };
                let handle = tokio::spawn(long::restart_on_request(self.pg.clone(), start_role));
                self.state.running = Some(Running { kind: ActionKind::Restart, handle, reply: Some(reply) });
            }
            HaRequest::Reinitialize { force, from_leader: _, reply } => {
                if self.dcs.leader_key_is_mine(&view) {
                    let _ = reply.send(Err((503, "I am the leader, can not reinitialize".into())));
                    return;
                }
                let Some(leader) = view.leader.as_ref().map(|l| l.name.clone()) else {
                    let _ = reply.send(Err((503, "Cluster has no leader, can not reinitialize".into())));
                    return;
                };
                if let Some(running) = self.state.running.take() {
                    if !force {
                        let answer = requests::already_in_progress(running.kind);
                        self.state.running = Some(running);
                        let _ = reply.send(Err(answer));
                        return;
                    }
                    running.handle.abort();
                }
                let Some((host, port)) = view.members.get(&leader).and_then(|m| m.host_port()) else {
                    let _ = reply.send(Err((503, "Cluster has no leader, can not reinitialize".into())));
                    return;
                };
                let target = crate::postgres::supervisor::ConnTarget { host, port };
                let slot = crate::postgres::slots::slot_name(&self.settings.name);
                let handle = tokio::spawn(long::clone(self.pg.clone(), leader, target, slot, true));
                self.state.running = Some(Running { kind: ActionKind::Clone, handle, reply: None });
                let _ = reply.send(Ok("reinitialize started".into()));
            }
        }
    }

    /// SIGTERM: a primary hands over at once (stop fast, release the lease so a replica
    /// takes over without waiting for expiry); then stop PostgreSQL and leave cleanly.
    /// Paused: PostgreSQL is left running and the lock is kept (Patroni's rule).
    async fn shutdown(mut self) {
        info!("shutting down the HA loop");
        if let Some(running) = self.state.running.take() {
            running.handle.abort();
        }
        let paused = self.dynamic.view().pause;
        if paused {
            info!("paused: leaving PostgreSQL running and the leader lock in place");
            return;
        }
        let timeout = self.timing.retry_timeout;
        let view = self.dcs.view();
        if self.settings.stop_postgres_on_shutdown {
            if let Err(e) = self.pg.stop(crate::postgres::supervisor::StopMode::Fast).await {
                warn!(error = %e, "failed to stop postgres on shutdown");
            }
            self.is_primary.store(false, Ordering::SeqCst);
        }
        if self.dcs.leader_key_is_mine(&view) {
            match self.dcs.release_leader(None, timeout).await {
                Ok(true) => info!("released the leader lock"),
                Ok(false) => warn!("leader lock was already gone at shutdown"),
                Err(e) => warn!(error = %e, "failed to release the leader lock; it expires after ttl"),
            }
        }
        if let Err(e) = self.dcs.revoke(timeout).await {
            warn!(error = %e, "failed to revoke the session; it expires after ttl");
        }
    }
}

fn dcs_ok_or_trying(_dcs_ok: bool) -> bool {
    // A member touch is also how we find out whether the store answers again.
    true
}

/// Default grace before the first cycle may declare the store unreachable.
pub const DCS_GRACE: Duration = Duration::from_secs(5);
