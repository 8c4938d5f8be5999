//! What the failover benchmarks watch while a failover or switchover runs: every 50 ms, each
//! watched node's `GET /leader` and `SELECT pg_is_in_recovery()` on a connection opened before the
//! event (so connecting is not timed), plus the benchmark clients' writes. It also notes when two
//! nodes answer `pg_is_in_recovery() = false` in the same probe round (two writable primaries).
//!
//! It only records instants; the failover and switchover modules turn them into numbers.

use std::time::Duration;

use raftgres::demo::cluster::LocalCluster;
use tokio::time::Instant;

use crate::cluster;
use crate::writer::Route;
use crate::writer::Writer;

/// How often the watched nodes are probed.
const OBSERVE_INTERVAL: Duration = Duration::from_millis(50);

/// Probes of the watched nodes and what they showed first.
pub struct Observer {
    http: reqwest::Client,
    nodes: Vec<ObservedNode>,
    password: String,
    /// The first answer 200 to `GET /leader`.
    pub holds_lease: Option<Instant>,
    /// The first answer `pg_is_in_recovery() = false`, and which node gave it.
    pub promoted: Option<(Instant, usize)>,
    /// The first probe round in which two or more nodes answered `pg_is_in_recovery() = false`.
    pub two_writable: Option<(Instant, Vec<usize>)>,
}

struct ObservedNode {
    node_idx: usize,
    api: String,
    pg_port: u16,
    sql: Option<tokio_postgres::Client>,
}

impl Observer {
    /// Opens a SQL connection to every node in `node_idxs` (a node that does not answer is retried
    /// on each probe).
    pub async fn new(c: &LocalCluster, node_idxs: &[usize]) -> anyhow::Result<Observer> {
        let mut nodes = Vec::new();
        for node_idx in node_idxs {
            let pg_port = c.pg_port(*node_idx);
            let sql = cluster::connect(pg_port, c.password()).await;
            nodes.push(ObservedNode { node_idx: *node_idx, api: c.api(*node_idx), pg_port, sql });
        }
        let http = cluster::probe_client()?;
        let password = c.password().to_string();
        Ok(Observer { http, nodes, password, holds_lease: None, promoted: None, two_writable: None })
    }

    /// Probes until [`Observer::settled`] or `deadline`.
    pub async fn watch(&mut self, writers: &[Writer], since: Instant, deadline: Instant) {
        loop {
            self.probe_once().await;
            if self.settled(writers, since) || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(OBSERVE_INTERVAL).await;
        }
    }

    /// Sleeps one probe interval (for callers running their own loop around [`Observer::probe_once`]).
    pub async fn pause() {
        tokio::time::sleep(OBSERVE_INTERVAL).await;
    }

    /// A node was promoted, one holds the lease, and every writer has written since the promotion.
    pub fn settled(&self, writers: &[Writer], since: Instant) -> bool {
        let resumed = |promoted_at: Instant| writers.iter().all(|w| w.first_success_since(promoted_at).is_some());
        self.holds_lease.is_some() && self.promoted.is_some_and(|(at, _)| resumed(at.max(since)))
    }

    /// One round over every watched node.
    pub async fn probe_once(&mut self) {
        let mut writable = Vec::new();
        for node in &mut self.nodes {
            if self.holds_lease.is_none()
                && cluster::get_status(&self.http, &format!("{}/leader", node.api)).await == Some(200)
            {
                self.holds_lease = Some(Instant::now());
            }
            if node.sql.is_none() {
                node.sql = cluster::connect(node.pg_port, &self.password).await;
            }
            let Some(sql) = &node.sql else { continue };
            match cluster::in_recovery(sql).await {
                Some(false) => {
                    writable.push(node.node_idx);
                    self.promoted.get_or_insert((Instant::now(), node.node_idx));
                }
                Some(true) => {}
                None => node.sql = None,
            }
        }
        if writable.len() > 1 && self.two_writable.is_none() {
            self.two_writable = Some((Instant::now(), writable));
        }
    }
}

/// One benchmark client per route.
pub fn start_writers(routes: &[Route], password: &str) -> anyhow::Result<Vec<Writer>> {
    routes.iter().map(|route| Writer::start(route.clone(), password)).collect()
}

/// Stops every writer; one acknowledgement list per writer, in order.
pub async fn stop_writers(writers: Vec<Writer>) -> anyhow::Result<Vec<Vec<Instant>>> {
    let mut all = Vec::with_capacity(writers.len());
    for writer in writers {
        all.push(writer.stop().await?);
    }
    Ok(all)
}
