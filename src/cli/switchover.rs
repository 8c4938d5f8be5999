//! `raftgres switchover` and `raftgres failover`: patronictl's `_do_failover_or_switchover` over
//! `POST /switchover` and `POST /failover`, sent to the leader (to the candidate when there is none, then to the
//! other members if that node does not answer).
//!
//! The checks patronictl makes on its side (leader and candidate names, `nofailover`, scheduling in pause) run
//! here with its messages, so an operator sees the same sentences; the node checks everything again.

use chrono::DateTime;
use chrono::FixedOffset;
use chrono::Local;
use chrono::NaiveDateTime;
use chrono::SecondsFormat;
use chrono::TimeZone as _;
use reqwest::Method;
use serde_json::Map;
use serde_json::Value;

use crate::cli::client::ApiClient;
use crate::cli::cluster;
use crate::cli::cluster::Cluster;
use crate::cli::list;
use crate::cli::prompt;
use crate::cli::table::Format;

/// Which request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Planned: demote the named leader, promote a healthy replica.
    Switchover,
    /// To a named candidate, with or without a leader.
    Failover,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Switchover => "switchover",
            Action::Failover => "failover",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Action::Switchover => "Switchover",
            Action::Failover => "Failover",
        }
    }
}

/// What the operator passed.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Optional cluster name, checked against the scope.
    pub cluster_name: Option<String>,
    /// `--leader`.
    pub leader: Option<String>,
    /// `--candidate`.
    pub candidate: Option<String>,
    /// `--scheduled` (`now` or a timestamp).
    pub scheduled: Option<String>,
    /// `--force`: no questions.
    pub force: bool,
}

/// Runs a switchover or a failover.
pub async fn run(client: &ApiClient, action: Action, req: Request) -> anyhow::Result<()> {
    let cluster = cluster::fetch(client).await?;
    cluster.check_name(req.cluster_name.as_deref())?;
    println!("Current cluster topology");
    print_table(client).await;
    let cluster_leader = cluster.leader().map(|m| m.name.clone());
    let leader = match action {
        Action::Switchover => Some(resolve_leader(&cluster, req.leader.clone(), req.force).await?),
        Action::Failover => None,
    };
    let candidate = resolve_candidate(&cluster, action, &req).await?;
    let scheduled_at = scheduled_at(&cluster, action, &req).await?;
    let mut body = Map::new();
    if let Some(candidate) = &candidate {
        body.insert("candidate".into(), Value::from(candidate.as_str()));
    }
    if let Some(leader) = leader {
        body.insert("leader".into(), Value::from(leader));
    }
    if let Some(at) = &scheduled_at {
        body.insert("scheduled_at".into(), Value::from(at.as_str()));
    }
    if !req.force {
        confirm(action, &cluster.scope, cluster_leader.as_deref(), scheduled_at.as_deref()).await?;
    }
    // The leader carries the request out; without one, the candidate; any member can relay it.
    let target = cluster_leader.as_deref().or(candidate.as_deref());
    let mut nodes = Vec::new();
    if let Some(member) = target.and_then(|target| cluster.member(target)) {
        nodes.push(client.member_base(&member.api_url)?);
    }
    for base in cluster.bases_leader_first(client) {
        if !nodes.contains(&base) {
            nodes.push(base);
        }
    }
    let path = format!("/{}", action.word());
    let reply = client.first_answer(&nodes, Method::POST, &path, Some(&Value::Object(body))).await?;
    if !matches!(reply.status, 200 | 202) {
        anyhow::bail!("{} failed, details: {}, {}", action.title(), reply.status, reply.text());
    }
    println!("{} {}", Local::now().format("%Y-%m-%d %H:%M:%S%.6f"), reply.text());
    print_table(client).await;
    Ok(())
}

/// The switchover's leader: `--leader`, else asked (the current leader by default), and it must be the leader.
async fn resolve_leader(cluster: &Cluster, leader: Option<String>, force: bool) -> anyhow::Result<String> {
    let Some(cluster_leader) = cluster.leader() else {
        anyhow::bail!("This cluster has no leader");
    };
    let leader = match leader {
        Some(leader) => leader,
        None if force => cluster_leader.name.clone(),
        None => {
            let question = if cluster_leader.role == "standby_leader" { "Standby Leader" } else { "Primary" };
            prompt::ask(question, &cluster_leader.name, "switchover").await?
        }
    };
    if leader != cluster_leader.name {
        anyhow::bail!("Member {leader} is not the leader of cluster {}", cluster.scope);
    }
    Ok(leader)
}

/// The candidate: `--candidate`, else asked unless `--force`; checked as patronictl does.
async fn resolve_candidate(cluster: &Cluster, action: Action, req: &Request) -> anyhow::Result<Option<String>> {
    let candidates = candidate_names(cluster);
    if candidates.is_empty() {
        anyhow::bail!("No candidates found to {} to", action.word());
    }
    let mut candidate = req.candidate.clone();
    if candidate.is_none() && !req.force {
        let offered: Vec<String> = candidates.iter().map(|c| format!("'{c}'")).collect();
        let answer = prompt::ask(&format!("Candidate [{}]", offered.join(", ")), "", action.word()).await?;
        candidate = Some(answer).filter(|c| !c.is_empty());
    }
    let cluster_leader = cluster.leader().map(|m| m.name.as_str());
    check_candidate(cluster, action, candidate.as_deref(), cluster_leader, &candidates)?;
    if let Some(candidate) = candidate.as_deref().filter(|_| action == Action::Failover && !req.force) {
        let sync_roles = ["sync_standby", "quorum_standby"];
        let sync_mode = cluster.members.iter().any(|m| sync_roles.contains(&m.role.as_str()));
        let candidate_is_sync = cluster.member(candidate).is_some_and(|m| sync_roles.contains(&m.role.as_str()));
        let question = format!("Are you sure you want to failover to the asynchronous node {candidate}?");
        if sync_mode && !candidate_is_sync && !prompt::confirm(&question, action.word()).await? {
            anyhow::bail!("Aborting {}", action.word());
        }
    }
    Ok(candidate)
}

/// Prints the pretty `list`; a failure to read it only costs the table.
pub async fn print_table(client: &ApiClient) {
    match list::list_document(client).await {
        Ok(document) => print!("{}", list::render_list(&document, Format::Pretty, false)),
        Err(e) => eprintln!("warning: cannot show the cluster: {e:#}"),
    }
}

/// Members that may become the leader: all but the leader and the `nofailover` ones, sorted.
fn candidate_names(cluster: &Cluster) -> Vec<String> {
    let mut names: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| !m.role.ends_with("leader") && !m.nofailover)
        .map(|m| m.name.clone())
        .collect();
    names.sort();
    names
}

fn check_candidate(
    cluster: &Cluster,
    action: Action,
    candidate: Option<&str>,
    cluster_leader: Option<&str>,
    candidates: &[String],
) -> anyhow::Result<()> {
    let name = &cluster.scope;
    match candidate {
        None if action == Action::Failover => anyhow::bail!("Failover could be performed only to a specific candidate"),
        None => Ok(()),
        Some(candidate) if candidates.iter().any(|c| c == candidate) => Ok(()),
        Some(candidate) if Some(candidate) == cluster_leader => {
            anyhow::bail!("Member {candidate} is already the leader of cluster {name}")
        }
        Some(candidate) => {
            anyhow::bail!("Member {candidate} does not exist in cluster {name} or is tagged as nofailover")
        }
    }
}

/// The `scheduled_at` to send (switchover only), asking for it unless `--force`.
async fn scheduled_at(cluster: &Cluster, action: Action, req: &Request) -> anyhow::Result<Option<String>> {
    if action != Action::Switchover {
        return Ok(None);
    }
    let scheduled = match &req.scheduled {
        Some(scheduled) => scheduled.clone(),
        None if req.force => return Ok(None),
        None => {
            let question = format!("When should the switchover take place (e.g. {} ) ", next_hour());
            prompt::ask(&question, "now", action.word()).await?
        }
    };
    let Some(at) = parse_scheduled(&scheduled)? else { return Ok(None) };
    if cluster.paused() {
        anyhow::bail!("Can't schedule switchover in the paused state");
    }
    Ok(Some(iso(&at)))
}

async fn confirm(action: Action, name: &str, leader: Option<&str>, scheduled_at: Option<&str>) -> anyhow::Result<()> {
    let demote = leader.map(|leader| format!(", demoting current leader {leader}")).unwrap_or_default();
    let (question, refusal) = match scheduled_at {
        Some(at) => (
            format!("Are you sure you want to schedule switchover of cluster {name} at {at}{demote}?"),
            format!("Aborting scheduled {}", action.word()),
        ),
        None => (
            format!("Are you sure you want to {} cluster {name}{demote}?", action.word()),
            format!("Aborting {}", action.word()),
        ),
    };
    if prompt::confirm(&question, action.word()).await? {
        Ok(())
    } else {
        Err(anyhow::anyhow!(refusal))
    }
}

/// An hour from now, as patronictl offers it in its questions (`2026-11-22T14:05`).
pub fn next_hour() -> String {
    (Local::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string()
}

/// ISO 8601 with the offset (`2026-11-22T14:05:00+01:00`), as Python's `isoformat`.
pub fn iso(at: &DateTime<FixedOffset>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// patronictl's `parse_scheduled`: `now` (or nothing) is `None`; a timestamp without an offset is local time.
pub fn parse_scheduled(text: &str) -> anyhow::Result<Option<DateTime<FixedOffset>>> {
    let text = text.trim();
    if text.is_empty() || text == "now" {
        return Ok(None);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at));
    }
    const WITH_OFFSET: [&str; 4] =
        ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z", "%Y-%m-%d %H:%M%#z"];
    if let Some(at) = WITH_OFFSET.iter().find_map(|format| DateTime::parse_from_str(text, format).ok()) {
        return Ok(Some(at));
    }
    const LOCAL: [&str; 4] = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
    let local = LOCAL
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .and_then(|naive| Local.from_local_datetime(&naive).earliest());
    match local {
        Some(at) => Ok(Some(at.fixed_offset())),
        None => anyhow::bail!(
            "Unable to parse scheduled timestamp ({text}). It should be in an unambiguous format (e.g. ISO 8601)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: Option<&str>) {
        let got = parse_scheduled(text).expect("parses").map(|at| iso(&at));
        assert_eq!(got.as_deref(), expected);
    }

    #[test]
    fn scheduled_timestamps_parse_like_patronictl() {
        check("now", None);
        check("", None);
        check("2026-11-22T14:05:00+01:00", Some("2026-11-22T14:05:00+01:00"));
        check("2026-11-22T14:05+01:00", Some("2026-11-22T14:05:00+01:00"));
        check("2026-11-22 14:05:30.5+0000", Some("2026-11-22T14:05:30.500+00:00"));
        check("2026-11-22T14:05:00Z", Some("2026-11-22T14:05:00+00:00"));
        let local = parse_scheduled("2026-11-22T14:05").expect("parses").expect("a time");
        assert_eq!(local.naive_local().to_string(), "2026-11-22 14:05:00");
        let err = parse_scheduled("tomorrow-ish").expect_err("refused");
        assert_eq!(
            err.to_string(),
            "Unable to parse scheduled timestamp (tomorrow-ish). It should be in an unambiguous format (e.g. ISO 8601)"
        );
    }
}
