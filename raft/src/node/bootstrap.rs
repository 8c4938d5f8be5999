//! Bootstrapping from the static peer list, and the rejoin of a node whose disk was wiped.
//!
//! Rules (openraft-notes §4.2/§4.4): `initialize` is called at most once in a cluster's life,
//! by the pristine node with the lowest id, only after every configured peer answered that it
//! is pristine too; a restart of an initialized node does nothing. A pristine node refuses Raft
//! RPCs ("guarded") until it knows whether it is new or wiped. A wiped node whose id the
//! leader has replicated to before is first forgotten by the leader (removed from the
//! membership), then added again as a learner and voter, so it never votes or acknowledges
//! entries under its old identity with an empty log (the leader would otherwise see the
//! follower's log go backwards, openraft #898).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::info;
use tracing::warn;

use super::Inner;
use crate::config::PeerConfig;
use crate::network::MembershipChange;
use crate::network::PeerStatus;
use crate::NodeId;
use crate::PeerNode;

/// Highest last log index of a cluster that holds nothing but its initial membership entry.
const FRESH_LOG_INDEX: u64 = 1;

/// What the probe of every other configured peer showed.
enum Probe {
    /// Some peer belongs to an initialized cluster.
    Initialized(PeerStatus),
    /// Every peer answered and none is initialized.
    AllPristine,
    /// Some peers did not answer.
    Incomplete(Vec<String>),
}

pub(super) async fn run(inner: Arc<Inner>, pristine: bool) {
    if !pristine {
        inner.set_guarded(false);
        return;
    }
    let cancel = inner.cancel_token();
    let mut waiting_logged = false;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        match probe_peers(&inner).await {
            Probe::Initialized(status) => {
                join_existing(&inner, status).await;
                return;
            }
            Probe::AllPristine => {
                let lowest = inner.config().peers.iter().map(|p| p.id).min();
                inner.set_guarded(false);
                if lowest == Some(inner.config().node_id) {
                    initialize(&inner).await;
                } else {
                    info!("every peer is pristine; waiting for the lowest node id to initialize the cluster");
                }
                return;
            }
            Probe::Incomplete(missing) => {
                if !waiting_logged {
                    info!(missing = ?missing, "pristine node waiting for every configured peer to answer before bootstrap");
                    waiting_logged = true;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn probe_peers(inner: &Arc<Inner>) -> Probe {
    let cfg = inner.config();
    let timeout = cfg.election_timeout_max;
    let mut probes = JoinSet::new();
    for peer in cfg.peers.iter().filter(|p| p.id != cfg.node_id).cloned() {
        let client = inner.client.clone();
        probes.spawn(async move {
            let res = client.call::<_, PeerStatus>(peer.id, &peer.raft_addr, "/raft/status", (), timeout).await;
            (peer, res)
        });
    }
    let mut missing = Vec::new();
    let mut initialized: Option<PeerStatus> = None;
    while let Some(joined) = probes.join_next().await {
        let Ok((peer, res)) = joined else { continue };
        match res {
            Ok(status) if status.initialized => {
                let better = initialized.as_ref().is_none_or(|s| status.term > s.term);
                if better {
                    initialized = Some(status);
                }
            }
            Ok(_) => {}
            Err(e) => missing.push(format!("{} ({e})", peer_label(&peer))),
        }
    }
    match initialized {
        Some(status) => Probe::Initialized(status),
        None if missing.is_empty() => Probe::AllPristine,
        None => Probe::Incomplete(missing),
    }
}

fn peer_label(peer: &PeerConfig) -> String {
    format!("{} id {} at {}", peer.name, peer.id, peer.raft_addr)
}

async fn initialize(inner: &Arc<Inner>) {
    let cfg = inner.config();
    let members: BTreeMap<NodeId, PeerNode> = cfg
        .peers
        .iter()
        .map(|p| {
            let node = PeerNode {
                name: p.name.clone(),
                raft_addr: if p.id == cfg.node_id { cfg.advertise.clone() } else { p.raft_addr.clone() },
                api_addr: p.api_addr.clone(),
            };
            (p.id, node)
        })
        .collect();
    match inner.raft().initialize(members).await {
        Ok(()) => info!(n_members = cfg.peers.len(), "initialized a new raft cluster from raft.peers"),
        // Another attempt already initialized this node with the same membership.
        Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(e))) => {
            info!(reason = %e, "raft cluster already initialized")
        }
        Err(e) => warn!(error = %e, "failed to initialize the raft cluster; will wait to be joined"),
    }
}

/// A pristine node next to an initialized cluster: a new member or a wiped one.
async fn join_existing(inner: &Arc<Inner>, status: PeerStatus) {
    let me = inner.config().node_id;
    if !status.members.contains_key(&me) {
        inner.set_guarded(false);
        info!(leader = ?status.leader, "cluster is initialized without this node; waiting to be added (raftgres members add)");
        return;
    }
    if status.leader.is_none() && status.last_log_index <= FRESH_LOG_INDEX {
        // The bootstrap race: the lowest id initialized moments ago and needs our votes. Its log
        // holds only the initial membership, so we cannot have acknowledged anything before.
        inner.set_guarded(false);
        info!("joined a freshly initialized cluster");
        return;
    }
    let timeout = inner.config().election_timeout_max * 10;
    // Ask the leader to forget any progress it recorded for our old log before we answer RPCs.
    let forgotten = loop {
        match inner.request_membership(MembershipChange::Forget { id: me }, timeout).await {
            Ok(answer) => break answer == "forgotten",
            Err(e) => {
                warn!(error = %e, "rejoin: leader did not answer the forget request; retrying");
                if inner.cancel_token().is_cancelled() {
                    return;
                }
            }
        }
    };
    inner.set_guarded(false);
    if !forgotten {
        info!("joined the initialized cluster as a new member");
        return;
    }
    info!("this node's raft data was wiped; the leader removed its old identity, asking to be added again");
    let node = inner.config().me();
    loop {
        match inner.request_membership(MembershipChange::AddNode { id: me, node: node.clone() }, timeout).await {
            Ok(_) => {
                info!("rejoined the cluster as a voter");
                return;
            }
            Err(e) => {
                warn!(error = %e, "rejoin: add request failed; retrying");
                if inner.cancel_token().is_cancelled() {
                    return;
                }
            }
        }
    }
}
