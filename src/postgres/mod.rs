//! PostgreSQL on this node: the `Supervisor` that runs it, the one module that spawns and signals processes,
//! the file writes, and the pure parsers and renderers they use.
//!
//! The imperative shell, which does I/O:
//! - `supervisor/`: the `Supervisor` handle and its methods, by concern (lifecycle, config, datadir,
//!   replication, slots, probe, hooks, restore, error); its `mod.rs` is the table of contents. It also holds the public vocabulary
//!   (`PgConfig`, `StartRole`, `StopMode`, `ConnTarget`, `DataDirState`, `PgError`, ...).
//! - `process`: the only code that spawns PostgreSQL programs or sends signals, and that looks at processes.
//! - `files`: durable writes, ownership checks and the managed files in and next to the data directory.
//! - `guard`: the fence guard process (`raftgres guard`) that stops an orphaned primary at its lease deadline.
//!
//! The functional core, which never does I/O, spawns processes or reads the clock:
//! - `conf`: rendering `postgresql.conf`, `primary_conninfo`, `pg_hba.conf` and `.pgpass`, and the parameter rules.
//! - `controldata`: parsing `pg_controldata` output.
//! - `pidfile`: parsing `postmaster.pid` and the adopt-or-reject decision.
//! - `params`: the user GUCs in force (dynamic ones overlaid by local ones) and `guc_value`.
//! - `slots`: physical replication slot names and the slots a node should have.
//! - `slot_positions`: where each slot should be advanced to, what the leader publishes, which logical slots a
//!   replica copies.
//! - `sync`: rendering and parsing `synchronous_standby_names`.
//! - `types`: value newtypes (`Lsn`, `TimelineId`, `SystemId`, `PgVersion`) and size parsing.

pub mod conf;
pub mod controldata;
pub mod files;
pub mod guard;
pub mod params;
pub mod pidfile;
pub mod process;
pub mod slot_positions;
pub mod slots;
pub mod supervisor;
pub mod sync;
pub mod types;
