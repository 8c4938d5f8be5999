//! Environment overrides: `RAFTGRES_*` variables, and Patroni's `PATRONI_*` names for the same
//! keys, mapped onto the configuration tree (patroni-compat §4.2).
//!
//! `RAFTGRES_` wins when both prefixes name the same key, and a current name wins over
//! Patroni's legacy one (`LOG_LEVEL` over `LOGLEVEL`). List values are YAML flow lists
//! without brackets and map values YAML flow maps without braces, as in Patroni.
//! Everything here is pure except [`process_env`]; unlike Patroni the variables are left in
//! the environment.

use std::collections::BTreeMap;

use serde_json::Map;
use serde_json::Value;

use super::defaults;
use super::walk::expected;
use super::walk::parse_bool;
use super::walk::parse_yaml;
use super::ConfigError;

/// The environment as a map, so tests never touch the real process environment.
pub type EnvMap = BTreeMap<String, String>;

/// Prefixes in increasing precedence.
const PREFIXES: [&str; 2] = ["PATRONI_", "RAFTGRES_"];

/// The `RAFTGRES_*` and `PATRONI_*` variables of this process (others, and values that are not
/// UTF-8, are left out).
pub fn process_env() -> EnvMap {
    std::env::vars_os()
        .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(key, _)| PREFIXES.iter().any(|prefix| key.starts_with(prefix)))
        .collect()
}

/// The whole-document variable (`RAFTGRES_CONFIGURATION`, else `PATRONI_CONFIGURATION`) with
/// its name, when set and not empty.
pub fn configuration_document(env: &EnvMap) -> Option<(String, &str)> {
    PREFIXES.iter().rev().find_map(|prefix| {
        let name = format!("{prefix}CONFIGURATION");
        env.get(&name).filter(|value| !value.trim().is_empty()).map(|value| (name, value.as_str()))
    })
}

/// How a variable's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Int,
    List,
    Map,
    /// `log.format`: a `%`-style string when it has a `%(name)` placeholder, else a list of fields.
    LogFormat,
}

/// Variables with a fixed target: (name without prefix, key path, kind, is a legacy name).
const FIXED: &[(&str, &str, Kind, bool)] = &[
    ("NAME", "name", Kind::Str, false),
    ("NAMESPACE", "namespace", Kind::Str, false),
    ("SCOPE", "scope", Kind::Str, false),
    ("RESTAPI_LISTEN", "restapi.listen", Kind::Str, false),
    ("RESTAPI_CONNECT_ADDRESS", "restapi.connect_address", Kind::Str, false),
    ("RESTAPI_USERNAME", "restapi.authentication.username", Kind::Str, false),
    ("RESTAPI_PASSWORD", "restapi.authentication.password", Kind::Str, false),
    ("RESTAPI_CERTFILE", "restapi.certfile", Kind::Str, false),
    ("RESTAPI_KEYFILE", "restapi.keyfile", Kind::Str, false),
    ("RESTAPI_KEYFILE_PASSWORD", "restapi.keyfile_password", Kind::Str, false),
    ("RESTAPI_CAFILE", "restapi.cafile", Kind::Str, false),
    ("RESTAPI_VERIFY_CLIENT", "restapi.verify_client", Kind::Str, false),
    ("RESTAPI_ALLOWLIST", "restapi.allowlist", Kind::List, false),
    ("RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", "restapi.allowlist_include_members", Kind::Bool, false),
    ("RESTAPI_HTTP_EXTRA_HEADERS", "restapi.http_extra_headers", Kind::Map, false),
    ("RESTAPI_HTTPS_EXTRA_HEADERS", "restapi.https_extra_headers", Kind::Map, false),
    ("RESTAPI_SERVER_TOKENS", "restapi.server_tokens", Kind::Str, false),
    ("CTL_USERNAME", "ctl.authentication.username", Kind::Str, false),
    ("CTL_PASSWORD", "ctl.authentication.password", Kind::Str, false),
    ("CTL_INSECURE", "ctl.insecure", Kind::Bool, false),
    ("CTL_CACERT", "ctl.cacert", Kind::Str, false),
    ("CTL_CERTFILE", "ctl.certfile", Kind::Str, false),
    ("CTL_KEYFILE", "ctl.keyfile", Kind::Str, false),
    ("CTL_KEYFILE_PASSWORD", "ctl.keyfile_password", Kind::Str, false),
    ("POSTGRESQL_LISTEN", "postgresql.listen", Kind::Str, false),
    ("POSTGRESQL_CONNECT_ADDRESS", "postgresql.connect_address", Kind::Str, false),
    ("POSTGRESQL_DATA_DIR", "postgresql.data_dir", Kind::Str, false),
    ("POSTGRESQL_CONFIG_DIR", "postgresql.config_dir", Kind::Str, false),
    ("POSTGRESQL_BIN_DIR", "postgresql.bin_dir", Kind::Str, false),
    ("POSTGRESQL_PGPASS", "postgresql.pgpass", Kind::Str, false),
    ("POSTGRESQL_RUN_AS", "postgresql.run_as", Kind::Str, false),
    ("LOG_LEVEL", "log.level", Kind::Str, false),
    ("LOG_TYPE", "log.type", Kind::Str, false),
    ("LOG_FORMAT", "log.format", Kind::LogFormat, false),
    ("LOG_DATEFORMAT", "log.dateformat", Kind::Str, false),
    ("LOG_STATIC_FIELDS", "log.static_fields", Kind::Map, false),
    ("LOG_DIR", "log.dir", Kind::Str, false),
    ("LOG_FILE_SIZE", "log.file_size", Kind::Int, false),
    ("LOG_FILE_NUM", "log.file_num", Kind::Int, false),
    ("LOG_MODE", "log.mode", Kind::Str, false),
    ("LOG_TRACEBACK_LEVEL", "log.traceback_level", Kind::Str, false),
    ("LOG_MAX_QUEUE_SIZE", "log.max_queue_size", Kind::Str, false),
    ("LOG_LOGGERS", "log.loggers", Kind::Map, false),
    ("LOG_DEDUPLICATE_HEARTBEAT_LOGS", "log.deduplicate_heartbeat_logs", Kind::Bool, false),
    ("LOGLEVEL", "log.level", Kind::Str, true),
    ("LOGFORMAT", "log.format", Kind::LogFormat, true),
    ("LOG_DATEFMT", "log.dateformat", Kind::Str, true),
    ("RAFT_NODE_ID", "raft.node_id", Kind::Int, false),
    ("RAFT_LISTEN", "raft.listen", Kind::Str, false),
    ("RAFT_ADVERTISE", "raft.advertise", Kind::Str, false),
    ("RAFT_DATA_DIR", "raft.data_dir", Kind::Str, false),
    ("RAFT_PEERS", "raft.peers", Kind::List, false),
    ("RAFT_INSECURE", "raft.insecure", Kind::Bool, false),
    ("RAFT_TLS_CAFILE", "raft.tls.cafile", Kind::Str, false),
    ("RAFT_TLS_CERTFILE", "raft.tls.certfile", Kind::Str, false),
    ("RAFT_TLS_KEYFILE", "raft.tls.keyfile", Kind::Str, false),
    ("RAFT_LEASE_MODE", "raft.lease_mode", Kind::Str, false),
    ("RAFT_MAX_CLOCK_SKEW", "raft.max_clock_skew", Kind::Str, false),
    ("RAFT_LEADERSHIP_FOLLOWS_PRIMARY", "raft.leadership_follows_primary", Kind::Bool, false),
    // Patroni's pysyncobj keys: mapped so the schema check can explain the raftgres equivalents.
    ("RAFT_SELF_ADDR", "raft.self_addr", Kind::Str, false),
    ("RAFT_BIND_ADDR", "raft.bind_addr", Kind::Str, false),
    ("RAFT_PARTNER_ADDRS", "raft.partner_addrs", Kind::List, false),
    ("RAFT_PASSWORD", "raft.password", Kind::Str, false),
];

/// PostgreSQL roles with `<ROLE>_<PARAM>` variables.
const PG_ROLES: [&str; 3] = ["replication", "superuser", "rewind"];

/// The key path and kind a variable name (without prefix) sets, and whether it is a legacy name.
fn target(suffix: &str) -> Option<(Vec<String>, Kind, bool)> {
    if let Some((_, path, kind, legacy)) = FIXED.iter().find(|(name, ..)| *name == suffix) {
        return Some((path.split('.').map(str::to_string).collect(), *kind, *legacy));
    }
    let lower = suffix.to_ascii_lowercase();
    if let Some(program) = lower.strip_prefix("postgresql_bin_") {
        if defaults::PG_PROGRAMS.contains(&program) {
            return Some((vec!["postgresql".into(), "bin_name".into(), program.into()], Kind::Str, false));
        }
    }
    let (role, param) = lower.split_once('_')?;
    let is_auth_param = ["username", "password"].contains(&param) || defaults::PG_AUTH_OPTIONS.contains(&param);
    if PG_ROLES.contains(&role) && is_auth_param {
        let path = vec!["postgresql".into(), "authentication".into(), role.into(), param.into()];
        return Some((path, Kind::Str, false));
    }
    None
}

/// The override tree built from the environment, to merge over the file's tree.
/// Empty variables are ignored, as Patroni does; a value that cannot be parsed is an error
/// naming the variable.
pub fn overrides(env: &EnvMap) -> Result<Value, ConfigError> {
    // (precedence, variable, path, kind): applied in increasing precedence so the last wins.
    let mut found = Vec::new();
    for (prefix_rank, prefix) in PREFIXES.iter().enumerate() {
        for (name, text) in env.range(prefix.to_string()..) {
            let Some(suffix) = name.strip_prefix(prefix) else { break };
            if text.is_empty() {
                continue;
            }
            if let Some((path, kind, legacy)) = target(suffix) {
                let precedence = prefix_rank * 2 + usize::from(!legacy);
                found.push((precedence, name, text, path, kind));
            }
        }
    }
    found.sort_by_key(|(precedence, ..)| *precedence);
    let mut root = Map::new();
    for (_, name, text, path, kind) in found {
        let value = parse_value(name, text, kind)?;
        insert_path(&mut root, &path, value);
    }
    Ok(Value::Object(root))
}

fn parse_value(name: &str, text: &str, kind: Kind) -> Result<Value, ConfigError> {
    let raw = Value::String(text.to_string());
    match kind {
        Kind::Str => Ok(raw),
        Kind::LogFormat if text.contains("%(") => Ok(raw),
        Kind::LogFormat => parse_value(name, text, Kind::List),
        Kind::Bool => parse_bool(&raw).map(Value::Bool).ok_or_else(|| expected(name, "true or false", &raw)),
        Kind::Int => text.trim().parse::<u64>().map(Value::from).map_err(|_| expected(name, "an integer", &raw)),
        Kind::List => {
            let trimmed = text.trim();
            // Patroni's `_parse_list`: add the brackets unless it is already a YAML list.
            let document = if trimmed.starts_with('-') || trimmed.contains('[') {
                trimmed.to_string()
            } else {
                format!("[{trimmed}]")
            };
            match parse_yaml(&document, name)? {
                list @ Value::Array(_) => Ok(list),
                other => Err(expected(name, "a list", &other)),
            }
        }
        Kind::Map => {
            let trimmed = text.trim();
            let document = if trimmed.starts_with('{') { trimmed.to_string() } else { format!("{{{trimmed}}}") };
            match parse_yaml(&document, name)? {
                map @ Value::Object(_) => Ok(map),
                other => Err(expected(name, "a map", &other)),
            }
        }
    }
}

fn insert_path(root: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut map = root;
    for key in parents {
        let entry = map.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(inner) = entry else { return };
        map = inner;
    }
    map.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[track_caller]
    fn check(vars: &[(&str, &str)], expected: Result<Value, &str>) {
        let env: EnvMap = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let res = overrides(&env).map_err(|e| e.to_string());
        match expected {
            Ok(want) => assert_eq!(res, Ok(want)),
            Err(want) => assert_eq!(res, Err(want.to_string())),
        }
    }

    #[test]
    fn raftgres_wins_over_patroni() {
        check(&[("PATRONI_NAME", "p"), ("RAFTGRES_NAME", "r")], Ok(json!({"name": "r"})));
    }

    #[test]
    fn patroni_names_are_accepted() {
        check(
            &[("PATRONI_SCOPE", "batman"), ("PATRONI_POSTGRESQL_DATA_DIR", "/pg")],
            Ok(json!({"scope": "batman", "postgresql": {"data_dir": "/pg"}})),
        );
    }

    #[test]
    fn current_name_wins_over_legacy() {
        check(&[("PATRONI_LOGLEVEL", "DEBUG"), ("PATRONI_LOG_LEVEL", "ERROR")], Ok(json!({"log": {"level": "ERROR"}})));
    }

    #[test]
    fn legacy_name_of_higher_prefix_wins() {
        check(
            &[("PATRONI_LOG_LEVEL", "ERROR"), ("RAFTGRES_LOGLEVEL", "DEBUG")],
            Ok(json!({"log": {"level": "DEBUG"}})),
        );
    }

    #[test]
    fn empty_values_are_ignored() {
        check(&[("RAFTGRES_NAME", ""), ("PATRONI_NAME", "p")], Ok(json!({"name": "p"})));
    }

    #[test]
    fn unrelated_variables_are_ignored() {
        check(&[("RAFTGRES_UNKNOWN", "x"), ("PATRONI_ETCD_HOSTS", "h:1"), ("HOME", "/root")], Ok(json!({})));
    }

    #[test]
    fn auth_and_bin_names_map_to_nested_keys() {
        check(
            &[
                ("RAFTGRES_SUPERUSER_USERNAME", "postgres"),
                ("RAFTGRES_REWIND_SSLMODE", "require"),
                ("RAFTGRES_POSTGRESQL_BIN_PG_CTL", "pg_ctl16"),
                ("RAFTGRES_CTL_USERNAME", "admin"),
            ],
            Ok(json!({
                "ctl": {"authentication": {"username": "admin"}},
                "postgresql": {
                    "authentication": {"superuser": {"username": "postgres"}, "rewind": {"sslmode": "require"}},
                    "bin_name": {"pg_ctl": "pg_ctl16"},
                },
            })),
        );
    }

    #[test]
    fn typed_values_are_parsed() {
        check(
            &[
                ("RAFTGRES_RAFT_NODE_ID", "2"),
                ("RAFTGRES_CTL_INSECURE", "on"),
                ("RAFTGRES_RESTAPI_ALLOWLIST", "'10.0.0.0/8', 127.0.0.1"),
                ("RAFTGRES_RESTAPI_HTTP_EXTRA_HEADERS", "'X-Frame-Options': 'SAMEORIGIN'"),
            ],
            Ok(json!({
                "raft": {"node_id": 2},
                "ctl": {"insecure": true},
                "restapi": {"allowlist": ["10.0.0.0/8", "127.0.0.1"], "http_extra_headers": {"X-Frame-Options": "SAMEORIGIN"}},
            })),
        );
    }

    #[test]
    fn peers_are_a_flow_list_of_maps() {
        check(
            &[(
                "RAFTGRES_RAFT_PEERS",
                "{id: 1, name: a, raft_addr: 'h1:7001'}, {id: 2, name: b, raft_addr: 'h2:7001'}",
            )],
            Ok(json!({"raft": {"peers": [
                {"id": 1, "name": "a", "raft_addr": "h1:7001"},
                {"id": 2, "name": "b", "raft_addr": "h2:7001"},
            ]}})),
        );
    }

    #[test]
    fn log_variables() {
        let rows = [
            (
                "format_template",
                ("PATRONI_LOG_FORMAT", "%(asctime)s %(message)s"),
                json!("%(asctime)s %(message)s"),
                "format",
            ),
            (
                "format_list",
                ("PATRONI_LOG_FORMAT", "asctime, {levelname: level}"),
                json!(["asctime", {"levelname": "level"}]),
                "format",
            ),
            (
                "static_fields",
                ("PATRONI_LOG_STATIC_FIELDS", "app: pg, env: prod"),
                json!({"app": "pg", "env": "prod"}),
                "static_fields",
            ),
            ("file_size", ("PATRONI_LOG_FILE_SIZE", "1000"), json!(1000), "file_size"),
            ("file_num", ("PATRONI_LOG_FILE_NUM", "2"), json!(2), "file_num"),
            ("mode", ("PATRONI_LOG_MODE", "0600"), json!("0600"), "mode"),
            ("legacy_datefmt", ("PATRONI_LOG_DATEFMT", "%H:%M"), json!("%H:%M"), "dateformat"),
        ];
        for (name, (var, text), value, key) in rows {
            let env: EnvMap = [(var.to_string(), text.to_string())].into_iter().collect();
            assert_eq!(overrides(&env).map_err(|e| e.to_string()), Ok(json!({"log": {key: value}})), "{name}");
        }
    }

    #[test]
    fn bad_integer_names_the_variable() {
        check(&[("RAFTGRES_RAFT_NODE_ID", "two")], Err("RAFTGRES_RAFT_NODE_ID: expected an integer, got \"two\""));
    }

    #[test]
    fn bad_bool_names_the_variable() {
        check(&[("PATRONI_CTL_INSECURE", "maybe")], Err("PATRONI_CTL_INSECURE: expected true or false, got \"maybe\""));
    }

    #[test]
    fn configuration_document_prefers_raftgres() {
        let env: EnvMap = [("PATRONI_CONFIGURATION", "a: 1"), ("RAFTGRES_CONFIGURATION", "b: 2")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(configuration_document(&env), Some(("RAFTGRES_CONFIGURATION".to_string(), "b: 2")));
    }
}
