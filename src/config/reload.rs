//! PURE: what a reload of the node's configuration (SIGHUP, `POST /reload`) changes, and which of those changes
//! take effect at once and which need raftgres restarted.
//!
//! The two documents (files plus environment overrides) are compared key by key, two levels deep
//! (`postgresql.parameters`, `restapi.authentication`, `tags`, …). Applied without a restart, as Patroni applies
//! them: PostgreSQL's local `parameters`, `pg_hba` and `recovery_conf`, the operator's scripts, `tags` (but
//! `nostream`), the REST API's `authentication` and `allowlist`, `ctl`, and `log`; the REST API's and the raft
//! peers' certificates are read again from the same files on every reload. Anything else (the node's name and scope, `raft`, addresses, directories, users, the
//! REST API's `listen` and TLS file names) is reported as needing a restart of raftgres, with its key, and keeps its
//! running value until then.

use std::collections::BTreeSet;

use serde_json::Value;

/// Keys (two levels deep, or a whole section) a reload applies at once.
const LIVE: [&str; 13] = [
    "postgresql.parameters",
    "postgresql.pg_hba",
    "postgresql.recovery_conf",
    "postgresql.callbacks",
    "postgresql.pre_promote",
    "postgresql.before_stop",
    // Only read when a new cluster is made (its `post_bootstrap` script is taken like the other scripts).
    "bootstrap",
    "tags",
    "restapi.authentication",
    "restapi.allowlist",
    "restapi.allowlist_include_members",
    "ctl",
    "log",
];

/// The changes between two configuration documents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Changed keys applied at once.
    pub live: Vec<String>,
    /// Changed keys that keep their running value until raftgres restarts.
    pub needs_restart: Vec<String>,
}

impl ReloadPlan {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.needs_restart.is_empty()
    }
}

/// PURE: the changed keys of `new` against `old`, sorted, split into applied and needing a restart.
pub fn reload_plan(old: &Value, new: &Value) -> ReloadPlan {
    let mut plan = ReloadPlan::default();
    for key in changed_keys(old, new) {
        let live = LIVE.iter().any(|prefix| key == *prefix || key.starts_with(&format!("{prefix}.")));
        if live && key != "tags.nostream" {
            plan.live.push(key);
        } else {
            plan.needs_restart.push(key);
        }
    }
    plan
}

/// PURE: `section.key` (or `section` for a scalar section) of every key whose value differs.
pub fn changed_keys(old: &Value, new: &Value) -> Vec<String> {
    let mut keys = BTreeSet::new();
    let empty = serde_json::Map::new();
    let sections = |tree: &Value| tree.as_object().cloned().unwrap_or_default();
    let (old_sections, new_sections) = (sections(old), sections(new));
    for section in old_sections.keys().chain(new_sections.keys()) {
        let (a, b) = (old_sections.get(section), new_sections.get(section));
        if a == b {
            continue;
        }
        match (a.and_then(Value::as_object), b.and_then(Value::as_object)) {
            (None, None) => {
                keys.insert(section.clone());
            }
            (a, b) => {
                let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
                for key in a.keys().chain(b.keys()) {
                    if a.get(key) != b.get(key) {
                        keys.insert(format!("{section}.{key}"));
                    }
                }
            }
        }
    }
    keys.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_unchanged_document_plans_nothing() {
        let doc = json!({"name": "n1", "postgresql": {"parameters": {"work_mem": "4MB"}}});
        assert!(reload_plan(&doc, &doc).is_empty());
    }

    #[test]
    fn parameters_tags_auth_and_log_apply_at_once() {
        let old = json!({"postgresql": {"parameters": {"work_mem": "4MB"}}, "tags": {"nofailover": false},
                         "restapi": {"listen": "0.0.0.0:8008"}, "log": {"level": "INFO"}});
        let new = json!({"postgresql": {"parameters": {"work_mem": "8MB"}}, "tags": {"nofailover": true},
                         "restapi": {"listen": "0.0.0.0:8008", "authentication": {"username": "u", "password": "p"}},
                         "log": {"level": "DEBUG"}});
        let plan = reload_plan(&old, &new);
        assert_eq!(plan.live, vec!["log.level", "postgresql.parameters", "restapi.authentication", "tags.nofailover"]);
        assert!(plan.needs_restart.is_empty(), "{plan:?}");
    }

    #[test]
    fn addresses_directories_raft_and_nostream_need_a_restart() {
        let old = json!({"name": "n1", "restapi": {"listen": "0.0.0.0:8008"}, "postgresql": {"data_dir": "/a"},
                         "raft": {"node_id": 1}, "tags": {}});
        let new = json!({"name": "n2", "restapi": {"listen": "0.0.0.0:8009"}, "postgresql": {"data_dir": "/b"},
                         "raft": {"node_id": 2}, "tags": {"nostream": true}});
        let plan = reload_plan(&old, &new);
        assert!(plan.live.is_empty(), "{plan:?}");
        assert_eq!(
            plan.needs_restart,
            vec!["name", "postgresql.data_dir", "raft.node_id", "restapi.listen", "tags.nostream"]
        );
    }

    #[test]
    fn a_removed_section_lists_its_keys() {
        let old = json!({"log": {"level": "DEBUG", "dir": "/var/log/x"}});
        let new = json!({});
        assert_eq!(changed_keys(&old, &new), vec!["log.dir", "log.level"]);
    }
}
