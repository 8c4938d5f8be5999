//! PURE: the `log` section: level, output type, Patroni's `format` (a `%`-style string or a list of
//! fields), `dateformat`, `static_fields` and the log file (`dir`, `file_size`, `file_num`, `mode`).
//!
//! Here the keys are only read and checked, with the key path in every error; what they do is
//! `telemetry`'s business. A `%`-style format is parsed here once into a [`Template`], so a bad one
//! is refused at start-up with its path instead of garbling every line.

use std::path::PathBuf;

use serde_json::Map;
use serde_json::Value;

use super::defaults;
use super::walk::expected;
use super::walk::invalid;
use super::walk::parse_int;
use super::walk::Section;
use super::ConfigError;

type Res<T> = Result<T, ConfigError>;

/// `log.level`, with Patroni's names (`WARNING`, `CRITICAL`) accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Per-tick detail.
    Debug,
    /// State changes and decisions.
    Info,
    /// Unexpected but continued.
    Warn,
    /// A human must act.
    Error,
}

impl LogLevel {
    /// The level as a `tracing` filter directive.
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `log.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogType {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line (python-json-logger's shape, as Patroni writes it).
    Json,
}

/// An attribute of a log record that a format may name: Python's `LogRecord` attribute names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogField {
    /// The local time, Python's `2026-12-07 07:35:26,123` or `log.dateformat`.
    Asctime,
    /// Seconds since the epoch, with a fraction.
    Created,
    /// The millisecond part of the time.
    Msecs,
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR` (and `TRACE`).
    Levelname,
    /// Python's number of the level (`TRACE` is 5).
    Levelno,
    /// The event's message with its fields and those of its spans as `key=value`.
    Message,
    /// The logger: the `tracing` target (`raftgres::ha::execute`, `postgres`).
    Name,
    /// The source file's name without `.rs`.
    Module,
    /// The source file's path.
    Pathname,
    /// The source file's name.
    Filename,
    /// The source line.
    Lineno,
    /// The process id.
    Process,
    /// The program name (`raftgres`).
    ProcessName,
    /// The operating system's id of the logging thread.
    Thread,
    /// The logging thread's name.
    ThreadName,
    /// A name raftgres has no value for (Python's `funcName`, `taskName`, a typo): logged as `null`,
    /// as python-json-logger does.
    Other(String),
}

/// The [`LogField`]s raftgres fills, by Python name.
const KNOWN_FIELDS: [(&str, LogField); 15] = [
    ("asctime", LogField::Asctime),
    ("created", LogField::Created),
    ("msecs", LogField::Msecs),
    ("levelname", LogField::Levelname),
    ("levelno", LogField::Levelno),
    ("message", LogField::Message),
    ("name", LogField::Name),
    ("module", LogField::Module),
    ("pathname", LogField::Pathname),
    ("filename", LogField::Filename),
    ("lineno", LogField::Lineno),
    ("process", LogField::Process),
    ("processName", LogField::ProcessName),
    ("thread", LogField::Thread),
    ("threadName", LogField::ThreadName),
];

impl LogField {
    /// The field named `name` (Python's spelling).
    pub fn parse(name: &str) -> LogField {
        let known = KNOWN_FIELDS.iter().find(|(known, _)| *known == name);
        known.map_or_else(|| LogField::Other(name.to_string()), |(_, field)| field.clone())
    }

    /// Python's name of the field.
    pub fn name(&self) -> &str {
        match self {
            LogField::Other(name) => name,
            known => KNOWN_FIELDS.iter().find(|(_, field)| field == known).map_or("", |(name, _)| name),
        }
    }
}

/// One key of a JSON line: the record attribute and the key it is written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKey {
    /// The attribute.
    pub field: LogField,
    /// The JSON key (the attribute's name unless the format renames it).
    pub key: String,
}

/// How a `%(name)` placeholder pads and converts its value (Python's `%`-format spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conversion {
    /// `-`: pad on the right.
    pub left: bool,
    /// `0`: pad numbers with zeros.
    pub zero: bool,
    /// Minimum width.
    pub width: Option<usize>,
    /// Digits of a float, or the most characters of a string.
    pub precision: Option<usize>,
    /// The conversion character (`s`, `d`, `f`, `r`, …).
    pub kind: char,
}

/// A piece of a parsed `%`-style format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text copied as is (`%%` already turned into `%`).
    Literal(String),
    /// A `%(name)s` placeholder.
    Field(LogField, Conversion),
}

/// A parsed `%`-style format such as Patroni's default `%(asctime)s %(levelname)s: %(message)s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The format as written.
    pub text: String,
    /// The format, parsed.
    pub pieces: Vec<Piece>,
}

/// The conversion characters of Python's `%`-format.
const CONVERSIONS: &str = "diouxXeEfFgGcrsa";

impl Template {
    /// Parses `text`; the error says what is wrong (an unclosed `%(`, a placeholder without a conversion).
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(idx) = rest.find('%') {
            literal.push_str(&rest[..idx]);
            rest = &rest[idx + 1..];
            if let Some(after) = rest.strip_prefix('%') {
                literal.push('%');
                rest = after;
                continue;
            }
            let Some(after) = rest.strip_prefix('(') else {
                // A lone `%` is text, as in a plain Python string.
                literal.push('%');
                continue;
            };
            let close = after.find(')').ok_or_else(|| format!("unclosed %( in {text:?}"))?;
            let name = &after[..close];
            let (conversion, after_spec) = parse_conversion(&after[close + 1..])
                .ok_or_else(|| format!("%({name}) needs a conversion such as %({name})s"))?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Field(LogField::parse(name), conversion));
            rest = after_spec;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template { text: text.to_string(), pieces })
    }

    /// The fields the template names, in order, each once.
    pub fn fields(&self) -> Vec<LogField> {
        let mut res: Vec<LogField> = Vec::new();
        for piece in &self.pieces {
            if let Piece::Field(field, _) = piece {
                if !res.contains(field) {
                    res.push(field.clone());
                }
            }
        }
        res
    }
}

/// `[-0 +#]*[width][.precision]conversion` after `%(name)`; the rest of the text after it.
fn parse_conversion(text: &str) -> Option<(Conversion, &str)> {
    let mut res = Conversion::default();
    let mut chars = text.char_indices().peekable();
    while let Some((_, flag @ ('-' | '0' | ' ' | '+' | '#'))) = chars.peek().copied() {
        res.left |= flag == '-';
        res.zero |= flag == '0';
        chars.next();
    }
    let number = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        let mut digits = String::new();
        while let Some((_, digit)) = chars.peek().copied().filter(|(_, c)| c.is_ascii_digit()) {
            digits.push(digit);
            chars.next();
        }
        digits.parse::<usize>().ok()
    };
    res.width = number(&mut chars);
    if chars.peek().is_some_and(|(_, c)| *c == '.') {
        chars.next();
        res.precision = Some(number(&mut chars).unwrap_or(0));
    }
    let (idx, kind) = chars.next().filter(|(_, c)| CONVERSIONS.contains(*c))?;
    res.kind = kind;
    Some((res, &text[idx + kind.len_utf8()..]))
}

/// `log.format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFormat {
    /// A `%`-style string: the line of `type: plain`; for `type: json` its placeholders are the keys.
    Template(Template),
    /// A list of fields, each maybe renamed (`[asctime, {levelname: level}]`); `type: json` only.
    Fields(Vec<LogKey>),
}

impl LogFormat {
    /// The keys of a JSON line, in order.
    pub fn json_keys(&self) -> Vec<LogKey> {
        match self {
            LogFormat::Template(template) => {
                let fields = template.fields().into_iter();
                fields.map(|field| LogKey { key: field.name().to_string(), field }).collect()
            }
            LogFormat::Fields(keys) => keys.clone(),
        }
    }
}

/// The `log` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Least severe level logged.
    pub level: LogLevel,
    /// Output format.
    pub kind: LogType,
    /// `log.format`; `None`: tracing's own line for `plain`, Patroni's default keys for `json`.
    pub format: Option<LogFormat>,
    /// A strftime format for `asctime` (and the plain line's time); `None`: Python's default.
    pub dateformat: Option<String>,
    /// Keys added to every JSON line.
    pub static_fields: Map<String, Value>,
    /// Directory of the log file (`patroni.log`); `None` logs to stderr.
    pub dir: Option<PathBuf>,
    /// The size at which the log file is rotated; 0 never rotates.
    pub file_size: u64,
    /// How many rotated files are kept (`patroni.log.1` is the newest); 0 never rotates.
    pub file_num: u32,
    /// Permission bits of the log file; `None` leaves them to the umask.
    pub mode: Option<u32>,
}

impl Default for LogConfig {
    /// Plain lines on stderr at INFO, the file settings at Patroni's defaults.
    fn default() -> LogConfig {
        LogConfig::with_level(LogLevel::Info)
    }
}

impl LogConfig {
    /// The default settings with `level`: what `raftgres demo` and `chaos` log with.
    pub fn with_level(level: LogLevel) -> LogConfig {
        LogConfig {
            level,
            kind: LogType::Plain,
            format: None,
            dateformat: None,
            static_fields: Map::new(),
            dir: None,
            file_size: defaults::LOG_FILE_SIZE,
            file_num: defaults::LOG_FILE_NUM,
            mode: None,
        }
    }

    /// The keys of a JSON line, in order: those `format` names, else Patroni's default
    /// (`asctime`, `levelname`, `message`, the fields of [`defaults::LOG_FORMAT`]).
    pub fn json_keys(&self) -> Vec<LogKey> {
        match &self.format {
            Some(format) => format.json_keys(),
            None => [LogField::Asctime, LogField::Levelname, LogField::Message]
                .into_iter()
                .map(|field| LogKey { key: field.name().to_string(), field })
                .collect(),
        }
    }
}

/// Reads the `log` section; `warnings` receives the keys raftgres ignores.
pub(crate) fn section(sec: Option<Section<'_>>, warnings: &mut Vec<String>) -> Res<LogConfig> {
    let mut res = LogConfig::default();
    let Some(mut sec) = sec else { return Ok(res) };
    if let Some(level) = sec.str("level")? {
        res.level = match level.trim().to_ascii_uppercase().as_str() {
            "TRACE" => LogLevel::Trace,
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "WARN" | "WARNING" => LogLevel::Warn,
            "ERROR" | "CRITICAL" | "FATAL" => LogLevel::Error,
            _ => {
                let message = format!("expected DEBUG, INFO, WARNING or ERROR, got {level:?}");
                return Err(invalid(sec.path_of("level"), message));
            }
        };
    }
    if let Some(kind) = sec.str("type")? {
        res.kind = match kind.trim().to_ascii_lowercase().as_str() {
            "plain" => LogType::Plain,
            "json" => LogType::Json,
            _ => return Err(invalid(sec.path_of("type"), format!("expected plain or json, got {kind:?}"))),
        };
    }
    res.format = format(&mut sec, res.kind, warnings)?;
    res.dateformat = dateformat(&mut sec)?;
    if let Some(Value::Object(fields)) = sec.raw("static_fields") {
        res.static_fields = fields.clone();
    } else if let Some(other) = sec.raw("static_fields") {
        return Err(expected(sec.path_of("static_fields"), "a map of keys to values", other));
    }
    res.dir = sec.str("dir")?.filter(|dir| !dir.is_empty()).map(PathBuf::from);
    if let Some(size) = sec.int_at_least("file_size", "a number of bytes", 0)? {
        res.file_size = size.unsigned_abs();
    }
    if let Some(n_files) = sec.int_at_least("file_num", "a number of files", 0)? {
        let path = sec.path_of("file_num");
        res.file_num = u32::try_from(n_files).map_err(|_| invalid(path, format!("{n_files} files are too many")))?;
    }
    res.mode = mode(&mut sec)?;
    // Patroni's deduplicate_heartbeat_logs logs the HA loop's sentence only when it changes, which is
    // what raftgres always does (the decision at INFO when it changes, at DEBUG otherwise).
    sec.bool("deduplicate_heartbeat_logs")?;
    let reason = "has no effect: raftgres logs an error with its cause chain, never a traceback";
    sec.ignore(&["traceback_level"], reason, warnings);
    let reason = "has no effect: raftgres writes each line when it is logged, without a queue";
    sec.ignore(&["max_queue_size"], reason, warnings);
    let reason = "is not supported by raftgres; set levels per module with RUST_LOG \
                  (for example RUST_LOG=info,raftgres::ha=debug)";
    sec.ignore(&["loggers"], reason, warnings);
    sec.finish(warnings);
    Ok(res)
}

/// `log.format`: a `%`-style string or a list of names and `{name: key}` maps.
fn format(sec: &mut Section<'_>, kind: LogType, warnings: &mut Vec<String>) -> Res<Option<LogFormat>> {
    let path = sec.path_of("format");
    let res = match sec.raw("format") {
        None => return Ok(None),
        Some(Value::String(text)) => {
            let template = Template::parse(text).map_err(|e| invalid(&path, e))?;
            for field in template.fields() {
                warn_unknown(&field, &path, warnings);
            }
            LogFormat::Template(template)
        }
        Some(Value::Array(items)) => LogFormat::Fields(format_fields(&path, items, warnings)?),
        Some(other) => return Err(expected(path, "a %-style string or a list of field names", other)),
    };
    match res {
        LogFormat::Fields(keys) if keys.is_empty() => Ok(None),
        LogFormat::Fields(_) if kind == LogType::Plain => {
            warnings.push(format!("{path} is a list of fields, which only log.type json uses (ignored)"));
            Ok(None)
        }
        res => Ok(Some(res)),
    }
}

fn format_fields(path: &str, items: &[Value], warnings: &mut Vec<String>) -> Res<Vec<LogKey>> {
    let mut res: Vec<LogKey> = Vec::with_capacity(items.len());
    for (item_idx, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{item_idx}]");
        let n_before = res.len();
        match item {
            Value::String(name) => res.push(LogKey { field: LogField::parse(name), key: name.clone() }),
            Value::Object(renames) => {
                for (name, key) in renames {
                    let Value::String(key) = key else {
                        return Err(expected(format!("{item_path}.{name}"), "the key to write it under", key));
                    };
                    res.push(LogKey { field: LogField::parse(name), key: key.clone() });
                }
            }
            other => return Err(expected(item_path, "a field name or a {field: key} map", other)),
        }
        for key in &res[n_before..] {
            warn_unknown(&key.field, &item_path, warnings);
        }
    }
    Ok(res)
}

fn warn_unknown(field: &LogField, path: &str, warnings: &mut Vec<String>) {
    if let LogField::Other(name) = field {
        warnings.push(format!("{path}: raftgres has no value for the field {name:?}; it is logged as null"));
    }
}

/// `log.dateformat`: a strftime format; an empty one means the default, as in Patroni.
fn dateformat(sec: &mut Section<'_>) -> Res<Option<String>> {
    let Some(text) = sec.str("dateformat")?.filter(|text| !text.is_empty()) else { return Ok(None) };
    let bad = chrono::format::StrftimeItems::new(&text).any(|item| matches!(item, chrono::format::Item::Error));
    if bad {
        let message = format!("expected a strftime format such as \"%Y-%m-%d %H:%M:%S\", got {text:?}");
        return Err(invalid(sec.path_of("dateformat"), message));
    }
    Ok(Some(text))
}

/// `log.mode`: permission bits, as a number (`0o600`, `384`) or a string read as C does (`"0600"` is
/// octal); YAML 1.2 leaves `0600` a string.
fn mode(sec: &mut Section<'_>) -> Res<Option<u32>> {
    let Some(value) = sec.raw("mode") else { return Ok(None) };
    let parsed = match value {
        Value::String(text) => {
            let text = text.trim();
            if let Some(octal) = text.strip_prefix("0o").or_else(|| text.strip_prefix('0').filter(|t| !t.is_empty())) {
                u32::from_str_radix(octal, 8).ok()
            } else {
                text.parse::<u32>().ok()
            }
        }
        other => parse_int(other).and_then(|n| u32::try_from(n).ok()),
    };
    match parsed {
        Some(mode) if mode <= 0o777 => Ok(Some(mode)),
        _ => Err(expected(sec.path_of("mode"), "permission bits such as 0600 (octal)", value)),
    }
}

#[cfg(test)]
mod tests;
