//! `raftgres restart`, `reload` and `reinit`: patronictl's per-member actions, each sent to the member's own
//! REST API (`POST /restart`, `POST /reload`, `POST /reinitialize`), with patronictl's questions and its
//! `Success: …` / `Failed: …` lines. Unlike patronictl, a member that failed makes the command exit non-zero.

use std::time::Duration;

use rand::seq::SliceRandom as _;
use reqwest::Method;
use reqwest::Url;
use serde_json::Map;
use serde_json::Value;

use crate::cli::client::display_url;
use crate::cli::client::ApiClient;
use crate::cli::client::Reply;
use crate::cli::cluster;
use crate::cli::cluster::Cluster;
use crate::cli::cluster::Member;
use crate::cli::cluster::RoleFilter;
use crate::cli::prompt;
use crate::cli::switchover;

/// How often `reinit --wait` asks the member how it is doing.
const REINIT_POLL: Duration = Duration::from_secs(2);

/// `restart`'s options.
#[derive(Debug, Clone, Default)]
pub struct RestartRequest {
    /// Member names (a leading cluster name is accepted and checked).
    pub members: Vec<String>,
    /// `--role`.
    pub role: Option<RoleFilter>,
    /// `--any`: one member, picked at random.
    pub any: bool,
    /// `--scheduled`.
    pub scheduled: Option<String>,
    /// `--pg-version`: restart only members running an older PostgreSQL.
    pub pg_version: Option<String>,
    /// `--pending`: only members with a pending restart.
    pub pending: bool,
    /// `--timeout` in seconds.
    pub timeout: Option<String>,
    /// `--force`.
    pub force: bool,
}

/// `restart`.
pub async fn restart(client: &ApiClient, req: RestartRequest) -> anyhow::Result<()> {
    let cluster = cluster::fetch(client).await?;
    let names = cluster.strip_cluster_name(&req.members);
    let mut members: Vec<Member> =
        cluster.select(&names, req.role.unwrap_or(RoleFilter::Any))?.into_iter().cloned().collect();
    switchover::print_table(client).await;
    let scheduled = match (&req.scheduled, req.force) {
        (Some(scheduled), _) => scheduled.clone(),
        (None, true) => "now".to_string(),
        (None, false) => {
            let question = format!("When should the restart take place (e.g. {}) ", switchover::next_hour());
            prompt::ask(&question, "now", "restart").await?
        }
    };
    let scheduled_at = switchover::parse_scheduled(&scheduled)?.map(|at| switchover::iso(&at));
    // A scheduled restart decides at its time which members need it.
    if req.pending && scheduled_at.is_none() {
        members.retain(|member| member.pending_restart);
    }
    if req.any {
        members.shuffle(&mut rand::thread_rng());
        members.truncate(1);
    }
    if members.is_empty() {
        println!("No member to restart");
        return Ok(());
    }
    if !req.force {
        confirm_restart(&members, scheduled_at.clone(), req.pending).await?;
    }
    let body = restart_body(&cluster, &req, scheduled_at.as_deref()).await?;
    let mut n_failed = 0;
    for member in &members {
        let flush = scheduled_at.is_some() && req.force && member.scheduled_restart;
        if !restart_member(client, member, &body, flush).await {
            n_failed += 1;
        }
    }
    all_succeeded("restart", n_failed, members.len())
}

/// The body of `POST /restart`, asking for the version filter unless `--force`.
async fn restart_body(cluster: &Cluster, req: &RestartRequest, scheduled_at: Option<&str>) -> anyhow::Result<Value> {
    let mut content = Map::new();
    if req.pending {
        content.insert("restart_pending".into(), Value::Bool(true));
    }
    let pg_version = match (&req.pg_version, req.force) {
        (Some(version), _) => version.clone(),
        (None, true) => String::new(),
        (None, false) => {
            let question = "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ";
            prompt::ask(question, "", "restart").await?
        }
    };
    if !pg_version.is_empty() {
        content.insert("postgres_version".into(), Value::from(pg_version));
    }
    if let Some(at) = scheduled_at {
        if cluster.paused() {
            anyhow::bail!("Can't schedule restart in the paused state");
        }
        content.insert("schedule".into(), Value::from(at));
    }
    if let Some(timeout) = &req.timeout {
        content.insert("timeout".into(), Value::from(timeout.as_str()));
    }
    Ok(Value::Object(content))
}

/// `POST /restart` on one member (after `DELETE /restart` when `flush`); prints its line, true on success.
async fn restart_member(client: &ApiClient, member: &Member, body: &Value, flush: bool) -> bool {
    let Some(base) = base_of(client, member) else { return false };
    if flush {
        match client.send(&base, Method::DELETE, "/restart", None).await {
            Ok(reply) if reply.status >= 400 => print_failure(&member.name, "flush scheduled restart", &reply),
            Ok(_) => {}
            Err(e) => println!("Failed: flush scheduled restart for member {}, ({e})", member.name),
        }
    }
    let (line, ok) = match client.send(&base, Method::POST, "/restart", Some(body)).await {
        Ok(reply) if reply.status == 200 => (format!("Success: restart on member {}", member.name), true),
        Ok(reply) if reply.status == 202 => (format!("Success: restart scheduled on member {}", member.name), true),
        Ok(reply) if reply.status == 409 => {
            (format!("Failed: another restart is already scheduled on member {}", member.name), false)
        }
        Ok(reply) => (failure_line(&member.name, "restart", &reply), false),
        Err(e) => (format!("Failed: restart for member {}, ({e})", member.name), false),
    };
    println!("{line}");
    ok
}

async fn confirm_restart(members: &[Member], scheduled_at: Option<String>, pending: bool) -> anyhow::Result<()> {
    let names = members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
    let (question, refusal) = match scheduled_at {
        Some(_) if pending => (
            "The nodes needing a restart will be identified at the scheduled time, and might be different from the \
             ones showing pending restart right now. Is this fine?"
                .to_string(),
            "Aborted scheduled restart",
        ),
        Some(at) => (
            format!("Are you sure you want to schedule restart of members {names} at {at}?"),
            "Aborted scheduled restart",
        ),
        None => (format!("Are you sure you want to restart members {names}?"), "Aborted restart"),
    };
    if prompt::confirm(&question, "restart").await? {
        Ok(())
    } else {
        Err(anyhow::anyhow!(refusal))
    }
}

/// `reload`.
pub async fn reload(client: &ApiClient, names: &[String], role: Option<RoleFilter>, force: bool) -> anyhow::Result<()> {
    let cluster = cluster::fetch(client).await?;
    let names = cluster.strip_cluster_name(names);
    let members: Vec<Member> = cluster.select(&names, role.unwrap_or(RoleFilter::Any))?.into_iter().cloned().collect();
    switchover::print_table(client).await;
    confirm_members(&members, "reload", force).await?;
    let loop_wait = loop_wait(client, &cluster).await;
    let mut n_failed = 0;
    for member in &members {
        let Some(base) = base_of(client, member) else {
            n_failed += 1;
            continue;
        };
        let line = match client.send(&base, Method::POST, "/reload", None).await {
            Ok(reply) if reply.status == 200 => format!("No changes to apply on member {}", member.name),
            Ok(reply) if reply.status == 202 => format!(
                "Reload request received for member {} and will be processed within {loop_wait} seconds",
                member.name
            ),
            Ok(reply) => {
                n_failed += 1;
                failure_line(&member.name, "reload", &reply)
            }
            Err(e) => {
                n_failed += 1;
                format!("Failed: reload for member {}, ({e})", member.name)
            }
        };
        println!("{line}");
    }
    all_succeeded("reload", n_failed, members.len())
}

/// What `flush` discards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlushTarget {
    /// The members' scheduled restarts.
    Restart,
    /// The cluster's scheduled switchover.
    Switchover,
}

/// `flush`: discards scheduled restarts (of the named members, else every member of `role`) or the scheduled
/// switchover, as patronictl does (`DELETE /restart` on each member that has one; `DELETE /switchover` on the
/// first member that answers, the leader first).
pub async fn flush(
    client: &ApiClient,
    names: &[String],
    target: FlushTarget,
    role: Option<RoleFilter>,
    force: bool,
) -> anyhow::Result<()> {
    let cluster = cluster::fetch(client).await?;
    let names = cluster.strip_cluster_name(names);
    match target {
        FlushTarget::Restart => {
            let members: Vec<Member> =
                cluster.select(&names, role.unwrap_or(RoleFilter::Any))?.into_iter().cloned().collect();
            if !force {
                switchover::print_table(client).await;
            }
            confirm_members(&members, "flush", force).await?;
            let mut n_failed = 0;
            for member in &members {
                if !member.scheduled_restart {
                    println!("No scheduled restart for member {}", member.name);
                    continue;
                }
                let Some(base) = base_of(client, member) else {
                    n_failed += 1;
                    continue;
                };
                match client.send(&base, Method::DELETE, "/restart", None).await {
                    Ok(reply) if reply.is_success() => {
                        println!("Success: flush scheduled restart for member {}", member.name)
                    }
                    Ok(reply) => {
                        n_failed += 1;
                        print_failure(&member.name, "flush scheduled restart", &reply);
                    }
                    Err(e) => {
                        n_failed += 1;
                        println!("Failed: flush scheduled restart for member {}, ({e})", member.name);
                    }
                }
            }
            all_succeeded("flush", n_failed, members.len())
        }
        FlushTarget::Switchover => {
            if cluster.json.get("scheduled_switchover").is_none_or(Value::is_null) {
                println!("No pending scheduled switchover");
                return Ok(());
            }
            let mut failures = Vec::new();
            for base in cluster.bases_leader_first(client) {
                match client.send(&base, Method::DELETE, "/switchover", None).await {
                    Ok(reply) if reply.status == 200 || reply.status == 404 => {
                        let prefix = if reply.status == 200 { "Success" } else { "Failed" };
                        println!("{prefix}: {}", reply.text());
                        return if reply.status == 200 { Ok(()) } else { Err(anyhow::anyhow!("{}", reply.text())) };
                    }
                    Ok(reply) => failures.push(format!("{}: {}", display_url(&base), reply.summary())),
                    Err(e) => failures.push(format!("{}: {e}", display_url(&base))),
                }
            }
            Err(anyhow::anyhow!("no member could discard the scheduled switchover ({})", failures.join("; ")))
        }
    }
}

/// `version`: the CLI's own version, then each member's (or the named members') Patroni API version, raftgres
/// version and PostgreSQL version, as patronictl prints them.
pub async fn version(client: &ApiClient, names: &[String]) -> anyhow::Result<()> {
    println!(
        "raftgres ctl version {} (patronictl {})",
        crate::status::RAFTGRES_VERSION,
        crate::status::PATRONI_VERSION
    );
    if names.is_empty() {
        return Ok(());
    }
    println!();
    let cluster = cluster::fetch(client).await?;
    let names = cluster.strip_cluster_name(names);
    for member in &cluster.members {
        if !names.is_empty() && !names.contains(&member.name) {
            continue;
        }
        let Some(base) = base_of(client, member) else { continue };
        match client.send(&base, Method::GET, "/patroni", None).await {
            Ok(reply) => match reply.json::<Value>() {
                Ok(status) => println!("{}: {}", member.name, describe_version(&status)),
                Err(e) => println!("{}: failed to get version: {e:#}", member.name),
            },
            Err(e) => println!("{}: failed to get version: {e}", member.name),
        }
    }
    Ok(())
}

/// PURE: `Patroni 4.1.4 (raftgres 0.1.0) PostgreSQL 15.8` from a `GET /patroni` document.
pub fn describe_version(status: &Value) -> String {
    let patroni = status["patroni"]["version"].as_str().unwrap_or("unknown");
    let raftgres =
        status["patroni"]["raftgres_version"].as_str().map(|v| format!(" (raftgres {v})")).unwrap_or_default();
    let pg =
        status["server_version"].as_u64().map(|v| format!(" PostgreSQL {}", format_pg_version(v))).unwrap_or_default();
    format!("Patroni {patroni}{raftgres}{pg}")
}

/// PURE: `server_version_num` as people write it (90624 → 9.6.24, 150008 → 15.8).
pub fn format_pg_version(version: u64) -> String {
    if version < 100_000 {
        format!("{}.{}.{}", version / 10_000, version / 100 % 100, version % 100)
    } else {
        format!("{}.{}", version / 10_000, version % 10_000)
    }
}

/// `reinit`'s options.
#[derive(Debug, Clone, Default)]
pub struct ReinitRequest {
    /// Member names (a leading cluster name is accepted and checked).
    pub members: Vec<String>,
    /// `--from-leader`: clone from the leader, not from a `clonefrom` member.
    pub from_leader: bool,
    /// `--wait`: until the members run again.
    pub wait: bool,
    /// `--force`.
    pub force: bool,
}

/// `reinit`: replicas only.
pub async fn reinit(client: &ApiClient, req: ReinitRequest) -> anyhow::Result<()> {
    let cluster = cluster::fetch(client).await?;
    let names = cluster.strip_cluster_name(&req.members);
    anyhow::ensure!(!names.is_empty(), "name the member to reinitialize");
    let members: Vec<Member> = cluster.select(&names, RoleFilter::Replica)?.into_iter().cloned().collect();
    switchover::print_table(client).await;
    confirm_members(&members, "reinitialize", req.force).await?;
    let mut started = Vec::new();
    let mut n_failed = 0;
    for member in &members {
        let Some(base) = base_of(client, member) else {
            n_failed += 1;
            continue;
        };
        let started_at = postmaster_start_time(client, &base).await;
        let mut force = req.force;
        loop {
            let body = serde_json::json!({"force": force, "from_leader": req.from_leader});
            match client.send(&base, Method::POST, "/reinitialize", Some(&body)).await {
                Ok(reply) if reply.status < 400 => {
                    println!("Success: reinitialize for member {}", member.name);
                    started.push((member.name.clone(), base.clone(), started_at.clone()));
                }
                Ok(reply) => {
                    print_failure(&member.name, "reinitialize", &reply);
                    let in_progress = reply.text().ends_with(" already in progress");
                    let question = "Do you want to cancel it and reinitialize anyway?";
                    if in_progress && !force && prompt::confirm(question, "reinitialize").await? {
                        force = true;
                        continue;
                    }
                    n_failed += 1;
                }
                Err(e) => {
                    println!("Failed: reinitialize for member {}, ({e})", member.name);
                    n_failed += 1;
                }
            }
            break;
        }
    }
    if req.wait && !started.is_empty() {
        wait_for_reinit(client, started).await;
    }
    all_succeeded("reinitialize", n_failed, members.len())
}

/// Polls each member's `GET /patroni` until it runs a new postmaster (a start time other than before the request).
async fn wait_for_reinit(client: &ApiClient, mut waiting: Vec<(String, Url, Option<String>)>) {
    let names = waiting.iter().map(|(name, _, _)| name.as_str()).collect::<Vec<_>>().join(", ");
    println!("Waiting for reinitialize to complete on: {names}");
    while !waiting.is_empty() {
        tokio::time::sleep(REINIT_POLL).await;
        let mut still = Vec::new();
        for (name, base, before) in waiting {
            let status = match client.send(&base, Method::GET, "/patroni", None).await {
                Ok(reply) => reply.json::<Value>().ok(),
                Err(_) => None,
            };
            let running = status.as_ref().and_then(|s| s.get("state")).and_then(Value::as_str) == Some("running");
            let start_time = status.as_ref().and_then(|s| s.get("postmaster_start_time")).and_then(Value::as_str);
            if running && start_time.is_some() && start_time != before.as_deref() {
                println!("Reinitialize is completed on: {name}");
            } else {
                still.push((name, base, before));
            }
        }
        waiting = still;
    }
}

/// The member's `postmaster_start_time`, if it answers and runs.
async fn postmaster_start_time(client: &ApiClient, base: &Url) -> Option<String> {
    let reply = client.send(base, Method::GET, "/patroni", None).await.ok()?;
    let status: Value = reply.json().ok()?;
    status.get("postmaster_start_time").and_then(Value::as_str).map(String::from)
}

/// patronictl's `confirm_members_action` for an immediate action.
async fn confirm_members(members: &[Member], action: &str, force: bool) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    let names = members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
    if prompt::confirm(&format!("Are you sure you want to {action} members {names}?"), action).await? {
        Ok(())
    } else {
        Err(anyhow::anyhow!("Aborted {action}"))
    }
}

/// The member's REST API, or a printed failure when its `api_url` is unusable.
fn base_of(client: &ApiClient, member: &Member) -> Option<Url> {
    match client.member_base(&member.api_url) {
        Ok(base) => Some(base),
        Err(e) => {
            println!("Failed: member {} has no usable REST API address ({e:#})", member.name);
            None
        }
    }
}

/// `loop_wait` of the dynamic configuration, for reload's message.
async fn loop_wait(client: &ApiClient, cluster: &Cluster) -> u64 {
    let config = client.send(&cluster.node, Method::GET, "/config", None).await.ok().filter(Reply::is_success);
    let config = config.and_then(|reply| reply.json::<Value>().ok()).unwrap_or(Value::Null);
    cluster::timing(&config).loop_wait.as_secs()
}

fn failure_line(member: &str, action: &str, reply: &Reply) -> String {
    format!("Failed: {action} for member {member}, status code={}, ({})", reply.status, reply.text())
}

fn print_failure(member: &str, action: &str, reply: &Reply) {
    println!("{}", failure_line(member, action, reply));
}

fn all_succeeded(action: &str, n_failed: usize, n_members: usize) -> anyhow::Result<()> {
    if n_failed == 0 {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{action} failed on {n_failed} of {n_members} members"))
    }
}
