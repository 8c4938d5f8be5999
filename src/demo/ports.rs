//! Free loopback ports for local test and chaos clusters, chosen *below* the kernel's ephemeral range.
//!
//! A port handed out by binding port 0 lies in the ephemeral range (`net.ipv4.ip_local_port_range`,
//! 32768–60999 by default), where any outgoing connection may take it as its local port. A node of a
//! local cluster that is stopped for a while (a chaos fault, a test restarting a standby) then finds its
//! PostgreSQL or REST port taken ("could not bind … Address already in use"). Ports below the range are
//! only ever taken by someone who asks for them.

use std::net::TcpListener;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;

/// Lowest port handed out (above the well-known and most registered service ports).
const LOWEST: u16 = 20_000;

/// `n` consecutive loopback ports that are free now, below the ephemeral range, and never handed out before in
/// this process; `None` when 500 tries found none. A port handed out may be unbound for a while (a replica's
/// PostgreSQL starts only after its clone), so being free now is not enough: two clusters of one test process
/// would otherwise get the same port and one PostgreSQL fail to start until the other stops.
pub fn free_port_block(n: u16) -> Option<u16> {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let highest = ephemeral_range_start().saturating_sub(n).max(LOWEST + 1);
    let span = u64::from(highest - LOWEST);
    let mut rng = crate::chaos::schedule::Rng::new(seed());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..500 {
        let first = LOWEST + rng.below(span) as u16;
        let ports = first..first + n;
        if ports.clone().any(|port| handed_out.contains(&port)) {
            continue;
        }
        if ports.clone().all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            handed_out.extend(ports);
            return Some(first);
        }
    }
    None
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| parse_range_start(&text))
        .unwrap_or(32_768)
}

/// PURE: the first number of `ip_local_port_range` ("32768\t60999\n").
fn parse_range_start(text: &str) -> Option<u16> {
    text.split_whitespace().next()?.parse().ok()
}

/// A different start per process and per call: the pid, the clock and a counter.
fn seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_below_the_ephemeral_range_and_are_free() {
        assert_eq!(parse_range_start("32768\t60999\n"), Some(32768));
        assert_eq!(parse_range_start(""), None);
        let first = free_port_block(3).expect("three free ports");
        assert!(first >= LOWEST && first + 2 < ephemeral_range_start(), "{first}");
        for port in first..first + 3 {
            assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} is free");
        }
    }
}
