//! Process management of [`LocalCluster`] against a stand-in node program (`sleep`), so starting,
//! freezing, stopping, killing and dropping are checked without PostgreSQL or a working `raftgres run`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use super::cluster::ClusterSpec;
use super::cluster::LocalCluster;
use super::procs;

/// A stand-in for `raftgres run -c FILE` that just waits to be signalled.
fn fake_node_program(dir: &Path) -> PathBuf {
    let path = dir.join("fake-raftgres");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 600\n").expect("write the fake program");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A port nothing listens on (bound once, then released).
fn free_port() -> u16 {
    crate::demo::ports::free_port_block(1).expect("a free loopback port below the ephemeral range")
}

fn fake_cluster(root: &Path) -> LocalCluster {
    let api_port = free_port();
    let spec = ClusterSpec {
        n_nodes: 2,
        pg_port: 45432,
        api_port,
        raft_port: 47000,
        pg_bin_dir: Some(PathBuf::from("/usr/lib/postgresql/15/bin")),
        ..ClusterSpec::new(root.join("cluster"), fake_node_program(root))
    };
    LocalCluster::generate(spec).expect("generate")
}

async fn eventually_gone(pid: u32) {
    assert!(procs::wait_gone(pid, Duration::from_secs(10)).await, "pid {pid} is still alive");
}

#[tokio::test]
async fn start_freeze_stop_and_kill_single_nodes() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = fake_cluster(root.path());
    cluster.start_all().expect("start");
    assert!(cluster.is_running(1) && cluster.is_running(2));
    let pid1 = cluster.pid(1).expect("pid of node1");
    let pid_file = procs::read_pid_file(&cluster.node(1).pid_path()).expect("read pid file");
    assert_eq!(pid_file, Some(pid1));
    assert!(cluster.start_node(1).is_err(), "a running node is not started twice");

    cluster.sigstop_node(1).expect("SIGSTOP");
    cluster.sigcont_node(1).expect("SIGCONT");
    cluster.sigstop_node(1).expect("SIGSTOP again");
    // A frozen node still stops: stop_node sends SIGCONT after SIGTERM.
    let status = cluster.stop_node(1).await.expect("stop").expect("node1 was running");
    assert!(!status.success());
    assert!(!cluster.is_running(1));
    assert_eq!(procs::read_pid_file(&cluster.node(1).pid_path()).expect("read"), None);
    assert!(cluster.stop_node(1).await.expect("stop again").is_none());

    let pid2 = cluster.pid(2).expect("pid of node2");
    cluster.kill_node(2).await.expect("kill");
    eventually_gone(pid2).await;
    assert_eq!(procs::read_pid_file(&cluster.node(2).pid_path()).expect("read"), None);

    // A node that dies on its own is reported once, and its pid file goes.
    cluster.start_node(2).expect("restart node2");
    let pid2 = cluster.pid(2).expect("pid of node2");
    procs::send(pid2, nix::sys::signal::Signal::SIGKILL).expect("SIGKILL");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = cluster.take_exit(2) {
            break status;
        }
        assert!(Instant::now() < deadline, "node2 did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    assert!(cluster.take_exit(2).is_none());
    assert_eq!(procs::read_pid_file(&cluster.node(2).pid_path()).expect("read"), None);
    assert!(cluster.kill_postmaster(2).is_err(), "there is no postmaster to kill");

    cluster.start_node(1).expect("restart node1");
    assert!(cluster.is_running(1));
    cluster.stop_all().await.expect("stop all");
    assert!(!cluster.is_running(1));
}

#[tokio::test]
async fn dropping_the_cluster_kills_its_processes() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = fake_cluster(root.path());
    cluster.start_all().expect("start");
    let pids = [cluster.pid(1).expect("pid"), cluster.pid(2).expect("pid")];
    cluster.sigstop_node(2).expect("SIGSTOP");
    drop(cluster);
    for pid in pids {
        eventually_gone(pid).await;
    }
}

#[tokio::test]
async fn wait_healthy_says_which_node_does_not_answer() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = fake_cluster(root.path());
    cluster.start_all().expect("start");
    let err = cluster.wait_healthy(Instant::now()).await.expect_err("nothing answers");
    assert_eq!(
        format!("{err:#}"),
        "the cluster is not healthy: node1 does not answer on its REST API yet (node1 unreachable, node2 unreachable)"
    );
    assert_eq!(cluster.roles().await, [None, None]);
    assert_eq!(cluster.primary().await, None);
    cluster.stop_all().await.expect("stop all");
}
