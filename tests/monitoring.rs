//! `docs/monitoring/`: the Prometheus alert rules and the Grafana dashboard are valid and name only metrics
//! raftgres serves.
//!
//! The served set is what the real renderer (`api::metrics::render` and `render_raft`) writes for a node that has
//! every metric: a primary with a lease, a Raft store with a recorded promotion, and three sampled filesystems.
//! Every `patroni_*` and `raftgres_*` identifier in an alert expression, a dashboard query or a series of the
//! rules' unit tests must be one of its `# TYPE` names; this part needs nothing installed.
//!
//! With `promtool` (Prometheus' own checker) the test also runs `promtool check rules` and `promtool test rules`
//! (docs/monitoring/alerts.test.yml) on the rules, parses every dashboard query (wrapped as recording rules, with
//! Grafana's variables filled in), and lints the rendered metrics with `promtool check metrics`.
//! promtool is looked up in `PROMTOOL`, then on `PATH`, then at `.cache/promtool/usr/bin/promtool`; as root on
//! Debian the test fetches it there from Debian's `prometheus` package (`apt-get download` and `dpkg -x`, never
//! `apt-get install`), as `scripts/test` does. Without it the promtool tests print why and skip, except under
//! `CI=true`, where a missing promtool is a failure.

use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use raftgres::api::metrics;
use raftgres::dcs::view::FailoverTimeline;
use raftgres::dcs::view::PromotionKind;
use raftgres::postgres::types::Lsn;
use raftgres::postgres::types::TimelineId;
use raftgres::status::ClusterSummary;
use raftgres::status::FilesystemUsage;
use raftgres::status::NodeDir;
use raftgres::status::NodeStatus;
use raftgres::status::PgState;
use raftgres::status::Role;
use raftgres::status::WalPosition;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

const ALERTS: &str = "docs/monitoring/alerts.yml";
const ALERT_TESTS: &str = "docs/monitoring/alerts.test.yml";
const DASHBOARD: &str = "docs/monitoring/grafana-dashboard.json";
/// Where the test and `scripts/test` put promtool, under the repository.
const CACHED_PROMTOOL: &str = ".cache/promtool/usr/bin/promtool";
/// The metric name prefixes checked against the served set (Prometheus' own `up` is not raftgres').
const PREFIXES: [&str; 2] = ["patroni_", "raftgres_"];
/// Grafana's variables in the dashboard's queries, with a value that makes the query plain PromQL.
const GRAFANA_VARIABLES: [(&str, &str); 5] =
    [("$__rate_interval", "1m"), ("$__interval", "5m"), ("$__range", "6h"), ("$scope", "demo"), ("$member", ".*")];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_one_raftgres_serves() {
    let served = served_names(&rendered_metrics());
    for name in ["raftgres_filesystem_avail_bytes", "raftgres_filesystem_size_bytes", "raftgres_last_failover_seconds"]
    {
        assert!(served.contains(name), "the representative node renders {name}: {served:?}");
    }
    let mut sources = Vec::new();
    for (alert, expr) in alert_exprs() {
        sources.push((format!("{ALERTS}: alert {alert}"), expr));
    }
    for (where_, query) in dashboard_queries() {
        sources.push((format!("{DASHBOARD}: {where_}"), query));
    }
    for series in test_series() {
        sources.push((format!("{ALERT_TESTS}: input series"), series));
    }
    let mut problems = Vec::new();
    let mut n_names = 0;
    for (source, text) in &sources {
        for name in metric_names(text) {
            n_names += 1;
            if !served.contains(&name) {
                problems.push(format!("{source}: `{name}` is not a metric raftgres serves"));
            }
        }
    }
    assert!(
        n_names > 50,
        "found only {n_names} metric references in {} sources: is the extraction broken?",
        sources.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_description() {
    let doc: Yaml = serde_yaml_ng::from_str(&read(ALERTS)).expect("alerts.yml is YAML");
    let mut problems = Vec::new();
    let mut n_alerts = 0;
    for rule in rules(&doc) {
        let Some(alert) = rule.get("alert").and_then(Yaml::as_str) else { continue };
        n_alerts += 1;
        let severity = rule.get("labels").and_then(|labels| labels.get("severity")).and_then(Yaml::as_str);
        if !matches!(severity, Some("critical" | "warning" | "info")) {
            problems.push(format!("{alert}: severity {severity:?}, want critical, warning or info"));
        }
        for key in ["summary", "description"] {
            let text = rule.get("annotations").and_then(|a| a.get(key)).and_then(Yaml::as_str).unwrap_or_default();
            if text.trim().is_empty() {
                problems.push(format!("{alert}: no {key} annotation"));
            }
        }
    }
    assert!(n_alerts >= 10, "only {n_alerts} alerts in {ALERTS}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_dashboard_has_its_variables() {
    let dashboard: Json = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dashboard["schemaVersion"]
    );
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name}"));
    assert_eq!(
        (&variable("datasource")["type"], &variable("datasource")["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    assert_eq!(variable("scope")["definition"], "label_values(patroni_version, scope)");
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} uses the datasource variable",
            panel["title"]
        );
        assert!(panel["targets"].as_array().is_some_and(|t| !t.is_empty()), "panel {} has a query", panel["title"]);
    }
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests() {
    let Some(promtool) = promtool_or_skip("promtool_accepts_the_rules_and_their_unit_tests") else { return };
    let checked = run(Command::new(promtool).args(["check", "rules"]).arg(root().join(ALERTS)));
    assert!(checked.status.success(), "promtool check rules {ALERTS}:\n{}", text(&checked));
    let tested = run(Command::new(promtool).args(["test", "rules"]).arg(root().join(ALERT_TESTS)));
    assert!(tested.status.success(), "promtool test rules {ALERT_TESTS}:\n{}", text(&tested));
}

#[test]
fn promtool_parses_every_dashboard_query() {
    let Some(promtool) = promtool_or_skip("promtool_parses_every_dashboard_query") else { return };
    let queries = dashboard_queries();
    // promtool has no bare "parse this expression" command; a recording rule per query gets the same parser.
    let rules: Vec<Json> = queries
        .iter()
        .enumerate()
        .filter(|(_, (_, query))| !query.starts_with("label_values("))
        .map(|(query_idx, (_, query))| {
            serde_json::json!({"record": format!("dashboard:query_{query_idx}"), "expr": fill_variables(query)})
        })
        .collect();
    assert!(rules.len() >= 15, "only {} dashboard queries", rules.len());
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("dashboard-queries.yml");
    // JSON is YAML: promtool reads it as a rule file.
    std::fs::write(&path, file.to_string()).expect("write the rule file");
    let checked = run(Command::new(promtool).args(["check", "rules"]).arg(&path));
    let listing: Vec<String> =
        queries.iter().enumerate().map(|(i, (at, q))| format!("query_{i} ({at}): {q}")).collect();
    assert!(
        checked.status.success(),
        "promtool check rules on the dashboard's queries:\n{}\n{}",
        text(&checked),
        listing.join("\n")
    );
}

#[test]
fn promtool_accepts_the_rendered_metrics() {
    let Some(promtool) = promtool_or_skip("promtool_accepts_the_rendered_metrics") else { return };
    let rendered = rendered_metrics();
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start promtool check metrics");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(rendered.as_bytes()).expect("write the metrics to promtool");
    }
    let checked = child.wait_with_output().expect("wait for promtool check metrics");
    if checked.status.success() {
        return;
    }
    // promtool exits 3 for lint findings and 1 when the text does not parse. The lint findings it may keep are
    // on Patroni's names, which raftgres serves unchanged so that dashboards and alerts written for Patroni work
    // (for example `patroni_xlog_location` is a counter without the `_total` suffix). Anything about a
    // `raftgres_*` name, or a parse error, fails. promtool 2.42 (Debian 12) has no `--lint=none` for
    // `check metrics`, so the findings are filtered here, line by line.
    let output = text(&checked);
    let findings: Vec<&str> = output.lines().filter(|line| !line.trim().is_empty()).collect();
    let patroni_only = findings.iter().all(|line| line.trim_start().starts_with("patroni_"));
    assert!(
        checked.status.code() == Some(3) && patroni_only,
        "promtool check metrics (exit {:?}) on the rendered metrics:\n{output}\n--- rendered:\n{rendered}",
        checked.status.code()
    );
    println!("promtool check metrics: lint findings on Patroni's names only, kept as Patroni has them:\n{output}");
}

/// What raftgres renders for a node that has every metric.
fn rendered_metrics() -> String {
    let now = tokio::time::Instant::now();
    let mut status = NodeStatus::initial("pg1", "demo", now);
    status.leader_until = Some(now + Duration::from_secs(3));
    status.next_cycle_at = now + Duration::from_secs(1);
    status.pg.state = PgState::Running;
    status.pg.role = Role::Primary;
    // 9.6 or later, for the streaming and archive recovery metrics.
    status.pg.server_version = Some(160004);
    status.pg.timeline = Some(TimelineId(2));
    status.pg.postmaster_start_time = Some("2024-08-28 19:39:26.352526+00:00".into());
    status.pg.wal = WalPosition::Primary { location: Lsn(0x0300_0000) };
    status.cluster = Some(ClusterSummary { leader: Some("pg1".into()), ..ClusterSummary::default() });
    status.dcs_last_seen = Some(std::time::SystemTime::now());
    status.filesystems = [NodeDir::Data, NodeDir::Wal, NodeDir::Raft]
        .into_iter()
        .map(|dir| FilesystemUsage { dir, avail_bytes: 40 << 30, size_bytes: 100 << 30 })
        .collect();
    let facts = metrics::RaftFacts {
        term: 4,
        is_raft_leader: true,
        last_log_index: 120,
        last_applied: 120,
        n_failovers: 1,
        last_failover: Some(FailoverTimeline {
            kind: PromotionKind::Failover,
            last_renewal_ms: Some(1_724_873_960_000),
            lease_expired_ms: Some(1_724_873_962_600),
            promote_started_ms: 1_724_873_962_700,
            promoted_ms: 1_724_873_962_900,
            first_healthy_ms: None,
        }),
    };
    metrics::render(&status, now) + &metrics::render_raft(&status, &facts)
}

/// The names of the `# TYPE name kind` lines.
fn served_names(rendered: &str) -> BTreeSet<String> {
    let names = rendered.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.split_whitespace().next());
    names.map(str::to_owned).collect()
}

/// Every identifier in a PromQL text that starts with one of [`PREFIXES`]: conservative, so it also takes one
/// inside a quoted string or a comment.
fn metric_names(promql: &str) -> Vec<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut rest = promql;
    while let Some(start) = rest.find(|c: char| is_ident(c)) {
        let after = &rest[start..];
        let end = after.find(|c: char| !is_ident(c)).unwrap_or(after.len());
        let word = &after[..end];
        // Whole identifiers only: `x_patroni_y` is no reference to a `patroni_` metric.
        if PREFIXES.iter().any(|prefix| word.starts_with(prefix)) {
            names.push(word.to_owned());
        }
        rest = &after[end..];
    }
    names
}

fn rules(doc: &Yaml) -> Vec<&Yaml> {
    let groups = doc.get("groups").and_then(Yaml::as_sequence).expect("a `groups` list");
    groups.iter().flat_map(|group| group.get("rules").and_then(Yaml::as_sequence).expect("a `rules` list")).collect()
}

/// `(alert name, expr)` of every alerting rule.
fn alert_exprs() -> Vec<(String, String)> {
    let doc: Yaml = serde_yaml_ng::from_str(&read(ALERTS)).expect("alerts.yml is YAML");
    let exprs: Vec<(String, String)> = rules(&doc)
        .into_iter()
        .map(|rule| {
            let alert = rule.get("alert").and_then(Yaml::as_str).expect("only alerting rules").to_owned();
            let expr = rule.get("expr").and_then(Yaml::as_str).unwrap_or_else(|| panic!("{alert} has an expr"));
            (alert, expr.to_owned())
        })
        .collect();
    assert!(!exprs.is_empty(), "no rules in {ALERTS}");
    exprs
}

/// The `series` of every input of the rules' unit tests.
fn test_series() -> Vec<String> {
    let doc: Yaml = serde_yaml_ng::from_str(&read(ALERT_TESTS)).expect("alerts.test.yml is YAML");
    let tests = doc.get("tests").and_then(Yaml::as_sequence).expect("a `tests` list");
    let inputs =
        tests.iter().flat_map(|test| test.get("input_series").and_then(Yaml::as_sequence).into_iter().flatten());
    inputs.filter_map(|input| input.get("series").and_then(Yaml::as_str).map(str::to_owned)).collect()
}

/// `(where, query)` of every PromQL text in the dashboard: panel targets, annotations and variable queries.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: Json = serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr =
                target["expr"].as_str().unwrap_or_else(|| panic!("panel {} has a target without expr", panel["title"]));
            queries.push((format!("panel {} target {}", panel["title"], target["refId"]), expr.to_owned()));
        }
    }
    for annotation in dashboard["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = annotation["expr"].as_str() {
            queries.push((format!("annotation {}", annotation["name"]), expr.to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(query) = variable["query"]["query"].as_str() {
            queries.push((format!("variable {}", variable["name"]), query.to_owned()));
        }
    }
    assert!(!queries.is_empty(), "no queries in {DASHBOARD}");
    queries
}

/// The query with Grafana's variables replaced by values, as Grafana sends it.
fn fill_variables(query: &str) -> String {
    let filled = GRAFANA_VARIABLES.iter().fold(query.to_owned(), |query, (name, value)| query.replace(name, value));
    assert!(!filled.contains('$'), "a Grafana variable the test does not know in: {query}");
    filled
}

/// promtool, or `None` after printing why the test skips (a failure under `CI=true`).
fn promtool_or_skip(test: &str) -> Option<&'static Path> {
    static PROMTOOL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PROMTOOL.get_or_init(find_promtool) {
        Ok(path) => Some(path),
        Err(why) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "promtool is needed under CI=true: {why}");
            println!("SKIP {test}: {why}");
            None
        }
    }
}

/// `PROMTOOL`, then `PATH`, then the cache under the repository, which as root on Debian is filled first.
fn find_promtool() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PROMTOOL").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() { Ok(path) } else { Err(format!("PROMTOOL={} is not a file", path.display())) };
    }
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("promtool")).find(|path| path.is_file()));
    if let Some(path) = on_path {
        return Ok(path);
    }
    let cached = root().join(CACHED_PROMTOOL);
    if cached.is_file() {
        return Ok(cached);
    }
    if !nix::unistd::geteuid().is_root() || !Path::new("/etc/debian_version").exists() {
        return Err(format!(
            "promtool not found (set PROMTOOL, put it on PATH, or run scripts/test as root on Debian, which fetches it \
             to {CACHED_PROMTOOL})"
        ));
    }
    fetch_promtool(&cached)?;
    Ok(cached)
}

/// Extracts promtool from Debian's `prometheus` package into `cached`, without installing the package (it is
/// large and would start a Prometheus server). The same steps as `scripts/test`.
fn fetch_promtool(cached: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("create a temp dir: {e}"))?;
    println!(
        "fetching promtool: apt-get download prometheus (Debian's package, extracted with dpkg -x, not installed)"
    );
    let download = || try_run(Command::new("apt-get").args(["download", "-q", "prometheus"]).current_dir(dir.path()));
    if !download()?.status.success() {
        println!("fetching promtool: apt-get update, then apt-get download prometheus again");
        try_run(Command::new("apt-get").args(["update", "-q"]))?;
        let again = download()?;
        if !again.status.success() {
            return Err(format!("apt-get download prometheus failed: {}", text(&again)));
        }
    }
    let deb = std::fs::read_dir(dir.path())
        .map_err(|e| format!("list {}: {e}", dir.path().display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .ok_or("apt-get download prometheus left no .deb")?;
    let tree = dir.path().join("tree");
    let extracted = try_run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
    if !extracted.status.success() {
        return Err(format!("dpkg -x {} failed: {}", deb.display(), text(&extracted)));
    }
    // Only promtool is kept (the package's prometheus server is as large again).
    let parent = cached.parent().ok_or("the cache path has a parent")?;
    std::fs::create_dir_all(parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let partial = parent.join(format!("promtool.partial.{}", std::process::id()));
    std::fs::copy(tree.join("usr/bin/promtool"), &partial).map_err(|e| format!("copy promtool: {e}"))?;
    std::fs::rename(&partial, cached).map_err(|e| format!("move promtool into {}: {e}", cached.display()))?;
    println!("fetching promtool: {}", cached.display());
    Ok(())
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("run {command:?}: {e}"))
}

fn try_run(command: &mut Command) -> Result<Output, String> {
    command.output().map_err(|e| format!("run {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}
