//! Client side of the peer transport: openraft's `RaftNetworkFactory` over one shared HTTP
//! client, plus the calls a node makes to its peers (forwarded writes, read index, status,
//! membership). Connection refusal maps to `Unreachable` so openraft backs off.

use std::sync::Arc;
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

use super::decode;
use super::encode;
use super::Wire;
use super::DECODE_LIMIT;
use super::PROTOCOL_VERSION;
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

/// Shared peer client: one `reqwest::Client` for every peer and RPC.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    cfg: Arc<RaftConfig>,
}

impl PeerClient {
    /// Builds the shared client.
    pub fn new(cfg: Arc<RaftConfig>) -> Result<Self, crate::RaftError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.election_timeout_min)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(|e| crate::RaftError::Protocol(format!("build peer HTTP client: {e}")))?;
        Ok(PeerClient { http, cfg })
    }

    /// The config this client speaks for.
    pub fn config(&self) -> &RaftConfig {
        &self.cfg
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
        let url = format!("http://{addr}{path}");
        let res = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
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
