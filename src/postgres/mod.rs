//! PostgreSQL supervision: the pure parsers and renderers below, and (later) the `Supervisor` handle.
//!
//! The modules listed here are the functional core: they never do I/O, spawn processes or read the clock.

pub mod bootstrap;
pub mod conf;
pub mod controldata;
pub mod files;
pub mod guard;
pub mod params;
pub mod pidfile;
pub mod probe;
pub mod process;
pub mod rewind;
pub mod slots;
pub mod supervisor;
pub mod sync;
pub mod types;
