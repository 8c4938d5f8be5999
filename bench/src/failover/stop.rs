//! One graceful-stop run: with the clients writing steadily, SIGTERM the primary's raftgres (`LocalCluster::stop_node`),
//! which hands the primary over to a successor as a switchover does (`ha::handover`: the failover key names the
//! successor, the primary demotes gracefully, the successor takes the key, and only then does the stopping node
//! exit). It watches the other nodes until one is promoted and every client has written again, measuring the write
//! gap from the SIGTERM as [`super::switchover`] measures it from the request, then starts the stopped node again and
//! waits until the cluster is healthy (or says why it is not). Every wait is bounded.

use std::process::ExitStatus;
use std::time::Duration;

use raftgres::demo::cluster::LocalCluster;
use tokio::time::Instant;

use super::observer::start_writers;
use super::observer::stop_writers;
use super::observer::Observer;
use super::secs;
use super::NAME;
use super::REJOIN_TIMEOUT;
use super::SETTLE_TIMEOUT;
use super::STEADY_TIMEOUT;
use crate::cluster;
use crate::report::Row;
use crate::writer;
use crate::writer::Route;

/// What one graceful-stop run measured; every time is from the SIGTERM unless said otherwise.
pub struct StopRun {
    stopped: String,
    promoted: Option<String>,
    /// One per route, in route order.
    pub gaps: Vec<Option<Duration>>,
    /// Another node answered `pg_is_in_recovery() = false`.
    pub promotion: Option<Duration>,
    /// The stopped raftgres exited (SIGTERM → reaped), with how; `Err` when stopping it failed.
    pub exited: Result<(Duration, Option<ExitStatus>), String>,
    two_writable: Option<String>,
    /// Start of the stopped node → healthy cluster, or why it did not heal.
    pub healed: Result<Duration, String>,
}

impl StopRun {
    /// One line for the notes.
    pub fn describe(&self, routes: &[Route]) -> String {
        let promoted = self.promoted.as_deref().unwrap_or("none within the bound");
        let mut parts = vec![format!("stopped {}, promoted {promoted}", self.stopped)];
        for (route, gap) in routes.iter().zip(&self.gaps) {
            parts.push(format!("gap {} {}", route.label(), secs(*gap)));
        }
        parts.push(format!("promotion {}", secs(self.promotion)));
        parts.push(match &self.exited {
            Ok((took, Some(status))) => {
                format!("raftgres exited ({status}) {:.2} s after the SIGTERM", took.as_secs_f64())
            }
            Ok((took, None)) => format!("raftgres was not running ({:.2} s)", took.as_secs_f64()),
            Err(why) => format!("STOPPING RAFTGRES FAILED: {why}"),
        });
        if let Some(two) = &self.two_writable {
            parts.push(two.clone());
        }
        parts.push(match &self.healed {
            Ok(took) => format!("old primary healthy again {:.2} s after its start", took.as_secs_f64()),
            Err(why) => format!("THE CLUSTER DID NOT HEAL: {why}"),
        });
        parts.join(", ")
    }
}

/// One graceful stop of the primary's raftgres; fails only when nothing could be measured (clients not steady).
pub async fn stop_run(c: &LocalCluster, routes: &[Route]) -> anyhow::Result<StopRun> {
    let primary_idx = cluster::wait_healthy(c, Instant::now() + cluster::HEALTHY_TIMEOUT).await?;
    let stopped = c.node(primary_idx).name.clone();
    let others: Vec<usize> = (1..=c.n_nodes()).filter(|idx| *idx != primary_idx).collect();
    let mut observer = Observer::new(c, &others).await?;
    let writers = start_writers(routes, c.password())?;
    let measured = async {
        for writer in &writers {
            writer.wait_steady(STEADY_TIMEOUT).await?;
        }
        let sigterm_at = Instant::now();
        // `stop_node` returns only once the process exited, which with a hand-over is after the successor took the
        // key: the observer watches meanwhile, on the same task.
        let stopping = async {
            let res = c.stop_node(primary_idx).await;
            res.map(|status| (sigterm_at.elapsed(), status)).map_err(|e| format!("{e:#}"))
        };
        let (exited, ()) =
            tokio::join!(stopping, observer.watch(&writers, sigterm_at, Instant::now() + SETTLE_TIMEOUT));
        anyhow::Ok((sigterm_at, exited))
    }
    .await;
    let successes = stop_writers(writers).await?;
    let (sigterm_at, exited) = measured?;

    let promoted_at = observer.promoted.map(|(at, _)| at);
    let gaps =
        successes.iter().map(|acks| promoted_at.and_then(|at| writer::write_gap(acks, sigterm_at, at))).collect();
    let two_writable = observer.two_writable.as_ref().map(|(at, idxs)| {
        let names: Vec<&str> = idxs.iter().map(|idx| c.node(*idx).name.as_str()).collect();
        let after = at.duration_since(sigterm_at).as_secs_f64();
        format!("TWO WRITABLE PRIMARIES ({}) in one probe round {after:.2} s after the SIGTERM", names.join(", "))
    });
    let restarted = Instant::now();
    let healed = match c.start_node(primary_idx) {
        Ok(_) => match cluster::wait_healthy(c, Instant::now() + REJOIN_TIMEOUT).await {
            Ok(_) => Ok(restarted.elapsed()),
            Err(e) => Err(format!("{e:#}")),
        },
        Err(e) => Err(format!("start {stopped} again: {e:#}")),
    };
    Ok(StopRun {
        stopped,
        promoted: observer.promoted.map(|(_, idx)| c.node(idx).name.clone()),
        gaps,
        promotion: promoted_at.map(|at| at.duration_since(sigterm_at)),
        exited,
        two_writable,
        healed,
    })
}

/// The graceful-stop rows; `kind` is the run kind as the table names it ("graceful stop", or with " (push)").
pub fn stop_rows(runs: &[StopRun], routes: &[Route], kind: &str) -> Vec<Row> {
    let durations =
        |pick: &dyn Fn(&StopRun) -> Option<Duration>| -> Vec<Duration> { runs.iter().filter_map(pick).collect() };
    let mut rows: Vec<Row> = routes
        .iter()
        .enumerate()
        .map(|(route_idx, route)| {
            let gaps = durations(&|run| run.gaps.get(route_idx).copied().flatten());
            Row::latency(NAME, format!("{kind}: client write gap {}", route.label()), &gaps)
        })
        .collect();
    rows.push(Row::latency(NAME, format!("{kind}: a node promoted (from the SIGTERM)"), &durations(&|r| r.promotion)));
    let exited = durations(&|run| run.exited.as_ref().ok().map(|(took, _)| *took));
    rows.push(Row::latency(NAME, format!("{kind}: the stopped raftgres exited (from the SIGTERM)"), &exited));
    let n_unhealed = runs.iter().filter(|run| run.healed.is_err()).count();
    let healed_path = format!("{kind}: stopped node started → healthy again ({n_unhealed} runs never healed)");
    rows.push(Row::latency(NAME, healed_path, &durations(&|run| run.healed.as_ref().ok().copied())));
    rows
}
