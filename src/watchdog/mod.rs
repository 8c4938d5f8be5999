//! The Linux watchdog (the `watchdog` section; Patroni's `watchdog.mode` off / automatic / required): armed when
//! this node takes the leader key, fed while its lease holds, and stopped with the magic close whenever it stops
//! leading cleanly. [`Watchdog`] is the one handle, shared by the HA loop, its long actions and the fence.
//!
//! Why: the fence and the guard process stop PostgreSQL when the lease runs out, but only while this host's
//! userland runs. Failure scenario: (1) the primary's host freezes (a hung kernel, a swap storm); (2) raftgres,
//! its fence and its guard stop with it; (3) the lease expires and a replica promotes; (4) the host thaws and the
//! old primary serves writes before its fence runs. With a watchdog armed, (4) never happens: nothing fed it
//! after the last renewal's window, so it reset the host no later than the key could expire.
//!
//! Who does what:
//! - the executor arms it right after a successful write of the leader key, before a promotion or a start as
//!   primary runs on that key ([`Watchdog::lead`]); in `required` mode a node that cannot arm it does not
//!   promote, and one that knows beforehand ([`Watchdog::check`], the observation) does not race;
//! - the fence feeds it every poll ([`Watchdog::feed`]) while `policy::may_feed` holds: only within
//!   `safety_margin` of the send of the last successful renewal, so it fires at the latest when the key can
//!   expire, and (strict leases) after the fence had its chance to stop PostgreSQL at the lease's end;
//! - every way out of leadership disarms it ([`Watchdog::disarm`]) once PostgreSQL no longer runs as a primary:
//!   demotion, release, graceful switchover, a failed `pre_promote`, the fence, shutdown, maintenance mode.
//!
//! The device I/O is in [`device`] (the workspace's only `unsafe`: three ioctls); the rules are in the pure
//! [`policy`]. Locking: one `std::sync::Mutex`, held only for single non-blocking syscalls (the device is opened
//! `O_NONBLOCK`).

pub mod device;
pub mod policy;

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::PoisonError;
use std::time::Duration;

use raft::lease::HolderLease;
use tokio::time::Instant;
use tracing::error;
use tracing::info;
use tracing::warn;

use self::device::Device;
use self::device::WatchdogError;
use self::policy::DeviceProbe;
use self::policy::TimeoutCheck;
use self::policy::Verdict;
use crate::config::WatchdogConfig;
use crate::config::WatchdogMode;
use crate::postgres::supervisor::error_chain;

/// Why [`Watchdog::lead`] left the watchdog unarmed in `required` mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotArmed {
    /// It cannot be armed (logged); this node must give the key up.
    Failed(String),
    /// The key write was answered too late for a safe first keepalive (`policy::may_feed`): try at the next
    /// renewal.
    NotNow,
}

/// The watchdog of this node; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Watchdog {
    config: Arc<WatchdogConfig>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    armed: Option<Armed>,
    /// An arming failed: not tried again in this process (see `policy::Facts::failed`).
    failed: Option<String>,
    /// `automatic`: said once that this node leads without a watchdog.
    told_unavailable: bool,
    /// The `ttl` of the last cycle, for the fence's keepalives.
    ttl: Option<Duration>,
    /// The last verdict, logged when it changes.
    last_verdict: Option<Verdict>,
}

/// The open device and the timeout it runs with.
struct Armed {
    device: Device,
    /// The timeout asked for; keepalives follow `policy::may_feed` for it.
    timeout: Duration,
    /// The file takes timeouts (a watchdog device, not a stand-in).
    takes_timeout: bool,
    /// A keepalive failed since arming (logged once).
    keepalive_failed: bool,
    /// A timeout the device refused when `ttl` changed (not asked for again).
    refused_timeout: Option<Duration>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("mode", &self.config.mode)
            .field("device", &self.config.device)
            .field("armed", &self.is_armed())
            .finish()
    }
}

impl Watchdog {
    /// The watchdog `config` describes; nothing is opened yet.
    pub fn new(config: WatchdogConfig) -> Watchdog {
        Watchdog { config: Arc::new(config), state: Arc::new(Mutex::new(State::default())) }
    }

    /// The device is open now.
    pub fn is_armed(&self) -> bool {
        self.lock().armed.is_some()
    }

    /// The observation: may this node lead as far as the watchdog goes, with `ttl` in force? Looks at the
    /// device file (never opening it) in `required` mode while unarmed; logs when the verdict changes.
    pub fn check(&self, ttl: Duration) -> Verdict {
        let timeout = self.config.timeout(ttl);
        let mut state = self.lock();
        state.ttl = Some(ttl);
        let device = match (&state.armed, self.config.mode) {
            (None, WatchdogMode::Required) => probe_device(&self.config.device),
            _ => DeviceProbe::Writable,
        };
        let facts = policy::Facts {
            mode: self.config.mode,
            timeout: &timeout,
            armed: state.armed.is_some(),
            failed: state.failed.as_deref(),
            device: &device,
        };
        let verdict = policy::verdict(&facts);
        if state.last_verdict.as_ref() != Some(&verdict) {
            match &verdict {
                Verdict::Unusable(why) => error!(
                    device = %self.config.device.display(),
                    "watchdog.mode is required but the watchdog is not usable: {why}; this node does not become the leader"
                ),
                Verdict::Usable if state.last_verdict.is_some() => info!("the required watchdog is usable again"),
                _ => {}
            }
            state.last_verdict = Some(verdict.clone());
        }
        verdict
    }

    /// Called right after this node wrote the leader key (acquired, took over or renewed it), before anything
    /// runs on that key: arms the watchdog the first time (open, timeout `ttl - safety_margin`) and feeds it.
    ///
    /// `Err` only in `required` mode; in `automatic` mode a watchdog that cannot be armed is reported once and
    /// this node leads without one.
    pub fn lead(&self, ttl: Duration, lease: &HolderLease, now: Instant) -> Result<(), NotArmed> {
        if self.config.mode == WatchdogMode::Off {
            return Ok(());
        }
        let required = self.config.mode == WatchdogMode::Required;
        let mut state = self.lock();
        state.ttl = Some(ttl);
        if state.armed.is_some() {
            self.feed_locked(&mut state, lease, now);
            return Ok(());
        }
        if let Some(why) = &state.failed {
            return if required { Err(NotArmed::Failed(why.clone())) } else { Ok(()) };
        }
        let timeout = match self.config.timeout(ttl) {
            Ok(timeout) => timeout,
            Err(why) => return self.unavailable(&mut state, why, false),
        };
        if !policy::may_feed(now, timeout, lease.leader_expiry_floor) {
            return if required { Err(NotArmed::NotNow) } else { Ok(()) };
        }
        match self.arm(timeout) {
            Ok(mut armed) => {
                if let Err(e) = armed.device.keepalive() {
                    let why = error_chain(&e);
                    close(armed.device, "its first keepalive failed");
                    return self.unavailable(&mut state, why, true);
                }
                state.armed = Some(armed);
                Ok(())
            }
            Err(why) => self.unavailable(&mut state, why, true),
        }
    }

    /// The fence's keepalive, at every poll: writes one only while it is safe (`policy::may_feed` for the
    /// lease), and first moves the device to a timeout the current `ttl` calls for.
    pub fn feed(&self, lease: &HolderLease, now: Instant) {
        let mut state = self.lock();
        self.feed_locked(&mut state, lease, now);
    }

    /// Stops the watchdog with the magic close, when armed; `why` goes to the log.
    pub fn disarm(&self, why: &str) {
        let armed = self.lock().armed.take();
        if let Some(armed) = armed {
            close(armed.device, why);
        }
    }

    fn feed_locked(&self, state: &mut State, lease: &HolderLease, now: Instant) {
        let wanted = state.ttl.and_then(|ttl| self.config.timeout(ttl).ok());
        let Some(armed) = state.armed.as_mut() else { return };
        let floor = lease.leader_expiry_floor;
        // Setting a timeout restarts the timer: it is a keepalive, so it follows the same rule (until it may, the
        // old timeout is kept and fed by its own rule).
        let change = wanted
            .filter(|wanted| *wanted != armed.timeout && armed.takes_timeout && armed.refused_timeout != Some(*wanted));
        if let Some(wanted) = change.filter(|wanted| policy::may_feed(now, *wanted, floor)) {
            match armed.device.set_timeout(wanted) {
                Ok(taken) => {
                    info!(timeout_s = wanted.as_secs(), taken_s = taken.as_secs(), "changed the watchdog timeout");
                    armed.timeout = wanted;
                }
                Err(e) => {
                    armed.refused_timeout = Some(wanted);
                    warn!(
                        "failed to change the watchdog timeout to {}s: {}; keeping the old one",
                        wanted.as_secs(),
                        error_chain(&e)
                    );
                }
            }
        }
        if !policy::may_feed(now, armed.timeout, floor) {
            return;
        }
        match armed.device.keepalive() {
            Ok(()) => armed.keepalive_failed = false,
            Err(e) if !armed.keepalive_failed => {
                armed.keepalive_failed = true;
                error!(
                    "failed to keep the watchdog alive: {}; the host resets unless a keepalive succeeds",
                    error_chain(&e)
                );
            }
            Err(_) => {}
        }
    }

    /// Opens the device and sets `timeout`; the device is closed again (magic close) on every failure.
    fn arm(&self, timeout: Duration) -> Result<Armed, String> {
        let device = Device::open(&self.config.device).map_err(|e| error_chain(&e))?;
        let (identity, takes_timeout, taken) = match set_up(&device, timeout) {
            Ok(set) => set,
            Err(e) => {
                let why = error_chain(&e);
                close(device, "it could not be set up");
                return Err(why);
            }
        };
        match policy::judge_timeout(timeout, taken) {
            TimeoutCheck::Safe => {}
            TimeoutCheck::Unverified => warn!(
                device = %self.config.device.display(),
                "the watchdog device takes no watchdog ioctls (a stand-in for tests?): no timeout set, keepalives are plain writes"
            ),
            TimeoutCheck::TooLong(taken) if self.config.mode == WatchdogMode::Required => {
                close(device, "its timeout is unsafe");
                return Err(format!(
                    "the device runs with a {}s timeout instead of {}s, so it could fire after the leader key expired",
                    taken.as_secs(),
                    timeout.as_secs()
                ));
            }
            TimeoutCheck::TooLong(taken) => warn!(
                taken_s = taken.as_secs(),
                wanted_s = timeout.as_secs(),
                "the watchdog runs with a longer timeout than asked: it does not ensure the host resets before the leader key expires"
            ),
        }
        info!(device = %self.config.device.display(), identity, timeout_s = timeout.as_secs(), "armed the watchdog");
        Ok(Armed { device, timeout, takes_timeout, keepalive_failed: false, refused_timeout: None })
    }

    /// A watchdog this node cannot use: `required` refuses to lead (logged as an ERROR: a human must act), and
    /// remembers it when `sticky`; `automatic` says once that it leads without one.
    fn unavailable(&self, state: &mut State, why: String, sticky: bool) -> Result<(), NotArmed> {
        if self.config.mode == WatchdogMode::Required {
            error!(device = %self.config.device.display(), "could not arm the required watchdog: {why}; not leading");
            if sticky {
                state.failed = Some(why.clone());
            }
            return Err(NotArmed::Failed(why));
        }
        if sticky {
            state.failed = Some(why.clone());
        }
        if !state.told_unavailable {
            state.told_unavailable = true;
            let missing = !self.config.device.exists();
            if missing {
                info!(device = %self.config.device.display(), "no watchdog device; leading without one (watchdog.mode automatic)");
            } else {
                warn!(device = %self.config.device.display(), "cannot use the watchdog: {why}; leading without one (watchdog.mode automatic)");
            }
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent; a panic elsewhere must not stop the keepalives.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The driver's identity, whether it takes a timeout, and the timeout it took (`None`: it takes none).
fn set_up(device: &Device, timeout: Duration) -> Result<(String, bool, Option<Duration>), WatchdogError> {
    let support = match device.support() {
        Ok(support) => support,
        Err(WatchdogError::NotAWatchdog { .. }) => return Ok(("not a watchdog device".into(), false, None)),
        Err(e) => return Err(e),
    };
    if !support.magic_close {
        warn!(
            identity = support.identity,
            "this watchdog cannot be stopped once armed: the host resets some time after this node stops leading"
        );
    }
    // A driver without WDIOF_SETTIMEOUT keeps its own timeout, which is then judged as it is.
    let taken = match support.settable_timeout {
        true => device.set_timeout(timeout)?,
        false => device.timeout()?,
    };
    Ok((support.identity, true, Some(taken)))
}

/// The magic close, logged.
fn close(device: Device, why: &str) {
    let path = device.path().display().to_string();
    match device.magic_close() {
        Ok(()) => info!(device = path, "disarmed the watchdog: {why}"),
        Err(e) => {
            error!(device = path, "failed to disarm the watchdog ({why}): {}; the host may reset", error_chain(&e))
        }
    }
}

/// Looks at the device file without opening it: it must exist and be writable by this user.
pub fn probe_device(path: &Path) -> DeviceProbe {
    if let Err(e) = std::fs::metadata(path) {
        return DeviceProbe::Unusable(format!("{} cannot be read ({e})", path.display()));
    }
    match nix::unistd::access(path, nix::unistd::AccessFlags::W_OK) {
        Ok(()) => DeviceProbe::Writable,
        Err(e) => DeviceProbe::Unusable(format!("{} is not writable by this user ({e})", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SafetyMargin;

    fn watchdog(mode: WatchdogMode, device: &Path) -> Watchdog {
        Watchdog::new(WatchdogConfig {
            mode,
            device: device.to_path_buf(),
            safety_margin: SafetyMargin::Fixed(Duration::from_secs(2)),
        })
    }

    fn lease(floor_in: Option<Duration>, now: Instant) -> HolderLease {
        HolderLease { leader_expiry_floor: floor_in.map(|d| now + d), ..HolderLease::default() }
    }

    const TTL: Duration = Duration::from_secs(3);

    /// Arms, feeds and disarms against a regular file standing in for the device (no softdog here): every
    /// keepalive and the magic close land in the file.
    #[test]
    fn a_stand_in_device_records_the_keepalives_and_the_magic_close() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("watchdog");
        std::fs::write(&path, "").expect("create the stand-in");
        let dog = watchdog(WatchdogMode::Required, &path);
        let now = Instant::now();
        assert_eq!(dog.check(TTL), Verdict::Usable);
        assert_eq!(dog.lead(TTL, &lease(Some(TTL), now), now), Ok(()));
        assert!(dog.is_armed());
        dog.feed(&lease(Some(TTL), now), now);
        // A renewal answered too late, or no lease: no keepalive.
        dog.feed(&lease(Some(Duration::from_millis(500)), now), now);
        dog.feed(&lease(None, now), now);
        dog.disarm("test");
        dog.disarm("twice is harmless");
        assert!(!dog.is_armed());
        assert_eq!(std::fs::read_to_string(&path).expect("read back"), "11V");
    }

    #[test]
    fn required_without_the_device_never_arms() {
        let path = Path::new("/nonexistent/watchdog");
        let dog = watchdog(WatchdogMode::Required, path);
        let now = Instant::now();
        assert!(!dog.check(TTL).allows_leading());
        let failed = dog.lead(TTL, &lease(Some(TTL), now), now);
        assert!(matches!(failed, Err(NotArmed::Failed(_))), "{failed:?}");
        assert!(!dog.is_armed());
        assert!(matches!(dog.check(TTL), Verdict::Unusable(why) if why.starts_with("arming it failed")));
    }

    #[test]
    fn automatic_without_the_device_leads_without_it() {
        let dog = watchdog(WatchdogMode::Automatic, Path::new("/nonexistent/watchdog"));
        let now = Instant::now();
        assert_eq!(dog.check(TTL), Verdict::NotRequired);
        assert_eq!(dog.lead(TTL, &lease(Some(TTL), now), now), Ok(()));
        assert!(!dog.is_armed());
    }

    #[test]
    fn a_late_answer_postpones_arming_in_required_mode() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("watchdog");
        std::fs::write(&path, "").expect("create the stand-in");
        let dog = watchdog(WatchdogMode::Required, &path);
        let now = Instant::now();
        assert_eq!(dog.lead(TTL, &lease(Some(Duration::from_millis(500)), now), now), Err(NotArmed::NotNow));
        assert!(!dog.is_armed());
        assert_eq!(std::fs::read_to_string(&path).expect("read back"), "", "never opened");
        assert_eq!(dog.check(TTL), Verdict::Usable, "not a failure: the next renewal arms it");
    }

    #[test]
    fn off_never_opens_anything() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("watchdog");
        std::fs::write(&path, "").expect("create the stand-in");
        let dog = watchdog(WatchdogMode::Off, &path);
        let now = Instant::now();
        assert_eq!(dog.lead(TTL, &lease(Some(TTL), now), now), Ok(()));
        dog.feed(&lease(Some(TTL), now), now);
        assert!(!dog.is_armed());
        assert_eq!(std::fs::read_to_string(&path).expect("read back"), "");
    }
}
