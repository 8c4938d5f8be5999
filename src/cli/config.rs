//! `raftgres show-config`, `edit-config`, `pause` and `resume`: the dynamic configuration through `GET`,
//! `PATCH` and `PUT /config`.
//!
//! `edit-config` edits the YAML of the stored document (in `$EDITOR`, with `--set`/`--pg`, or from `--apply` /
//! `--replace` files), shows a unified diff, asks, and writes the difference as a `PATCH` (a merge patch; the
//! node applies it with compare-and-set on the key). Right before writing it reads the document again and
//! refuses, as patronictl does, when someone changed it meanwhile. `--replace` writes with `PUT`.
//! The editor is the one process the CLI starts; nothing here touches PostgreSQL.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::Method;
use reqwest::Url;
use serde_json::Map;
use serde_json::Value;

use crate::cli::client::ApiClient;
use crate::cli::client::Reply;
use crate::cli::cluster;
use crate::cli::prompt;
use crate::cli::table;

/// The shortest time `pause --wait` and `resume --wait` wait for every member.
const MIN_PAUSE_WAIT_SECS: u64 = 10;

/// `show-config`: the dynamic configuration as YAML.
pub async fn show(client: &ApiClient, cluster_name: Option<&str>) -> anyhow::Result<()> {
    check_cluster_name(client, cluster_name).await?;
    let (_, config) = read_config(client).await?;
    print!("{}", table::to_yaml(&config));
    Ok(())
}

/// `edit-config`'s options.
#[derive(Debug, Clone, Default)]
pub struct EditRequest {
    /// Optional cluster name, checked against the scope.
    pub cluster_name: Option<String>,
    /// `--set key.path=value` (YAML values; empty deletes).
    pub set: Vec<String>,
    /// `--pg name=value`: shorthand for `--set postgresql.parameters.name=value`.
    pub pg: Vec<String>,
    /// `--apply FILE|-`: merge a YAML document into the configuration.
    pub apply: Option<String>,
    /// `--replace FILE|-`: replace the configuration with a YAML document.
    pub replace: Option<String>,
    /// `--quiet`: no diff.
    pub quiet: bool,
    /// `--force`: no question.
    pub force: bool,
}

/// `edit-config`.
pub async fn edit(client: &ApiClient, req: EditRequest) -> anyhow::Result<()> {
    let scope = check_cluster_name(client, req.cluster_name.as_deref()).await?;
    let (node, original) = read_config(client).await?;
    let before = table::to_yaml(&original);
    let mut changed = original.clone();
    let mut edited = false;
    if let Some(file) = &req.replace {
        changed = read_yaml_map(file)?;
        edited = true;
    }
    if let Some(file) = &req.apply {
        changed = crate::config::merge_patch(&changed, &read_yaml_map(file)?);
        edited = true;
    }
    if !req.set.is_empty() || !req.pg.is_empty() {
        let pg_pairs = req.pg.iter().map(|pair| format!("postgresql.parameters.{}", pair.trim_start()));
        let pairs: Vec<String> = req.set.iter().cloned().chain(pg_pairs).collect();
        changed = apply_pairs(&changed, &pairs)?;
        edited = true;
    }
    let after = if edited {
        table::to_yaml(&changed)
    } else {
        let (text, value) = invoke_editor(&before, scope.as_deref().unwrap_or("cluster")).await?;
        changed = value;
        text
    };
    if changed == original {
        if !req.quiet {
            println!("Not changed");
        }
        return Ok(());
    }
    if !req.quiet {
        print!("{}", unified_diff(&before, &after));
    }
    if (req.apply.as_deref() == Some("-") || req.replace.as_deref() == Some("-")) && !req.force {
        anyhow::bail!("Use --force option to apply changes");
    }
    if !req.force && !prompt::confirm("Apply these changes?", "apply the changes").await? {
        anyhow::bail!("Aborted edit-config");
    }
    write_config(client, &node, &original, &changed, req.replace.is_some()).await?;
    println!("Configuration changed");
    Ok(())
}

/// Writes `changed` when the stored document is still `original`: `PUT` for a replacement, else a merge patch.
async fn write_config(
    client: &ApiClient,
    node: &Url,
    original: &Value,
    changed: &Value,
    replace: bool,
) -> anyhow::Result<()> {
    let (_, current) = read_config(client).await?;
    if current != *original {
        anyhow::bail!("Config modification aborted due to concurrent changes");
    }
    let (method, body) =
        if replace { (Method::PUT, changed.clone()) } else { (Method::PATCH, merge_patch_diff(original, changed)) };
    let mut nodes = vec![node.clone()];
    nodes.extend(client.nodes().iter().filter(|n| *n != node).cloned());
    let reply = client.first_answer(&nodes, method, "/config", Some(&body)).await?;
    match reply.status {
        200 => Ok(()),
        409 => anyhow::bail!("Config modification aborted due to concurrent changes"),
        _ => anyhow::bail!("write the configuration: {}", reply.summary()),
    }
}

/// PURE: the merge patch that turns `before` into `after` (`null` for removed keys).
pub fn merge_patch_diff(before: &Value, after: &Value) -> Value {
    let (Value::Object(before_map), Value::Object(after_map)) = (before, after) else { return after.clone() };
    let mut patch = Map::new();
    for (key, before_value) in before_map {
        match after_map.get(key) {
            None => {
                patch.insert(key.clone(), Value::Null);
            }
            Some(after_value) if after_value != before_value => {
                let value = match (before_value, after_value) {
                    (Value::Object(_), Value::Object(_)) => merge_patch_diff(before_value, after_value),
                    _ => after_value.clone(),
                };
                patch.insert(key.clone(), value);
            }
            Some(_) => {}
        }
    }
    for (key, after_value) in after_map.iter().filter(|(key, _)| !before_map.contains_key(*key)) {
        patch.insert(key.clone(), after_value.clone());
    }
    Value::Object(patch)
}

/// PURE: patronictl's `apply_config_changes`: `key.path=value` pairs with YAML values; an empty value deletes
/// the key; below `postgresql.parameters` the rest of the path is one parameter name (GUCs contain dots).
pub fn apply_pairs(config: &Value, pairs: &[String]) -> anyhow::Result<Value> {
    let mut res = match config {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    for pair in pairs {
        let Some((key_path, value)) = pair.split_once('=') else {
            anyhow::bail!("Invalid parameter setting {pair}");
        };
        let value: Value = serde_yaml_ng::from_str(value).with_context(|| format!("read the value of {pair}"))?;
        let path: Vec<&str> = key_path.trim().split('.').collect();
        set_path(&mut res, &path, value, 0);
    }
    Ok(Value::Object(res))
}

fn set_path(config: &mut Map<String, Value>, path: &[&str], value: Value, depth: usize) {
    let joined;
    let path = if depth == 2 && path.len() > 1 {
        joined = [path.join(".")];
        joined.iter().map(String::as_str).collect::<Vec<_>>()
    } else {
        path.to_vec()
    };
    let Some((key, rest)) = path.split_first() else { return };
    if rest.is_empty() {
        if value.is_null() {
            config.remove(*key);
        } else {
            config.insert(key.to_string(), value);
        }
        return;
    }
    // Only `postgresql.parameters` re-joins the rest of its path: track whether we are there.
    let depth = match (depth, *key) {
        (0, "postgresql") => 1,
        (1, "parameters") => 2,
        _ => 3,
    };
    let child = config.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !child.is_object() {
        *child = Value::Object(Map::new());
    }
    if let Value::Object(child_map) = child {
        set_path(child_map, rest, value, depth);
        if child_map.is_empty() {
            config.remove(*key);
        }
    }
}

/// PURE: Python's `difflib.unified_diff` of the two YAML texts, without file names.
pub fn unified_diff(before: &str, after: &str) -> String {
    let before = format!("{}\n", before.trim_end_matches('\n'));
    let after = format!("{}\n", after.trim_end_matches('\n'));
    similar::TextDiff::from_lines(&before, &after).unified_diff().context_radius(3).header("", "").to_string()
}

/// `pause` or `resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Maintenance {
    /// Enter maintenance mode: no automatic failover.
    Pause,
    /// Leave it.
    Resume,
}

impl Maintenance {
    fn paused(self) -> bool {
        self == Maintenance::Pause
    }

    fn verb(self) -> &'static str {
        match self {
            Maintenance::Pause => "pause",
            Maintenance::Resume => "resume",
        }
    }
}

/// `pause` and `resume`: `PATCH /config` with `{"pause": true}` or `{"pause": null}`, leader first.
pub async fn toggle_pause(
    client: &ApiClient,
    cluster_name: Option<&str>,
    mode: Maintenance,
    wait: bool,
) -> anyhow::Result<()> {
    let cluster = cluster::fetch(client).await?;
    cluster.check_name(cluster_name)?;
    let paused = mode.paused();
    if cluster.paused() == paused {
        anyhow::bail!("Cluster is {} paused", if paused { "already" } else { "not" });
    }
    let verb = mode.verb();
    let body = serde_json::json!({ "pause": if paused { Value::Bool(true) } else { Value::Null } });
    for base in cluster.bases_leader_first(client) {
        let reply = match client.send(&base, Method::PATCH, "/config", Some(&body)).await {
            Ok(reply) => reply,
            Err(e) => {
                eprintln!("warning: {} is not accessible: {e}", crate::cli::client::display_url(&base));
                continue;
            }
        };
        if reply.status != 200 {
            anyhow::bail!("Failed: {verb} cluster management status code={}, ({})", reply.status, reply.text());
        }
        if wait {
            wait_for_pause(client, &cluster, mode, &reply).await?;
        }
        println!("Success: cluster management is {}", if paused { "paused" } else { "resumed" });
        return Ok(());
    }
    anyhow::bail!("Can not find accessible cluster member")
}

/// Waits until every member reports the new `pause` state in its `GET /patroni`.
async fn wait_for_pause(
    client: &ApiClient,
    cluster: &cluster::Cluster,
    mode: Maintenance,
    patched: &Reply,
) -> anyhow::Result<()> {
    let (verb, paused) = (mode.verb(), mode.paused());
    println!("'{verb}' request sent, waiting until it is recognized by all nodes");
    let config: Value = patched.json().unwrap_or(Value::Null);
    // patronictl waits `loop_wait + 1` seconds; a member busy with a long action needs a little longer.
    let wait_secs = (2 * cluster::timing(&config).loop_wait.as_secs() + 1).max(MIN_PAUSE_WAIT_SECS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_secs);
    loop {
        let mut remaining = Vec::new();
        for member in &cluster.members {
            let Ok(base) = client.member_base(&member.api_url) else { continue };
            let seen = match client.send(&base, Method::GET, "/patroni", None).await {
                Ok(reply) => reply.json::<Value>().ok().map(|s| s.get("pause").is_some_and(cluster::truthy)),
                Err(_) => None,
            };
            if seen != Some(paused) {
                remaining.push(member.name.clone());
            }
        }
        if remaining.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{} did not recognize the {verb} within {wait_secs} seconds", remaining.join(", "));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Checks an optional cluster name against the scope; the scope when one was given.
async fn check_cluster_name(client: &ApiClient, cluster_name: Option<&str>) -> anyhow::Result<Option<String>> {
    match cluster_name {
        None => Ok(None),
        Some(_) => {
            let cluster = cluster::fetch(client).await?;
            cluster.check_name(cluster_name)?;
            Ok(Some(cluster.scope))
        }
    }
}

/// `GET /config` from the first node that answers: the node and the document.
async fn read_config(client: &ApiClient) -> anyhow::Result<(Url, Value)> {
    let reply = client.get_any("/config").await.context("read the dynamic configuration")?;
    let config: Value = reply.json()?;
    anyhow::ensure!(config.is_object(), "the dynamic configuration of {} is not a JSON object", reply.node);
    Ok((reply.node, config))
}

/// A YAML mapping from a file, or from standard input for `-`.
fn read_yaml_map(file: &str) -> anyhow::Result<Value> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("read the configuration from standard input")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {file}"))?
    };
    parse_yaml_map(&text, file)
}

fn parse_yaml_map(text: &str, origin: &str) -> anyhow::Result<Value> {
    let value: Value = serde_yaml_ng::from_str(text).with_context(|| format!("read the YAML of {origin}"))?;
    match value {
        Value::Object(_) => Ok(value),
        Value::Null => Ok(Value::Object(Map::new())),
        _ => anyhow::bail!("{origin} is not a YAML mapping"),
    }
}

/// Opens `$EDITOR` (else `editor`, else `vi`) on the YAML; the edited text and its value.
async fn invoke_editor(before: &str, scope: &str) -> anyhow::Result<(String, Value)> {
    let editor = std::env::var("EDITOR").ok().filter(|e| !e.trim().is_empty()).or_else(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        ["editor", "vi"]
            .into_iter()
            .find(|e| std::env::split_paths(&path).any(|dir| dir.join(e).is_file()))
            .map(String::from)
    });
    let Some(editor) = editor else {
        anyhow::bail!("EDITOR environment variable is not set. editor or vi are not available");
    };
    let path = temp_file(scope, before)?;
    let _cleanup = RemoveOnDrop(path.clone());
    // Through `sh -c` so that an EDITOR with arguments (`code --wait`) works, as git runs it.
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .await
        .with_context(|| format!("run the editor {editor:?}"))?;
    anyhow::ensure!(status.success(), "Editor exited with return code {}", status.code().unwrap_or(-1));
    let after = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let value = parse_yaml_map(&after, "the edited configuration")?;
    Ok((after, value))
}

/// A new private file `<scope>-config-<unique>.yaml` in the temp directory holding `text`.
fn temp_file(scope: &str, text: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!("{}-config-{}-{nanos}.yaml", scope.replace('/', "_"), std::process::id());
    let path = std::env::temp_dir().join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[track_caller]
    fn check_pairs(config: Value, pairs: &[&str], expected: Value) {
        let pairs: Vec<String> = pairs.iter().map(|p| p.to_string()).collect();
        assert_eq!(apply_pairs(&config, &pairs).expect("applies"), expected);
    }

    #[test]
    fn set_pairs_follow_patronictl() {
        check_pairs(json!({"ttl": 30}), &["ttl=20", "loop_wait=5"], json!({"ttl": 20, "loop_wait": 5}));
        check_pairs(
            json!({}),
            &["postgresql.parameters.work_mem=8MB", "postgresql.parameters.auto_explain.log_min_duration=1s"],
            json!({"postgresql": {"parameters": {"work_mem": "8MB", "auto_explain.log_min_duration": "1s"}}}),
        );
        check_pairs(
            json!({"postgresql": {"parameters": {"work_mem": "8MB"}}}),
            &["postgresql.parameters.work_mem="],
            json!({}),
        );
        check_pairs(json!({"pause": true, "ttl": 30}), &["pause="], json!({"ttl": 30}));
        check_pairs(json!({"a": 1}), &["a.b=on"], json!({"a": {"b": "on"}}));
        assert_eq!(
            apply_pairs(&json!({}), &["ttl".to_string()]).expect_err("refused").to_string(),
            "Invalid parameter setting ttl"
        );
    }

    #[track_caller]
    fn check_diff(before: Value, after: Value, expected: Value) {
        let patch = merge_patch_diff(&before, &after);
        assert_eq!(patch, expected);
        assert_eq!(crate::config::merge_patch(&before, &patch), after, "the patch turns before into after");
    }

    #[test]
    fn merge_patches_carry_only_the_changes() {
        check_diff(json!({"ttl": 30, "loop_wait": 10}), json!({"ttl": 20, "loop_wait": 10}), json!({"ttl": 20}));
        check_diff(
            json!({"postgresql": {"parameters": {"a": "1", "b": "2"}, "use_slots": true}}),
            json!({"postgresql": {"parameters": {"a": "1", "c": "3"}, "use_slots": true}}),
            json!({"postgresql": {"parameters": {"b": null, "c": "3"}}}),
        );
        check_diff(json!({"pause": true}), json!({}), json!({"pause": null}));
        check_diff(json!({"slots": {"x": {"type": "physical"}}}), json!({"slots": []}), json!({"slots": []}));
    }

    #[test]
    fn diffs_are_unified_without_file_names() {
        let got = unified_diff("loop_wait: 10\nttl: 30\n", "loop_wait: 10\nttl: 20\n");
        assert_eq!(got, "--- \n+++ \n@@ -1,2 +1,2 @@\n loop_wait: 10\n-ttl: 30\n+ttl: 20\n");
    }

    #[test]
    fn yaml_files_must_be_maps() {
        assert_eq!(parse_yaml_map("ttl: 20\n", "f").expect("a map"), json!({"ttl": 20}));
        assert_eq!(parse_yaml_map("", "f").expect("empty is an empty map"), json!({}));
        assert!(parse_yaml_map("- 1\n", "f").is_err());
    }
}
