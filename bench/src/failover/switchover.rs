//! One planned switchover run: with the clients writing steadily, `POST /switchover` to the
//! leader with `{"leader": <primary>, "candidate": <next node>}` (Patroni's body), then watch until
//! a node is promoted and every client has written again; the write gap is measured from the
//! request. A 404 or 501 answer means the endpoint is not there (yet): the caller prints that.
//!
//! Patroni answers the request only once the switchover is done, so the request runs in its own
//! task while the observer probes. Every wait is bounded.

use std::time::Duration;

use anyhow::Context;
use raftgres::demo::cluster::LocalCluster;
use tokio::time::Instant;

use super::observer::start_writers;
use super::observer::stop_writers;
use super::observer::Observer;
use super::secs;
use super::REJOIN_TIMEOUT;
use super::SETTLE_TIMEOUT;
use super::STEADY_TIMEOUT;
use crate::cluster;
use crate::writer;
use crate::writer::Route;
use crate::writer::Writer;

/// Bound of the switchover request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What one switchover run measured.
pub struct SwitchoverRun {
    from: String,
    to: String,
    promoted: Option<String>,
    /// One per route, in route order.
    pub gaps: Vec<Option<Duration>>,
    /// Request → the first node answering `pg_is_in_recovery() = false`.
    pub promotion: Option<Duration>,
    answer: String,
    two_writable: Option<String>,
    /// Request → the cluster healthy again (the old primary streaming from the new one), or why not.
    pub healed: Result<Duration, String>,
}

impl SwitchoverRun {
    /// One line for the notes.
    pub fn describe(&self, routes: &[Route]) -> String {
        let promoted = self.promoted.as_deref().unwrap_or("none within the bound");
        let mut parts = vec![format!("{} -> {} (promoted {promoted}; answered {})", self.from, self.to, self.answer)];
        for (route, gap) in routes.iter().zip(&self.gaps) {
            parts.push(format!("gap {} {}", route.label(), secs(*gap)));
        }
        parts.push(format!("promotion {} after the request", secs(self.promotion)));
        if let Some(two) = &self.two_writable {
            parts.push(two.clone());
        }
        parts.push(match &self.healed {
            Ok(took) => format!("healthy again {:.2} s after the request", took.as_secs_f64()),
            Err(why) => format!("THE CLUSTER DID NOT HEAL: {why}"),
        });
        parts.join(", ")
    }
}

/// A switchover run, or the status that says the endpoint is missing.
pub enum SwitchoverOutcome {
    /// Measured (whether or not the cluster healed afterwards).
    Done(SwitchoverRun),
    /// `POST /switchover` answered this status (404 or 501).
    EndpointMissing(u16),
}

/// One planned switchover from the primary to the next node, measured from the request; fails
/// when nothing could be measured (clients not steady, request refused).
pub async fn switchover_run(c: &LocalCluster, routes: &[Route]) -> anyhow::Result<SwitchoverOutcome> {
    let primary_idx = cluster::wait_healthy(c, Instant::now() + cluster::HEALTHY_TIMEOUT).await?;
    let candidate_idx = primary_idx % c.n_nodes() + 1;
    let (from, to) = (c.node(primary_idx).name.clone(), c.node(candidate_idx).name.clone());
    let others: Vec<usize> = (1..=c.n_nodes()).filter(|idx| *idx != primary_idx).collect();
    let mut observer = Observer::new(c, &others).await?;
    let writers = start_writers(routes, c.password())?;
    let measured = async {
        for writer in &writers {
            writer.wait_steady(STEADY_TIMEOUT).await?;
        }
        let body = serde_json::json!({ "leader": from, "candidate": to });
        let url = format!("{}/switchover", c.api(primary_idx));
        let requested_at = Instant::now();
        let request = tokio::spawn(post_json(url, body));
        let answer = watch(&mut observer, &writers, request, requested_at).await?;
        anyhow::Ok((requested_at, answer))
    }
    .await;
    let successes = stop_writers(writers).await?;
    let (requested_at, answer) = measured?;
    let answer = match answer {
        Answer::Missing(status) => return Ok(SwitchoverOutcome::EndpointMissing(status)),
        Answer::Accepted(text) => text,
    };
    let promoted_at = observer.promoted.map(|(at, _)| at);
    let gaps =
        successes.iter().map(|acks| promoted_at.and_then(|at| writer::write_gap(acks, requested_at, at))).collect();
    let two_writable = observer.two_writable.as_ref().map(|(at, idxs)| {
        let names: Vec<&str> = idxs.iter().map(|idx| c.node(*idx).name.as_str()).collect();
        let after = at.duration_since(requested_at).as_secs_f64();
        format!("TWO WRITABLE PRIMARIES ({}) in one probe round {after:.2} s after the request", names.join(", "))
    });
    let healed = match cluster::wait_healthy(c, Instant::now() + REJOIN_TIMEOUT).await {
        Ok(_) => Ok(requested_at.elapsed()),
        Err(e) => Err(format!("{e:#}")),
    };
    Ok(SwitchoverOutcome::Done(SwitchoverRun {
        from,
        to,
        promoted: observer.promoted.map(|(_, idx)| c.node(idx).name.clone()),
        gaps,
        promotion: promoted_at.map(|at| at.duration_since(requested_at)),
        answer,
        two_writable,
        healed,
    }))
}

enum Answer {
    /// 2xx (or no answer in time), with the status and body for the notes.
    Accepted(String),
    /// 404 or 501.
    Missing(u16),
}

/// Watches the switchover while the request runs; fails when the request is refused with another
/// status than 404/501.
async fn watch(
    observer: &mut Observer,
    writers: &[Writer],
    request: tokio::task::JoinHandle<anyhow::Result<(u16, String)>>,
    requested_at: Instant,
) -> anyhow::Result<Answer> {
    let mut pending = Some(request);
    let mut answer = None;
    let deadline = requested_at + SETTLE_TIMEOUT;
    loop {
        if let Some(request) = pending.take_if(|request| request.is_finished()) {
            let (status, body) = request.await.context("join the switchover request")??;
            if status == 404 || status == 501 {
                return Ok(Answer::Missing(status));
            }
            if !(200..300).contains(&status) {
                anyhow::bail!("POST /switchover answered {status}: {}", body.trim());
            }
            answer = Some(format!("{status} {}", body.trim()));
        }
        observer.probe_once().await;
        if observer.settled(writers, requested_at) || Instant::now() >= deadline {
            break;
        }
        Observer::pause().await;
    }
    if let Some(request) = pending {
        let remaining = (requested_at + REQUEST_TIMEOUT).saturating_duration_since(Instant::now());
        // On timeout the task ends by itself within the client's own timeout.
        if let Ok(answered) = tokio::time::timeout(remaining, request).await {
            let (status, body) = answered.context("join the switchover request")??;
            answer = Some(format!("{status} {}", body.trim()));
        }
    }
    Ok(Answer::Accepted(answer.unwrap_or_else(|| format!("nothing within {REQUEST_TIMEOUT:?}"))))
}

/// POSTs `body` as JSON; the status and the body text.
async fn post_json(url: String, body: serde_json::Value) -> anyhow::Result<(u16, String)> {
    let http =
        reqwest::Client::builder().timeout(REQUEST_TIMEOUT).no_proxy().build().context("build the HTTP client")?;
    let res = http.post(&url).json(&body).send().await.with_context(|| format!("POST {url}"))?;
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    Ok((status, text))
}
