//! The vocabulary of the HA decision: what a cycle observed ([`Observation`]), the policy it
//! applies ([`HaConfig`]), and what it decided ([`Decision`] = [`Action`]s + a [`Reason`]).
//!
//! Plain data: no I/O. `Reason` renders Patroni's sentence for logs, `/patroni` and tests.

use std::fmt;
use std::time::Duration;

use crate::dcs::view::MemberData;
use crate::postgres::types::Lsn;
use crate::postgres::types::SystemId;
use crate::postgres::types::TimelineId;
use crate::status::PgStatus;
use crate::status::Role;

/// What the data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// Absent or empty: this node needs a bootstrap or a clone.
    Empty,
    /// A cluster is there.
    Initialized {
        /// From pg_control.
        system_id: SystemId,
        /// pg_control says the last run was a primary (in production / shut down / crash recovery).
        was_primary: bool,
        /// pg_control's checkpoint timeline.
        timeline: TimelineId,
        /// Where the stopped data directory stands (timeline and position, as Patroni's
        /// `_get_local_timeline_lsn_from_controldata` reads them); `None` when pg_control does not say.
        position: Option<crate::postgres::controldata::LocalPosition>,
    },
    /// Unusable; the sentence says why.
    Invalid(String),
}

/// The local PostgreSQL process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgProcess {
    /// Not running.
    Stopped,
    /// Running and answering: the probe result.
    Running(Box<PgStatus>),
    /// The postmaster is alive but the probe failed.
    Unresponsive,
    /// The postmaster is alive, the probe failed and `postmaster.pid` says `starting`: crash recovery, or a start
    /// that has not finished (a start still in progress counts against `primary_start_timeout`).
    Starting,
}

impl PgProcess {
    /// The probed role when running and answering.
    pub fn role(&self) -> Option<Role> {
        match self {
            PgProcess::Running(status) => Some(status.role),
            _ => None,
        }
    }
}

/// A long action running as a tracked task; the loop sees it as "in progress".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// initdb + first start.
    Bootstrap,
    /// pg_basebackup from the leader.
    Clone,
    /// Starting PostgreSQL.
    Start,
    /// pg_rewind then start as replica.
    Rewind,
    /// Promotion.
    Promote,
    /// Planned demotion (switchover).
    Demote,
    /// Restart on request.
    Restart,
    /// Logical slots copied from the leader (PostgreSQL restarts).
    CopySlots,
}

impl ActionKind {
    /// Patroni's word for it.
    pub fn describe(self) -> &'static str {
        match self {
            ActionKind::Bootstrap => "bootstrap",
            ActionKind::Clone => "clone from leader",
            ActionKind::Start => "starting",
            ActionKind::Rewind => "pg_rewind",
            ActionKind::Promote => "promote",
            ActionKind::Demote => "demote",
            ActionKind::Restart => "restart",
            ActionKind::CopySlots => "copy logical slots",
        }
    }
}

/// What another member reported about itself (its `GET /patroni`, or its member key).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerReport {
    /// Member name.
    pub name: String,
    /// Its member key.
    pub member: MemberData,
    /// It answered a live query (as opposed to only its member key).
    pub reachable: bool,
    /// Its PostgreSQL is not in recovery.
    pub is_primary: bool,
    /// max(received, replayed) or its primary position.
    pub wal: Option<Lsn>,
    /// Its `GET /patroni` says `watchdog_failed`: it cannot lead, so it neither blocks the race nor is waited for.
    pub watchdog_failed: bool,
}

/// Everything one cycle observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The data directory.
    pub data_dir: DataDir,
    /// The PostgreSQL process.
    pub pg: PgProcess,
    /// This node's leader lease is valid now (own monotonic clock).
    pub holds_lease: bool,
    /// The `leader` key is attached to this process's session.
    pub leader_key_is_mine: bool,
    /// The store answered recently enough to trust the view (a Raft leader is known).
    pub dcs_ok: bool,
    /// A long action in progress.
    pub action: Option<ActionKind>,
    /// Live reports of the other members (gathered only for a leader race).
    pub peers: Vec<PeerReport>,
    /// The configured follow target PostgreSQL currently replicates from (member name).
    pub following: Option<String>,
    /// The last rewind attempt from the current leader failed.
    pub rewind_failed: bool,
    /// A pg_rewind began changing the data directory and did not finish (`Supervisor::rewind_incomplete`): it
    /// must never be started or rewound again, only cloned anew.
    pub rewind_incomplete: bool,
    /// This node released the key voluntarily less than a ttl ago: it stays out of the leader race meanwhile, so
    /// another member can take the key (Patroni's backoff after releasing the lock voluntarily).
    pub race_backoff: Option<RaceBackoff>,
    /// A custom bootstrap of an earlier process did not finish (`Supervisor::restore_incomplete`).
    pub restore_incomplete: bool,
    /// The watchdog lets this node lead: false only with `watchdog.mode: required` and a watchdog that cannot be
    /// armed (`watchdog::policy::verdict`). Such a node never takes the leader key and never promotes.
    pub watchdog_usable: bool,
    /// The `leader` key names this member and its PostgreSQL does not run as a primary: for how long, counted
    /// from the last cycle that saw it run as one (or, when none did under this key, from the first cycle that
    /// saw the key without one). Crashes, failed starts and a start still in progress all count; the shell
    /// keeps the clock (`ha::observe`), `decide` compares it with `primary_start_timeout`. `None` otherwise.
    pub primary_down_for: Option<Duration>,
    /// The `leader` key names this member, its PostgreSQL does not run as a primary, and the last start of it
    /// failed outright (PostgreSQL exited): Patroni's `post_recover` gives the key up at once then ("removed
    /// leader key after trying and failing to start postgres"), whatever `primary_start_timeout` says.
    pub primary_start_failed: bool,
}

/// Why this node stays out of the leader race for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaceBackoff {
    /// Its `pre_promote` script failed and it released the key.
    PrePromoteFailed,
    /// It gave the key up because its PostgreSQL did not run as a primary within `primary_start_timeout`: it
    /// also leaves PostgreSQL stopped while nobody holds the key, so the other members neither wait for it nor
    /// see it ahead of them (as a standby it might start on the disk that keeps the primary from starting).
    GaveUpKey,
}

/// The policy the decision applies (dynamic config + local tags).
#[derive(Debug, Clone, PartialEq)]
pub struct HaConfig {
    /// This member.
    pub name: String,
    /// Lease TTL.
    pub ttl: Duration,
    /// Maintenance mode.
    pub paused: bool,
    /// `nofailover` tag (or `failover_priority` 0).
    pub nofailover: bool,
    /// `failover_priority` tag.
    pub failover_priority: i64,
    /// `maximum_lag_on_failover`, bytes.
    pub maximum_lag_on_failover: u64,
    /// `postgresql.use_pg_rewind`.
    pub use_pg_rewind: bool,
    /// `remove_data_directory_on_rewind_failure`.
    pub remove_data_directory_on_rewind_failure: bool,
    /// `check_timeline`.
    pub check_timeline: bool,
    /// `synchronous_mode`: only members the `sync` key names may race.
    pub synchronous_mode: crate::config::SynchronousMode,
    /// `replicatefrom` tag: stream from this member while it has a member key, else from the leader.
    pub replicatefrom: Option<String>,
    /// `standby_cluster` is set: the key holder is a standby leader following [`REMOTE_PRIMARY`], never a primary.
    pub standby_cluster: bool,
    /// A replica creation method has `no_leader`: a node with an empty data directory can restore it from a
    /// backup while the cluster has no leader.
    pub clone_without_leader: bool,
    /// `primary_start_timeout` (or the `timeout` of the `POST /restart` that stopped the primary): how long the key
    /// holder may go without PostgreSQL running as a primary before it gives the key to a member that can take over.
    pub primary_start_timeout: Duration,
}

/// The upstream a standby leader follows: the remote primary of `standby_cluster` (not a member; the executor
/// resolves it from the dynamic configuration). Parentheses never occur in a member name raftgres generates.
pub const REMOTE_PRIMARY: &str = "(standby_cluster primary)";

/// How to stop being primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoteMode {
    /// Lost the lease or someone else leads: stop immediately, never touch the lock.
    ImmediateNoLock,
    /// Planned switchover: fast stop (shutdown checkpoint), then release the lock.
    Graceful,
}

/// One thing to do. The executor runs them in order and stops at the first failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Renew the leader lease (and publish `status`).
    RenewLease,
    /// Take the vacant leader key.
    AcquireLease,
    /// Take over the leader key written by this member's previous process.
    TakeOverLease,
    /// Delete the leader key we hold.
    ReleaseLease,
    /// Delete the leader key we hold because our PostgreSQL cannot serve as the primary
    /// (`primary_start_timeout`), and stay out of the leader race for one ttl ([`RaceBackoff::GaveUpKey`]).
    GiveUpLease,
    /// Race for `initialize` and bootstrap a new cluster.
    Bootstrap,
    /// Create a replica with pg_basebackup from this member.
    CloneFrom(String),
    /// Create the data directory with the replica methods that need no member (`no_leader`).
    CloneWithoutLeader,
    /// Start PostgreSQL as the primary (we hold the lease), waiting for it to accept connections at most
    /// `within` (what is left of `primary_start_timeout`; never longer than `pg_ctl_timeout`, which `None`
    /// means). A server not ready by then is left running and watched ([`PgProcess::Starting`]).
    StartPrimary {
        /// The longest wait for readiness.
        within: Option<Duration>,
    },
    /// Start PostgreSQL as a replica of this member (`None`: no upstream yet).
    StartReplica {
        /// Member to follow.
        leader: Option<String>,
        /// Run pg_rewind from it first.
        rewind: bool,
    },
    /// Point a running replica at another leader.
    Follow(String),
    /// Promote the local replica.
    Promote,
    /// Stop being primary.
    Demote(DemoteMode),
    /// Delete the data directory and clone again (only when the config allows it).
    WipeAndClone(String),
    /// Stop a replica that replayed past the point where the leader's timeline forked off,
    /// pg_rewind it from this member and start it again as its replica.
    RewindReplica(String),
    /// Clear a consumed `failover` key.
    ClearFailover,
    /// Undo a custom bootstrap an earlier process did not finish: stop PostgreSQL, empty the data directory,
    /// and give up the `initialize` race (and the key) it had won, so the bootstrap starts over.
    ResetBootstrap,
}

/// Why: Patroni's sentences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Leader, nothing to do.
    LeaderWithLock,
    /// Following the leader.
    FollowingLeader(String),
    /// Race won.
    PromotedByAcquiringLock,
    /// Already primary, took the vacant lock.
    AcquiredLockAsLeader,
    /// Holder whose PostgreSQL runs as a replica.
    PromotingBecauseIHoldTheLock,
    /// Someone else leads while we are primary.
    DemotingNotLeader,
    /// Not the healthiest node in the race.
    NotHealthiest(String),
    /// Out of the leader race for a ttl after this node released the key voluntarily.
    RaceBackoff(RaceBackoff),
    /// `nofailover`.
    NotAllowedToPromote,
    /// No initialize key: bootstrap.
    Bootstrapping,
    /// Someone else bootstraps.
    WaitingForBootstrap,
    /// Standby cluster: the key holder follows the remote primary.
    StandbyLeaderWithLock,
    /// Standby cluster: the race was won; follow the remote primary.
    StandbyLeaderByAcquiringLock,
    /// Standby cluster: start the standby leader.
    StartingStandbyLeader,
    /// Standby cluster: bootstrap from the remote primary.
    BootstrappingStandby,
    /// An interrupted custom bootstrap is undone.
    ResettingBootstrap,
    /// Cloning from the leader.
    CloningFrom(String),
    /// Cloning from a replica tagged `clonefrom`.
    CloningFromReplica(String),
    /// Restoring with a `no_leader` replica method while the cluster has no leader.
    CloningWithoutLeader,
    /// Crash recovery as primary.
    StartingPrimaryAfterFailure,
    /// Starting as replica.
    StartingAsSecondary,
    /// Rewinding.
    Rewinding(String),
    /// Long action running.
    InProgress(ActionKind),
    /// Long action running while we renew the lease.
    InProgressRenewing(ActionKind),
    /// Switchover requested.
    ManualFailoverDemoting(String),
    /// The store is unavailable.
    DcsNotAccessible,
    /// Primary whose lease ran out while the store is unavailable.
    DemotingDcsNotAccessible,
    /// System identifier mismatch.
    SystemIdMismatch(String, String),
    /// Unusable data directory.
    InvalidDataDir(String),
    /// Paused: the wrapped reason, prefixed `PAUSE: `.
    Paused(Box<Reason>),
    /// Waiting for a leader to appear.
    WaitingForLeader,
    /// Rewind failed and wiping is not allowed.
    RewindFailed(String),
    /// A replica replayed WAL the new leader never had (it forked its timeline off earlier).
    ReplicaDiverged(String),
    /// An interrupted pg_rewind left the data directory unusable, and wiping it is not allowed.
    RewindIncomplete(String),
    /// PostgreSQL does not answer and is not known to follow the leader: stopped, to start as its replica.
    StoppingUnresponsive(String),
    /// Taking over the lease of this member's previous process.
    TakingOverOwnLease,
    /// Synchronous mode: not named in the `sync` key.
    NotSynchronous,
    /// Holding the key, not a primary yet, and the required watchdog cannot be armed: the key is released.
    NotPromotingWithoutWatchdog,
    /// A primary whose required watchdog cannot be armed: it stops and gives the key up.
    DemotingWithoutWatchdog,
    /// `primary_start_timeout` is 0, PostgreSQL crashed and a replica can take over: the key is released.
    FailingOverAfterCrash(Vec<String>),
    /// The last start as a primary failed outright and a replica can take over: the key is released (Patroni's
    /// `post_recover`).
    StartFailedFailingOver(Vec<String>),
    /// PostgreSQL has not run as a primary for longer than `primary_start_timeout` and a replica can take over.
    StartTimedOut {
        /// How long PostgreSQL has not run as a primary.
        down_for: Duration,
        /// The timeout that passed.
        timeout: Duration,
        /// The members that can take over.
        candidates: Vec<String>,
    },
    /// `primary_start_timeout` passed, but no member can take over: the holder keeps the key and keeps trying.
    StartTimedOutNoFailover,
    /// PostgreSQL is still starting (crash recovery) as the primary, within `primary_start_timeout` (the timeout;
    /// a countdown would change the sentence, and so log it at INFO, every cycle).
    StillStarting(Duration),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::LeaderWithLock => write!(f, "no action. I am the leader with the lock"),
            Reason::FollowingLeader(l) => write!(f, "no action. I am a secondary, and following a leader ({l})"),
            Reason::PromotedByAcquiringLock => write!(f, "promoted self to leader by acquiring session lock"),
            Reason::AcquiredLockAsLeader => write!(f, "acquired session lock as a leader"),
            Reason::PromotingBecauseIHoldTheLock => write!(f, "promoted self to leader because I had the session lock"),
            Reason::DemotingNotLeader => write!(f, "demoting self because i do not have the lock and i was a leader"),
            Reason::NotHealthiest(why) => {
                write!(f, "following a different leader because i am not the healthiest node ({why})")
            }
            Reason::RaceBackoff(RaceBackoff::PrePromoteFailed) => {
                write!(f, "backoff: skip leader race after pre_promote script failure and releasing the lock voluntarily")
            }
            Reason::RaceBackoff(RaceBackoff::GaveUpKey) => write!(
                f,
                "backoff: skip leader race after releasing the lock voluntarily because PostgreSQL did not start as primary within primary_start_timeout"
            ),
            Reason::NotAllowedToPromote => write!(f, "following a different leader because I am not allowed to promote"),
            Reason::Bootstrapping => write!(f, "trying to bootstrap a new cluster"),
            Reason::WaitingForBootstrap => write!(f, "waiting for leader to bootstrap"),
            Reason::CloningFrom(l) => write!(f, "trying to bootstrap from leader '{l}'"),
            Reason::StandbyLeaderWithLock => write!(f, "no action. I am the standby leader with the lock"),
            Reason::StandbyLeaderByAcquiringLock => {
                write!(f, "promoted self to a standby leader by acquiring session lock")
            }
            Reason::StartingStandbyLeader => write!(f, "starting as a standby leader"),
            Reason::BootstrappingStandby => write!(f, "trying to bootstrap a new standby leader"),
            Reason::ResettingBootstrap => {
                write!(f, "removing the data directory of an interrupted custom bootstrap to start it over")
            }
            Reason::CloningFromReplica(m) => write!(f, "trying to bootstrap from replica '{m}'"),
            Reason::CloningWithoutLeader => write!(f, "trying to bootstrap (without leader)"),
            Reason::StartingPrimaryAfterFailure => write!(f, "starting primary after failure"),
            Reason::StartingAsSecondary => write!(f, "starting as a secondary"),
            Reason::Rewinding(l) => write!(f, "running pg_rewind from {l}"),
            Reason::InProgress(kind) => write!(f, "{} in progress", kind.describe()),
            Reason::InProgressRenewing(kind) => write!(f, "updated leader lock during {}", kind.describe()),
            Reason::ManualFailoverDemoting(to) => write!(f, "manual failover: demoting myself in favour of {to}"),
            Reason::DcsNotAccessible => write!(f, "DCS is not accessible"),
            Reason::DemotingDcsNotAccessible => write!(f, "demoted self because DCS is not accessible and I was a leader"),
            Reason::SystemIdMismatch(mine, theirs) => write!(
                f,
                "system ID mismatch: this node's data directory belongs to a different cluster ({mine} != {theirs}); consider reinitialize"
            ),
            Reason::InvalidDataDir(why) => write!(f, "data directory is not usable: {why}"),
            Reason::Paused(inner) => write!(f, "PAUSE: {inner}"),
            Reason::WaitingForLeader => write!(f, "waiting for a leader to follow"),
            Reason::RewindFailed(l) => write!(f, "pg_rewind from {l} failed; will retry (set remove_data_directory_on_rewind_failure to reclone)"),
            Reason::ReplicaDiverged(l) => {
                write!(f, "replayed past the point where {l}'s timeline forked off; running pg_rewind from {l}")
            }
            Reason::RewindIncomplete(l) => write!(
                f,
                "an interrupted pg_rewind left the data directory unusable; not starting it (raftgres reinit, or set remove_data_directory_on_rewind_failure to clone from {l})"
            ),
            Reason::StoppingUnresponsive(l) => write!(
                f,
                "stopping postgres: it does not answer and is not known to follow the leader ({l}); it starts as a replica next"
            ),
            Reason::TakingOverOwnLease => write!(f, "taking over the leader lock of my previous process"),
            Reason::NotSynchronous => write!(
                f,
                "following a different leader because i am not the healthiest node (not a synchronous standby)"
            ),
            Reason::NotPromotingWithoutWatchdog => write!(f, "Not promoting self because watchdog could not be activated"),
            Reason::DemotingWithoutWatchdog => write!(f, "Demoting self because watchdog could not be activated"),
            Reason::StartFailedFailingOver(candidates) => write!(
                f,
                "removed leader key after trying and failing to start postgres (can take over: {})",
                candidates.join(", ")
            ),
            Reason::FailingOverAfterCrash(candidates) => write!(
                f,
                "stopped PostgreSQL to fail over after a crash (primary_start_timeout is 0; can take over: {})",
                candidates.join(", ")
            ),
            Reason::StartTimedOut { down_for, timeout, candidates } => write!(
                f,
                "stopped PostgreSQL because of startup timeout (not running as primary for {} s, primary_start_timeout {} s; can take over: {})",
                down_for.as_secs(),
                timeout.as_secs(),
                candidates.join(", ")
            ),
            Reason::StartTimedOutNoFailover => {
                write!(f, "primary start has timed out, but continuing to wait because failover is not possible")
            }
            Reason::StillStarting(timeout) => {
                write!(f, "PostgreSQL is still starting up, within primary_start_timeout ({} s)", timeout.as_secs())
            }
        }
    }
}

/// A cycle's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// In order.
    pub actions: Vec<Action>,
    /// The sentence.
    pub reason: Reason,
}

impl Decision {
    /// A decision.
    pub fn new(actions: Vec<Action>, reason: Reason) -> Self {
        Decision { actions, reason }
    }

    /// No action.
    pub fn idle(reason: Reason) -> Self {
        Decision { actions: vec![], reason }
    }
}
