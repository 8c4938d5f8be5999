//! The fence guard: a small process (`raftgres guard`) that outlives a killed or frozen raftgres
//! and stops the postmaster when the primary's leader lease runs out.
//!
//! Failure scenario it closes: (1) raftgres on the primary is killed (`kill -9`) or frozen
//! (`SIGSTOP`) while PostgreSQL keeps running, by design, so a restarted raftgres can adopt it;
//! (2) nobody renews the lease, the Raft leader expires it after ttl and a replica promotes;
//! (3) without a guard the orphaned primary would accept direct writes next to the new one.
//! The guard reads the lease deadline raftgres last wrote (a `CLOCK_MONOTONIC` instant, shared
//! by every process on the host) and sends SIGQUIT to the postmaster at that instant.
//! The file format is one line, rendered and parsed here (PURE): `raftgres-guard v1 <owner pid>
//! primary <deadline ns> <postmaster pid> <postmaster start time>` or `... <owner pid> none`.

use std::path::Path;
use std::time::Duration;

use super::process;
use super::process::PostmasterId;

/// How often the guard looks at the file.
pub const POLL: Duration = Duration::from_millis(50);

/// What the file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLine {
    /// The raftgres process that wrote it.
    pub owner: u32,
    /// While primary: the lease deadline (CLOCK_MONOTONIC ns) and the postmaster to stop.
    pub primary: Option<(u64, PostmasterId)>,
}

impl GuardLine {
    /// PURE: the file's one line.
    pub fn render(&self) -> String {
        match self.primary {
            Some((deadline, id)) => {
                format!("raftgres-guard v1 {} primary {deadline} {} {}\n", self.owner, id.pid, id.start_time)
            }
            None => format!("raftgres-guard v1 {} none\n", self.owner),
        }
    }

    /// PURE: parses the line; `None` for anything else (a torn or foreign file).
    pub fn parse(text: &str) -> Option<GuardLine> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        match fields.as_slice() {
            ["raftgres-guard", "v1", owner, "none"] => Some(GuardLine { owner: owner.parse().ok()?, primary: None }),
            ["raftgres-guard", "v1", owner, "primary", deadline, pid, start] => Some(GuardLine {
                owner: owner.parse().ok()?,
                primary: Some((
                    deadline.parse().ok()?,
                    PostmasterId { pid: pid.parse().ok()?, start_time: start.parse().ok()? },
                )),
            }),
            _ => None,
        }
    }
}

/// What the guard does after reading the file (PURE decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardStep {
    /// Keep watching.
    Watch,
    /// Stop this postmaster now.
    Fence(PostmasterId),
    /// Nothing left to guard: exit.
    Exit,
}

/// PURE: the guard's decision given the file, whether its parent raftgres lives, and the time.
pub fn step(line: Option<GuardLine>, parent: u32, parent_alive: bool, now_ns: u64) -> GuardStep {
    match line {
        Some(GuardLine { primary: Some((deadline, id)), .. }) if now_ns >= deadline => GuardStep::Fence(id),
        // A newer raftgres owns the file and runs its own guard.
        Some(GuardLine { owner, .. }) if owner != parent && !parent_alive => GuardStep::Exit,
        Some(GuardLine { primary: None, .. }) | None if !parent_alive => GuardStep::Exit,
        _ => GuardStep::Watch,
    }
}

/// CLOCK_MONOTONIC now, in ns (the same clock in every process of the host).
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// Writes the file atomically (temp + rename); the guard never sees a torn line.
pub fn write(path: &Path, line: &GuardLine) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, line.render())?;
    std::fs::rename(&tmp, path)
}

/// The guard process's main loop (`raftgres guard --file F --parent P`): plain threads and blocking reads, no
/// async runtime (one is made for a moment only to remove the floating address), so the process stays small.
// Blocking sleep on purpose: this process runs no async runtime (see above).
/// The guard's command line: `raftgres guard …` and the `raftgres-guard` binary take the same arguments.
#[derive(clap::Parser)]
#[command(name = "raftgres guard")]
struct GuardCli {
    /// The guard file written by raftgres.
    #[arg(long)]
    file: std::path::PathBuf,
    /// The raftgres process that started this guard.
    #[arg(long)]
    parent: u32,
    /// The floating address (`vip.address`) to remove when the lease runs out.
    #[arg(long, requires = "vip_interface")]
    vip: Option<String>,
    /// The interface that holds it (`vip.interface`).
    #[arg(long, requires = "vip")]
    vip_interface: Option<String>,
}

/// Parses the guard's arguments (`args[0]` is the program) and runs it on this thread, without an async runtime.
pub fn main(args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    use clap::Parser;
    let cli = GuardCli::parse_from(args);
    let vip = match (cli.vip, cli.vip_interface) {
        (Some(address), Some(interface)) => match address.parse::<ipnet::Ipv4Net>() {
            Ok(address) => Some(crate::config::VipConfig { address, interface, arping_count: 0 }),
            Err(e) => {
                eprintln!("error: --vip {address:?}: expected an IPv4 address/prefix: {e}");
                return std::process::ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    run(&cli.file, cli.parent, vip.as_ref());
    std::process::ExitCode::SUCCESS
}

#[allow(clippy::disallowed_methods)]
pub fn run(file: &Path, parent: u32, vip: Option<&crate::config::VipConfig>) {
    let me = std::process::id();
    eprintln!("raftgres guard {me}: watching {} for raftgres pid {parent}", file.display());
    // The postmaster whose lapsed lease already removed the floating address: once per lapse, not at every poll.
    let mut vip_dropped_for = None;
    loop {
        let line = std::fs::read_to_string(file).ok().and_then(|text| GuardLine::parse(&text));
        match step(line, parent, process::pid_alive(parent), monotonic_ns()) {
            GuardStep::Watch => {}
            GuardStep::Exit => {
                eprintln!("raftgres guard {me}: raftgres {parent} is gone and nothing is left to guard");
                return;
            }
            GuardStep::Fence(id) => {
                if let Some(vip) = vip.filter(|_| vip_dropped_for != Some(id)) {
                    vip_dropped_for = Some(id);
                    remove_vip(me, vip);
                }
                match process::fence_postmaster(id) {
                    Ok(true) => eprintln!(
                        "raftgres guard {me}: the leader lease ran out without a renewal; stopped postmaster {} (SIGQUIT)",
                        id.pid
                    ),
                    Ok(false) => {
                        if !process::pid_alive(parent) {
                            return;
                        }
                    }
                    Err(e) => eprintln!("raftgres guard {me}: failed to stop postmaster {}: {e}", id.pid),
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Removes the floating address on a runtime made for the purpose (netlink is asynchronous).
fn remove_vip(me: u32, vip: &crate::config::VipConfig) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("raftgres guard {me}: failed to remove the floating address: start a runtime: {e}");
            return;
        }
    };
    match runtime.block_on(crate::vip::link::remove(vip)) {
        Ok(true) => eprintln!(
            "raftgres guard {me}: the leader lease ran out; removed the floating address {} from {}",
            vip.address, vip.interface
        ),
        Ok(false) => {}
        Err(e) => eprintln!("raftgres guard {me}: failed to remove the floating address: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PM: PostmasterId = PostmasterId { pid: 42, start_time: 1700000000 };

    #[test]
    fn lines_round_trip() {
        for line in [GuardLine { owner: 7, primary: None }, GuardLine { owner: 7, primary: Some((123, PM)) }] {
            assert_eq!(GuardLine::parse(&line.render()), Some(line));
        }
        assert_eq!(GuardLine::parse("garbage"), None);
        assert_eq!(GuardLine::parse("raftgres-guard v1 7 primary x 1 2"), None);
    }

    #[track_caller]
    fn check(line: Option<GuardLine>, parent_alive: bool, now: u64, want: GuardStep) {
        assert_eq!(step(line, 7, parent_alive, now), want);
    }

    #[test]
    fn guard_steps() {
        let primary = Some(GuardLine { owner: 7, primary: Some((100, PM)) });
        let none = Some(GuardLine { owner: 7, primary: None });
        let newer_owner = Some(GuardLine { owner: 8, primary: Some((100, PM)) });
        check(primary, true, 50, GuardStep::Watch);
        check(primary, true, 100, GuardStep::Fence(PM));
        check(primary, false, 50, GuardStep::Watch);
        check(primary, false, 150, GuardStep::Fence(PM));
        check(none, true, 150, GuardStep::Watch);
        check(none, false, 150, GuardStep::Exit);
        check(None, false, 0, GuardStep::Exit);
        check(newer_owner, false, 50, GuardStep::Exit);
        check(newer_owner, false, 150, GuardStep::Fence(PM));
    }
}
