//! Free and total space of the filesystems under the data directory, `pg_wal` and the Raft store, for
//! `/metrics` (`raftgres_filesystem_avail_bytes`, `raftgres_filesystem_size_bytes`).
//!
//! The HA loop samples them at most once per cycle ([`DiskSampler::refresh`]) and publishes the latest sample
//! in `NodeStatus`, so the REST API renders them from memory and never calls `statvfs` per request.
//! The loop never waits for a sample: `statvfs` runs on a blocking thread, and the loop takes its result at the
//! next cycle. A filesystem that stops answering (a hung NFS server) would otherwise hold up the cycle and with
//! it the primary's lease renewals. A sample that has not come back after [`STALE_AFTER`] drops the metrics
//! rather than keep publishing old values; a `statvfs` that fails leaves that directory's metrics out. Both
//! are states (a DEBUG line), never errors.
//!
//! `pg_wal` is reported only when it lives on another filesystem than the data directory (a symlink, as
//! `initdb --waldir` makes it): otherwise its numbers would repeat the data directory's, and alerts would
//! fire twice for one full disk. The Raft directory is always reported, even when it shares the data
//! directory's filesystem, because a full Raft store has its own consequence (see `store_failure`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use crate::status::FilesystemUsage;
use crate::status::NodeDir;

/// How long a sample may take before its numbers are dropped (the metrics go absent until it returns).
const STALE_AFTER: Duration = Duration::from_secs(10);

/// The directories whose filesystems are reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDirs {
    /// `postgresql.data_dir`; `pg_wal` is looked up under it.
    pub data: PathBuf,
    /// `raft.data_dir`.
    pub raft: PathBuf,
}

/// One filesystem as `stat` and `statvfs` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filesystem {
    /// `st_dev` of the directory: two directories with the same device share a filesystem.
    pub device: u64,
    /// Bytes an unprivileged user can write.
    pub avail_bytes: u64,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// The HA loop's sampler: the latest sample and the one in flight, if any.
#[derive(Debug)]
pub struct DiskSampler {
    dirs: NodeDirs,
    in_flight: Option<(Instant, JoinHandle<Vec<FilesystemUsage>>)>,
    latest: Vec<FilesystemUsage>,
}

impl DiskSampler {
    /// A sampler of `dirs` with nothing sampled yet.
    pub fn new(dirs: NodeDirs) -> Self {
        DiskSampler { dirs, in_flight: None, latest: Vec::new() }
    }

    /// Takes the result of the sample started earlier when it is in, and starts the next one; never waits for
    /// `statvfs`. Call once per cycle.
    pub async fn refresh(&mut self) {
        let now = Instant::now();
        if let Some((started, handle)) = &mut self.in_flight {
            if !handle.is_finished() {
                if now.saturating_duration_since(*started) >= STALE_AFTER && !self.latest.is_empty() {
                    debug!(waited = ?STALE_AFTER, "statvfs has not returned; leaving the filesystem metrics out");
                    self.latest.clear();
                }
                // At most one sample in flight: a hung filesystem ties up one blocking thread, not one per cycle.
                return;
            }
            // Finished: awaiting the handle returns at once.
            match handle.await {
                Ok(sample) => self.latest = sample,
                Err(e) => {
                    debug!(error = %e, "the filesystem sample did not finish");
                    self.latest.clear();
                }
            }
            self.in_flight = None;
        }
        let dirs = self.dirs.clone();
        // The blocking thread logs under the loop's span (the node's name).
        let span = tracing::Span::current();
        self.in_flight = Some((now, tokio::task::spawn_blocking(move || span.in_scope(|| sample(&dirs)))));
    }

    /// The latest complete sample (empty before the first one came back).
    pub fn latest(&self) -> &[FilesystemUsage] {
        &self.latest
    }
}

/// Blocking: `stat` and `statvfs` of each directory; a directory that cannot be read is left out.
pub fn sample(dirs: &NodeDirs) -> Vec<FilesystemUsage> {
    let data = filesystem(&dirs.data);
    // `metadata` follows a `pg_wal` symlink to the directory it names.
    let wal = filesystem(&dirs.data.join("pg_wal"));
    let raft = filesystem(&dirs.raft);
    usages(data, wal, raft)
}

/// PURE: what to report of the three filesystems: each one read, except `pg_wal` when it is on the data
/// directory's filesystem.
pub fn usages(data: Option<Filesystem>, wal: Option<Filesystem>, raft: Option<Filesystem>) -> Vec<FilesystemUsage> {
    let wal = wal.filter(|wal| data.map(|data| data.device) != Some(wal.device));
    let dirs = [(NodeDir::Data, data), (NodeDir::Wal, wal), (NodeDir::Raft, raft)];
    dirs.into_iter()
        .filter_map(|(dir, fs)| {
            fs.map(|fs| FilesystemUsage { dir, avail_bytes: fs.avail_bytes, size_bytes: fs.size_bytes })
        })
        .collect()
}

/// Blocking: the filesystem holding `path`, `None` (with a DEBUG line) when `stat` or `statvfs` fails, for
/// example before `initdb` created the data directory.
fn filesystem(path: &Path) -> Option<Filesystem> {
    let read = || -> std::io::Result<Filesystem> {
        let device = std::fs::metadata(path)?.dev();
        let stat = nix::sys::statvfs::statvfs(path)?;
        let fragment_size = stat.fragment_size() as u64;
        Ok(Filesystem {
            device,
            avail_bytes: (stat.blocks_available() as u64).saturating_mul(fragment_size),
            size_bytes: (stat.blocks() as u64).saturating_mul(fragment_size),
        })
    };
    match read() {
        Ok(fs) => Some(fs),
        Err(e) => {
            debug!(path = %path.display(), error = %e, "statvfs failed; no filesystem metrics for it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn fs(device: u64, avail_gib: u64) -> Option<Filesystem> {
        Some(Filesystem { device, avail_bytes: avail_gib * GIB, size_bytes: 100 * GIB })
    }

    #[track_caller]
    fn check(data: Option<Filesystem>, wal: Option<Filesystem>, raft: Option<Filesystem>, expected: &[(NodeDir, u64)]) {
        let reported: Vec<(NodeDir, u64)> =
            usages(data, wal, raft).into_iter().map(|usage| (usage.dir, usage.avail_bytes / GIB)).collect();
        assert_eq!(reported, expected);
    }

    #[test]
    fn wal_is_reported_only_on_a_filesystem_of_its_own() {
        // pg_wal inside the data directory (or a symlink within the same filesystem): data covers it.
        check(fs(1, 40), fs(1, 40), fs(1, 40), &[(NodeDir::Data, 40), (NodeDir::Raft, 40)]);
        // initdb --waldir on another disk.
        check(fs(1, 40), fs(2, 5), fs(1, 40), &[(NodeDir::Data, 40), (NodeDir::Wal, 5), (NodeDir::Raft, 40)]);
        // A Raft store on a disk of its own.
        check(fs(1, 40), fs(1, 40), fs(3, 9), &[(NodeDir::Data, 40), (NodeDir::Raft, 9)]);
    }

    #[test]
    fn a_directory_that_cannot_be_read_is_left_out() {
        // Before initdb: no data directory, so no pg_wal either.
        check(None, None, fs(1, 40), &[(NodeDir::Raft, 40)]);
        // The data directory unreadable but pg_wal elsewhere answering: nothing says they share a filesystem.
        check(None, fs(2, 5), None, &[(NodeDir::Wal, 5)]);
        check(None, None, None, &[]);
    }

    #[test]
    fn sampling_reads_existing_directories_and_skips_missing_ones() {
        let tmp = tempfile::tempdir().expect("create a temp dir");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("pg_wal")).expect("create pg_wal");
        let dirs = NodeDirs { data, raft: tmp.path().join("raft-not-created-yet") };
        let sampled = sample(&dirs);
        let reported: Vec<NodeDir> = sampled.iter().map(|usage| usage.dir).collect();
        assert_eq!(reported, [NodeDir::Data]);
        assert!(sampled[0].size_bytes > 0 && sampled[0].avail_bytes <= sampled[0].size_bytes, "{sampled:?}");
    }

    #[test]
    fn a_pg_wal_symlink_to_another_filesystem_is_followed() {
        let tmp = tempfile::tempdir().expect("create a temp dir");
        // /dev/shm is a tmpfs on most Linux hosts: another filesystem than the temp dir's.
        let Ok(elsewhere) = tempfile::tempdir_in("/dev/shm") else {
            println!("SKIP a_pg_wal_symlink_to_another_filesystem_is_followed: no /dev/shm to write to");
            return;
        };
        let device = |path: &Path| std::fs::metadata(path).map(|meta| meta.dev()).ok();
        if device(tmp.path()) == device(elsewhere.path()) {
            println!("SKIP a_pg_wal_symlink_to_another_filesystem_is_followed: /dev/shm is the temp dir's filesystem");
            return;
        }
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).expect("create the data directory");
        std::os::unix::fs::symlink(elsewhere.path(), data.join("pg_wal")).expect("link pg_wal");
        let sampled = sample(&NodeDirs { data: data.clone(), raft: data });
        let reported: Vec<NodeDir> = sampled.iter().map(|usage| usage.dir).collect();
        assert_eq!(reported, [NodeDir::Data, NodeDir::Wal, NodeDir::Raft]);
        let size = nix::sys::statvfs::statvfs(elsewhere.path()).expect("statvfs /dev/shm");
        assert_eq!(sampled[1].size_bytes, size.blocks() as u64 * size.fragment_size() as u64, "the link's target");
    }

    #[tokio::test]
    async fn the_sampler_publishes_a_sample_at_the_next_refresh() {
        let tmp = tempfile::tempdir().expect("create a temp dir");
        let mut sampler = DiskSampler::new(NodeDirs { data: tmp.path().into(), raft: tmp.path().into() });
        sampler.refresh().await;
        assert!(sampler.latest().is_empty(), "the first refresh only starts a sample");
        if let Some((_, handle)) = &mut sampler.in_flight {
            while !handle.is_finished() {
                tokio::task::yield_now().await;
            }
        }
        sampler.refresh().await;
        let reported: Vec<NodeDir> = sampler.latest().iter().map(|usage| usage.dir).collect();
        assert_eq!(reported, [NodeDir::Data, NodeDir::Raft]);
    }

    #[tokio::test]
    async fn a_sample_that_does_not_return_drops_the_numbers_and_starts_no_other() {
        let tmp = tempfile::tempdir().expect("create a temp dir");
        let mut sampler = DiskSampler::new(NodeDirs { data: tmp.path().into(), raft: tmp.path().into() });
        sampler.latest = usages(fs(1, 40), None, fs(1, 40));
        // A statvfs stuck on a hung filesystem, started just now.
        sampler.in_flight = Some((Instant::now(), tokio::spawn(std::future::pending())));
        sampler.refresh().await;
        assert_eq!(sampler.latest().len(), 2, "a slow sample keeps the last numbers for a while");
        let long_ago = Instant::now().checked_sub(2 * STALE_AFTER).expect("the monotonic clock runs for 20 s");
        if let Some((started, _)) = &mut sampler.in_flight {
            *started = long_ago;
        }
        sampler.refresh().await;
        assert!(sampler.latest().is_empty(), "numbers older than {STALE_AFTER:?} are not published");
        let in_flight = sampler.in_flight.as_ref().map(|(started, handle)| (*started, handle.is_finished()));
        assert_eq!(in_flight, Some((long_ago, false)), "still the stuck sample, no second one");
    }
}
