//! Static configuration of one raftgres node and the cluster-wide dynamic configuration.
//!
//! The local YAML follows Patroni's (`name`, `scope`, `restapi`, `postgresql`, `bootstrap`,
//! `tags`, …) with one difference: the DCS section is `raft:` with raftgres' own keys.
//! Map: [`load`] is the imperative shell (files, environment, host checks); [`env`] maps
//! environment variables onto the tree; `walk` and `sections` turn the untyped tree into a
//! typed [`Config`] naming every key by its path; [`validate`] holds the PURE cross-key rules;
//! [`dynamic`] the PURE [`DynamicConfig`], Patroni's timing rule and `merge_patch`;
//! [`defaults`] the named constants. Nothing here starts tasks or talks to PostgreSQL.

pub mod ctl_view;
pub mod defaults;
pub mod dynamic;
pub mod env;
#[cfg(test)]
mod haproxy_tests;
pub mod load;
mod log;
pub mod reload;
mod sections;
#[cfg(test)]
mod tests;
pub mod unsupported;
pub mod validate;
#[cfg(test)]
mod vip_tests;
mod walk;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use raft::config::LeaseMode;
use raft::NodeId;
use raft::PeerConfig;
use raft::RaftConfig;
use serde_json::Map;
use serde_json::Value;

pub use dynamic::adjust_timing;
pub use dynamic::merge_patch;
pub use dynamic::DynamicConfig;
pub use dynamic::DynamicView;
pub use dynamic::StandbyCluster;
pub use dynamic::SynchronousMode;
pub use dynamic::Timing;
pub use env::process_env;
pub use env::EnvMap;
pub use load::check_environment;
pub use load::check_watchdog_device;
pub use load::load;
pub use load::load_from_env;
pub use load::load_str;
pub use load::Loaded;
pub use log::Conversion;
pub use log::LogConfig;
pub use log::LogField;
pub use log::LogFormat;
pub use log::LogKey;
pub use log::LogLevel;
pub use log::LogType;
pub use log::Piece;
pub use log::Template;
pub use validate::validate;

/// Why a configuration was rejected; every message names where and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key is missing, has the wrong type or an invalid value.
    #[error("{path}: {message}")]
    Invalid {
        /// Key path (`postgresql.data_dir`, `raft.peers[1].id`) or environment variable name.
        path: String,
        /// What is wrong and what to do, one line.
        message: String,
    },
    /// A configuration file or directory cannot be read.
    #[error("read {}: {cause}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The cause, part of the message.
        cause: std::io::Error,
    },
    /// A document is not valid YAML.
    #[error("parse {origin}: {message}")]
    Syntax {
        /// The file, or the environment variable that held the document.
        origin: String,
        /// The parser's message with line and column.
        message: String,
    },
}

impl ConfigError {
    /// The key path of an [`ConfigError::Invalid`] error.
    pub fn path(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { path, .. } => Some(path),
            ConfigError::Read { .. } | ConfigError::Syntax { .. } => None,
        }
    }
}

/// The static configuration of one node, after environment overrides and checks.
#[derive(Debug, Clone)]
pub struct Config {
    /// This member's name, unique in the cluster (Patroni's `name`).
    pub name: String,
    /// The cluster name (Patroni's `scope`; also PostgreSQL's `cluster_name`).
    pub scope: String,
    /// DCS namespace, normalized to `/…/` (default `/service/`).
    pub namespace: String,
    /// The REST API server.
    pub restapi: RestApiConfig,
    /// How the CLI talks to the REST API.
    pub ctl: CtlConfig,
    /// The embedded Raft replica (replaces Patroni's `etcd:` section).
    pub raft: RaftSection,
    /// How a new cluster is created.
    pub bootstrap: BootstrapConfig,
    /// The local PostgreSQL instance.
    pub postgresql: PostgresqlConfig,
    /// Member tags.
    pub tags: Tags,
    /// Linux watchdog.
    pub watchdog: WatchdogConfig,
    /// Logging.
    pub log: LogConfig,
    /// raftgres' own: HAProxy runtime APIs told of role changes (`haproxy` section), `None` when absent.
    pub haproxy: Option<HaproxyConfig>,
    /// raftgres' own: the floating IP address the leader holds (`vip` section), `None` when absent.
    pub vip: Option<VipConfig>,
}

/// An HAProxy runtime API address (`stats socket … level admin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeApi {
    /// A UNIX socket path.
    Unix(PathBuf),
    /// `host:port` of a TCP stats socket.
    Tcp(HostPort),
}

impl fmt::Display for RuntimeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeApi::Unix(path) => write!(f, "{}", path.display()),
            RuntimeApi::Tcp(address) => write!(f, "{address}"),
        }
    }
}

/// The `haproxy` section (raftgres' own; Patroni leaves HAProxy to its health checks): on a role change the node
/// pushes the new health of its servers to these HAProxy runtime APIs, so HAProxy routes at once instead of at
/// its next health check. The checks stay the source of truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyConfig {
    /// `haproxy.runtime_api`: one or more runtime API addresses (every HAProxy in front of the cluster).
    pub runtime_api: Vec<RuntimeApi>,
    /// `haproxy.primary_backend`: the backend (or `listen` section) that routes to the primary.
    pub primary_backend: String,
    /// `haproxy.replica_backend`: the backend that routes to replicas, when there is one.
    pub replica_backend: Option<String>,
    /// `haproxy.server`: the server name of a member in those backends, `{name}` standing for the member's name.
    pub server: String,
    /// `haproxy.timeout`: how long one runtime API may take to answer.
    pub timeout: Duration,
}

/// The `vip` section (raftgres' own; Patroni users run vip-manager against etcd for this): a floating IPv4
/// address that the leader-key holder adds to `interface` once PostgreSQL runs as the primary and announces with
/// gratuitous ARP, and removes before it stops accepting writes or when its lease runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    /// `vip.address`: the address with its prefix length (`10.0.0.100/24`).
    pub address: ipnet::Ipv4Net,
    /// `vip.interface`: the network interface that gets the address (`eth0`).
    pub interface: String,
    /// `vip.arping_count`: how many gratuitous ARP announcements follow the address being added (0: none).
    pub arping_count: u32,
}

impl Config {
    /// The raft crate's configuration for this node.
    pub fn raft_config(&self) -> RaftConfig {
        let raft_section = &self.raft;
        let mut res = RaftConfig::new(
            raft_section.node_id,
            &self.scope,
            raft_section.peers.clone(),
            raft_section.data_dir.clone(),
        );
        res.listen = raft_section.listen.to_string();
        res.advertise = raft_section.advertise.to_string();
        res.api_addr = self.restapi.connect_address.to_string();
        res.heartbeat_interval = raft_section.heartbeat_interval;
        res.election_timeout_min = raft_section.election_timeout_min;
        res.election_timeout_max = raft_section.election_timeout_max;
        res.lease_mode = raft_section.lease_mode;
        res.transport = match (&raft_section.tls, raft_section.insecure) {
            (Some(files), _) => raft::config::PeerTransport::Tls(files.clone()),
            (None, true) => raft::config::PeerTransport::Insecure,
            (None, false) => raft::config::PeerTransport::Unset,
        };
        res
    }
}

/// A `host:port` address; IPv6 hosts print in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host name or IP address without brackets; empty means every interface (listen only).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port`, `[v6]:port` or Patroni's `v6:port` (port after the last colon).
    pub fn parse(text: &str) -> Option<HostPort> {
        let text = text.trim();
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => rest.split_once("]:")?,
            None => text.rsplit_once(':')?,
        };
        if host.contains(|c: char| c.is_whitespace() || matches!(c, '/' | ',' | '[' | ']')) {
            return None;
        }
        // A colon in the host is only valid in an IPv6 address (`::1:8008` is Patroni's form).
        if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
            return None;
        }
        Some(HostPort { host: host.to_string(), port: port.parse().ok()? })
    }

    /// Whether the host means "every interface" and so cannot be connected to.
    pub fn is_wildcard(&self) -> bool {
        matches!(self.host.as_str(), "" | "0.0.0.0" | "::" | "*")
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `postgresql.listen`: comma-separated hosts with the port after the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgListen {
    /// Hosts for `listen_addresses` (`*` allowed).
    pub hosts: Vec<String>,
    /// PostgreSQL's `port`.
    pub port: u16,
}

impl PgListen {
    /// Parses `127.0.0.1,::1:5432`.
    pub fn parse(text: &str) -> Option<PgListen> {
        let (hosts, port) = text.trim().rsplit_once(':')?;
        let hosts: Vec<String> =
            hosts.split(',').map(|h| h.trim().trim_start_matches('[').trim_end_matches(']').to_string()).collect();
        if hosts.iter().any(|h| h.is_empty() || h.contains(char::is_whitespace)) {
            return None;
        }
        Some(PgListen { hosts, port: port.parse().ok()? })
    }

    /// The value of PostgreSQL's `listen_addresses`.
    pub fn listen_addresses(&self) -> String {
        self.hosts.join(",")
    }
}

impl fmt::Display for PgListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.listen_addresses(), self.port)
    }
}

/// A password or passphrase: `Debug` never prints it, so logging a config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// HTTP basic-auth credentials (`restapi.authentication`, `ctl.authentication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// `restapi.verify_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyClient {
    /// Client certificates are not requested.
    None,
    /// Requested and checked when presented.
    Optional,
    /// Required on every request.
    Required,
}

/// `restapi.server_tokens`: how much the `Server` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTokens {
    /// Product and version (Patroni's default).
    Original,
    /// Product only.
    ProductOnly,
    /// No product, no version.
    Minimal,
}

/// The `restapi` section.
#[derive(Debug, Clone)]
pub struct RestApiConfig {
    /// Address the REST API binds.
    pub listen: HostPort,
    /// Address others use to reach it (published in the member key).
    pub connect_address: HostPort,
    /// Basic auth required on unsafe methods.
    pub authentication: Option<BasicAuth>,
    /// TLS certificate (enables HTTPS).
    pub certfile: Option<PathBuf>,
    /// TLS key (may be inside `certfile`).
    pub keyfile: Option<PathBuf>,
    /// Passphrase of `keyfile`.
    pub keyfile_password: Option<Secret>,
    /// CA for client certificates.
    pub cafile: Option<PathBuf>,
    /// Client certificate policy.
    pub verify_client: VerifyClient,
    /// Hosts or networks allowed to call unsafe methods.
    pub allowlist: Vec<String>,
    /// Also allow every member's address.
    pub allowlist_include_members: bool,
    /// Extra headers on HTTP responses.
    pub http_extra_headers: BTreeMap<String, String>,
    /// Extra headers on HTTPS responses.
    pub https_extra_headers: BTreeMap<String, String>,
    /// `Server` header policy.
    pub server_tokens: ServerTokens,
}

/// The `ctl` section: how the CLI connects to a node's REST API.
#[derive(Debug, Clone, Default)]
pub struct CtlConfig {
    /// Basic-auth credentials sent by the CLI.
    pub authentication: Option<BasicAuth>,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// CA to verify the server.
    pub cacert: Option<PathBuf>,
    /// Client certificate.
    pub certfile: Option<PathBuf>,
    /// Client key.
    pub keyfile: Option<PathBuf>,
    /// Passphrase of `keyfile`.
    pub keyfile_password: Option<Secret>,
}

/// The `raft` section (raftgres' replacement for Patroni's DCS sections).
#[derive(Debug, Clone)]
pub struct RaftSection {
    /// This node's Raft id; must appear in `peers`.
    pub node_id: NodeId,
    /// Address the peer listener binds.
    pub listen: HostPort,
    /// Address peers use to reach this node (default: `listen`, or this node's `raft_addr` when
    /// `listen` is a wildcard).
    pub advertise: HostPort,
    /// Directory of the sled database.
    pub data_dir: PathBuf,
    /// Every member of the cluster, this node included.
    pub peers: Vec<PeerConfig>,
    /// Plaintext peer traffic is explicitly allowed (loopback addresses only).
    pub insecure: bool,
    /// The peer transport's mutual TLS files (`raft.tls`); required unless `insecure`.
    pub tls: Option<raft::config::TlsFiles>,
    /// How a new Raft leader sets session deadlines (`strict` or `stamped` + `max_clock_skew`).
    pub lease_mode: LeaseMode,
    /// Keep Raft leadership on the node holding the `leader` key (`raft.leadership_follows_primary`).
    pub leadership_follows_primary: bool,
    /// Raft heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Election timeout lower bound.
    pub election_timeout_min: Duration,
    /// Election timeout upper bound.
    pub election_timeout_max: Duration,
}

/// One command-line option of `initdb` or `pg_basebackup` (`--name` or `--name=value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramOption {
    /// Long option name without dashes.
    pub name: String,
    /// Its value, if any.
    pub value: Option<String>,
}

impl ProgramOption {
    /// The command-line argument.
    pub fn to_arg(&self) -> String {
        match &self.value {
            Some(value) => format!("--{}={value}", self.name),
            None => format!("--{}", self.name),
        }
    }
}

/// How the first member creates the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum BootstrapMethod {
    /// Run `initdb` with `bootstrap.initdb` options.
    Initdb,
    /// Run a custom command (`bootstrap.method: <name>` with a `bootstrap.<name>` section).
    Custom {
        /// The method name.
        name: String,
        /// The command to run.
        command: String,
        /// The whole method section (`keep_existing_recovery_conf`, `no_params`, `recovery_conf`, …).
        section: Map<String, Value>,
    },
}

/// The `bootstrap` section.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// Initial dynamic configuration, written to Raft when the cluster is initialized.
    pub dcs: DynamicConfig,
    /// How the data directory is created.
    pub method: BootstrapMethod,
    /// `initdb` options.
    pub initdb: Vec<ProgramOption>,
    /// Lines appended to `pg_hba.conf` after initdb.
    pub pg_hba: Vec<String>,
    /// Script run once after the cluster is initialized (Patroni's `post_bootstrap`/`post_init`).
    pub post_bootstrap: Option<String>,
}

/// A PostgreSQL role raftgres connects as.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUser {
    /// Role name.
    pub username: String,
    /// Password, if any (else `.pgpass`, certificates or trust).
    pub password: Option<Secret>,
    /// Other libpq parameters (`sslmode`, `sslcert`, `sslpassword`, …).
    pub options: BTreeMap<String, String>,
}

impl fmt::Debug for PgUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `sslpassword` is a secret too, so the options show their names only.
        f.debug_struct("PgUser")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `postgresql.authentication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgAuthentication {
    /// Superuser for probes, promote and rewind (if no `rewind` user).
    pub superuser: PgUser,
    /// Role replicas stream with.
    pub replication: PgUser,
    /// Role for `pg_rewind`.
    pub rewind: Option<PgUser>,
}

/// `postgresql.bin_name`: program names, for distributions that rename them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinNames {
    /// `pg_ctl`.
    pub pg_ctl: String,
    /// `initdb`.
    pub initdb: String,
    /// `pg_controldata`.
    pub pg_controldata: String,
    /// `pg_basebackup`.
    pub pg_basebackup: String,
    /// `postgres`.
    pub postgres: String,
    /// `pg_isready`.
    pub pg_isready: String,
    /// `pg_rewind`.
    pub pg_rewind: String,
}

impl Default for BinNames {
    fn default() -> Self {
        BinNames {
            pg_ctl: "pg_ctl".into(),
            initdb: "initdb".into(),
            pg_controldata: "pg_controldata".into(),
            pg_basebackup: "pg_basebackup".into(),
            postgres: "postgres".into(),
            pg_isready: "pg_isready".into(),
            pg_rewind: "pg_rewind".into(),
        }
    }
}

impl BinNames {
    /// The configured name of `program` (one of [`defaults::PG_PROGRAMS`]).
    pub fn get(&self, program: &str) -> Option<&str> {
        let name = match program {
            "pg_ctl" => &self.pg_ctl,
            "initdb" => &self.initdb,
            "pg_controldata" => &self.pg_controldata,
            "pg_basebackup" => &self.pg_basebackup,
            "postgres" => &self.postgres,
            "pg_isready" => &self.pg_isready,
            "pg_rewind" => &self.pg_rewind,
            _ => return None,
        };
        Some(name)
    }

    fn get_mut(&mut self, program: &str) -> Option<&mut String> {
        let name = match program {
            "pg_ctl" => &mut self.pg_ctl,
            "initdb" => &mut self.initdb,
            "pg_controldata" => &mut self.pg_controldata,
            "pg_basebackup" => &mut self.pg_basebackup,
            "postgres" => &mut self.postgres,
            "pg_isready" => &mut self.pg_isready,
            "pg_rewind" => &mut self.pg_rewind,
            _ => return None,
        };
        Some(name)
    }
}

/// `postgresql.callbacks`: scripts run on state changes (`<script> <action> <role> <scope>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callbacks {
    /// After PostgreSQL starts.
    pub on_start: Option<String>,
    /// After it stops.
    pub on_stop: Option<String>,
    /// After a restart.
    pub on_restart: Option<String>,
    /// After a reload.
    pub on_reload: Option<String>,
    /// After the role changes.
    pub on_role_change: Option<String>,
}

/// The `postgresql` section.
#[derive(Debug, Clone)]
pub struct PostgresqlConfig {
    /// `listen_addresses` and `port`.
    pub listen: PgListen,
    /// Address other members and clients use (published in the member key).
    pub connect_address: HostPort,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where configuration files go (default: `data_dir`).
    pub config_dir: Option<PathBuf>,
    /// Directory of the PostgreSQL programs (default: search, see `load::check_environment`).
    pub bin_dir: Option<PathBuf>,
    /// Program names.
    pub bin_name: BinNames,
    /// The `.pgpass` file raftgres writes for its own connections.
    pub pgpass: Option<PathBuf>,
    /// Roles raftgres connects as.
    pub authentication: PgAuthentication,
    /// Local GUCs (cluster-wide GUCs are dropped with a warning: they are dynamic only).
    pub parameters: BTreeMap<String, Value>,
    /// `pg_hba.conf` lines (replaces the file when set).
    pub pg_hba: Vec<String>,
    /// `pg_ident.conf` lines.
    pub pg_ident: Vec<String>,
    /// Callback scripts.
    pub callbacks: Callbacks,
    /// Replica creation methods in order of preference (default `basebackup`).
    pub create_replica_methods: Vec<String>,
    /// The sections of custom replica methods, by method name (each has a `command`).
    pub replica_methods: BTreeMap<String, Map<String, Value>>,
    /// `pg_basebackup` options.
    pub basebackup: Vec<ProgramOption>,
    /// Try `pg_rewind` before reinitializing a diverged member.
    pub use_pg_rewind: bool,
    /// Remove the data directory when `pg_rewind` fails.
    pub remove_data_directory_on_rewind_failure: bool,
    /// Remove the data directory when timelines diverged and rewind is not possible.
    pub remove_data_directory_on_diverged_timelines: bool,
    /// How long `pg_ctl` may take to start or stop.
    pub pg_ctl_timeout: Duration,
    /// Connect through the Unix socket.
    pub use_unix_socket: bool,
    /// Replicate through the Unix socket.
    pub use_unix_socket_repl: bool,
    /// `recovery_conf`: recovery settings of every replica (`restore_command`, `archive_cleanup_command`,
    /// `recovery_min_apply_delay`, …), written into the managed `postgresql.conf` whenever PostgreSQL runs as a
    /// replica or standby. The settings raftgres manages itself were dropped with a warning.
    pub recovery_conf: BTreeMap<String, Value>,
    /// Script that must succeed before a promote.
    pub pre_promote: Option<String>,
    /// Script run before PostgreSQL is stopped.
    pub before_stop: Option<String>,
    /// OS user that runs PostgreSQL programs when raftgres runs as root (raftgres extension).
    pub run_as: String,
}

impl PostgresqlConfig {
    /// The `.pgpass` file raftgres writes: `pgpass`, else `.pgpass-<name>` next to the data directory.
    pub fn pgpass_path(&self, name: &str) -> PathBuf {
        match &self.pgpass {
            Some(path) => path.clone(),
            None => self.data_dir.parent().unwrap_or(std::path::Path::new("/tmp")).join(format!(".pgpass-{name}")),
        }
    }

    /// Where the configuration files live.
    pub fn config_dir(&self) -> &std::path::Path {
        self.config_dir.as_deref().unwrap_or(&self.data_dir)
    }

    /// The path of `program` under `bin_dir`, or its bare name when `bin_dir` is unset; `None`
    /// for a name outside [`defaults::PG_PROGRAMS`].
    pub fn program(&self, program: &str) -> Option<PathBuf> {
        let name = self.bin_name.get(program)?;
        Some(match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        })
    }
}

/// Member tags, kept as written so they are published to the member key unchanged;
/// the load step has checked the types of the well-known ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tags(pub Map<String, Value>);

impl Tags {
    fn flag(&self, key: &str) -> Option<bool> {
        self.0.get(key).and_then(walk::parse_bool)
    }

    fn int(&self, key: &str) -> Option<i64> {
        self.0.get(key).and_then(walk::parse_int)
    }

    /// Never promote this member: `nofailover` if set, else `failover_priority <= 0`.
    pub fn nofailover(&self) -> bool {
        self.flag("nofailover").unwrap_or_else(|| self.int("failover_priority").is_some_and(|p| p <= 0))
    }

    /// Failover priority: 0 when `nofailover` is true, else `failover_priority` (default 1).
    pub fn failover_priority(&self) -> i64 {
        if self.flag("nofailover") == Some(true) {
            0
        } else {
            self.int("failover_priority").unwrap_or(1)
        }
    }

    /// Never a synchronous standby: `nosync` if set, else `sync_priority <= 0`.
    pub fn nosync(&self) -> bool {
        self.flag("nosync").unwrap_or_else(|| self.int("sync_priority").is_some_and(|p| p <= 0))
    }

    /// Synchronous standby priority: 0 when `nosync` is true, else `sync_priority` (default 1).
    pub fn sync_priority(&self) -> i64 {
        if self.flag("nosync") == Some(true) {
            0
        } else {
            self.int("sync_priority").unwrap_or(1)
        }
    }

    /// Other replicas may clone from this member.
    pub fn clonefrom(&self) -> bool {
        self.flag("clonefrom").unwrap_or(false)
    }

    /// Load balancers should not send reads here (`/replica` answers 503).
    pub fn noloadbalance(&self) -> bool {
        self.flag("noloadbalance").unwrap_or(false)
    }

    /// Does not stream from the primary (archive recovery only).
    pub fn nostream(&self) -> bool {
        self.flag("nostream").unwrap_or(false)
    }

    /// Member to cascade from instead of the primary.
    pub fn replicatefrom(&self) -> Option<&str> {
        self.0.get("replicatefrom").and_then(Value::as_str)
    }
}

/// `watchdog.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogMode {
    /// No watchdog.
    Off,
    /// Use it when available.
    Automatic,
    /// Refuse to lead without it.
    Required,
}

/// The `watchdog` section (only Linux's default driver exists: `watchdog.driver` is refused otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Whether the watchdog is used.
    pub mode: WatchdogMode,
    /// The watchdog device.
    pub device: PathBuf,
    /// How the watchdog timeout follows from `ttl`.
    pub safety_margin: SafetyMargin,
}

/// `watchdog.safety_margin`: how much shorter than `ttl` the watchdog timeout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafetyMargin {
    /// The timeout is `ttl` minus this.
    Fixed(Duration),
    /// `-1`: the timeout is half of `ttl` (Patroni's `ttl // 2`).
    HalfTtl,
}

impl WatchdogConfig {
    /// The timeout to set on the device for the lease `ttl`: `ttl - safety_margin` (or `ttl / 2`) in whole
    /// seconds, rounded down as the device takes it (a shorter timeout fires sooner, the safe side).
    ///
    /// The error says why no timeout is usable: below one second (the device's unit), or not shorter than the
    /// lease (`ttl - max(0.1 ttl, 0.5 s)`): the watchdog is fed only while a keepalive keeps it from firing
    /// after the leader key can expire (`watchdog::policy::may_feed`), so a timeout that long is never fed.
    pub fn timeout(&self, ttl: Duration) -> Result<Duration, String> {
        let (exact, formula) = match self.safety_margin {
            SafetyMargin::Fixed(margin) => (
                ttl.saturating_sub(margin),
                format!("ttl {}s - safety_margin {}s", ttl.as_secs_f64(), margin.as_secs_f64()),
            ),
            SafetyMargin::HalfTtl => (ttl / 2, format!("ttl {}s / 2 (safety_margin -1)", ttl.as_secs_f64())),
        };
        let timeout = Duration::from_secs(exact.as_secs());
        if timeout < Duration::from_secs(1) {
            return Err(format!("{formula} leaves no watchdog timeout of at least 1s"));
        }
        let lease = ttl.saturating_sub(raft::lease::margin(ttl));
        if timeout >= lease {
            return Err(format!(
                "a watchdog timeout of {}s ({formula}) is not shorter than the lease ({}s), so it could never be fed",
                timeout.as_secs(),
                lease.as_secs_f64()
            ));
        }
        Ok(timeout)
    }
}
