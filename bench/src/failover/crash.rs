//! One crash run: with the clients writing steadily, kill -9 the primary's raftgres and then its
//! postmaster, watch the survivors until one is promoted and every client has written again, read
//! the lease expiry from the survivors' logs, then restart the killed node and wait until the
//! cluster is healthy (or say why it is not). Every wait is bounded.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::SystemTime;

use raftgres::demo::cluster::LocalCluster;
use raftgres::demo::procs;
use tokio::time::Instant;

use super::observer::start_writers;
use super::observer::stop_writers;
use super::observer::Observer;
use super::secs;
use super::REJOIN_TIMEOUT;
use super::SETTLE_TIMEOUT;
use super::STEADY_TIMEOUT;
use crate::cluster;
use crate::nodelog;
use crate::writer;
use crate::writer::Route;

/// Bound for a killed postmaster to be gone before its node is restarted.
const POSTMASTER_GONE_TIMEOUT: Duration = Duration::from_secs(10);

/// What one crash run measured; every time is from the kill.
pub struct CrashRun {
    killed: String,
    promoted: Option<String>,
    /// One per route, in route order.
    pub gaps: Vec<Option<Duration>>,
    /// The Raft leader expired the killed node's session.
    pub lease_expiry: Option<Duration>,
    /// Another node answered 200 on `GET /leader`.
    pub holds_lease: Option<Duration>,
    /// Another node answered `pg_is_in_recovery() = false`.
    pub promotion: Option<Duration>,
    two_writable: Option<String>,
    /// Restart of the killed node → healthy cluster, or why it did not heal.
    pub healed: Result<Duration, String>,
}

impl CrashRun {
    /// One line for the notes.
    pub fn describe(&self, routes: &[Route]) -> String {
        let promoted = self.promoted.as_deref().unwrap_or("none within the bound");
        let mut parts = vec![format!("killed {}, promoted {promoted}", self.killed)];
        for (route, gap) in routes.iter().zip(&self.gaps) {
            parts.push(format!("gap {} {}", route.label(), secs(*gap)));
        }
        parts.push(format!("lease expiry {}", secs(self.lease_expiry)));
        parts.push(format!("holds the lease {}", secs(self.holds_lease)));
        parts.push(format!("promotion {}", secs(self.promotion)));
        if let Some(two) = &self.two_writable {
            parts.push(two.clone());
        }
        parts.push(match &self.healed {
            Ok(took) => format!("old primary healthy again {:.2} s after its restart", took.as_secs_f64()),
            Err(why) => format!("THE CLUSTER DID NOT HEAL: {why}"),
        });
        parts.join(", ")
    }
}

/// One crash; fails only when nothing could be measured (clients not steady, kill failed).
pub async fn crash_run(c: &LocalCluster, routes: &[Route]) -> anyhow::Result<CrashRun> {
    let primary_idx = cluster::wait_healthy(c, Instant::now() + cluster::HEALTHY_TIMEOUT).await?;
    let killed = c.node(primary_idx).name.clone();
    let survivors: Vec<usize> = (1..=c.n_nodes()).filter(|idx| *idx != primary_idx).collect();
    let mut observer = Observer::new(c, &survivors).await?;
    let writers = start_writers(routes, c.password())?;
    let measured = async {
        for writer in &writers {
            writer.wait_steady(STEADY_TIMEOUT).await?;
        }
        let kill_wall = SystemTime::now();
        let kill_at = Instant::now();
        c.kill_node(primary_idx).await?;
        let postmaster = c.kill_postmaster(primary_idx)?;
        observer.watch(&writers, kill_at, Instant::now() + SETTLE_TIMEOUT).await;
        anyhow::Ok((kill_wall, kill_at, postmaster))
    }
    .await;
    let successes = stop_writers(writers).await?;
    let (kill_wall, kill_at, postmaster) = measured?;

    let logs: Vec<PathBuf> = survivors.iter().map(|idx| c.node(*idx).log_path()).collect();
    let log_refs: Vec<&Path> = logs.iter().map(PathBuf::as_path).collect();
    let lease_expiry =
        nodelog::first_expiry(&log_refs, &killed, kill_wall).and_then(|at| at.duration_since(kill_wall).ok());
    // Up to the first write after the promotion was seen: a write in flight at the kill may still be
    // acknowledged by the dying primary just after `kill_at`, and must not end the gap.
    let promoted_at = observer.promoted.map(|(at, _)| at);
    let gaps = successes.iter().map(|acks| promoted_at.and_then(|at| writer::write_gap(acks, kill_at, at))).collect();
    let two_writable = observer.two_writable.as_ref().map(|(at, idxs)| {
        let names: Vec<&str> = idxs.iter().map(|idx| c.node(*idx).name.as_str()).collect();
        let after = at.duration_since(kill_at).as_secs_f64();
        format!("TWO WRITABLE PRIMARIES ({}) in one probe round {after:.2} s after the kill", names.join(", "))
    });

    procs::wait_gone(postmaster, POSTMASTER_GONE_TIMEOUT).await;
    let restarted = Instant::now();
    let healed = match c.start_node(primary_idx) {
        Ok(_) => match cluster::wait_healthy(c, Instant::now() + REJOIN_TIMEOUT).await {
            Ok(_) => Ok(restarted.elapsed()),
            Err(e) => Err(format!("{e:#}")),
        },
        Err(e) => Err(format!("restart {killed}: {e:#}")),
    };
    Ok(CrashRun {
        killed,
        promoted: observer.promoted.map(|(_, idx)| c.node(idx).name.clone()),
        gaps,
        lease_expiry,
        holds_lease: observer.holds_lease.map(|at| at.duration_since(kill_at)),
        promotion: promoted_at.map(|at| at.duration_since(kill_at)),
        two_writable,
        healed,
    })
}
