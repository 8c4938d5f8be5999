//! The single integration-test binary: real PostgreSQL 15 processes, real `raftgres run`
//! processes, real sockets on free loopback ports, temp directories.
//!
//! No timing assertions: waits use `eventually(deadline, probe)`. Tests that need PostgreSQL
//! check for it at run time and print why they skip.

mod api;
mod backup;
mod chaos;
mod check_patroni;
mod cli;
mod cluster;
mod config;
mod drill;
mod failing;
mod failover;
mod fence_switch;
mod guard;
mod haproxy;
mod harness;
mod hooks;
mod leadership;
mod logging;
mod noleader;
mod partition;
mod peer_tls;
mod reload;
mod slots;
mod standby;
mod start_timeout;
mod sync;
mod topology;
mod vip;
mod watchdog;
