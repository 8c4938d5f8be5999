//! Integration tests of `postgres::Supervisor` against real PostgreSQL 15 on ephemeral ports in /tmp.
//!
//! Covers: initdb + start as primary + probe + users; stop and start; adopting a running postmaster instead of
//! starting a second one, and the exit watch; stale pidfiles; cloning a replica with a slot and streaming;
//! promotion to timeline 2 and rejoining the old primary with pg_rewind. Skips with a printed reason when the
//! PostgreSQL 15 binaries (or, as root, the `postgres` user) are missing. No timing assertions: every wait is
//! an `eventually` poll with a generous deadline.

// A test binary: a failed setup step should panic with its error. clippy's `allow-unwrap-in-tests` covers
// `#[test]` functions but not the helpers of an integration-test crate.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use raftgres::postgres::controldata::ClusterState;
use raftgres::postgres::slots::{slot_name, LeaderSlots, SlotRole};
use raftgres::postgres::supervisor::{
    error_chain, ConnTarget, Credentials, DataDirState, PgConfig, PgError, ReplicaMethod, RewindOutcome, SlotWork,
    StartRole, StopMode, Supervisor,
};
use raftgres::postgres::types::TimelineId;
use raftgres::status::{PgState, Role, WalPosition};
use tokio::time::Instant;

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const SUPERUSER_PASSWORD: &str = "su-secret";

/// Why these tests cannot run here, if they cannot.
fn skip_reason() -> Option<String> {
    if !Path::new(BIN_DIR).join("postgres").is_file() {
        return Some(format!("{BIN_DIR}/postgres is missing (install postgresql-15)"));
    }
    if nix::unistd::geteuid().is_root() && nix::unistd::User::from_name("postgres").ok().flatten().is_none() {
        return Some("running as root but there is no postgres user to run PostgreSQL as".to_owned());
    }
    None
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A loopback port below the ephemeral range, never handed out before in this process (see `demo::ports`).
fn free_port() -> u16 {
    raftgres::demo::ports::free_port_block(1).expect("a free loopback port below the ephemeral range")
}

/// A short temp directory for a test's nodes; SIGQUITs every postmaster still running in it on drop,
/// because PostgreSQL deliberately outlives the process that started it.
struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    fn new() -> TestDir {
        let dir = tempfile::Builder::new().prefix("rg").tempdir_in("/tmp").unwrap();
        // The PostgreSQL user must be able to enter it (tempfile makes it 0700).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        TestDir { dir }
    }

    fn config(&self, name: &str, port: u16) -> PgConfig {
        node_config(self.dir.path(), name, port)
    }
}

/// The configuration of node `name` under `root`.
fn node_config(root: &Path, name: &str, port: u16) -> PgConfig {
    let node_dir = root.join(name);
    PgConfig {
        name: name.to_owned(),
        bin_dir: BIN_DIR.into(),
        data_dir: node_dir.join("data"),
        run_as: None,
        listen_addresses: "127.0.0.1".into(),
        port,
        connect_host: "127.0.0.1".into(),
        superuser: Credentials { username: "postgres".into(), password: Some(SUPERUSER_PASSWORD.into()) },
        replication: Credentials { username: "replicator".into(), password: Some("repl:secret".into()) },
        rewind: Some(Credentials { username: "rewinder".into(), password: Some("rewind-secret".into()) }),
        parameters: [("shared_buffers", "16MB"), ("max_connections", "30"), ("fsync", "off")]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        pg_hba: vec![
            "host all all 127.0.0.1/32 scram-sha-256".into(),
            "host replication replicator 127.0.0.1/32 scram-sha-256".into(),
        ],
        initdb_options: vec!["--encoding=UTF8".into(), "--locale=C".into(), "--no-sync".into()],
        basebackup_options: Vec::new(),
        replica_methods: vec![ReplicaMethod::Basebackup],
        custom_bootstrap: None,
        nostream: false,
        pgpass: node_dir.join("pgpass"),
        scope: "test-cluster".into(),
        start_timeout: Duration::from_secs(90),
        stop_timeout: Duration::from_secs(60),
        recovery_params: Default::default(),
        standby_leader_recovery: None,
        method_sections: Default::default(),
        hooks: Default::default(),
    }
}

impl Drop for TestDir {
    // Drop cannot await, and this only runs at the end of a test.
    #[allow(clippy::disallowed_methods)]
    fn drop(&mut self) {
        let Ok(nodes) = std::fs::read_dir(self.dir.path()) else { return };
        for node in nodes.flatten() {
            let pidfile = node.path().join("data/postmaster.pid");
            let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|text| text.lines().next()?.parse().ok())
            else {
                continue;
            };
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
            for _ in 0..100 {
                if nix::sys::signal::kill(pid, None).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Polls `probe` until it returns `Ok`, panicking with the last error after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => panic!("timed out waiting for {what}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

const PATIENCE: Duration = Duration::from_secs(60);

fn show(e: PgError) -> String {
    error_chain(&e)
}

/// Runs `query` as the superuser on the PostgreSQL at `port` and returns the first column of each row as text.
async fn sql(port: u16, query: &str) -> Result<Vec<String>, String> {
    let mut config = tokio_postgres::Config::new();
    config.host("127.0.0.1").port(port).user("postgres").password(SUPERUSER_PASSWORD).dbname("postgres");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| error_chain(&e))?;
    tokio::spawn(connection);
    let messages = client.simple_query(query).await.map_err(|e| error_chain(&e))?;
    Ok(messages
        .into_iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("").to_owned()),
            _ => None,
        })
        .collect())
}

/// The leader's slot maintenance with member slots only (no permanent or ignored slots, not paused).
async fn ensure_member_slots(sup: &Supervisor, members: BTreeSet<String>) -> Result<(), PgError> {
    let own = slot_name(&sup.config().name);
    let wanted = LeaderSlots { own: &own, members: &members, permanent: &[], ignore: &[], paused: false };
    let targets = std::collections::BTreeMap::new();
    let work = SlotWork { wanted, role: SlotRole::Leader, targets: &targets, clean_xmin: false, leader: None };
    sup.maintain_slots(&work).await.map(|_| ())
}

async fn bootstrap_primary(dir: &TestDir, name: &str) -> Supervisor {
    bootstrap_primary_with(dir.config(name, free_port())).await
}

/// [`bootstrap_primary`] with a configuration of its own.
async fn bootstrap_primary_with(cfg: PgConfig) -> Supervisor {
    let sup = Supervisor::new(cfg).unwrap();
    assert_eq!(sup.data_dir_state().await, DataDirState::Missing);
    sup.initdb().await.map_err(show).unwrap();
    sup.write_pgpass().unwrap();
    sup.start(StartRole::Primary).await.map_err(show).unwrap();
    sup.create_users().await.map_err(show).unwrap();
    sup
}

fn target(sup: &Supervisor) -> ConnTarget {
    ConnTarget { host: sup.config().connect_host.clone(), port: sup.config().port }
}

fn postmaster_pid_on_disk(sup: &Supervisor) -> Option<u32> {
    let text = std::fs::read_to_string(sup.config().data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

const CHILD_ROOT_ENV: &str = "RG_TEST_CHILD_ROOT";
const CHILD_PORT_ENV: &str = "RG_TEST_CHILD_PORT";

/// Only does something when re-executed by `start_in_child_and_kill_it`: then it plays a raftgres process
/// that starts PostgreSQL as a primary, says `READY <pid>` on stdout and waits to be killed.
#[tokio::test(flavor = "multi_thread")]
async fn child_raftgres_process() {
    let (Ok(root), Ok(port)) = (std::env::var(CHILD_ROOT_ENV), std::env::var(CHILD_PORT_ENV)) else { return };
    let sup = Supervisor::new(node_config(Path::new(&root), "n1", port.parse().unwrap())).unwrap();
    sup.start(StartRole::Primary).await.map_err(show).unwrap();
    println!("READY {}", sup.postmaster_pid().unwrap());
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// Starts PostgreSQL from a child process running this test binary, SIGKILLs that process once PostgreSQL
/// is ready, and returns the postmaster pid: the `kill -9 raftgres` scenario.
fn start_in_child_and_kill_it(dir: &TestDir, port: u16) -> u32 {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_raftgres_process", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROOT_ENV, dir.dir.path())
        .env(CHILD_PORT_ENV, port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // The harness prints "test child_raftgres_process ... " before the test's own output on the same line.
    std::thread::spawn(move || {
        let ready = stdout.lines().map_while(Result::ok).find_map(|line| line.rsplit_once("READY ")?.1.parse().ok());
        let _ = ready_tx.send(ready);
    });
    let ready = ready_rx.recv_timeout(Duration::from_secs(120)).ok().flatten();
    child.kill().unwrap();
    child.wait().unwrap();
    ready.expect("the child process started PostgreSQL")
}

#[tokio::test(flavor = "multi_thread")]
async fn primary_lifecycle_stop_start_and_adoption() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    init_tracing();
    let dir = TestDir::new();
    let sup = bootstrap_primary(&dir, "n1").await;
    let cfg = sup.config().clone();

    // (1) The data directory belongs to the PostgreSQL user with mode 0700, and the probe sees a primary.
    let meta = std::fs::metadata(&cfg.data_dir).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    let expected_uid = sup.run_as().map_or_else(|| nix::unistd::geteuid().as_raw(), |owner| owner.uid);
    assert_eq!(meta.uid(), expected_uid);
    let DataDirState::Initialized { controldata, .. } = sup.data_dir_state().await else { panic!("not initialized") };
    let probe = sup.probe().await.map_err(show).unwrap();
    assert!(!probe.in_recovery);
    assert_eq!(probe.timeline, Some(TimelineId(1)));
    assert_eq!(probe.system_identifier, controldata.system_id);
    assert_eq!(probe.server_version.major(), 15);
    assert!(matches!(probe.wal, WalPosition::Primary { .. }));
    assert_eq!(probe.replication_state, None);
    let status = probe.to_status();
    assert_eq!((status.state, status.role), (PgState::Running, Role::Primary));
    let roles = sql(cfg.port, "SELECT rolname FROM pg_roles WHERE rolreplication AND NOT rolsuper").await.unwrap();
    assert_eq!(roles, ["replicator"]);
    let grant = "SELECT has_function_privilege('rewinder', 'pg_read_binary_file(text, bigint, bigint, boolean)', \
                 'execute')";
    assert_eq!(sql(cfg.port, grant).await.unwrap(), ["t"]);
    // create_users is idempotent.
    sup.create_users().await.map_err(show).unwrap();

    // The fence may stop a server the supervisor started as a primary before the HA loop observed it.
    assert!(sup.may_accept_writes(), "started as a primary: it may accept writes");

    // (3) Fast stop, a second stop is a no-op, then start again.
    let mut exits = sup.exit_watch();
    sup.stop(StopMode::Fast).await.map_err(show).unwrap();
    assert!(!sup.is_running());
    assert!(!sup.may_accept_writes(), "stopped");
    let exit = exits.borrow_and_update().clone().expect("the stop is published");
    assert!(exit.expected);
    let DataDirState::Initialized { controldata, .. } = sup.data_dir_state().await else { panic!("not initialized") };
    assert_eq!(controldata.state, ClusterState::ShutDown);
    sup.stop(StopMode::Fast).await.map_err(show).unwrap();
    sup.start(StartRole::Primary).await.map_err(show).unwrap();
    assert!(sup.probe().await.is_ok());
    sup.stop(StopMode::Fast).await.map_err(show).unwrap();

    // (4) kill -9 of the raftgres process that started PostgreSQL leaves PostgreSQL running, still logging to
    // the broken stderr pipe; the original supervisor (raftgres restarted) adopts it.
    let pid = start_in_child_and_kill_it(&dir, cfg.port);
    assert_eq!(sup.adopt().await.map_err(show).unwrap(), Some(pid));
    assert!(sup.is_running());
    assert!(!sup.may_accept_writes(), "an adopted server counts only through the HA loop's observation");
    let too_long = "SELECT pg_sleep(0.1) FROM generate_series(1, 3)";
    sql(cfg.port, &format!("SET log_min_duration_statement = 0; {too_long}")).await.unwrap();
    assert!(!sup.probe().await.map_err(show).unwrap().in_recovery);
    assert_eq!(postmaster_pid_on_disk(&sup), Some(pid));
    // Its own process group, so that a signal to raftgres's group (Ctrl-C) does not reach it.
    let postmaster = nix::unistd::Pid::from_raw(pid as i32);
    assert_eq!(nix::unistd::getpgid(Some(postmaster)).unwrap(), postmaster);

    // Another supervisor adopts the running postmaster too and never starts a second one.
    let adopter = Supervisor::new(cfg.clone()).unwrap();
    assert_eq!(adopter.adopt().await.map_err(show).unwrap(), Some(pid));
    assert!(adopter.is_running());
    match adopter.start(StartRole::Primary).await {
        Err(PgError::AlreadyRunning { pid: running }) => assert_eq!(running, pid),
        other => panic!("start on an adopted postmaster must refuse, got {other:?}"),
    }
    let unadopted = Supervisor::new(cfg.clone()).unwrap();
    assert!(matches!(unadopted.start(StartRole::Primary).await, Err(PgError::AlreadyRunning { .. })));
    assert_eq!(postmaster_pid_on_disk(&sup), Some(pid));
    assert!(!adopter.probe().await.map_err(show).unwrap().in_recovery);
    adopter.reload().await.map_err(show).unwrap();

    // The adopter stops it; the original supervisor (polling, as it is not the parent) sees an exit it did not
    // ask for.
    adopter.stop(StopMode::Fast).await.map_err(show).unwrap();
    let exit = eventually("the original supervisor to see the exit", PATIENCE, || {
        let exit = exits.borrow().clone().filter(|exit| exit.pid == pid);
        async move { exit.ok_or_else(|| "no exit yet".to_owned()) }
    })
    .await;
    assert!(!exit.expected);
    assert!(!sup.is_running());

    // A stale pidfile (its pid is now this test process) is removed, and PostgreSQL starts.
    let pidfile = cfg.data_dir.join("postmaster.pid");
    let stale = format!(
        "{}\n{}\n1700000000\n{}\n/tmp\n127.0.0.1\n  1 2\nready   \n",
        std::process::id(),
        cfg.data_dir.display(),
        cfg.port
    );
    std::fs::write(&pidfile, stale).unwrap();
    let fresh = Supervisor::new(cfg.clone()).unwrap();
    assert_eq!(fresh.adopt().await.map_err(show).unwrap(), None);
    assert!(!pidfile.exists());
    fresh.start(StartRole::Primary).await.map_err(show).unwrap();
    let pid = fresh.postmaster_pid().unwrap();

    // Detaching (raftgres shutting down) leaves PostgreSQL running, and it keeps working without its log reader.
    tokio::time::timeout(PATIENCE, fresh.detach()).await.expect("detach finishes");
    sql(cfg.port, "SET log_min_duration_statement = 0; SELECT pg_sleep(0.1)").await.unwrap();
    let last = Supervisor::new(cfg.clone()).unwrap();
    assert_eq!(last.adopt().await.map_err(show).unwrap(), Some(pid));
    last.stop(StopMode::Immediate).await.map_err(show).unwrap();
    assert!(!last.is_running());

    // A postmaster that exits during start-up is reported with its last log lines.
    let mut broken = cfg.clone();
    broken.parameters.insert("shared_buffers".into(), "lots".into());
    let broken = Supervisor::new(broken).unwrap();
    match broken.start(StartRole::Primary).await {
        Err(PgError::StartFailed { log_tail, .. }) => assert!(log_tail.contains("shared_buffers"), "{log_tail}"),
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert!(!broken.is_running());

    // As root, a data directory owned by someone else is refused with the chown to run.
    if sup.run_as().is_some() {
        let foreign = Supervisor::new(dir.config("n9", free_port())).unwrap();
        std::fs::create_dir_all(foreign.config().data_dir.join("global")).unwrap();
        let DataDirState::Invalid(reason) = foreign.data_dir_state().await else { panic!("root-owned dir accepted") };
        assert!(reason.contains("chown -R postgres:"), "{reason}");
        assert!(matches!(foreign.start(StartRole::Primary).await, Err(PgError::BadDataDir { .. })));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_clone_promote_and_rewind() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    init_tracing();
    let dir = TestDir::new();
    let n1 = bootstrap_primary(&dir, "n1").await;
    let (port1, port2) = (n1.config().port, free_port());
    let n2 = Supervisor::new(dir.config("n2", port2)).unwrap();

    // (1b) Before cloning, the HA loop asks whether the source answers: n1 does; nothing listens on n2's port yet,
    // and pg_isready's own words say so.
    n2.source_answers(&target(&n1)).await.unwrap();
    let silent = ConnTarget { host: "127.0.0.1".into(), port: port2 };
    let why = n2.source_answers(&silent).await.expect_err("nothing listens on n2's port yet");
    assert!(why.contains("no response"), "{why}");

    // (2) Clone n2 from n1, follow it through a slot, and see rows arrive.
    ensure_member_slots(&n1, BTreeSet::from([slot_name("n2")])).await.map_err(show).unwrap();
    n2.basebackup(&target(&n1)).await.map_err(show).unwrap();
    // A base backup that never started carries n1's pg_control (`in production`): it is marked as such, so
    // the HA loop does not take it for a crashed old primary.
    let state = n2.data_dir_state().await;
    assert!(
        matches!(state, DataDirState::Initialized { unfinished_backup: true, ref controldata } if controldata.state == ClusterState::InProduction),
        "{state:?}"
    );
    let replica_of_n1 = StartRole::Replica { primary: target(&n1), slot: Some(slot_name("n2")) };
    n2.start(replica_of_n1).await.map_err(show).unwrap();
    assert!(!n2.may_accept_writes(), "started as a replica");
    assert!(matches!(n2.data_dir_state().await, DataDirState::Initialized { unfinished_backup: false, .. }));
    let probe = eventually("n2 to stream from n1", PATIENCE, || async {
        let probe = n2.probe().await.map_err(show)?;
        match probe.replication_state.as_deref() {
            Some("streaming") => Ok(probe),
            other => Err(format!("replication_state {other:?}")),
        }
    })
    .await;
    assert!(probe.in_recovery);
    assert_eq!(probe.role(), Role::Replica);
    assert_eq!(probe.timeline, Some(TimelineId(1)));
    assert_eq!(probe.system_identifier, n1.probe().await.map_err(show).unwrap().system_identifier);
    // The WAL receiver's connection carries TCP keepalives (`files::REPLICA_KEEPALIVES`): the kernel shows a
    // keepalive timer on its socket, so a half-open connection to a vanished primary ends (docs/chaos.md, 19).
    let receiver = sql(port2, "SELECT pid FROM pg_stat_wal_receiver").await.unwrap();
    let receiver_pid = receiver.first().expect("a WAL receiver row on the streaming replica").clone();
    let sockets = std::process::Command::new("ss").args(["-tnpoH", "state", "established"]).output().unwrap();
    let sockets = String::from_utf8_lossy(&sockets.stdout);
    let own = format!("pid={receiver_pid},");
    let line = sockets.lines().find(|line| line.contains(&own) && line.contains(&format!(":{port1} ")));
    assert!(
        line.is_some_and(|line| line.contains("timer:(keepalive")),
        "the WAL receiver (pid {receiver_pid}) to port {port1} has no keepalive timer:\n{sockets}"
    );
    eventually("n1 to list n2 in pg_stat_replication", PATIENCE, || async {
        let probe = n1.probe().await.map_err(show)?;
        let row = probe.replication.iter().find(|row| row.application_name == "n2");
        match row {
            Some(row) if row.state == "streaming" && row.usename == "replicator" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let slot_active = format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{}'", slot_name("n2"));
    eventually("the slot to be active", PATIENCE, || async {
        let active = sql(port1, &slot_active).await?;
        (active == ["t"]).then_some(()).ok_or(format!("{active:?}"))
    })
    .await;
    // An active slot that is no longer desired is kept.
    ensure_member_slots(&n1, BTreeSet::new()).await.map_err(show).unwrap();
    assert_eq!(sql(port1, &slot_active).await.unwrap(), ["t"]);
    sql(port1, "CREATE TABLE t (x text); INSERT INTO t VALUES ('before-failover')").await.unwrap();
    eventually("the row to reach n2", PATIENCE, || async {
        let rows = sql(port2, "SELECT x FROM t").await?;
        (rows == ["before-failover"]).then_some(()).ok_or(format!("{rows:?}"))
    })
    .await;

    // (5) Promote n2: timeline 2.
    n2.promote(Duration::from_secs(60)).await.map_err(show).unwrap();
    assert!(n2.may_accept_writes(), "promoted");
    let probe = n2.probe().await.map_err(show).unwrap();
    assert!(!probe.in_recovery);
    assert_eq!(probe.timeline, Some(TimelineId(2)));
    assert!(!dir.dir.path().join("n2/data/standby.signal").exists());
    n2.checkpoint().await.map_err(show).unwrap();
    sql(port2, "INSERT INTO t VALUES ('after-failover')").await.unwrap();

    // The old primary diverges and crashes right after its replica configuration was written (an
    // unclean pg_control and a `standby.signal`, which pg_rewind's single-user crash recovery refuses);
    // it is rewound from n2 and follows it.
    sql(port1, "INSERT INTO t VALUES ('diverged')").await.unwrap();
    n1.stop(StopMode::Immediate).await.map_err(show).unwrap();
    std::fs::write(dir.dir.path().join("n1/data/standby.signal"), b"").unwrap();
    assert!(matches!(n1.rewind(&target(&n2)).await, Ok(RewindOutcome::Rewound)), "pg_rewind must rewind");
    ensure_member_slots(&n2, BTreeSet::from([slot_name("n1")])).await.map_err(show).unwrap();
    n1.start(StartRole::Replica { primary: target(&n2), slot: Some(slot_name("n1")) }).await.map_err(show).unwrap();
    let probe = eventually("n1 to stream from n2", PATIENCE, || async {
        let probe = n1.probe().await.map_err(show)?;
        match (probe.replication_state.as_deref(), probe.timeline) {
            (Some("streaming"), Some(TimelineId(2))) => Ok(probe),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(probe.in_recovery);
    eventually("n2 to list n1 in pg_stat_replication", PATIENCE, || async {
        let probe = n2.probe().await.map_err(show)?;
        let found = probe.replication.iter().any(|row| row.application_name == "n1" && row.state == "streaming");
        found.then_some(()).ok_or(format!("{:?}", probe.replication))
    })
    .await;
    eventually("n1 to have n2's history and not its own diverged row", PATIENCE, || async {
        let rows = sql(port1, "SELECT x FROM t ORDER BY x").await?;
        (rows == ["after-failover", "before-failover"]).then_some(()).ok_or(format!("{rows:?}"))
    })
    .await;

    n1.stop(StopMode::Fast).await.map_err(show).unwrap();
    n2.stop(StopMode::Fast).await.map_err(show).unwrap();
    assert!(!n1.is_running() && !n2.is_running());
}

/// Finding 13 of docs/chaos.md: an immediate stop (the fence's, the guard's) ends the backends even when the
/// postmaster cannot act on its signal. With the postmaster frozen, an application's open session could otherwise
/// go on committing after the lease ran out; here its next statement fails, and the postmaster, once it runs
/// again, finds its pending SIGQUIT and exits.
#[tokio::test(flavor = "multi_thread")]
async fn immediate_stop_ends_the_backends_of_a_frozen_postmaster() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    init_tracing();
    let dir = TestDir::new();
    let mut cfg = dir.config("n1", free_port());
    // The frozen postmaster cannot exit: the stop gives up after this.
    cfg.stop_timeout = Duration::from_secs(2);
    let sup = bootstrap_primary_with(cfg).await;

    let mut config = tokio_postgres::Config::new();
    config.host("127.0.0.1").port(sup.config().port).user("postgres").password(SUPERUSER_PASSWORD).dbname("postgres");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| error_chain(&e)).unwrap();
    tokio::spawn(connection);
    client.simple_query("CREATE TABLE fenced (id int)").await.map_err(|e| error_chain(&e)).unwrap();

    let pid = postmaster_pid_on_disk(&sup).expect("the postmaster's pid");
    let postmaster = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(postmaster, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped = sup.stop(StopMode::Immediate).await;
    let after =
        tokio::time::timeout(Duration::from_secs(10), client.simple_query("INSERT INTO fenced VALUES (1)")).await;
    nix::sys::signal::kill(postmaster, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(stopped.is_err(), "a frozen postmaster cannot exit within the stop timeout: {stopped:?}");
    match after {
        Ok(Err(_)) => {}
        Ok(Ok(_)) => panic!("the open session committed after the immediate stop"),
        Err(_) => panic!("the open session's statement neither failed nor finished within 10 s"),
    }
    eventually("the postmaster, running again, exits", Duration::from_secs(30), || async {
        // Gone, or a zombie its parent (this test) has not reaped yet.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
        match state {
            None | Some("Z") => Ok(()),
            Some(state) => Err(format!("postmaster {pid} still runs (state {state})")),
        }
    })
    .await;
}
