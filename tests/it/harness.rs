//! Shared test harness: a local cluster of `raftgres run` processes on free ports, SQL helpers
//! and `eventually`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use raftgres::demo::cluster::ClusterSpec;
use raftgres::demo::cluster::LocalCluster;
use tokio::time::Instant;

/// Installs a tracing subscriber once.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    });
}

/// Polls `probe` until it returns `Some` or `deadline` passes; panics naming `what`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// PostgreSQL binaries, or `None` with a printed reason.
pub fn pg_available(test: &str) -> bool {
    match raftgres::demo::cluster::find_pg_bin_dir() {
        Ok(_) => true,
        Err(e) => {
            println!("skipping {test}: {e:#}");
            false
        }
    }
}

/// `n` consecutive free loopback ports, below the ephemeral range (see `raftgres::demo::ports`).
pub fn free_port_block(n: u16) -> u16 {
    raftgres::demo::ports::free_port_block(n).expect("free loopback ports below the ephemeral range")
}

/// The raftgres binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_raftgres"))
}

/// A running test cluster and its temp dir.
pub struct TestCluster {
    pub cluster: LocalCluster,
    _dir: tempfile::TempDir,
}

impl Drop for TestCluster {
    /// A failing test keeps its nodes' logs and prints their tails (see [`KeepLogsOnPanic`]).
    fn drop(&mut self) {
        if std::thread::panicking() {
            keep_logs(&self.cluster);
        }
    }
}

/// For tests that hold a [`LocalCluster`] without a [`TestCluster`]: declared after the cluster, it keeps the
/// nodes' logs when the test panics, before the cluster and its directory go.
pub struct KeepLogsOnPanic<'a>(pub &'a LocalCluster);

impl Drop for KeepLogsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            keep_logs(self.0);
        }
    }
}

/// Copies every node's log to `target/tmp/it-failures/<cluster dir>/nodeN.log` (the temp dir goes with the
/// test) and prints the last lines of each without DEBUG, so a failure in CI says what the nodes did.
fn keep_logs(cluster: &LocalCluster) {
    let name = cluster.dir().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("it-failures").join(name);
    let _ = std::fs::create_dir_all(&keep);
    for node in 1..=cluster.n_nodes() {
        let dir = cluster.dir().join(format!("node{node}"));
        let _ = std::fs::copy(dir.join("raftgres.log"), keep.join(format!("node{node}.log")));
        // The fence guard's own messages (`postgres::process::spawn_guard`).
        let _ = std::fs::copy(dir.join("raft/fence-guard.log"), keep.join(format!("node{node}-guard.log")));
    }
    println!("the nodes' logs are kept in {}\n{}", keep.display(), log_tails(cluster, 80));
}

/// Spec for a 3-node cluster on free ports in a fresh temp dir under /tmp (short socket paths).
pub fn spec() -> (ClusterSpec, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("rgit").tempdir_in("/tmp").expect("create temp dir");
    let mut spec = ClusterSpec::new(dir.path(), binary());
    spec.pg_port = free_port_block(3);
    spec.api_port = free_port_block(3);
    spec.raft_port = free_port_block(3);
    (spec, dir)
}

/// Generates and starts `spec`, waits until healthy; returns the cluster and primary index.
pub async fn start(spec: ClusterSpec, dir: tempfile::TempDir) -> (TestCluster, usize) {
    init_tracing();
    let cluster = LocalCluster::generate(spec).expect("generate the cluster");
    cluster.start_all().expect("start the nodes");
    let primary = cluster
        .wait_healthy(Instant::now() + Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("cluster did not become healthy: {e:#}\n{}", logs(&cluster)));
    (TestCluster { cluster, _dir: dir }, primary)
}

/// The tail of every node's log, for failure messages.
pub fn logs(cluster: &LocalCluster) -> String {
    log_tails(cluster, 40)
}

/// The last `lines` lines without DEBUG of every node's log.
fn log_tails(cluster: &LocalCluster, lines: usize) -> String {
    let mut out = String::new();
    for node in 1..=cluster.n_nodes() {
        let path = cluster.dir().join(format!("node{node}")).join("raftgres.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let kept: Vec<String> = text.lines().filter(|l| !l.contains("DEBUG")).map(strip_ansi).collect();
        let tail = kept[kept.len().saturating_sub(lines)..].join("\n");
        out.push_str(&format!("--- node{node} ---\n{tail}\n"));
    }
    out
}

/// Connects to node `node_idx`'s PostgreSQL as the superuser.
pub async fn connect(cluster: &LocalCluster, node_idx: usize) -> Option<tokio_postgres::Client> {
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres password={} dbname=postgres connect_timeout=2",
        cluster.pg_port(node_idx),
        cluster.password()
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await.ok()?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Some(client)
}

/// `SELECT pg_is_in_recovery()` on node `node_idx`, `None` when it does not answer.
pub async fn in_recovery(cluster: &LocalCluster, node_idx: usize) -> Option<bool> {
    let client = connect(cluster, node_idx).await?;
    let row = tokio::time::timeout(Duration::from_secs(2), client.query_one("SELECT pg_is_in_recovery()", &[]))
        .await
        .ok()?
        .ok()?;
    Some(row.get(0))
}

/// Runs one statement on node `node_idx`; true when it succeeded.
pub async fn execute(cluster: &LocalCluster, node_idx: usize, sql: &str) -> bool {
    let Some(client) = connect(cluster, node_idx).await else { return false };
    matches!(tokio::time::timeout(Duration::from_secs(5), client.batch_execute(sql)).await, Ok(Ok(())))
}

/// `SELECT count(*)` of a query on node `node_idx`.
pub async fn count(cluster: &LocalCluster, node_idx: usize, sql: &str) -> Option<i64> {
    let client = connect(cluster, node_idx).await?;
    let row = tokio::time::timeout(Duration::from_secs(5), client.query_one(sql, &[])).await.ok()?.ok()?;
    Some(row.get(0))
}

/// Waits until exactly one running node is primary and different from `not`; returns it.
pub async fn new_primary(cluster: &LocalCluster, not: usize, deadline: Duration) -> usize {
    eventually(deadline, &format!("a node other than node{not} is primary"), || async {
        let mut primaries = Vec::new();
        for node in 1..=cluster.n_nodes() {
            if node != not && cluster.is_running(node) && in_recovery(cluster, node).await == Some(false) {
                primaries.push(node);
            }
        }
        (primaries.len() == 1).then(|| primaries[0])
    })
    .await
}

/// The Raft leader's member name as node `node_idx` knows it (`GET /raft`), `None` when unknown.
pub async fn raft_leader(cluster: &LocalCluster, node_idx: usize) -> Option<String> {
    let body: serde_json::Value =
        reqwest::get(format!("{}/raft", cluster.api(node_idx))).await.ok()?.json().await.ok()?;
    body["leader"]["name"].as_str().map(str::to_string)
}

/// Waits until every running node follows node `node_idx` as Raft leader (leadership follows the
/// leader key, so after a start, failover or switchover it moves to the primary's node).
pub async fn wait_raft_leader(cluster: &LocalCluster, node_idx: usize) {
    let name = cluster.node(node_idx).name.clone();
    eventually(Duration::from_secs(30), &format!("every running node follows {name} as Raft leader"), || async {
        for node in (1..=cluster.n_nodes()).filter(|n| cluster.is_running(*n)) {
            if raft_leader(cluster, node).await.as_deref() != Some(name.as_str()) {
                return None;
            }
        }
        Some(())
    })
    .await
}

/// Lines of context printed before each unexpected ERROR line.
const CONTEXT_LINES: usize = 30;

/// The ERROR lines raftgres logged on any node that match none of `allowed` (substrings), as
/// `nodeN: line` followed by the lines before it. ERROR means a human must act: a test that ends with one it
/// did not expect has found something (STYLE.md rule 21).
pub fn unexpected_errors(cluster: &LocalCluster, allowed: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for node in 1..=cluster.n_nodes() {
        for path in log_files(cluster, node) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<String> = text.lines().filter(|l| !l.contains("DEBUG")).map(strip_ansi).collect();
            for (at, line) in lines.iter().enumerate() {
                if is_error_line(line) && !allowed.iter().any(|allowed| line.contains(allowed)) {
                    // What led to it: raftgres' own lines before it (PostgreSQL's chatter left out), so a failure
                    // in CI explains itself.
                    let own: Vec<&String> = lines[..at].iter().filter(|l| !l.contains(" pg{pid=")).collect();
                    let before: Vec<&str> =
                        own[own.len().saturating_sub(CONTEXT_LINES)..].iter().map(|l| l.as_str()).collect();
                    let before = before.join("\n    ");
                    found.push(format!("node{node}: {line}\n  after:\n    {before}"));
                }
            }
        }
    }
    found
}

/// The files node `node` logs to: its stderr as the harness keeps it (`nodeN/raftgres.log`) and, when
/// its configuration sets `log.dir`, `patroni.log` and its rotated files there.
pub fn log_files(cluster: &LocalCluster, node: usize) -> Vec<PathBuf> {
    let node_dir = cluster.dir().join(format!("node{node}"));
    let mut res = vec![node_dir.join("raftgres.log")];
    let config = std::fs::read_to_string(node_dir.join("raftgres.yml")).unwrap_or_default();
    let config: serde_json::Value = serde_yaml_ng::from_str(&config).unwrap_or_default();
    if let Some(dir) = config["log"]["dir"].as_str() {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        let mut files: Vec<PathBuf> = entries
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name().is_some_and(|name| name.to_string_lossy().starts_with(raftgres::telemetry::FILE_NAME))
            })
            .collect();
        files.sort();
        res.extend(files);
    }
    res
}

/// A plain line with ERROR as its level (tracing's line: time, then level), or a JSON line with
/// `levelname` ERROR.
fn is_error_line(line: &str) -> bool {
    if line.starts_with('{') {
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        return parsed["levelname"] == "ERROR";
    }
    line.split_whitespace().nth(1) == Some("ERROR")
}

/// Fails the test when a node logged an ERROR not on `allowed`, then stops the cluster. The logs are
/// read before the stop: stopping the replicas first leaves the primary without a Raft majority, and
/// its fence then rightly logs an ERROR that is the stop's, not the test's.
pub async fn finish(cluster: &LocalCluster, allowed: &[&str]) {
    let errors = unexpected_errors(cluster, allowed);
    cluster.stop_all().await.expect("stop the cluster");
    assert!(errors.is_empty(), "nodes logged ERROR lines this test does not expect:\n{}", errors.join("\n"));
}

/// `line` without ANSI colour sequences (`ESC [ … m`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs `program` from PostgreSQL's bin directory as the PostgreSQL user (`postgres` when the tests run as
/// root), with `env`; its output on failure.
pub async fn as_postgres(program: &std::path::Path, args: &[String], env: &[(&str, String)]) -> Result<(), String> {
    let mut command = if nix::unistd::geteuid().is_root() {
        let mut command = tokio::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        tokio::process::Command::new(program)
    };
    command.args(args).envs(env.iter().map(|(k, v)| (k, v))).current_dir("/");
    let out = command.output().await.map_err(|e| format!("run {}: {e}", program.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{} {args:?}: {}\n{}", program.display(), out.status, String::from_utf8_lossy(&out.stderr)))
}

/// A directory every user may write to (scripts run as the PostgreSQL user); created if missing.
pub fn shared_dir(path: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).expect("create the shared directory");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).expect("open the shared directory");
    path.to_path_buf()
}

/// Writes an executable shell script (mode 0755) that the PostgreSQL user can run.
pub fn write_script(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("write the script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("make the script executable");
}

/// A plain base backup of node `node`'s PostgreSQL into `dest` (pg_basebackup as the PostgreSQL user, through
/// the replication user), as a backup tool would keep it; panics with pg_basebackup's error.
pub async fn base_backup(cluster: &LocalCluster, node: usize, dest: &std::path::Path) {
    let bin = raftgres::demo::cluster::find_pg_bin_dir().expect("PostgreSQL's bin directory");
    let mut args =
        ["-h", "127.0.0.1", "-U", "replicator", "-X", "stream", "-c", "fast", "-D"].map(str::to_owned).to_vec();
    args.extend([dest.display().to_string(), "-p".to_owned(), cluster.pg_port(node).to_string()]);
    let env = [("PGPASSFILE", cluster.dir().join(format!("node{node}/pgpass")).display().to_string())];
    if let Err(e) = as_postgres(&bin.join("pg_basebackup"), &args, &env).await {
        panic!("pg_basebackup: {e}");
    }
}

/// The body of a replica method that copies the base backup in `backup` into its `--datadir`.
pub fn copy_backup_method(backup: &std::path::Path) -> String {
    format!(
        "for a in \"$@\"; do case $a in --datadir=*) d=${{a#--datadir=}};; esac; done\nexec cp -a {}/. \"$d\"/\n",
        backup.display()
    )
}

/// `SHOW <setting>` on node `node_idx`, as the superuser; `None` when it does not answer.
pub async fn show(cluster: &LocalCluster, node_idx: usize, setting: &str) -> Option<String> {
    let client = connect(cluster, node_idx).await?;
    let row = client.query_one(&format!("SHOW {setting}"), &[]).await.ok()?;
    row.try_get(0).ok()
}

/// Routes every raft link of a 3-node `spec` through a fault proxy (one per direction) and returns the mesh.
pub async fn proxy_raft_links(spec: &mut ClusterSpec) -> raft::faultproxy::ProxyMesh {
    let targets: std::collections::BTreeMap<u64, String> =
        (1..=3u64).map(|id| (id, format!("127.0.0.1:{}", spec.raft_port + id as u16 - 1))).collect();
    let mesh = raft::faultproxy::ProxyMesh::start(&targets).await.expect("start the proxy mesh");
    for from in 1..=3u64 {
        for to in (1..=3u64).filter(|to| *to != from) {
            spec.raft_addr_override.insert((from, to), mesh.addr(from, to));
        }
    }
    mesh
}

/// What one run of the raftgres binary (a CLI command, a drill) printed.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Standard output of a run that must have succeeded.
    #[track_caller]
    pub fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "the command failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self.stdout
    }

    /// Like [`Ran::ok`], with the nodes' logs when it failed (for commands that change the cluster).
    #[track_caller]
    pub fn ok_in(self, c: &LocalCluster) -> String {
        if self.code != Some(0) {
            panic!("the command failed\nstdout:\n{}\nstderr:\n{}\n{}", self.stdout, self.stderr, logs(c));
        }
        self.stdout
    }

    /// Standard error of a run that must have failed with one `error: …` line.
    #[track_caller]
    pub fn failed(self) -> String {
        assert_eq!(self.code, Some(1), "the command did not fail\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        let last = self.stderr.lines().last().unwrap_or_default().to_string();
        assert!(last.starts_with("error: "), "the last stderr line is not an error line:\n{}", self.stderr);
        last
    }

    /// The line starting with `prefix` (a `drill:` line); panics with the output when there is none.
    #[track_caller]
    pub fn line(&self, prefix: &str) -> String {
        match self.stdout.lines().find(|line| line.starts_with(prefix)) {
            Some(line) => line.to_string(),
            None => panic!("no line starting with {prefix:?}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr),
        }
    }
}

impl From<std::process::Output> for Ran {
    fn from(output: std::process::Output) -> Ran {
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Sends SIGCONT to a process this test froze (SIGSTOP) when dropped, so a failing assertion leaves no stopped
/// process behind and the cluster can stop.
pub struct Resume(pub u32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = raftgres::demo::procs::send(self.0, nix::sys::signal::Signal::SIGCONT);
    }
}
