//! Table tests of the JSON and `%`-style lines (a fixed record, so no clock), the colour rule and the
//! rotation rule; then the subscriber itself, installed for one thread, writing into a temp directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chrono::DateTime;
use serde_json::json;
use serde_json::Map;
use serde_json::Value;
use tracing::Level;

use super::format::render_json;
use super::format::render_template;
use super::format::Record;
use super::output::colours_wanted;
use super::output::SizeLimitRule;
use super::*;
use crate::config::LogField;
use crate::config::LogFormat;
use crate::config::LogKey;
use crate::config::LogType;
use crate::config::Template;

/// 2026-12-07 07:35:26.123456 at UTC+01:00.
fn record(level: Level, message: &str) -> Record<'_> {
    let time = DateTime::parse_from_rfc3339("2026-12-07T07:35:26.123456+01:00").expect("a valid test time");
    Record {
        time,
        level,
        target: "raftgres::ha::execute",
        message,
        file: Some("src/ha/execute.rs"),
        line: Some(287),
        process: 4242,
        thread: 4243,
        thread_name: Some("tokio-runtime-worker"),
    }
}

/// `name` or `name=key` (renamed).
fn keys(spec: &[&str]) -> Vec<LogKey> {
    let key = |item: &&str| match item.split_once('=') {
        Some((name, key)) => LogKey { field: LogField::parse(name), key: key.to_string() },
        None => LogKey { field: LogField::parse(item), key: item.to_string() },
    };
    spec.iter().map(key).collect()
}

#[track_caller]
fn check_json(record: &Record<'_>, keys: &[LogKey], statics: Value, dateformat: Option<&str>, expected: Value) {
    let statics: Map<String, Value> = match statics {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut line = String::new();
    render_json(record, keys, &statics, dateformat, &mut line).expect("render into a String");
    let parsed: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(parsed, expected, "{line}");
    let mut position = 0;
    for key in keys {
        let found = line.find(&format!("\"{}\":", key.key)).unwrap_or_else(|| panic!("no key {} in {line}", key.key));
        assert!(found >= position, "keys keep the format's order: {line}");
        position = found;
    }
}

#[test]
fn json_patroni_default_keys() {
    let config = LogConfig { kind: LogType::Json, ..LogConfig::default() };
    check_json(
        &record(Level::INFO, "promoted self to leader lsn=0/3000060"),
        &config.json_keys(),
        json!({}),
        None,
        json!({"asctime": "2026-12-07 07:35:26,123", "levelname": "INFO", "message": "promoted self to leader lsn=0/3000060"}),
    );
}

#[test]
fn json_the_default_keys_are_those_of_patronis_default_format() {
    let template = Template::parse(crate::config::defaults::LOG_FORMAT).expect("the default format parses");
    let from_template = LogFormat::Template(template).json_keys();
    assert_eq!(from_template, LogConfig::default().json_keys());
}

#[test]
fn json_renamed_fields_and_static_fields() {
    check_json(
        &record(Level::WARN, "slow"),
        &keys(&["asctime=@timestamp", "levelname=level", "message", "name"]),
        json!({"app": "patroni", "cluster": "batman"}),
        None,
        json!({"@timestamp": "2026-12-07 07:35:26,123", "level": "WARNING", "message": "slow",
               "name": "raftgres::ha::execute", "app": "patroni", "cluster": "batman"}),
    );
}

#[test]
fn json_a_static_field_replaces_a_format_key_in_its_place() {
    check_json(
        &record(Level::ERROR, "x"),
        &keys(&["levelname", "message"]),
        json!({"levelname": "FATAL"}),
        None,
        json!({"levelname": "FATAL", "message": "x"}),
    );
}

#[test]
fn json_dateformat_is_strftime_in_the_local_offset() {
    check_json(
        &record(Level::DEBUG, "tick"),
        &keys(&["asctime", "levelname"]),
        json!({}),
        Some("%Y-%m-%dT%H:%M:%S%z"),
        json!({"asctime": "2026-12-07T07:35:26+0100", "levelname": "DEBUG"}),
    );
}

#[test]
fn json_record_attributes() {
    check_json(
        &record(Level::TRACE, "m"),
        &keys(&[
            "levelno",
            "process",
            "processName",
            "thread",
            "threadName",
            "module",
            "filename",
            "pathname",
            "lineno",
            "created",
            "msecs",
        ]),
        json!({}),
        None,
        json!({"levelno": 5, "process": 4242, "processName": "raftgres", "thread": 4243,
               "threadName": "tokio-runtime-worker", "module": "execute", "filename": "execute.rs",
               "pathname": "src/ha/execute.rs", "lineno": 287, "created": 1_796_625_326.123_456, "msecs": 123.456}),
    );
}

#[test]
fn json_a_field_raftgres_does_not_have_is_null() {
    check_json(
        &record(Level::INFO, "m"),
        &keys(&["funcName", "message"]),
        json!({}),
        None,
        json!({"funcName": null, "message": "m"}),
    );
}

#[test]
fn json_message_is_escaped() {
    check_json(
        &record(Level::INFO, "say \"hi\"\n\tthen \u{1b}[31mred"),
        &keys(&["message"]),
        json!({}),
        None,
        json!({"message": "say \"hi\"\n\tthen \u{1b}[31mred"}),
    );
}

#[track_caller]
fn check_template(format: &str, level: Level, expected: &str) {
    let template = Template::parse(format).unwrap_or_else(|e| panic!("{format:?} does not parse: {e}"));
    let mut line = String::new();
    render_template(&record(level, "promoted self to leader"), &template, None, &mut line).expect("render");
    assert_eq!(line, expected, "{format:?}");
}

#[test]
fn template_patroni_default() {
    check_template(
        "%(asctime)s %(levelname)s: %(message)s",
        Level::INFO,
        "2026-12-07 07:35:26,123 INFO: promoted self to leader",
    );
}

#[test]
fn template_padding_and_precision() {
    check_template("[%(levelname)-8s] %(message).8s", Level::WARN, "[WARNING ] promoted");
    check_template("%(levelname)7s|", Level::INFO, "   INFO|");
}

#[test]
fn template_numbers() {
    check_template("%(process)08d %(lineno)d", Level::INFO, "00004242 287");
    check_template("%(msecs)03d %(created).2f", Level::INFO, "123 1796625326.12");
}

#[test]
fn template_percent_escape_repr_and_missing_field() {
    check_template("100%% %(name)r %(funcName)s", Level::INFO, "100% 'raftgres::ha::execute' None");
}

#[test]
fn colours_only_on_a_terminal_without_no_color() {
    let rows = [
        ("terminal", true, None, true),
        ("file or pipe", false, None, false),
        ("no_color set", true, Some("1"), false),
        ("no_color empty", true, Some(""), true),
        ("no_color on a pipe", false, Some("1"), false),
    ];
    for (name, is_terminal, no_color, expected) in rows {
        assert_eq!(colours_wanted(is_terminal, no_color.map(Into::into)), expected, "{name}");
    }
}

#[test]
fn rotation_rule_is_pythons() {
    // (name, file_size, file_num, current size, next line, rotates)
    let rows = [
        ("below the limit", 100, 4, 50, 49, false),
        ("reaching the limit", 100, 4, 50, 50, true),
        ("past the limit", 100, 4, 120, 10, true),
        ("empty file with a long line", 100, 4, 0, 500, false),
        ("file_size 0 never rotates", 0, 4, 10_000, 10, false),
        ("file_num 0 never rotates", 100, 0, 10_000, 10, false),
    ];
    for (name, file_size, file_num, current, next, expected) in rows {
        let rule = SizeLimitRule { max_bytes: file_size, n_kept: file_num };
        assert_eq!(rule.rotates(current, next), expected, "{name}");
    }
}

/// Lines of every file in `dir`, by file name.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut res: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("read the log dir")
        .map(|entry| {
            let entry = entry.expect("a directory entry");
            let text = std::fs::read_to_string(entry.path()).expect("read a log file");
            (entry.file_name().to_string_lossy().into_owned(), text)
        })
        .collect();
    res.sort();
    res
}

#[test]
fn subscriber_writes_json_into_rotated_files_and_applies_new_settings() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let json_dir = dir.path().join("json");
    let config = LogConfig {
        kind: LogType::Json,
        dir: Some(json_dir.clone()),
        file_size: 1000,
        file_num: 2,
        mode: Some(0o600),
        static_fields: json!({"app": "it"}).as_object().cloned().unwrap_or_default(),
        ..LogConfig::with_level(LogLevel::Debug)
    };
    let (subscriber, handle) = build(&config, None).expect("build the subscriber");
    let plain_dir = dir.path().join("plain");
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("api", method = "GET", path = "/patroni");
        let _entered = span.enter();
        for n in 0..100 {
            tracing::info!(n, member = "pg1", "line");
        }
        let plain = LogConfig { dir: Some(plain_dir.clone()), ..LogConfig::with_level(LogLevel::Warn) };
        handle.apply(&plain).expect("apply the plain settings");
        tracing::info!("not at WARN");
        tracing::warn!(reason = "test", "now plain");
    });

    let written = files(&json_dir);
    let names: Vec<&str> = written.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["patroni.log", "patroni.log.1", "patroni.log.2"], "file_num 2 keeps two backups");
    for (name, text) in &written {
        assert!(text.len() <= 1000, "{name} stays below file_size: {} bytes", text.len());
        let mode = std::fs::metadata(json_dir.join(name)).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} has log.mode");
        for line in text.lines() {
            let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            assert_eq!(parsed["levelname"], "INFO", "{line}");
            assert_eq!(parsed["app"], "it", "{line}");
            assert!(parsed["asctime"].is_string(), "{line}");
            let message = parsed["message"].as_str().unwrap_or_default();
            assert!(message.starts_with("line n="), "{line}");
            assert!(message.ends_with(" member=\"pg1\" method=\"GET\" path=\"/patroni\""), "{line}");
        }
    }
    let last = written[0].1.lines().last().unwrap_or_default();
    assert!(last.contains("line n=99 "), "the newest line is in patroni.log: {last}");

    let plain = files(&plain_dir);
    assert_eq!(plain.len(), 1, "{plain:?}");
    let text = &plain[0].1;
    assert!(text.contains(" WARN api{method=\"GET\" path=\"/patroni\"}: "), "tracing's line: {text}");
    assert!(text.contains("raftgres::telemetry::tests: now plain reason=\"test\""), "tracing's line: {text}");
    assert!(!text.contains('\u{1b}'), "no colours in a file: {text}");
    assert!(!text.contains("not at WARN"), "the level was applied: {text}");
}

#[test]
fn an_unwritable_log_dir_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "not a directory").expect("write a file");
    let config = LogConfig { dir: Some(blocker.join("log")), ..LogConfig::default() };
    match build(&config, None) {
        Ok(_) => panic!("a log dir under a file was accepted"),
        Err(e) => assert_eq!(e.to_string(), format!("create the log directory {}", blocker.join("log").display())),
    }
}
