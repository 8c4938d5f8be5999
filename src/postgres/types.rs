//! PostgreSQL value newtypes: `Lsn`, `TimelineId`, `SystemId`, `PgVersion`, and PostgreSQL size parsing.
//!
//! This module owns the textual forms PostgreSQL uses for these values (`0/40004E8`, `150004`, `16MB`).
//! It must stay pure: no I/O, no async, no clock reads, and no knowledge of the HA loop.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A WAL position, shown as PostgreSQL's `X/Y` (two hex halves of the 64-bit value, e.g. `0/40004E8`).
///
/// Serialized as a plain integer, as in Patroni's member key (`xlog_location`) and `/status` optime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid position `0/0`, which pg_controldata prints for "no minimum recovery point".
    pub const ZERO: Lsn = Lsn(0);

    /// The position as a byte offset into the WAL stream.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The number of WAL bytes from `earlier` to `self`, or 0 when `earlier` is ahead (a lag never goes negative).
    pub fn saturating_sub(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The position `bytes` further on, or `None` on overflow.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Why a string is not a valid value of one of this module's types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}")]
pub struct ParseValueError {
    /// What was being parsed ("LSN", "timeline", "system identifier", "PostgreSQL version").
    pub kind: &'static str,
    /// The rejected input.
    pub value: String,
}

impl ParseValueError {
    fn new(kind: &'static str, value: &str) -> Self {
        ParseValueError { kind, value: value.to_owned() }
    }
}

impl FromStr for Lsn {
    type Err = ParseValueError;

    /// Parses `X/Y` with 1 to 8 hex digits on each side, as `pg_lsn_in` does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseValueError::new("LSN", s);
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let half = |part: &str| {
            let ok = (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_hexdigit());
            if ok {
                u32::from_str_radix(part, 16).ok()
            } else {
                None
            }
        };
        match (half(hi), half(lo)) {
            (Some(hi), Some(lo)) => Ok(Lsn((u64::from(hi) << 32) | u64::from(lo))),
            _ => Err(err()),
        }
    }
}

/// A PostgreSQL timeline id (`Latest checkpoint's TimeLineID`, `timeline` in Patroni's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimelineId(pub u32);

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TimelineId {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_decimal(s).map(TimelineId).ok_or_else(|| ParseValueError::new("timeline", s))
    }
}

/// The `Database system identifier` of a cluster; replicas must share the primary's.
///
/// Shown as a decimal string, as Patroni does in `/initialize` and in `database_system_identifier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for SystemId {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_decimal(s).map(SystemId).ok_or_else(|| ParseValueError::new("system identifier", s))
    }
}

/// A PostgreSQL server version as `server_version_num` (150004 for 15.4, 90624 for 9.6.24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgVersion(pub u32);

impl PgVersion {
    /// The major version (15 for 150004); for pre-10 versions this is the first component only (9 for 90624).
    pub fn major(self) -> u32 {
        self.0 / 10000
    }

    /// Parses the output of `postgres --version`, e.g. `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
    pub fn from_version_output(output: &str) -> Result<PgVersion, ParseValueError> {
        let rest = output.split_once("(PostgreSQL)").map_or(output, |(_, rest)| rest);
        rest.parse()
    }
}

impl fmt::Display for PgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 100_000 {
            write!(f, "{}.{}", self.0 / 10000, self.0 % 10000)
        } else {
            write!(f, "{}.{}.{}", self.0 / 10000, self.0 / 100 % 100, self.0 % 100)
        }
    }
}

impl FromStr for PgVersion {
    type Err = ParseValueError;

    /// Accepts `server_version_num` (`150004`) or `server_version` (`15.4`, `9.6.24`, `16beta1`,
    /// `15.4 (Debian 15.4-1)`; anything after the first space is ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseValueError::new("PostgreSQL version", s);
        let word = s.split_whitespace().next().ok_or_else(err)?;
        if word.len() >= 5 && word.bytes().all(|b| b.is_ascii_digit()) {
            return word.parse().map(PgVersion).map_err(|_| err());
        }
        // "16beta1" and "17devel" are pre-releases of minor 0: keep only the leading digits and dots.
        let numeric_end = word.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(word.len());
        let parts: Vec<u32> =
            word[..numeric_end].split('.').map(|part| part.parse().ok()).collect::<Option<_>>().ok_or_else(err)?;
        let num = match parts.as_slice() {
            [major] if (10..100_000).contains(major) => major * 10000,
            [major, minor] if (10..100_000).contains(major) && *minor < 10000 => major * 10000 + minor,
            [major, minor, patch] if *major < 10 && *minor < 100 && *patch < 100 => major * 10000 + minor * 100 + patch,
            _ => return Err(err()),
        };
        Ok(PgVersion(num))
    }
}

/// Parses a PostgreSQL memory size ("16kB", "64MB", "1GB", "1.5GB", "512" in bytes) into bytes.
///
/// Units are case-sensitive as in PostgreSQL (`B`, `kB`, `MB`, `GB`, `TB`); fractions are rounded to the
/// nearest byte. Used for the REST `?lag=` parameter and for size GUCs; returns `None` for garbage or negatives.
pub fn parse_size(s: &str) -> Option<u64> {
    parse_size_with_default_unit(s, 1)
}

/// Like [`parse_size`], but a number without a unit is in `default_unit_bytes` (1048576 for `wal_keep_size`).
pub fn parse_size_with_default_unit(s: &str, default_unit_bytes: u64) -> Option<u64> {
    let s = s.trim();
    let number_end = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    let multiplier: u64 = match unit.trim_start() {
        "" => default_unit_bytes,
        "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier);
    }
    // Only reached for fractions such as "1.5GB"; f64 is exact far beyond any realistic size.
    let fraction: f64 = number.parse().ok().filter(|f: &f64| f.is_finite())?;
    let bytes = (fraction * multiplier as f64).round();
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Parses a plain unsigned decimal without sign or whitespace, so "+1" and " 1" are rejected.
fn parse_decimal<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Input {
        Lsn(&'static str),
        LsnSub(u64, u64),
        Timeline(&'static str),
        SystemId(&'static str),
        Version(&'static str),
        VersionOutput(&'static str),
        Size(&'static str),
        SizeMb(&'static str),
    }

    /// Parses (and re-renders) the input; `expected` is the Display form plus the numeric value, or the error.
    #[track_caller]
    fn check(input: Input, expected: &str) {
        fn show<T: fmt::Display, E: fmt::Display>(res: Result<T, E>, num: impl Fn(&T) -> String) -> String {
            match res {
                Ok(value) => format!("{value} = {}", num(&value)),
                Err(e) => format!("error: {e}"),
            }
        }
        let actual = match input {
            Input::Lsn(s) => show(s.parse::<Lsn>(), |lsn| lsn.as_u64().to_string()),
            Input::LsnSub(a, b) => Lsn(a).saturating_sub(Lsn(b)).to_string(),
            Input::Timeline(s) => show(s.parse::<TimelineId>(), |tl| tl.0.to_string()),
            Input::SystemId(s) => show(s.parse::<SystemId>(), |id| id.0.to_string()),
            Input::Version(s) => show(s.parse::<PgVersion>(), |v| format!("{} major {}", v.0, v.major())),
            Input::VersionOutput(s) => show(PgVersion::from_version_output(s), |v| v.0.to_string()),
            Input::Size(s) => format!("{:?}", parse_size(s)),
            Input::SizeMb(s) => format!("{:?}", parse_size_with_default_unit(s, 1 << 20)),
        };
        assert_eq!(actual, expected);
    }

    #[test]
    fn lsn_text_form_matches_postgresql() {
        check(Input::Lsn("0/40004E8"), "0/40004E8 = 67110120");
        check(Input::Lsn("0/0"), "0/0 = 0");
        check(Input::Lsn("16/B374D848"), "16/B374D848 = 97500059720");
        check(Input::Lsn("ffffffff/ffffffff"), "FFFFFFFF/FFFFFFFF = 18446744073709551615");
        check(Input::Lsn("0/0001"), "0/1 = 1");
    }

    #[test]
    fn lsn_garbage_is_rejected() {
        check(Input::Lsn("0"), r#"error: invalid LSN "0""#);
        check(Input::Lsn("/1"), r#"error: invalid LSN "/1""#);
        check(Input::Lsn("0/123456789"), r#"error: invalid LSN "0/123456789""#);
        check(Input::Lsn("0/+1"), r#"error: invalid LSN "0/+1""#);
        check(Input::Lsn(" 0/1"), r#"error: invalid LSN " 0/1""#);
    }

    #[test]
    fn lsn_difference_is_bytes_and_never_negative() {
        check(Input::LsnSub(0x5000, 0x1000), "16384");
        check(Input::LsnSub(0x1000, 0x5000), "0");
    }

    #[test]
    fn lsn_serializes_as_integer() {
        assert_eq!(serde_json::to_string(&Lsn(67110120)).unwrap(), "67110120");
        assert_eq!(serde_json::from_str::<Lsn>("67110120").unwrap(), Lsn(67110120));
    }

    #[test]
    fn timeline_and_system_id_are_decimal() {
        check(Input::Timeline("2"), "2 = 2");
        check(Input::Timeline("-1"), r#"error: invalid timeline "-1""#);
        check(Input::SystemId("7710784912710558201"), "7710784912710558201 = 7710784912710558201");
        check(Input::SystemId("77107849127105582010"), r#"error: invalid system identifier "77107849127105582010""#);
    }

    #[test]
    fn version_accepts_num_and_dotted_forms() {
        check(Input::Version("150004"), "15.4 = 150004 major 15");
        check(Input::Version("15.4"), "15.4 = 150004 major 15");
        check(Input::Version("15.4 (Debian 15.4-2.pgdg120+1)"), "15.4 = 150004 major 15");
        check(Input::Version("9.6.24"), "9.6.24 = 90624 major 9");
        check(Input::Version("16beta1"), "16.0 = 160000 major 16");
        check(Input::Version("15"), "15.0 = 150000 major 15");
        check(Input::Version("9.6"), r#"error: invalid PostgreSQL version "9.6""#);
        check(Input::Version("999999.1"), r#"error: invalid PostgreSQL version "999999.1""#);
        check(Input::Version("fifteen"), r#"error: invalid PostgreSQL version "fifteen""#);
        check(Input::Version(""), r#"error: invalid PostgreSQL version """#);
    }

    #[test]
    fn version_from_binary_output() {
        check(Input::VersionOutput("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"), "15.18 = 150018");
        check(Input::VersionOutput("postgres (PostgreSQL) 17devel"), "17.0 = 170000");
    }

    #[test]
    fn size_units_follow_postgresql() {
        check(Input::Size("16kB"), "Some(16384)");
        check(Input::Size("64MB"), "Some(67108864)");
        check(Input::Size("1GB"), "Some(1073741824)");
        check(Input::Size("1 TB"), "Some(1099511627776)");
        check(Input::Size("1048576"), "Some(1048576)");
        check(Input::Size("10B"), "Some(10)");
        check(Input::Size("1.5kB"), "Some(1536)");
    }

    #[test]
    fn size_garbage_is_rejected() {
        check(Input::Size("16kb"), "None");
        check(Input::Size("-1"), "None");
        check(Input::Size("MB"), "None");
        check(Input::Size(""), "None");
        check(Input::Size("99999999999TB"), "None");
    }

    #[test]
    fn size_without_unit_uses_the_default_unit() {
        check(Input::SizeMb("128"), "Some(134217728)");
        check(Input::SizeMb("128MB"), "Some(134217728)");
        check(Input::SizeMb("1GB"), "Some(1073741824)");
    }
}
