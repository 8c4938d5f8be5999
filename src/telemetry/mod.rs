//! The tracing subscriber: configured only here, once, by the binary.
//!
//! `RUST_LOG` wins; otherwise `default_level` for raftgres and WARN for dependencies.
//! openraft is silenced by default: it logs routine peer timeouts and refusals at ERROR, which
//! would page a human for nothing; raftgres reports what matters (lost quorum, storage
//! failure) itself. `RUST_LOG=openraft=info` brings its lines back.
//! PostgreSQL's own log lines arrive under target `postgres`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (a second call is a no-op).
pub fn init(default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,openraft=off,raftgres={default_level},raft={default_level},postgres={default_level}"
        ))
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(true).try_init();
}
