//! `primary_start_timeout` against a real cause (#16): a primary whose disk is full cannot write its WAL.
//!
//! Every node's data directory is its own small ext4 filesystem (a loop-mounted image made with `mkfs.ext4 -m 0`,
//! so root has no reserved blocks either). The test fills the primary's filesystem and writes: PostgreSQL
//! PANICs because it cannot create the next WAL segment (`could not write to file "pg_wal/xlogtemp…": No space
//! left on device`), and every start afterwards fails in crash recovery for the same reason, since the
//! end-of-recovery checkpoint needs that segment. At the defaults (`primary_start_timeout: 300`) the first start
//! that fails outright makes the primary give the leader key up, as Patroni's `post_recover` does; a replica
//! takes over and writes resume there; once the disk has room again the old primary rejoins as a
//! replica of the new one, without a restart of its raftgres.
//!
//! Needs root and loop devices (`mkfs.ext4`, `mount -o loop`, `umount`); it says why when it skips.

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use raftgres::demo::cluster::LocalCluster;
use tokio::time::Instant;

use crate::harness::*;

const TEST: &str = "start_timeout::full_disk_primary_gives_the_key_to_a_replica_and_rejoins_when_freed";
/// Size of each node's filesystem: initdb, a few WAL segments and room to spare.
const IMAGE_SIZE: &str = "320M";
/// The files that fill the primary's filesystem (inside its data directory, which is the filesystem's root).
const FILL_PREFIX: &str = "disk-filler";

/// ERROR lines this test causes on purpose: PostgreSQL's PANIC on the full disk, and the failed starts.
const EXPECTED_ERRORS: [&str; 2] = ["PANIC:", "failed to start postgres"];

/// The loop-mounted filesystems of the nodes' data directories, unmounted on drop (after the cluster stopped).
struct NodeDisks {
    mount_points: Vec<PathBuf>,
    /// The image files, removed after the unmount.
    images: tempfile::TempDir,
}

impl NodeDisks {
    /// Mounts a fresh ext4 image at `DIR/nodeN/data` for nodes 1..=n, as an empty directory owned by the
    /// PostgreSQL user with mode 0700, so raftgres bootstraps or clones into it. `Err` says why it cannot.
    async fn mount(cluster_dir: &Path, n_nodes: usize) -> Result<NodeDisks, String> {
        let images = tempfile::Builder::new().prefix("rgit-disks").tempdir_in("/tmp").map_err(|e| e.to_string())?;
        let mut disks = NodeDisks { mount_points: Vec::new(), images };
        let owner = nix::unistd::User::from_name("postgres")
            .map_err(|e| format!("look up the postgres user: {e}"))?
            .ok_or("no postgres user")?;
        for node in 1..=n_nodes {
            let image = disks.images.path().join(format!("node{node}.img"));
            let mount_point = cluster_dir.join(format!("node{node}")).join("data");
            std::fs::create_dir_all(&mount_point).map_err(|e| format!("create {}: {e}", mount_point.display()))?;
            run("truncate", &["-s", IMAGE_SIZE, &image.display().to_string()]).await?;
            run("mkfs.ext4", &["-q", "-F", "-m", "0", &image.display().to_string()]).await?;
            let (image, target) = (image.display().to_string(), mount_point.display().to_string());
            run("mount", &["-o", "loop", &image, &target]).await?;
            disks.mount_points.push(mount_point.clone());
            // An empty directory for initdb and pg_basebackup: without lost+found, owned by the PostgreSQL user.
            std::fs::remove_dir(mount_point.join("lost+found")).map_err(|e| format!("remove lost+found: {e}"))?;
            nix::unistd::chown(&mount_point, Some(owner.uid), Some(owner.gid)).map_err(|e| format!("chown: {e}"))?;
            let private = std::os::unix::fs::PermissionsExt::from_mode(0o700);
            std::fs::set_permissions(&mount_point, private).map_err(|e| format!("chmod 0700: {e}"))?;
        }
        Ok(disks)
    }
}

impl Drop for NodeDisks {
    /// A lazy unmount: it never fails, even while a postmaster the cluster's drop just killed still holds a file;
    /// the loop device goes away with the last user (`mount -o loop` sets autoclear).
    fn drop(&mut self) {
        for mount_point in &self.mount_points {
            let _ = std::process::Command::new("umount").arg("-l").arg(mount_point).status();
        }
    }
}

/// Runs `program` with `args`; `Err` with its output when it fails or cannot start.
async fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out =
        tokio::process::Command::new(program).args(args).output().await.map_err(|e| format!("run {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{program} {args:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
}

/// Fills the filesystem holding `data_dir` to the last block: files as large as the free space, halving the size
/// whenever ext4 refuses one (its own metadata takes a few blocks), down to 4 KiB.
fn fill(data_dir: &Path) {
    let free = nix::sys::statvfs::statvfs(data_dir).expect("statvfs of the data directory");
    let mut len = free.blocks_available() * free.fragment_size();
    let mut n_files = 0;
    while len >= 4096 && n_files < 1000 {
        let file = std::fs::File::create(data_dir.join(format!("{FILL_PREFIX}.{n_files}"))).expect("create a filler");
        n_files += 1;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let bytes = i64::try_from(len).expect("a file size fits i64");
        if nix::fcntl::fallocate(fd, nix::fcntl::FallocateFlags::empty(), 0, bytes).is_err() {
            len /= 2;
        }
    }
    let left = nix::sys::statvfs::statvfs(data_dir).expect("statvfs of the data directory");
    let left = left.blocks_available() * left.fragment_size();
    println!("filled {} with {n_files} files: {left} bytes left", data_dir.display());
}

/// Removes the filler files: the disk has room again.
fn unfill(data_dir: &Path) {
    let entries = std::fs::read_dir(data_dir).expect("list the data directory");
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(FILL_PREFIX) {
            std::fs::remove_file(entry.path()).expect("remove a filler file");
        }
    }
}

/// Writes on node `node` until a write fails: each round switches to a new WAL segment and commits a row, so
/// PostgreSQL soon has to create a segment on the full disk. Panics when 40 rounds all succeed.
async fn write_until_the_wal_cannot_grow(c: &LocalCluster, node: usize) {
    for round in 0..40 {
        let Some(client) = connect(c, node).await else { return };
        let _ = client.batch_execute("SELECT pg_switch_wal()").await;
        if client.batch_execute(&format!("INSERT INTO wal_probe VALUES ({round})")).await.is_err() {
            return;
        }
    }
    panic!("node{node} kept committing on a full disk\n{}", logs(c));
}

fn log_of(c: &LocalCluster, node: usize) -> String {
    std::fs::read_to_string(c.dir().join(format!("node{node}/raftgres.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_disk_primary_gives_the_key_to_a_replica_and_rejoins_when_freed() {
    if !pg_available(TEST) {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("SKIP {TEST}: mounting a filesystem for the data directories needs root");
        return;
    }
    let (spec, dir) = spec();
    let disks = match NodeDisks::mount(dir.path(), spec.n_nodes).await {
        Ok(disks) => disks,
        Err(why) => {
            println!("SKIP {TEST}: cannot loop-mount a filesystem here: {why}");
            return;
        }
    };
    init_tracing();
    let cluster = LocalCluster::generate(spec).expect("generate the cluster");
    cluster.start_all().expect("start the nodes");
    let c = &cluster;
    let keep_logs = KeepLogsOnPanic(c);
    let old = c
        .wait_healthy(Instant::now() + Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("cluster did not become healthy: {e:#}\n{}", logs(c)));
    assert!(execute(c, old, "CREATE TABLE wal_probe (id bigint); INSERT INTO wal_probe VALUES (-1)").await);
    for node in (1..=3).filter(|n| *n != old) {
        eventually(Duration::from_secs(60), &format!("node{node} replicates the table"), || async {
            (count(c, node, "SELECT count(*) FROM wal_probe").await == Some(1)).then_some(())
        })
        .await;
    }

    let old_data = c.node(old).data_dir();
    fill(&old_data);
    write_until_the_wal_cannot_grow(c, old).await;

    // The key moves to a replica and writes resume there.
    let new = new_primary(c, old, Duration::from_secs(120)).await;
    eventually(Duration::from_secs(30), &format!("a write on the new primary node{new}"), || async {
        execute(c, new, "INSERT INTO wal_probe VALUES (1000000)").await.then_some(())
    })
    .await;
    let old_log = log_of(c, old);
    assert!(old_log.contains("gave up the leader key"), "node{old} says why it gave the key up\n{}", logs(c));
    let patroni_words = "removed leader key after trying and failing to start postgres";
    assert!(old_log.contains(patroni_words), "the first failed start gives the key up, as in Patroni\n{}", logs(c));
    assert!(old_log.contains("No space left on device"), "the failed starts are PostgreSQL's own\n{}", logs(c));
    assert_ne!(in_recovery(c, old).await, Some(false), "the old primary does not run as a primary on its full disk");

    // The disk has room again: the old primary rejoins as a replica of the new one.
    unfill(&old_data);
    eventually(Duration::from_secs(180), &format!("node{old} rejoins as a replica"), || async {
        (in_recovery(c, old).await == Some(true)).then_some(())
    })
    .await;
    let streaming = format!(
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node{old}' AND state = 'streaming'"
    );
    eventually(Duration::from_secs(90), &format!("node{old} streams from node{new}"), || async {
        (count(c, new, &streaming).await == Some(1)).then_some(())
    })
    .await;
    eventually(Duration::from_secs(60), &format!("node{old} has the new primary's row"), || async {
        (count(c, old, "SELECT count(*) FROM wal_probe WHERE id = 1000000").await == Some(1)).then_some(())
    })
    .await;
    let decisions = log_of(c, old);
    let decisions = decisions.lines().filter(|line| line.contains("ha decision") || line.contains("gave up"));
    println!("node{old}'s decisions:\n{}", decisions.map(strip_ansi).collect::<Vec<_>>().join("\n"));
    finish(c, &EXPECTED_ERRORS).await;
    drop(keep_logs);
    drop(cluster);
    drop(disks);
}
