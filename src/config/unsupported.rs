//! PURE: keys of a Patroni configuration that raftgres reads (so the file keeps working) but does not act on,
//! each named out loud: one warning at start-up, on reload and in `raftgres check`, with what happens instead.
//!
//! Keys whose absence of effect would change behaviour dangerously are refused where they are parsed instead
//! (a `standby_cluster` raftgres cannot follow, an unknown bootstrap method, `ctl.keyfile_password`); the ones
//! here leave raftgres on its documented behaviour, which the message states. Unknown keys and whole sections
//! raftgres ignores (`etcd`, `citus`, …) are reported where they are parsed (`walk::Section::finish`/`ignore`).

use serde_json::Value;

use super::defaults;

/// Present when set to anything but null.
fn present(value: Option<&Value>) -> bool {
    value.is_some_and(|v| !v.is_null())
}

/// True for YAML/Patroni truthy values.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(flag)) => *flag,
        Some(Value::String(text)) => matches!(text.trim().to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1"),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        _ => false,
    }
}

/// The warnings for the local configuration document `tree`.
pub fn local_warnings(tree: &Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut warn = |path: &str, what: &str| warnings.push(format!("{path} has no effect in raftgres: {what}"));
    let get = |path: &str| path.split('.').try_fold(tree, |node, key| node.get(key));
    if present(get("namespace")) {
        warn("namespace", "the Raft store holds one cluster, under no key prefix");
    }
    if present(get("restapi.server_tokens")) {
        warn("restapi.server_tokens", "the Server header is always raftgres/<version>");
    }
    let data_dir = get("postgresql.data_dir");
    if present(get("postgresql.config_dir")) && get("postgresql.config_dir") != data_dir {
        warn("postgresql.config_dir", "postgresql.conf and pg_hba.conf are written in postgresql.data_dir");
    }
    if get("postgresql.pg_ident").and_then(Value::as_array).is_some_and(|lines| !lines.is_empty()) {
        warn("postgresql.pg_ident", "pg_ident.conf is not written; keep it in the data directory yourself");
    }
    if truthy(get("postgresql.remove_data_directory_on_diverged_timelines")) {
        warn(
            "postgresql.remove_data_directory_on_diverged_timelines",
            "a diverged member is rewound (use_pg_rewind), and cloned again only with \
             remove_data_directory_on_rewind_failure",
        );
    }
    for key in ["use_unix_socket", "use_unix_socket_repl"] {
        if truthy(get(&format!("postgresql.{key}"))) {
            warn(&format!("postgresql.{key}"), "raftgres and the replicas connect over TCP");
        }
    }
    if let Some(names) = get("postgresql.bin_name").and_then(Value::as_object) {
        for program in names.keys().filter(|program| *program != "postgres") {
            warn(
                &format!("postgresql.bin_name.{program}"),
                "only postgres may be renamed; the other programs run under their own names from bin_dir",
            );
        }
    }
    if let Some(roles) = get("postgresql.authentication").and_then(Value::as_object) {
        for (role, settings) in roles {
            for option in defaults::PG_AUTH_OPTIONS {
                if present(settings.get(option)) {
                    warn(
                        &format!("postgresql.authentication.{role}.{option}"),
                        "raftgres' own connections and primary_conninfo do not pass libpq TLS options yet",
                    );
                }
            }
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_plain_raftgres_file_has_no_warning() {
        let tree = json!({"name": "n", "postgresql": {"data_dir": "/d", "config_dir": "/d",
                          "authentication": {"superuser": {"username": "postgres"}}}});
        assert!(local_warnings(&tree).is_empty(), "{:?}", local_warnings(&tree));
    }

    #[test]
    fn each_key_without_effect_is_named_with_what_happens_instead() {
        let tree = json!({
            "namespace": "/db/",
            "postgresql": {"data_dir": "/d", "config_dir": "/etc/pg", "pg_ident": ["m u u"],
                           "use_unix_socket": true, "bin_name": {"postgres": "pg", "pg_ctl": "pgctl"},
                           "authentication": {"replication": {"username": "r", "sslmode": "verify-full"}}}
        });
        let warnings = local_warnings(&tree);
        let paths: Vec<&str> = warnings.iter().filter_map(|w| w.split(' ').next()).collect();
        assert_eq!(
            paths,
            vec![
                "namespace",
                "postgresql.config_dir",
                "postgresql.pg_ident",
                "postgresql.use_unix_socket",
                "postgresql.bin_name.pg_ctl",
                "postgresql.authentication.replication.sslmode",
            ]
        );
        assert!(warnings.iter().all(|w| w.contains(" has no effect in raftgres: ")), "{warnings:?}");
    }
}
