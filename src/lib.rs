//! raftgres: PostgreSQL high availability with embedded Raft consensus, one binary per node.
//!
//! The library holds everything the `raftgres` binary runs; `main.rs` only parses the command
//! line and dispatches. Modules: [`config`] (static YAML + env, validation with key paths),
//! [`postgres`] (the PostgreSQL supervisor and its pure parsers), [`watchdog`] (the Linux watchdog device).

pub mod api;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod dcs;
pub mod demo;
pub mod ha;
pub mod haproxy;
pub mod node;
pub mod postgres;
pub mod reload;
pub mod status;
pub mod store_failure;
pub mod telemetry;
pub mod vip;
pub mod watchdog;
