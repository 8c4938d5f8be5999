//! PURE: reads an untyped JSON tree one section at a time, naming every key by its full path.
//!
//! Every error says which key, what was expected and what was found
//! (`bootstrap.dcs.ttl: expected a number of seconds, got "abc"`), and every key nobody asked
//! for becomes an `unknown key <path> (ignored)` warning when the section is finished.
//! This file knows nothing about raftgres' schema (that is `sections.rs` and `dynamic.rs`)
//! and does no I/O.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Map;
use serde_json::Value;

use super::ConfigError;
use super::HostPort;

/// `prefix.key`, or `key` at the root.
pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// How a value reads in an error message: strings quoted, containers by kind.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "a map".to_string(),
    }
}

/// An [`ConfigError::Invalid`] for `path`.
pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.into(), message: message.into() }
}

/// `path: expected <what>, got <value>`.
pub(crate) fn expected(path: impl Into<String>, what: &str, value: &Value) -> ConfigError {
    invalid(path, format!("expected {what}, got {}", describe(value)))
}

/// A scalar as text: strings as they are, numbers and booleans as written.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Patroni's `parse_bool` words (`on/off`, `true/false`, `yes/no`, `1/0`), any case.
pub(crate) fn parse_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Some(true),
            "off" | "false" | "no" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// An integer written as a number or as a numeric string (environment values are strings).
pub(crate) fn parse_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The unit a bare number means in a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit {
    Millis,
    Seconds,
}

/// A duration written as a number in `unit` (`500`, `0.5`) or with a unit suffix
/// (`500ms`, `2s`, `1.5s`, `30min`, `1h`, `1d`); never negative.
pub(crate) fn parse_duration(value: &Value, unit: Unit) -> Option<Duration> {
    let (number, suffix) = match value {
        Value::Number(n) => (n.as_f64()?, ""),
        Value::String(s) => {
            let text = s.trim();
            let split_idx = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
            let (number, suffix) = text.split_at(split_idx);
            (number.trim().parse::<f64>().ok()?, suffix.trim())
        }
        _ => return None,
    };
    let scale = match (suffix, unit) {
        ("", Unit::Millis) | ("ms", _) => 0.001,
        ("", Unit::Seconds) | ("s", _) => 1.0,
        ("min", _) => 60.0,
        ("h", _) => 3600.0,
        ("d", _) => 86400.0,
        _ => return None,
    };
    if !number.is_finite() || number < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(number * scale).ok()
}

/// One map of the tree being read; remembers which keys were asked for.
pub(crate) struct Section<'a> {
    path: String,
    map: &'a Map<String, Value>,
    used: BTreeSet<&'a str>,
}

/// What a missing or wrongly typed section means.
fn empty_map() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

impl<'a> Section<'a> {
    /// The section at `path`; `null` reads as an empty map (YAML `restapi:` with nothing under it).
    pub(crate) fn new(path: &str, value: &'a Value) -> Result<Self, ConfigError> {
        let map = match value {
            Value::Object(map) => map,
            Value::Null => empty_map(),
            other => return Err(expected(display_path(path), "a map", other)),
        };
        Ok(Section { path: path.to_string(), map, used: BTreeSet::new() })
    }

    /// The full path of `key` in this section.
    pub(crate) fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The value of `key`, marking it read; `null` counts as absent.
    pub(crate) fn raw(&mut self, key: &str) -> Option<&'a Value> {
        let (stored_key, value) = self.map.get_key_value(key)?;
        self.used.insert(stored_key.as_str());
        if value.is_null() {
            None
        } else {
            Some(value)
        }
    }

    /// Whether `key` is present with a non-null value (does not mark it read).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    /// The keys of this section in order.
    pub(crate) fn keys(&self) -> serde_json::map::Keys<'a> {
        self.map.keys()
    }

    /// An optional string; numbers and booleans are taken as written.
    pub(crate) fn str(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(value) => scalar_text(value).map(Some).ok_or_else(|| expected(self.path_of(key), "a string", value)),
        }
    }

    /// A required, non-empty string; `hint` says what to set (`missing; <hint>`).
    pub(crate) fn required_str(&mut self, key: &str, hint: &str) -> Result<String, ConfigError> {
        match self.str(key)? {
            Some(text) if !text.trim().is_empty() => Ok(text),
            _ => Err(self.missing(key, hint)),
        }
    }

    /// The error for a missing required key.
    pub(crate) fn missing(&self, key: &str, hint: &str) -> ConfigError {
        invalid(self.path_of(key), format!("missing; {hint}"))
    }

    /// An optional boolean (Patroni's words accepted).
    pub(crate) fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(value) => {
                parse_bool(value).map(Some).ok_or_else(|| expected(self.path_of(key), "true or false", value))
            }
        }
    }

    /// A boolean defaulting to `false`.
    pub(crate) fn flag(&mut self, key: &str) -> Result<bool, ConfigError> {
        Ok(self.bool(key)?.unwrap_or(false))
    }

    /// An optional integer; `what` names it in errors (`an integer number of bytes`).
    pub(crate) fn int(&mut self, key: &str, what: &str) -> Result<Option<i64>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(value) => parse_int(value).map(Some).ok_or_else(|| expected(self.path_of(key), what, value)),
        }
    }

    /// An optional integer that must be at least `min`.
    pub(crate) fn int_at_least(&mut self, key: &str, what: &str, min: i64) -> Result<Option<i64>, ConfigError> {
        match self.int(key, what)? {
            Some(n) if n < min => {
                Err(invalid(self.path_of(key), format!("expected {what} of at least {min}, got {n}")))
            }
            other => Ok(other),
        }
    }

    /// An optional duration; bare numbers are in `unit`.
    pub(crate) fn duration(&mut self, key: &str, unit: Unit) -> Result<Option<Duration>, ConfigError> {
        let what = match unit {
            Unit::Millis => "a duration (milliseconds, or a string such as \"500ms\" or \"2s\")",
            Unit::Seconds => "a number of seconds (or a string such as \"500ms\" or \"2s\")",
        };
        match self.raw(key) {
            None => Ok(None),
            Some(value) => {
                parse_duration(value, unit).map(Some).ok_or_else(|| expected(self.path_of(key), what, value))
            }
        }
    }

    /// An optional `host:port`; a listen address may leave the host empty (all interfaces).
    pub(crate) fn host_port(&mut self, key: &str, listen: bool) -> Result<Option<HostPort>, ConfigError> {
        let Some(text) = self.str(key)? else { return Ok(None) };
        let parsed = HostPort::parse(&text).filter(|hp| listen || (!hp.host.is_empty() && hp.port != 0));
        match parsed {
            Some(host_port) => Ok(Some(host_port)),
            None => Err(invalid(self.path_of(key), format!("expected host:port, got {text:?}"))),
        }
    }

    /// An optional list of strings (scalars are taken as written).
    pub(crate) fn str_list(&mut self, key: &str) -> Result<Vec<String>, ConfigError> {
        let Some(value) = self.raw(key) else { return Ok(Vec::new()) };
        let Value::Array(items) = value else { return Err(expected(self.path_of(key), "a list of strings", value)) };
        let mut res = Vec::with_capacity(items.len());
        for (item_idx, item) in items.iter().enumerate() {
            let text = scalar_text(item)
                .ok_or_else(|| expected(format!("{}[{item_idx}]", self.path_of(key)), "a string", item))?;
            res.push(text);
        }
        Ok(res)
    }

    /// An optional map whose values are scalars (string, number or boolean), kept as written.
    pub(crate) fn scalar_map(&mut self, key: &str) -> Result<BTreeMap<String, Value>, ConfigError> {
        let mut res = BTreeMap::new();
        let Some(mut section) = self.section(key)? else { return Ok(res) };
        for name in section.keys() {
            match section.raw(name) {
                None => {}
                Some(value @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
                    res.insert(name.clone(), value.clone());
                }
                Some(other) => {
                    return Err(expected(section.path_of(name), "a scalar (string, number or boolean)", other));
                }
            }
        }
        Ok(res)
    }

    /// An optional map of strings (HTTP headers).
    pub(crate) fn string_map(&mut self, key: &str) -> Result<BTreeMap<String, String>, ConfigError> {
        let mut res = BTreeMap::new();
        let Some(mut section) = self.section(key)? else { return Ok(res) };
        for name in section.keys() {
            if let Some(text) = section.str(name)? {
                res.insert(name.clone(), text);
            }
        }
        Ok(res)
    }

    /// An optional nested section.
    pub(crate) fn section(&mut self, key: &str) -> Result<Option<Section<'a>>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(value) => Section::new(&self.path_of(key), value).map(Some),
        }
    }

    /// A required nested section; `hint` says what to add.
    pub(crate) fn required_section(&mut self, key: &str, hint: &str) -> Result<Section<'a>, ConfigError> {
        self.section(key)?.ok_or_else(|| self.missing(key, hint))
    }

    /// Marks present `keys` as read with a `<path> <reason> (ignored)` warning each.
    pub(crate) fn ignore(&mut self, keys: &[&str], reason: &str, warnings: &mut Vec<String>) {
        for key in keys {
            if self.raw(key).is_some() {
                warnings.push(format!("{} {reason} (ignored)", self.path_of(key)));
            }
        }
    }

    /// The keys not read so far.
    pub(crate) fn unread_keys(&self) -> Vec<&'a str> {
        self.map.keys().map(String::as_str).filter(|key| !self.used.contains(key)).collect()
    }

    /// Ends the section: every key never read becomes an `unknown key` warning.
    pub(crate) fn finish(self, warnings: &mut Vec<String>) {
        for key in self.map.keys() {
            if !self.used.contains(key.as_str()) {
                warnings.push(format!("unknown key {} (ignored)", self.path_of(key)));
            }
        }
    }
}

/// The root has no path of its own; errors about it say `configuration`.
fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "configuration"
    } else {
        path
    }
}

/// Parses a YAML document into the JSON tree the readers walk; `origin` names the file or
/// environment variable in errors. Merge keys (`<<: *anchor`) are applied.
pub(crate) fn parse_yaml(text: &str, origin: &str) -> Result<Value, ConfigError> {
    let syntax =
        |message: String| ConfigError::Syntax { origin: origin.to_string(), message: message.replace('\n', " ") };
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| syntax(e.to_string()))?;
    yaml.apply_merge().map_err(|e| syntax(e.to_string()))?;
    yaml_to_json(yaml, "").map_err(|(path, what)| syntax(format!("{}: {what}", display_path(&path))))
}

/// YAML → JSON: non-string keys become their text, tags are dropped, non-finite floats rejected.
fn yaml_to_json(yaml: serde_yaml_ng::Value, path: &str) -> Result<Value, (String, String)> {
    use serde_yaml_ng::Value as Yaml;
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                let number = serde_json::Number::from_f64(f);
                Value::Number(number.ok_or_else(|| (path.to_string(), format!("{n} is not a finite number")))?)
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => {
            let mut res = Vec::with_capacity(items.len());
            for (item_idx, item) in items.into_iter().enumerate() {
                res.push(yaml_to_json(item, &format!("{path}[{item_idx}]"))?);
            }
            Value::Array(res)
        }
        Yaml::Mapping(mapping) => {
            let mut res = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Yaml::String(s) => s,
                    Yaml::Number(n) => n.to_string(),
                    Yaml::Bool(b) => b.to_string(),
                    Yaml::Null => "null".to_string(),
                    _ => return Err((path.to_string(), "map keys must be strings".to_string())),
                };
                let value = yaml_to_json(value, &join(path, &key))?;
                res.insert(key, value);
            }
            Value::Object(res)
        }
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value, path)?,
    })
}
