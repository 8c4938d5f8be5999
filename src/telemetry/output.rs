//! Where lines go: stderr, or `<log.dir>/patroni.log`, rotated by size as Python's
//! `RotatingFileHandler` rotates Patroni's file.
//!
//! The file keeps Patroni's name so log shippers set up for Patroni find it. Before a line that
//! would make the file reach `log.file_size` bytes, `patroni.log` becomes `patroni.log.1`, the
//! older ones move up by one and the one past `log.file_num` is deleted; `file_size` or `file_num`
//! 0 never rotates (Python's rule). Every line is flushed when written, so a crash loses nothing
//! that was logged. A line the file cannot take goes to stderr with the reason instead of being lost.
//! The rotation itself is the `rolling-file` crate's (same file names, errors returned instead of
//! panics); this module only supplies Python's size rule and `log.mode`.

use std::ffi::OsString;
use std::io;
use std::io::IsTerminal;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::PoisonError;

use chrono::DateTime;
use chrono::Local;
use rolling_file::RollingCondition;
use rolling_file::RollingFileAppender;
use tracing_subscriber::fmt::MakeWriter;

use super::Shared;
use super::TelemetryError;
use crate::config::LogConfig;

/// The log file's name in `log.dir`: Patroni's.
pub const FILE_NAME: &str = "patroni.log";

/// Where lines go now.
#[derive(Debug)]
pub(super) enum Destination {
    /// Standard error.
    Stderr,
    /// The rotated file in `log.dir`.
    File(LogFile),
}

impl Destination {
    /// The destination `config` asks for; the directory is created if missing.
    pub(super) fn open(config: &LogConfig) -> Result<Destination, TelemetryError> {
        match &config.dir {
            None => Ok(Destination::Stderr),
            Some(dir) => LogFile::open(dir, config).map(Destination::File),
        }
    }

    /// Whether lines here may carry ANSI colours.
    pub(super) fn ansi(&self) -> bool {
        match self {
            Destination::Stderr => colours_wanted(io::stderr().is_terminal(), std::env::var_os("NO_COLOR")),
            Destination::File(_) => false,
        }
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        match self {
            Destination::Stderr => io::stderr().lock().write_all(line),
            Destination::File(file) => file.write_line(line),
        }
    }
}

/// Colours only on a terminal, and never when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>).
pub(super) fn colours_wanted(is_terminal: bool, no_color: Option<OsString>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// `<log.dir>/patroni.log` and its rotation.
pub(super) struct LogFile {
    path: PathBuf,
    appender: RollingFileAppender<SizeLimit>,
    mode: Option<u32>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile").field("path", &self.path).field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl LogFile {
    fn open(dir: &Path, config: &LogConfig) -> Result<LogFile, TelemetryError> {
        let open_error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TelemetryError::Open { path, source }
        };
        std::fs::create_dir_all(dir).map_err(|source| TelemetryError::CreateDir { path: dir.to_path_buf(), source })?;
        let path = dir.join(FILE_NAME);
        let rule = SizeLimitRule { max_bytes: config.file_size, n_kept: config.file_num };
        let limit = SizeLimit { rule, next_len: 0, rotated: false };
        let n_kept = usize::try_from(config.file_num).unwrap_or(usize::MAX);
        let appender = RollingFileAppender::new(&path, limit, n_kept).map_err(open_error(&path))?;
        let file = LogFile { path, appender, mode: config.mode };
        file.apply_mode().map_err(open_error(&file.path))?;
        Ok(file)
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        self.appender.condition_mut().next_len = u64::try_from(line.len()).unwrap_or(u64::MAX);
        self.appender.write_all(line)?;
        self.appender.flush()?;
        if std::mem::take(&mut self.appender.condition_mut().rotated) {
            self.apply_mode()?;
        }
        Ok(())
    }

    /// `log.mode` on the current file, as Patroni sets it on every file it opens.
    fn apply_mode(&self) -> io::Result<()> {
        match self.mode {
            Some(mode) => std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode)),
            None => Ok(()),
        }
    }
}

/// `log.file_size` and `log.file_num`, and when they rotate the file.
#[derive(Debug, Clone, Copy)]
pub(super) struct SizeLimitRule {
    /// `log.file_size`.
    pub max_bytes: u64,
    /// `log.file_num`.
    pub n_kept: u32,
}

impl SizeLimitRule {
    /// Python's `RotatingFileHandler.shouldRollover`: rotate before a line of `next_len` bytes that would
    /// make the file of `current_len` bytes reach `max_bytes`; 0 for either setting never rotates. An
    /// empty file is not rotated, so one line longer than `max_bytes` leaves no empty backup behind.
    pub(super) fn rotates(&self, current_len: u64, next_len: u64) -> bool {
        let enabled = self.max_bytes > 0 && self.n_kept > 0;
        enabled && current_len > 0 && current_len.saturating_add(next_len) >= self.max_bytes
    }
}

/// The rotation condition the crate asks before each write.
#[derive(Debug)]
struct SizeLimit {
    rule: SizeLimitRule,
    /// The length of the line about to be written.
    next_len: u64,
    /// Set when the crate rotated: the new file needs `log.mode`.
    rotated: bool,
}

impl RollingCondition for SizeLimit {
    fn should_rollover(&mut self, _now: &DateTime<Local>, current_filesize: u64) -> bool {
        let rotate = self.rule.rotates(current_filesize, self.next_len);
        self.rotated |= rotate;
        rotate
    }
}

/// The `fmt` layer's writer: hands each formatted line to the current [`Destination`].
pub(super) struct Output {
    shared: Arc<Shared>,
}

impl Output {
    pub(super) fn new(shared: Arc<Shared>) -> Output {
        Output { shared }
    }
}

impl<'a> MakeWriter<'a> for Output {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter { shared: &self.shared }
    }
}

/// Writes what it is given (one whole line: the `fmt` layer writes each event with one `write_all`).
pub(super) struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut destination = self.shared.destination.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = destination.write_line(buf) {
            let mut stderr = io::stderr().lock();
            writeln!(stderr, "raftgres: cannot write the log file ({e}); the line follows")?;
            stderr.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
