//! PURE: the seeded fault plan of a chaos run: which fault comes next, on which kind of node,
//! for how long, and how long the cluster rests afterwards.
//!
//! The same seed and kinds always give the same plan, on every machine (a local splitmix64, not
//! a library generator whose stream may change between versions), so a violation's seed replays
//! the same sequence of faults. It must not touch processes, sockets or the clock.

use std::fmt;
use std::time::Duration;

/// One kind of fault the harness can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `kill -9` of a node's raftgres process; started again after the hold.
    KillRaftgres,
    /// `kill -9` of a node's postmaster; its raftgres brings PostgreSQL back.
    KillPostmaster,
    /// `kill -9` of raftgres, then of its postmaster; raftgres started again after the hold.
    KillBoth,
    /// SIGSTOP of a node's raftgres for the hold (a frozen manager), then SIGCONT.
    FreezeRaftgres,
    /// SIGSTOP of a node's postmaster for the hold, then SIGCONT.
    FreezePostmaster,
    /// Every raft link to and from a node black-holed for the hold.
    IsolateRaft,
    /// A node's raft links cut in one direction only for the hold.
    OneWayRaft,
    /// SIGTERM of a node's raftgres (a clean stop), then a start.
    CleanRestart,
    /// SIGTERM of all three raftgres processes at once, then all started again.
    RestartAll,
    /// Every Raft link to and from a node slowed down (20–500 ms per chunk, both ways) by the proxies.
    SlowRaft,
    /// A node's raftgres and/or PostgreSQL throttled to 2 % of a CPU by a cgroup.
    StarveCpu,
    /// The filesystem of a node's PostgreSQL data directory (WAL included) filled to the last block.
    DiskFullPg,
    /// The filesystem of a node's Raft directory filled to the last block.
    DiskFullRaft,
    /// `--net netns`: a node cut off from everyone (peers and clients), both ways.
    IsolateNode,
    /// `--net netns`: a 1|2 split with the clients on the node's side: it is cut from its peers only.
    SplitNode,
    /// `--net netns`: a node's traffic to its peers (or from them) dropped in one direction.
    OneWayNode,
    /// `--net netns`: 10–50 % of a node's packets dropped, both ways, clients' included.
    LossyNode,
    /// `--net netns`: a node's network flapping: cut off and back every 0.3–2 s.
    FlapNode,
}

/// What the machine must offer for a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing beyond the processes and the Raft proxies.
    Nothing,
    /// The nodes in network namespaces (`--net netns`).
    Netns,
    /// A cgroup CPU controller.
    Cgroups,
    /// Loop-mounted filesystems per node.
    Volumes,
}

/// Every kind, in the order the report lists them.
pub const ALL_KINDS: [FaultKind; 18] = [
    FaultKind::KillRaftgres,
    FaultKind::KillPostmaster,
    FaultKind::KillBoth,
    FaultKind::FreezeRaftgres,
    FaultKind::FreezePostmaster,
    FaultKind::IsolateRaft,
    FaultKind::OneWayRaft,
    FaultKind::CleanRestart,
    FaultKind::RestartAll,
    FaultKind::SlowRaft,
    FaultKind::StarveCpu,
    FaultKind::DiskFullPg,
    FaultKind::DiskFullRaft,
    FaultKind::IsolateNode,
    FaultKind::SplitNode,
    FaultKind::OneWayNode,
    FaultKind::LossyNode,
    FaultKind::FlapNode,
];

impl FaultKind {
    /// The kind's name on the command line and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::KillRaftgres => "kill-raftgres",
            FaultKind::KillPostmaster => "kill-postmaster",
            FaultKind::KillBoth => "kill-both",
            FaultKind::FreezeRaftgres => "freeze-raftgres",
            FaultKind::FreezePostmaster => "freeze-postmaster",
            FaultKind::IsolateRaft => "isolate-raft",
            FaultKind::OneWayRaft => "one-way-raft",
            FaultKind::CleanRestart => "clean-restart",
            FaultKind::RestartAll => "restart-all",
            FaultKind::SlowRaft => "slow-raft",
            FaultKind::StarveCpu => "starve-cpu",
            FaultKind::DiskFullPg => "disk-full-pg",
            FaultKind::DiskFullRaft => "disk-full-raft",
            FaultKind::IsolateNode => "isolate-node",
            FaultKind::SplitNode => "split-node",
            FaultKind::OneWayNode => "one-way-node",
            FaultKind::LossyNode => "lossy-node",
            FaultKind::FlapNode => "flap-node",
        }
    }

    /// What the machine must offer for this kind.
    pub fn needs(self) -> Need {
        match self {
            FaultKind::IsolateNode
            | FaultKind::SplitNode
            | FaultKind::OneWayNode
            | FaultKind::LossyNode
            | FaultKind::FlapNode => Need::Netns,
            FaultKind::StarveCpu => Need::Cgroups,
            FaultKind::DiskFullPg | FaultKind::DiskFullRaft => Need::Volumes,
            _ => Need::Nothing,
        }
    }

    /// Parses [`FaultKind::as_str`].
    pub fn parse(text: &str) -> Option<FaultKind> {
        ALL_KINDS.into_iter().find(|kind| kind.as_str() == text)
    }

    /// How long the fault lasts before it is healed: (shortest, longest). Freezes and cuts reach
    /// past the default `ttl` (3 s) often enough to force failovers, and stay under it often
    /// enough to test a primary that keeps its lease through a short outage.
    fn hold_range(self) -> (Duration, Duration) {
        let secs = |lo, hi| (Duration::from_secs(lo), Duration::from_secs(hi));
        match self {
            FaultKind::KillPostmaster | FaultKind::CleanRestart | FaultKind::RestartAll => secs(0, 2),
            FaultKind::KillRaftgres | FaultKind::KillBoth => secs(1, 6),
            FaultKind::FreezeRaftgres | FaultKind::FreezePostmaster => secs(1, 12),
            FaultKind::IsolateRaft | FaultKind::OneWayRaft | FaultKind::IsolateNode | FaultKind::SplitNode => {
                secs(1, 12)
            }
            FaultKind::OneWayNode | FaultKind::StarveCpu => secs(2, 12),
            FaultKind::SlowRaft | FaultKind::LossyNode | FaultKind::FlapNode => secs(3, 15),
            FaultKind::DiskFullPg | FaultKind::DiskFullRaft => secs(2, 15),
        }
    }

    /// Whether the fault hits every node rather than one.
    pub fn hits_all(self) -> bool {
        self == FaultKind::RestartAll
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which node a fault hits, resolved against the cluster's roles when it is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The node that currently runs the primary.
    Primary,
    /// One of the replicas (the `pick` of the fault chooses which).
    Replica,
}

/// One planned fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// What to do.
    pub kind: FaultKind,
    /// Whom to do it to (ignored by kinds that hit every node).
    pub target: Target,
    /// A seeded number that chooses among several candidate nodes and the direction of a one-way cut.
    pub pick: u64,
    /// How long the fault lasts before it is healed.
    pub hold: Duration,
    /// How long the healed cluster runs undisturbed before the next fault.
    pub rest: Duration,
}

impl Fault {
    /// For one-way cuts: true when the target can no longer reach the others (else the others
    /// can no longer reach it).
    pub fn outbound(&self) -> bool {
        self.pick & 1 == 0
    }

    /// Chooses one of `n_candidates` (at least 1) with the fault's seeded number.
    pub fn choose(&self, n_candidates: usize) -> usize {
        (self.pick >> 1) as usize % n_candidates.max(1)
    }

    /// A seeded number in `lo..=hi` for the fault's own parameter (loss percent, delay, which
    /// processes), independent of [`Fault::choose`] and [`Fault::outbound`].
    pub fn param(&self, lo: u64, hi: u64) -> u64 {
        lo + (self.pick >> 16) % (hi.saturating_sub(lo) + 1)
    }
}

/// splitmix64: tiny, good enough for a fault plan, and the same stream everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` at least 1).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A duration in `lo..=hi`, whole milliseconds.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo_ms, hi_ms) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo_ms + self.below(hi_ms.saturating_sub(lo_ms) + 1))
    }
}

/// The plan: an endless, seeded sequence of faults drawn from `kinds` (all kinds when empty).
/// Two faults in three target the primary, where failures matter most.
#[derive(Debug, Clone)]
pub struct Plan {
    rng: Rng,
    kinds: Vec<FaultKind>,
}

impl Plan {
    /// A plan for `seed` over `kinds`.
    pub fn new(seed: u64, kinds: &[FaultKind]) -> Plan {
        let kinds = if kinds.is_empty() { ALL_KINDS.to_vec() } else { kinds.to_vec() };
        Plan { rng: Rng::new(seed), kinds }
    }
}

impl Iterator for Plan {
    type Item = Fault;

    fn next(&mut self) -> Option<Fault> {
        let kind = self.kinds[self.rng.below(self.kinds.len() as u64) as usize];
        let target = if self.rng.below(3) < 2 { Target::Primary } else { Target::Replica };
        let pick = self.rng.next_u64();
        let (lo, hi) = kind.hold_range();
        let hold = self.rng.between(lo, hi);
        let rest = self.rng.between(Duration::from_secs(1), Duration::from_secs(4));
        Some(Fault { kind, target, pick, hold, rest })
    }
}

/// Parses a comma-separated list of kinds (`kill-raftgres,isolate-raft`); names the bad one.
pub fn parse_kinds(text: &str) -> Result<Vec<FaultKind>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            FaultKind::parse(part).ok_or_else(|| {
                let known: Vec<&str> = ALL_KINDS.iter().map(|kind| kind.as_str()).collect();
                format!("unknown fault kind {part:?}; known: {}", known.join(", "))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let first: Vec<Fault> = Plan::new(42, &[]).take(50).collect();
        let second: Vec<Fault> = Plan::new(42, &[]).take(50).collect();
        assert_eq!(first, second);
        let other: Vec<Fault> = Plan::new(43, &[]).take(50).collect();
        assert_ne!(first, other);
    }

    #[test]
    fn the_stream_is_stable_across_versions() {
        // splitmix64's first output for seed 0 (published reference value).
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn every_kind_appears_and_holds_stay_in_range() {
        let faults: Vec<Fault> = Plan::new(7, &[]).take(500).collect();
        for kind in ALL_KINDS {
            assert!(faults.iter().any(|f| f.kind == kind), "{kind} never planned");
        }
        for fault in &faults {
            let (lo, hi) = fault.kind.hold_range();
            assert!(fault.hold >= lo && fault.hold <= hi, "{fault:?}");
            assert!(fault.rest >= Duration::from_secs(1) && fault.rest <= Duration::from_secs(4));
        }
        let on_primary = faults.iter().filter(|f| f.target == Target::Primary).count();
        assert!((250..=420).contains(&on_primary), "about two in three on the primary: {on_primary}");
    }

    #[test]
    fn params_stay_in_range() {
        for fault in Plan::new(3, &[]).take(200) {
            assert!((10..=50).contains(&fault.param(10, 50)));
        }
    }

    #[test]
    fn a_kind_list_restricts_the_plan() {
        let kinds = [FaultKind::IsolateRaft];
        assert!(Plan::new(1, &kinds).take(30).all(|f| f.kind == FaultKind::IsolateRaft));
    }

    #[test]
    fn kinds_parse_and_bad_names_are_named() {
        assert_eq!(parse_kinds("kill-both, isolate-raft"), Ok(vec![FaultKind::KillBoth, FaultKind::IsolateRaft]));
        assert_eq!(parse_kinds(""), Ok(vec![]));
        assert!(parse_kinds("kill-all").is_err_and(|e| e.contains("\"kill-all\"")));
        for kind in ALL_KINDS {
            assert_eq!(FaultKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn choose_stays_in_range() {
        let fault = Fault {
            kind: FaultKind::KillRaftgres,
            target: Target::Replica,
            pick: u64::MAX,
            hold: Duration::ZERO,
            rest: Duration::ZERO,
        };
        assert!(fault.choose(2) < 2);
        assert_eq!(fault.choose(0), 0);
    }
}
