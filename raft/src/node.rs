//! [`RaftNode`]: the handle the rest of raftgres uses. Starts the replica (store, openraft,
//! peer listener, bootstrap, lease keeper), offers guarded writes with follower forwarding and
//! retry dedup, session keep-alive and the holder's lease, a watched local view, linearizable
//! reads, membership changes and metrics.
//!
//! This module must not know about PostgreSQL: it speaks only in keys, sessions and leases.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use openraft::error::ClientWriteError;
use openraft::error::RaftError as OpenRaftError;
use openraft::ServerState;
use openraft::SnapshotPolicy;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;
use tracing::warn;
use tracing::Instrument;

use crate::command::Command;
use crate::command::CommandResult;
use crate::command::Envelope;
use crate::command::Guard;
use crate::command::Op;
use crate::command::SessionId;
use crate::config::LeaseMode;
use crate::config::RaftConfig;
use crate::error::RaftError;
use crate::lease;
use crate::lease::HolderLease;
use crate::network::client::PeerClient;
use crate::network::client::PeerNetwork;
use crate::network::ForwardError;
use crate::network::PeerStatus;
use crate::network::ReadIndexReply;
use crate::network::WriteReply;
use crate::state::ClusterState;
use crate::store::Store;
use crate::typ;
use crate::NodeId;
use crate::PeerNode;

mod bootstrap;
pub mod elections;
pub mod handover;
mod membership;
mod metrics;

pub use metrics::RaftStatus;

/// Outcome of a write proposed on this node's own openraft.
enum LocalWrite {
    /// Committed and applied.
    Applied(CommandResult),
    /// This node is not the Raft leader (any more).
    NotLeader,
    /// No quorum in time, or openraft refused; the text says which.
    Failed(String),
}

/// Sequence state of one writer (origin).
struct Writer {
    origin: u64,
    seq: u64,
}

/// Shared state of a running node; the peer server and the lease keeper hold it too.
pub struct Inner {
    cfg: Arc<RaftConfig>,
    raft: typ::Raft,
    store: Store,
    client: PeerClient,
    guarded: AtomicBool,
    writer: tokio::sync::Mutex<Writer>,
    keeper_writer: tokio::sync::Mutex<Writer>,
    session: SessionId,
    lease: Mutex<HolderLease>,
    handover: handover::Handover,
    /// Notified when an append from a leader was accepted (`elections`).
    heard_leader: tokio::sync::Notify,
    cancel: CancellationToken,
    tasks: TaskTracker,
    local_addr: SocketAddr,
}

/// A running Raft replica. Cheap to clone.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

impl RaftNode {
    /// Opens the store, starts openraft and the peer listener, then bootstraps or rejoins in
    /// the background. Returns once the listener is bound.
    pub async fn start(cfg: RaftConfig) -> Result<RaftNode, RaftError> {
        cfg.validate()?;
        let cfg = Arc::new(cfg);
        let store = open_store(&cfg).await?;
        let pristine = store.is_pristine()?;
        let client = PeerClient::new(cfg.clone())?;
        // A restarted node campaigns only once it has heard from the leader or waited for one (`elections`).
        let raft_config = openraft_config(&cfg, !pristine)?;
        let raft = typ::Raft::new(
            cfg.node_id,
            raft_config,
            PeerNetwork::new(client.clone()),
            store.log_store(),
            store.state_machine(),
        )
        .await
        .map_err(|e| RaftError::Stopped(format!("start raft: {e}")))?;
        client.watch_membership(raft.metrics());
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| RaftError::io(format!("bind raft peer listener {}", cfg.listen), e))?;
        let local_addr = listener.local_addr().map_err(|e| RaftError::io("read peer listener address", e))?;
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            raft,
            store,
            client,
            // A pristine node refuses Raft RPCs until it knows whether it is new or wiped.
            guarded: AtomicBool::new(pristine),
            writer: tokio::sync::Mutex::new(Writer { origin: rand::random(), seq: 0 }),
            keeper_writer: tokio::sync::Mutex::new(Writer { origin: rand::random(), seq: 0 }),
            session: SessionId(rand::random()),
            lease: Mutex::new(HolderLease::default()),
            handover: handover::Handover::default(),
            heard_leader: tokio::sync::Notify::new(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            local_addr,
        });
        let span = tracing::info_span!("raft", node = cfg.node_id);
        let app = crate::network::server::router(inner.clone(), cfg.max_message_bytes);
        let server_cancel = inner.cancel.clone();
        let tls = inner.client.tls().cloned();
        inner.tasks.spawn(
            async move {
                let serve = crate::network::server::serve(listener, app, tls, server_cancel.cancelled_owned());
                if let Err(e) = serve.await {
                    warn!(error = %e, "raft peer listener stopped");
                }
            }
            .instrument(span.clone()),
        );
        inner.tasks.spawn(bootstrap::run(inner.clone(), pristine).instrument(span.clone()));
        if !pristine {
            inner.tasks.spawn(elections::hold_until_leader_heard(inner.clone()).instrument(span.clone()));
        }
        inner.tasks.spawn(lease::run_keeper(inner.clone()).instrument(span.clone()));
        inner.tasks.spawn(handover::run_placement(inner.clone()).instrument(span));
        info!(node = cfg.node_id, listen = %local_addr, pristine, "raft node started");
        Ok(RaftNode { inner })
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.cfg.node_id
    }

    /// Address the peer listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Re-reads the peer certificate files (what SIGHUP does): new connections use them, open
    /// ones continue, and on error the old files stay in use. `None` on a plaintext cluster.
    pub async fn reload_tls(&self) -> Result<Option<crate::network::tls::CertSummary>, RaftError> {
        let Some(tls) = self.inner.client.tls().cloned() else { return Ok(None) };
        tokio::task::spawn_blocking(move || tls.reload())
            .await
            .map_err(|e| RaftError::Tls(format!("reload task: {e}")))?
            .map(Some)
    }

    /// This process's session (new for every start of the node).
    pub fn session_id(&self) -> SessionId {
        self.inner.session
    }

    /// The latest applied state (local, possibly behind the leader).
    pub fn view(&self) -> Arc<ClusterState> {
        self.inner.view()
    }

    /// Wakes on every applied change of the state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.inner.subscribe()
    }

    /// The underlying openraft handle (for tests and metrics).
    pub fn raft(&self) -> &typ::Raft {
        &self.inner.raft
    }

    /// True once this node belongs to an initialized cluster.
    pub async fn is_initialized(&self) -> bool {
        self.inner.raft.is_initialized().await.unwrap_or(false)
    }

    /// Proposes `cmd` through the Raft leader, forwarding when this node follows; retries
    /// (with the same sequence number, so it applies at most once) until `timeout`.
    pub async fn write(&self, cmd: Command, timeout: Duration) -> Result<CommandResult, RaftError> {
        let mut writer = self.inner.writer.lock().await;
        writer.seq += 1;
        let envelope = Envelope { origin: writer.origin, seq: writer.seq, stamp_ms: 0, cmd };
        self.inner.propose(envelope, timeout).await
    }

    /// Renews this node's session and applies `ops` atomically with it (e.g. the member key
    /// attached to the session). Returns whether the session was renewed (true) or had to be
    /// granted afresh (false), or the guard failure.
    pub async fn keep_alive(
        &self,
        owner: &str,
        ttl: Duration,
        ops: Vec<Op>,
        timeout: Duration,
    ) -> Result<CommandResult, RaftError> {
        let sent = Instant::now();
        let res = self.session_txn(owner, ttl, vec![], ops, timeout).await?;
        if res.is_applied() {
            let mut lease = self.inner.lock_lease();
            lease.session_valid_until = Some(sent + ttl.saturating_sub(lease::margin(ttl)));
        }
        Ok(res)
    }

    /// Takes the vacant lease key `key` (the caller's leader key) for this node's session
    /// (create-if-absent); the holder's lease and fencing token follow from this write.
    pub async fn acquire_lease(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        extra_ops: Vec<Op>,
        timeout: Duration,
    ) -> Result<bool, RaftError> {
        self.lease_txn(key, owner, ttl, Guard::Absent, extra_ops, timeout).await
    }

    /// Renews the lease key `key` we hold (guarded by our session); false means we lost it.
    pub async fn renew_lease(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        extra_ops: Vec<Op>,
        timeout: Duration,
    ) -> Result<bool, RaftError> {
        self.lease_txn(key, owner, ttl, Guard::SessionIs(self.inner.session), extra_ops, timeout).await
    }

    /// Takes over the lease key `key` still attached to this member's previous process (same
    /// name, older session): guarded by the key's value being our own name. Member names are
    /// unique cluster-wide, so only a later incarnation of the holder can pass this guard.
    pub async fn take_over_lease(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        extra_ops: Vec<Op>,
        timeout: Duration,
    ) -> Result<bool, RaftError> {
        self.lease_txn(key, owner, ttl, Guard::ValueEq(owner.to_string()), extra_ops, timeout).await
    }

    /// Gives the lease key `key` up. The local lease ends *before* the delete is proposed.
    pub async fn release_lease(&self, key: &str, timeout: Duration) -> Result<bool, RaftError> {
        {
            let mut lease = self.inner.lock_lease();
            lease.leader_valid_until = None;
            lease.leader_expiry_floor = None;
            lease.fencing_token = None;
            lease.releases += 1;
        }
        let cmd = Command::delete(key, Guard::SessionIs(self.inner.session));
        Ok(self.write(cmd, timeout).await?.is_applied())
    }

    /// Revokes this node's session: every key attached to it (member key, leader key) vanishes.
    pub async fn revoke_session(&self, timeout: Duration) -> Result<(), RaftError> {
        {
            let mut lease = self.inner.lock_lease();
            *lease = HolderLease { releases: lease.releases + 1, ..HolderLease::default() };
        }
        self.write(Command::RevokeSession { session: self.inner.session }, timeout).await.map(|_| ())
    }

    /// This node's own view of its session and leader lease.
    pub fn lease(&self) -> HolderLease {
        *self.inner.lock_lease()
    }

    async fn session_txn(
        &self,
        owner: &str,
        ttl: Duration,
        guards: Vec<(String, Guard)>,
        mut ops: Vec<Op>,
        timeout: Duration,
    ) -> Result<CommandResult, RaftError> {
        let keep_alive = Op::KeepAlive {
            session: self.inner.session,
            node: self.inner.cfg.node_id,
            owner: owner.to_string(),
            ttl_ms: ttl.as_millis() as u64,
        };
        ops.insert(0, keep_alive);
        self.write(Command::Txn { guards, ops }, timeout).await
    }

    async fn lease_txn(
        &self,
        key: &str,
        owner: &str,
        ttl: Duration,
        guard: Guard,
        mut extra_ops: Vec<Op>,
        timeout: Duration,
    ) -> Result<bool, RaftError> {
        let sent = Instant::now();
        let releases = self.inner.lock_lease().releases;
        // The first put: the result's `create_rev` is this key's.
        let put = Op::Put { key: key.into(), value: owner.to_string(), attach: Some(self.inner.session) };
        extra_ops.insert(0, put);
        let res = self.session_txn(owner, ttl, vec![(key.into(), guard)], extra_ops, timeout).await?;
        let mut lease = self.inner.lock_lease();
        if lease.releases != releases {
            // Given up while this write was in flight: whatever it did, the local lease stays given up (safe:
            // a key this write did renew or take lapses after ttl without renewals).
            warn!(key, "the lease was given up while a write of it was in flight; not holding it");
            return Ok(false);
        }
        match res {
            CommandResult::Applied { create_rev, .. } => {
                let until = sent + ttl.saturating_sub(lease::margin(ttl));
                lease.session_valid_until = Some(until);
                lease.leader_valid_until = Some(until);
                lease.leader_expiry_floor = Some(match self.inner.cfg.lease_mode {
                    LeaseMode::Strict => sent + ttl,
                    LeaseMode::Stamped { .. } => until,
                });
                // The fencing token is the key's create revision as the write itself reports it, for a
                // create, a renewal and a take-over alike; never from the local view, which may lag behind
                // a write that was forwarded to the Raft leader and applied there.
                if create_rev.is_none() {
                    // Only a result remembered from before store format 2 lacks it (a retry's dedup hit).
                    warn!(
                        key,
                        "the lease write reported no create revision; holding the lease without a fencing token"
                    );
                }
                lease.fencing_token = create_rev;
                Ok(true)
            }
            _ => {
                lease.leader_valid_until = None;
                lease.leader_expiry_floor = None;
                lease.fencing_token = None;
                Ok(false)
            }
        }
    }

    /// A linearizable snapshot of the state: confirmed with a quorum by the Raft leader.
    pub async fn read_linearizable(&self, timeout: Duration) -> Result<Arc<ClusterState>, RaftError> {
        self.inner.read_linearizable(timeout).await
    }

    /// Asks the leader to add a node (learner first, then voter).
    pub async fn add_node(&self, id: NodeId, node: PeerNode, timeout: Duration) -> Result<String, RaftError> {
        self.inner.request_membership(crate::network::MembershipChange::AddNode { id, node }, timeout).await
    }

    /// Asks the leader to remove a node from the membership.
    pub async fn remove_node(&self, id: NodeId, timeout: Duration) -> Result<String, RaftError> {
        self.inner.request_membership(crate::network::MembershipChange::RemoveNode { id }, timeout).await
    }

    /// Current Raft metrics in raftgres' terms.
    pub fn status(&self) -> RaftStatus {
        metrics::status(&self.inner.raft.metrics().borrow())
    }

    /// Waits until openraft stops on a fatal error of its own (the store could not be written or
    /// read, or its core panicked) and returns that error's text; pending forever while it runs,
    /// and after a clean [`RaftNode::shutdown`]. openraft never resumes after such an error: the
    /// caller has to start the replica afresh (raftgres restarts its process in place).
    pub async fn fatal_error(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        loop {
            let fatal = match &metrics.borrow_and_update().running_state {
                Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
                Err(fatal) => Some(fatal.to_string()),
            };
            if let Some(fatal) = fatal {
                return fatal;
            }
            if metrics.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Hands Raft leadership to voter `target` (see [`handover`]); must be called on the leader.
    pub async fn transfer_leadership(&self, target: NodeId, timeout: Duration) -> Result<(), RaftError> {
        self.inner.transfer_leadership(target, timeout).await
    }

    /// Hands leadership over when this node leads (to the owner of `raft.leadership_follows_key`,
    /// else the voter with the longest log), then stops the peer listener, the keeper and
    /// openraft, and flushes the store.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        self.inner.hand_over_before_stop().await;
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        if let Err(e) = self.inner.raft.shutdown().await {
            warn!(error = %e, "raft shutdown");
        }
        self.inner.tasks.wait().await;
        self.inner.store.flush().await
    }
}

async fn open_store(cfg: &RaftConfig) -> Result<Store, RaftError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| RaftError::io(format!("create raft data directory {}", cfg.data_dir.display()), e))?;
    let store = Store::open(&cfg.data_dir, cfg.cache_capacity)?;
    match store.identity()? {
        Some((node_id, cluster_id)) if node_id != cfg.node_id || cluster_id != cfg.cluster_id() => {
            Err(RaftError::Config {
                path: "raft.node_id".into(),
                message: format!(
                    "the raft data directory {} belongs to node {node_id} of cluster id {cluster_id:016x}, but this config says node {} of cluster {:?} ({:016x}); point raft.data_dir at this node's own directory",
                    cfg.data_dir.display(),
                    cfg.node_id,
                    cfg.cluster_name,
                    cfg.cluster_id()
                ),
            })
        }
        Some(_) => Ok(store),
        None => {
            store.set_identity(cfg.node_id, cfg.cluster_id()).await?;
            Ok(store)
        }
    }
}

/// openraft's configuration; `hold_elections` starts it with elections off (a restart, see `elections`).
fn openraft_config(cfg: &RaftConfig, hold_elections: bool) -> Result<Arc<openraft::Config>, RaftError> {
    let config = openraft::Config {
        enable_elect: !hold_elections,
        cluster_name: cfg.cluster_name.clone(),
        heartbeat_interval: cfg.heartbeat_interval.as_millis() as u64,
        election_timeout_min: cfg.election_timeout_min.as_millis() as u64,
        election_timeout_max: cfg.election_timeout_max.as_millis() as u64,
        install_snapshot_timeout: 5000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 1000,
        purge_batch_size: 64,
        ..Default::default()
    };
    let config = config
        .validate()
        .map_err(|e| RaftError::Config { path: "raft".into(), message: format!("invalid raft timers: {e}") })?;
    Ok(Arc::new(config))
}

impl Inner {
    pub(crate) fn config(&self) -> &RaftConfig {
        &self.cfg
    }

    pub(crate) fn raft(&self) -> &typ::Raft {
        &self.raft
    }

    pub(crate) fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// An append from a leader was accepted: a restarted node may now run openraft's election timer.
    pub(crate) fn heard_from_leader(&self) {
        self.heard_leader.notify_one();
    }

    pub(crate) fn is_guarded(&self) -> bool {
        self.guarded.load(Ordering::SeqCst)
    }

    pub(crate) fn set_guarded(&self, guarded: bool) {
        self.guarded.store(guarded, Ordering::SeqCst);
    }

    pub(crate) fn view(&self) -> Arc<ClusterState> {
        self.store.current()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.store.subscribe()
    }

    fn lock_lease(&self) -> std::sync::MutexGuard<'_, HolderLease> {
        // A poisoned lock means a panic elsewhere while holding it; the lease data is plain
        // values, so recovering the guard is sound.
        self.lease.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn leader_hint(&self) -> Option<(NodeId, PeerNode)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader).cloned()?;
        Some((leader, node))
    }

    fn addr_of(&self, id: NodeId, node: &PeerNode) -> String {
        self.cfg.peer_addr(id, node)
    }

    /// Proposes an envelope until `timeout`, locally when leader, else through the leader.
    async fn propose(&self, mut envelope: Envelope, timeout: Duration) -> Result<CommandResult, RaftError> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("no raft leader known");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RaftError::Unavailable(format!("write not confirmed within {timeout:?}: {last_error}")));
            }
            match self.leader_hint() {
                Some((leader, _)) if leader == self.cfg.node_id => {
                    envelope.stamp_ms = lease::wall_ms();
                    match self.write_local(envelope.clone(), remaining).await {
                        LocalWrite::Applied(res) => return Ok(res),
                        LocalWrite::NotLeader => last_error = "leadership moved".into(),
                        LocalWrite::Failed(e) => last_error = e,
                    }
                }
                Some((leader, node)) => {
                    let addr = self.addr_of(leader, &node);
                    let call = self.client.call::<_, WriteReply>(leader, &addr, "/raft/write", &envelope, remaining);
                    match call.await {
                        Ok(Ok(res)) => return Ok(res),
                        Ok(Err(e)) => last_error = format!("leader {leader}: {e}"),
                        Err(e) => last_error = e.to_string(),
                    }
                }
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Proposes a keeper command locally; fails with NotLeader as soon as we are not leader.
    pub(crate) async fn propose_as_keeper(&self, cmd: Command, timeout: Duration) -> Result<CommandResult, RaftError> {
        let mut writer = self.keeper_writer.lock().await;
        writer.seq += 1;
        let envelope = Envelope { origin: writer.origin, seq: writer.seq, stamp_ms: lease::wall_ms(), cmd };
        match self.write_local(envelope, timeout).await {
            LocalWrite::Applied(res) => Ok(res),
            LocalWrite::NotLeader => Err(RaftError::NotLeader { leader_hint: self.leader_hint() }),
            LocalWrite::Failed(e) => Err(RaftError::Unavailable(e)),
        }
    }

    /// Proposes `envelope` on this node's openraft, bounded by `timeout` (the entry may still
    /// commit later; the caller's retry with the same sequence number is deduplicated).
    /// Waits while a leadership hand-over holds the write gate.
    async fn write_local(&self, envelope: Envelope, timeout: Duration) -> LocalWrite {
        let write = async {
            let _open = self.handover.open().await;
            self.raft.client_write(envelope).await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(resp)) => LocalWrite::Applied(resp.data),
            Ok(Err(OpenRaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => LocalWrite::NotLeader,
            Ok(Err(e)) => LocalWrite::Failed(e.to_string()),
            Err(_) => LocalWrite::Failed("no quorum acknowledged the write".into()),
        }
    }

    /// `POST /raft/write` on the leader: stamp and propose, for no longer than the sender waits
    /// (`budget`) and never longer than four election timeouts.
    pub(crate) async fn serve_write(&self, mut envelope: Envelope, budget: Option<Duration>) -> WriteReply {
        if self.leader_hint().map(|(id, _)| id) != Some(self.cfg.node_id) {
            return Err(ForwardError::NotLeader { leader: self.leader_hint() });
        }
        envelope.stamp_ms = lease::wall_ms();
        let bound = self.cfg.election_timeout_max * 4;
        match self.write_local(envelope, budget.map_or(bound, |b| b.min(bound))).await {
            LocalWrite::Applied(res) => Ok(res),
            LocalWrite::NotLeader => Err(ForwardError::NotLeader { leader: self.leader_hint() }),
            LocalWrite::Failed(e) => Err(ForwardError::Unavailable(e)),
        }
    }

    /// `POST /raft/read-index` on the leader.
    pub(crate) async fn serve_read_index(&self) -> ReadIndexReply {
        let timeout = self.cfg.election_timeout_max * 2;
        match tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await {
            Ok(Ok(log_id)) => Ok(log_id.map(|id| id.index).unwrap_or(0)),
            Ok(Err(OpenRaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(ForwardError::NotLeader { leader: self.leader_hint() })
            }
            Ok(Err(e)) => Err(ForwardError::Unavailable(e.to_string())),
            Err(_) => Err(ForwardError::Unavailable("leadership not confirmed by a quorum".into())),
        }
    }

    async fn read_linearizable(&self, timeout: Duration) -> Result<Arc<ClusterState>, RaftError> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("no raft leader known");
        while Instant::now() < deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let index = match self.leader_hint() {
                Some((leader, _)) if leader == self.cfg.node_id => {
                    self.serve_read_index().await.map_err(|e| e.to_string())
                }
                Some((leader, node)) => {
                    let addr = self.addr_of(leader, &node);
                    match self.client.call::<_, ReadIndexReply>(leader, &addr, "/raft/read-index", (), remaining).await
                    {
                        Ok(reply) => reply.map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
                None => Err(last_error.clone()),
            };
            match index {
                Ok(index) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    let waiter = self.raft.wait(Some(remaining));
                    return match waiter.applied_index_at_least(Some(index), "linearizable read").await {
                        Ok(_) => Ok(self.view()),
                        Err(e) => Err(RaftError::Unavailable(format!("apply up to the read index {index}: {e}"))),
                    };
                }
                Err(e) => last_error = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(RaftError::Unavailable(format!("linearizable read not confirmed within {timeout:?}: {last_error}")))
    }

    /// `POST /raft/status`.
    pub(crate) async fn peer_status(&self) -> PeerStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let members: BTreeMap<NodeId, PeerNode> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let initialized = self.raft.is_initialized().await.unwrap_or(false);
        PeerStatus {
            node_id: self.cfg.node_id,
            initialized,
            voters: membership.voter_ids().collect(),
            members,
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
        }
    }

    pub(crate) fn is_leader_now(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }
}
