//! The tracing subscriber: installed once by the binary from the `log` section, and changed at run
//! time through the [`LogHandle`] it returns.
//!
//! One `fmt` layer behind one filter. The filter is a `reload` layer: `RUST_LOG` wins, else
//! `log.level` for raftgres, its Raft replica, PostgreSQL's lines (target `postgres`) and the
//! operator's scripts (target `script`), and WARN for dependencies. openraft is silenced by default:
//! it logs routine peer timeouts and refusals at ERROR, which would page a human for nothing;
//! raftgres reports what matters (lost quorum, storage failure) itself. `RUST_LOG=openraft=info`
//! brings its lines back.
//! The layer's formatter (`format`) and writer (`output`) read shared settings that
//! [`LogHandle::apply`] swaps, so `log.type`, `log.format`, `log.dir` and the rest change without a
//! new subscriber (tracing allows only one global one).
//! Nothing here may log while it holds the output lock: a log line would wait for that lock.

mod format;
mod output;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::RwLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Registry;

use crate::config::LogConfig;
use crate::config::LogLevel;
pub use output::FILE_NAME;

use self::format::Formatter;
use self::format::Layout;
use self::output::Destination;
use self::output::Output;

/// Why logging could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `log.dir` does not exist and cannot be created.
    #[error("create the log directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log file cannot be opened for appending, or its mode not set.
    #[error("open the log file {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another global subscriber is installed already.
    #[error("install the log subscriber")]
    Install(#[source] tracing_subscriber::util::TryInitError),
    /// The filter could not be replaced (the subscriber is gone).
    #[error("change the log level")]
    Reload(#[source] reload::Error),
}

/// What the formatter and the writer of the one `fmt` layer read for every line.
struct Shared {
    layout: RwLock<Arc<Layout>>,
    destination: Mutex<Destination>,
}

impl Shared {
    fn layout(&self) -> Arc<Layout> {
        Arc::clone(&self.layout.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The running log settings: keep it for the life of the process and call [`LogHandle::apply`]
/// with the re-read `log` section on a reload. Cloning it is cheap; every clone changes the same
/// subscriber.
#[derive(Clone)]
pub struct LogHandle {
    shared: Arc<Shared>,
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start-up: `log.level` never replaces it.
    level_from_env: bool,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle").field("level_from_env", &self.level_from_env).finish_non_exhaustive()
    }
}

/// Installs the global subscriber for `config` (stderr, or the file in `log.dir`); fails when the log
/// file cannot be opened or a subscriber is installed already.
pub fn init(config: &LogConfig) -> Result<LogHandle, TelemetryError> {
    let (subscriber, handle) = build(config, EnvFilter::try_from_default_env().ok())?;
    subscriber.try_init().map_err(TelemetryError::Install)?;
    Ok(handle)
}

/// The subscriber for `config` and its handle, not installed (tests install it for one thread);
/// `env_filter` is `RUST_LOG`'s filter, which replaces `log.level`.
fn build(
    config: &LogConfig,
    env_filter: Option<EnvFilter>,
) -> Result<(impl tracing::Subscriber + Send + Sync + Into<tracing::Dispatch>, LogHandle), TelemetryError> {
    let level_from_env = env_filter.is_some();
    let (filter, filter_handle) = reload::Layer::new(env_filter.unwrap_or_else(|| level_filter(config.level)));
    let destination = Destination::open(config)?;
    let layout = Layout::new(config, destination.ansi());
    let shared = Arc::new(Shared { layout: RwLock::new(Arc::new(layout)), destination: Mutex::new(destination) });
    // ANSI colours, when wanted at all, are chosen per line by the layout; span fields stay plain.
    let fmt_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .event_format(Formatter::new(Arc::clone(&shared)))
        .with_writer(Output::new(Arc::clone(&shared)));
    let subscriber = tracing_subscriber::registry().with(filter).with(fmt_layer);
    Ok((subscriber, LogHandle { shared, filter: filter_handle, level_from_env }))
}

impl LogHandle {
    /// Applies a new `log` section: level (unless `RUST_LOG` is set), type, format, date format,
    /// static fields and the file. The log file is opened again even when `log.dir` is unchanged
    /// (so a file moved away by hand is recreated); when it cannot be opened nothing changes and the
    /// error says why.
    pub fn apply(&self, config: &LogConfig) -> Result<(), TelemetryError> {
        let destination = Destination::open(config)?;
        let layout = Arc::new(Layout::new(config, destination.ansi()));
        if !self.level_from_env {
            self.filter.reload(level_filter(config.level)).map_err(TelemetryError::Reload)?;
        }
        let previous = {
            let mut current = self.shared.destination.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *current, destination)
        };
        *self.shared.layout.write().unwrap_or_else(PoisonError::into_inner) = layout;
        // Closed outside the lock: closing flushes, and a line logged meanwhile must not wait.
        drop(previous);
        Ok(())
    }
}

/// The filter for `log.level` when `RUST_LOG` is not set.
fn level_filter(level: LogLevel) -> EnvFilter {
    let level = level.as_filter();
    EnvFilter::new(format!("warn,openraft=off,raftgres={level},raft={level},postgres={level},script={level}"))
}
