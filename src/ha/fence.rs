//! The fence: a primary whose leader lease ran out stops at once, whether or not an HA cycle
//! is running (a cycle may be stuck on a slow store write).
//!
//! The lease is valid until the send time of its last successful renewal plus `ttl` minus a
//! margin, on this node's monotonic clock; no other node can acquire the key before the Raft
//! leader's keeper expires it, which happens only after `ttl` from when it *applied* that
//! renewal. So stopping at the lease end stops before anyone else can promote.
//! The same deadline goes to the guard file, read by `raftgres guard` (`postgres::guard`), a
//! separate process that enforces it when this process is killed or frozen.
//! Failure scenario this prevents: (1) the primary's store writes hang (partitioned from the
//! Raft majority); (2) the HA loop sits in a `retry_timeout` write; (3) the majority expires the
//! session and promotes a replica; without the fence the old primary would still accept writes.
//! The fence also feeds the host watchdog (`crate::watchdog`), the last resort when this whole host
//! stops running, and disarms it once it stopped PostgreSQL at the lease's end.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::error;

use std::path::PathBuf;

use tracing::warn;

use crate::dcs::Dcs;
use crate::postgres::guard;
use crate::postgres::guard::GuardLine;
use crate::postgres::supervisor::StopMode;
use crate::postgres::supervisor::Supervisor;
use crate::watchdog::Watchdog;

/// How often the fence looks when nothing is due.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// The pause before the fence tries again a stop that failed at the lease's end; it doubles up to the next one.
const FIRST_STOP_RETRY: Duration = Duration::from_secs(1);
const MAX_STOP_RETRY: Duration = Duration::from_secs(30);

/// What the fence guard file should say now.
fn guard_line(lease_until: Option<Instant>, primary: bool, pg: &Supervisor) -> GuardLine {
    let owner = std::process::id();
    // UNSAFE CHAOS BREAK (test only, `raftgres chaos --break no-demote`): the guard never fences.
    let primary = primary && !crate::chaos::unsafe_break_no_demote();
    let deadline = lease_until.filter(|_| primary).zip(pg.postmaster_id()).map(|(until, id)| {
        let remaining = until.saturating_duration_since(Instant::now());
        (guard::monotonic_ns().saturating_add(remaining.as_nanos() as u64), id)
    });
    GuardLine { owner, primary: deadline }
}

/// What the fence watches and acts on.
pub struct Fence {
    /// The store, for this node's lease.
    pub dcs: Dcs,
    /// PostgreSQL, to stop.
    pub pg: Supervisor,
    /// PostgreSQL runs as primary (set by the HA loop's observation); the fence also fences a server the supervisor
    /// started or is promoting as a primary (`Supervisor::may_accept_writes`).
    pub is_primary: Arc<AtomicBool>,
    /// The guard process's file, kept in step with the lease.
    pub guard_file: Option<PathBuf>,
    /// The host watchdog, fed here while the lease allows it (`watchdog::policy::may_feed`).
    pub watchdog: Watchdog,
    /// HAProxy is told (not waited for) as the fence stops a primary, with this member's name.
    pub haproxy: (crate::haproxy::Pusher, String),
    /// The floating address, removed as the fence stops a primary (its own task also drops it at the lease's end).
    pub vip: crate::vip::Vip,
}

/// Runs until `shutdown`, keeping the guard file in step with the lease and the watchdog fed.
pub async fn run(fence: Fence, shutdown: CancellationToken) {
    let Fence { dcs, pg, is_primary, guard_file, watchdog, haproxy, vip } = fence;
    let mut written: Option<(Option<Instant>, bool)> = None;
    // After a failed stop at the lease's end: when to try again, and the pause that led there. Meanwhile the guard
    // file keeps the lapsed deadline, so the guard stops the postmaster at its next poll.
    let mut stop_retry: Option<(Instant, Duration)> = None;
    loop {
        let lease = dcs.lease();
        let now = Instant::now();
        // Once the postmaster is gone (the guard stopped it), a later primary is stopped here at once again.
        if !pg.is_running() {
            stop_retry = None;
        }
        // Fed at every poll, each keepalive only while it keeps the watchdog from outliving the key.
        watchdog.feed(&lease, now);
        // PostgreSQL may take writes: the HA loop saw it run as a primary, or the supervisor started or is promoting
        // it as one (the loop's next observation may be seconds away on a loaded host).
        // A lapsed primary the fence failed to stop stays one for the guard, which stops it at the lease's end.
        let primary = is_primary.load(Ordering::SeqCst) || pg.may_accept_writes() || stop_retry.is_some();
        if let Some(path) = &guard_file {
            let wanted = (lease.leader_valid_until, primary);
            if written != Some(wanted) {
                let line = guard_line(wanted.0, wanted.1, &pg);
                match guard::write(path, &line) {
                    Ok(()) => written = Some(wanted),
                    Err(e) => warn!(error = %e, path = %path.display(), "failed to update the fence guard file"),
                }
            }
        }
        let wake = match lease.leader_valid_until {
            Some(until) if now >= until => {
                // UNSAFE CHAOS BREAK (test only): `&& !unsafe_break_no_demote()` keeps a lapsed primary up.
                let due = stop_retry.is_none_or(|(at, _)| now >= at);
                if primary && pg.is_running() && due && !crate::chaos::unsafe_break_no_demote() {
                    if stop_retry.is_none() {
                        error!("leader lease expired while running as primary; stopping postgres immediately");
                    }
                    haproxy.0.demoting_now(&haproxy.1);
                    vip.want(false);
                    match pg.stop(StopMode::Immediate).await {
                        Ok(()) => {
                            stop_retry = None;
                            pg.mark_demoted();
                            watchdog.disarm("the lease ran out and PostgreSQL was stopped");
                        }
                        // The watchdog stays armed and unfed: it resets the host, the last resort. The guard file
                        // keeps the lapsed deadline, so the guard kills the postmaster at its next poll.
                        Err(e) => {
                            let pause =
                                stop_retry.map_or(FIRST_STOP_RETRY, |(_, pause)| (pause * 2).min(MAX_STOP_RETRY));
                            stop_retry = Some((Instant::now() + pause, pause));
                            error!(
                                error = %e,
                                retry_in = ?pause,
                                "failed to stop postgres at lease expiry; the fence guard is left to stop it, and the \
                                 fence tries again"
                            )
                        }
                    }
                    is_primary.store(false, Ordering::SeqCst);
                } else if !pg.is_running() {
                    watchdog.disarm("the lease ran out with PostgreSQL stopped");
                }
                now + IDLE_POLL
            }
            Some(until) => until.min(now + IDLE_POLL),
            None => now + IDLE_POLL,
        };
        tokio::select! {
            _ = shutdown.cancelled() => {
                // A primary the HA loop could not stop (it keeps `is_primary` set; paused, it clears it) stays
                // guarded: the file keeps the lease's deadline, and the guard stops the postmaster at it.
                if pg.is_running() && (is_primary.load(Ordering::SeqCst) || stop_retry.is_some()) {
                    warn!("PostgreSQL still runs as a primary; leaving the fence guard armed until the lease's end");
                    return;
                }
                // PostgreSQL is stopped (or deliberately left running while paused): nothing to guard.
                if let Some(path) = &guard_file {
                    let line = GuardLine { owner: std::process::id(), primary: None };
                    if let Err(e) = guard::write(path, &line) {
                        warn!(error = %e, "failed to clear the fence guard file");
                    }
                }
                return;
            }
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
}
