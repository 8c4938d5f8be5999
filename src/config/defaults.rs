//! Named defaults and limits of the static and dynamic configuration, in one place.
//!
//! Only constants live here: no parsing, no I/O. Where raftgres differs from Patroni the
//! comment says why, so a reader comparing with Patroni's docs is not surprised.

use std::time::Duration;

/// Patroni's default DCS namespace; keys live under `<namespace><scope>/`.
pub const NAMESPACE: &str = "/service/";

/// Default HA timing (dynamic `ttl`, seconds).
///
/// Patroni defaults to 30/10/10 with minimums 20/1/3 because its DCS round trips cross the
/// network to etcd or Consul. raftgres' DCS is an embedded Raft replica on a LAN: a renewal is
/// one commit (milliseconds), local on the primary's node, which also leads Raft.
/// 3/1/1 keeps Patroni's rule `loop_wait + 2 * retry_timeout <= ttl`; the primary renews every
/// `loop_wait` and its lease is good for `ttl - 0.5 s` after each renewal, so it rides out a Raft
/// outage of 1.5 s, more than a Raft re-election at the default timers (≤ 1.3 s); a dead
/// primary's lease runs out 2–3 s after its last renewal, which is most of the crash failover time.
pub const TTL: Duration = Duration::from_secs(3);
/// Default sleep between HA cycles (dynamic `loop_wait`).
pub const LOOP_WAIT: Duration = Duration::from_secs(1);
/// Default bound of one DCS or PostgreSQL operation including retries (dynamic `retry_timeout`).
pub const RETRY_TIMEOUT: Duration = Duration::from_secs(1);

/// Smallest accepted `ttl`: a renewal must commit within `ttl - margin - loop_wait` (1.5 s at
/// 3 s), and below that a Raft re-election or a slow fsync would cost the primary its lease.
pub const MIN_TTL: Duration = Duration::from_secs(3);
/// Smallest accepted `loop_wait` (Patroni's minimum too).
pub const MIN_LOOP_WAIT: Duration = Duration::from_secs(1);
/// Smallest accepted `retry_timeout`; Patroni's minimum of 3 s is sized for remote DCS clusters.
pub const MIN_RETRY_TIMEOUT: Duration = Duration::from_secs(1);

/// Dynamic `maximum_lag_on_failover` (bytes).
pub const MAXIMUM_LAG_ON_FAILOVER: u64 = 1_048_576;
/// Dynamic `maximum_lag_on_syncnode` (bytes; -1 disables the check).
pub const MAXIMUM_LAG_ON_SYNCNODE: i64 = -1;
/// Dynamic `primary_start_timeout`.
pub const PRIMARY_START_TIMEOUT: Duration = Duration::from_secs(300);
/// Dynamic `primary_stop_timeout` (0 = wait forever).
pub const PRIMARY_STOP_TIMEOUT: Duration = Duration::from_secs(0);
/// Dynamic `synchronous_node_count`.
pub const SYNCHRONOUS_NODE_COUNT: u32 = 1;
/// Dynamic `max_timelines_history` (0 = keep all).
pub const MAX_TIMELINES_HISTORY: u32 = 0;
/// Dynamic `member_slots_ttl`.
pub const MEMBER_SLOTS_TTL: Duration = Duration::from_secs(1800);

/// `postgresql.pg_ctl_timeout`.
pub const PG_CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// `postgresql.run_as`: the OS user that runs PostgreSQL programs when raftgres runs as root.
pub const RUN_AS: &str = "postgres";
/// Where Debian and Ubuntu install PostgreSQL, one `<major>/bin` per version.
pub const DEBIAN_PG_LIB: &str = "/usr/lib/postgresql";

/// `watchdog.device`.
pub const WATCHDOG_DEVICE: &str = "/dev/watchdog";
/// `watchdog.safety_margin`: Patroni's 5 s would leave no watchdog timeout at raftgres' `ttl` of 3 s, so ours is
/// 2 s (a 1 s timeout; see `WatchdogConfig::timeout`).
pub const WATCHDOG_SAFETY_MARGIN: Duration = Duration::from_secs(2);

/// `raft.heartbeat_interval` (also the AppendEntries timeout; must exceed RTT + follower fsync).
pub const RAFT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// `raft.election_timeout_min`.
///
/// openraft's followers campaign only after its leader lease (`election_timeout_max`) plus a
/// randomized timeout in `[min, max)` without a heartbeat, so losing a Raft leader costs up to
/// `2 * max + heartbeat_interval` (1.3 s here). That must fit in what the primary's lease rides
/// out without a renewal, `ttl - max(0.1 ttl, 0.5 s) - loop_wait` (1.5 s at 3/1/1), for the
/// moments when the Raft leader is not the primary's node (`raft::lease::survivable_outage`).
/// 500/1000 ms took up to 2.1 s and cost primaries their lease on loaded hosts.
pub const RAFT_ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(300);
/// `raft.election_timeout_max` (see [`RAFT_ELECTION_TIMEOUT_MIN`]).
pub const RAFT_ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(600);
/// `raft.max_clock_skew`, used only with `lease_mode: stamped`.
pub const RAFT_MAX_CLOCK_SKEW: Duration = Duration::from_millis(500);

/// The PostgreSQL programs raftgres runs, by their `postgresql.bin_name` key.
pub const PG_PROGRAMS: [&str; 7] =
    ["pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready", "pg_rewind"];
/// The programs `check_environment` requires in the binary directory.
pub const REQUIRED_PG_PROGRAMS: [&str; 6] =
    ["postgres", "initdb", "pg_ctl", "pg_basebackup", "pg_rewind", "pg_controldata"];

/// libpq connection parameters accepted under `postgresql.authentication.<user>` besides
/// `username` and `password` (Patroni's `_AUTH_ALLOWED_PARAMETERS` plus `sslnegotiation`).
pub const PG_AUTH_OPTIONS: [&str; 10] = [
    "sslmode",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslnegotiation",
    "gssencmode",
    "channel_binding",
];

/// GUCs Patroni passes on the postgres command line: set cluster-wide through the dynamic
/// configuration only, so a local `postgresql.parameters` entry for them is dropped.
pub const CLUSTER_WIDE_GUCS: [&str; 15] = [
    "listen_addresses",
    "port",
    "cluster_name",
    "wal_level",
    "hot_standby",
    "max_connections",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "track_commit_timestamp",
    "max_replication_slots",
    "max_worker_processes",
    "wal_log_hints",
    "wal_keep_segments",
    "wal_keep_size",
];

/// GUCs that neither the local nor the dynamic configuration may set: raftgres derives them
/// from `postgresql.listen`, `scope`, or pins them (`hot_standby`, `wal_log_hints` are always on).
pub const PINNED_GUCS: [&str; 5] = ["listen_addresses", "port", "cluster_name", "hot_standby", "wal_log_hints"];

/// Patroni's default `log.format`: the keys of a JSON line when `log.format` is not set.
pub const LOG_FORMAT: &str = "%(asctime)s %(levelname)s: %(message)s";
/// Patroni's default `log.file_size` (bytes): the log file is rotated when a line would reach it.
pub const LOG_FILE_SIZE: u64 = 25_000_000;
/// Patroni's default `log.file_num`: rotated log files kept (`patroni.log.1` … `patroni.log.4`).
pub const LOG_FILE_NUM: u32 = 4;

/// `haproxy.timeout`: how long one HAProxy runtime API may take to answer a push.
pub const HAPROXY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// `vip.arping_count`: gratuitous ARP announcements after the floating address is added (one at once, then one
/// every [`crate::vip::ANNOUNCE_EVERY`]), as `arping -U -c 3` would send.
pub const VIP_ARPING_COUNT: u32 = 3;
