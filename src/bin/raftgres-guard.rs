//! `raftgres-guard`: the fence guard as a program of its own (see `raftgres::postgres::guard`).
//!
//! raftgres starts it next to itself when it is installed there, else runs `raftgres guard`. The guard's job is a
//! few lines (read a file, compare a clock, signal a process), and a small binary keeps it small in memory too:
//! the pages of the full raftgres binary that a second process maps count in its resident size.

fn main() -> std::process::ExitCode {
    raftgres::postgres::guard::main(std::env::args_os().collect())
}
