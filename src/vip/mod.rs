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
    loop {
        let cmd = tokio::select! {
            cmd = queue.recv() => match cmd {
                Some(cmd) => Some(cmd),
                None => return,
            },
            _ = tokio::time::sleep_until(next) => None,
        };
        if let Some(Cmd::Want { hold, done }) = cmd {
            let changed = wanted != Some(hold);
            wanted = Some(hold);
            waiting.extend(done);
            // The same wish again (every HA cycle): nothing to do until the next re-check or the lease's end.
            if !changed && waiting.is_empty() {
                continue;
            }
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
                    link.announce(config.arping_count).await;
                }
                backoff = FIRST_BACKOFF;
                next = match lease.filter(|_| hold) {
                    // Woken at the lease's end: a renewal moved it, or the address goes.
                    Some(end) => end.min(now + RECHECK),
                    None => now + RECHECK,
                };
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "failed to {} the floating address", if hold { "add" } else { "remove" });
                next = now + backoff;
                if let Some(end) = lease.filter(|_| hold) {
                    next = next.min(end);
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
