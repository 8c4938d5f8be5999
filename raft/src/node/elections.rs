//! A restarted voter holds its elections until it has heard from the leader (openraft 0.9 has no PreVote).
//!
//! openraft starts a restarted follower's election timer at the moment it loads its state: a follower that
//! hears nothing for `election_timeout_max` (its leader lease) plus a randomized election timeout campaigns
//! with the next term. The leader retries a peer that refused connections only every 500 ms (openraft's
//! default backoff for `Unreachable`), and a loaded host can take longer than that to start the process and
//! bind the peer listener; a restarted replica then campaigns although the leader is alive. Its vote request
//! is refused (the other voters' leader lease), but the next heartbeat the leader sends it meets the higher
//! term, the leader steps down, and the cluster is without a leader for a round of elections, which the
//! primary's lease has to ride out: on a loaded host it did not, and restarting a replica cost the primary
//! its lease (`ERROR leader lease expired while running as primary` in a CI run).
//!
//! So a node that restarts with state starts openraft with elections off and turns them on when the first
//! append from a leader was accepted (from then on openraft's own timer is right: each append resets it), or
//! after [`grace`] without one, when there may well be no leader (every node restarted at once) and this node
//! must be able to campaign. A handover's explicit `trigger().elect()` is not held back. A pristine node and
//! the only voter of a cluster never hold.

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::Inner;
use crate::config::RaftConfig;

/// How long a restarted voter waits for a leader before it may campaign: four times the longest election
/// timeout (2.4 s at the defaults). The leader retries an unreachable peer every 500 ms and sends a heartbeat
/// every `heartbeat_interval`, so a live leader is heard well within it; a cluster that restarted as a whole
/// elects its leader that much later.
pub fn grace(cfg: &RaftConfig) -> Duration {
    cfg.election_timeout_max.saturating_mul(4)
}

/// Turns openraft's elections on once a leader's append was accepted here, or after [`grace`].
pub(crate) async fn hold_until_leader_heard(inner: Arc<Inner>) {
    let voters = inner.raft().metrics().borrow().membership_config.membership().voter_ids().count();
    let grace = grace(inner.config());
    if voters > 1 {
        let cancel = inner.cancel_token();
        tokio::select! {
            () = inner.heard_leader.notified() => info!("heard from the raft leader since the restart; elections on"),
            () = tokio::time::sleep(grace) => {
                info!(grace_ms = grace.as_millis() as u64, "no raft leader heard since the restart; elections on");
            }
            () = cancel.cancelled() => return,
        }
    }
    inner.raft().runtime_config().elect(true);
}
