//! Membership changes, served by the Raft leader and requested by any node.
//!
//! One change at a time (openraft refuses overlapping ones with `InProgress`, which we retry).
//! Never `SetNodes`: changing an address is remove + add (openraft's dynamic-membership docs).

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ChangeMembers;
use tokio::time::Instant;
use tracing::info;

use super::Inner;
use crate::error::RaftError;
use crate::network::ForwardError;
use crate::network::MembershipChange;
use crate::network::MembershipReply;
use crate::NodeId;

impl Inner {
    /// Sends a membership change to the leader (or serves it when we lead) until `timeout`.
    pub(crate) async fn request_membership(
        &self,
        change: MembershipChange,
        timeout: Duration,
    ) -> Result<String, RaftError> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("no raft leader known");
        while Instant::now() < deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let reply = match self.leader_hint() {
                Some((leader, _)) if leader == self.cfg.node_id => {
                    Some(self.serve_membership(leader, change.clone()).await)
                }
                Some((leader, node)) => {
                    let addr = self.addr_of(leader, &node);
                    let call =
                        self.client.call::<_, MembershipReply>(leader, &addr, "/raft/membership", &change, remaining);
                    match call.await {
                        Ok(reply) => Some(reply),
                        Err(e) => {
                            last_error = e.to_string();
                            None
                        }
                    }
                }
                // A guarded node has no leader yet; ask the configured peers in turn.
                None => self.membership_via_peers(&change, remaining, &mut last_error).await,
            };
            match reply {
                Some(Ok(answer)) => return Ok(answer),
                Some(Err(ForwardError::Refused(e))) => return Err(RaftError::Protocol(e)),
                Some(Err(e)) => last_error = e.to_string(),
                None => {}
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(RaftError::Unavailable(format!("membership change not confirmed within {timeout:?}: {last_error}")))
    }

    async fn membership_via_peers(
        &self,
        change: &MembershipChange,
        timeout: Duration,
        last_error: &mut String,
    ) -> Option<MembershipReply> {
        for peer in self.cfg.peers.iter().filter(|p| p.id != self.cfg.node_id) {
            let call =
                self.client.call::<_, MembershipReply>(peer.id, &peer.raft_addr, "/raft/membership", change, timeout);
            match call.await {
                Ok(Err(ForwardError::NotLeader { .. })) => continue,
                Ok(reply) => return Some(reply),
                Err(e) => *last_error = e.to_string(),
            }
        }
        None
    }

    /// `POST /raft/membership` on the leader.
    pub(crate) async fn serve_membership(&self, from: NodeId, change: MembershipChange) -> MembershipReply {
        if !self.is_leader_now() {
            return Err(ForwardError::NotLeader { leader: self.leader_hint() });
        }
        info!(from, ?change, "membership change requested");
        match change {
            MembershipChange::AddNode { id, node } => {
                self.raft
                    .add_learner(id, node, true)
                    .await
                    .map_err(|e| ForwardError::Unavailable(format!("add learner {id}: {e}")))?;
                self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await?;
                Ok("added".into())
            }
            MembershipChange::RemoveNode { id } => {
                if id == self.cfg.node_id {
                    return Err(ForwardError::Refused(
                        "the raft leader cannot remove itself; stop it first so another node leads".into(),
                    ));
                }
                self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
                Ok("removed".into())
            }
            MembershipChange::Forget { id } => {
                let matched = self.raft.metrics().borrow().replication.as_ref().and_then(|r| r.get(&id).cloned());
                match matched {
                    Some(Some(_)) => {
                        self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id]))).await?;
                        Ok("forgotten".into())
                    }
                    _ => Ok("unknown".into()),
                }
            }
        }
    }

    async fn change(&self, change: ChangeMembers<NodeId, crate::PeerNode>) -> Result<(), ForwardError> {
        match self.raft.change_membership(change, false).await {
            Ok(_) => Ok(()),
            Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(_))) => {
                Err(ForwardError::NotLeader { leader: self.leader_hint() })
            }
            Err(e) => Err(ForwardError::Unavailable(format!("change membership: {e}"))),
        }
    }
}
