//! PURE: the cluster-wide dynamic configuration (Patroni's `config` key), kept in Raft as a
//! Patroni-compatible JSON document, with a typed view, Patroni's timing rule and the
//! merge semantics of `PATCH /config`.
//!
//! The document is stored exactly as written (unknown keys included, so other tools keep
//! their settings); the typed [`DynamicView`] is derived from it with raftgres' defaults.
//! No I/O, no clock, no async.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Map;
use serde_json::Value;

use super::defaults;
use super::walk::expected;
use super::walk::join;
use super::walk::parse_bool;
use super::walk::parse_duration;
use super::walk::Section;
use super::walk::Unit;
use super::ConfigError;
use crate::postgres::slots;

/// The three timers of Patroni's rule `loop_wait + 2 * retry_timeout <= ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Lifetime of the leader lease and member keys.
    pub ttl: Duration,
    /// Sleep between HA cycles.
    pub loop_wait: Duration,
    /// Bound of one DCS or PostgreSQL operation including retries.
    pub retry_timeout: Duration,
}

impl Timing {
    /// How long a renewal of the lease we hold keeps trying: until the lease itself runs out,
    /// because a renewal that commits later cannot save it and one that commits earlier always
    /// does. Derived from the lease (at most `ttl` minus the margin), not from `retry_timeout`;
    /// `retry_timeout` applies only when there is no lease left to keep.
    pub fn renewal_timeout(&self, lease_left: Duration) -> Duration {
        if lease_left.is_zero() {
            self.retry_timeout
        } else {
            lease_left.min(self.ttl)
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing { ttl: defaults::TTL, loop_wait: defaults::LOOP_WAIT, retry_timeout: defaults::RETRY_TIMEOUT }
    }
}

/// Applies Patroni's rule (§2.4) with raftgres' minimums and returns the timing to use plus
/// one warning per change, worded as Patroni logs them.
///
/// Values below the minimums (ttl 3 s, loop_wait 1 s, retry_timeout 1 s; Patroni's 20/1/3 are
/// sized for a remote DCS) are raised. Then, if even `1 + 2 * retry_timeout > ttl`, loop_wait
/// becomes 1 and retry_timeout `(ttl - 1) / 2` rounded down to whole seconds (Patroni's `//`);
/// otherwise, if the rule is violated, loop_wait is lowered to `ttl - 2 * retry_timeout`.
/// Why the rule: a leader that refreshed its lease at `t` may sleep `loop_wait`, then spend a
/// full `retry_timeout` on a failing read and another on a failing write, and must still have
/// demoted before the lease expires at `t + ttl`.
pub fn adjust_timing(requested: Timing) -> (Timing, Vec<String>) {
    let mut warnings = Vec::new();
    let loop_wait = raise_to_minimum("loop_wait", requested.loop_wait, defaults::MIN_LOOP_WAIT, &mut warnings);
    let retry_timeout =
        raise_to_minimum("retry_timeout", requested.retry_timeout, defaults::MIN_RETRY_TIMEOUT, &mut warnings);
    let ttl = raise_to_minimum("ttl", requested.ttl, defaults::MIN_TTL, &mut warnings);
    let min_loop_wait = defaults::MIN_LOOP_WAIT;
    if min_loop_wait + 2 * retry_timeout > ttl {
        let new_retry_timeout = Duration::from_secs(((ttl - min_loop_wait) / 2).as_secs());
        warnings.push(format!(
            "Violated the rule \"loop_wait + 2*retry_timeout <= ttl\", where ttl={}. \
             Adjusting loop_wait from {} to {} and retry_timeout from {} to {}",
            secs(ttl),
            secs(loop_wait),
            secs(min_loop_wait),
            secs(retry_timeout),
            secs(new_retry_timeout)
        ));
        return (Timing { ttl, loop_wait: min_loop_wait, retry_timeout: new_retry_timeout }, warnings);
    }
    if loop_wait + 2 * retry_timeout > ttl {
        let new_loop_wait = ttl - 2 * retry_timeout;
        warnings.push(format!(
            "Violated the rule \"loop_wait + 2*retry_timeout <= ttl\", where ttl={} and retry_timeout={}. \
             Adjusting loop_wait from {} to {}",
            secs(ttl),
            secs(retry_timeout),
            secs(loop_wait),
            secs(new_loop_wait)
        ));
        return (Timing { ttl, loop_wait: new_loop_wait, retry_timeout }, warnings);
    }
    (Timing { ttl, loop_wait, retry_timeout }, warnings)
}

fn raise_to_minimum(name: &str, value: Duration, min: Duration, warnings: &mut Vec<String>) -> Duration {
    if value >= min {
        return value;
    }
    warnings.push(format!("{name}={} can't be smaller than {}, adjusting...", secs(value), secs(min)));
    min
}

/// Seconds as Patroni prints them: `30`, or `2.5` for fractional values.
fn secs(duration: Duration) -> String {
    duration.as_secs_f64().to_string()
}

/// `PATCH /config` semantics (Patroni's `patch_config`): a `null` deletes the key, objects
/// merge recursively into objects, anything else replaces, new keys are added.
///
/// Like Patroni, a new key (or a non-object being replaced) takes the patch value as it is,
/// nulls nested inside it included. A patch that is not an object replaces the whole base.
pub fn merge_patch(base: &Value, patch: &Value) -> Value {
    let Value::Object(patch_map) = patch else { return patch.clone() };
    let mut res = match base {
        Value::Object(base_map) => base_map.clone(),
        _ => Map::new(),
    };
    for (key, patch_value) in patch_map {
        match (patch_value, res.get(key)) {
            (Value::Null, _) => {
                res.remove(key);
            }
            (Value::Object(_), Some(base_value @ Value::Object(_))) => {
                let merged = merge_patch(base_value, patch_value);
                res.insert(key.clone(), merged);
            }
            _ => {
                res.insert(key.clone(), patch_value.clone());
            }
        }
    }
    Value::Object(res)
}

/// `synchronous_mode`: `off`, `on` (also `true`/`false`) or `quorum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynchronousMode {
    /// Asynchronous replication.
    Off,
    /// Synchronous replication to `synchronous_node_count` named standbys.
    On,
    /// Quorum commit (`ANY n (…)`).
    Quorum,
}

/// The `postgresql` part of the dynamic configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicPostgresql {
    /// Try `pg_rewind` before reinitializing.
    pub use_pg_rewind: bool,
    /// Keep physical replication slots for members (default true).
    pub use_slots: bool,
    /// Cluster-wide GUCs (pinned ones such as `port` dropped with a warning).
    pub parameters: BTreeMap<String, Value>,
    /// `pg_hba.conf` lines.
    pub pg_hba: Vec<String>,
    /// `pg_ident.conf` lines.
    pub pg_ident: Vec<String>,
    /// `recovery_conf`: recovery settings of the replicas of nodes whose own file has none (as in Patroni, a
    /// local `postgresql.recovery_conf` replaces it).
    pub recovery_conf: BTreeMap<String, Value>,
}

impl Default for DynamicPostgresql {
    fn default() -> Self {
        DynamicPostgresql {
            use_pg_rewind: true,
            use_slots: true,
            parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
            pg_ident: Vec::new(),
            recovery_conf: BTreeMap::new(),
        }
    }
}

/// Typed view of the dynamic configuration with raftgres' defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicView {
    /// ttl, loop_wait and retry_timeout as written (see [`DynamicConfig::timing`] for the
    /// values to run with).
    pub timing: Timing,
    /// Largest lag in bytes a replica may have to be promoted.
    pub maximum_lag_on_failover: u64,
    /// Lag in bytes beyond which a sync standby is replaced (-1: never).
    pub maximum_lag_on_syncnode: i64,
    /// How long the leader-key holder may go without PostgreSQL running as a primary (crashed, failing to start,
    /// still starting) before it gives the key to a member that can take over; 0: at the first crash.
    pub primary_start_timeout: Duration,
    /// How long a primary may take to stop when synchronous mode is on (0: forever).
    pub primary_stop_timeout: Duration,
    /// Synchronous replication mode.
    pub synchronous_mode: SynchronousMode,
    /// Refuse writes when no synchronous standby is available.
    pub synchronous_mode_strict: bool,
    /// Number of synchronous standbys.
    pub synchronous_node_count: u32,
    /// Keep the primary running when the DCS is unreachable if every member agrees.
    pub failsafe_mode: bool,
    /// Only promote a replica on the newest timeline.
    pub check_timeline: bool,
    /// Timeline history entries kept (0: all).
    pub max_timelines_history: u32,
    /// How long slots of departed members are kept.
    pub member_slots_ttl: Duration,
    /// Maintenance mode.
    pub pause: bool,
    /// Permanent replication slots by name.
    pub slots: Map<String, Value>,
    /// Slots raftgres must not touch (list of matchers).
    pub ignore_slots: Vec<Value>,
    /// `slots` or `ignore_slots` in the store could not be read (written by another version): no slot is dropped
    /// as unknown while it is so, since the slot might be one of them.
    pub slots_unreadable: bool,
    /// Standby-cluster settings, when this cluster replicates from another.
    pub standby_cluster: Option<StandbyCluster>,
    /// PostgreSQL settings.
    pub postgresql: DynamicPostgresql,
}

impl Default for DynamicView {
    fn default() -> Self {
        DynamicView {
            timing: Timing::default(),
            maximum_lag_on_failover: defaults::MAXIMUM_LAG_ON_FAILOVER,
            maximum_lag_on_syncnode: defaults::MAXIMUM_LAG_ON_SYNCNODE,
            primary_start_timeout: defaults::PRIMARY_START_TIMEOUT,
            primary_stop_timeout: defaults::PRIMARY_STOP_TIMEOUT,
            synchronous_mode: SynchronousMode::Off,
            synchronous_mode_strict: false,
            synchronous_node_count: defaults::SYNCHRONOUS_NODE_COUNT,
            failsafe_mode: false,
            check_timeline: false,
            max_timelines_history: defaults::MAX_TIMELINES_HISTORY,
            member_slots_ttl: defaults::MEMBER_SLOTS_TTL,
            pause: false,
            slots: Map::new(),
            ignore_slots: Vec::new(),
            slots_unreadable: false,
            standby_cluster: None,
            postgresql: DynamicPostgresql::default(),
        }
    }
}

/// `standby_cluster`: this cluster is a standby of another; its leader (the standby leader) streams from
/// `host:port` and the other members cascade from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandbyCluster {
    /// The remote primary's host; `None` in an archive-only standby cluster (`restore_command` only).
    pub host: Option<String>,
    /// Its port (default 5432).
    pub port: u16,
    /// `primary_slot_name` on the remote primary, if any.
    pub primary_slot_name: Option<String>,
    /// `restore_command`, `archive_cleanup_command` and `recovery_min_apply_delay`: recovery settings of the
    /// standby leader only (they replace its `postgresql.recovery_conf` ones, as in Patroni).
    pub recovery: BTreeMap<String, String>,
    /// `create_replica_methods`: how the standby leader is created from the remote primary (each a
    /// `postgresql.<name>` section of the local configuration, or `basebackup`); empty means
    /// `postgresql.create_replica_methods`.
    pub create_replica_methods: Vec<String>,
}

/// The dynamic configuration: the stored JSON document plus its typed view.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicConfig {
    document: Value,
    view: DynamicView,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig { document: Value::Object(Map::new()), view: DynamicView::default() }
    }
}

/// Whether a bad value rejects the document or falls back to the default.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Strict,
    Lenient,
}

impl DynamicConfig {
    /// Checks a document (from `bootstrap.dcs` or a `PATCH /config`) and builds the view;
    /// errors name the key under `path` (`bootstrap.dcs.ttl`; empty `path` for API bodies).
    /// Unknown keys are kept in the document and reported as warnings.
    pub fn parse(document: Value, path: &str) -> Result<(DynamicConfig, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let view = build_view(&document, path, Mode::Strict, &mut warnings)?;
        Ok((DynamicConfig { document, view }, warnings))
    }

    /// Like [`DynamicConfig::parse`] but never fails: a bad value is reported as a warning and
    /// its default used, as Patroni does for a document already stored in the DCS.
    pub fn parse_lenient(document: Value) -> (DynamicConfig, Vec<String>) {
        let mut warnings = Vec::new();
        match build_view(&document, "", Mode::Lenient, &mut warnings) {
            Ok(view) => (DynamicConfig { document, view }, warnings),
            Err(e) => {
                warnings.push(format!("{e}; using the default dynamic configuration"));
                (DynamicConfig { document, view: DynamicView::default() }, warnings)
            }
        }
    }

    /// `PATCH /config`: merges `patch` into this document and checks the result.
    pub fn patched(&self, patch: &Value) -> Result<(DynamicConfig, Vec<String>), ConfigError> {
        DynamicConfig::parse(merge_patch(&self.document, patch), "")
    }

    /// The document as stored in Raft and served by `GET /config`.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The typed view.
    pub fn view(&self) -> &DynamicView {
        &self.view
    }

    /// ttl, loop_wait and retry_timeout to run with, after [`adjust_timing`], plus its warnings.
    pub fn timing(&self) -> (Timing, Vec<String>) {
        adjust_timing(self.view.timing)
    }
}

/// Reads one dynamic section; in lenient mode an error becomes a warning and `None`.
struct Reader<'a, 'w> {
    section: Section<'a>,
    mode: Mode,
    warnings: &'w mut Vec<String>,
}

impl<'a> Reader<'a, '_> {
    fn keep<T>(&mut self, res: Result<Option<T>, ConfigError>) -> Result<Option<T>, ConfigError> {
        match (res, self.mode) {
            (Err(e), Mode::Lenient) => {
                self.warnings.push(format!("{e}; using the default"));
                Ok(None)
            }
            (res, _) => res,
        }
    }

    fn seconds(&mut self, key: &str, default: Duration) -> Result<Duration, ConfigError> {
        let res = match self.section.raw(key) {
            None => Ok(None),
            Some(value) => parse_duration(value, Unit::Seconds)
                .map(Some)
                .ok_or_else(|| expected(self.section.path_of(key), "a number of seconds", value)),
        };
        Ok(self.keep(res)?.unwrap_or(default))
    }

    fn flag(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        let res = self.section.bool(key);
        Ok(self.keep(res)?.unwrap_or(default))
    }

    fn int(&mut self, key: &str, what: &str, min: i64, default: i64) -> Result<i64, ConfigError> {
        let res = self.section.int_at_least(key, what, min);
        Ok(self.keep(res)?.unwrap_or(default))
    }

    fn map(&mut self, key: &str) -> Result<Option<Map<String, Value>>, ConfigError> {
        let res = match self.section.raw(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map.clone())),
            Some(other) => Err(expected(self.section.path_of(key), "a map", other)),
        };
        self.keep(res)
    }
}

fn build_view(
    document: &Value,
    path: &str,
    mode: Mode,
    warnings: &mut Vec<String>,
) -> Result<DynamicView, ConfigError> {
    let section = Section::new(path, document)?;
    let mut reader = Reader { section, mode, warnings };
    let base = DynamicView::default();
    let timing = Timing {
        ttl: reader.seconds("ttl", base.timing.ttl)?,
        loop_wait: reader.seconds("loop_wait", base.timing.loop_wait)?,
        retry_timeout: reader.seconds("retry_timeout", base.timing.retry_timeout)?,
    };
    let bytes = "an integer number of bytes";
    // Patroni still reads the pre-4.0 `master_*` names when the new ones are absent.
    let start_key =
        if reader.section.has("primary_start_timeout") { "primary_start_timeout" } else { "master_start_timeout" };
    let stop_key =
        if reader.section.has("primary_stop_timeout") { "primary_stop_timeout" } else { "master_stop_timeout" };
    let (slots, slots_unreadable) = permanent_slots(&mut reader)?;
    let (ignore_slots, ignore_unreadable) = ignore_slots(&mut reader)?;
    let view = DynamicView {
        timing,
        maximum_lag_on_failover: reader
            .int("maximum_lag_on_failover", bytes, 0, defaults::MAXIMUM_LAG_ON_FAILOVER as i64)?
            .unsigned_abs(),
        maximum_lag_on_syncnode: reader.int("maximum_lag_on_syncnode", bytes, -1, base.maximum_lag_on_syncnode)?,
        primary_start_timeout: reader.seconds(start_key, base.primary_start_timeout)?,
        primary_stop_timeout: reader.seconds(stop_key, base.primary_stop_timeout)?,
        synchronous_mode: synchronous_mode(&mut reader)?,
        synchronous_mode_strict: reader.flag("synchronous_mode_strict", false)?,
        synchronous_node_count: count(reader.int("synchronous_node_count", "an integer", 1, 1)?),
        failsafe_mode: reader.flag("failsafe_mode", false)?,
        check_timeline: reader.flag("check_timeline", false)?,
        max_timelines_history: count(reader.int("max_timelines_history", "an integer", 0, 0)?),
        member_slots_ttl: reader.seconds("member_slots_ttl", base.member_slots_ttl)?,
        pause: reader.flag("pause", false)?,
        slots,
        ignore_slots,
        slots_unreadable: slots_unreadable || ignore_unreadable,
        standby_cluster: standby_cluster(&mut reader)?,
        postgresql: postgresql(&mut reader)?,
    };
    let Reader { mut section, warnings, .. } = reader;
    without_effect(&view, &section, warnings);
    section.ignore(&["primary_race_backoff"], "is not used by raftgres", warnings);
    // A `master_*` name is read when its `primary_*` name is absent, and ignored only when both are given.
    for (old, new) in
        [("master_start_timeout", "primary_start_timeout"), ("master_stop_timeout", "primary_stop_timeout")]
    {
        if section.has(new) {
            section.ignore(&[old], "is superseded by its primary_* name", warnings);
        }
    }
    section.finish(warnings);
    Ok(view)
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn synchronous_mode(reader: &mut Reader<'_, '_>) -> Result<SynchronousMode, ConfigError> {
    let res = match reader.section.raw("synchronous_mode") {
        None => Ok(None),
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("quorum") => Ok(Some(SynchronousMode::Quorum)),
        Some(value) => match parse_bool(value) {
            Some(true) => Ok(Some(SynchronousMode::On)),
            Some(false) => Ok(Some(SynchronousMode::Off)),
            None => Err(expected(reader.section.path_of("synchronous_mode"), "off, on or quorum", value)),
        },
    };
    Ok(reader.keep(res)?.unwrap_or(SynchronousMode::Off))
}

/// The recovery settings of `standby_cluster` (the standby leader gets them all, the other members the first two).
const STANDBY_RECOVERY_KEYS: [&str; 3] = ["restore_command", "archive_cleanup_command", "recovery_min_apply_delay"];

/// `standby_cluster`: `host` and `port` of the remote primary (no `host` with a `restore_command`: an
/// archive-only standby cluster), `primary_slot_name`, `create_replica_methods` and the recovery settings. A section
/// whose values are all empty (`host: null`, as a `PATCH` that removes it leaves) is no standby cluster.
fn standby_cluster(reader: &mut Reader<'_, '_>) -> Result<Option<StandbyCluster>, ConfigError> {
    let Some(section) = reader.map("standby_cluster")? else { return Ok(None) };
    if section.values().all(|value| value.is_null()) {
        return Ok(None);
    }
    let path = reader.section.path_of("standby_cluster");
    let res = parse_standby_cluster(&section, &path).map(Some);
    reader.keep(res)
}

fn parse_standby_cluster(section: &Map<String, Value>, path: &str) -> Result<StandbyCluster, ConfigError> {
    let invalid =
        |key: &str, message: &str| ConfigError::Invalid { path: format!("{path}.{key}"), message: message.to_owned() };
    let create_replica_methods = match section.get("create_replica_methods") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let names: Option<Vec<String>> =
                items.iter().map(|item| item.as_str().filter(|s| !s.trim().is_empty()).map(str::to_owned)).collect();
            names.ok_or_else(|| {
                expected(
                    format!("{path}.create_replica_methods"),
                    "a list of method names",
                    &Value::Array(items.clone()),
                )
            })?
        }
        Some(other) => return Err(expected(format!("{path}.create_replica_methods"), "a list of method names", other)),
    };
    let mut recovery = BTreeMap::new();
    for key in STANDBY_RECOVERY_KEYS {
        match section.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) if text.is_empty() => {}
            Some(Value::String(text)) => {
                recovery.insert(key.to_owned(), text.clone());
            }
            Some(Value::Number(number)) if key == "recovery_min_apply_delay" => {
                recovery.insert(key.to_owned(), number.to_string());
            }
            Some(other) => return Err(expected(format!("{path}.{key}"), "a string", other)),
        }
    }
    let host = match section.get("host") {
        Some(Value::String(host)) if !host.trim().is_empty() => Some(host.trim().to_owned()),
        Some(other) if !other.is_null() && !matches!(other, Value::String(_)) => {
            return Err(expected(format!("{path}.host"), "a host name or address", other))
        }
        // Archive-only: the standby leader replays what restore_command fetches and streams from nobody.
        _ if recovery.contains_key("restore_command") => None,
        _ => {
            return Err(invalid(
                "host",
                "missing; set the remote primary's host, or restore_command for a standby cluster that replays \
                 the primary cluster's WAL archive",
            ))
        }
    };
    let port = match section.get("port") {
        None | Some(Value::Null) => 5432,
        Some(value) => {
            let port = value.as_u64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()));
            port.and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| expected(format!("{path}.port"), "a port number", value))?
        }
    };
    let primary_slot_name = match section.get("primary_slot_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) if slots::valid_slot_name(name) => Some(name.clone()),
        Some(other) => {
            return Err(expected(
                format!("{path}.primary_slot_name"),
                "a slot name (lower case letters, digits, _)",
                other,
            ))
        }
    };
    let known = |key: &str| {
        ["host", "port", "primary_slot_name", "create_replica_methods"].contains(&key)
            || STANDBY_RECOVERY_KEYS.contains(&key)
    };
    if let Some(key) = section.keys().find(|key| !known(key)) {
        return Err(invalid(
            key,
            "unknown standby_cluster key; use host, port, primary_slot_name, create_replica_methods, \
             restore_command, archive_cleanup_command and recovery_min_apply_delay",
        ));
    }
    Ok(StandbyCluster { host, port, primary_slot_name, recovery, create_replica_methods })
}

/// `slots:`, each entry read as the leader will read it (`postgres::slots::permanent_slot`): a bad entry is
/// refused with its path, instead of being skipped with an error in the log at every cycle as Patroni does.
fn permanent_slots(reader: &mut Reader<'_, '_>) -> Result<(Map<String, Value>, bool), ConfigError> {
    let path = reader.section.path_of("slots");
    let res = match reader.section.raw("slots") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => {
            let bad = map.iter().find_map(|(name, value)| slots::permanent_slot(name, value).err().map(|e| (name, e)));
            match bad {
                Some((name, message)) => Err(ConfigError::Invalid { path: format!("{path}.{name}"), message }),
                None => Ok(Some(map.clone())),
            }
        }
        Some(other) => Err(expected(path, "a map of slot names", other)),
    };
    let unreadable = res.is_err();
    Ok((reader.keep(res)?.unwrap_or_default(), unreadable))
}

fn ignore_slots(reader: &mut Reader<'_, '_>) -> Result<(Vec<Value>, bool), ConfigError> {
    let path = reader.section.path_of("ignore_slots");
    let res = match reader.section.raw("ignore_slots") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let bad = items
                .iter()
                .enumerate()
                .find_map(|(i, item)| slots::IgnoreMatcher::from_value(item).err().map(|e| (i, e)));
            match bad {
                Some((i, message)) => Err(ConfigError::Invalid { path: format!("{path}[{i}]"), message }),
                None => Ok(Some(items.clone())),
            }
        }
        Some(other) => Err(expected(path, "a list of maps", other)),
    };
    let unreadable = res.is_err();
    Ok((reader.keep(res)?.unwrap_or_default(), unreadable))
}

/// Keys of the local `postgresql` section that Patroni drops from the dynamic one.
const LOCAL_ONLY_PG_KEYS: [&str; 7] =
    ["connect_address", "proxy_address", "listen", "config_dir", "data_dir", "pgpass", "authentication"];

/// Dynamic keys raftgres reads but does not act on, each named with what happens instead (see
/// `config::unsupported` for the local ones).
fn without_effect(view: &DynamicView, section: &Section<'_>, warnings: &mut Vec<String>) {
    let mut warn = |key: &str, what: &str| {
        warnings.push(format!("{} has no effect in raftgres: {what}", section.path_of(key)));
    };
    if view.failsafe_mode {
        warn("failsafe_mode", "a primary that cannot reach a Raft majority stops, as without failsafe_mode");
    }
    if !view.postgresql.use_slots {
        warn("postgresql.use_slots", "replicas always stream through physical replication slots");
    }
    if !view.postgresql.pg_hba.is_empty() {
        warn("postgresql.pg_hba", "pg_hba.conf comes from the local postgresql.pg_hba, else bootstrap.pg_hba");
    }
    if !view.postgresql.pg_ident.is_empty() {
        warn("postgresql.pg_ident", "pg_ident.conf is not written");
    }
    if view.max_timelines_history > 0 {
        warn("max_timelines_history", "the whole history is kept");
    }
    let stop_key = if section.has("primary_stop_timeout") { "primary_stop_timeout" } else { "master_stop_timeout" };
    if section.has(stop_key) {
        warn(stop_key, "stopping PostgreSQL is bounded by raftgres' own stop timeouts instead");
    }
}

fn postgresql(reader: &mut Reader<'_, '_>) -> Result<DynamicPostgresql, ConfigError> {
    let res = reader.section.section("postgresql");
    let Some(section) = reader.keep(res)? else { return Ok(DynamicPostgresql::default()) };
    let mut inner = Reader { section, mode: reader.mode, warnings: &mut *reader.warnings };
    let use_pg_rewind = inner.flag("use_pg_rewind", true)?;
    let use_slots = inner.flag("use_slots", true)?;
    let res = inner.section.scalar_map("parameters");
    let mut parameters = inner.keep(res.map(Some))?.unwrap_or_default();
    for guc in defaults::PINNED_GUCS {
        if parameters.remove(guc).is_some() {
            let path = join(&inner.section.path_of("parameters"), guc);
            inner.warnings.push(format!("{path} is set by raftgres itself (ignored)"));
        }
    }
    let res = inner.section.str_list("pg_hba");
    let pg_hba = inner.keep(res.map(Some))?.unwrap_or_default();
    let res = inner.section.str_list("pg_ident");
    let pg_ident = inner.keep(res.map(Some))?.unwrap_or_default();
    let Reader { mut section, warnings, mode } = inner;
    let res = super::sections::recovery_conf(&mut section, warnings);
    let mut inner = Reader { section, mode, warnings };
    let recovery_conf = inner.keep(res.map(Some))?.unwrap_or_default();
    let Reader { mut section, warnings, .. } = inner;
    section.ignore(&LOCAL_ONLY_PG_KEYS, "is local-only and cannot be set in the dynamic configuration", warnings);
    section.finish(warnings);
    Ok(DynamicPostgresql { use_pg_rewind, use_slots, parameters, pg_hba, pg_ident, recovery_conf })
}
