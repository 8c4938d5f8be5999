//! The benchmark's application: a client that INSERTs a sequence number through the primary every
//! 50 ms and records when each write was acknowledged, plus the PURE gap computation over those
//! timestamps ([`write_gap`]).
//!
//! A write has a short statement timeout and a bound on the whole call; after any error the client
//! drops its connection and connects again on the next tick, through HAProxy's primary port or to
//! the node answering 200 on `GET /primary` (probed on every reconnect). It never judges a number.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio::time::MissedTickBehavior;

use crate::cluster;

/// One write every 50 ms, as the issue asks.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(50);
/// Bound of one INSERT round trip (the statement timeout is 1 s; this also covers a dead socket).
const WRITE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The table every writer appends to (no key: several writers share it).
pub const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS bench_writes \
    (route text NOT NULL, seq bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())";
/// Consecutive successes that make a writer "steady" (one second of clean writes).
const STEADY_STREAK: u64 = 20;

/// How the client reaches the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Through HAProxy's primary port (`option httpchk GET /primary`).
    Haproxy {
        /// The `listen primary` port.
        port: u16,
    },
    /// Straight to the node whose REST API answers 200 on `GET /primary`, probed on each reconnect.
    FollowPrimary {
        /// Every node's `(REST API base URL, PostgreSQL port)`.
        nodes: Vec<(String, u16)>,
    },
}

impl Route {
    /// The row label: how the writes travel.
    pub fn label(&self) -> &'static str {
        match self {
            Route::Haproxy { .. } => "via HAProxy",
            Route::FollowPrimary { .. } => "direct, following GET /primary",
        }
    }

    fn tag(&self) -> &'static str {
        match self {
            Route::Haproxy { .. } => "haproxy",
            Route::FollowPrimary { .. } => "follow",
        }
    }
}

#[derive(Debug, Default)]
struct Progress {
    successes: Vec<Instant>,
    streak: u64,
}

/// A running writer task.
pub struct Writer {
    route: Route,
    progress: Arc<Mutex<Progress>>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Writer {
    /// Spawns the client; it writes until [`Writer::stop`].
    pub fn start(route: Route, password: &str) -> anyhow::Result<Writer> {
        let progress = Arc::new(Mutex::new(Progress::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let http = cluster::probe_client()?;
        let client_loop = ClientLoop {
            route: route.clone(),
            password: password.to_string(),
            http,
            progress: Arc::clone(&progress),
            stop: Arc::clone(&stop),
        };
        let task = tokio::spawn(client_loop.run());
        Ok(Writer { route, progress, stop, task })
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the last [`STEADY_STREAK`] writes all succeeded.
    pub fn is_steady(&self) -> bool {
        self.progress().streak >= STEADY_STREAK
    }

    /// Waits until the writer is steady; fails after `timeout`.
    pub async fn wait_steady(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.is_steady() {
            if Instant::now() >= deadline {
                anyhow::bail!("the client {} did not write steadily within {timeout:?}", self.route.label());
            }
            tokio::time::sleep(WRITE_INTERVAL).await;
        }
        Ok(())
    }

    /// The first acknowledged write at or after `since`.
    pub fn first_success_since(&self, since: Instant) -> Option<Instant> {
        self.progress().successes.iter().copied().find(|at| *at >= since)
    }

    /// Stops the task (within one write bound) and returns every acknowledgement time, in order.
    pub async fn stop(self) -> anyhow::Result<Vec<Instant>> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.context("join the writer task")?;
        let successes = std::mem::take(&mut self.progress.lock().unwrap_or_else(PoisonError::into_inner).successes);
        Ok(successes)
    }
}

struct ClientLoop {
    route: Route,
    password: String,
    http: reqwest::Client,
    progress: Arc<Mutex<Progress>>,
    stop: Arc<AtomicBool>,
}

impl ClientLoop {
    async fn run(self) {
        let mut ticks = tokio::time::interval(WRITE_INTERVAL);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut client: Option<tokio_postgres::Client> = None;
        let mut seq: i64 = 0;
        while !self.stop.load(Ordering::SeqCst) {
            ticks.tick().await;
            if client.is_none() {
                client = self.connect().await;
            }
            let Some(connected) = &client else {
                self.record(None);
                continue;
            };
            seq += 1;
            let tag = self.route.tag();
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&tag, &seq];
            let insert = connected.execute("INSERT INTO bench_writes (route, seq) VALUES ($1, $2)", &params);
            match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
                Ok(Ok(_)) => self.record(Some(Instant::now())),
                Ok(Err(_)) | Err(_) => {
                    client = None;
                    self.record(None);
                }
            }
        }
    }

    fn record(&self, success: Option<Instant>) {
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        match success {
            Some(at) => {
                progress.successes.push(at);
                progress.streak += 1;
            }
            None => progress.streak = 0,
        }
    }

    async fn connect(&self) -> Option<tokio_postgres::Client> {
        let port = match &self.route {
            Route::Haproxy { port } => *port,
            Route::FollowPrimary { nodes } => self.primary_port(nodes).await?,
        };
        cluster::connect(port, &self.password).await
    }

    /// The PostgreSQL port of the first node answering 200 on `GET /primary`.
    async fn primary_port(&self, nodes: &[(String, u16)]) -> Option<u16> {
        for (api, pg_port) in nodes {
            if cluster::get_status(&self.http, &format!("{api}/primary")).await == Some(200) {
                return Some(*pg_port);
            }
        }
        None
    }
}

/// PURE: the client-visible write gap around an event: the longest interval between two consecutive
/// acknowledged writes, from the last write at or before `event` to the first write at or after
/// `settled` (the moment the new primary was seen; `settled = event` for a crash, where nothing is
/// acknowledged in between). `None` without a write before `event` or after `settled`.
/// `successes` is ascending. With one write every 50 ms, an undisturbed client shows about 50 ms.
pub fn write_gap(successes: &[Instant], event: Instant, settled: Instant) -> Option<Duration> {
    let start_idx = successes.iter().rposition(|at| *at <= event)?;
    let end_idx = successes.iter().position(|at| *at >= settled.max(event))?;
    successes[start_idx..=end_idx].windows(2).map(|pair| pair[1].duration_since(pair[0])).max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(successes_ms: &[u64], event_ms: u64, settled_ms: u64, expected_ms: Option<u64>) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let successes: Vec<Instant> = successes_ms.iter().map(|ms| at(*ms)).collect();
        let got = write_gap(&successes, at(event_ms), at(settled_ms));
        assert_eq!(got, expected_ms.map(Duration::from_millis));
    }

    #[test]
    fn crash_gap_is_last_write_before_to_first_write_after() {
        check(&[0, 50, 100, 3100, 3150], 120, 120, Some(3000));
    }

    #[test]
    fn switchover_gap_is_the_longest_pause_until_the_new_primary_writes() {
        // Writes continue after the request, stop while the old primary stops, resume after promotion.
        check(&[0, 50, 100, 150, 900, 950], 60, 800, Some(750));
    }

    #[test]
    fn gap_that_ends_after_the_new_primary_was_seen_is_counted() {
        check(&[0, 50, 2000, 2050], 60, 500, Some(1950));
    }

    #[test]
    fn undisturbed_client_shows_the_write_interval() {
        check(&[0, 50, 100, 150, 200], 60, 120, Some(50));
    }

    #[test]
    fn no_write_before_the_event_has_no_gap() {
        check(&[200, 250], 100, 100, None);
    }

    #[test]
    fn no_write_after_settling_has_no_gap() {
        check(&[0, 50], 100, 100, None);
    }
}
