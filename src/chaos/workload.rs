//! The workload: clients that insert unique, sequenced ids through the node whose `GET /primary`
//! answers 200, and record every write with its send and answer times and how it ended.
//!
//! No `statement_timeout`: PostgreSQL reports a commit whose wait for the synchronous standby was
//! cancelled as a success (with a WARNING), which would turn a write only the primary holds into
//! an acknowledged one. The client gives up on its own clock instead and drops the connection, and
//! the write counts as unknown.

use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::history::Outcome;
use super::history::Recorder;
use super::history::WriteOp;
use super::net::Endpoints;

/// How long a client waits for one insert before it counts it as unknown.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after each write, so a few clients do not saturate two cores.
const WRITE_PAUSE: Duration = Duration::from_millis(10);
/// Pause before looking for the primary again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The table the clients write to.
pub const WRITES_DDL: &str =
    "CREATE TABLE IF NOT EXISTS chaos_writes (id bigint PRIMARY KEY, client int NOT NULL, node int NOT NULL)";

/// Runs one client until `stop`; ids come from `next_id`, shared by all clients.
pub async fn client(
    endpoints: Endpoints,
    client_idx: usize,
    next_id: Arc<AtomicI64>,
    recorder: Recorder,
    stop: CancellationToken,
) {
    let mut conn: Option<(usize, Client)> = None;
    while !stop.is_cancelled() {
        let reused = match conn.take() {
            Some(open) => Some(open),
            None => connect_to_primary(&endpoints).await,
        };
        let Some((node, client)) = reused else {
            pause(&stop, RETRY_PAUSE).await;
            continue;
        };
        let id = next_id.fetch_add(1, Ordering::SeqCst);
        let sent_ms = recorder.now_ms();
        let (client_no, node_no) = (client_idx as i32, node as i32);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&id, &client_no, &node_no];
        let insert = client.execute("INSERT INTO chaos_writes (id, client, node) VALUES ($1, $2, $3)", &params);
        let outcome = match tokio::time::timeout(WRITE_TIMEOUT, insert).await {
            Ok(Ok(_)) => Outcome::Acked,
            Ok(Err(e)) if refused(&e) => Outcome::Failed,
            Ok(Err(_)) | Err(_) => Outcome::Unknown,
        };
        let done_ms = recorder.now_ms();
        recorder
            .with(|history| history.writes.push(WriteOp { id, client: client_idx, node, sent_ms, done_ms, outcome }));
        if outcome == Outcome::Acked {
            conn = Some((node, client));
            pause(&stop, WRITE_PAUSE).await;
        } else {
            pause(&stop, RETRY_PAUSE).await;
        }
    }
}

/// Whether the server certainly did not run the statement: it refused it as read-only or
/// because it is starting or shutting down, before executing it.
fn refused(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else { return false };
    [SqlState::READ_ONLY_SQL_TRANSACTION, SqlState::CANNOT_CONNECT_NOW].contains(code)
}

/// The primary the application would reach: through HAProxy's primary port when the run goes
/// through it (the node is then read off the connection), else the node answering `GET /primary`.
async fn connect_to_primary(endpoints: &Endpoints) -> Option<(usize, Client)> {
    if let Some(via) = &endpoints.via {
        let client = endpoints.connect_to(via).await?;
        let node = tokio::time::timeout(WRITE_TIMEOUT, endpoints.node_behind(&client)).await.ok()??;
        return Some((node, client));
    }
    let node = endpoints.find_primary().await?;
    let client = endpoints.connect(node).await?;
    Some((node, client))
}

async fn pause(stop: &CancellationToken, how_long: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(how_long) => {}
    }
}
