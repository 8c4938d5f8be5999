//! The operator CLI (`raftgres list`, `switchover`, `edit-config`, …) run as a process against a live local
//! three-node cluster: every command, its output shapes, its questions on standard input, and the cluster
//! changes it causes (primary moves, parameters applied, pending restarts cleared, pause holds failover).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use raftgres::demo::cluster::LocalCluster;
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::harness::*;

/// How long one CLI invocation may take (a switchover polls for up to 20 s, a restart waits for PostgreSQL).
const CLI_TIMEOUT: Duration = Duration::from_secs(240);
/// raftgres' default `ttl` (the demo cluster does not change it).
const TTL: Duration = Duration::from_secs(3);
/// The pretty table's header, as patronictl 4.1 prints it.
const HEADER: [&str; 9] = ["Member", "Host", "Role", "State", "TL", "Receive LSN", "Lag", "Replay LSN", "Lag"];

/// Runs `raftgres <args>` with `stdin` and extra environment variables.
async fn run_cli(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Ran {
    let mut command = tokio::process::Command::new(binary());
    command
        .args(args)
        .env_remove("PATRONICTL_CONFIG_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start raftgres");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).await.expect("write stdin");
    drop(input);
    let output = tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("raftgres {args:?} did not finish within {CLI_TIMEOUT:?}"))
        .expect("wait for raftgres");
    Ran::from(output)
}

/// Every node's REST API, comma-separated.
fn urls(c: &LocalCluster) -> String {
    (1..=c.n_nodes()).map(|node| c.api(node)).collect::<Vec<_>>().join(",")
}

/// Runs `raftgres <args> --url <every node>` with `stdin`.
async fn ctl_with(c: &LocalCluster, args: &[&str], stdin: &str) -> Ran {
    let urls = urls(c);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--url", &urls]);
    run_cli(&all, stdin, &[]).await
}

/// Runs `raftgres <args> --url <every node>` with closed standard input.
async fn ctl(c: &LocalCluster, args: &[&str]) -> Ran {
    ctl_with(c, args, "").await
}

/// `list -f json`.
async fn list_json(c: &LocalCluster) -> Vec<Value> {
    let out = ctl(c, &["list", "-f", "json"]).await.ok();
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_else(|e| panic!("list -f json is not JSON ({e}): {out}"))
}

/// Waits until `SHOW setting` reads `value` on every node.
async fn wait_setting(c: &LocalCluster, setting: &str, value: &str) {
    eventually(Duration::from_secs(60), &format!("{setting} = {value} on every node"), || async {
        for node in 1..=c.n_nodes() {
            if show(c, node, setting).await.as_deref() != Some(value) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// The cells of a pretty table line (`| a | b |` → `["a", "b"]`).
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|cell| cell.trim().to_string()).collect()
}

/// Waits until a node other than `old` is the only primary and returns it; says so when it is not `target`.
///
/// The CLI's part ends with the node's `Successfully switched over to "<target>"`, which the callers assert:
/// the target took the leader lock. Under load the HA loop can still lose that lock again (the new leader's
/// session expired on the raft leader while its promotion ran, and the old primary won the next race); that
/// one known HA-loop failure is reported, with the logs, instead of failing the CLI test.
async fn primary_moved(c: &LocalCluster, old: usize, target: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut primaries = Vec::new();
        for node in 1..=c.n_nodes() {
            if c.is_running(node) && in_recovery(c, node).await == Some(false) {
                primaries.push(node);
            }
        }
        match primaries[..] {
            [new] if new != old => {
                if new != target {
                    println!("note: node{target} was promoted, but node{new} is the primary now\n{}", logs(c));
                }
                return new;
            }
            [back] if back == old && tokio::time::Instant::now() >= deadline && lease_expired(c, target) => {
                println!("note: node{target} lost the leader lock while promoting; node{old} leads again\n{}", logs(c));
                return old;
            }
            _ if tokio::time::Instant::now() >= deadline => {
                panic!("the primary did not move from node{old} (primaries: {primaries:?})\n{}", logs(c))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Whether a raft leader expired `node{target}`'s session (its `session deadline passed` line, ANSI colours
/// removed).
fn lease_expired(c: &LocalCluster, target: usize) -> bool {
    let owner = format!("owner=\"node{target}\"");
    (1..=c.n_nodes()).any(|node| {
        let log = std::fs::read_to_string(c.dir().join(format!("node{node}/raftgres.log"))).unwrap_or_default();
        log.lines().map(strip_ansi).any(|line| line.contains("session deadline passed") && line.contains(&owner))
    })
}

/// Waits until one primary and two streaming replicas run; returns the primary.
async fn healthy(c: &LocalCluster) -> usize {
    c.wait_healthy(tokio::time::Instant::now() + Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("the cluster did not become healthy: {e:#}\n{}", logs(c)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_help_and_unreachable_nodes() {
    let help = run_cli(&["--help"], "", &[]).await.ok();
    let commands = [
        "list",
        "topology",
        "switchover",
        "failover",
        "restart",
        "reload",
        "reinit",
        "pause",
        "resume",
        "show-config",
        "edit-config",
        "history",
        "remove",
        "members",
        "dsn",
        "query",
        "flush",
        "version",
    ];
    for command in commands {
        assert!(help.lines().any(|line| line.trim_start().starts_with(command)), "--help lacks {command}:\n{help}");
        let sub = run_cli(&[command, "--help"], "", &[]).await.ok();
        assert!(sub.contains(&format!("Usage: raftgres {command}")), "{command} --help:\n{sub}");
        // patronictl's global options, accepted after the command too.
        assert!(sub.contains("--url <URL>") && sub.contains("--config-file <FILE>"), "{command} --help:\n{sub}");
    }
    for (args, flag) in [(["members", "add"], "--raft-addr"), (["members", "remove"], "--force")] {
        let sub = run_cli(&[args[0], args[1], "--help"], "", &[]).await.ok();
        assert!(sub.contains(flag), "{args:?} --help:\n{sub}");
    }
    let switchover = run_cli(&["switchover", "--help"], "", &[]).await.ok();
    for flag in ["--leader", "--candidate", "--scheduled", "--force"] {
        assert!(switchover.contains(flag), "switchover --help lacks {flag}:\n{switchover}");
    }
    let port = free_port_block(2);
    let (a, b) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{}", port + 1));
    let error = run_cli(&["list", "--url", &format!("{a},{b}")], "", &[]).await.failed();
    assert_eq!(
        error,
        format!(
            "error: no node answered (tried http://127.0.0.1:{port}, http://127.0.0.1:{}: connection refused)",
            port + 1
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_lists_and_reconfigures_a_live_cluster() {
    if !pg_available("cli_lists_and_reconfigures_a_live_cluster") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    check_list_formats(c, primary).await;
    check_patronictl_habits(c, primary).await;
    check_edit_config(c).await;
    check_pending_restart(c).await;
    let out = ctl(c, &["reload", "--force"]).await.ok();
    assert_eq!(out.matches("Reload request received for member").count(), 3, "{out}");
    let replica = (1..=3).find(|node| *node != primary).expect("a replica");
    let name = format!("node{replica}");
    let out = ctl(c, &["reinit", &name, "--force", "--wait"]).await.ok();
    assert!(out.contains(&format!("Success: reinitialize for member {name}")), "{out}");
    assert!(out.contains(&format!("Reinitialize is completed on: {name}")), "{out}");
    let error = ctl(c, &["reinit", &format!("node{primary}"), "--force"]).await.failed();
    assert!(error.contains("is not a replica"), "{error}");
    let primary = healthy(c).await;
    check_one_node_stopped(c, primary).await;
    finish(c, &[]).await;
}

/// `list` in every format (also through `-c node.yml`), `topology`, `history` and `show-config`.
async fn check_list_formats(c: &LocalCluster, primary: usize) {
    let pretty = ctl(c, &["list"]).await.ok();
    let lines: Vec<&str> = pretty.lines().collect();
    assert!(lines[0].starts_with("+ Cluster: demo ("), "{pretty}");
    assert!(!lines[0].contains("uninitialized"), "the title carries the system identifier:\n{pretty}");
    assert_eq!(cells(lines[1])[..HEADER.len()], HEADER, "{pretty}");
    let rows: Vec<Vec<String>> = lines[3..6].iter().map(|line| cells(line)).collect();
    for (idx, row) in rows.iter().enumerate() {
        let node = idx + 1;
        assert_eq!(row[0], format!("node{node}"), "{pretty}");
        assert_eq!(row[1], format!("127.0.0.1:{}", c.pg_port(node)), "{pretty}");
        assert_eq!(row[2], if node == primary { "Leader" } else { "Replica" }, "{pretty}");
    }
    let footer = lines[7..].join("\n");
    assert!(footer.is_empty() || footer.starts_with(" Leader lease: "), "{pretty}");
    let config = c.node(2).config_path();
    let via_config = run_cli(&["list", "-c", &config.to_string_lossy()], "", &[]).await.ok();
    assert_eq!(via_config.lines().nth(1), lines.get(1).copied(), "{via_config}");
    let json = list_json(c).await;
    assert_eq!(json.len(), 3);
    assert_eq!(json[primary - 1]["Role"], "Leader");
    assert!(json.iter().all(|row| row["Cluster"] == "demo" && row["TL"].is_u64()), "{json:?}");
    let yaml = ctl(c, &["list", "-f", "yaml"]).await.ok();
    let yaml: Vec<Value> = serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("not YAML ({e}): {yaml}"));
    assert_eq!(yaml.iter().map(|row| row["Member"].clone()).collect::<Vec<_>>(), ["node1", "node2", "node3"]);
    let tsv = ctl(c, &["list", "-f", "tsv"]).await.ok();
    let tsv_header = "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag";
    assert_eq!(tsv.lines().next(), Some(tsv_header), "{tsv}");
    let topology = ctl(c, &["topology"]).await.ok();
    let names: Vec<String> = topology.lines().skip(3).take(3).map(|line| cells(line)[0].clone()).collect();
    assert_eq!(names[0], format!("node{primary}"), "{topology}");
    assert!(names[1..].iter().all(|name| name.starts_with("+ node")), "{topology}");
    let history = ctl(c, &["history", "-f", "json"]).await.ok();
    assert!(serde_json::from_str::<Vec<Value>>(&history).is_ok(), "{history}");
    let config = ctl(c, &["show-config", "demo"]).await.ok();
    assert!(config.contains("max_connections: 100"), "{config}");
    let error = ctl(c, &["list", "other"]).await.failed();
    assert_eq!(error, "error: the nodes serve cluster \"demo\", not \"other\"");
}

/// patronictl's habits: global options before the command, `PATRONICTL_CONFIG_FILE`, the default file
/// `~/.config/patroni/patronictl.yaml` with only `restapi:`, and the commands `dsn`, `query` (`-c SQL` after the
/// command), `version` and `flush`.
async fn check_patronictl_habits(c: &LocalCluster, primary: usize) {
    let config = c.node(2).config_path();
    let config = config.to_string_lossy();
    let before = run_cli(&["-c", &config, "list", "-f", "json"], "", &[]).await.ok();
    assert_eq!(serde_json::from_str::<Vec<Value>>(&before).map(|rows| rows.len()).ok(), Some(3), "{before}");
    let from_env = run_cli(&["list", "-f", "json"], "", &[("PATRONICTL_CONFIG_FILE", &config)]).await.ok();
    assert_eq!(from_env, before);
    let home = tempfile::tempdir().expect("a home directory");
    let ctl_dir = home.path().join(".config/patroni");
    std::fs::create_dir_all(&ctl_dir).expect("create ~/.config/patroni");
    let api = c.api(3);
    let address = api.trim_start_matches("http://");
    std::fs::write(ctl_dir.join("patronictl.yaml"), format!("restapi:\n  connect_address: {address}\n"))
        .expect("write patronictl.yaml");
    let home_path = home.path().to_string_lossy().into_owned();
    let env = [("HOME", home_path.as_str()), ("XDG_CONFIG_HOME", "")];
    let from_default = run_cli(&["list", "-f", "json"], "", &env).await.ok();
    assert_eq!(from_default, before);

    let dsn = ctl(c, &["dsn"]).await.ok();
    assert_eq!(dsn, format!("host=127.0.0.1 port={}\n", c.pg_port(primary)));
    let password = c.password().to_string();
    let pg_env = [("PGPASSWORD", password.as_str()), ("PGUSER", "postgres")];
    let urls = urls(c);
    let sql = "SELECT 1 AS one, pg_is_in_recovery() AS standby";
    let out = run_cli(&["query", "demo", "-c", sql, "--url", &urls], "", &pg_env).await.ok();
    assert_eq!(out, "one\tstandby\n1\tf\n");
    let out =
        run_cli(&["query", "-r", "replica", "-c", sql, "--format", "json", "--url", &urls], "", &pg_env).await.ok();
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(rows, vec![serde_json::json!({"one": "1", "standby": "t"})]);
    let out = run_cli(&["query", "-c", "SELECT * FROM no_such_table", "--url", &urls], "", &pg_env).await.ok();
    assert!(out.trim_end().ends_with("ERROR, SQLSTATE: 42P01"), "{out}");

    let out = ctl(c, &["version"]).await.ok();
    assert!(out.starts_with("raftgres ctl version "), "{out}");
    let out = ctl(c, &["version", "demo"]).await.ok();
    for node in 1..=3 {
        assert!(out.contains(&format!("node{node}: Patroni 4.1.4 (raftgres ")), "{out}");
    }
    assert!(out.contains(" PostgreSQL 15."), "{out}");

    let replica = (1..=3).find(|node| *node != primary).expect("a replica");
    let name = format!("node{replica}");
    let later = (chrono::Local::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string();
    ctl(c, &["restart", &name, "--scheduled", &later, "--force"]).await.ok();
    eventually(Duration::from_secs(30), "the scheduled restart in GET /cluster", || async {
        let cluster = cluster_json(c).await?;
        let member = cluster["members"].as_array()?.iter().find(|m| m["name"] == name.as_str())?.clone();
        member["scheduled_restart"].is_object().then_some(())
    })
    .await;
    let out = ctl(c, &["flush", "demo", &name, "restart", "--force"]).await.ok();
    assert!(out.contains(&format!("Success: flush scheduled restart for member {name}")), "{out}");
    let out = ctl(c, &["flush", "demo", "switchover"]).await.ok();
    assert_eq!(out, "No pending scheduled switchover\n");
    let candidate = format!("node{replica}");
    ctl(c, &["switchover", "--candidate", &candidate, "--scheduled", &later, "--force"]).await.ok();
    let out = ctl(c, &["flush", "demo", "switchover"]).await.ok();
    assert!(out.starts_with("Success: "), "{out}");
    let cluster = cluster_json(c).await.expect("GET /cluster");
    assert!(cluster.get("scheduled_switchover").is_none(), "{cluster}");
}

/// `edit-config` with `--pg`, with `$EDITOR` and an answer on standard input, unchanged, and refused.
async fn check_edit_config(c: &LocalCluster) {
    let out = ctl(c, &["edit-config", "--pg", "work_mem=8MB", "--force"]).await.ok();
    assert!(out.contains("+    work_mem: 8MB") && out.contains("Configuration changed"), "{out}");
    wait_setting(c, "work_mem", "8MB").await;
    let out = ctl(c, &["edit-config", "-p", "work_mem=8MB", "--force"]).await.ok();
    assert_eq!(out, "Not changed\n");
    let editor = c.dir().join("edit.sh");
    write_script(&editor, "#!/bin/sh\nsed -i 's/work_mem: 8MB/work_mem: 16MB/' \"$1\"\n");
    let urls = urls(c);
    let editor_env = [("EDITOR", editor.to_str().expect("utf-8 path"))];
    let ran = run_cli(&["edit-config", "--url", &urls], "y\n", &editor_env).await;
    assert!(ran.stderr.contains("Apply these changes? [y/N]:"), "{}", ran.stderr);
    let out = ran.ok();
    assert!(out.contains("-    work_mem: 8MB\n+    work_mem: 16MB\n"), "{out}");
    wait_setting(c, "work_mem", "16MB").await;
    let error = ctl(c, &["edit-config", "--pg", "work_mem=4MB"]).await.failed();
    assert!(error.contains("pass --force"), "{error}");
    let declined = ctl_with(c, &["edit-config", "--set", "postgresql.parameters.work_mem=4MB"], "n\n").await.failed();
    assert_eq!(declined, "error: Aborted edit-config");
    assert_eq!(show(c, 1, "work_mem").await.as_deref(), Some("16MB"), "a declined edit changes nothing");
}

/// A postmaster-context parameter flags `pending_restart` on every member; `restart --pending` clears it.
async fn check_pending_restart(c: &LocalCluster) {
    let file = c.dir().join("max_connections.yaml");
    std::fs::write(&file, "postgresql:\n  parameters:\n    max_connections: 150\n").expect("write the YAML");
    let out = ctl(c, &["edit-config", "--apply", &file.to_string_lossy(), "--force", "--quiet"]).await.ok();
    assert_eq!(out, "Configuration changed\n");
    eventually(Duration::from_secs(60), "every member has a pending restart", || async {
        list_json(c).await.iter().all(|row| row["Pending restart"] == "*").then_some(())
    })
    .await;
    let pretty = ctl(c, &["list"]).await.ok();
    let header = cells(pretty.lines().nth(1).unwrap_or_default());
    assert!(header.contains(&"Pending restart".to_string()), "{pretty}");
    assert!(header.contains(&"Pending restart reason".to_string()), "{pretty}");
    let json = list_json(c).await;
    assert!(json.iter().all(|row| row["Pending restart reason"] == "max_connections: 100->150"), "{json:?}");
    let out = ctl(c, &["restart", "--pending", "--force"]).await.ok();
    assert_eq!(out.matches("Success: restart on member").count(), 3, "{out}");
    wait_setting(c, "max_connections", "150").await;
    eventually(Duration::from_secs(60), "no member has a pending restart", || async {
        list_json(c).await.iter().all(|row| row.get("Pending restart").is_none()).then_some(())
    })
    .await;
    let out = ctl(c, &["restart", "--pending", "--force"]).await.ok();
    assert!(out.ends_with("No member to restart\n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_members_change_the_raft_membership() {
    if !pg_available("cli_members_change_the_raft_membership") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let pretty = ctl(c, &["list"]).await.ok();
    let lease = format!(" Leader lease: node{primary} (fencing token ");
    assert!(pretty.lines().any(|line| line.starts_with(&lease)), "the footer names the lease holder:\n{pretty}");
    check_members(c, primary).await;
    finish(c, &[]).await;
}

/// `members list`, then removing a Raft voter and adding it back.
async fn check_members(c: &LocalCluster, primary: usize) {
    let members = members_json(c).await;
    assert_eq!(members.len(), 3, "{members:?}");
    // A follower (removing the raft leader is refused), preferably not the PostgreSQL primary.
    let followers: Vec<usize> = members
        .iter()
        .filter(|m| m["Role"] == "Voter")
        .filter_map(|m| m["Id"].as_u64())
        .map(|id| id as usize)
        .collect();
    let voter = followers.iter().copied().find(|node| *node != primary).or(followers.first().copied());
    let voter = voter.expect("a raft follower");
    let name = format!("node{voter}");
    let out = ctl(c, &["members", "remove", &name, "--force"]).await.ok();
    assert!(out.contains("is no longer in the raft membership"), "{out}");
    eventually(Duration::from_secs(30), "two raft members", || async {
        (members_json(c).await.len() == 2).then_some(())
    })
    .await;
    let layout = c.node(voter);
    let (id, raft_addr, api_addr) = (layout.raft_id().to_string(), layout.raft_addr(), layout.api_addr());
    let add = ["members", "add", &name, "--id", &id, "--raft-addr", &raft_addr, "--api-addr", &api_addr];
    let out = ctl(c, &add).await.ok();
    assert!(out.contains("is a voter of the raft membership"), "{out}");
    eventually(Duration::from_secs(60), "three raft voters", || async {
        let members = members_json(c).await;
        (members.len() == 3 && members.iter().all(|m| m["Role"] != "Learner")).then_some(())
    })
    .await;
    healthy(c).await;
}

async fn members_json(c: &LocalCluster) -> Vec<Value> {
    let out = ctl(c, &["members", "list", "-f", "json"]).await.ok();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("members list -f json is not JSON ({e}): {out}"))
}

/// With one node stopped, every read still works through the others; with none answering, one clear error.
async fn check_one_node_stopped(c: &LocalCluster, primary: usize) {
    let stopped = (1..=3).find(|node| *node != primary).expect("a replica");
    c.stop_node(stopped).await.expect("stop a replica");
    let others: Vec<String> = (1..=3).filter(|n| *n != stopped).map(|n| c.api(n)).collect();
    let urls = format!("{},{}", c.api(stopped), others.join(","));
    let out = run_cli(&["list", "--url", &urls], "", &[]).await.ok();
    assert!(out.contains(&format!("| node{primary} ")) && out.contains("Leader"), "{out}");
    for args in [&["history"][..], &["show-config"], &["topology"], &["list", "-f", "json"]] {
        let mut all = args.to_vec();
        all.extend(["--url", &urls]);
        run_cli(&all, "", &[]).await.ok();
    }
    let error = run_cli(&["list", "--url", &c.api(stopped)], "", &[]).await.failed();
    assert_eq!(error, format!("error: no node answered (tried {}: connection refused)", c.api(stopped)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_switchover_and_failover_move_the_primary() {
    if !pg_available("cli_switchover_and_failover_move_the_primary") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, first) = start(spec, dir).await;
    let c = &tc.cluster;
    let error = ctl(c, &["switchover"]).await.failed();
    assert!(error.contains("pass --force"), "{error}");
    let error = ctl(c, &["failover", "--force"]).await.failed();
    assert_eq!(error, "error: Failover could be performed only to a specific candidate");
    let leader = format!("node{first}");
    let error = ctl(c, &["switchover", "--candidate", &leader, "--force"]).await.failed();
    assert_eq!(error, format!("error: Member {leader} is already the leader of cluster demo"));
    let other = format!("node{}", (1..=3).find(|n| *n != first).expect("a replica"));
    let error = ctl(c, &["switchover", "--leader", &other, "--force"]).await.failed();
    assert_eq!(error, format!("error: Member {other} is not the leader of cluster demo"));
    let error = ctl(c, &["failover", "--candidate", "node9", "--force"]).await.failed();
    assert_eq!(error, "error: Member node9 does not exist in cluster demo or is tagged as nofailover");

    let target = (1..=3).find(|n| *n != first).expect("a replica");
    let out = ctl(c, &["switchover", "--candidate", &format!("node{target}"), "--force"]).await.ok_in(c);
    assert!(out.starts_with("Current cluster topology\n"), "{out}");
    assert!(out.contains(&format!("Successfully switched over to \"node{target}\"")), "{out}");
    primary_moved(c, first, target).await;
    let second = healthy(c).await;

    // Interactive: the current leader (default), a candidate, when (default now), and the confirmation.
    let target = (1..=3).find(|n| *n != second).expect("a replica");
    let answers = format!("\nnode{target}\n\ny\n");
    let ran = ctl_with(c, &["switchover"], &answers).await;
    assert!(ran.stderr.contains(&format!("Primary [node{second}]:")), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("Are you sure you want to switchover cluster demo, demoting current leader"),
        "{}",
        ran.stderr
    );
    let out = ran.ok_in(c);
    assert!(out.contains(&format!("Successfully switched over to \"node{target}\"")), "{out}");
    primary_moved(c, second, target).await;
    let third = healthy(c).await;

    let target = (1..=3).find(|n| *n != third).expect("a replica");
    let out = ctl(c, &["failover", "--candidate", &format!("node{target}"), "--force"]).await.ok_in(c);
    assert!(out.contains(&format!("Successfully failed over to \"node{target}\"")), "{out}");
    primary_moved(c, third, target).await;
    let fourth = healthy(c).await;

    let later = (chrono::Local::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string();
    let candidate = format!("node{}", (1..=3).find(|n| *n != fourth).expect("a replica"));
    let out = ctl(c, &["switchover", "--candidate", &candidate, "--scheduled", &later, "--force"]).await.ok();
    assert!(out.contains("Switchover scheduled"), "{out}");
    let pretty = ctl(c, &["list"]).await.ok();
    assert!(pretty.contains(" Switchover scheduled at: ") && pretty.contains(&format!("to: {candidate}")), "{pretty}");
    let deleted = reqwest::Client::new().delete(format!("{}/switchover", c.api(fourth))).send().await;
    assert_eq!(deleted.map(|res| res.status().as_u16()).ok(), Some(200), "DELETE /switchover");
    eventually(Duration::from_secs(30), "three timeline switches in the history", || async {
        let out = ctl(c, &["history", "-f", "json"]).await.ok();
        (serde_json::from_str::<Vec<Value>>(&out).map_or(0, |h| h.len()) >= 3).then_some(())
    })
    .await;
    finish(c, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_pause_stops_automatic_failover_until_resume() {
    if !pg_available("cli_pause_stops_automatic_failover_until_resume") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, old) = start(spec, dir).await;
    let c = &tc.cluster;
    let out = ctl(c, &["pause", "--wait"]).await.ok();
    assert!(out.ends_with("Success: cluster management is paused\n"), "{out}");
    assert!(ctl(c, &["list"]).await.ok().contains(" Maintenance mode: on\n"));
    let error = ctl(c, &["pause"]).await.failed();
    assert_eq!(error, "error: Cluster is already paused");

    // A stop while paused leaves PostgreSQL running as the primary (Patroni's rule), and the fence guard lets go
    // of it rather than stopping it when the unrenewed lease runs out.
    c.stop_node(old).await.expect("stop the primary's raftgres");
    let guard_log = c.dir().join(format!("node{old}/raft/fence-guard.log"));
    eventually(Duration::from_secs(30), "the guard of the stopped primary exits", || async {
        std::fs::read_to_string(&guard_log).unwrap_or_default().contains("nothing is left to guard").then_some(())
    })
    .await;
    let guard_said = std::fs::read_to_string(&guard_log).unwrap_or_default();
    assert!(!guard_said.contains("stopped postmaster"), "the guard stopped a paused primary:\n{guard_said}");
    assert_eq!(in_recovery(c, old).await, Some(false), "PostgreSQL still runs as the primary\n{}", logs(c));
    c.start_node(old).expect("start the primary's raftgres again");
    eventually(Duration::from_secs(60), "the restarted node adopts its primary", || async {
        (c.health_check(old, "/primary").await == Some(200)).then_some(())
    })
    .await;

    c.kill_node(old).await.expect("kill -9 the primary's raftgres");
    c.kill_postmaster(old).expect("kill -9 the primary's postmaster");
    // Three times ttl: the lease of the dead primary runs out, and nobody may take over while paused.
    let until = tokio::time::Instant::now() + 3 * TTL;
    while tokio::time::Instant::now() < until {
        for node in (1..=3).filter(|n| *n != old) {
            assert_ne!(in_recovery(c, node).await, Some(false), "node{node} was promoted while paused\n{}", logs(c));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = ctl(c, &["resume"]).await.ok();
    assert_eq!(out, "Success: cluster management is resumed\n");
    let new = new_primary(c, old, Duration::from_secs(60)).await;
    assert_ne!(new, old);
    let error = ctl(c, &["resume"]).await.failed();
    assert_eq!(error, "error: Cluster is not paused");
    finish(c, &[]).await;
}

fn write_script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).expect("write the script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("make the script executable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_remove_wipes_the_cluster_from_the_store() {
    if !pg_available("cli_remove_wipes_the_cluster_from_the_store") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    check_scheduled_restart(c, primary).await;
    check_remove_refused(c, primary).await;

    // Maintenance mode, then PostgreSQL stopped under the running nodes: the leader gives the key up.
    let out = ctl(c, &["pause", "--wait"]).await.ok();
    assert!(out.ends_with("Success: cluster management is paused\n"), "{out}");
    c.stop_postmasters().await.expect("stop PostgreSQL on every node");
    eventually(Duration::from_secs(60), "no leader and every member stopped", || async {
        let cluster = cluster_json(c).await?;
        let members = cluster["members"].as_array()?;
        let stopped = members.len() == 3 && members.iter().all(|m| m["role"] != "leader" && m["state"] == "stopped");
        stopped.then_some(())
    })
    .await;

    let error = ctl_with(c, &["remove", "demo"], "other\n").await.failed();
    assert_eq!(error, "error: Cluster names specified do not match");
    let error = ctl_with(c, &["remove", "demo"], "demo\nYes\n").await.failed();
    assert_eq!(error, "error: You did not exactly type \"Yes I am aware\"");
    let error = ctl(c, &["remove", "demo"]).await.failed();
    assert!(error.contains("standard input is closed"), "{error}");
    assert!(ctl(c, &["list"]).await.ok().contains(" Maintenance mode: on\n"), "a declined remove changes nothing");

    let ran = ctl_with(c, &["remove", "demo"], "demo\nYes I am aware\n").await;
    assert!(ran.stderr.contains("You are about to remove all information in DCS for demo"), "{}", ran.stderr);
    let out = ran.ok_in(c);
    let n_keys: usize = out
        .rsplit_once("Success: removed cluster demo from the raft store (")
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no success line:\n{out}"));
    // config, initialize, status and the three members at least.
    assert!(n_keys >= 6, "{out}");

    // The `config` key (with `pause`) went with the rest: the nodes start PostgreSQL again and elect a leader,
    // which writes `config` back from its bootstrap dynamic configuration.
    healthy(c).await;
    let config = eventually(Duration::from_secs(60), "the leader wrote the dynamic configuration again", || async {
        let ran = ctl(c, &["show-config"]).await;
        (ran.code == Some(0)).then_some(ran.stdout)
    })
    .await;
    assert!(!config.contains("pause"), "{config}");
    eventually(Duration::from_secs(30), "the new leader wrote the initialize key again", || async {
        (1..=c.n_nodes())
            .any(|node| {
                let log = std::fs::read_to_string(c.dir().join(format!("node{node}/raftgres.log"))).unwrap_or_default();
                log.lines().map(strip_ansi).any(|line| line.contains("wrote the missing initialize key"))
            })
            .then_some(())
    })
    .await;
    assert!(!ctl(c, &["list"]).await.ok().contains("Maintenance mode"), "the removal ended maintenance mode");
    finish(c, &[]).await;
}

/// `GET /cluster` from the first node that answers.
async fn cluster_json(c: &LocalCluster) -> Option<Value> {
    for node in 1..=c.n_nodes() {
        let Ok(res) = reqwest::get(format!("{}/cluster", c.api(node))).await else { continue };
        if let Ok(json) = res.json::<Value>().await {
            return Some(json);
        }
    }
    None
}

/// A scheduled restart shows in `GET /cluster` and in `list`'s `Scheduled restart` column until it is deleted.
async fn check_scheduled_restart(c: &LocalCluster, primary: usize) {
    let replica = (1..=3).find(|node| *node != primary).expect("a replica");
    let name = format!("node{replica}");
    let later = (chrono::Local::now() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string();
    let out = ctl(c, &["restart", &name, "--scheduled", &later, "--force"]).await.ok();
    assert!(out.contains(&format!("Success: restart scheduled on member {name}")), "{out}");
    let schedule = eventually(Duration::from_secs(30), "the scheduled restart in GET /cluster", || async {
        let cluster = cluster_json(c).await?;
        let member = cluster["members"].as_array()?.iter().find(|m| m["name"] == name.as_str())?.clone();
        member["scheduled_restart"]["schedule"].as_str().map(String::from)
    })
    .await;
    let json = list_json(c).await;
    assert_eq!(json[replica - 1]["Scheduled restart"], schedule.as_str(), "{json:?}");
    assert!(json.iter().filter(|row| row.get("Scheduled restart").is_some()).count() == 1, "{json:?}");
    let pretty = ctl(c, &["list"]).await.ok();
    assert!(cells(pretty.lines().nth(1).unwrap_or_default()).contains(&"Scheduled restart".to_string()), "{pretty}");
    let deleted = reqwest::Client::new().delete(format!("{}/restart", c.api(replica))).send().await;
    assert_eq!(deleted.map(|res| res.status().as_u16()).ok(), Some(200), "DELETE /restart");
    eventually(Duration::from_secs(30), "no scheduled restart in list", || async {
        list_json(c).await.iter().all(|row| row.get("Scheduled restart").is_none()).then_some(())
    })
    .await;
}

/// With a running leader, `remove` and `DELETE /cluster` refuse and nothing is removed.
async fn check_remove_refused(c: &LocalCluster, primary: usize) {
    let running_leader = format!(
        "This cluster has a running leader (node{primary}); pause the cluster (raftgres pause) and stop PostgreSQL \
         on it first"
    );
    let error = ctl(c, &["remove", "demo", "--force"]).await.failed();
    assert_eq!(error, format!("error: {running_leader}"));
    let error = ctl_with(c, &["remove", "demo"], "demo\nYes I am aware\n").await.failed();
    assert_eq!(error, format!("error: {running_leader}"));
    let error = ctl(c, &["remove", "other", "--force"]).await.failed();
    assert_eq!(error, "error: the nodes serve cluster \"demo\", not \"other\"");
    let http = reqwest::Client::new();
    let url = format!("{}/cluster", c.api(primary));
    let res = http.delete(&url).json(&serde_json::json!({"cluster": "demo"})).send().await.expect("DELETE /cluster");
    assert_eq!(res.status().as_u16(), 409);
    let body: Value = res.json().await.expect("a JSON error");
    assert_eq!(body, serde_json::json!({"error": running_leader}));
    let res = http.delete(&url).json(&serde_json::json!({"cluster": "other"})).send().await.expect("DELETE /cluster");
    assert_eq!(res.status().as_u16(), 400);
    let res = http.delete(&url).send().await.expect("DELETE /cluster");
    assert!(matches!(res.status().as_u16(), 400 | 411), "a body naming the cluster is required");
    assert_eq!(list_json(c).await.len(), 3, "nothing was removed");
    assert_eq!(healthy(c).await, primary);
}
