//! When a node's session (its leader lease) expired, read from the nodes' own logs: the Raft
//! leader's lease keeper logs "session deadline passed on the raft leader; expiring it" with the
//! session's `owner` at the moment it proposes the expiry. That is the store's own decision, with
//! the node's wall-clock timestamp (microseconds), so it is finer and less ambiguous than anything
//! the REST API shows (see `crate::failover` for why this observable was chosen).
//!
//! The line is logged at INFO, the nodes' default; a `RUST_LOG` given to the benchmark reaches the
//! nodes too, and one that hides `raft=info` leaves the lease expiry "not seen".
//! The parsing is PURE; [`first_expiry`] reads the log files. Nothing here runs or times anything.

use std::path::Path;
use std::time::SystemTime;

/// The message the Raft leader logs when it expires a session (raft/src/lease.rs).
pub const EXPIRY_MESSAGE: &str = "session deadline passed on the raft leader";

/// The earliest expiry of `owner`'s session at or after `since` in any of `logs`.
pub fn first_expiry(logs: &[&Path], owner: &str, since: SystemTime) -> Option<SystemTime> {
    logs.iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| text.lines().filter_map(|line| expiry_of(line, owner)).collect::<Vec<_>>())
        .filter(|at| *at >= since)
        .min()
}

/// PURE: the timestamp of `line` when it is the expiry of `owner`'s session.
pub fn expiry_of(line: &str, owner: &str) -> Option<SystemTime> {
    let line = strip_ansi(line);
    if !line.contains(EXPIRY_MESSAGE) || !names_owner(&line, owner) {
        return None;
    }
    let stamp = line.split_whitespace().next()?;
    let parsed = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
    Some(SystemTime::from(parsed))
}

/// Whether the line carries the field `owner=<owner>` (quoted or not), as a whole value.
fn names_owner(line: &str, owner: &str) -> bool {
    [format!("owner=\"{owner}\""), format!("owner={owner}")].iter().any(|field| {
        line.match_indices(field.as_str()).any(|(idx, _)| {
            let after = &line[idx + field.len()..];
            after.is_empty() || after.starts_with(char::is_whitespace)
        })
    })
}

/// PURE: `text` without ANSI escape sequences (`ESC [ … letter`): node logs are colored.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for code in chars.by_ref() {
                if code.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;
    use std::time::UNIX_EPOCH;

    use super::*;

    const PLAIN: &str = "2025-11-22T01:30:00.250000Z  INFO raft::lease: session deadline passed on the raft leader; \
                         expiring it session=7 owner=\"node1\" expected_renewed_rev=42";

    #[track_caller]
    fn check(line: &str, owner: &str, expected_epoch_ms: Option<u64>) {
        let got = expiry_of(line, owner).map(|at| at.duration_since(UNIX_EPOCH).expect("after epoch"));
        assert_eq!(got, expected_epoch_ms.map(Duration::from_millis));
    }

    #[test]
    fn expiry_line_of_the_owner_gives_its_timestamp() {
        check(PLAIN, "node1", Some(1_763_775_000_250));
    }

    #[test]
    fn another_owner_is_not_matched() {
        check(PLAIN, "node2", None);
        check(&PLAIN.replace("\"node1\"", "\"node10\""), "node1", None);
    }

    #[test]
    fn unquoted_owner_is_matched() {
        check(&PLAIN.replace("\"node1\"", "node1"), "node1", Some(1_763_775_000_250));
    }

    #[test]
    fn colored_line_is_parsed() {
        let colored = format!("\u{1b}[2m{}\u{1b}[0m {}", &PLAIN[..27], &PLAIN[28..])
            .replace("owner=", "\u{1b}[3mowner\u{1b}[0m\u{1b}[2m=\u{1b}[0m");
        check(&colored, "node1", Some(1_763_775_000_250));
    }

    #[test]
    fn other_lines_are_ignored() {
        check("2025-11-22T01:30:00.250000Z  INFO ha: promoted owner=\"node1\"", "node1", None);
    }
}
