//! Table tests of the `log` section: what each document reads as, its warnings, the errors with their
//! key paths, and how `%`-style formats parse.

use serde_json::json;

use super::*;
use crate::config::walk::parse_yaml;

/// Reads `yaml` as the `log` section; the config or the first error, and the warnings.
fn read(yaml: &str) -> (Result<LogConfig, String>, Vec<String>) {
    let value = parse_yaml(yaml, "test").expect("test YAML parses");
    let mut warnings = Vec::new();
    let res = Section::new("log", &value).and_then(|sec| section(Some(sec), &mut warnings));
    (res.map_err(|e| e.to_string()), warnings)
}

#[track_caller]
fn check(name: &str, yaml: &str, expected: LogConfig, expected_warnings: &[&str]) {
    let (res, warnings) = read(yaml);
    assert_eq!(res.as_ref(), Ok(&expected), "{name}");
    assert_eq!(warnings, expected_warnings, "{name}");
}

#[track_caller]
fn check_error(name: &str, yaml: &str, expected: &str) {
    assert_eq!(read(yaml).0, Err(expected.to_string()), "{name}");
}

fn key(name: &str, key: &str) -> LogKey {
    LogKey { field: LogField::parse(name), key: key.to_string() }
}

fn template(text: &str) -> Option<LogFormat> {
    Some(LogFormat::Template(Template::parse(text).expect("a valid template")))
}

#[test]
fn log_sections() {
    let default = LogConfig::default();
    let rows = [
        ("empty", "{}", default.clone(), vec![]),
        ("patroni_level_name", "{level: WARNING}", LogConfig { level: LogLevel::Warn, ..default.clone() }, vec![]),
        (
            "json_with_a_field_list",
            "{type: json, format: [asctime, {levelname: level}, message]}",
            LogConfig {
                kind: LogType::Json,
                format: Some(LogFormat::Fields(vec![
                    key("asctime", "asctime"),
                    key("levelname", "level"),
                    key("message", "message"),
                ])),
                ..default.clone()
            },
            vec![],
        ),
        (
            "plain_template_and_dateformat",
            "{format: '%(asctime)s %(levelname)-8s %(message)s', dateformat: '%H:%M:%S'}",
            LogConfig {
                format: template("%(asctime)s %(levelname)-8s %(message)s"),
                dateformat: Some("%H:%M:%S".to_string()),
                ..default.clone()
            },
            vec![],
        ),
        ("empty_dateformat_is_the_default", "{dateformat: ''}", default.clone(), vec![]),
        (
            "file_settings",
            "{dir: /var/log/raftgres, file_size: 1000, file_num: 2, mode: 0600, static_fields: {app: pg, n: 1}}",
            LogConfig {
                dir: Some(PathBuf::from("/var/log/raftgres")),
                file_size: 1000,
                file_num: 2,
                mode: Some(0o600),
                static_fields: json!({"app": "pg", "n": 1}).as_object().cloned().unwrap_or_default(),
                ..default.clone()
            },
            vec![],
        ),
        ("mode_as_a_yaml_octal", "{mode: 0o640}", LogConfig { mode: Some(0o640), ..default.clone() }, vec![]),
        ("mode_as_a_decimal", "{mode: 420}", LogConfig { mode: Some(0o644), ..default.clone() }, vec![]),
        ("deduplicate_heartbeat_logs_is_accepted", "{deduplicate_heartbeat_logs: true}", default.clone(), vec![]),
        (
            "plain_ignores_a_field_list",
            "{format: [message]}",
            default.clone(),
            vec!["log.format is a list of fields, which only log.type json uses (ignored)"],
        ),
        (
            "unknown_field_is_null",
            "{type: json, format: [funcName]}",
            LogConfig {
                kind: LogType::Json,
                format: Some(LogFormat::Fields(vec![key("funcName", "funcName")])),
                ..default.clone()
            },
            vec!["log.format[0]: raftgres has no value for the field \"funcName\"; it is logged as null"],
        ),
        (
            "unsupported_keys_are_named",
            "{traceback_level: DEBUG, max_queue_size: 100, loggers: {patroni.postmaster: WARNING}, colour: red}",
            default.clone(),
            vec![
                "log.traceback_level has no effect: raftgres logs an error with its cause chain, never a traceback (ignored)",
                "log.max_queue_size has no effect: raftgres writes each line when it is logged, without a queue (ignored)",
                "log.loggers is not supported by raftgres; set levels per module with RUST_LOG \
                 (for example RUST_LOG=info,raftgres::ha=debug) (ignored)",
                "unknown key log.colour (ignored)",
            ],
        ),
    ];
    for (name, yaml, expected, warnings) in rows {
        check(name, yaml, expected, &warnings);
    }
}

#[test]
fn bad_log_sections() {
    let rows = [
        ("bad_type", "{type: xml}", "log.type: expected plain or json, got \"xml\""),
        ("unclosed_placeholder", "{format: '%(asctime'}", "log.format: unclosed %( in \"%(asctime\""),
        ("no_conversion", "{format: '%(asctime)'}", "log.format: %(asctime) needs a conversion such as %(asctime)s"),
        ("format_a_number", "{format: 3}", "log.format: expected a %-style string or a list of field names, got 3"),
        (
            "rename_not_a_string",
            "{type: json, format: [{levelname: 1}]}",
            "log.format[0].levelname: expected the key to write it under, got 1",
        ),
        (
            "item_a_list",
            "{type: json, format: [[a]]}",
            "log.format[0]: expected a field name or a {field: key} map, got a list",
        ),
        (
            "bad_dateformat",
            "{dateformat: '%Q'}",
            "log.dateformat: expected a strftime format such as \"%Y-%m-%d %H:%M:%S\", got \"%Q\"",
        ),
        (
            "static_fields_a_list",
            "{static_fields: [a]}",
            "log.static_fields: expected a map of keys to values, got a list",
        ),
        ("negative_file_size", "{file_size: -1}", "log.file_size: expected a number of bytes of at least 0, got -1"),
        ("mode_too_big", "{mode: 644}", "log.mode: expected permission bits such as 0600 (octal), got 644"),
        ("mode_not_octal", "{mode: '0800'}", "log.mode: expected permission bits such as 0600 (octal), got \"0800\""),
    ];
    for (name, yaml, expected) in rows {
        check_error(name, yaml, expected);
    }
}

#[test]
fn templates() {
    let rows: [(&str, &str, Vec<Piece>); 3] = [
        (
            "patroni_default",
            defaults::LOG_FORMAT,
            vec![
                Piece::Field(LogField::Asctime, Conversion { kind: 's', ..Conversion::default() }),
                Piece::Literal(" ".into()),
                Piece::Field(LogField::Levelname, Conversion { kind: 's', ..Conversion::default() }),
                Piece::Literal(": ".into()),
                Piece::Field(LogField::Message, Conversion { kind: 's', ..Conversion::default() }),
            ],
        ),
        (
            "flags_width_precision",
            "%(process)-08.3d",
            vec![Piece::Field(
                LogField::Process,
                Conversion { left: true, zero: true, width: Some(8), precision: Some(3), kind: 'd' },
            )],
        ),
        ("percent_signs", "100%% of 5% done", vec![Piece::Literal("100% of 5% done".into())]),
    ];
    for (name, text, expected) in rows {
        assert_eq!(Template::parse(text).map(|t| t.pieces), Ok(expected), "{name}");
    }
}
