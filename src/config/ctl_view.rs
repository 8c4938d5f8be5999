//! What the operator CLI reads of a configuration file: where the REST APIs are, whether they speak
//! HTTPS, which CA to trust and which credentials to send.
//!
//! patronictl reads a node's patroni.yml or a file of its own (`~/.config/patroni/patronictl.yaml`,
//! `PATRONICTL_CONFIG_FILE`) that holds only `ctl:` and `restapi:`. So the CLI does not load a whole
//! node configuration (that would ask for `name`, `postgresql.connect_address`, …): it reads these keys,
//! with the same file/directory reading and `RAFTGRES_*`/`PATRONI_*` overrides, and checks only their types.

use std::path::Path;
use std::path::PathBuf;

use serde_json::Value;

use super::env::EnvMap;
use super::walk::expected;
use super::walk::invalid;
use super::BasicAuth;
use super::ConfigError;
use super::HostPort;
use super::Secret;

/// The CLI's part of a configuration file.
#[derive(Debug, Clone, Default)]
pub struct CtlView {
    /// REST API addresses (`host:port`): `restapi.connect_address` (else a non-wildcard `restapi.listen`, a
    /// wildcard one read as 127.0.0.1), then every `raft.peers[].api_addr`.
    pub addresses: Vec<String>,
    /// `restapi.certfile` is set: the nodes speak HTTPS.
    pub https: bool,
    /// `ctl.authentication`, else `restapi.authentication`.
    pub auth: Option<BasicAuth>,
    /// `ctl.insecure`.
    pub insecure: bool,
    /// `ctl.cacert`, else `restapi.cafile`.
    pub cacert: Option<PathBuf>,
}

/// Reads the CLI's keys from the file or directory at `path`, with the environment overrides of `env`.
pub fn load_ctl_view(path: &Path, env: &EnvMap) -> Result<CtlView, ConfigError> {
    let tree = super::load::read_tree(path)?;
    let overrides = super::env::overrides(env)?;
    ctl_view(&super::merge_patch(&tree, &overrides))
}

/// PURE: the CLI's keys of a configuration tree.
pub fn ctl_view(tree: &Value) -> Result<CtlView, ConfigError> {
    let restapi = section(tree, "restapi")?;
    let ctl = section(tree, "ctl")?;
    let raft = section(tree, "raft")?;
    let mut addresses = Vec::new();
    match string(restapi, "restapi", "connect_address")? {
        Some(address) => addresses.push(address),
        None => {
            if let Some(listen) = string(restapi, "restapi", "listen")? {
                let parsed = HostPort::parse(&listen)
                    .ok_or_else(|| invalid("restapi.listen", format!("{listen:?} is not host:port")))?;
                let host = if parsed.is_wildcard() { "127.0.0.1".to_string() } else { parsed.host };
                addresses.push(format!("{host}:{}", parsed.port));
            }
        }
    }
    if let Some(peers) = raft.and_then(|raft| raft.get("peers")) {
        let Value::Array(peers) = peers else { return Err(expected("raft.peers", "a list", peers)) };
        for (idx, peer) in peers.iter().enumerate() {
            let path = format!("raft.peers[{idx}]");
            if let Some(address) = string(Some(peer), &path, "api_addr")?.filter(|a| !a.is_empty()) {
                addresses.push(address);
            }
        }
    }
    let auth = match authentication(ctl, "ctl")? {
        Some(auth) => Some(auth),
        None => authentication(restapi, "restapi")?,
    };
    let cacert = match string(ctl, "ctl", "cacert")? {
        Some(path) => Some(path),
        None => string(restapi, "restapi", "cafile")?,
    };
    Ok(CtlView {
        addresses,
        https: string(restapi, "restapi", "certfile")?.is_some(),
        auth,
        insecure: flag(ctl, "ctl", "insecure")?,
        cacert: cacert.map(PathBuf::from),
    })
}

/// The map under `key` of the top level, if any.
fn section<'a>(tree: &'a Value, key: &str) -> Result<Option<&'a Value>, ConfigError> {
    match tree.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(map @ Value::Object(_)) => Ok(Some(map)),
        Some(other) => Err(expected(key, "a map", other)),
    }
}

/// A string (or number, as YAML writes ports) under `key` of the map at `path`.
fn string(map: Option<&Value>, path: &str, key: &str) -> Result<Option<String>, ConfigError> {
    match map.and_then(|map| map.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Number(number)) => Ok(Some(number.to_string())),
        Some(other) => Err(expected(format!("{path}.{key}"), "a string", other)),
    }
}

/// A boolean under `key`, false when absent (`"true"`/`"false"` strings accepted, as environment overrides give).
fn flag(map: Option<&Value>, path: &str, key: &str) -> Result<bool, ConfigError> {
    match map.and_then(|map| map.get(key)) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(expected(format!("{path}.{key}"), "true or false", other)),
    }
}

/// `<path>.authentication` with both `username` and `password`.
fn authentication(map: Option<&Value>, path: &str) -> Result<Option<BasicAuth>, ConfigError> {
    let auth_path = format!("{path}.authentication");
    let Some(auth) = map.and_then(|map| map.get("authentication")).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    if !auth.is_object() {
        return Err(expected(auth_path, "a map with username and password", auth));
    }
    match (string(Some(auth), &auth_path, "username")?, string(Some(auth), &auth_path, "password")?) {
        (Some(username), Some(password)) => Ok(Some(BasicAuth { username, password: Secret::new(password) })),
        (None, None) => Ok(None),
        _ => Err(invalid(auth_path, "set both username and password")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_patronictl_file_with_only_ctl_and_restapi_is_enough() {
        let view = ctl_view(&json!({
            "restapi": {"listen": "0.0.0.0:8009", "authentication": {"username": "u", "password": "p"}},
            "ctl": {"insecure": true}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(view.addresses, vec!["127.0.0.1:8009".to_string()]);
        assert_eq!(view.auth.map(|a| a.username), Some("u".to_string()));
        assert!(view.insecure && !view.https);
    }

    #[test]
    fn a_node_file_gives_its_own_and_its_peers_addresses_and_ctl_credentials_win() {
        let view = ctl_view(&json!({
            "restapi": {"connect_address": "10.0.0.1:8008", "certfile": "/c.pem", "cafile": "/ca.pem",
                        "authentication": {"username": "api", "password": "p"}},
            "ctl": {"authentication": {"username": "ctl", "password": "q"}},
            "raft": {"peers": [{"api_addr": "10.0.0.2:8008"}, {"api_addr": ""}, {"id": 3}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(view.addresses, vec!["10.0.0.1:8008".to_string(), "10.0.0.2:8008".to_string()]);
        assert_eq!(view.auth.map(|a| a.username), Some("ctl".to_string()));
        assert_eq!(view.cacert, Some(PathBuf::from("/ca.pem")));
        assert!(view.https);
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = ctl_view(&json!({"ctl": {"insecure": "maybe"}})).map(|_| ()).unwrap_err().to_string();
        assert!(err.starts_with("ctl.insecure:"), "{err}");
        let err =
            ctl_view(&json!({"restapi": {"authentication": {"username": "u"}}})).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("restapi.authentication: set both username and password"), "{err}");
    }
}
