//! The HA loop: observe → decide → act → publish, once per `loop_wait` and whenever the
//! store's watched keys change, PostgreSQL exits, a long action finishes or the REST API asks.
//!
//! One cycle works on one snapshot ([`observe::Snapshot`]: the cluster view read once, and what
//! the node observed of itself); [`decide::decide`] is pure; [`execute`] acts on that snapshot
//! only; [`publish`] renders the node's status once, at the end. Every input arrives through one
//! `select!` in [`HaLoop::run`]; long actions run as tracked tasks ([`running`]) that the loop
//! sees as "in progress". [`fence`] demotes a primary whose lease ran out even when no cycle runs.
//!
//! Map: [`observe`] (snapshot), [`peers`] (the leader race's live peer reports), [`decide`] and
//! [`candidate`] (PURE decision), [`execute`] (short actions, spawning long ones), [`long`] (the
//! long actions), [`running`] (bookkeeping of a long action), [`publish`] (member key and
//! `NodeStatus`), [`disk`] (the filesystem sample `publish` carries to `/metrics`), [`requests`] (REST API
//! requests), [`sync`] (synchronous replication plans), [`types`] (the vocabulary).

pub mod candidate;
pub mod decide;
pub mod disk;
pub mod execute;
pub mod fence;
pub mod handover;
pub mod long;
pub mod observe;
pub mod peers;
pub mod publish;
pub mod requests;
pub mod retry;
pub mod running;
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
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use tracing::error;
use tracing::info;
use tracing::warn;
use tracing::Instrument;

use self::running::Running;
use self::types::HaConfig;
use crate::config::dynamic::DynamicConfig;
use crate::config::dynamic::Timing;
use crate::dcs::view::ClusterView;
use crate::dcs::view::MemberData;
use crate::dcs::Dcs;
use crate::postgres::supervisor::Supervisor;
use crate::status::NodeStatus;
use crate::status::PgState;
use crate::status::PgStatus;

pub use self::running::ActionOutcome;
pub use self::running::Following;

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
    /// The Linux watchdog (`watchdog` section): armed by the executor, fed by the fence.
    pub watchdog: crate::watchdog::Watchdog,
    /// Role changes pushed to HAProxy's runtime API (`haproxy` section; disabled without it).
    pub haproxy: crate::haproxy::Pusher,
    /// The floating address (`vip` section; disabled without it).
    pub vip: crate::vip::Vip,
    /// The data and Raft directories, whose filesystems `/metrics` reports (`disk`).
    pub node_dirs: disk::NodeDirs,
}

impl HaSettings {
    /// The member key this node publishes for PostgreSQL in state `pg` (the one place it is built).
    pub fn member_data(&self, pg: &PgStatus, paused: bool) -> MemberData {
        let identity = publish::MemberIdentity {
            conn_url: &self.conn_url,
            api_url: &self.api_url,
            tags: &self.tags,
            raft_node_id: self.raft_node_id,
            scheduled_restart: self.scheduled_restart.borrow().clone(),
        };
        publish::member_data(&identity, pg, paused)
    }
}

/// Disarms the watchdog when a cycle left this node neither holding the leader key nor running a primary, or
/// paused (`watchdog::policy::keep_armed`): the catch-all behind the explicit disarms on each way out.
fn settle_watchdog(watchdog: &crate::watchdog::Watchdog, snapshot: &observe::Snapshot, result: &execute::ExecResult) {
    let runs_primary = snapshot.obs.pg.role() == Some(crate::status::Role::Primary) && !result.demoted;
    if !crate::watchdog::policy::keep_armed(result.holds_key, runs_primary, snapshot.cfg.paused) {
        watchdog.disarm(if snapshot.cfg.paused { "maintenance mode" } else { "not the leader" });
    }
}

/// How often a stopping primary that demoted looks whether its successor holds the key (`handover::Step::Wait`).
const HANDOVER_POLL: Duration = Duration::from_millis(50);

/// How long a node whose pg_rewind failed waits before trying again.
const REWIND_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Mutable state carried between cycles (kept explicit, not as scattered flags).
#[derive(Default)]
struct LoopState {
    running: Option<Running>,
    /// The `history` line of this node's last promotion, not written yet (see `restore_cluster_keys`).
    unrecorded_history: Option<(crate::dcs::view::HistoryLine, crate::dcs::view::FailoverTimeline)>,
    /// The member PostgreSQL is configured to follow, when known.
    following: Option<String>,
    rewind_failed: bool,
    /// When the last pg_rewind failed: it is retried after [`REWIND_RETRY_AFTER`] (the source
    /// may just have been starting up), unless the data directory may be wiped instead.
    rewind_failed_at: Option<Instant>,
    /// Until when, and why, this node stays out of the leader race: it released the key voluntarily (its
    /// `pre_promote` script failed, or its PostgreSQL did not start as primary in time; see `candidate::race`).
    race_backoff: Option<(Instant, types::RaceBackoff)>,
    /// While the `leader` key names this member: when its PostgreSQL was last seen running as a primary (or,
    /// when it was not under this key, when the key was first seen without one). `primary_start_timeout` counts
    /// from here (`Observation::primary_down_for`).
    primary_seen_at: Option<Instant>,
    /// The `timeout` of a `POST /restart` of the primary: it replaces `primary_start_timeout` until PostgreSQL
    /// runs as a primary again (Patroni's `_start_timeout`).
    start_timeout_override: Option<Duration>,
    last_reason: String,
    n_cycles: u64,
    last_dcs_ok: Option<Instant>,
    last_dcs_seen_wall: Option<SystemTime>,
    /// Whether a replica found running at start-up was checked against the leader (see `adopt_following`).
    adopted_checked: bool,
    /// As leader: the slots listed by the last cycle, published in `status` by the next lease renewal.
    status_slots: Option<publish::StatusSlots>,
    /// As leader: when each member slot was last seen (`member_slots_ttl` retention, see `slot_positions`).
    slots_last_seen: std::collections::BTreeMap<String, std::time::Instant>,
    /// The last failure of a retried long action (bootstrap, clone, start, rewind), held back until its pause
    /// is over (see `retry`).
    failing: Option<retry::Failing>,
    /// The required watchdog cannot be armed (the last observation): `GET /patroni` says `watchdog_failed`.
    watchdog_failed: bool,
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
    /// Asks peers' `GET /patroni` during the leader race (`peers::race_peers`).
    peer_http: reqwest::Client,
    /// Samples the filesystems of the node's directories, at most once per cycle.
    disk: disk::DiskSampler,
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
        let disk = disk::DiskSampler::new(settings.node_dirs.clone());
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
            disk,
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

    /// Runs until `shutdown` fires, then performs the shutdown sequence; `stop_api` is cancelled right before it
    /// (the REST API answers from the statuses this loop publishes, so it stops when they stop). A primary first
    /// hands its key over as a switchover does (`handover`), with the REST API still up.
    pub async fn run(mut self, shutdown: CancellationToken, stop_api: CancellationToken) {
        if !self.wait_for_raft(&shutdown).await {
            stop_api.cancel();
            return self.shutdown().await;
        }
        let mut handover: Option<handover::Handover> = None;
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
                _ = shutdown.cancelled(), if handover.is_none() => {
                    match self.begin_handover().await {
                        Some(started) => handover = Some(started),
                        None => break,
                    }
                }
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
            if let Some(handing_over) = handover.as_mut() {
                let view = self.dcs.view();
                let step = handing_over.step(
                    Instant::now().into_std(),
                    view.leader.as_ref().map(|leader| leader.name.as_str()),
                    self.dcs.leader_key_is_mine(&view),
                    view.failover.is_some(),
                    view.members.contains_key(&handing_over.successor),
                    self.state.running.as_ref().map(|running| running.kind),
                );
                match step {
                    handover::Step::Cycle => {}
                    handover::Step::Wait => {
                        next = Instant::now() + HANDOVER_POLL;
                        continue;
                    }
                    handover::Step::Done(outcome) => {
                        info!(successor = %handing_over.successor, %outcome, "hand-over before the stop is over");
                        if !matches!(outcome, handover::Outcome::TakenBy(_)) {
                            self.withdraw_handover(&handing_over.successor).await;
                        }
                        break;
                    }
                }
            }
            let started = Instant::now();
            self.state.n_cycles += 1;
            let span = tracing::debug_span!("ha_cycle", n = self.state.n_cycles);
            self.cycle().instrument(span).await;
            next = started + self.timing.loop_wait;
        }
        stop_api.cancel();
        self.shutdown().await;
    }

    /// A hand-over that did not end with the successor leading withdraws its request, so a stale `failover` key
    /// naming this stopping node as leader does not keep it out of a later race (compare-and-set: a request
    /// someone else wrote meanwhile stays).
    async fn withdraw_handover(&self, successor: &str) {
        let view = self.dcs.view();
        let Some(failover) = view.failover.as_ref() else { return };
        let ours = failover.value.leader.as_deref() == Some(self.settings.name.as_str())
            && failover.value.member.as_deref() == Some(successor);
        if !ours {
            return;
        }
        match self.dcs.clear_failover(failover.mod_rev, self.timing.retry_timeout).await {
            Ok(true) => info!("withdrew the switchover request of the hand-over"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "failed to withdraw the switchover request of the hand-over"),
        }
    }

    /// On SIGTERM: a primary that holds the key and has a member to hand it to writes the `failover` key naming
    /// that member, as `POST /switchover` does, and the loop goes on until the hand-over is over (`handover`).
    /// `None`: stop the plain way (paused, not the leader, a long action or a switchover already under way,
    /// nobody can take over, or the request could not be written).
    async fn begin_handover(&mut self) -> Option<handover::Handover> {
        if !self.settings.stop_postgres_on_shutdown || self.dynamic.view().pause || self.state.running.is_some() {
            return None;
        }
        let view = self.dcs.view();
        let cfg = self.ha_config();
        if cfg.standby_cluster || !self.dcs.leader_key_is_mine(&view) || !self.is_primary.load(Ordering::SeqCst) {
            return None;
        }
        if view.failover.is_some() {
            info!("a switchover or failover is already requested; stopping without a hand-over");
            return None;
        }
        let Some(successor) = handover::successor(&view, &cfg) else {
            info!("no member can take over; stopping and releasing the leader key");
            return None;
        };
        let request = crate::dcs::view::FailoverData {
            leader: Some(self.settings.name.clone()),
            member: Some(successor.clone()),
            scheduled_at: None,
        };
        match self.dcs.request_failover(&request, view.failover_key_rev, self.timing.retry_timeout).await {
            Ok(Some(_)) => {
                info!(%successor, "stopping: handing the leader key over as a switchover");
                Some(handover::Handover::new(successor, Instant::now().into_std(), self.timing.ttl))
            }
            Ok(None) => {
                info!("the failover key changed concurrently; stopping without a hand-over");
                None
            }
            Err(e) => {
                warn!(error = %e, "failed to write the switchover request; stopping without a hand-over");
                None
            }
        }
    }

    /// Decides nothing on a stale view: after a restart the local state machine may still show
    /// our old leader key until it caught up with the Raft leader. False when shut down first.
    async fn wait_for_raft(&mut self, shutdown: &CancellationToken) -> bool {
        let mut waited_logged = false;
        loop {
            let attempt = self.dcs.view_linearizable(self.timing.retry_timeout);
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                res = attempt => match res {
                    Ok(_) => return true,
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
    }

    /// One cycle: observe one snapshot, decide, act on it, publish once.
    async fn cycle(&mut self) {
        self.retry_rewind_when_due();
        let view = self.dcs.view();
        self.refresh_dynamic(&view);
        self.apply_dynamic_recovery();
        self.disk.refresh().await;
        if let Some(kind) = self.state.running.as_ref().map(|r| r.kind) {
            // While a long action runs, observing PostgreSQL can wait behind it (the supervisor
            // serialises state changes), so the holder renews its lease first and observes
            // nothing: a slow promote must never let the new leader's session expire.
            return self.renew_during_action(&view, kind).await;
        }
        let snapshot = self.observe(view).await;
        self.forget_failure_once_running(&snapshot.obs);
        let decision = decide::decide(&snapshot.obs, &snapshot.view, &snapshot.cfg, SystemTime::now());
        let (actions, sentence) = self.hold_back_failing(decision.actions, decision.reason.to_string());
        self.log_reason(&sentence, &actions);
        let ctx = self.exec_context(&snapshot);
        let mut result = execute::run(&ctx, &actions, &snapshot.obs).await;
        self.absorb(&mut result);
        settle_watchdog(&self.settings.watchdog, &snapshot, &result);
        self.keep_status_slots(&snapshot.view, &result);
        self.restore_cluster_keys(&snapshot, &result).await;
        let pg_status = publish::pg_status_after(&snapshot.obs, self.state.running.as_ref().map(|r| r.kind));
        let pg_status = publish::standby_leader_role(pg_status, snapshot.cfg.standby_cluster, result.holds_key);
        let pg_status = self.with_failing(pg_status);
        if !result.member_touched {
            // A member touch is also how a node finds out whether the store answers again.
            self.touch_member(&pg_status).await;
        }
        // The floating address follows the key while PostgreSQL runs as what clients write to (a standby
        // cluster's leader: what its clients read from); `vip`'s task also drops it when the lease ends.
        let serving = pg_status.state == PgState::Running
            && matches!(pg_status.role, crate::status::Role::Primary | crate::status::Role::StandbyLeader);
        self.settings.vip.want(result.holds_key && serving && !result.demoted);
        self.publish(&snapshot.view, pg_status, sentence);
    }

    /// A failed bootstrap, clone or start is over once PostgreSQL runs (started by a later attempt, or adopted).
    fn forget_failure_once_running(&mut self, obs: &types::Observation) {
        let over = matches!(obs.pg, types::PgProcess::Running(_))
            && self.state.failing.as_ref().is_some_and(|f| f.kind != types::ActionKind::Rewind);
        if over {
            if let Some(failing) = self.state.failing.take() {
                info!(action = failing.kind.describe(), attempts = failing.attempts, "PostgreSQL runs again");
            }
        }
    }

    /// Drops the actions a recent failure holds back (see `retry`); the sentence then says what failed, how
    /// often, when it is tried again and why it failed.
    fn hold_back_failing(&self, actions: Vec<types::Action>, sentence: String) -> (Vec<types::Action>, String) {
        let Some(failing) = &self.state.failing else { return (actions, sentence) };
        let now = Instant::now();
        let (held, kept): (Vec<_>, Vec<_>) = actions.into_iter().partition(|action| failing.holds_back(action, now));
        if held.is_empty() {
            (kept, sentence)
        } else {
            (kept, failing.sentence(now))
        }
    }

    /// The published status with the failing action, and Patroni's state for it while PostgreSQL is down.
    fn with_failing(&self, mut pg_status: PgStatus) -> PgStatus {
        let Some(failing) = &self.state.failing else { return pg_status };
        if pg_status.state == PgState::Stopped {
            pg_status.state = failing.pg_state(self.pg.config().custom_bootstrap.is_some());
        }
        pg_status.failing = Some(failing.report());
        pg_status
    }

    /// Hands the supervisor what the dynamic configuration says about recovery: `hot_standby_feedback` (needed
    /// by copied logical slots), a standby cluster's remote primary and recovery settings, and
    /// `postgresql.recovery_conf`.
    fn apply_dynamic_recovery(&self) {
        let standby = self.dynamic.view().standby_cluster.clone();
        let feedback = execute::wants_hot_standby_feedback(&self.settings, &self.permanent_slots(), standby.is_some());
        self.pg.enforce_hot_standby_feedback(feedback);
        let remote = standby.map(|s| {
            let target = s.host.map(|host| crate::postgres::supervisor::ConnTarget { host, port: s.port });
            (target, s.recovery)
        });
        self.pg.set_standby_leader_recovery(remote);
        let recovery = &self.dynamic.view().postgresql.recovery_conf;
        self.pg.set_dynamic_recovery(
            recovery.iter().map(|(k, v)| (k.clone(), crate::postgres::params::guc_value(v))).collect(),
        );
    }

    fn retry_rewind_when_due(&mut self) {
        if self.state.rewind_failed_at.is_some_and(|at| at.elapsed() >= REWIND_RETRY_AFTER) {
            info!("retrying pg_rewind");
            self.state.rewind_failed = false;
            self.state.rewind_failed_at = None;
        }
    }

    /// Logs the decision at INFO when its sentence changed, at DEBUG otherwise.
    fn log_reason(&mut self, sentence: &str, actions: &[types::Action]) {
        if sentence != self.state.last_reason {
            info!(reason = %sentence, ?actions, "ha decision");
            self.state.last_reason = sentence.to_string();
        } else {
            debug!(reason = %sentence, "ha decision");
        }
    }

    fn exec_context<'a>(&'a self, snapshot: &'a observe::Snapshot) -> execute::Context<'a> {
        let dynamic = self.dynamic.view();
        execute::Context {
            settings: &self.settings,
            dcs: &self.dcs,
            pg: &self.pg,
            view: &snapshot.view,
            paused: snapshot.cfg.paused,
            timing: self.timing,
            sync_policy: sync::SyncPolicy {
                mode: dynamic.synchronous_mode,
                strict: dynamic.synchronous_mode_strict,
                node_count: dynamic.synchronous_node_count,
                maximum_lag_on_syncnode: dynamic.maximum_lag_on_syncnode,
            },
            permanent_slots: self.permanent_slots(),
            ignore_slots: dynamic
                .ignore_slots
                .iter()
                .filter_map(|value| crate::postgres::slots::IgnoreMatcher::from_value(value).ok())
                .collect(),
            standby: dynamic.standby_cluster.clone(),
            slots_unreadable: dynamic.slots_unreadable,
            member_slots_ttl: dynamic.member_slots_ttl,
            status_slots: self.state.status_slots.as_ref(),
            status_tx: &self.status_tx,
        }
    }

    /// The dynamic `slots:` (valid entries; the configuration refuses invalid ones).
    fn permanent_slots(&self) -> Vec<crate::postgres::slots::PermanentSlot> {
        let slots = &self.dynamic.view().slots;
        slots.iter().filter_map(|(name, value)| crate::postgres::slots::permanent_slot(name, value).ok()).collect()
    }

    /// As leader, keeps the slots this cycle listed for the next `status` write, with the `retain_slots` of
    /// members that left less than `member_slots_ttl` ago; forgets them when not leading.
    fn keep_status_slots(&mut self, view: &ClusterView, result: &execute::ExecResult) {
        if !result.holds_key {
            self.state.status_slots = None;
            self.state.slots_last_seen.clear();
            return;
        }
        let Some(positions) = &result.slot_positions else { return };
        let now = std::time::Instant::now();
        if self.state.status_slots.is_none() {
            // A new leader takes over the retention its predecessor published.
            let inherited = view.status.iter().flat_map(|status| status.retain_slots.iter());
            self.state.slots_last_seen.extend(inherited.map(|slot| (slot.clone(), now)));
        }
        let members: Vec<crate::postgres::slots::SlotMember> = view
            .members
            .iter()
            .map(|(name, member)| crate::postgres::slots::SlotMember {
                name: name.clone(),
                nostream: member.tag_bool("nostream"),
                replicatefrom: None,
                lsn: 0,
            })
            .collect();
        let ttl = self.dynamic.view().member_slots_ttl;
        if ttl.is_zero() {
            // No retention: nothing to remember or publish.
            self.state.slots_last_seen.clear();
            self.state.status_slots = Some(publish::StatusSlots { slots: positions.clone(), retain_slots: Vec::new() });
            return;
        }
        let permanent = self.permanent_slots();
        let last_seen = &mut self.state.slots_last_seen;
        let expired =
            crate::postgres::slot_positions::retain_slots(last_seen, positions, &members, &permanent, now, ttl);
        for slot in expired {
            info!(slot, ?ttl, "the replication slot of an absent member expired (member_slots_ttl)");
        }
        let retain_slots = last_seen.keys().cloned().collect();
        self.state.status_slots = Some(publish::StatusSlots { slots: positions.clone(), retain_slots });
    }

    /// Carries what the actions did into the loop's state: a long action it started now runs.
    fn absorb(&mut self, result: &mut execute::ExecResult) {
        if let Some((kind, handle)) = result.spawned.take() {
            self.state.running = Some(Running { kind, handle, reply: None });
        }
        if result.dcs_contacted {
            self.state.last_dcs_ok = Some(Instant::now());
            self.state.last_dcs_seen_wall = Some(SystemTime::now());
        }
        result.following.clone().apply(&mut self.state.following);
        if result.clear_rewind_failed {
            self.state.rewind_failed = false;
        }
        if result.demoted {
            self.is_primary.store(false, Ordering::SeqCst);
        }
        if result.gave_up_key {
            self.state.race_backoff = Some((Instant::now() + self.timing.ttl, types::RaceBackoff::GaveUpKey));
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
            replicatefrom: tags.get("replicatefrom").and_then(Value::as_str).map(str::to_owned),
            standby_cluster: view.standby_cluster.is_some(),
            clone_without_leader: {
                let standby_methods = view.standby_cluster.as_ref().map(|s| s.create_replica_methods.as_slice());
                self.pg.can_create_replica_without_leader(standby_methods.filter(|m| !m.is_empty()))
            },
            primary_start_timeout: self.state.start_timeout_override.unwrap_or(view.primary_start_timeout),
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

    /// As Patroni's leader does, writes `initialize` and `config` again when they are missing (`raftgres remove`
    /// wiped them): the system identifier of our data directory and the dynamic configuration we run with.
    /// Acts on the cycle's snapshot and on whether this cycle's actions left us holding the key.
    async fn restore_cluster_keys(&mut self, snapshot: &observe::Snapshot, result: &execute::ExecResult) {
        if !result.holds_key {
            // Another leader records its own promotion; ours can no longer be written under our key.
            self.state.unrecorded_history = None;
            return;
        }
        let timeout = self.timing.retry_timeout;
        if let Some((line, timeline)) = self.state.unrecorded_history.clone() {
            if snapshot.view.history.iter().any(|known| known.timeline == line.timeline) {
                // The earlier write did land (only its answer was lost).
                self.state.unrecorded_history = None;
            } else {
                match self.dcs.append_history(line, Some(&timeline), timeout).await {
                    Ok(_) => {
                        info!("recorded the timeline switch of this node's promotion in history");
                        self.state.unrecorded_history = None;
                    }
                    Err(e) => warn!(error = %e, "failed to record the timeline switch in history; retrying"),
                }
            }
        }
        let initialize = snapshot.view.initialize.as_deref();
        if let (None | Some(""), types::DataDir::Initialized { system_id, .. }) = (initialize, &snapshot.obs.data_dir) {
            let was_empty = initialize.is_some();
            match self.dcs.restore_initialize(&system_id.to_string(), was_empty, timeout).await {
                Ok(true) => info!(system_id = %system_id, "wrote the missing initialize key"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "failed to write the missing initialize key"),
            }
        }
        if snapshot.view.config.is_none() {
            match self.dcs.write_config_if_absent(self.dynamic.document(), timeout).await {
                Ok(true) => info!("wrote the missing dynamic configuration"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "failed to write the missing dynamic configuration"),
            }
        }
    }

    /// The store is trusted while a write succeeded within `ttl` (or, before the first one, while a
    /// Raft leader is known).
    fn dcs_ok(&self, now: Instant) -> bool {
        match self.state.last_dcs_ok {
            Some(at) => now.duration_since(at) < self.timing.ttl,
            None => self.dcs.raft_leader_known(),
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
        if self.dynamic.view().pause {
            info!("paused: leaving PostgreSQL running and the leader lock in place");
            self.settings.watchdog.disarm("shutting down in maintenance mode");
            // Deliberately left running: the fence clears the guard file, so the guard does not stop it.
            self.is_primary.store(false, Ordering::SeqCst);
            return;
        }
        let timeout = self.timing.retry_timeout;
        let view = self.dcs.view();
        if self.settings.stop_postgres_on_shutdown {
            let was_primary = self.is_primary.load(Ordering::SeqCst) || self.pg.may_accept_writes();
            if was_primary {
                self.settings.haproxy.demoting(&self.settings.name).await;
                self.settings.vip.release().await;
            }
            match self.pg.stop(crate::postgres::supervisor::StopMode::Fast).await {
                Ok(()) => self.settings.watchdog.disarm("shutting down"),
                // Patroni's rule: a primary that did not stop keeps the leader key (it expires after ttl, and no
                // replica may promote before), and the watchdog stays armed. The fence leaves the guard armed
                // with the lease's deadline (`is_primary` stays set), so the guard stops the postmaster when
                // the lease runs out, before any replica can take the key.
                Err(e) if was_primary && self.pg.is_running() => {
                    error!(
                        error = %e,
                        "PostgreSQL did not stop on shutdown; the leader key is kept until its lease runs out, when \
                         the fence guard stops the postmaster (and the watchdog, if armed, resets the host)"
                    );
                    self.is_primary.store(true, Ordering::SeqCst);
                    return;
                }
                Err(e) => warn!(error = %e, "failed to stop postgres on shutdown; leaving the watchdog armed"),
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
