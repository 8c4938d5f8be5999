//! Free loopback addresses for the Raft tests' nodes, chosen *below* the kernel's ephemeral range and never
//! handed out twice in one test process.
//!
//! Binding port 0 and releasing it hands out an ephemeral port: the kernel may give the same port to the next
//! bind of port 0 (a CI run started three TLS nodes on two addresses: "duplicate address 127.0.0.1:36021"), and
//! any outgoing connection may take it as its local port before the node binds it. Ports below the range are
//! only taken by someone who asks for them; the set of handed-out ports keeps the tests of one process apart.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::sync::PoisonError;

/// Lowest port handed out (above the well-known and most registered service ports).
const LOWEST: u16 = 20_000;

/// A loopback address (`127.0.0.1:port`) free now, below the ephemeral range, and new to this process.
pub fn free_addr() -> String {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let highest = ephemeral_range_start().saturating_sub(1).max(LOWEST + 1);
    let span = u64::from(highest - LOWEST);
    let mut state = seed();
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..1000 {
        // xorshift64: enough spread for picking ports.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = LOWEST + (state % span) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free loopback port between {LOWEST} and {highest} after 1000 tries");
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A different start per process and per call: the clock, the pid and a counter.
fn seed() -> u64 {
    use std::sync::atomic::AtomicU64;
    use std::sync::atomic::Ordering;
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (u64::from(std::process::id()) << 32) ^ CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9))
        | 1
}
