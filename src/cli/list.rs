//! `raftgres list`, `topology` and `history`: patronictl's `output_members` over `GET /cluster`, plus the
//! raftgres footer that names the leader lease holder, its fencing token and the time left on the lease.
//!
//! [`render_list`] is PURE over a "list document": the `GET /cluster` JSON, optionally with `initialize` (the
//! system identifier, for the title) and `leader_lease` (`{holder, fencing_token, remaining}`), which
//! [`list_document`] adds from `GET /patroni` and `GET /raft` when `/cluster` does not carry them.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use reqwest::Url;
use serde_json::Map;
use serde_json::Value;

use crate::cli::client::ApiClient;
use crate::cli::cluster::truthy;
use crate::cli::table;
use crate::cli::table::Format;
use crate::cli::table::Output;

/// Columns of `list`, as patronictl 4.1 names them in tsv, json and yaml.
const BASE_COLUMNS: [&str; 10] =
    ["Cluster", "Member", "Host", "Role", "State", "TL", "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag"];
/// Columns added when `--extended` or when any member has a value for them.
const EXTRA_COLUMNS: [&str; 4] = ["Pending restart", "Pending restart reason", "Scheduled restart", "Tags"];
/// Right-aligned columns in the human forms.
const RIGHT_ALIGNED: &[&str] = &["TL", "Receive LSN", "Replay LSN", "Lag"];
/// PostgreSQL's default port: hosts show `:port` only when some member runs elsewhere (or hosts repeat).
const DEFAULT_PG_PORT: u64 = 5432;
/// patronictl hides a pending restart reason longer than this in the pretty table.
const MAX_REASON_CHARS: usize = 50;

/// PURE: the `list` output (table, then the footer in the human forms) of a list document.
pub fn render_list(document: &Value, format: Format, extended: bool) -> String {
    let output = list_output(document, format, extended);
    let mut res = table::render(&output, format);
    if format.is_human() {
        for line in footer(document) {
            res.push(' ');
            res.push_str(&line);
            res.push('\n');
        }
    }
    res
}

/// `GET /cluster` from the first node that answers, with the title's system identifier and the leader lease.
pub async fn list_document(client: &ApiClient) -> anyhow::Result<Value> {
    let reply = client.get_any("/cluster").await?;
    let mut document: Value = reply.json()?;
    let mut nodes = vec![reply.node.clone()];
    nodes.extend(member_bases(client, &document).into_iter().filter(|base| *base != reply.node));
    if document.get("initialize").is_none() {
        if let Some(sysid) = system_identifier(client, &nodes).await {
            document["initialize"] = Value::from(sysid);
        }
    }
    if document.get("leader_lease").is_none() {
        if let Some(lease) = leader_lease(client, &nodes).await {
            document["leader_lease"] = lease;
        }
    }
    Ok(document)
}

/// What `list` and `topology` print, and how often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ListOptions {
    /// Output format (`Topology` for `topology`).
    pub format: Format,
    /// Show the extra columns even when empty.
    pub extended: bool,
    /// Print a timestamp before each table.
    pub timestamp: bool,
    /// Print again every this many seconds until Ctrl-C.
    pub watch: Option<f64>,
}

/// Prints the list (every `watch` seconds until Ctrl-C when set).
pub async fn run_list(client: &ApiClient, cluster_name: Option<&str>, options: ListOptions) -> anyhow::Result<()> {
    let interval =
        options.watch.map(|secs| Duration::try_from_secs_f64(secs.max(0.1)).unwrap_or(Duration::from_secs(2)));
    loop {
        let document = list_document(client).await?;
        let scope = document.get("scope").and_then(Value::as_str).unwrap_or_default();
        if let Some(name) = cluster_name.filter(|name| *name != scope) {
            anyhow::bail!("the nodes serve cluster {scope:?}, not {name:?}");
        }
        if interval.is_some() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            print!("\x1b[2J\x1b[H");
        }
        if options.timestamp {
            println!("{}", chrono::Local::now().format("%Y-%m-%d %H:%M:%S"));
        }
        print!("{}", render_list(&document, options.format, options.extended));
        let Some(interval) = interval else { return Ok(()) };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `history`: the timeline switches of `GET /history`.
pub async fn run_history(client: &ApiClient, cluster_name: Option<&str>, format: Format) -> anyhow::Result<()> {
    if cluster_name.is_some() {
        crate::cli::cluster::fetch(client).await?.check_name(cluster_name)?;
    }
    let history: Value = client.get_any("/history").await?.json()?;
    // How each promotion unfolded (raftgres' own; a node without the endpoint answers the plain history).
    let promotions = match client.get_any("/history/promotions").await.and_then(|res| res.json::<Value>()) {
        Ok(Value::Array(items)) if items.iter().all(Value::is_object) => Value::Array(items),
        _ => Value::Array(Vec::new()),
    };
    print!("{}", render_history(&history, &promotions, format));
    Ok(())
}

/// PURE: the `history` table; lines shorter than five fields (old Patroni) are padded with `""`. With
/// `promotions` (`GET /history/promotions`), a `Kind` column says whether each switch was a failover or a
/// switchover.
pub fn render_history(history: &Value, promotions: &Value, format: Format) -> String {
    let mut columns: Vec<String> = ["TL", "LSN", "Reason", "Timestamp", "New Leader"].map(String::from).to_vec();
    let kinds: Vec<(Value, Value)> = promotions
        .as_array()
        .map(|items| items.iter().map(|p| (p["timeline"].clone(), p["kind"].clone())).collect())
        .unwrap_or_default();
    if !kinds.is_empty() {
        columns.push("Kind".to_owned());
    }
    let rows = history
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|line| {
                    let mut row: Vec<Value> = line.as_array().cloned().unwrap_or_default();
                    row.truncate(5);
                    row.resize(5, Value::from(""));
                    if !kinds.is_empty() {
                        let timeline = row.first().cloned().unwrap_or(Value::Null);
                        let kind = kinds.iter().find(|(tl, _)| *tl == timeline).map(|(_, kind)| kind.clone());
                        row.push(kind.unwrap_or_else(|| Value::from("")));
                    }
                    row
                })
                .collect()
        })
        .unwrap_or_default();
    table::render(&Output { columns, rows, right_aligned: &["TL", "LSN"], title: String::new() }, format)
}

fn list_output(document: &Value, format: Format, extended: bool) -> Output<'static> {
    let name = document.get("scope").and_then(Value::as_str).unwrap_or_default();
    let initialize = match document.get("initialize") {
        None | Some(Value::Null) => "uninitialized".to_string(),
        Some(value) if table::text(value).is_empty() => "initializing".to_string(),
        Some(value) => table::text(value),
    };
    let members: Vec<&Map<String, Value>> = document
        .get("members")
        .and_then(Value::as_array)
        .map(|members| members.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default();
    let with_host: Vec<&&Map<String, Value>> = members.iter().filter(|m| m.contains_key("host")).collect();
    let mut columns: Vec<String> = BASE_COLUMNS.map(String::from).to_vec();
    for column in EXTRA_COLUMNS {
        if extended || with_host.iter().any(|m| m.get(&snake(column)).is_some_and(truthy)) {
            columns.push(column.to_string());
        }
    }
    let hosts: Vec<String> = with_host.iter().map(|m| m.get("host").map(table::text).unwrap_or_default()).collect();
    let n_distinct_hosts = hosts.iter().collect::<std::collections::BTreeSet<_>>().len();
    let append_port =
        with_host.iter().any(|m| m.get("port").and_then(Value::as_u64).is_some_and(|p| p != DEFAULT_PG_PORT))
            || n_distinct_hosts < with_host.len();
    let ordered = if format == Format::Topology { topology_sort(&members) } else { plain_order(&members) };
    let rows = ordered
        .into_iter()
        .map(|(member, display_name)| {
            let cells = member_cells(name, member, display_name, append_port, format);
            columns.iter().map(|column| cells.get(column.as_str()).cloned().unwrap_or(Value::from(""))).collect()
        })
        .collect();
    if format.is_human() {
        for column in columns.iter_mut().filter(|c| *c == "Receive Lag" || *c == "Replay Lag") {
            *column = "Lag".to_string();
        }
    }
    Output { columns, rows, right_aligned: RIGHT_ALIGNED, title: format!(" Cluster: {name} ({initialize}) ") }
}

/// One member's values by column.
fn member_cells(
    cluster: &str,
    member: &Map<String, Value>,
    display_name: String,
    append_port: bool,
    format: Format,
) -> BTreeMap<&'static str, Value> {
    let get = |key: &str| member.get(key).cloned().unwrap_or(Value::from(""));
    let (mut receive_lsn, mut receive_lag) = (get("receive_lsn"), get("receive_lag"));
    let (mut replay_lsn, mut replay_lag) = (get("replay_lsn"), get("replay_lag"));
    let lsn = get("lsn");
    // Members of old Patroni versions published only `lsn`/`lag`.
    if receive_lsn == "unknown" && replay_lsn == "unknown" && !table::text(&lsn).is_empty() && lsn != "unknown" {
        if get("state") == "streaming" {
            (receive_lsn, receive_lag) = (lsn, get("lag"));
        } else {
            (replay_lsn, replay_lag) = (lsn, get("lag"));
        }
    }
    let mut host = table::text(&get("host"));
    if let Some(port) = member.get("port").filter(|_| append_port && !host.is_empty()).map(table::text) {
        host = format!("{host}:{port}");
    }
    let reasons = member.get("pending_restart_reason").and_then(Value::as_object);
    let reason_lines: Vec<String> = reasons
        .into_iter()
        .flatten()
        .map(|(param, values)| {
            let side = |key: &str| values.get(key).map(table::text).unwrap_or_default();
            let full = format!("{param}: {}->{}", side("old_value"), side("new_value"));
            if format.is_human() && full.chars().count() > MAX_REASON_CHARS {
                format!("{param}: [hidden - too long]")
            } else {
                full
            }
        })
        .collect();
    let mut cells = BTreeMap::new();
    cells.insert("Cluster", Value::from(cluster));
    cells.insert("Member", Value::from(display_name));
    cells.insert("Host", Value::from(host));
    cells.insert("Role", Value::from(title_case(&table::text(&get("role")))));
    cells.insert("State", get("state"));
    cells.insert("TL", get("timeline"));
    cells.insert("Receive LSN", receive_lsn);
    cells.insert("Receive Lag", lag_mb(&receive_lag));
    cells.insert("Replay LSN", replay_lsn);
    cells.insert("Replay Lag", lag_mb(&replay_lag));
    let pending = member.get("pending_restart").is_some_and(truthy);
    cells.insert("Pending restart", Value::from(if pending { "*" } else { "" }));
    cells.insert("Pending restart reason", Value::from(reason_lines.join("\n")));
    cells.insert("Scheduled restart", scheduled_restart(member.get("scheduled_restart")));
    cells.insert("Tags", tags_cell(member.get("tags"), format));
    cells
}

/// Bytes behind → MiB, rounded half to even as Python's `round`; `unknown` → empty.
fn lag_mb(lag: &Value) -> Value {
    match lag {
        Value::Number(bytes) if bytes.is_i64() || bytes.is_u64() => {
            let mib = bytes.as_f64().unwrap_or(0.0) / 1024.0 / 1024.0;
            Value::from(mib.round_ties_even() as i64)
        }
        Value::String(text) if text == "unknown" => Value::from(""),
        other => other.clone(),
    }
}

fn scheduled_restart(value: Option<&Value>) -> Value {
    let Some(scheduled) = value.filter(|v| truthy(v)) else { return Value::from("") };
    let mut text = scheduled.get("schedule").map(table::text).unwrap_or_default();
    if let Some(version) = scheduled.get("postgres_version") {
        text.push_str(&format!(" if version < {}", table::text(version)));
    }
    Value::from(text)
}

/// Tags: YAML block style in the pretty table, flow style in tsv and topology, the map itself in json and yaml.
fn tags_cell(tags: Option<&Value>, format: Format) -> Value {
    match tags.and_then(Value::as_object).filter(|tags| !tags.is_empty()) {
        None => Value::from(""),
        Some(tags) => match format {
            Format::Pretty => Value::from(table::to_yaml(&Value::Object(tags.clone())).trim_end().to_string()),
            Format::Tsv | Format::Topology => Value::from(table::to_yaml_flow(tags)),
            Format::Json | Format::Yaml => Value::Object(tags.clone()),
        },
    }
}

/// `sync_standby` → `Sync Standby` (Python's `str.title` after replacing `_`).
fn title_case(role: &str) -> String {
    role.replace('_', " ")
        .split(' ')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

fn snake(column: &str) -> String {
    column.to_lowercase().replace(' ', "_")
}

fn member_name(member: &Map<String, Value>) -> String {
    member.get("name").map(table::text).unwrap_or_default()
}

fn plain_order<'m>(members: &[&'m Map<String, Value>]) -> Vec<(&'m Map<String, Value>, String)> {
    members.iter().map(|member| (*member, member_name(member))).collect()
}

/// patronictl's `topology_sort`: the leader, then each replica under the member it replicates from
/// (`replicatefrom` tag), names prefixed `+ ` with two more spaces per level.
fn topology_sort<'m>(members: &[&'m Map<String, Value>]) -> Vec<(&'m Map<String, Value>, String)> {
    let is_leader = |m: &Map<String, Value>| m.get("role").map(table::text).is_some_and(|r| r.ends_with("leader"));
    let leader = members.iter().find(|m| is_leader(m)).map(|m| member_name(m));
    let replicas: Vec<String> = members.iter().filter(|m| !is_leader(m)).map(|m| member_name(m)).collect();
    let mut children: BTreeMap<Option<String>, Vec<&'m Map<String, Value>>> = BTreeMap::new();
    for member in members.iter().filter(|m| !is_leader(m)) {
        let parent = member
            .get("tags")
            .and_then(|tags| tags.get("replicatefrom"))
            .map(table::text)
            .filter(|parent| *parent != member_name(member) && replicas.contains(parent));
        children.entry(parent.or_else(|| leader.clone())).or_default().push(member);
    }
    let mut res = Vec::new();
    if let Some(leader_member) = members.iter().find(|m| is_leader(m)) {
        res.push((*leader_member, member_name(leader_member)));
    }
    let mut stack: Vec<(usize, &'m Map<String, Value>)> =
        children.get(&leader).into_iter().flatten().rev().map(|member| (1, *member)).collect();
    while let Some((level, member)) = stack.pop() {
        res.push((member, format!("{}+ {}", " ".repeat((level - 1) * 2), member_name(member))));
        let below = children.get(&Some(member_name(member))).into_iter().flatten().rev();
        stack.extend(below.map(|child| (level + 1, *child)));
    }
    res
}

/// patronictl's service information, then the raftgres lease line.
fn footer(document: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    if document.get("pause").is_some_and(truthy) {
        lines.push("Maintenance mode: on".to_string());
    }
    if let Some(switchover) = document.get("scheduled_switchover") {
        let mut info =
            format!("Switchover scheduled at: {}", switchover.get("at").map(table::text).unwrap_or_default());
        for key in ["from", "to"] {
            if let Some(value) = switchover.get(key) {
                info.push_str(&format!("\n{key:>24}: {}", table::text(value)));
            }
        }
        lines.push(info);
    }
    for member in document.get("members").and_then(Value::as_array).into_iter().flatten() {
        let Some(failing) = member.get("failing").filter(|f| f.is_object()) else { continue };
        let field = |key: &str| failing.get(key).map(table::text).unwrap_or_default();
        lines.push(format!(
            "{}: {} failing ({} attempts, next at {}): {}",
            member.get("name").map(table::text).unwrap_or_default(),
            field("action"),
            field("attempts"),
            field("retry_at"),
            field("error")
        ));
    }
    match document.get("leader_lease") {
        None => {}
        Some(Value::Null) => lines.push("Leader lease: none".to_string()),
        Some(lease) => {
            let holder = lease.get("holder").map(table::text).unwrap_or_default();
            let mut details = Vec::new();
            if let Some(token) = lease.get("fencing_token").filter(|t| !t.is_null()) {
                details.push(format!("fencing token {}", table::text(token)));
            }
            if let Some(remaining) = lease.get("remaining").and_then(Value::as_f64) {
                details.push(format!("expires in {remaining:.1} s"));
            }
            let details = if details.is_empty() { String::new() } else { format!(" ({})", details.join(", ")) };
            lines.push(format!("Leader lease: {holder}{details}"));
        }
    }
    lines
}

/// Base URLs of the members of a `GET /cluster` document.
fn member_bases(client: &ApiClient, document: &Value) -> Vec<Url> {
    let members = document.get("members").and_then(Value::as_array).cloned().unwrap_or_default();
    members
        .iter()
        .filter_map(|member| member.get("api_url").and_then(Value::as_str))
        .filter_map(|api_url| client.member_base(api_url).ok())
        .collect()
}

/// The system identifier from the first node whose `GET /patroni` knows it.
async fn system_identifier(client: &ApiClient, nodes: &[Url]) -> Option<String> {
    for node in nodes {
        let Ok(reply) = client.send(node, Method::GET, "/patroni", None).await else { continue };
        let sysid = reply.json::<Value>().ok().and_then(|status| status.get("database_system_identifier").cloned());
        if let Some(sysid) = sysid.filter(|s| !s.is_null()) {
            return Some(table::text(&sysid));
        }
    }
    None
}

/// The `leader_lease` object of `GET /raft` from the first node that serves it.
async fn leader_lease(client: &ApiClient, nodes: &[Url]) -> Option<Value> {
    for node in nodes {
        let Ok(reply) = client.send(node, Method::GET, "/raft", None).await else { continue };
        if !reply.is_success() {
            continue;
        }
        if let Some(lease) = reply.json::<Value>().ok().and_then(|raft| raft.get("leader_lease").cloned()) {
            return Some(lease);
        }
    }
    None
}

#[cfg(test)]
mod tests;
