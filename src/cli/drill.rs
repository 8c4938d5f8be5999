//! `raftgres drill`: a planned switchover (or, with `--crash`, a SIGKILL of the primary's raftgres and postmaster
//! on this host) under a write load through the application's own endpoint (`--dsn`), then the client-visible
//! write gap, the promotion's phases from `GET /history/promotions` and a verdict against `--max-gap`.
//!
//! The load is one writer: every `--interval` a fresh connection through the DSN (as a client behind HAProxy
//! would open one) inserts one row into `raftgres_drill`, which the drill creates if missing and drops at the end
//! only if it created it. The cluster is reached through the REST API (`cli::client`); PostgreSQL only through
//! the DSN, as `cli::query` does. The conclusions are drawn by the pure `drill::report`; `drill::crash` finds and
//! kills the local processes. Stdout carries only the `drill:` lines; progress goes to stderr.

pub mod crash;
pub mod report;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::Method;
use reqwest::Url;
use serde_json::json;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::report::Attempt;
use self::report::Verdict;
use super::client::ApiClient;
use super::cluster;
use super::cluster::Cluster;
use super::ClusterArgs;

/// The drill's table.
const TABLE: &str = "raftgres_drill";
/// Consecutive acknowledged writes before the trigger.
const WARM_UP_WRITES: usize = 5;
/// Consecutive acknowledged writes after the leader changed, before the drill stops.
const SETTLED_WRITES: usize = 20;
/// How long one connection attempt of the load may take, per host (libpq's `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one write (connect and INSERT) may take before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the drill looks at the load and the cluster.
const POLL: Duration = Duration::from_millis(100);
/// How long the new leader gets to publish its promotion record.
const HISTORY_WAIT: Duration = Duration::from_secs(10);

/// `drill`.
#[derive(Debug, Clone, clap::Args)]
pub struct DrillArgs {
    /// The cluster name.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The application's endpoint (e.g. HAProxy's primary port): `host=… port=… user=… dbname=…` or a postgres://
    /// URL; the password from it, else PGPASSWORD, else the pgpass file.
    #[arg(long, value_name = "CONNINFO")]
    pub dsn: String,
    /// The member to switch over to (without one the healthiest replica wins).
    #[arg(long, value_name = "MEMBER", conflicts_with = "crash")]
    pub candidate: Option<String>,
    /// Instead of a switchover, SIGKILL the primary's raftgres and then its postmaster (the primary must run on
    /// this host).
    #[arg(long)]
    pub crash: bool,
    /// The bound on the client-visible write gap (e.g. 2s, 1500ms); exceeding it exits 1.
    #[arg(long, value_name = "DURATION", value_parser = report::parse_duration)]
    pub max_gap: Option<Duration>,
    /// Time between two writes.
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = report::parse_duration)]
    pub interval: Duration,
    /// How long the whole drill may take.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = report::parse_duration)]
    pub timeout: Duration,
    /// Do not ask before acting.
    #[arg(long)]
    pub force: bool,
}

/// What the drill does to the primary.
enum Trigger {
    Switchover { candidate: Option<String> },
    Crash(crash::LocalNode),
}

/// What the writer recorded.
#[derive(Debug, Default)]
struct Recorded {
    attempts: Vec<Attempt>,
    last_error: Option<String>,
}

type Shared = Arc<Mutex<Recorded>>;

/// What the drill saw between the trigger and the end.
struct Outcome {
    /// The trigger, from the start of the load.
    trigger: Duration,
    /// The trigger on this host's wall clock, ms since the epoch.
    trigger_ms: u64,
    /// How many promotion records `GET /history/promotions` held before the trigger.
    n_promotions_before: usize,
    /// The new leader and when the API first named it, from the start of the load.
    new_leader: String,
    leader_seen: Duration,
    /// The new leader's REST API.
    new_leader_base: Option<Url>,
}

/// Runs the drill; an error when it could not run or when the gap exceeded `--max-gap`.
pub async fn run(client: &ApiClient, args: DrillArgs) -> anyhow::Result<()> {
    let pg = pg_config(&args.dsn)?;
    let cluster = cluster::fetch(client).await?;
    cluster.check_name(args.cluster.cluster.as_deref())?;
    let leader = cluster.leader().context("This cluster has no leader")?.name.clone();
    let trigger = match args.crash {
        true => Trigger::Crash(crash::find(&crash::Identity::of(&cluster, &leader)?)?),
        false => Trigger::Switchover { candidate: args.candidate.clone() },
    };
    if !args.force {
        let what = match &trigger {
            Trigger::Switchover { .. } => format!("switch over from {leader}"),
            Trigger::Crash(node) => format!(
                "SIGKILL {leader}'s raftgres (pid {}) and postmaster ({})",
                node.raftgres_pid,
                node.postmaster_pid.map_or("none running".to_string(), |pid| format!("pid {pid}"))
            ),
        };
        let question = format!("Are you sure you want to {what} in cluster {} under a write load?", cluster.scope);
        if !super::prompt::confirm(&question, "drill").await? {
            anyhow::bail!("Aborting drill");
        }
    }
    let deadline = Instant::now() + args.timeout;
    let created = create_table(&pg).await?;
    let shared = Shared::default();
    let stop = CancellationToken::new();
    let start = Instant::now();
    let writer = tokio::spawn(write_load(pg.clone(), args.interval, start, shared.clone(), stop.clone()));
    let res = drive(client, &cluster, &leader, &trigger, &shared, start, deadline).await;
    stop.cancel();
    if let Err(e) = writer.await {
        eprintln!("warning: the write load ended abnormally: {e}");
    }
    if created {
        if let Err(e) = drop_table(&pg).await {
            eprintln!("warning: cannot drop the table {TABLE}: {e:#}");
        }
    }
    let recorded = std::mem::take(&mut *shared.lock().unwrap_or_else(PoisonError::into_inner));
    let outcome = res?;
    report(client, &leader, &trigger, &recorded, &outcome, &args).await
}

/// Warm-up, trigger, wait for the new leader and for the writes to settle.
async fn drive(
    client: &ApiClient,
    cluster: &Cluster,
    leader: &str,
    trigger: &Trigger,
    shared: &Shared,
    start: Instant,
    deadline: Instant,
) -> anyhow::Result<Outcome> {
    eprintln!("drill: waiting for {WARM_UP_WRITES} consecutive writes through --dsn");
    wait_writes(shared, WARM_UP_WRITES, Duration::ZERO, deadline, "the warm-up").await?;
    let bases = cluster.bases_leader_first(client);
    let n_promotions_before = match client.first_success(&bases, Method::GET, "/history/promotions", None).await {
        Ok(reply) => reply.json::<Value>().ok().and_then(|rows| rows.as_array().map(Vec::len)).unwrap_or(0),
        Err(_) => 0,
    };
    let trigger_at = start.elapsed();
    let trigger_ms = raft::lease::wall_ms();
    match trigger {
        Trigger::Switchover { candidate } => {
            eprintln!("drill: requesting a switchover from {leader}");
            let mut body = json!({"leader": leader});
            if let Some(candidate) = candidate {
                body["candidate"] = Value::from(candidate.as_str());
            }
            let reply = client.first_answer(&bases, Method::POST, "/switchover", Some(&body)).await?;
            if reply.status != 200 {
                anyhow::bail!("Switchover failed, details: {}, {}", reply.status, reply.text());
            }
        }
        Trigger::Crash(node) => {
            let postmaster = node.postmaster_pid.map_or("none running".to_string(), |pid| format!("pid {pid}"));
            eprintln!(
                "drill: killing {leader}'s raftgres (pid {}, {}) and postmaster ({postmaster})",
                node.raftgres_pid,
                node.config.display()
            );
            crash::kill(node)?;
        }
    }
    let (new_leader, new_leader_base) = wait_new_leader(client, &bases, leader, deadline).await?;
    let leader_seen = start.elapsed();
    eprintln!("drill: {new_leader} leads; waiting for {SETTLED_WRITES} consecutive writes");
    wait_writes(shared, SETTLED_WRITES, leader_seen, deadline, "the writes to resume").await?;
    Ok(Outcome { trigger: trigger_at, trigger_ms, n_promotions_before, new_leader, leader_seen, new_leader_base })
}

/// Waits until the last `n` writes ended after `after` all succeeded.
async fn wait_writes(shared: &Shared, n: usize, after: Duration, deadline: Instant, what: &str) -> anyhow::Result<()> {
    loop {
        {
            let recorded = shared.lock().unwrap_or_else(PoisonError::into_inner);
            if report::ends_with_successes(&recorded.attempts, n, after) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let last = recorded.last_error.as_deref().unwrap_or("none");
                anyhow::bail!("--timeout ran out during {what}: no {n} consecutive writes (last write error: {last})");
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `GET /cluster` on every member until another member than `old` holds the leader key.
async fn wait_new_leader(
    client: &ApiClient,
    bases: &[Url],
    old: &str,
    deadline: Instant,
) -> anyhow::Result<(String, Option<Url>)> {
    loop {
        if let Ok(reply) = client.first_success(bases, Method::GET, "/cluster", None).await {
            if let Ok(json) = reply.json::<Value>() {
                let cluster = Cluster::from_json(reply.node, json);
                if let Some(leader) = cluster.leader().filter(|leader| leader.name != old) {
                    return Ok((leader.name.clone(), client.member_base(&leader.api_url).ok()));
                }
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!("--timeout ran out before another member than {old} became the leader");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Prints the `drill:` lines; an error when the gap exceeded `--max-gap`.
async fn report(
    client: &ApiClient,
    leader: &str,
    trigger: &Trigger,
    recorded: &Recorded,
    outcome: &Outcome,
    args: &DrillArgs,
) -> anyhow::Result<()> {
    let what = match trigger {
        Trigger::Switchover { .. } => "switchover",
        Trigger::Crash(_) => "crash",
    };
    println!("drill: {what} {leader} -> {}", outcome.new_leader);
    let n_ok = recorded.attempts.iter().filter(|attempt| attempt.ok).count();
    let n_failed = recorded.attempts.len() - n_ok;
    println!("drill: writes: {n_ok} ok, {n_failed} failed (one every {} ms)", args.interval.as_millis());
    println!("drill: new leader seen: {} s", report::relative(outcome.leader_seen, outcome.trigger));
    let gap = report::write_gap(&recorded.attempts, outcome.trigger)
        .context("no write was acknowledged on both sides of the trigger")?;
    println!(
        "drill: client write gap: {} s (from {} s to {} s)",
        report::secs(gap.length()),
        report::relative(gap.from, outcome.trigger),
        report::relative(gap.to, outcome.trigger)
    );
    match promotion(client, outcome).await {
        Some(promotion) => report::phase_lines(&promotion, outcome.trigger_ms).iter().for_each(|l| println!("{l}")),
        None => println!("drill: promotion phases: {} published no promotion record", outcome.new_leader),
    }
    let verdict = Verdict::of(gap.length(), args.max_gap);
    println!("{}", verdict.line());
    match verdict {
        Verdict::Fail { .. } => anyhow::bail!("the client write gap exceeded --max-gap"),
        Verdict::Pass { .. } | Verdict::NoBound => Ok(()),
    }
}

/// The new leader's promotion record from its `GET /history/promotions` (any member's when it does not answer),
/// once it holds a record of the new leader written after the trigger.
async fn promotion(client: &ApiClient, outcome: &Outcome) -> Option<Value> {
    let nodes: Vec<Url> = outcome.new_leader_base.iter().cloned().chain(client.nodes().iter().cloned()).collect();
    let deadline = Instant::now() + HISTORY_WAIT;
    loop {
        if let Ok(reply) = client.first_success(&nodes, Method::GET, "/history/promotions", None).await {
            if let Ok(promotions) = reply.json::<Value>() {
                let found = report::promotion_of(&promotions, &outcome.new_leader, outcome.n_promotions_before);
                if let Some(found) = found {
                    return Some(found.clone());
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The DSN as tokio-postgres reads it, with libpq's defaults filled in: the user (PGUSER, else the OS user), the
/// password (PGPASSWORD, else the pgpass file, matched against each host), a 1 s connect timeout.
fn pg_config(dsn: &str) -> anyhow::Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = dsn.parse().context("parse --dsn")?;
    if config.get_user().is_none() {
        config.user(super::query::env("PGUSER").unwrap_or_else(super::query::os_user));
    }
    if config.get_password().is_none() {
        let user = config.get_user().unwrap_or_default().to_string();
        let dbname = config.get_dbname().unwrap_or(&user).to_string();
        let ports = config.get_ports();
        let from_pgpass = config.get_hosts().iter().enumerate().find_map(|(idx, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(_) => "localhost".to_string(),
            };
            let port = ports.get(idx).or(ports.first()).copied().unwrap_or(5432);
            super::query::pgpass_password(&host, port, &dbname, &user)
        });
        if let Some(password) = super::query::env("PGPASSWORD").or(from_pgpass) {
            config.password(password);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("raftgres drill");
    }
    Ok(config)
}

/// One connection through the DSN, its driver task running until the client is dropped.
async fn connect(pg: &tokio_postgres::Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = pg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // The connection's end (or error) shows in the client's next call.
        let _ = connection.await;
    });
    Ok(client)
}

/// Creates the drill's table; true when it did not exist before.
async fn create_table(pg: &tokio_postgres::Config) -> anyhow::Result<bool> {
    let client = connect(pg).await.context("connect through --dsn")?;
    let sql =
        format!("CREATE TABLE {TABLE} (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), client_ms bigint)");
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("create the table {TABLE} through --dsn")),
    }
}

async fn drop_table(pg: &tokio_postgres::Config) -> anyhow::Result<()> {
    let client = connect(pg).await.context("connect through --dsn")?;
    client.batch_execute(&format!("DROP TABLE IF EXISTS {TABLE}")).await.context("DROP TABLE")
}

/// The writer: every `interval` one INSERT on a fresh connection, each outcome recorded, until `stop`.
async fn write_load(
    pg: tokio_postgres::Config,
    interval: Duration,
    start: Instant,
    shared: Shared,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let client_ms = raft::lease::wall_ms();
        let res = match tokio::time::timeout(WRITE_TIMEOUT, write_once(&pg, client_ms)).await {
            Ok(res) => res,
            Err(_elapsed) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
        };
        let mut recorded = shared.lock().unwrap_or_else(PoisonError::into_inner);
        recorded.attempts.push(Attempt { at: start.elapsed(), ok: res.is_ok() });
        if let Err(e) = res {
            recorded.last_error = Some(e);
        }
    }
}

async fn write_once(pg: &tokio_postgres::Config, client_ms: u64) -> Result<(), String> {
    let error = |e: tokio_postgres::Error| crate::postgres::supervisor::error_chain(&e).replace('\n', " ");
    let client = connect(pg).await.map_err(error)?;
    client.batch_execute(&format!("INSERT INTO {TABLE} (client_ms) VALUES ({client_ms})")).await.map_err(error)
}
