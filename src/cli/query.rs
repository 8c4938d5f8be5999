//! patronictl's `dsn` and `query`: the one place the CLI talks to PostgreSQL itself.
//!
//! Both pick a member the way patronictl does (`--member`, else the first member of `--role`, the leader by
//! default) from `GET /cluster`, which gives each member's host and port. `query` then connects as libpq would:
//! `-U` (else `PGUSER`, else the OS user), database `-d` (else `postgres`), the password from `--password` (asked
//! for), else `PGPASSWORD`, else the pgpass file (`PGPASSFILE`, else `~/.pgpass`); it runs the SQL as one simple
//! query and prints the rows of its last statement in `tsv` (patronictl's default), `pretty`, `json` or `yaml`.
//! An SQL error is printed as patronictl prints it (a timestamp and `ERROR, SQLSTATE: …`); a member that cannot
//! be reached is an error.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use tokio_postgres::SimpleQueryMessage;

use super::client::ApiClient;
use super::cluster::Cluster;
use super::cluster::Member;
use super::cluster::RoleFilter;
use super::table;
use super::table::Format;

/// How long connecting to a member may take (patronictl's `connect_timeout=5`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which member: `--member`, else the first member of `--role` (the leader when neither is given).
pub fn pick<'a>(cluster: &'a Cluster, role: Option<RoleFilter>, member: Option<&str>) -> anyhow::Result<&'a Member> {
    match (role, member) {
        (Some(_), Some(_)) => anyhow::bail!("--role and --member are mutually exclusive options"),
        (_, Some(name)) => cluster.member(name).with_context(|| format!("{name} is not a member of the cluster")),
        (role, None) => {
            let role = role.unwrap_or(RoleFilter::Leader);
            cluster.with_role(role).into_iter().next().context("Can not find a suitable member")
        }
    }
}

/// `dsn`: `host=… port=…` of the member.
pub async fn dsn(
    client: &ApiClient,
    cluster_name: Option<&str>,
    role: Option<RoleFilter>,
    member: Option<&str>,
) -> anyhow::Result<()> {
    let cluster = super::cluster::fetch(client).await?;
    cluster.check_name(cluster_name)?;
    let member = pick(&cluster, role, member)?;
    let (host, port) = address(member)?;
    println!("host={host} port={port}");
    Ok(())
}

/// What `query` runs, where and as whom.
#[derive(Debug, Clone)]
pub struct QueryRequest {
    /// The cluster name, checked against the scope.
    pub cluster_name: Option<String>,
    /// `--role`.
    pub role: Option<RoleFilter>,
    /// `--member`.
    pub member: Option<String>,
    /// The SQL (`--command`, or the contents of `--file`).
    pub sql: String,
    /// `-U`.
    pub username: Option<String>,
    /// `-d`.
    pub dbname: Option<String>,
    /// `--password`: ask for it.
    pub ask_password: bool,
    /// `--format`.
    pub format: Format,
    /// `--delimiter` of the `tsv` format.
    pub delimiter: String,
    /// `--watch` interval, seconds.
    pub watch: Option<f64>,
}

/// `query`.
pub async fn query(client: &ApiClient, req: QueryRequest) -> anyhow::Result<()> {
    let cluster = super::cluster::fetch(client).await?;
    cluster.check_name(req.cluster_name.as_deref())?;
    let member = pick(&cluster, req.role, req.member.as_deref())?;
    let (host, port) = address(member)?;
    let user = req.username.clone().or_else(|| env("PGUSER")).unwrap_or_else(os_user);
    let dbname = req.dbname.clone().unwrap_or_else(|| "postgres".to_string());
    let password = match req.ask_password {
        true => Some(super::prompt::password("Password").await?),
        false => env("PGPASSWORD").or_else(|| pgpass_password(&host, port, &dbname, &user)),
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(&host)
        .port(port)
        .user(&user)
        .dbname(&dbname)
        .application_name("raftgres ctl")
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(password) = &password {
        config.password(password);
    }
    let (pg, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connect to {} ({host}:{port}) as {user}, database {dbname}", member.name))?;
    let connection = tokio::spawn(connection);
    loop {
        let output = match pg.simple_query(&req.sql).await {
            Ok(messages) => last_result(&messages),
            Err(e) => sql_error(&e),
        };
        print!("{}", render(&output, req.format, &req.delimiter));
        let Some(interval) = req.watch else { break };
        tokio::time::sleep(Duration::try_from_secs_f64(interval.max(0.1)).unwrap_or(Duration::from_secs(2))).await;
    }
    drop(pg);
    let _ = connection.await;
    Ok(())
}

/// The member's PostgreSQL host and port from `GET /cluster`.
fn address(member: &Member) -> anyhow::Result<(String, u16)> {
    match (&member.host, member.port) {
        (Some(host), Some(port)) => Ok((host.clone(), port)),
        _ => anyhow::bail!("member {} publishes no PostgreSQL address (is it running?)", member.name),
    }
}

pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// The OS user, libpq's default user name.
pub(crate) fn os_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|user| user.name)
        .unwrap_or_else(|| "postgres".to_string())
}

/// The password of the first matching line of the pgpass file (`PGPASSFILE`, else `~/.pgpass`), as libpq reads it.
pub(crate) fn pgpass_password(host: &str, port: u16, dbname: &str, user: &str) -> Option<String> {
    let path = env("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|home| std::path::Path::new(&home).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    pgpass_lookup(&text, host, &port.to_string(), dbname, user)
}

/// PURE: libpq's pgpass matching: `host:port:database:user:password`, `*` matches anything, `\` escapes `:` and `\`.
pub fn pgpass_lookup(text: &str, host: &str, port: &str, dbname: &str, user: &str) -> Option<String> {
    text.lines().filter(|line| !line.trim_start().starts_with('#')).find_map(|line| {
        let fields = split_pgpass(line);
        let [h, p, d, u, password] = fields.as_slice() else { return None };
        let matches = |field: &String, value: &str| field == "*" || field == value;
        (matches(h, host) && matches(p, port) && matches(d, dbname) && matches(u, user)).then(|| password.clone())
    })
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

/// Column names and rows (as text) of the last statement that returned rows.
struct QueryOutput {
    columns: Vec<String>,
    rows: Vec<Vec<Value>>,
}

/// PURE: the last result set of a simple query.
fn last_result(messages: &[SimpleQueryMessage]) -> QueryOutput {
    let mut output = QueryOutput { columns: Vec::new(), rows: Vec::new() };
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                output =
                    QueryOutput { columns: columns.iter().map(|c| c.name().to_string()).collect(), rows: Vec::new() };
            }
            SimpleQueryMessage::Row(row) => {
                let values = (0..row.len()).map(|idx| row.get(idx).map_or(Value::Null, Value::from)).collect();
                output.rows.push(values);
            }
            _ => {}
        }
    }
    output
}

/// patronictl's answer to an SQL error: one row, a timestamp and `ERROR, SQLSTATE: <code>`.
fn sql_error(e: &tokio_postgres::Error) -> QueryOutput {
    let state = e.code().map_or_else(|| super::super::postgres::supervisor::error_chain(e), |c| c.code().to_string());
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    QueryOutput {
        columns: Vec::new(),
        rows: vec![vec![Value::from(now), Value::from(format!("ERROR, SQLSTATE: {}", state.replace('\n', " ")))]],
    }
}

/// PURE: the rows in `format`; `tsv` with `delimiter` and a header line only when there are column names.
fn render(output: &QueryOutput, format: Format, delimiter: &str) -> String {
    match format {
        Format::Tsv => {
            let header = (!output.columns.is_empty()).then(|| output.columns.join(delimiter));
            let rows = output.rows.iter().map(|row| row.iter().map(table::text).collect::<Vec<_>>().join(delimiter));
            header.into_iter().chain(rows).map(|line| line + "\n").collect()
        }
        other => {
            let columns = if output.columns.is_empty() {
                (1..=output.rows.first().map_or(0, Vec::len)).map(|n| format!("column{n}")).collect()
            } else {
                output.columns.clone()
            };
            table::render(&table::Output { columns, rows: output.rows.clone(), ..table::Output::default() }, other)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_match_as_libpq_matches_them() {
        let text = "# comment\n10.0.0.1:5432:*:admin:first\n*:*:*:postgres:se\\:cret\n*:*:*:*:fallback\n";
        assert_eq!(pgpass_lookup(text, "10.0.0.1", "5432", "postgres", "admin"), Some("first".into()));
        assert_eq!(pgpass_lookup(text, "10.0.0.2", "5432", "postgres", "postgres"), Some("se:cret".into()));
        assert_eq!(pgpass_lookup(text, "10.0.0.2", "5433", "app", "app"), Some("fallback".into()));
        assert_eq!(pgpass_lookup("h:1:d:u\n", "h", "1", "d", "u"), None);
    }

    #[test]
    fn tsv_prints_a_header_then_the_rows_with_the_delimiter() {
        let output = QueryOutput {
            columns: vec!["a".into(), "b".into()],
            rows: vec![vec![Value::from("1"), Value::Null], vec![Value::from("x"), Value::from("y")]],
        };
        assert_eq!(render(&output, Format::Tsv, ";"), "a;b\n1;\nx;y\n");
    }

    #[test]
    fn an_error_row_has_no_header() {
        let output = QueryOutput { columns: Vec::new(), rows: vec![vec![Value::from("t"), Value::from("ERROR")]] };
        assert_eq!(render(&output, Format::Tsv, "\t"), "t\tERROR\n");
    }
}
