//! The floating IP (`vip` section): the address clients reach the primary at, held by the leader-key holder
//! while PostgreSQL runs as the primary and its leader lease is valid — what vip-manager does for Patroni by
//! watching etcd, without a second process or a store to watch.
//!
//! Invariant: a node holds the address only while its leader lease is valid (the lease argument of
//! `raft/src/lease.rs`: no other node can hold the key, and so promote and add the address, before this lease
//! ends). The task below re-reads the lease before every add and sleeps until the lease's end, where it removes
//! the address unless a renewal moved the end; the fence guard (`postgres::guard`) removes it at the same instant
//! when this process is killed or frozen. The HA loop's hooks only make the change earlier: added right after
//! `pg_promote`, removed before a demotion stops PostgreSQL.
//!
//! Failure scenario it closes: without the lease check, a raftgres frozen while it held the address (SIGSTOP, a
//! stalled VM) could, on waking, re-add it from an old "wanted" before its fence noticed the lapsed lease, next
//! to the new primary's copy.
//!
//! This module owns adding, removing and announcing the address (`link`: netlink and a raw packet socket; root or
//! CAP_NET_ADMIN + CAP_NET_RAW). It must not decide who should hold it beyond the lease check: the HA loop says
//! whether this node wants it.

pub mod arp;
pub mod link;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::info;
use tracing::warn;
use tracing::Instrument;

use crate::config::VipConfig;

/// Between two gratuitous ARP announcements after the first.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(200);
/// How often the task checks that the interface still has (or lacks) the address when nothing changed.
const RECHECK: Duration = Duration::from_secs(10);
/// After a failed add or remove, the first pause before the next try; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long [`Vip::release`] waits for the removal.
const RELEASE_WAIT: Duration = Duration::from_secs(1);

/// What goes wrong adding or removing the address.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// The interface does not exist in this network namespace.
    #[error("network interface {0:?} does not exist here (vip.interface)")]
    NoInterface(String),
    /// The interface has no MAC address to announce from.
    #[error("network interface {0:?} has no hardware address to announce the floating address from")]
    NoHardwareAddress(String),
    /// A netlink request failed.
    #[error("{what} {address} on {interface}: {cause}")]
    Netlink { what: &'static str, address: String, interface: String, cause: std::io::Error },
    /// The raw packet socket for the announcement failed.
    #[error("announce {address} on {interface} (gratuitous ARP): {cause}")]
    Announce { address: String, interface: String, cause: std::io::Error },
}

/// Whether this node's leader lease is valid, and until when (the fence's view: `Dcs::lease`).
pub type LeaseEnd = Arc<dyn Fn() -> Option<Instant> + Send + Sync>;

enum Cmd {
    /// The HA loop's wish; `done` is told once the interface matches it (or the attempt failed).
    Want { hold: bool, done: Option<oneshot::Sender<()>> },
}

/// The handle the HA loop, its long actions and the fence use; [`Vip::disabled`] without a `vip` section.
#[derive(Clone, Default)]
pub struct Vip {
    cmds: Option<mpsc::UnboundedSender<Cmd>>,
}

impl std::fmt::Debug for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vip({})", if self.cmds.is_some() { "enabled" } else { "disabled" })
    }
}

impl Vip {
    /// Holds nothing.
    pub fn disabled() -> Self {
        Vip { cmds: None }
    }

    /// The task for `config` (`None`: disabled), spawned on the current runtime. Until the HA loop first says what
    /// it wants, the task leaves the interface as it found it (a restarted primary's raftgres keeps the address
    /// its PostgreSQL is still reached at).
    pub fn start(config: Option<&VipConfig>, lease_end: LeaseEnd) -> Self {
        let Some(config) = config else { return Vip::disabled() };
        let (cmds, queue) = mpsc::unbounded_channel();
        let task = run(queue, config.clone(), lease_end);
        tokio::spawn(task.instrument(tracing::info_span!("vip", address = %config.address)));
        Vip { cmds: Some(cmds) }
    }

    /// The HA loop's wish after each cycle (held while the key is ours and PostgreSQL runs as the primary); also
    /// called right after a promotion. Not waited for.
    pub fn want(&self, hold: bool) {
        if let Some(cmds) = &self.cmds {
            let _ = cmds.send(Cmd::Want { hold, done: None });
        }
    }

    /// Removes the address before PostgreSQL stops accepting writes: waits for the removal, at most a second.
    pub async fn release(&self) {
        let Some(cmds) = &self.cmds else { return };
        let (done, removed) = oneshot::channel();
        if cmds.send(Cmd::Want { hold: false, done: Some(done) }).is_ok() {
            let _ = tokio::time::timeout(RELEASE_WAIT, removed).await;
        }
    }
}

/// The task: applies the latest wish, never holds the address past the lease, re-checks the interface now and
/// then, retries failures with a growing pause.
async fn run(mut queue: mpsc::UnboundedReceiver<Cmd>, config: VipConfig, lease_end: LeaseEnd) {
    let mut wanted: Option<bool> = None;
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut backoff = FIRST_BACKOFF;
    let mut next = Instant::now() + RECHECK;
    let mut link = link::Link::new(&config);
    // What the interface was last made to match, and when.
    let mut applied: Option<(bool, Instant)> = None;
    let mut announcing: Option<tokio::task::JoinHandle<()>> = None;
    // The last attempt that failed and when it may be tried again (the same wish is not retried before).
    let mut failed: Option<(bool, Instant)> = None;
    loop {
        let cmd = tokio::select! {
            cmd = queue.recv() => match cmd {
                Some(cmd) => Some(cmd),
                None => return,
            },
            _ = tokio::time::sleep_until(next) => None,
        };
        if let Some(Cmd::Want { hold, done }) = cmd {
            wanted = Some(hold);
            waiting.extend(done);
        }
        let now = Instant::now();
        let lease = lease_end().filter(|end| *end > now);
        let hold = match wanted {
            None => {
                next = now + RECHECK;
                continue;
            }
            Some(hold) => hold && lease.is_some(),
        };
        // Nothing changed since the interface was last made to match (a lease-end wake that found the lease
        // renewed, the same wish again): no netlink request until the next re-check.
        if let Some((applied, at)) = applied {
            if applied == hold && waiting.is_empty() && now < at + RECHECK {
                next = (at + RECHECK).min(lease.filter(|_| hold).unwrap_or(at + RECHECK));
                continue;
            }
        }
        if let Some((failed_hold, retry_at)) = failed {
            if failed_hold == hold && waiting.is_empty() && now < retry_at {
                next = retry_at;
                continue;
            }
        }
        if !hold {
            // Announcing an address that goes makes no sense, and must not delay its removal.
            if let Some(announcing) = announcing.take() {
                announcing.abort();
            }
        }
        let result = if hold { link.hold().await } else { link.release().await };
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
        match result {
            Ok(changed) => {
                if changed {
                    info!(interface = %config.interface, "{} the floating address", if hold { "added" } else { "removed" });
                }
                if changed && hold {
                    let link = link::Link::new(&config);
                    let count = config.arping_count;
                    announcing = Some(tokio::spawn(async move { link.announce(count).await }.in_current_span()));
                }
                applied = Some((hold, now));
                failed = None;
                backoff = FIRST_BACKOFF;
                next = match lease.filter(|_| hold) {
                    // Woken at the lease's end: a renewal moved it, or the address goes.
                    Some(end) => end.min(now + RECHECK),
                    None => now + RECHECK,
                };
            }
            Err(e) => {
                applied = None;
                warn!(error = %e, retry_in = ?backoff, "failed to {} the floating address", if hold { "add" } else { "remove" });
                next = now + backoff;
                failed = Some((hold, next));
                if let Some(end) = lease.filter(|_| hold) {
                    next = next.min(end);
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
