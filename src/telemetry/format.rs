//! How one event becomes one line: tracing's own line (`log.type: plain` without `log.format`), a
//! Patroni `%`-style template (`plain` with `log.format`), or a JSON object with python-json-logger's
//! keys (`json`).
//!
//! Outside tracing's own line, `message` is the event's message followed by its fields and then the
//! fields of the spans it happened in, as `key=value` (what tracing's line shows after the target),
//! so nothing an event carries is lost and a JSON line keeps a fixed set of keys (log stores such as
//! Elasticsearch reject a key whose type changes from line to line). [`Record`] and the renderers are
//! pure; only [`Formatter`] reads the clock and the thread.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::DateTime;
use chrono::FixedOffset;
use serde_json::Map;
use serde_json::Value;
use tracing::Event;
use tracing::Level;
use tracing::Subscriber;
use tracing_subscriber::fmt::format::Format;
use tracing_subscriber::fmt::format::Full;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::FormatEvent;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::registry::LookupSpan;

use super::Shared;
use crate::config::Conversion;
use crate::config::LogConfig;
use crate::config::LogField;
use crate::config::LogFormat;
use crate::config::LogKey;
use crate::config::LogType;
use crate::config::Piece;
use crate::config::Template;

/// Python's `asctime` when no `log.dateformat` is set: `2026-12-07 07:35:26,123`, local time.
const PYTHON_ASCTIME: &str = "%Y-%m-%d %H:%M:%S,%3f";

/// What lines look like, from the `log` section and whether the destination shows colours.
#[derive(Debug)]
pub(super) enum Layout {
    /// tracing's own line (time, level, spans, target, message, fields), coloured on a terminal.
    Tracing(Format<Full, Timer>),
    /// Patroni's `%`-style line.
    Template {
        /// The parsed `log.format`.
        template: Template,
        /// `log.dateformat`.
        dateformat: Option<String>,
    },
    /// One JSON object per line.
    Json {
        /// The keys from `log.format`, in order.
        keys: Vec<LogKey>,
        /// `log.static_fields`, added after them.
        static_fields: Map<String, Value>,
        /// `log.dateformat`.
        dateformat: Option<String>,
    },
}

impl Layout {
    /// The layout of `config`; `ansi` says whether the destination wants colours (tracing's line only).
    pub(super) fn new(config: &LogConfig, ansi: bool) -> Layout {
        let dateformat = config.dateformat.clone();
        match (config.kind, &config.format) {
            (LogType::Json, _) => {
                Layout::Json { keys: config.json_keys(), static_fields: config.static_fields.clone(), dateformat }
            }
            (LogType::Plain, Some(LogFormat::Template(template))) => {
                Layout::Template { template: template.clone(), dateformat }
            }
            (LogType::Plain, _) => Layout::Tracing(Format::default().with_ansi(ansi).with_timer(Timer(dateformat))),
        }
    }
}

/// The time on tracing's line: RFC 3339 in UTC as tracing writes it, or local time in `log.dateformat`.
#[derive(Debug, Clone)]
pub(super) struct Timer(Option<String>);

impl FormatTime for Timer {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match &self.0 {
            None => SystemTime.format_time(w),
            Some(dateformat) => write!(w, "{}", chrono::Local::now().format(dateformat)),
        }
    }
}

/// The event formatter of the one `fmt` layer: reads the current [`Layout`] for every event.
pub(super) struct Formatter {
    shared: Arc<Shared>,
}

impl Formatter {
    pub(super) fn new(shared: Arc<Shared>) -> Formatter {
        Formatter { shared }
    }
}

impl<S, N> FormatEvent<S, N> for Formatter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let layout = self.shared.layout();
        let (message, dateformat) = match &*layout {
            Layout::Tracing(format) => return format.format_event(ctx, writer, event),
            Layout::Template { dateformat, .. } | Layout::Json { dateformat, .. } => {
                (message(ctx, event)?, dateformat.as_deref())
            }
        };
        let thread = std::thread::current();
        let meta = event.metadata();
        let record = Record {
            time: chrono::Local::now().fixed_offset(),
            level: *meta.level(),
            target: meta.target(),
            message: &message,
            file: meta.file(),
            line: meta.line(),
            process: std::process::id(),
            thread: i64::from(nix::unistd::gettid().as_raw()),
            thread_name: thread.name(),
        };
        match &*layout {
            Layout::Tracing(_) => Ok(()),
            Layout::Template { template, .. } => render_template(&record, template, dateformat, &mut writer),
            Layout::Json { keys, static_fields, .. } => {
                render_json(&record, keys, static_fields, dateformat, &mut writer)
            }
        }?;
        writer.write_char('\n')
    }
}

/// The event's message and fields, then the fields of its spans from the outermost, as `key=value`.
fn message<S, N>(ctx: &FmtContext<'_, S, N>, event: &Event<'_>) -> Result<String, fmt::Error>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let mut res = String::new();
    ctx.format_fields(Writer::new(&mut res), event)?;
    for span in ctx.event_scope().into_iter().flat_map(|scope| scope.from_root()) {
        let extensions = span.extensions();
        if let Some(fields) = extensions.get::<FormattedFields<N>>().filter(|fields| !fields.is_empty()) {
            if !res.is_empty() {
                res.push(' ');
            }
            res.push_str(fields);
        }
    }
    Ok(res)
}

/// What a line may show of one event: the Python `LogRecord` attributes raftgres has.
#[derive(Debug, Clone)]
pub(super) struct Record<'a> {
    /// When it was logged, with the local offset.
    pub time: DateTime<FixedOffset>,
    /// The level.
    pub level: Level,
    /// The tracing target (Python's logger name).
    pub target: &'a str,
    /// Message, fields and span fields.
    pub message: &'a str,
    /// The source file.
    pub file: Option<&'a str>,
    /// The source line.
    pub line: Option<u32>,
    /// This process.
    pub process: u32,
    /// The operating system's thread id.
    pub thread: i64,
    /// The thread's name.
    pub thread_name: Option<&'a str>,
}

impl Record<'_> {
    /// The value of `field`; `null` where raftgres has none.
    pub(super) fn value(&self, field: &LogField, dateformat: Option<&str>) -> Value {
        let file_name = self.file.map(|path| path.rsplit('/').next().unwrap_or(path));
        match field {
            LogField::Asctime => Value::String(asctime(&self.time, dateformat)),
            LogField::Created => Value::from(self.time.timestamp_micros() as f64 / 1e6),
            LogField::Msecs => Value::from(f64::from(self.time.timestamp_subsec_micros()) / 1e3),
            LogField::Levelname => Value::from(level_name(self.level)),
            LogField::Levelno => Value::from(level_number(self.level)),
            LogField::Message => Value::from(self.message),
            LogField::Name => Value::from(self.target),
            LogField::Module => file_name.map_or(Value::Null, |name| Value::from(name.trim_end_matches(".rs"))),
            LogField::Pathname => self.file.map_or(Value::Null, Value::from),
            LogField::Filename => file_name.map_or(Value::Null, Value::from),
            LogField::Lineno => self.line.map_or(Value::Null, Value::from),
            LogField::Process => Value::from(self.process),
            LogField::ProcessName => Value::from("raftgres"),
            LogField::Thread => Value::from(self.thread),
            LogField::ThreadName => self.thread_name.map_or(Value::Null, Value::from),
            LogField::Other(_) => Value::Null,
        }
    }
}

/// Python's level names; tracing's TRACE keeps its name.
pub(super) fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

/// Python's level numbers; TRACE is 5, as Python libraries that add it number it.
fn level_number(level: Level) -> u8 {
    match level {
        Level::TRACE => 5,
        Level::DEBUG => 10,
        Level::INFO => 20,
        Level::WARN => 30,
        Level::ERROR => 40,
    }
}

/// `time` as Python's `asctime`: `dateformat` (strftime), else `2026-12-07 07:35:26,123`.
pub(super) fn asctime(time: &DateTime<FixedOffset>, dateformat: Option<&str>) -> String {
    let mut res = String::new();
    // `log.dateformat` was checked when the configuration was read; a format chrono still cannot
    // render leaves the time empty rather than losing the line.
    if write!(res, "{}", time.format(dateformat.unwrap_or(PYTHON_ASCTIME))).is_err() {
        res.clear();
    }
    res
}

/// One JSON object: the `keys` in order, then `static_fields`; a repeated key keeps its first place
/// and takes the last value, as python-json-logger's dictionary does. No newline.
pub(super) fn render_json(
    record: &Record<'_>,
    keys: &[LogKey],
    static_fields: &Map<String, Value>,
    dateformat: Option<&str>,
    out: &mut impl fmt::Write,
) -> fmt::Result {
    let mut entries: Vec<(&str, Value)> = Vec::with_capacity(keys.len() + static_fields.len());
    let fields = keys.iter().map(|key| (key.key.as_str(), record.value(&key.field, dateformat)));
    let statics = static_fields.iter().map(|(key, value)| (key.as_str(), value.clone()));
    for (key, value) in fields.chain(statics) {
        match entries.iter_mut().find(|(existing, _)| *existing == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key, value)),
        }
    }
    out.write_char('{')?;
    for (entry_idx, (key, value)) in entries.iter().enumerate() {
        if entry_idx > 0 {
            out.write_str(", ")?;
        }
        // serde_json's Display writes compact JSON with every string escaped.
        write!(out, "{}: {value}", Value::from(*key))?;
    }
    out.write_char('}')
}

/// A line of Patroni's `%`-style format. No newline.
pub(super) fn render_template(
    record: &Record<'_>,
    template: &Template,
    dateformat: Option<&str>,
    out: &mut impl fmt::Write,
) -> fmt::Result {
    for piece in &template.pieces {
        match piece {
            Piece::Literal(text) => out.write_str(text)?,
            Piece::Field(field, conversion) => {
                let text = convert(&record.value(field, dateformat), conversion);
                pad(&text, conversion, out)?;
            }
        }
    }
    Ok(())
}

/// The value as Python's `%` operator converts it (`None` for null).
fn convert(value: &Value, conversion: &Conversion) -> String {
    match (conversion.kind, value) {
        (_, Value::Null) => "None".to_string(),
        ('d' | 'i' | 'u', Value::Number(number)) => match number.as_i64() {
            Some(int) => int.to_string(),
            None => format!("{}", number.as_f64().unwrap_or(0.0).trunc()),
        },
        ('f' | 'F', Value::Number(number)) => {
            format!("{:.*}", conversion.precision.unwrap_or(6), number.as_f64().unwrap_or(0.0))
        }
        ('r' | 'a', Value::String(text)) => format!("'{text}'"),
        (_, Value::String(text)) => match conversion.precision {
            Some(precision) => text.chars().take(precision).collect(),
            None => text.clone(),
        },
        (_, other) => other.to_string(),
    }
}

/// `text` padded to the conversion's width: on the right with `-`, with zeros for a zero-flagged
/// number, else with spaces on the left.
fn pad(text: &str, conversion: &Conversion, out: &mut impl fmt::Write) -> fmt::Result {
    let n_missing = conversion.width.unwrap_or(0).saturating_sub(text.chars().count());
    let numeric = "diouxXeEfFgG".contains(conversion.kind);
    match (conversion.left, conversion.zero && numeric) {
        (true, _) => write!(out, "{text}{:n_missing$}", ""),
        (false, true) => match text.strip_prefix('-') {
            Some(digits) => write!(out, "-{}{digits}", "0".repeat(n_missing)),
            None => write!(out, "{}{text}", "0".repeat(n_missing)),
        },
        (false, false) => write!(out, "{:n_missing$}{text}", ""),
    }
}
