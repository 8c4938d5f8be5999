//! Pure rendering of the configuration files raftgres manages, and the parameter rules behind them.
//!
//! This module owns: `postgresql.conf` text and its quoting, `primary_conninfo` (libpq quoting), `pg_hba.conf`,
//! `.pgpass` lines, the cluster-wide GUCs with Patroni's defaults and minimums, the parameters raftgres always
//! pins, and whether a change needs a restart (from `pg_settings.context`).
//! It must not write files (the caller writes through `durable::write`), query PostgreSQL or read the clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::postgres::types::parse_size_with_default_unit;

/// The first line of every file raftgres generates.
pub const MANAGED_HEADER: &str = "# managed by raftgres; do not edit\n";

/// The name the original `postgresql.conf` is moved to; the generated file includes it first.
pub const BASE_CONF: &str = "postgresql.base.conf";

/// A value that cannot be rendered safely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    /// Not a GUC name PostgreSQL's config lexer accepts (`name` or `extension.name`).
    #[error("invalid parameter name {0:?}")]
    InvalidParameterName(String),
    /// Not a libpq keyword (lower-case letters and `_`).
    #[error("invalid connection keyword {0:?}")]
    InvalidConninfoKeyword(String),
}

/// Renders `postgresql.conf`: the header, `include '<include>'` (pass [`BASE_CONF`] when that file exists),
/// then `name = 'value'` per parameter in name order, so that the parameters override the included file.
pub fn render_postgresql_conf(params: &BTreeMap<String, String>, include: Option<&str>) -> Result<String, ConfError> {
    let mut out = String::from(MANAGED_HEADER);
    if let Some(include) = include {
        out.push_str(&format!("include '{}'\n", quote_conf_value(include)));
    }
    for (name, value) in params {
        if !is_valid_guc_name(name) {
            return Err(ConfError::InvalidParameterName(name.clone()));
        }
        out.push_str(&format!("{name} = '{}'\n", quote_conf_value(value)));
    }
    Ok(out)
}

/// Escapes a value for a single-quoted string in a PostgreSQL config file: `'` and `\` are doubled, as Patroni
/// does, and line breaks become `\n`/`\r` because the config lexer does not allow them inside quotes.
fn quote_conf_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "''").replace('\n', "\\n").replace('\r', "\\r")
}

/// PostgreSQL's config lexer: `ID` or `ID.ID`, where `ID` is a letter or `_` then letters, digits or `_`.
fn is_valid_guc_name(name: &str) -> bool {
    let is_id = |id: &str| {
        let mut chars = id.chars();
        let letter = |c: char| c.is_ascii_alphabetic() || c == '_' || !c.is_ascii();
        chars.next().is_some_and(letter) && chars.all(|c| letter(c) || c.is_ascii_digit())
    };
    name.split_once('.').map_or(is_id(name), |(prefix, rest)| is_id(prefix) && is_id(rest))
}

/// The connection a replica uses to stream from its upstream (`primary_conninfo`), also the source of `.pgpass`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnInfo {
    /// Host name, address or socket directory; may be a comma-separated list.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Replication user.
    pub user: String,
    /// Password; left out of the conninfo when `passfile` is set (it goes into that file instead).
    pub password: Option<String>,
    /// Path of the `.pgpass` file holding the password.
    pub passfile: Option<String>,
    /// The member name, so the primary's `pg_stat_replication` and `synchronous_standby_names` can match it.
    pub application_name: String,
    /// `sslmode`, e.g. `prefer` or `verify-full`.
    pub sslmode: Option<String>,
    /// Further libpq keywords (`dbname`, `sslrootcert`, `target_session_attrs`, ...), rendered in name order.
    pub options: BTreeMap<String, String>,
}

/// Renders a libpq connection string: `key='value'` pairs, `\` and `'` backslash-escaped.
pub fn render_conninfo(info: &ConnInfo) -> Result<String, ConfError> {
    let port = info.port.to_string();
    let mut pairs: Vec<(&str, &str)> = vec![("user", &info.user)];
    let passfile = info.passfile.as_deref().map(|passfile| ("passfile", passfile));
    pairs.extend(passfile.or(info.password.as_deref().map(|password| ("password", password))));
    pairs.extend([("host", info.host.as_str()), ("port", &port)]);
    pairs.push(("application_name", &info.application_name));
    pairs.extend(info.sslmode.as_deref().map(|sslmode| ("sslmode", sslmode)));
    for (key, value) in &info.options {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(ConfError::InvalidConninfoKeyword(key.clone()));
        }
        pairs.push((key, value));
    }
    let quote = |value: &str| value.replace('\\', "\\\\").replace('\'', "\\'");
    Ok(pairs.iter().map(|(key, value)| format!("{key}='{}'", quote(value))).collect::<Vec<_>>().join(" "))
}

/// Renders `.pgpass` content for `info` (database `*`), or `None` without a password.
///
/// Like Patroni: one line per comma-separated host, `*` for an empty host, and an extra `localhost` line
/// when a host is a socket directory, because libpq looks up socket connections as `localhost`.
pub fn render_pgpass(info: &ConnInfo) -> Option<String> {
    let password = info.password.as_deref()?;
    let escape = |value: &str| value.replace('\\', "\\\\").replace(':', "\\:");
    let mut hosts: Vec<String> = info.host.split(',').map(str::trim).filter(|h| !h.is_empty()).map(escape).collect();
    if hosts.is_empty() {
        hosts.push("*".to_owned());
    }
    if hosts.iter().any(|host| host.starts_with('/')) && !hosts.iter().any(|host| host == "localhost") {
        hosts.push("localhost".to_owned());
    }
    let (port, user, password) = (info.port, escape(&info.user), escape(password));
    Some(hosts.iter().map(|host| format!("{host}:{port}:*:{user}:{password}\n")).collect())
}

/// Renders `pg_hba.conf` (or `pg_ident.conf`) from its lines, after the managed-file header.
pub fn render_pg_hba<S: AsRef<str>>(lines: &[S]) -> String {
    lines.iter().fold(String::from(MANAGED_HEADER), |out, line| out + line.as_ref() + "\n")
}

/// How a cluster-wide value is validated.
#[derive(Debug, Clone, Copy)]
enum Check {
    IntMin(i64),
    Bool,
    WalLevel,
    SizeMinMb(u64),
}

/// The GUCs that must be identical on every member and are only settable in the dynamic configuration,
/// with Patroni's default and validation (`ConfigHandler.CMDLINE_OPTIONS`).
const CLUSTER_WIDE: [(&str, &str, Check); 10] = [
    ("max_connections", "100", Check::IntMin(25)),
    ("max_locks_per_transaction", "64", Check::IntMin(32)),
    ("max_worker_processes", "8", Check::IntMin(2)),
    ("max_prepared_transactions", "0", Check::IntMin(0)),
    ("wal_level", "replica", Check::WalLevel),
    ("track_commit_timestamp", "off", Check::Bool),
    ("max_wal_senders", "10", Check::IntMin(3)),
    ("max_replication_slots", "10", Check::IntMin(4)),
    ("wal_keep_size", "128MB", Check::SizeMinMb(16)),
    ("wal_log_hints", "on", Check::Bool),
];

/// Whether `name` is one of the cluster-wide GUCs (including the pre-13 `wal_keep_segments`).
pub fn is_cluster_wide(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "wal_keep_segments" || CLUSTER_WIDE.iter().any(|(cluster_wide, _, _)| *cluster_wide == name)
}

/// A cluster-wide value that failed validation and was replaced by the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedParam {
    /// The GUC name.
    pub name: String,
    /// The value given.
    pub value: String,
    /// The default used instead.
    pub default: String,
}

impl fmt::Display for RejectedParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RejectedParam { name, value, default } = self;
        write!(f, "postgresql parameter {name}={value} failed validation, defaulting to {default}")
    }
}

/// Parameters with every cluster-wide GUC present and valid, and the values that had to be replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterWideParams {
    /// All parameters; cluster-wide names are lower-case.
    pub params: BTreeMap<String, String>,
    /// Invalid values that were replaced by defaults (log each as a warning).
    pub rejected: Vec<RejectedParam>,
}

/// Fills in the cluster-wide GUCs: a missing one gets Patroni's default, an invalid or too small one is
/// replaced by the default (not clamped, as in Patroni), `wal_level = hot_standby` becomes `replica`,
/// and `wal_keep_segments` (gone in PostgreSQL 13) becomes `wal_keep_size` at 16MB per segment.
pub fn apply_cluster_wide_defaults(params: &BTreeMap<String, String>) -> ClusterWideParams {
    let mut params = params.clone();
    let mut rejected = Vec::new();
    let keep_segments = take_ignore_case(&mut params, "wal_keep_segments");
    let mut keep_size = take_ignore_case(&mut params, "wal_keep_size");
    if let (None, Some(value)) = (&keep_size, keep_segments) {
        match value.trim().parse::<u64>().ok().filter(|n| *n >= 1).and_then(|n| n.checked_mul(16)) {
            Some(mb) => keep_size = Some(format!("{mb}MB")),
            None => rejected.push(RejectedParam { name: "wal_keep_segments".into(), value, default: "8".into() }),
        }
    }
    for (name, default, check) in CLUSTER_WIDE {
        let given = if name == "wal_keep_size" { keep_size.take() } else { take_ignore_case(&mut params, name) };
        let value = match given {
            None => default.to_owned(),
            Some(value) => validate(&value, check).unwrap_or_else(|| {
                rejected.push(RejectedParam { name: name.to_owned(), value, default: default.to_owned() });
                default.to_owned()
            }),
        };
        params.insert(name.to_owned(), value);
    }
    ClusterWideParams { params, rejected }
}

/// The accepted (normalised) value, or `None` if it fails `check`.
fn validate(value: &str, check: Check) -> Option<String> {
    let value = value.trim();
    match check {
        Check::IntMin(min) => value.parse::<i64>().ok().filter(|n| *n >= min).map(|n| n.to_string()),
        Check::Bool => parse_bool(value).map(|on| if on { "on" } else { "off" }.to_owned()),
        Check::WalLevel => match value.to_ascii_lowercase().as_str() {
            "hot_standby" | "replica" => Some("replica".to_owned()),
            "logical" => Some("logical".to_owned()),
            _ => None,
        },
        Check::SizeMinMb(min) => {
            parse_size_with_default_unit(value, 1 << 20).filter(|bytes| *bytes >= min << 20).map(|_| value.to_owned())
        }
    }
}

/// PostgreSQL's boolean spellings (Patroni's `parse_bool`).
fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Removes every spelling of a GUC name (GUC names are case-insensitive); the lower-case spelling wins.
fn take_ignore_case(params: &mut BTreeMap<String, String>, name: &str) -> Option<String> {
    let keys: Vec<String> = params.keys().filter(|key| key.eq_ignore_ascii_case(name)).cloned().collect();
    let values = keys.into_iter().filter_map(|key| params.remove(&key).map(|value| (key == name, value)));
    values.max_by_key(|(exact, _)| *exact).map(|(_, value)| value)
}

/// The values raftgres always sets itself, whatever the user configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedParams<'a> {
    /// `listen_addresses`, from the local `postgresql.listen`.
    pub listen_addresses: &'a str,
    /// `port`, from the local `postgresql.listen`.
    pub port: u16,
    /// `cluster_name`, the scope.
    pub cluster_name: &'a str,
    /// `hba_file`, when raftgres manages pg_hba.conf outside the data directory.
    pub hba_file: Option<&'a str>,
    /// `ident_file`, likewise.
    pub ident_file: Option<&'a str>,
}

/// Applies the pinned values: listen address, port and cluster name, `hot_standby = on` (replicas serve reads),
/// `wal_level` at least `replica` (`logical` is kept), and `wal_log_hints = on` so pg_rewind works on a former primary.
pub fn apply_pinned_parameters(
    mut params: BTreeMap<String, String>,
    pinned: &PinnedParams<'_>,
) -> BTreeMap<String, String> {
    let wal_level = take_ignore_case(&mut params, "wal_level");
    let wal_level =
        if wal_level.is_some_and(|level| level.trim().eq_ignore_ascii_case("logical")) { "logical" } else { "replica" };
    let port = pinned.port.to_string();
    let mut set = vec![
        ("listen_addresses", pinned.listen_addresses),
        ("port", &port),
        ("cluster_name", pinned.cluster_name),
        ("hot_standby", "on"),
        ("wal_level", wal_level),
        ("wal_log_hints", "on"),
    ];
    set.extend(pinned.hba_file.map(|file| ("hba_file", file)));
    set.extend(pinned.ident_file.map(|file| ("ident_file", file)));
    for (name, value) in set {
        take_ignore_case(&mut params, name);
        params.insert(name.to_owned(), value.to_owned());
    }
    params
}

/// What it takes for a changed value to become effective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeEffect {
    /// A reload (SIGHUP) applies it.
    Reload,
    /// Only a restart applies it (`pending_restart` until then).
    Restart,
    /// It cannot be changed at all.
    NotSettable,
}

/// What applying a change takes, from the parameter's `pg_settings.context`; `None` for an unknown context.
///
/// `postmaster` needs a restart; `sighup`, `superuser`, `user`, `backend` and `superuser-backend` are applied
/// by a reload (the last two to new sessions only); `internal` is fixed at build or initdb time.
pub fn change_effect(context: &str) -> Option<ChangeEffect> {
    match context {
        "postmaster" => Some(ChangeEffect::Restart),
        "sighup" | "superuser" | "user" | "backend" | "superuser-backend" => Some(ChangeEffect::Reload),
        "internal" => Some(ChangeEffect::NotSettable),
        _ => None,
    }
}

/// Compares two parameter maps (names case-insensitive; added and removed names count as changed) and returns
/// each changed name (lower-case) with what applying it takes, looked up in `contexts`, the `name → context`
/// rows of `pg_settings`; `None` for a name missing there (a typo, or an extension that is not loaded).
pub fn classify_changes(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    contexts: &BTreeMap<String, String>,
) -> BTreeMap<String, Option<ChangeEffect>> {
    let lower = |params: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        params.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())).collect()
    };
    let (old, new) = (lower(old), lower(new));
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter(|name| old.get(*name) != new.get(*name))
        .map(|name| (name.clone(), contexts.get(name).and_then(|context| change_effect(context))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    enum Input<'a> {
        Conf(&'a [(&'a str, &'a str)], Option<&'a str>),
        Conninfo(ConnInfo),
        Pgpass(ConnInfo),
        Hba(&'a [&'a str]),
        ClusterWide(&'a [(&'a str, &'a str)]),
        Pinned(&'a [(&'a str, &'a str)], PinnedParams<'a>),
        Changes(&'a [(&'a str, &'a str)], &'a [(&'a str, &'a str)]),
    }

    /// Renders the output of the function under test as text (maps as `k=v` lines).
    #[track_caller]
    fn check(input: Input<'_>, expected: &str) {
        let lines =
            |params: &BTreeMap<String, String>| params.iter().map(|(k, v)| format!("{k}={v}\n")).collect::<String>();
        let actual = match input {
            Input::Conf(params, inc) => render_postgresql_conf(&map(params), inc).unwrap_or_else(|e| e.to_string()),
            Input::Conninfo(info) => render_conninfo(&info).unwrap_or_else(|e| e.to_string()),
            Input::Pgpass(info) => render_pgpass(&info).unwrap_or_else(|| "None".to_owned()),
            Input::Hba(hba) => render_pg_hba(hba),
            Input::ClusterWide(params) => {
                // Values equal to their default are summarised as a count to keep the rows short.
                let mut res = apply_cluster_wide_defaults(&map(params));
                let len = res.params.len();
                res.params
                    .retain(|name, value| !CLUSTER_WIDE.iter().any(|(n, default, _)| n == name && default == value));
                let rejected: String = res.rejected.iter().map(|r| format!("! {r}\n")).collect();
                format!("{}+{} defaults\n{rejected}", lines(&res.params), len - res.params.len())
            }
            Input::Pinned(params, pinned) => lines(&apply_pinned_parameters(map(params), &pinned)),
            Input::Changes(old, new) => {
                let ctx = map(&[("shared_buffers", "postmaster"), ("work_mem", "user"), ("block_size", "internal")]);
                format!("{:?}", classify_changes(&map(old), &map(new), &ctx))
            }
        };
        assert_eq!(actual, expected);
    }

    fn replication_conninfo() -> ConnInfo {
        ConnInfo {
            host: "10.0.0.1".into(),
            port: 5432,
            user: "replicator".into(),
            password: Some(r"pa's\s".into()),
            application_name: "pg-2".into(),
            ..ConnInfo::default()
        }
    }

    #[test]
    fn postgresql_conf_quotes_values_and_includes_base() {
        let params = [("shared_buffers", "128MB"), ("archive_command", r"cp %p '/a b\%f'"), ("auto_explain.x", "1s")];
        let expected = "# managed by raftgres; do not edit\ninclude 'postgresql.base.conf'\n\
                        archive_command = 'cp %p ''/a b\\\\%f'''\nauto_explain.x = '1s'\nshared_buffers = '128MB'\n";
        check(Input::Conf(&params, Some(BASE_CONF)), expected);
        check(Input::Conf(&[("x", "a\nb")], None), "# managed by raftgres; do not edit\nx = 'a\\nb'\n");
    }

    #[test]
    fn postgresql_conf_rejects_injected_names() {
        check(Input::Conf(&[("x = 1\nfsync", "off")], None), "invalid parameter name \"x = 1\\nfsync\"");
        check(Input::Conf(&[("1abc", "off")], None), "invalid parameter name \"1abc\"");
        check(Input::Conf(&[("a.b.c", "off")], None), "invalid parameter name \"a.b.c\"");
    }

    #[test]
    fn conninfo_quotes_for_libpq() {
        let expected = r"user='replicator' password='pa\'s\\s' host='10.0.0.1' port='5432' application_name='pg-2'";
        check(Input::Conninfo(replication_conninfo()), expected);
        let with_passfile = ConnInfo {
            passfile: Some("/var/lib/raftgres/pgpass".into()),
            sslmode: Some("verify-full".into()),
            options: map(&[("target_session_attrs", "read-write")]),
            ..replication_conninfo()
        };
        let expected = "user='replicator' passfile='/var/lib/raftgres/pgpass' host='10.0.0.1' port='5432' \
                        application_name='pg-2' sslmode='verify-full' target_session_attrs='read-write'";
        check(Input::Conninfo(with_passfile), expected);
        let bad = ConnInfo { options: map(&[("x' host='evil", "1")]), ..replication_conninfo() };
        check(Input::Conninfo(bad), "invalid connection keyword \"x' host='evil\"");
    }

    #[test]
    fn pgpass_escapes_and_covers_every_host() {
        check(Input::Pgpass(replication_conninfo()), "10.0.0.1:5432:*:replicator:pa's\\\\s\n");
        let sockets = ConnInfo { host: "/run/postgresql, db:2".into(), ..replication_conninfo() };
        let expected = "/run/postgresql:5432:*:replicator:pa's\\\\s\n\
                        db\\:2:5432:*:replicator:pa's\\\\s\n\
                        localhost:5432:*:replicator:pa's\\\\s\n";
        check(Input::Pgpass(sockets), expected);
        let no_host = ConnInfo { host: String::new(), ..replication_conninfo() };
        check(Input::Pgpass(no_host), "*:5432:*:replicator:pa's\\\\s\n");
        check(Input::Pgpass(ConnInfo { password: None, ..replication_conninfo() }), "None");
    }

    #[test]
    fn pg_hba_is_header_plus_lines() {
        let hba = ["local all all trust", "host replication rep 0.0.0.0/0 scram-sha-256"];
        check(
            Input::Hba(&hba),
            "# managed by raftgres; do not edit\nlocal all all trust\nhost replication rep 0.0.0.0/0 scram-sha-256\n",
        );
    }

    #[test]
    fn cluster_wide_defaults_fill_missing_values() {
        check(Input::ClusterWide(&[("shared_buffers", "1GB")]), "shared_buffers=1GB\n+10 defaults\n");
        check(Input::ClusterWide(&[("max_connections", "200")]), "max_connections=200\n+9 defaults\n");
    }

    #[test]
    fn cluster_wide_invalid_values_fall_back_to_defaults() {
        let params =
            [("max_connections", "10"), ("MAX_WAL_SENDERS", "20"), ("wal_level", "minimal"), ("wal_log_hints", "x")];
        let expected = "max_wal_senders=20\n+9 defaults\n\
                        ! postgresql parameter max_connections=10 failed validation, defaulting to 100\n\
                        ! postgresql parameter wal_level=minimal failed validation, defaulting to replica\n\
                        ! postgresql parameter wal_log_hints=x failed validation, defaulting to on\n";
        check(Input::ClusterWide(&params), expected);
    }

    #[test]
    fn cluster_wide_translates_old_spellings() {
        let params = [("wal_level", "hot_standby"), ("wal_keep_segments", "32"), ("track_commit_timestamp", "TRUE")];
        check(Input::ClusterWide(&params), "track_commit_timestamp=on\nwal_keep_size=512MB\n+8 defaults\n");
        let small = [("wal_keep_size", "8MB"), ("wal_keep_segments", "32")];
        let expected =
            "+10 defaults\n! postgresql parameter wal_keep_size=8MB failed validation, defaulting to 128MB\n";
        check(Input::ClusterWide(&small), expected);
        check(Input::ClusterWide(&[("wal_keep_size", "1GB")]), "wal_keep_size=1GB\n+9 defaults\n");
        let bad_segments =
            "+10 defaults\n! postgresql parameter wal_keep_segments=0 failed validation, defaulting to 8\n";
        check(Input::ClusterWide(&[("wal_keep_segments", "0")]), bad_segments);
        assert!(is_cluster_wide("Max_Connections") && is_cluster_wide("wal_keep_segments") && !is_cluster_wide("x"));
    }

    #[test]
    fn pinned_parameters_override_user_values() {
        let pinned =
            PinnedParams { listen_addresses: "*", port: 5433, cluster_name: "b", hba_file: None, ident_file: None };
        let params = [("Port", "1"), ("hot_standby", "off"), ("wal_level", "logical"), ("wal_log_hints", "off")];
        let expected =
            "cluster_name=b\nhot_standby=on\nlisten_addresses=*\nport=5433\nwal_level=logical\nwal_log_hints=on\n";
        check(Input::Pinned(&params, pinned), expected);
        let with_files = PinnedParams { hba_file: Some("/etc/hba"), ident_file: Some("/etc/ident"), ..pinned };
        let expected = "cluster_name=b\nhba_file=/etc/hba\nhot_standby=on\nident_file=/etc/ident\n\
                        listen_addresses=*\nport=5433\nwal_level=replica\nwal_log_hints=on\nwork_mem=4MB\n";
        check(Input::Pinned(&[("wal_level", "minimal"), ("work_mem", "4MB")], with_files), expected);
    }

    #[test]
    fn changes_are_grouped_by_pg_settings_context() {
        let old = [("shared_buffers", "128MB"), ("work_mem", "4MB"), ("block_size", "8192")];
        let new = [("Shared_Buffers", "256MB"), ("block_size", "16384"), ("my.setting", "1")];
        let expected = "{\"block_size\": Some(NotSettable), \"my.setting\": None, \
                        \"shared_buffers\": Some(Restart), \"work_mem\": Some(Reload)}";
        check(Input::Changes(&old, &new), expected);
        check(Input::Changes(&old, &old), "{}");
    }
}
