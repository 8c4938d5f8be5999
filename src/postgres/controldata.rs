//! Pure parsing of `pg_controldata` output into a key/value map and a typed [`ControlData`] view.
//!
//! This module owns the meaning of the pg_control fields raftgres acts on: cluster state (crash recovery,
//! clean shutdown), system identifier, checkpoint and minimum-recovery positions, and whether pg_rewind can work.
//! It must not run `pg_controldata`: the caller runs it with `LC_ALL=C` (the labels are translated otherwise)
//! and passes the text in.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::postgres::types::{Lsn, SystemId, TimelineId};

/// `Database cluster state`, the state recorded in pg_control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterState {
    /// `starting up`
    StartingUp,
    /// `shut down`: a clean shutdown of a primary (or of a never started cluster).
    ShutDown,
    /// `shut down in recovery`: a clean shutdown of a standby.
    ShutDownInRecovery,
    /// `shutting down`: stopped in the middle of a shutdown checkpoint.
    ShuttingDown,
    /// `in crash recovery`
    InCrashRecovery,
    /// `in archive recovery`: a standby that is running or crashed.
    InArchiveRecovery,
    /// `in production`: a primary that is running or crashed.
    InProduction,
    /// Any other text (a newer PostgreSQL, or a translated label).
    Unknown(String),
}

impl ClusterState {
    fn parse(text: &str) -> ClusterState {
        match text {
            "starting up" => ClusterState::StartingUp,
            "shut down" => ClusterState::ShutDown,
            "shut down in recovery" => ClusterState::ShutDownInRecovery,
            "shutting down" => ClusterState::ShuttingDown,
            "in crash recovery" => ClusterState::InCrashRecovery,
            "in archive recovery" => ClusterState::InArchiveRecovery,
            "in production" => ClusterState::InProduction,
            other => ClusterState::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for ClusterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterState::StartingUp => "starting up",
            ClusterState::ShutDown => "shut down",
            ClusterState::ShutDownInRecovery => "shut down in recovery",
            ClusterState::ShuttingDown => "shutting down",
            ClusterState::InCrashRecovery => "in crash recovery",
            ClusterState::InArchiveRecovery => "in archive recovery",
            ClusterState::InProduction => "in production",
            ClusterState::Unknown(text) => text,
        })
    }
}

/// The pg_control fields raftgres uses, plus every raw line for logging and for fields not typed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    /// `Database system identifier`
    pub system_id: SystemId,
    /// `Database cluster state`
    pub state: ClusterState,
    /// `Latest checkpoint location`
    pub checkpoint_lsn: Lsn,
    /// `Latest checkpoint's REDO location`
    pub checkpoint_redo_lsn: Lsn,
    /// `Latest checkpoint's TimeLineID`
    pub checkpoint_timeline: TimelineId,
    /// `Minimum recovery ending location` (`0/0` when not in recovery)
    pub min_recovery_end_lsn: Lsn,
    /// `Min recovery ending loc's timeline` (0 when not in recovery)
    pub min_recovery_end_timeline: TimelineId,
    /// `wal_log_hints setting` is `on`
    pub wal_log_hints: bool,
    /// `Data page checksum version` (0 means checksums are off)
    pub data_checksum_version: u32,
    /// Every `label: value` line, labels and values trimmed.
    pub raw: BTreeMap<String, String>,
}

/// Where the local data directory stands, as pg_rewind and the timeline check need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPosition {
    /// The cluster was a standby when it stopped.
    pub in_recovery: bool,
    /// The timeline it was on.
    pub timeline: TimelineId,
    /// The last position known to be on disk.
    pub lsn: Lsn,
}

/// Why `pg_controldata` output could not be turned into a [`ControlData`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlDataError {
    /// A field raftgres needs is absent (wrong locale, or not pg_controldata output at all).
    #[error("pg_controldata output has no {0:?} line (is LC_ALL=C set?)")]
    MissingField(&'static str),
    /// A field has a value of the wrong shape.
    #[error("pg_controldata field {field:?} has invalid value {value:?}")]
    InvalidField {
        /// The label.
        field: &'static str,
        /// The rejected value.
        value: String,
    },
}

/// The GUCs a hot standby needs at least as high as the primary's, with the pg_control label recording them.
const RECORDED_SETTINGS: [(&str, &str); 5] = [
    ("max_connections", "max_connections setting"),
    ("max_prepared_transactions", "max_prepared_xacts setting"),
    ("max_locks_per_transaction", "max_locks_per_xact setting"),
    ("max_worker_processes", "max_worker_processes setting"),
    ("max_wal_senders", "max_wal_senders setting"),
];

/// Splits `pg_controldata` output into `label → value`, both trimmed; lines without `:` are ignored.
pub fn parse_controldata_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(label, value)| (label.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

/// Parses `pg_controldata` output (run with `LC_ALL=C`) into the typed view.
pub fn parse_controldata(text: &str) -> Result<ControlData, ControlDataError> {
    let raw = parse_controldata_map(text);
    let system_id = typed(&raw, "Database system identifier")?;
    let wal_log_hints = match field(&raw, "wal_log_hints setting")? {
        "on" => true,
        "off" => false,
        other => return Err(ControlDataError::InvalidField { field: "wal_log_hints setting", value: other.into() }),
    };
    Ok(ControlData {
        system_id,
        state: ClusterState::parse(field(&raw, "Database cluster state")?),
        checkpoint_lsn: typed(&raw, "Latest checkpoint location")?,
        checkpoint_redo_lsn: typed(&raw, "Latest checkpoint's REDO location")?,
        checkpoint_timeline: typed(&raw, "Latest checkpoint's TimeLineID")?,
        min_recovery_end_lsn: typed(&raw, "Minimum recovery ending location")?,
        min_recovery_end_timeline: typed(&raw, "Min recovery ending loc's timeline")?,
        wal_log_hints,
        data_checksum_version: typed(&raw, "Data page checksum version")?,
        raw,
    })
}

fn field<'a>(raw: &'a BTreeMap<String, String>, label: &'static str) -> Result<&'a str, ControlDataError> {
    raw.get(label).map(String::as_str).ok_or(ControlDataError::MissingField(label))
}

fn typed<T: FromStr>(raw: &BTreeMap<String, String>, label: &'static str) -> Result<T, ControlDataError> {
    let value = field(raw, label)?;
    value.parse().map_err(|_| ControlDataError::InvalidField { field: label, value: value.to_owned() })
}

impl ControlData {
    /// pg_rewind needs `wal_log_hints = on` or data checksums (Patroni's `can_rewind` check on pg_control).
    pub fn rewind_possible(&self) -> bool {
        self.wal_log_hints || self.data_checksum_version != 0
    }

    /// The cluster stopped uncleanly as a primary (`in production`, `shutting down`, `in crash recovery`):
    /// Patroni runs single-user crash recovery before pg_rewind or before starting it as a replica.
    pub fn needs_crash_recovery(&self) -> bool {
        matches!(self.state, ClusterState::InProduction | ClusterState::ShuttingDown | ClusterState::InCrashRecovery)
    }

    /// The local timeline and position when PostgreSQL is not running (Patroni's
    /// `_get_local_timeline_lsn_from_controldata`); `None` unless the state is a clean shutdown or archive recovery.
    pub fn local_position(&self) -> Option<LocalPosition> {
        let recovery = matches!(self.state, ClusterState::ShutDownInRecovery | ClusterState::InArchiveRecovery);
        if recovery && self.min_recovery_end_lsn != Lsn::ZERO && self.min_recovery_end_timeline.0 != 0 {
            return Some(LocalPosition {
                in_recovery: true,
                timeline: self.min_recovery_end_timeline,
                lsn: self.min_recovery_end_lsn,
            });
        }
        // A standby without a minimum recovery point is judged by its checkpoint, like a cleanly stopped primary.
        (recovery || self.state == ClusterState::ShutDown).then_some(LocalPosition {
            in_recovery: false,
            timeline: self.checkpoint_timeline,
            lsn: self.checkpoint_lsn,
        })
    }

    /// The raw value of any pg_control label, e.g. `Bytes per WAL segment`.
    pub fn get(&self, label: &str) -> Option<&str> {
        self.raw.get(label).map(String::as_str)
    }

    /// The GUC values pg_control recorded (`max_connections`, `max_prepared_transactions`,
    /// `max_locks_per_transaction`, `max_worker_processes`, `max_wal_senders`) keyed by GUC name.
    ///
    /// A standby started with a lower value than these exits at once, so Patroni starts it with the
    /// recorded value and flags a pending restart.
    pub fn recorded_settings(&self) -> BTreeMap<&'static str, u64> {
        RECORDED_SETTINGS.iter().filter_map(|(guc, label)| Some((*guc, self.get(label)?.parse().ok()?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHUT_DOWN: &str = include_str!("../../tests/data/postgres/controldata_shut_down.txt");
    const IN_PRODUCTION: &str = include_str!("../../tests/data/postgres/controldata_in_production.txt");
    const IN_ARCHIVE_RECOVERY: &str = include_str!("../../tests/data/postgres/controldata_in_archive_recovery.txt");
    const SHUT_DOWN_IN_RECOVERY: &str = include_str!("../../tests/data/postgres/controldata_shut_down_in_recovery.txt");
    const PROMOTED: &str = include_str!("../../tests/data/postgres/controldata_promoted_checksums.txt");

    /// Renders the typed view and the derived facts on one line, or the error.
    #[track_caller]
    fn check(text: &str, expected: &str) {
        let actual = match parse_controldata(text) {
            Ok(cd) => format!(
                concat!(
                    "sysid={} state={} ckpt={} redo={} tl={} minrec={}@{} hints={} checksums={} ",
                    "| rewind={} crash={} pos={}"
                ),
                cd.system_id,
                cd.state,
                cd.checkpoint_lsn,
                cd.checkpoint_redo_lsn,
                cd.checkpoint_timeline,
                cd.min_recovery_end_lsn,
                cd.min_recovery_end_timeline,
                cd.wal_log_hints,
                cd.data_checksum_version,
                cd.rewind_possible(),
                cd.needs_crash_recovery(),
                cd.local_position().map_or("-".into(), |p| format!("{}@{} rec={}", p.lsn, p.timeline, p.in_recovery)),
            ),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(actual, expected);
    }

    #[test]
    fn clean_shutdown_after_initdb() {
        check(
            SHUT_DOWN,
            "sysid=7710784912710558201 state=shut down ckpt=0/1500718 redo=0/1500718 tl=1 minrec=0/0@0 hints=false \
             checksums=0 | rewind=false crash=false pos=0/1500718@1 rec=false",
        );
    }

    #[test]
    fn crashed_primary_needs_crash_recovery() {
        check(
            IN_PRODUCTION,
            "sysid=7710784912710558201 state=in production ckpt=0/1500718 redo=0/1500718 tl=1 minrec=0/0@0 \
             hints=false checksums=0 | rewind=false crash=true pos=-",
        );
    }

    #[test]
    fn standby_position_is_its_minimum_recovery_point() {
        check(
            IN_ARCHIVE_RECOVERY,
            "sysid=7710784912710558201 state=in archive recovery ckpt=0/1500718 redo=0/1500718 tl=1 minrec=0/1500790@1 \
             hints=false checksums=0 | rewind=false crash=false pos=0/1500790@1 rec=true",
        );
        check(
            SHUT_DOWN_IN_RECOVERY,
            "sysid=7710784912710558201 state=shut down in recovery ckpt=0/1500718 redo=0/1500718 tl=1 \
             minrec=0/1500790@1 hints=false checksums=0 | rewind=false crash=false pos=0/1500790@1 rec=true",
        );
    }

    #[test]
    fn standby_without_minimum_recovery_point_uses_checkpoint() {
        let text = SHUT_DOWN_IN_RECOVERY.replace("0/1500790", "0/0");
        check(
            &text,
            "sysid=7710784912710558201 state=shut down in recovery ckpt=0/1500718 redo=0/1500718 tl=1 minrec=0/0@1 \
             hints=false checksums=0 | rewind=false crash=false pos=0/1500718@1 rec=false",
        );
    }

    #[test]
    fn promoted_cluster_with_checksums_and_hints_can_rewind() {
        check(
            PROMOTED,
            "sysid=7710784981222539956 state=shut down ckpt=0/1741738 redo=0/1741738 tl=2 minrec=0/0@0 hints=true \
             checksums=1 | rewind=true crash=false pos=0/1741738@2 rec=false",
        );
    }

    #[test]
    fn unknown_state_is_kept_verbatim() {
        let text =
            SHUT_DOWN.replace("Database cluster state:               shut down", "Database cluster state: weird");
        check(
            &text,
            "sysid=7710784912710558201 state=weird ckpt=0/1500718 redo=0/1500718 tl=1 minrec=0/0@0 hints=false \
             checksums=0 | rewind=false crash=false pos=-",
        );
    }

    #[test]
    fn missing_or_garbled_fields_are_errors() {
        check("", r#"error: pg_controldata output has no "Database system identifier" line (is LC_ALL=C set?)"#);
        let translated = SHUT_DOWN.replace("Database system identifier", "Datenbanksystemidentifikation");
        check(
            &translated,
            r#"error: pg_controldata output has no "Database system identifier" line (is LC_ALL=C set?)"#,
        );
        let bad_lsn =
            SHUT_DOWN.replace("Latest checkpoint location:           0/1500718", "Latest checkpoint location: x");
        check(&bad_lsn, r#"error: pg_controldata field "Latest checkpoint location" has invalid value "x""#);
        let bad_hints = SHUT_DOWN.replace("wal_log_hints setting:                off", "wal_log_hints setting: maybe");
        check(&bad_hints, r#"error: pg_controldata field "wal_log_hints setting" has invalid value "maybe""#);
    }

    #[test]
    fn raw_map_keeps_every_line_and_recorded_settings() {
        let cd = parse_controldata(SHUT_DOWN).unwrap();
        assert_eq!(cd.get("pg_control last modified"), Some("Sun Nov 22 00:23:34 2026"));
        assert_eq!(cd.get("Latest checkpoint's oldestCommitTsXid"), Some("0"));
        assert_eq!(cd.get("Bytes per WAL segment"), Some("16777216"));
        let settings: Vec<String> = cd.recorded_settings().iter().map(|(k, v)| format!("{k}={v}")).collect();
        let expected = "max_connections=100 max_locks_per_transaction=64 max_prepared_transactions=0 \
                        max_wal_senders=10 max_worker_processes=8";
        assert_eq!(settings.join(" "), expected);
    }
}
