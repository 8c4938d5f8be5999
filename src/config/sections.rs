//! PURE: builds the typed [`Config`] from the merged, untyped tree, one section at a time.
//!
//! Required keys, types and single-key syntax (addresses, enums) are checked here, with the
//! key's path in every error; unknown keys become warnings. Rules that relate several keys
//! live in `validate.rs`; reading files and the environment lives in `load.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use raft::config::LeaseMode;
use raft::PeerConfig;
use serde_json::Map;
use serde_json::Value;

use super::defaults;
use super::walk::expected;
use super::walk::invalid;
use super::walk::parse_duration;
use super::walk::parse_int;
use super::walk::scalar_text;
use super::walk::Section;
use super::walk::Unit;
use super::BasicAuth;
use super::BinNames;
use super::BootstrapConfig;
use super::BootstrapMethod;
use super::Callbacks;
use super::Config;
use super::ConfigError;
use super::CtlConfig;
use super::DynamicConfig;
use super::HaproxyConfig;
use super::PgAuthentication;
use super::PgListen;
use super::PgUser;
use super::PostgresqlConfig;
use super::ProgramOption;
use super::RaftSection;
use super::RestApiConfig;
use super::RuntimeApi;
use super::SafetyMargin;
use super::Secret;
use super::ServerTokens;
use super::Tags;
use super::VerifyClient;
use super::VipConfig;
use super::WatchdogConfig;
use super::WatchdogMode;

type Res<T> = Result<T, ConfigError>;

/// Patroni's other DCS sections: raftgres keeps the cluster state in its embedded Raft.
const OTHER_DCS: [&str; 6] = ["etcd", "etcd3", "consul", "zookeeper", "exhibitor", "kubernetes"];

/// Builds the configuration; `warnings` receives unknown and ignored keys.
pub(crate) fn config(root: &Value, warnings: &mut Vec<String>) -> Res<Config> {
    let mut sec = Section::new("", root)?;
    let name = sec.required_str("name", "set this member's name, unique in the cluster")?;
    let scope = sec.required_str("scope", "set the cluster name, the same on every member")?;
    let namespace = namespace(sec.str("namespace")?);
    let raft = raft(&mut sec, warnings)?;
    let hint = "add the restapi section with listen and connect_address (host:port)";
    let restapi = restapi(sec.required_section("restapi", hint)?, &raft, warnings)?;
    let ctl = match sec.section("ctl")? {
        Some(section) => ctl(section, warnings)?,
        None => CtlConfig::default(),
    };
    let hint = "add the postgresql section (listen, connect_address, data_dir, authentication)";
    let postgresql = postgresql(sec.required_section("postgresql", hint)?, warnings)?;
    let bootstrap = bootstrap(sec.section("bootstrap")?, warnings)?;
    let tags = tags(sec.section("tags")?, warnings)?;
    let watchdog = watchdog(sec.section("watchdog")?, warnings)?;
    let log = super::log::section(sec.section("log")?, warnings)?;
    let haproxy = match sec.section("haproxy")? {
        Some(section) => Some(haproxy(section, warnings)?),
        None => None,
    };
    let vip = match sec.section("vip")? {
        Some(section) => Some(vip(section, warnings)?),
        None => None,
    };
    let dcs_reason = "is a Patroni DCS section; raftgres keeps the cluster state in its embedded raft";
    sec.ignore(&OTHER_DCS, dcs_reason, warnings);
    sec.ignore(&["thread_pool_size", "thread_stack_size", "citus"], "is not supported by raftgres", warnings);
    sec.finish(warnings);
    Ok(Config { name, scope, namespace, restapi, ctl, raft, bootstrap, postgresql, tags, watchdog, log, haproxy, vip })
}

/// `/service/`-style: one leading and one trailing slash.
fn namespace(value: Option<String>) -> String {
    match value {
        None => defaults::NAMESPACE.to_string(),
        Some(text) => {
            let trimmed = text.trim().trim_matches('/');
            if trimmed.is_empty() {
                "/".to_string()
            } else {
                format!("/{trimmed}/")
            }
        }
    }
}

/// Patroni's pysyncobj keys and what to use instead.
const PATRONI_RAFT_KEYS: [(&str, &str); 4] = [
    ("self_addr", "use raft.node_id with raft.advertise (the host:port peers use to reach this node)"),
    ("bind_addr", "use raft.listen (the host:port the peer listener binds)"),
    ("partner_addrs", "list every member, this one included, in raft.peers as {id, name, raft_addr, api_addr}"),
    ("password", "raftgres does not use a shared password on peer traffic; remove it"),
];

fn raft(root: &mut Section<'_>, warnings: &mut Vec<String>) -> Res<RaftSection> {
    let hint = "add the raft section (node_id, listen, data_dir, peers): raftgres keeps the cluster state in \
                its embedded raft instead of etcd";
    let mut sec = root.required_section("raft", hint)?;
    for (key, instead) in PATRONI_RAFT_KEYS {
        if sec.has(key) {
            return Err(invalid(sec.path_of(key), format!("is Patroni's pysyncobj setting; {instead}")));
        }
    }
    let node_id = sec.int_at_least("node_id", "an integer node id", 0)?;
    let node_id = node_id.ok_or_else(|| sec.missing("node_id", "set this node's raft id as listed in raft.peers"))?;
    let node_id = node_id.unsigned_abs();
    let listen = sec.host_port("listen", true)?;
    let listen = listen.ok_or_else(|| sec.missing("listen", "set the host:port of the raft peer listener"))?;
    let data_dir = sec.required_str("data_dir", "set the directory of the raft database")?;
    let peers = peers(&mut sec, warnings)?;
    let advertise = match sec.host_port("advertise", false)? {
        Some(advertise) => advertise,
        None if !listen.is_wildcard() => listen.clone(),
        None => own_raft_addr(&peers, node_id).ok_or_else(|| {
            let message = format!(
                "missing; raft.listen {listen} is a wildcard address, set the host:port peers use to reach this node"
            );
            invalid(sec.path_of("advertise"), message)
        })?,
    };
    let insecure = sec.flag("insecure")?;
    let tls = raft_tls(&mut sec, warnings)?;
    if insecure && tls.is_some() {
        let message = "is set together with raft.tls; remove raft.insecure to use TLS".to_string();
        return Err(invalid(sec.path_of("insecure"), message));
    }
    let heartbeat_interval = sec.duration("heartbeat_interval", Unit::Millis)?;
    let election_timeout_min = sec.duration("election_timeout_min", Unit::Millis)?;
    let election_timeout_max = sec.duration("election_timeout_max", Unit::Millis)?;
    let lease_mode = lease_mode(&mut sec, warnings)?;
    let leadership_follows_primary = sec.bool("leadership_follows_primary")?.unwrap_or(true);
    sec.finish(warnings);
    Ok(RaftSection {
        node_id,
        listen,
        advertise,
        data_dir: PathBuf::from(data_dir),
        peers,
        insecure,
        tls,
        lease_mode,
        leadership_follows_primary,
        heartbeat_interval: heartbeat_interval.unwrap_or(defaults::RAFT_HEARTBEAT_INTERVAL),
        election_timeout_min: election_timeout_min.unwrap_or(defaults::RAFT_ELECTION_TIMEOUT_MIN),
        election_timeout_max: election_timeout_max.unwrap_or(defaults::RAFT_ELECTION_TIMEOUT_MAX),
    })
}

/// `raft.tls: {cafile, certfile, keyfile}`: the files `raftgres certs init` writes.
fn raft_tls(parent: &mut Section<'_>, warnings: &mut Vec<String>) -> Res<Option<raft::config::TlsFiles>> {
    let Some(mut sec) = parent.section("tls")? else { return Ok(None) };
    let hint = "set the file `raftgres certs init` wrote for this node";
    let cafile = PathBuf::from(sec.required_str("cafile", hint)?);
    let certfile = PathBuf::from(sec.required_str("certfile", hint)?);
    let keyfile = PathBuf::from(sec.required_str("keyfile", hint)?);
    sec.finish(warnings);
    Ok(Some(raft::config::TlsFiles { cafile, certfile, keyfile }))
}

fn own_raft_addr(peers: &[PeerConfig], node_id: u64) -> Option<super::HostPort> {
    let peer = peers.iter().find(|p| p.id == node_id)?;
    super::HostPort::parse(&peer.raft_addr).filter(|addr| !addr.is_wildcard())
}

fn lease_mode(sec: &mut Section<'_>, warnings: &mut Vec<String>) -> Res<LeaseMode> {
    let skew = sec.duration("max_clock_skew", Unit::Millis)?;
    let mode = sec.str("lease_mode")?.map(|m| m.trim().to_ascii_lowercase());
    match mode.as_deref() {
        None | Some("strict") => {
            if skew.is_some() {
                warnings
                    .push(format!("{} is used only with lease_mode: stamped (ignored)", sec.path_of("max_clock_skew")));
            }
            Ok(LeaseMode::Strict)
        }
        Some("stamped") => {
            let skew = skew.unwrap_or(defaults::RAFT_MAX_CLOCK_SKEW);
            Ok(LeaseMode::Stamped { max_clock_skew_ms: u64::try_from(skew.as_millis()).unwrap_or(u64::MAX) })
        }
        Some(other) => Err(invalid(sec.path_of("lease_mode"), format!("expected strict or stamped, got {other:?}"))),
    }
}

fn peers(sec: &mut Section<'_>, warnings: &mut Vec<String>) -> Res<Vec<PeerConfig>> {
    let path = sec.path_of("peers");
    let hint = "list every member, this one included, as {id, name, raft_addr, api_addr}";
    let items = match sec.raw("peers") {
        None => return Err(sec.missing("peers", hint)),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(expected(path, "a list of {id, name, raft_addr, api_addr}", other)),
    };
    let mut res = Vec::with_capacity(items.len());
    for (peer_idx, item) in items.iter().enumerate() {
        let mut peer = Section::new(&format!("{path}[{peer_idx}]"), item)?;
        let id = peer.int_at_least("id", "an integer node id", 0)?;
        let id = id.ok_or_else(|| peer.missing("id", "set the member's raft node id"))?.unsigned_abs();
        let name = peer.required_str("name", "set the member's name")?;
        let raft_addr = peer.host_port("raft_addr", false)?;
        let raft_addr = raft_addr.ok_or_else(|| peer.missing("raft_addr", "set the host:port of its raft listener"))?;
        let api_addr = peer.host_port("api_addr", false)?.map(|a| a.to_string()).unwrap_or_default();
        peer.finish(warnings);
        res.push(PeerConfig { id, name, raft_addr: raft_addr.to_string(), api_addr });
    }
    Ok(res)
}

fn basic_auth(parent: &mut Section<'_>, warnings: &mut Vec<String>) -> Res<Option<BasicAuth>> {
    let Some(mut sec) = parent.section("authentication")? else { return Ok(None) };
    let username = sec.required_str("username", "set the user name, or remove the authentication section")?;
    let password = sec.required_str("password", "set the password, or remove the authentication section")?;
    sec.finish(warnings);
    Ok(Some(BasicAuth { username, password: Secret::new(password) }))
}

fn path_buf(sec: &mut Section<'_>, key: &str) -> Res<Option<PathBuf>> {
    Ok(sec.str(key)?.filter(|s| !s.is_empty()).map(PathBuf::from))
}

fn restapi(mut sec: Section<'_>, raft: &RaftSection, warnings: &mut Vec<String>) -> Res<RestApiConfig> {
    let listen = sec.host_port("listen", true)?;
    let listen = listen.ok_or_else(|| sec.missing("listen", "set the host:port the REST API binds"))?;
    let own_api_addr =
        raft.peers.iter().find(|p| p.id == raft.node_id).and_then(|p| super::HostPort::parse(&p.api_addr));
    let connect_address = match sec.host_port("connect_address", false)? {
        Some(address) => address,
        None => own_api_addr.ok_or_else(|| {
            let hint = "set the host:port other members and clients use to reach this node's REST API \
                        (or this node's api_addr in raft.peers)";
            sec.missing("connect_address", hint)
        })?,
    };
    let verify_client = match sec.str("verify_client")?.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("none") => VerifyClient::None,
        Some("optional") => VerifyClient::Optional,
        Some("required") => VerifyClient::Required,
        Some(other) => {
            let message = format!("expected none, optional or required, got {other:?}");
            return Err(invalid(sec.path_of("verify_client"), message));
        }
    };
    let server_tokens = match sec.str("server_tokens")?.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("original") => ServerTokens::Original,
        Some("productonly") => ServerTokens::ProductOnly,
        Some("minimal") => ServerTokens::Minimal,
        Some(other) => {
            let message = format!("expected Original, ProductOnly or Minimal, got {other:?}");
            return Err(invalid(sec.path_of("server_tokens"), message));
        }
    };
    let res = RestApiConfig {
        listen,
        connect_address,
        authentication: basic_auth(&mut sec, warnings)?,
        certfile: path_buf(&mut sec, "certfile")?,
        keyfile: path_buf(&mut sec, "keyfile")?,
        keyfile_password: sec.str("keyfile_password")?.map(Secret::new),
        cafile: path_buf(&mut sec, "cafile")?,
        verify_client,
        allowlist: sec.str_list("allowlist")?,
        allowlist_include_members: sec.flag("allowlist_include_members")?,
        http_extra_headers: sec.string_map("http_extra_headers")?,
        https_extra_headers: sec.string_map("https_extra_headers")?,
        server_tokens,
    };
    let ignored = ["ciphers", "request_queue_size", "thread_pool_size"];
    sec.ignore(&ignored, "is not supported by raftgres", warnings);
    sec.finish(warnings);
    Ok(res)
}

fn ctl(mut sec: Section<'_>, warnings: &mut Vec<String>) -> Res<CtlConfig> {
    let res = CtlConfig {
        authentication: basic_auth(&mut sec, warnings)?,
        insecure: sec.flag("insecure")?,
        cacert: path_buf(&mut sec, "cacert")?,
        certfile: path_buf(&mut sec, "certfile")?,
        keyfile: path_buf(&mut sec, "keyfile")?,
        keyfile_password: sec.str("keyfile_password")?.map(Secret::new),
    };
    sec.finish(warnings);
    Ok(res)
}

/// Options raftgres passes itself, by program (Patroni's `not_allowed_options`).
const INITDB_RESERVED: [&str; 5] = ["pgdata", "nosync", "pwfile", "sync-only", "version"];
const BASEBACKUP_RESERVED: [&str; 4] = ["pgdata", "format", "wal-method", "write-recovery-conf"];

/// `initdb`/`basebackup` options: a list of names or single-key maps, or one map.
fn program_options(sec: &mut Section<'_>, key: &str, reserved: &[&str]) -> Res<Vec<ProgramOption>> {
    let path = sec.path_of(key);
    let pairs: Vec<(String, String, Option<&Value>)> = match sec.raw(key) {
        None => return Ok(Vec::new()),
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (format!("{path}.{k}"), k.clone(), Some(v))).collect(),
        Some(Value::Array(items)) => {
            let mut pairs = Vec::with_capacity(items.len());
            for (item_idx, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{item_idx}]");
                match item {
                    Value::String(name) => pairs.push((item_path, name.clone(), None)),
                    Value::Object(map) if map.len() == 1 => {
                        pairs.extend(map.iter().map(|(k, v)| (item_path.clone(), k.clone(), Some(v))));
                    }
                    other => return Err(expected(item_path, "an option name or a single-key map", other)),
                }
            }
            pairs
        }
        Some(other) => return Err(expected(path, "a list of options or a map", other)),
    };
    let mut res = Vec::with_capacity(pairs.len());
    for (option_path, name, value) in pairs {
        if reserved.contains(&name.as_str()) {
            return Err(invalid(option_path, format!("--{name} is set by raftgres itself; remove it")));
        }
        let value = match value {
            None | Some(Value::Null) => None,
            Some(v) => Some(scalar_text(v).ok_or_else(|| expected(option_path.clone(), "a scalar option value", v))?),
        };
        res.push(ProgramOption { name, value });
    }
    Ok(res)
}

fn bootstrap(sec: Option<Section<'_>>, warnings: &mut Vec<String>) -> Res<BootstrapConfig> {
    let Some(mut sec) = sec else {
        let method = BootstrapMethod::Initdb;
        let dcs = DynamicConfig::default();
        return Ok(BootstrapConfig { dcs, method, initdb: Vec::new(), pg_hba: Vec::new(), post_bootstrap: None });
    };
    let dcs_path = sec.path_of("dcs");
    let dcs_document = sec.raw("dcs").cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let (dcs, dcs_warnings) = DynamicConfig::parse(dcs_document, &dcs_path)?;
    warnings.extend(dcs_warnings);
    let method = match sec.str("method")? {
        None => BootstrapMethod::Initdb,
        Some(name) if name == "initdb" => BootstrapMethod::Initdb,
        Some(name) => custom_method(&mut sec, name)?,
    };
    let initdb = program_options(&mut sec, "initdb", &INITDB_RESERVED)?;
    let pg_hba = sec.str_list("pg_hba")?;
    let post_bootstrap = match sec.str("post_bootstrap")? {
        Some(script) => Some(script),
        None => sec.str("post_init")?,
    };
    sec.ignore(&["users"], "was removed in Patroni 4.0; create users in post_bootstrap", warnings);
    sec.finish(warnings);
    Ok(BootstrapConfig { dcs, method, initdb, pg_hba, post_bootstrap })
}

fn custom_method(sec: &mut Section<'_>, name: String) -> Res<BootstrapMethod> {
    let path = sec.path_of(&name);
    let hint = format!("bootstrap.method is {name:?}; add a bootstrap.{name} section with its command");
    let section = match sec.raw(&name) {
        Some(Value::Object(map)) => map.clone(),
        Some(other) => return Err(expected(path, "a map with a command", other)),
        None => return Err(sec.missing(&name, &hint)),
    };
    let command = section.get("command").and_then(scalar_text).filter(|c| !c.trim().is_empty());
    let command = command.ok_or_else(|| invalid(format!("{path}.command"), "missing; set the bootstrap command"))?;
    Ok(BootstrapMethod::Custom { name, command, section })
}

fn pg_user(parent: &mut Section<'_>, role: &str, warnings: &mut Vec<String>) -> Res<Option<PgUser>> {
    let Some(mut sec) = parent.section(role)? else { return Ok(None) };
    let username = sec.required_str("username", &format!("set the {role} role name"))?;
    let password = sec.str("password")?.map(Secret::new);
    let mut options = BTreeMap::new();
    for option in defaults::PG_AUTH_OPTIONS {
        if let Some(value) = sec.str(option)? {
            options.insert(option.to_string(), value);
        }
    }
    sec.finish(warnings);
    Ok(Some(PgUser { username, password, options }))
}

fn pg_authentication(pg: &mut Section<'_>, warnings: &mut Vec<String>) -> Res<PgAuthentication> {
    let hint = "add postgresql.authentication with superuser and replication roles";
    let mut sec = pg.required_section("authentication", hint)?;
    let hint = "add the superuser role (username, password)";
    let superuser = pg_user(&mut sec, "superuser", warnings)?.ok_or_else(|| sec.missing("superuser", hint))?;
    let hint = "add the replication role (username, password)";
    let replication = pg_user(&mut sec, "replication", warnings)?.ok_or_else(|| sec.missing("replication", hint))?;
    let rewind = pg_user(&mut sec, "rewind", warnings)?;
    sec.finish(warnings);
    Ok(PgAuthentication { superuser, replication, rewind })
}

fn bin_name(pg: &mut Section<'_>, warnings: &mut Vec<String>) -> Res<BinNames> {
    let mut res = BinNames::default();
    let Some(mut sec) = pg.section("bin_name")? else { return Ok(res) };
    for program in defaults::PG_PROGRAMS {
        if let (Some(name), Some(slot)) = (sec.str(program)?, res.get_mut(program)) {
            *slot = name;
        }
    }
    sec.finish(warnings);
    Ok(res)
}

fn callbacks(pg: &mut Section<'_>, warnings: &mut Vec<String>) -> Res<Callbacks> {
    let Some(mut sec) = pg.section("callbacks")? else { return Ok(Callbacks::default()) };
    let res = Callbacks {
        on_start: sec.str("on_start")?,
        on_stop: sec.str("on_stop")?,
        on_restart: sec.str("on_restart")?,
        on_reload: sec.str("on_reload")?,
        on_role_change: sec.str("on_role_change")?,
    };
    sec.finish(warnings);
    Ok(res)
}

/// `postgresql.recovery_conf`: a map of scalars. As in Patroni, the upstream (`primary_conninfo`,
/// `primary_slot_name`) is raftgres' to set, and a replica that follows its leader has no recovery target; those
/// keys are dropped, but out loud.
pub(crate) fn recovery_conf(pg: &mut Section<'_>, warnings: &mut Vec<String>) -> Res<BTreeMap<String, Value>> {
    let path = pg.path_of("recovery_conf");
    let mut settings = pg.scalar_map("recovery_conf")?;
    settings.retain(|key, _| {
        let lower = key.to_ascii_lowercase();
        let managed = ["primary_conninfo", "primary_slot_name", "standby_mode", "trigger_file", "promote_trigger_file"];
        let reason = if managed.contains(&lower.as_str()) {
            "is set by raftgres from the leader key and tags"
        } else if lower.starts_with("recovery_target") {
            "would stop a replica that must follow its leader"
        } else {
            return true;
        };
        warnings.push(format!("{path}.{key} {reason} (ignored, as Patroni does)"));
        false
    });
    Ok(settings)
}

fn local_parameters(pg: &mut Section<'_>, warnings: &mut Vec<String>) -> Res<BTreeMap<String, Value>> {
    let path = pg.path_of("parameters");
    let mut parameters = pg.scalar_map("parameters")?;
    for guc in defaults::CLUSTER_WIDE_GUCS {
        if parameters.remove(guc).is_some() {
            warnings.push(format!(
                "{path}.{guc} can only be set cluster-wide in the dynamic configuration \
                 (bootstrap.dcs.postgresql.parameters or PATCH /config) (ignored)"
            ));
        }
    }
    Ok(parameters)
}

/// Custom replica-creation method sections by method name.
type MethodSections = BTreeMap<String, Map<String, Value>>;

fn replica_methods(pg: &mut Section<'_>) -> Res<(Vec<String>, MethodSections)> {
    let mut methods = pg.str_list("create_replica_methods")?;
    if methods.is_empty() {
        methods.push("basebackup".to_string());
    }
    let mut sections = BTreeMap::new();
    for method in methods.iter().filter(|m| m.as_str() != "basebackup") {
        let path = pg.path_of(method);
        let hint =
            format!("create_replica_methods lists {method:?}; add a postgresql.{method} section with its command");
        let section = match pg.raw(method) {
            Some(Value::Object(map)) => map.clone(),
            Some(other) => return Err(expected(path, "a map with a command", other)),
            None => return Err(pg.missing(method, &hint)),
        };
        if section.get("command").and_then(scalar_text).is_none_or(|c| c.trim().is_empty()) {
            return Err(invalid(format!("{path}.command"), "missing; set the command that creates the replica"));
        }
        sections.insert(method.clone(), section);
    }
    Ok((methods, sections))
}

fn postgresql(mut sec: Section<'_>, warnings: &mut Vec<String>) -> Res<PostgresqlConfig> {
    let listen_text =
        sec.required_str("listen", "set host[,host...]:port for PostgreSQL's listen_addresses and port")?;
    let listen = PgListen::parse(&listen_text)
        .ok_or_else(|| invalid(sec.path_of("listen"), format!("expected host[,host...]:port, got {listen_text:?}")))?;
    let connect_address = sec.host_port("connect_address", false)?;
    let hint = "set the host:port other members use to reach this PostgreSQL";
    let connect_address = connect_address.ok_or_else(|| sec.missing("connect_address", hint))?;
    let data_dir = PathBuf::from(sec.required_str("data_dir", "set the PostgreSQL data directory")?);
    let (create_replica_methods, replica_methods) = replica_methods(&mut sec)?;
    let res = PostgresqlConfig {
        listen,
        connect_address,
        data_dir,
        config_dir: path_buf(&mut sec, "config_dir")?,
        bin_dir: path_buf(&mut sec, "bin_dir")?,
        bin_name: bin_name(&mut sec, warnings)?,
        pgpass: path_buf(&mut sec, "pgpass")?,
        authentication: pg_authentication(&mut sec, warnings)?,
        parameters: local_parameters(&mut sec, warnings)?,
        pg_hba: sec.str_list("pg_hba")?,
        pg_ident: sec.str_list("pg_ident")?,
        callbacks: callbacks(&mut sec, warnings)?,
        create_replica_methods,
        replica_methods,
        basebackup: program_options(&mut sec, "basebackup", &BASEBACKUP_RESERVED)?,
        use_pg_rewind: sec.flag("use_pg_rewind")?,
        remove_data_directory_on_rewind_failure: sec.flag("remove_data_directory_on_rewind_failure")?,
        remove_data_directory_on_diverged_timelines: sec.flag("remove_data_directory_on_diverged_timelines")?,
        pg_ctl_timeout: sec.duration("pg_ctl_timeout", Unit::Seconds)?.unwrap_or(defaults::PG_CTL_TIMEOUT),
        use_unix_socket: sec.flag("use_unix_socket")?,
        use_unix_socket_repl: sec.flag("use_unix_socket_repl")?,
        recovery_conf: recovery_conf(&mut sec, warnings)?,
        pre_promote: sec.str("pre_promote")?,
        before_stop: sec.str("before_stop")?,
        run_as: sec.str("run_as")?.filter(|u| !u.trim().is_empty()).unwrap_or_else(|| defaults::RUN_AS.to_string()),
    };
    let ignored = ["proxy_address", "custom_conf"];
    sec.ignore(&ignored, "is not supported by raftgres", warnings);
    let mut res = res;
    // Any other map with a command is a replica method section, as in Patroni: `standby_cluster.
    // create_replica_methods` (dynamic) may name a method the local list does not.
    for key in sec.unread_keys() {
        match sec.raw(key) {
            Some(Value::Object(section))
                if section.get("command").and_then(scalar_text).is_some_and(|c| !c.trim().is_empty()) =>
            {
                res.replica_methods.insert(key.to_owned(), section.clone());
            }
            _ => warnings.push(format!("unknown key {} (ignored)", sec.path_of(key))),
        }
    }
    sec.finish(warnings);
    Ok(res)
}

/// Well-known boolean tags.
const BOOL_TAGS: [&str; 5] = ["nofailover", "clonefrom", "noloadbalance", "nosync", "nostream"];

fn tags(sec: Option<Section<'_>>, warnings: &mut Vec<String>) -> Res<Tags> {
    let Some(mut sec) = sec else { return Ok(Tags::default()) };
    for tag in BOOL_TAGS {
        sec.bool(tag)?;
    }
    for tag in ["failover_priority", "sync_priority"] {
        sec.int_at_least(tag, "an integer priority", 0)?;
    }
    sec.str("replicatefrom")?;
    // The well-known tags are stored typed (`"yes"` → true, `"2"` → 2): the HA loop, the member
    // key and the API read them as JSON booleans and integers.
    let mut map = Map::new();
    for key in sec.keys() {
        if let Some(value) = sec.raw(key) {
            let typed = if BOOL_TAGS.contains(&key.as_str()) {
                super::walk::parse_bool(value).map(Value::Bool)
            } else if key == "failover_priority" || key == "sync_priority" {
                super::walk::parse_int(value).map(Value::from)
            } else {
                None
            };
            map.insert(key.clone(), typed.unwrap_or_else(|| value.clone()));
        }
    }
    let res = Tags(map);
    for (bool_tag, priority_tag) in [("nofailover", "failover_priority"), ("nosync", "sync_priority")] {
        conflicting_tags(&res, bool_tag, priority_tag, warnings);
    }
    Ok(res)
}

/// Patroni's warning when a boolean tag and its priority disagree; the boolean wins.
fn conflicting_tags(tags: &Tags, bool_tag: &str, priority_tag: &str, warnings: &mut Vec<String>) {
    let flag = tags.0.get(bool_tag).and_then(super::walk::parse_bool);
    let priority = tags.0.get(priority_tag).and_then(super::walk::parse_int);
    if let (Some(flag), Some(priority)) = (flag, priority) {
        if (flag && priority > 0) || (!flag && priority <= 0) {
            let shown = if flag { "True" } else { "False" };
            warnings.push(format!(
                "Conflicting configuration between {bool_tag}: {shown} and {priority_tag}: {priority}. \
                 Defaulting to {bool_tag}: {shown}"
            ));
        }
    }
}

/// A name HAProxy accepts for a backend or server, and that is safe inside a runtime API command line.
fn haproxy_name(text: &str) -> bool {
    !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '{' | '}'))
}

fn haproxy(mut sec: Section<'_>, warnings: &mut Vec<String>) -> Res<HaproxyConfig> {
    let path = sec.path_of("runtime_api");
    let hint = "list the HAProxy runtime API addresses: a UNIX socket path (/run/haproxy/admin.sock) or host:port, \
        from `stats socket … level admin` in haproxy.cfg";
    let addresses = match sec.raw("runtime_api") {
        None => return Err(sec.missing("runtime_api", hint)),
        Some(Value::Array(items)) => items.clone(),
        Some(single @ Value::String(_)) => vec![single.clone()],
        Some(other) => return Err(expected(path, "a list of UNIX socket paths or host:port addresses", other)),
    };
    if addresses.is_empty() {
        return Err(invalid(path, format!("is empty; {hint}")));
    }
    let mut runtime_api = Vec::with_capacity(addresses.len());
    for (idx, item) in addresses.iter().enumerate() {
        let item_path = format!("{path}[{idx}]");
        let text = match item {
            Value::String(text) => text.trim(),
            other => return Err(expected(item_path, "a UNIX socket path or host:port", other)),
        };
        let address = if text.starts_with('/') {
            RuntimeApi::Unix(PathBuf::from(text))
        } else {
            let parsed = super::HostPort::parse(text).filter(|a| !a.host.is_empty() && a.port != 0);
            let Some(address) = parsed else {
                return Err(expected(item_path, "an absolute UNIX socket path or host:port", item));
            };
            RuntimeApi::Tcp(address)
        };
        runtime_api.push(address);
    }
    let has_replica_backend = sec.has("replica_backend");
    let mut name = |key: &str, default: &str| -> Res<String> {
        let value = sec.str(key)?.unwrap_or_else(|| default.to_string());
        if !haproxy_name(&value) || (key != "server" && value.contains(['{', '}'])) {
            return Err(invalid(
                sec.path_of(key),
                format!("{value:?} is not an HAProxy name: use letters, digits, '_', '-', '.' and ':'"),
            ));
        }
        Ok(value)
    };
    let primary_backend = name("primary_backend", "primary")?;
    let server = name("server", "{name}")?;
    let replica_backend = match has_replica_backend {
        true => Some(name("replica_backend", "")?),
        false => None,
    };
    let timeout = sec.duration("timeout", Unit::Millis)?.unwrap_or(defaults::HAPROXY_TIMEOUT);
    if timeout.is_zero() {
        return Err(invalid(sec.path_of("timeout"), "must be above 0 (milliseconds, or with a unit: 500ms, 1s)"));
    }
    sec.finish(warnings);
    Ok(HaproxyConfig { runtime_api, primary_backend, replica_backend, server, timeout })
}

/// A Linux interface name: 1 to 15 bytes, no '/', ':' or whitespace (what `ip link` accepts).
fn interface_name(text: &str) -> bool {
    (1..=15).contains(&text.len()) && !text.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

fn vip(mut sec: Section<'_>, warnings: &mut Vec<String>) -> Res<VipConfig> {
    let hint = "set the floating address with its prefix length, e.g. 10.0.0.100/24";
    let text = sec.required_str("address", hint)?;
    let address = match text.trim().parse::<ipnet::IpNet>() {
        Ok(ipnet::IpNet::V4(net)) if net.prefix_len() > 0 => net,
        Ok(ipnet::IpNet::V4(_)) => return Err(invalid(sec.path_of("address"), format!("{text:?}: {hint}"))),
        Ok(ipnet::IpNet::V6(_)) => {
            return Err(invalid(
                sec.path_of("address"),
                format!(
                    "{text:?} is IPv6: raftgres announces the address with gratuitous ARP, which is IPv4 only; use an \
                     IPv4 address"
                ),
            ))
        }
        Err(_) if text.trim().parse::<std::net::Ipv4Addr>().is_ok() => {
            return Err(invalid(sec.path_of("address"), format!("{text:?} has no prefix length; {hint}")))
        }
        Err(_) => return Err(invalid(sec.path_of("address"), format!("{text:?} is not an address; {hint}"))),
    };
    let interface = sec.required_str("interface", "set the network interface that gets the address, e.g. eth0")?;
    if !interface_name(&interface) {
        return Err(invalid(
            sec.path_of("interface"),
            format!("{interface:?} is not a network interface name (1 to 15 characters, no '/', ':' or spaces)"),
        ));
    }
    let arping_count = match sec.int_at_least("arping_count", "a number of announcements", 0)? {
        None => defaults::VIP_ARPING_COUNT,
        Some(n) => u32::try_from(n).ok().filter(|n| *n <= 100).ok_or_else(|| {
            invalid(sec.path_of("arping_count"), format!("{n} is too many announcements: use 0 to 100"))
        })?,
    };
    sec.finish(warnings);
    Ok(VipConfig { address, interface, arping_count })
}

fn watchdog(sec: Option<Section<'_>>, warnings: &mut Vec<String>) -> Res<WatchdogConfig> {
    // Off unless asked for (Patroni defaults to automatic): at raftgres' 3 s ttl the device's timeout would be
    // 1 s, which a loaded host can miss, and a reset host costs more than the lease and fence guard already give.
    let mut res = WatchdogConfig {
        mode: WatchdogMode::Off,
        device: PathBuf::from(defaults::WATCHDOG_DEVICE),
        safety_margin: SafetyMargin::Fixed(defaults::WATCHDOG_SAFETY_MARGIN),
    };
    let Some(mut sec) = sec else { return Ok(res) };
    if let Some(value) = sec.raw("mode") {
        // Patroni's words; YAML's `on`/`true` is refused as its validator does (its runtime would read it as off).
        res.mode = match (value, scalar_text(value).map(|m| m.to_ascii_lowercase()).as_deref()) {
            (Value::Bool(false), _) => WatchdogMode::Off,
            (Value::String(_), Some("off" | "disable" | "disabled")) => WatchdogMode::Off,
            (Value::String(_), Some("auto" | "automatic")) => WatchdogMode::Automatic,
            (Value::String(_), Some("require" | "required")) => WatchdogMode::Required,
            _ => return Err(expected(sec.path_of("mode"), "off, automatic or required", value)),
        };
    }
    if let Some(device) = path_buf(&mut sec, "device")? {
        res.device = device;
    }
    if let Some(value) = sec.raw("safety_margin") {
        res.safety_margin = match (parse_int(value), parse_duration(value, Unit::Seconds)) {
            (Some(-1), _) => SafetyMargin::HalfTtl,
            (_, Some(margin)) => SafetyMargin::Fixed(margin),
            _ => {
                return Err(expected(sec.path_of("safety_margin"), "a number of seconds, or -1 for half of ttl", value))
            }
        };
    }
    if let Some(driver) = sec.str("driver")? {
        if driver != "default" {
            return Err(invalid(
                sec.path_of("driver"),
                format!("only Linux's watchdog driver \"default\" exists in raftgres, got {driver:?}; remove the key"),
            ));
        }
    }
    sec.finish(warnings);
    Ok(res)
}
