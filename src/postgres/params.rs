//! PURE: the user GUCs (`postgresql.parameters`) a node runs with, and how a YAML/JSON scalar reads as a GUC value.
//!
//! The dynamic configuration's parameters, overlaid by the node's local ones (Patroni's rule: local settings win),
//! are what `postgresql.conf` is written with. This module computes them; it must not do I/O or reload anything:
//! the supervisor (`postgres::supervisor`, its `config` submodule) keeps them and reloads PostgreSQL.

use std::collections::BTreeMap;

use serde_json::Value;

/// PURE: the parameters to run with. `startup` is what the supervisor was configured with (the bootstrap dynamic
/// parameters overlaid by the local ones); a `startup` entry that is not the bootstrap's value is local and wins
/// over `dynamic`. A local value equal to the bootstrap's cannot be told apart and follows `dynamic`.
pub fn effective_parameters(
    startup: &BTreeMap<String, String>,
    bootstrap: &BTreeMap<String, Value>,
    dynamic: &BTreeMap<String, Value>,
) -> BTreeMap<String, String> {
    let mut res: BTreeMap<String, String> = dynamic.iter().map(|(k, v)| (k.clone(), guc_value(v))).collect();
    for (key, value) in startup {
        let from_bootstrap = bootstrap.get(key).is_some_and(|b| guc_value(b) == *value);
        if !from_bootstrap {
            res.insert(key.clone(), value.clone());
        }
    }
    res
}

/// PostgreSQL's recovery settings (Patroni's `recovery_parameters`): written by raftgres from the leader key,
/// tags and `recovery_conf`, and left out of `pending_restart_reason` as Patroni leaves them out.
pub const RECOVERY_PARAMETERS: [&str; 18] = [
    "archive_cleanup_command",
    "pause_at_recovery_target",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "recovery_end_command",
    "recovery_min_apply_delay",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restore_command",
    "standby_mode",
    "trigger_file",
];

/// PURE: whether `name` is one of [`RECOVERY_PARAMETERS`] (case-insensitive, as GUC names are).
pub fn is_recovery_parameter(name: &str) -> bool {
    RECOVERY_PARAMETERS.iter().any(|param| param.eq_ignore_ascii_case(name))
}

/// A YAML/JSON scalar as a GUC value (`true` → `on`).
pub fn guc_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "on".into(),
        Value::Bool(false) => "off".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn values(value: Value) -> BTreeMap<String, Value> {
        value.as_object().expect("object").iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[track_caller]
    fn check(startup: &[(&str, &str)], bootstrap: Value, dynamic: Value, expected: &[(&str, &str)]) {
        let got = effective_parameters(&strings(startup), &values(bootstrap), &values(dynamic));
        assert_eq!(got, strings(expected));
    }

    #[test]
    fn dynamic_parameters_replace_the_bootstrap_ones_and_local_ones_win() {
        // Unchanged dynamic config: what the node started with.
        check(
            &[("max_connections", "100")],
            json!({"max_connections": 100}),
            json!({"max_connections": 100}),
            &[("max_connections", "100")],
        );
        // A changed dynamic value replaces the bootstrap one.
        check(
            &[("max_connections", "100")],
            json!({"max_connections": 100}),
            json!({"max_connections": 200}),
            &[("max_connections", "200")],
        );
        // A removed dynamic key disappears.
        check(&[("work_mem", "4MB")], json!({"work_mem": "4MB"}), json!({}), &[]);
        // New dynamic keys are added; booleans become on/off.
        check(
            &[],
            json!({}),
            json!({"hot_standby_feedback": true, "work_mem": "8MB"}),
            &[("hot_standby_feedback", "on"), ("work_mem", "8MB")],
        );
        // A local value (not the bootstrap's) wins over the dynamic one.
        check(
            &[("work_mem", "16MB"), ("unix_socket_directories", "/run")],
            json!({"work_mem": "4MB"}),
            json!({"work_mem": "8MB"}),
            &[("unix_socket_directories", "/run"), ("work_mem", "16MB")],
        );
    }

    #[test]
    fn recovery_settings_are_told_apart_from_other_gucs() {
        assert!(is_recovery_parameter("recovery_target_timeline"));
        assert!(is_recovery_parameter("Primary_Conninfo"));
        assert!(!is_recovery_parameter("shared_buffers"));
    }

    #[test]
    fn guc_values_render_like_the_static_config() {
        assert_eq!(guc_value(&json!(true)), "on");
        assert_eq!(guc_value(&json!(false)), "off");
        assert_eq!(guc_value(&json!(128)), "128");
        assert_eq!(guc_value(&json!("64MB")), "64MB");
    }
}
