//! PURE: what a local cluster writes for each node: the node YAML (Patroni's layout with raftgres'
//! `raft:` section), the shared pgpass file, and reading that pgpass back so a second `raftgres demo`
//! on the same directory keeps the generated passwords.
//!
//! Ports and paths of every node come from one [`NodeLayout`] per node, so the configuration, the
//! process manager and the HAProxy configuration can never disagree. No file or process I/O here:
//! `cluster.rs` writes what this module renders.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::json;
use serde_json::Map;
use serde_json::Value;
use serde_yaml_ng::Mapping;
use serde_yaml_ng::Value as Yaml;

use crate::config::merge_patch;
use crate::config::Secret;

/// The cluster name (Patroni's `scope`) of every local cluster.
pub const SCOPE: &str = "demo";
/// The PostgreSQL superuser.
pub const SUPERUSER: &str = "postgres";
/// The role replicas stream with.
pub const REPLICATION_USER: &str = "replicator";
/// Loopback: a local cluster never listens on another interface.
pub const HOST: &str = "127.0.0.1";

/// Where one node lives: its name, directory and ports (node indexes start at 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLayout {
    /// 1-based node index, also the Raft node id.
    pub node_idx: usize,
    /// Member name, `node<idx>`.
    pub name: String,
    /// `DIR/node<idx>`: config, logs, pid file and data live here.
    pub dir: PathBuf,
    /// PostgreSQL port.
    pub pg_port: u16,
    /// REST API port.
    pub api_port: u16,
    /// Raft peer port.
    pub raft_port: u16,
    /// The address every service of the node listens on and is reached at: [`HOST`] unless the
    /// node runs in a network namespace of its own (`raftgres chaos --net netns`).
    pub host: String,
    /// The directory that holds the PostgreSQL data directory: [`NodeLayout::dir`], or a
    /// filesystem of its own mounted under it (`raftgres chaos` disk faults).
    pub data_parent: PathBuf,
    /// The directory that holds the Raft database directory, likewise.
    pub raft_parent: PathBuf,
}

impl NodeLayout {
    /// The node YAML, `DIR/nodeN/raftgres.yml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("raftgres.yml")
    }

    /// The PostgreSQL data directory (created by raftgres itself).
    pub fn data_dir(&self) -> PathBuf {
        self.data_parent.join("data")
    }

    /// The Raft database directory.
    pub fn raft_dir(&self) -> PathBuf {
        self.raft_parent.join("raft")
    }

    /// The node's own pgpass, written by raftgres (`postgresql.pgpass`).
    pub fn pgpass_path(&self) -> PathBuf {
        self.dir.join("pgpass")
    }

    /// The raft peer port's mutual TLS files (`raft.tls`), written by `files::ensure_peer_certs`.
    pub fn peer_tls(&self) -> raft::config::TlsFiles {
        raft::config::TlsFiles {
            cafile: self.dir.join("peer-ca.crt"),
            certfile: self.dir.join("peer.crt"),
            keyfile: self.dir.join("peer.key"),
        }
    }

    /// The raftgres process id, written when the node is started.
    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("raftgres.pid")
    }

    /// stdout and stderr of the node's raftgres process (appended).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("raftgres.log")
    }

    /// The Raft node id.
    pub fn raft_id(&self) -> u64 {
        self.node_idx as u64
    }

    /// `<host>:<api port>` (`127.0.0.1` on loopback).
    pub fn api_addr(&self) -> String {
        format!("{}:{}", self.host, self.api_port)
    }

    /// `<host>:<raft port>`.
    pub fn raft_addr(&self) -> String {
        format!("{}:{}", self.host, self.raft_port)
    }

    /// `<host>:<pg port>`.
    pub fn pg_addr(&self) -> String {
        format!("{}:{}", self.host, self.pg_port)
    }
}

/// The first port of each kind; node N gets `base + N - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BasePorts {
    /// PostgreSQL port of node1.
    pub pg: u16,
    /// REST API port of node1.
    pub api: u16,
    /// Raft port of node1.
    pub raft: u16,
}

/// One layout per node, `node1..=node<n_nodes>` under `dir`, ports consecutive from `base`.
pub fn layouts(dir: &Path, n_nodes: usize, base: BasePorts) -> anyhow::Result<Vec<NodeLayout>> {
    anyhow::ensure!(n_nodes >= 1, "a cluster needs at least one node");
    let port = |base_port: u16, offset: usize, kind: &str| -> anyhow::Result<u16> {
        u16::try_from(offset)
            .ok()
            .and_then(|offset| base_port.checked_add(offset))
            .with_context(|| format!("{kind} port {base_port} + {offset} is above 65535; choose a lower base port"))
    };
    (1..=n_nodes)
        .map(|node_idx| {
            let offset = node_idx - 1;
            let node_dir = dir.join(format!("node{node_idx}"));
            Ok(NodeLayout {
                node_idx,
                name: format!("node{node_idx}"),
                dir: node_dir.clone(),
                pg_port: port(base.pg, offset, "PostgreSQL")?,
                api_port: port(base.api, offset, "REST API")?,
                raft_port: port(base.raft, offset, "raft")?,
                host: HOST.to_string(),
                data_parent: node_dir.clone(),
                raft_parent: node_dir,
            })
        })
        .collect()
}

/// The two passwords of a local cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Password of [`SUPERUSER`].
    pub superuser: Secret,
    /// Password of [`REPLICATION_USER`].
    pub replication: Secret,
}

/// A standard pgpass file for every host, port and database: one line per role.
pub fn render_pgpass(credentials: &Credentials) -> String {
    let line = |user: &str, password: &Secret| format!("*:*:*:{}:{}\n", escape(user), escape(password.expose()));
    line(SUPERUSER, &credentials.superuser) + &line(REPLICATION_USER, &credentials.replication)
}

/// Reads the passwords back from a pgpass file written by [`render_pgpass`]; `None` unless both
/// roles have a `*:*:*:` line.
pub fn parse_pgpass(text: &str) -> Option<Credentials> {
    let mut passwords: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let fields = split_pgpass_line(line);
        if let [host, port, database, user, password] = fields.as_slice() {
            if [host, port, database].iter().all(|field| field.as_str() == "*") {
                passwords.entry(user.clone()).or_insert_with(|| password.clone());
            }
        }
    }
    Some(Credentials {
        superuser: Secret::new(passwords.remove(SUPERUSER)?),
        replication: Secret::new(passwords.remove(REPLICATION_USER)?),
    })
}

/// libpq's pgpass escaping: `\` and `:` are preceded by a backslash.
fn escape(field: &str) -> String {
    field.replace('\\', "\\\\").replace(':', "\\:")
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ':' => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    fields.push(current);
    fields
}

/// Everything one node's YAML depends on besides its layout.
#[derive(Debug, Clone, Copy)]
pub struct NodeInputs<'a> {
    /// Every node of the cluster (for `raft.peers`).
    pub layouts: &'a [NodeLayout],
    /// The passwords.
    pub credentials: &'a Credentials,
    /// `postgresql.bin_dir`.
    pub pg_bin_dir: &'a Path,
    /// `(from, to)` Raft node ids → the address node `from` dials to reach node `to`.
    pub raft_addr_override: &'a BTreeMap<(u64, u64), String>,
    /// Merged into `bootstrap.dcs` with `PATCH /config` semantics.
    pub dcs_overrides: &'a Value,
    /// Extra `tags` of this node.
    pub tags: Option<&'a Map<String, Value>>,
    /// Merged into `restapi` with `PATCH /config` semantics.
    pub restapi_overrides: &'a Value,
    /// `raft.leadership_follows_primary` (written only when `false`, the default being `true`).
    pub leadership_follows_primary: bool,
    /// `postgresql.remove_data_directory_on_rewind_failure`.
    pub remove_data_directory_on_rewind_failure: bool,
    /// Merged into this node's whole configuration with `PATCH /config` semantics.
    pub node_overrides: Option<&'a Value>,
    /// Networks (CIDR) besides loopback that may connect to PostgreSQL (`pg_hba.conf`): the
    /// namespace network of `raftgres chaos --net netns`.
    pub client_nets: &'a [String],
}

/// The node YAML of `layout`: a comment header, then the configuration.
pub fn render_node_config(layout: &NodeLayout, inputs: &NodeInputs<'_>) -> anyhow::Result<String> {
    let tree = node_tree(layout, inputs)?;
    let body = serde_yaml_ng::to_string(&tree).context("render the node configuration as YAML")?;
    let header = format!(
        "# {name} of the local raftgres cluster {SCOPE:?}, generated by `raftgres demo` (rewritten on every run).\n\
         # Run it alone with: raftgres run -c {config}\n\
         # wal_log_hints is not set: raftgres always turns it on, so pg_rewind works.\n",
        name = layout.name,
        config = layout.config_path().display(),
    );
    Ok(header + &body)
}

fn node_tree(layout: &NodeLayout, inputs: &NodeInputs<'_>) -> anyhow::Result<Yaml> {
    let own_id = layout.raft_id();
    let peers: Vec<Yaml> = inputs
        .layouts
        .iter()
        .map(|peer| {
            let route = inputs.raft_addr_override.get(&(own_id, peer.raft_id()));
            let raft_addr = route.cloned().unwrap_or_else(|| peer.raft_addr());
            map([
                ("id", Yaml::from(peer.raft_id())),
                ("name", text(&peer.name)),
                ("raft_addr", text(&raft_addr)),
                ("api_addr", text(&peer.api_addr())),
            ])
        })
        .collect();
    let mut raft = map([
        ("node_id", Yaml::from(own_id)),
        ("listen", text(&layout.raft_addr())),
        ("data_dir", path(&layout.raft_dir())),
        ("tls", {
            let files = layout.peer_tls();
            map([
                ("cafile", path(&files.cafile)),
                ("certfile", path(&files.certfile)),
                ("keyfile", path(&files.keyfile)),
            ])
        }),
        ("peers", Yaml::Sequence(peers)),
    ]);
    if let (Yaml::Mapping(raft_map), false) = (&mut raft, inputs.leadership_follows_primary) {
        raft_map.insert(text("leadership_follows_primary"), Yaml::Bool(false));
    }
    let restapi = json!({"listen": layout.api_addr(), "connect_address": layout.api_addr()});
    let restapi = match inputs.restapi_overrides {
        Value::Null => restapi,
        overrides @ Value::Object(_) => merge_patch(&restapi, overrides),
        other => anyhow::bail!("the restapi overrides must be a map, got {other}"),
    };
    let restapi = to_yaml(&restapi, "restapi")?;
    let tags = match inputs.tags {
        Some(tags) if !tags.is_empty() => Some(to_yaml(&Value::Object(tags.clone()), "tags")?),
        _ => None,
    };
    let mut root = map([
        ("scope", text(SCOPE)),
        ("name", text(&layout.name)),
        ("restapi", restapi),
        ("raft", raft),
        ("bootstrap", bootstrap(inputs.dcs_overrides, inputs.client_nets)?),
        ("postgresql", postgresql(layout, inputs)),
        // Every node of a local cluster runs on one host: a host watchdog armed by one of them would reset the
        // machine the others run on as soon as that node is killed. Tests that want one point a node at a
        // stand-in file through `node_overrides`.
        ("watchdog", map([("mode", text("off"))])),
    ]);
    if let (Yaml::Mapping(root_map), Some(tags)) = (&mut root, tags) {
        root_map.insert(text("tags"), tags);
    }
    match inputs.node_overrides {
        None | Some(Value::Null) => Ok(root),
        Some(overrides @ Value::Object(_)) => {
            let tree = serde_json::to_value(&root).context("convert the node configuration to JSON")?;
            to_yaml(&merge_patch(&tree, overrides), "the node configuration")
        }
        Some(other) => anyhow::bail!("the node overrides must be a map, got {other}"),
    }
}

fn bootstrap(dcs_overrides: &Value, client_nets: &[String]) -> anyhow::Result<Yaml> {
    // ttl, loop_wait and retry_timeout are left to the config module's defaults.
    let dcs = json!({"postgresql": {"use_pg_rewind": true, "parameters": {"max_connections": 100}}});
    let dcs = match dcs_overrides {
        Value::Null => dcs,
        Value::Object(_) => merge_patch(&dcs, dcs_overrides),
        _ => anyhow::bail!("the bootstrap.dcs overrides must be a map, got {dcs_overrides}"),
    };
    let initdb = Yaml::Sequence(vec![map([("encoding", text("UTF8"))]), text("data-checksums")]);
    let nets = std::iter::once(format!("{HOST}/32")).chain(client_nets.iter().cloned());
    let pg_hba = Yaml::Sequence(
        nets.flat_map(|net| {
            [
                text(&format!("host all all {net} scram-sha-256")),
                text(&format!("host replication {REPLICATION_USER} {net} scram-sha-256")),
            ]
        })
        .collect(),
    );
    Ok(map([("dcs", to_yaml(&dcs, "bootstrap.dcs")?), ("initdb", initdb), ("pg_hba", pg_hba)]))
}

fn postgresql(layout: &NodeLayout, inputs: &NodeInputs<'_>) -> Yaml {
    let user = |name: &str, password: &Secret| map([("username", text(name)), ("password", text(password.expose()))]);
    let authentication = map([
        ("superuser", user(SUPERUSER, &inputs.credentials.superuser)),
        ("replication", user(REPLICATION_USER, &inputs.credentials.replication)),
    ]);
    map([
        ("listen", text(&layout.pg_addr())),
        ("connect_address", text(&layout.pg_addr())),
        ("data_dir", path(&layout.data_dir())),
        ("bin_dir", path(inputs.pg_bin_dir)),
        ("pgpass", path(&layout.pgpass_path())),
        ("authentication", authentication),
        ("parameters", map([("unix_socket_directories", path(&layout.dir))])),
        ("use_pg_rewind", Yaml::Bool(true)),
        ("remove_data_directory_on_rewind_failure", Yaml::Bool(inputs.remove_data_directory_on_rewind_failure)),
    ])
}

fn map<const N: usize>(entries: [(&str, Yaml); N]) -> Yaml {
    let mut res = Mapping::new();
    for (key, value) in entries {
        res.insert(text(key), value);
    }
    Yaml::Mapping(res)
}

fn text(value: &str) -> Yaml {
    Yaml::String(value.to_string())
}

fn path(value: &Path) -> Yaml {
    text(&value.to_string_lossy())
}

fn to_yaml(value: &Value, what: &str) -> anyhow::Result<Yaml> {
    serde_yaml_ng::to_value(value).with_context(|| format!("convert {what} to YAML"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_pgpass_round_trip(superuser: &str, replication: &str) {
        let credentials = Credentials { superuser: Secret::new(superuser), replication: Secret::new(replication) };
        assert_eq!(parse_pgpass(&render_pgpass(&credentials)), Some(credentials));
    }

    #[test]
    fn pgpass_round_trips_plain_passwords() {
        check_pgpass_round_trip("abc123", "xyz789");
    }

    #[test]
    fn pgpass_round_trips_colons_and_backslashes() {
        check_pgpass_round_trip("a:b\\c", "::\\");
    }

    #[test]
    fn pgpass_without_the_replication_line_is_rejected() {
        assert_eq!(parse_pgpass("*:*:*:postgres:secret\n"), None);
    }

    #[test]
    fn ports_above_65535_are_rejected() {
        let base = BasePorts { pg: 65534, api: 8008, raft: 7000 };
        assert!(layouts(Path::new("/tmp/x"), 3, base).is_err());
    }
}
