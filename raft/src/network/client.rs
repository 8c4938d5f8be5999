//! Client side of the peer transport: openraft's `RaftNetworkFactory` over one shared HTTP
//! client, plus the calls a node makes to its peers (forwarded writes, read index, status,
//! membership). Connection refusal maps to `Unreachable` so openraft backs off.
//!
//! With TLS every call verifies that the server's certificate names the node it is addressed
//! to: the name comes from the static peer list, then the live membership, then the records
//! openraft hands to `new_client`; only a node known by none of them is checked against the
//! URL host (certificates name the node's addresses too).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::Duration;

use openraft::error::InstallSnapshotError;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::RaftError as OpenRaftError;
use openraft::error::RemoteError;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::network::RaftNetwork;
use openraft::network::RaftNetworkFactory;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::InstallSnapshotResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use super::decode;
use super::encode;
use super::tls::PeerTls;
use super::Wire;
use super::DECODE_LIMIT;
use super::PROTOCOL_VERSION;
use crate::config::PeerTransport;
use crate::config::RaftConfig;
use crate::NodeId;
use crate::PeerNode;
use crate::TypeConfig;

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Could not connect (refused, no route): the peer is down or cut off.
    #[error("peer {addr} unreachable: {message}")]
    Unreachable {
        /// Address tried.
        addr: String,
        /// Cause.
        message: String,
    },
    /// Connected but the exchange failed (timeout, reset, bad status, undecodable answer).
    #[error("peer {addr}: {message}")]
    Network {
        /// Address tried.
        addr: String,
        /// Cause.
        message: String,
    },
}

/// Shared peer client: one plaintext `reqwest::Client`, or with TLS one client per peer name
/// (each verifying that name), cached by [`PeerTls`].
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    tls: Option<Arc<PeerTls>>,
    cfg: Arc<RaftConfig>,
    membership: Arc<OnceLock<watch::Receiver<crate::typ::RaftMetrics>>>,
    learned: Arc<Mutex<HashMap<NodeId, String>>>,
}

impl PeerClient {
    /// Builds the shared client; with TLS this loads and checks the certificate files.
    pub fn new(cfg: Arc<RaftConfig>) -> Result<Self, crate::RaftError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.election_timeout_min)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(|e| crate::RaftError::Protocol(format!("build peer HTTP client: {e}")))?;
        let tls = match &cfg.transport {
            PeerTransport::Tls(files) => {
                Some(Arc::new(PeerTls::load(files, &cfg.me().name, cfg.election_timeout_min)?))
            }
            PeerTransport::Insecure => None,
            PeerTransport::Unset => {
                cfg.validate_transport()?;
                None
            }
        };
        Ok(PeerClient {
            http,
            tls,
            cfg,
            membership: Arc::new(OnceLock::new()),
            learned: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The config this client speaks for.
    pub fn config(&self) -> &RaftConfig {
        &self.cfg
    }

    /// The TLS state, `None` on a plaintext (loopback) cluster.
    pub fn tls(&self) -> Option<&Arc<PeerTls>> {
        self.tls.as_ref()
    }

    /// Lets the client look peer names up in the live membership.
    pub fn watch_membership(&self, metrics: watch::Receiver<crate::typ::RaftMetrics>) {
        let _ = self.membership.set(metrics);
    }

    /// Remembers the name of a node openraft replicates to.
    fn learn(&self, id: NodeId, name: &str) {
        if !name.is_empty() {
            self.learned.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(id, name.to_string());
        }
    }

    /// The member name of node `id`: static peers, then the membership, then learned records.
    pub fn name_of(&self, id: NodeId) -> Option<String> {
        if let Some(peer) = self.cfg.peers.iter().find(|p| p.id == id) {
            return Some(peer.name.clone());
        }
        if let Some(metrics) = self.membership.get() {
            let metrics = metrics.borrow();
            if let Some(node) = metrics.membership_config.membership().get_node(&id) {
                if !node.name.is_empty() {
                    return Some(node.name.clone());
                }
            }
        }
        self.learned.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&id).cloned()
    }

    /// Sends `body` to `path` of node `to` at `addr` and decodes the answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        to: NodeId,
        addr: &str,
        path: &str,
        body: Req,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let wire =
            Wire { version: PROTOCOL_VERSION, cluster_id: self.cfg.cluster_id(), from: self.cfg.node_id, to, body };
        let bytes = encode(&wire).map_err(|message| CallError::Network { addr: addr.to_string(), message })?;
        let (http, url) = match &self.tls {
            None => (self.http.clone(), format!("http://{addr}{path}")),
            Some(tls) => {
                let http = tls
                    .client_for(self.name_of(to).as_deref())
                    .map_err(|e| CallError::Network { addr: addr.to_string(), message: e.to_string() })?;
                (http, format!("https://{addr}{path}"))
            }
        };
        let res = http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(super::BUDGET_HEADER, timeout.as_millis().to_string())
            .timeout(timeout)
            .body(bytes)
            .send()
            .await
            .map_err(|e| classify(addr, &e))?;
        let status = res.status();
        let payload = res.bytes().await.map_err(|e| classify(addr, &e))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&payload).into_owned();
            return Err(CallError::Network { addr: addr.to_string(), message: format!("{status}: {text}") });
        }
        decode::<Resp, DECODE_LIMIT>(&payload).map_err(|message| CallError::Network { addr: addr.to_string(), message })
    }
}

fn classify(addr: &str, e: &reqwest::Error) -> CallError {
    let message = error_chain(e);
    if e.is_connect() {
        CallError::Unreachable { addr: addr.to_string(), message }
    } else {
        CallError::Network { addr: addr.to_string(), message }
    }
}

/// Renders an error with its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// openraft's network factory.
#[derive(Clone)]
pub struct PeerNetwork {
    client: PeerClient,
}

impl PeerNetwork {
    /// Wraps the shared client.
    pub fn new(client: PeerClient) -> Self {
        PeerNetwork { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> Self::Network {
        let addr = self.client.config().peer_addr(target, node);
        self.client.learn(target, &node.name);
        PeerConnection { client: self.client.clone(), target, addr }
    }
}

/// A replication stream's view of one peer (no eager connection).
pub struct PeerConnection {
    client: PeerClient,
    target: NodeId,
    addr: String,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, PeerNode, OpenRaftError<NodeId, E>>>;

impl PeerConnection {
    async fn rpc<Req, Resp, E>(&self, path: &str, req: Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply: Result<Resp, OpenRaftError<NodeId, E>> =
            self.client.call(self.target, &self.addr, path, req, option.hard_ttl()).await.map_err(|e| match e {
                CallError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                CallError::Network { .. } => RPCError::Network(NetworkError::new(&e)),
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.rpc("/raft/append", rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.rpc("/raft/snapshot", rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.rpc("/raft/vote", rpc, &option).await
    }
}
