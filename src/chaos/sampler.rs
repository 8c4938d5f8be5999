//! The sampler: every [`SAMPLE_INTERVAL`], on every node at once, a write probe tagged with the
//! node's fencing token, between two reads of the node's own view of the leader lease.
//!
//! The probe inserts with `synchronous_commit = local`, so it shows whether the node *accepts*
//! writes at all, independently of synchronous replication: a fenced primary must refuse even
//! a local commit. Every lease view read also records the grant it shows (holder, token), which
//! tells the single-primary checker when each token existed at the latest.

use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::history::Grant;
use super::history::Probe;
use super::history::Recorder;
use super::net::Endpoints;

/// Pause between two samples of one node.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(150);
/// How long one probe insert may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The probe table.
pub const PROBES_DDL: &str = "CREATE TABLE IF NOT EXISTS chaos_probe (seq bigserial PRIMARY KEY, node int NOT NULL, token bigint, at timestamptz NOT NULL DEFAULT clock_timestamp())";

/// Samples node `node_idx` until `stop`.
pub async fn run(endpoints: Endpoints, node_idx: usize, recorder: Recorder, stop: CancellationToken) {
    let mut conn: Option<Client> = None;
    while !stop.is_cancelled() {
        let before = own_token(&endpoints, node_idx, &recorder).await;
        if conn.is_none() {
            conn = open(&endpoints, node_idx).await;
        }
        let sent_ms = recorder.now_ms();
        let answer = match &conn {
            Some(client) => write_probe(client, node_idx, before).await,
            None => Some((false, None)),
        };
        let done_ms = recorder.now_ms();
        // A connection that failed is dropped; one to a replica is kept for the next sample.
        let (accepted, wal_lsn) = answer.unwrap_or_else(|| {
            conn = None;
            (false, None)
        });
        let after = own_token(&endpoints, node_idx, &recorder).await;
        // A refused probe (no connection included) ends a writable stretch of the node.
        let probe = Probe { node: node_idx, sent_ms, done_ms, accepted, token: before.max(after), wal_lsn };
        recorder.with(|history| history.probes.push(probe));
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(SAMPLE_INTERVAL) => {}
        }
    }
}

/// Reads node `node_idx`'s view of the lease, records the grant it shows, and returns the token
/// when the node sees itself as the holder.
async fn own_token(endpoints: &Endpoints, node_idx: usize, recorder: &Recorder) -> Option<u64> {
    let (holder, token) = endpoints.lease_view(node_idx).await?;
    recorder.grant(Grant { seen_ms: recorder.now_ms(), holder, token });
    (holder == node_idx).then_some(token)
}

/// `pg_is_in_recovery()`, then (only on a node that says it is not) the probe insert and the flushed WAL
/// position after it: whether the node accepted the write (with that position), `None` when the connection
/// failed. Skipping the insert on a replica keeps its log free of read-only errors and can only miss a probe,
/// never invent one.
async fn write_probe(client: &Client, node_idx: usize, token: Option<u64>) -> Option<(bool, Option<u64>)> {
    let in_recovery = tokio::time::timeout(PROBE_TIMEOUT, client.query_one("SELECT pg_is_in_recovery()", &[])).await;
    match in_recovery {
        Ok(Ok(row)) if row.get::<_, bool>(0) => return Some((false, None)),
        Ok(Ok(_)) => {}
        Ok(Err(_)) | Err(_) => return None,
    }
    let token = token.map(|t| t as i64);
    let node_no = node_idx as i32;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&node_no, &token];
    let insert = client.query_one(
        "WITH probe AS (INSERT INTO chaos_probe (node, token) VALUES ($1, $2) RETURNING seq) \
         SELECT (pg_catalog.pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint FROM probe",
        &params,
    );
    match tokio::time::timeout(PROBE_TIMEOUT, insert).await {
        Ok(Ok(row)) => Some((true, row.try_get::<_, i64>(0).ok().and_then(|lsn| u64::try_from(lsn).ok()))),
        Ok(Err(_)) | Err(_) => None,
    }
}

async fn open(endpoints: &Endpoints, node_idx: usize) -> Option<Client> {
    let client = endpoints.connect(node_idx).await?;
    client.batch_execute("SET synchronous_commit = local").await.ok()?;
    Some(client)
}
