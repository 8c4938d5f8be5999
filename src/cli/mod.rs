//! The operator CLI in the `raftgres` binary: patronictl's commands (`list`, `topology`, `switchover`,
//! `failover`, `restart`, `reload`, `reinit`, `pause`, `resume`, `show-config`, `edit-config`, `history`,
//! `remove`) and raftgres' own `members`, with patronictl's flags, questions and output shapes.
//!
//! Map: this file is the clap tree and the dispatch; [`client`] the REST client (every command reaches the
//! cluster only through a node's REST API, house rule 5); [`cluster`] the `GET /cluster` view and member
//! selection; [`list`] `list`/`topology`/`history`; [`switchover`]; [`actions`] restart/reload/reinit;
//! [`config`] show/edit-config and pause/resume; [`raft`] `members` and `remove`; [`table`] the output formats;
//! [`prompt`] the questions; [`certs`] `certs init`, the raft peer certificates (no node involved); [`drill`] a
//! switchover or crash under a write load through the application's endpoint, with the write gap and a verdict.
//! Errors are returned as `anyhow` errors; `main` prints them as one `error: …` line
//! and exits 1.

pub mod actions;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod config;
pub mod drill;
pub mod list;
pub mod prompt;
pub mod query;
pub mod raft;
pub mod switchover;
pub mod table;

use anyhow::Context as _;
use clap::Args;
use clap::Subcommand;

use self::client::ApiClient;
use self::client::Target;
use self::cluster::RoleFilter;
use self::table::Format;

/// The operator commands, flattened into the binary's subcommands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// List the members of the cluster, their roles, timelines and replication lag, and the leader lease.
    List(ListArgs),
    /// Like `list`, with replicas ordered under the member they replicate from.
    Topology(TopologyArgs),
    /// Hand the leader role over to a replica: a planned switchover, now or at a scheduled time.
    Switchover(SwitchoverArgs),
    /// Promote a named replica, with or without a running leader.
    Failover(FailoverArgs),
    /// Restart PostgreSQL on members (all by default), now or at a scheduled time.
    Restart(RestartArgs),
    /// Make members re-read their configuration and reload PostgreSQL.
    Reload(ReloadArgs),
    /// Rebuild replicas from scratch: wipe the data directory and clone it again.
    Reinit(ReinitArgs),
    /// Put the cluster in maintenance mode: no automatic failover, PostgreSQL left alone.
    Pause(PauseArgs),
    /// Leave maintenance mode: automatic failover again.
    Resume(PauseArgs),
    /// Print the dynamic (cluster-wide) configuration as YAML.
    ShowConfig(ClusterArgs),
    /// Change the dynamic configuration: in $EDITOR, with --set/--pg, or from a file; shows the diff and asks.
    EditConfig(EditConfigArgs),
    /// Show the history of failovers and switchovers (timeline switches).
    History(HistoryArgs),
    /// Wipe every key of the cluster from the raft store (leader, members, config, initialize, history, …).
    ///
    /// Refused while the leader runs PostgreSQL: first `raftgres pause`, then stop PostgreSQL on the leader (a paused
    /// leader whose PostgreSQL stopped gives the leader key up). The nodes keep running: they register again and,
    /// with maintenance mode gone along with the `config` key, start PostgreSQL from their data directories with
    /// their bootstrap dynamic configuration and elect a leader, which writes `initialize` and `config` again.
    /// To take a cluster down for good, stop raftgres on every node instead (the store lives in the nodes).
    Remove(RemoveArgs),
    /// The Raft replica set: list its nodes, add one, remove one.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Print `host=… port=…` of a member's PostgreSQL (the leader by default).
    Dsn(DsnArgs),
    /// Run SQL on a member's PostgreSQL (the leader by default) and print the rows.
    Query(QueryArgs),
    /// Discard scheduled events: members' scheduled restarts, or the scheduled switchover.
    Flush(FlushArgs),
    /// Print the CLI's version and, given the cluster name, every member's (or the named members') versions.
    Version(VersionArgs),
    /// Switch over (or, with --crash, kill the local primary) under a write load through --dsn; print the
    /// client-visible write gap, the promotion's phases and a verdict against --max-gap (exit 1 when exceeded).
    Drill(drill::DrillArgs),
}

/// `dsn`.
#[derive(Debug, Clone, Args)]
pub struct DsnArgs {
    /// The cluster name.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The first member with this role.
    #[arg(short = 'r', long, value_enum)]
    pub role: Option<RoleFilter>,
    /// This member.
    #[arg(short = 'm', long)]
    pub member: Option<String>,
}

/// `query`.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// The cluster name.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The first member with this role.
    #[arg(short = 'r', long, value_enum)]
    pub role: Option<RoleFilter>,
    /// This member.
    #[arg(short = 'm', long)]
    pub member: Option<String>,
    /// The SQL to run (`-c SQL` after `query` means this, as in patronictl).
    #[arg(long = "command", value_name = "SQL")]
    pub command: Option<String>,
    /// Run the SQL in this file.
    #[arg(short = 'f', long = "file", value_name = "FILE", conflicts_with = "command")]
    pub file: Option<std::path::PathBuf>,
    /// Database user (default: PGUSER, else the OS user).
    #[arg(short = 'U', long)]
    pub username: Option<String>,
    /// Ask for the password (else PGPASSWORD, else the pgpass file).
    #[arg(long)]
    pub password: bool,
    /// Database (default: postgres).
    #[arg(short = 'd', long)]
    pub dbname: Option<String>,
    /// Output format.
    #[arg(long = "format", value_enum, default_value = "tsv")]
    pub format: Format,
    /// Column delimiter of the tsv format (default: a tab).
    #[arg(long)]
    pub delimiter: Option<String>,
    /// Run again every SECS seconds until Ctrl-C.
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// `flush`.
#[derive(Debug, Clone, Args)]
pub struct FlushArgs {
    /// The cluster name (optional), then the members (restart only), then `restart` or `switchover`.
    #[arg(value_name = "ARGS", required = true, num_args = 1..)]
    pub args: Vec<String>,
    /// Flush only members with this role.
    #[arg(short = 'r', long, value_enum)]
    pub role: Option<RoleFilter>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

/// `version`.
#[derive(Debug, Clone, Args)]
pub struct VersionArgs {
    /// The cluster name, then optionally member names.
    #[arg(value_name = "NAMES")]
    pub names: Vec<String>,
}

/// An optional cluster name, checked against the nodes' scope as patronictl's first argument.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Cluster name; when given, it must be the scope the nodes serve.
    #[arg(value_name = "CLUSTER")]
    pub cluster: Option<String>,
}

/// `list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// The cluster name.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: Format,
    /// Show the pending restart, scheduled restart and tags columns even when empty.
    #[arg(short = 'e', long)]
    pub extended: bool,
    /// Print a timestamp before the table.
    #[arg(short = 't', long = "timestamp")]
    pub timestamp: bool,
    /// Repeat until Ctrl-C.
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// `topology`.
#[derive(Debug, Clone, Args)]
pub struct TopologyArgs {
    /// The cluster name.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Repeat until Ctrl-C.
    #[command(flatten)]
    pub watch: WatchArgs,
}

/// `--watch` for `list` and `topology`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Print again every SECS seconds (2 without a value) until Ctrl-C.
    #[arg(short = 'w', long = "watch", value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<f64>,
    /// Print again every 2 seconds until Ctrl-C (patronictl's `-W`).
    #[arg(short = 'W', conflicts_with = "watch")]
    pub every_two_seconds: bool,
}

impl WatchArgs {
    fn interval(&self) -> Option<f64> {
        self.watch.or(self.every_two_seconds.then_some(2.0))
    }
}

/// `switchover`.
#[derive(Debug, Clone, Args)]
pub struct SwitchoverArgs {
    /// The cluster name.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The current leader (asked for unless --force).
    #[arg(long, visible_alias = "primary", value_name = "MEMBER")]
    pub leader: Option<String>,
    /// The member to promote (asked for unless --force; without one the healthiest replica wins).
    #[arg(long, value_name = "MEMBER")]
    pub candidate: Option<String>,
    /// When: `now` or a timestamp such as 2026-11-22T14:00+01:00 (local time without an offset).
    #[arg(long, value_name = "TIMESTAMP")]
    pub scheduled: Option<String>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

/// `failover`.
#[derive(Debug, Clone, Args)]
pub struct FailoverArgs {
    /// The cluster name.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The member to promote (asked for unless --force).
    #[arg(long, value_name = "MEMBER")]
    pub candidate: Option<String>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

/// `restart`.
#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// Members to restart (default: every member of --role); a leading cluster name is accepted.
    #[arg(value_name = "MEMBER")]
    pub members: Vec<String>,
    /// Restart only members with this role.
    #[arg(short = 'r', long, value_enum)]
    pub role: Option<RoleFilter>,
    /// Restart one member only, picked at random.
    #[arg(long)]
    pub any: bool,
    /// When: `now` or a timestamp (asked for unless --force).
    #[arg(long, value_name = "TIMESTAMP")]
    pub scheduled: Option<String>,
    /// Restart only if the member runs a PostgreSQL older than this version (e.g. 15.4).
    #[arg(long, value_name = "VERSION")]
    pub pg_version: Option<String>,
    /// Restart only members with a pending restart (a changed parameter that needs one).
    #[arg(long)]
    pub pending: bool,
    /// Fail (and fail over if needed) when starting again takes longer than this many seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<String>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

/// `reload`.
#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    /// Members to reload (default: every member of --role); a leading cluster name is accepted.
    #[arg(value_name = "MEMBER")]
    pub members: Vec<String>,
    /// Reload only members with this role.
    #[arg(short = 'r', long, value_enum)]
    pub role: Option<RoleFilter>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

/// `reinit`.
#[derive(Debug, Clone, Args)]
pub struct ReinitArgs {
    /// Replicas to rebuild; a leading cluster name is accepted.
    #[arg(value_name = "MEMBER", required = true)]
    pub members: Vec<String>,
    /// Clone from the leader even when a `clonefrom` member exists.
    #[arg(long)]
    pub from_leader: bool,
    /// Wait until the members run again.
    #[arg(long)]
    pub wait: bool,
    /// Do not ask anything (also cancels a running action on the member).
    #[arg(long)]
    pub force: bool,
}

/// `pause` and `resume`.
#[derive(Debug, Clone, Args)]
pub struct PauseArgs {
    /// The cluster name.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Wait until every member reports the new state.
    #[arg(long)]
    pub wait: bool,
}

/// `edit-config`.
#[derive(Debug, Clone, Args)]
pub struct EditConfigArgs {
    /// The cluster name.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Set a value, `key.path=value` (a YAML value; empty deletes the key). Repeatable.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Set a PostgreSQL parameter, `name=value` (shorthand for --set postgresql.parameters.name=value). Repeatable.
    #[arg(short = 'p', long = "pg", value_name = "NAME=VALUE")]
    pub pg: Vec<String>,
    /// Merge a YAML file into the configuration (`-` reads standard input and needs --force).
    #[arg(long, value_name = "FILE")]
    pub apply: Option<String>,
    /// Replace the configuration with a YAML file (`-` reads standard input and needs --force).
    #[arg(long, value_name = "FILE")]
    pub replace: Option<String>,
    /// Do not show the diff.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not ask before writing.
    #[arg(long)]
    pub force: bool,
}

/// `history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// The cluster name.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: Format,
}

/// `remove`.
#[derive(Debug, Clone, Args)]
pub struct RemoveArgs {
    /// The cluster to remove (must be the scope the nodes serve).
    #[arg(value_name = "CLUSTER")]
    pub cluster: String,
    /// Do not ask for the cluster name, "Yes I am aware" and the leader's name.
    #[arg(long)]
    pub force: bool,
}

/// `members`.
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// List the Raft nodes: ids, names, addresses, voter or learner, replication lag.
    List {
        /// Output format.
        #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
        format: Format,
    },
    /// Add a node to the Raft membership (as a learner until it caught up, then as a voter).
    Add {
        /// Its member name.
        name: String,
        /// Its Raft node id (unique, never reused).
        #[arg(long)]
        id: u64,
        /// Its Raft listener, host:port.
        #[arg(long, value_name = "HOST:PORT")]
        raft_addr: String,
        /// Its REST API, host:port.
        #[arg(long, value_name = "HOST:PORT")]
        api_addr: Option<String>,
    },
    /// Remove a node from the Raft membership (by member name or Raft id).
    Remove {
        /// Member name or Raft node id.
        member: String,
        /// Do not ask.
        #[arg(long)]
        force: bool,
    },
}

/// The command line as clap should read it: after `query`, patronictl's `-c SQL` is `--command SQL` (before the
/// command, and in every other command, `-c` is the configuration file, as in patronictl).
pub fn patronictl_argv(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    const TAKES_VALUE: [&str; 5] = ["-c", "--config-file", "--config", "--url", "--dcs-url"];
    let mut idx = 1;
    while let Some(arg) = args.get(idx).and_then(|a| a.to_str()) {
        if TAKES_VALUE.contains(&arg) {
            idx += 2;
        } else if arg.starts_with('-') {
            idx += 1;
        } else {
            break;
        }
    }
    if args.get(idx).and_then(|a| a.to_str()) != Some("query") {
        return args;
    }
    let (head, tail) = args.split_at(idx + 1);
    let tail = tail.iter().map(|arg| if arg == "-c" { "--command".into() } else { arg.clone() });
    head.iter().cloned().chain(tail).collect()
}

/// Runs one operator command.
pub async fn run(command: CtlCommand, target: &Target) -> anyhow::Result<()> {
    let client = || ApiClient::new(target);
    match command {
        CtlCommand::List(args) => {
            let client = client()?;
            let cluster = args.cluster.cluster.as_deref();
            let options = list::ListOptions {
                format: args.format,
                extended: args.extended,
                timestamp: args.timestamp,
                watch: args.watch.interval(),
            };
            list::run_list(&client, cluster, options).await
        }
        CtlCommand::Topology(args) => {
            let client = client()?;
            let cluster = args.cluster.cluster.as_deref();
            let options = list::ListOptions {
                format: Format::Topology,
                extended: false,
                timestamp: false,
                watch: args.watch.interval(),
            };
            list::run_list(&client, cluster, options).await
        }
        CtlCommand::Switchover(args) => {
            let client = client()?;
            switchover::run(&client, switchover::Action::Switchover, args.into()).await
        }
        CtlCommand::Failover(args) => {
            let client = client()?;
            switchover::run(&client, switchover::Action::Failover, args.into()).await
        }
        CtlCommand::Restart(args) => actions::restart(&client()?, args.into()).await,
        CtlCommand::Reload(args) => actions::reload(&client()?, &args.members, args.role, args.force).await,
        CtlCommand::Reinit(args) => actions::reinit(&client()?, args.into()).await,
        CtlCommand::Pause(args) => {
            let client = client()?;
            config::toggle_pause(&client, args.cluster.cluster.as_deref(), config::Maintenance::Pause, args.wait).await
        }
        CtlCommand::Resume(args) => {
            let client = client()?;
            config::toggle_pause(&client, args.cluster.cluster.as_deref(), config::Maintenance::Resume, args.wait).await
        }
        CtlCommand::ShowConfig(args) => config::show(&client()?, args.cluster.as_deref()).await,
        CtlCommand::EditConfig(args) => config::edit(&client()?, args.into()).await,
        CtlCommand::History(args) => {
            let client = client()?;
            list::run_history(&client, args.cluster.cluster.as_deref(), args.format).await
        }
        CtlCommand::Remove(args) => raft::remove_cluster(&client()?, &args.cluster, args.force).await,
        CtlCommand::Dsn(args) => {
            query::dsn(&client()?, args.cluster.cluster.as_deref(), args.role, args.member.as_deref()).await
        }
        CtlCommand::Query(args) => {
            let sql = match (&args.command, &args.file) {
                (Some(sql), _) => sql.clone(),
                (None, Some(file)) => {
                    std::fs::read_to_string(file).with_context(|| format!("read the SQL file {}", file.display()))?
                }
                (None, None) => anyhow::bail!("You need to specify either --command or --file"),
            };
            let request = query::QueryRequest {
                cluster_name: args.cluster.cluster,
                role: args.role,
                member: args.member,
                sql,
                username: args.username,
                dbname: args.dbname,
                ask_password: args.password,
                format: args.format,
                delimiter: args.delimiter.unwrap_or_else(|| "\t".to_string()),
                watch: args.watch.interval(),
            };
            query::query(&client()?, request).await
        }
        CtlCommand::Flush(args) => {
            let Some((target, names)) = args.args.split_last() else {
                anyhow::bail!("name what to flush: restart or switchover")
            };
            let target = match target.as_str() {
                "restart" => actions::FlushTarget::Restart,
                "switchover" => actions::FlushTarget::Switchover,
                other => anyhow::bail!("cannot flush {other:?}: the last argument is restart or switchover"),
            };
            actions::flush(&client()?, names, target, args.role, args.force).await
        }
        CtlCommand::Version(args) => actions::version(&client()?, &args.names).await,
        CtlCommand::Drill(args) => drill::run(&client()?, args).await,
        CtlCommand::Members(MembersCommand::List { format }) => raft::list(&client()?, format).await,
        CtlCommand::Members(MembersCommand::Add { name, id, raft_addr, api_addr }) => {
            let member = raft::NewMember { name, id, raft_addr, api_addr: api_addr.unwrap_or_default() };
            raft::add(&client()?, &member).await
        }
        CtlCommand::Members(MembersCommand::Remove { member, force }) => raft::remove(&client()?, &member, force).await,
    }
}

impl From<SwitchoverArgs> for switchover::Request {
    fn from(args: SwitchoverArgs) -> Self {
        switchover::Request {
            cluster_name: args.cluster.cluster,
            leader: args.leader,
            candidate: args.candidate,
            scheduled: args.scheduled,
            force: args.force,
        }
    }
}

impl From<FailoverArgs> for switchover::Request {
    fn from(args: FailoverArgs) -> Self {
        switchover::Request {
            cluster_name: args.cluster.cluster,
            candidate: args.candidate,
            force: args.force,
            ..switchover::Request::default()
        }
    }
}

impl From<RestartArgs> for actions::RestartRequest {
    fn from(args: RestartArgs) -> Self {
        actions::RestartRequest {
            members: args.members,
            role: args.role,
            any: args.any,
            scheduled: args.scheduled,
            pg_version: args.pg_version,
            pending: args.pending,
            timeout: args.timeout,
            force: args.force,
        }
    }
}

impl From<ReinitArgs> for actions::ReinitRequest {
    fn from(args: ReinitArgs) -> Self {
        actions::ReinitRequest {
            members: args.members,
            from_leader: args.from_leader,
            wait: args.wait,
            force: args.force,
        }
    }
}

impl From<EditConfigArgs> for config::EditRequest {
    fn from(args: EditConfigArgs) -> Self {
        config::EditRequest {
            cluster_name: args.cluster.cluster,
            set: args.set,
            pg: args.pg,
            apply: args.apply,
            replace: args.replace,
            quiet: args.quiet,
            force: args.force,
        }
    }
}
