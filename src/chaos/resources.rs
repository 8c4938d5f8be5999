//! Resource faults: a node starved of CPU through a cgroup (v1 `cpu.cfs_quota_us`, which this
//! machine kind mounts, or v2 `cpu.max`), and full disks on filesystems of the node's own: every
//! node's PostgreSQL data directory (WAL included) and its Raft directory each live on a small
//! loop-mounted ext4 (`mkfs.ext4 -m 0`, sparse image in the cluster directory), which a fault fills
//! to the last block with `fallocate` and frees again on heal.
//!
//! Root only; [`Cgroups::detect`] and [`Volumes::available`] say why not when they cannot.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

/// What a starved node gets: this many microseconds of CPU per 100 ms period (2 %).
pub const STARVED_QUOTA_US: u64 = 2_000;
const PERIOD_US: u64 = 100_000;
/// Size of each node's PostgreSQL filesystem (sparse: only what is used takes space).
const PG_VOLUME_BYTES: u64 = 2 << 30;
/// Size of each node's Raft filesystem.
const RAFT_VOLUME_BYTES: u64 = 512 << 20;
/// The file a disk fault fills a filesystem with.
const FILLER: &str = "chaos-filler";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The CPU cgroup hierarchy: where starved nodes' processes are put.
#[derive(Debug, Clone)]
pub struct Cgroups {
    /// `/sys/fs/cgroup/cpu` (v1) or `/sys/fs/cgroup` (v2).
    root: PathBuf,
    version: Version,
    /// Prefix of this run's cgroups (`raftgres-chaos-<harness pid>`), so runs do not collide.
    prefix: String,
}

impl Cgroups {
    /// Finds a writable CPU controller; says why not.
    pub fn detect() -> Result<Cgroups, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("cgroups need root".to_string());
        }
        let prefix = format!("raftgres-chaos-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        if v1.join("cpu.cfs_quota_us").is_file() {
            return Ok(Cgroups { root: v1.to_path_buf(), version: Version::V1, prefix });
        }
        let v2 = Path::new("/sys/fs/cgroup");
        if v2.join("cgroup.controllers").is_file() {
            let controllers = fs::read_to_string(v2.join("cgroup.controllers")).unwrap_or_default();
            if controllers.split_whitespace().any(|c| c == "cpu") {
                // Children of the root get the cpu controller only when the root hands it down.
                let _ = fs::write(v2.join("cgroup.subtree_control"), "+cpu");
                return Ok(Cgroups { root: v2.to_path_buf(), version: Version::V2, prefix });
            }
        }
        Err("no cgroup CPU controller is mounted (neither v1 cpu.cfs_quota_us nor v2 cpu.max)".to_string())
    }

    fn group(&self, node: usize) -> PathBuf {
        self.root.join(format!("{}-node{node}", self.prefix))
    }

    /// Which interface this is, for the report (`cgroup v1 cpu.cfs_quota_us`).
    pub fn describe(&self) -> &'static str {
        match self.version {
            Version::V1 => "cgroup v1 cpu.cfs_quota_us",
            Version::V2 => "cgroup v2 cpu.max",
        }
    }

    /// Moves `pids` into node `node`'s cgroup and limits it to [`STARVED_QUOTA_US`] per period.
    pub fn starve(&self, node: usize, pids: &[u32]) -> anyhow::Result<()> {
        let group = self.group(node);
        if !group.is_dir() {
            fs::create_dir(&group).with_context(|| format!("create the cgroup {}", group.display()))?;
        }
        self.set_quota(&group, Some(STARVED_QUOTA_US))?;
        for pid in pids {
            // A process that exited meanwhile cannot be moved; the others still are.
            if let Err(e) = fs::write(group.join("cgroup.procs"), pid.to_string()) {
                tracing::debug!(pid, "not moved into {}: {e}", group.display());
            }
        }
        Ok(())
    }

    /// Lifts the limit and moves every process of node `node`'s cgroup back to the root.
    pub fn release(&self, node: usize) -> anyhow::Result<()> {
        let group = self.group(node);
        if !group.is_dir() {
            return Ok(());
        }
        self.set_quota(&group, None)?;
        let procs = fs::read_to_string(group.join("cgroup.procs"))
            .with_context(|| format!("read {}/cgroup.procs", group.display()))?;
        for pid in procs.split_whitespace() {
            let _ = fs::write(self.root.join("cgroup.procs"), pid);
        }
        // Empty now (or a process is still on its way out); removed at the end of the run otherwise.
        let _ = fs::remove_dir(&group);
        Ok(())
    }

    /// Releases every node's cgroup (end of the run).
    pub fn release_all(&self, n_nodes: usize) {
        for node in 1..=n_nodes {
            if let Err(e) = self.release(node) {
                tracing::warn!("failed to release node{node}'s cgroup: {e:#}");
            }
        }
    }

    fn set_quota(&self, group: &Path, quota_us: Option<u64>) -> anyhow::Result<()> {
        let (file, value) = match (self.version, quota_us) {
            (Version::V1, Some(quota)) => ("cpu.cfs_quota_us", quota.to_string()),
            (Version::V1, None) => ("cpu.cfs_quota_us", "-1".to_string()),
            (Version::V2, Some(quota)) => ("cpu.max", format!("{quota} {PERIOD_US}")),
            (Version::V2, None) => ("cpu.max", format!("max {PERIOD_US}")),
        };
        if self.version == Version::V1 {
            let period = group.join("cpu.cfs_period_us");
            fs::write(&period, PERIOD_US.to_string()).with_context(|| format!("write {}", period.display()))?;
        }
        let path = group.join(file);
        fs::write(&path, &value).with_context(|| format!("write {value} to {}", path.display()))
    }
}

/// The process ids of a node: its raftgres process and its direct children other than the
/// postmaster (the fence guard, a running pg_ctl or pg_rewind), and the postmaster with every
/// backend. `which` picks: 0 raftgres only, 1 PostgreSQL only, else both.
pub fn node_pids(raftgres: Option<u32>, postmaster: Option<u32>, which: u64) -> Vec<u32> {
    let children = |parent: u32| -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| parent_of(*pid) == Some(parent))
            .collect()
    };
    let mut pids = Vec::new();
    if which != 1 {
        if let Some(pid) = raftgres {
            pids.push(pid);
            pids.extend(children(pid).into_iter().filter(|child| Some(*child) != postmaster));
        }
    }
    if which != 0 {
        if let Some(pid) = postmaster {
            pids.push(pid);
            pids.extend(children(pid));
        }
    }
    pids
}

/// Zombie `postgres` processes whose parent is `parent` (orphans reparented to a subreaper).
pub fn orphaned_postgres_zombies(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { return false };
            let name = &stat[open + 1..close];
            let mut rest = stat[close + 1..].split_whitespace();
            let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<u32>().ok()));
            name == "postgres" && state == Some("Z") && ppid == Some(parent)
        })
        .collect()
}

/// The parent pid in `/proc/<pid>/stat` (the field after the parenthesised command name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Which of a node's filesystems a disk fault fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Volume {
    /// The PostgreSQL data directory's (WAL included).
    Postgres,
    /// The Raft directory's.
    Raft,
}

/// The loop-mounted filesystems of every node.
#[derive(Debug, Default)]
pub struct Volumes {
    /// (mount point, image) per mounted filesystem.
    mounts: Vec<(PathBuf, PathBuf)>,
}

impl Volumes {
    /// Whether loop-mounted filesystems can be made here; says why not.
    pub fn available() -> Result<(), String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("mounting filesystems needs root".to_string());
        }
        for tool in ["mkfs.ext4", "mount", "umount", "losetup"] {
            if crate::config::load::find_bin_dir(tool, std::env::var_os("PATH").as_deref()).is_none() {
                return Err(format!("{tool} is not installed (e2fsprogs, mount)"));
            }
        }
        if !Path::new("/dev/loop-control").exists() {
            return Err("the kernel offers no loop devices (/dev/loop-control)".to_string());
        }
        Ok(())
    }

    /// Makes and mounts a PostgreSQL and a Raft filesystem for every node, at the parents of its
    /// data and Raft directories (`ClusterSpec::volumes`).
    pub fn mount(cluster: &crate::demo::cluster::LocalCluster) -> anyhow::Result<Volumes> {
        let mut volumes = Volumes::default();
        for node in cluster.nodes() {
            for (mount_point, bytes) in [(&node.data_parent, PG_VOLUME_BYTES), (&node.raft_parent, RAFT_VOLUME_BYTES)] {
                let name = mount_point.file_name().and_then(|name| name.to_str()).unwrap_or("volume");
                let image = cluster.dir().join(format!("{}-{name}.img", node.name));
                volumes.mount_one(mount_point, &image, bytes)?;
            }
        }
        Ok(volumes)
    }

    fn mount_one(&mut self, mount_point: &Path, image: &Path, bytes: u64) -> anyhow::Result<()> {
        let file = fs::File::create(image).with_context(|| format!("create {}", image.display()))?;
        file.set_len(bytes).with_context(|| format!("size {}", image.display()))?;
        drop(file);
        run(Command::new("mkfs.ext4").args(["-q", "-F", "-m", "0"]).arg(image))?;
        fs::create_dir_all(mount_point).with_context(|| format!("create {}", mount_point.display()))?;
        run(Command::new("mount").args(["-o", "loop"]).arg(image).arg(mount_point))?;
        self.mounts.push((mount_point.to_path_buf(), image.to_path_buf()));
        // ext4's root is 0755 root: traversable for PostgreSQL's own user, like the node directory.
        let lost = mount_point.join("lost+found");
        let _ = fs::remove_dir(lost);
        Ok(())
    }

    /// Fills node `node`'s `volume` to the last block; returns the bytes the filler took.
    pub fn fill(cluster: &crate::demo::cluster::LocalCluster, node: usize, volume: Volume) -> anyhow::Result<u64> {
        let mount_point = volume_dir(cluster, node, volume);
        let path = mount_point.join(FILLER);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        let mut taken = file.metadata().map(|m| m.len()).unwrap_or(0);
        // One big allocation, then ever smaller ones until not even one block is left.
        let mut chunk = free_bytes(&mount_point)?.max(4096);
        while chunk >= 4096 {
            match nix::fcntl::fallocate(
                file.as_raw_fd(),
                nix::fcntl::FallocateFlags::empty(),
                taken as i64,
                chunk as i64,
            ) {
                Ok(()) => taken += chunk,
                Err(_) => chunk /= 2,
            }
        }
        Ok(taken)
    }

    /// Frees node `node`'s `volume` again.
    pub fn free(cluster: &crate::demo::cluster::LocalCluster, node: usize, volume: Volume) -> anyhow::Result<()> {
        let path = volume_dir(cluster, node, volume).join(FILLER);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
        }
    }

    /// Frees every volume of every node (after a fault, whatever it was).
    pub fn free_all(&self, cluster: &crate::demo::cluster::LocalCluster) {
        for node in 1..=cluster.n_nodes() {
            for volume in [Volume::Postgres, Volume::Raft] {
                if let Err(e) = Volumes::free(cluster, node, volume) {
                    tracing::warn!("failed to {e:#}");
                }
            }
        }
    }

    /// Unmounts everything (the nodes must be stopped) and removes the images.
    pub fn unmount_all(mut self) {
        self.unmount();
    }

    fn unmount(&mut self) {
        for (mount_point, image) in std::mem::take(&mut self.mounts) {
            if let Err(e) = run(Command::new("umount").arg(&mount_point)) {
                tracing::warn!("failed to {e:#}; detaching it lazily");
                let _ = run(Command::new("umount").arg("-l").arg(&mount_point));
            }
            let _ = fs::remove_file(&image);
        }
    }
}

impl Drop for Volumes {
    fn drop(&mut self) {
        self.unmount();
    }
}

fn volume_dir(cluster: &crate::demo::cluster::LocalCluster, node: usize, volume: Volume) -> PathBuf {
    let layout = cluster.node(node);
    match volume {
        Volume::Postgres => layout.data_parent.clone(),
        Volume::Raft => layout.raft_parent.clone(),
    }
}

fn free_bytes(path: &Path) -> anyhow::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// Unmounts filesystems an earlier run left mounted under `dir` (it crashed before its cleanup).
pub fn unmount_stale(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else { return };
    let Ok(dir) = fs::canonicalize(dir) else { return };
    let stale: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4).map(PathBuf::from))
        .filter(|mount_point| mount_point.starts_with(&dir))
        .collect();
    for mount_point in stale.into_iter().rev() {
        if let Err(e) = run(Command::new("umount").arg("-l").arg(&mount_point)) {
            tracing::warn!("failed to {e:#}");
        }
    }
}

/// Runs `command`; an error naming it, with its stderr, when it fails or cannot start.
pub(super) fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let output = command.output().with_context(|| format!("run {shown}"))?;
    if output.status.success() {
        return Ok(());
    }
    anyhow::bail!("{shown} failed ({}): {}", output.status, String::from_utf8_lossy(&output.stderr).trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_pid_follows_the_command_name() {
        let own = std::process::id();
        let parent = parent_of(own);
        assert_eq!(parent, Some(std::os::unix::process::parent_id()));
    }
}
