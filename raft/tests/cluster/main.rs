//! In-process 3-node cluster tests on real sled directories and real sockets, with every peer
//! link going through a fault-injecting TCP proxy (`raft::faultproxy::ProxyMesh`).
//!
//! No timing assertions: waits use `eventually(deadline, probe)`; safety is checked by
//! invariants over recorded intervals (leases never overlap in real time).

mod faults;
mod handover;
mod harness;
mod lease;
#[path = "../common/ports.rs"]
mod ports;
mod restart;
mod wire;

pub use harness::*;
