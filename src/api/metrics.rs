//! `GET /metrics`: Patroni's Prometheus metrics (contract §1.13) plus raftgres's own, in text format 0.0.4.
//!
//! PURE: renders a [`NodeStatus`] snapshot with `now` as a parameter; no I/O, no clock reads.
//! Metric names, HELP texts and label sets are Patroni's, so existing dashboards and alerts keep working.

use std::fmt::Write as _;

use chrono::DateTime;
use chrono::NaiveDateTime;
use chrono::Utc;
use tokio::time::Instant;

use crate::api::types::PatroniStatus;
use crate::api::types::Xlog;
use crate::dcs::view::FailoverTimeline;
use crate::postgres::types::Lsn;
use crate::status::FilesystemUsage;
use crate::status::NodeStatus;
use crate::status::PgState;
use crate::status::Role;

/// The `Content-Type` of the rendered text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Patroni's legend for `patroni_postgres_state`, one `index=name` per state.
const STATE_VALUES: &str = "# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, \
4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, 8=start_failed, 9=restarting, 10=restart_failed, \
11=stopping, 12=stopped, 13=stop_failed, 14=crashed";

/// Renders every metric for this node, each sample labelled `{scope="…",name="…"}`.
pub fn render(status: &NodeStatus, now: Instant) -> String {
    let wire = PatroniStatus::from_status(status);
    let mut out = Metrics { labels: labels(status), text: String::new() };
    out.help("raftgres_build_info", "Always 1; the version label is raftgres' own (patroni_version is the API's).");
    out.line("# TYPE raftgres_build_info gauge");
    let labels = out.labels.trim_start_matches('{').to_string();
    out.line(&format!(
        r#"raftgres_build_info{{version="{}",{labels} 1"#,
        escape_label(crate::status::RAFTGRES_VERSION)
    ));
    postgres_metrics(&mut out, status, &wire);
    wal_metrics(&mut out, &wire);
    cluster_metrics(&mut out, &wire);
    out.help("patroni_postgres_state", "Numeric representation of Postgres state.");
    out.line(STATE_VALUES);
    out.sample("patroni_postgres_state", "gauge", status.pg.state.index());
    let lease_remaining = status.leader_until.map_or(0.0, |until| until.saturating_duration_since(now).as_secs_f64());
    out.gauge(
        "raftgres_lease_remaining_seconds",
        "Seconds until this node's leader lease expires, 0 if it holds none.",
        lease_remaining,
    );
    filesystem_metrics(&mut out, &status.filesystems);
    out.text
}

/// What the raft replica and the store say, for raftgres's own metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftFacts {
    /// Current raft term.
    pub term: u64,
    /// This replica is the raft leader.
    pub is_raft_leader: bool,
    /// Index of the last log entry.
    pub last_log_index: u64,
    /// Index of the last applied entry.
    pub last_applied: u64,
    /// Timeline switches recorded in `history` (promotions of a new primary).
    pub n_failovers: usize,
    /// How the last promotion unfolded, from its `history` line.
    pub last_failover: Option<FailoverTimeline>,
}

/// raftgres's own metrics, appended to [`render`] by servers with a raft store.
pub fn render_raft(status: &NodeStatus, facts: &RaftFacts) -> String {
    let mut out = Metrics { labels: labels(status), text: String::new() };
    out.gauge("raftgres_raft_term", "Current raft term of this replica.", facts.term);
    out.gauge(
        "raftgres_raft_leader",
        "Value is 1 if this replica is the raft leader, 0 otherwise.",
        flag(facts.is_raft_leader),
    );
    out.counter(
        "raftgres_raft_log_entries_total",
        "Entries in this replica's raft log (the index of its last entry).",
        facts.last_log_index,
    );
    out.counter(
        "raftgres_raft_applied_entries_total",
        "Raft entries applied to this replica's state machine (the index of the last committed one applied).",
        facts.last_applied,
    );
    out.counter(
        "raftgres_failovers_total",
        "Promotions of a new primary recorded in the cluster history (timeline switches).",
        facts.n_failovers,
    );
    if let Some(timeline) = &facts.last_failover {
        failover_metrics(&mut out, timeline);
    }
    out.text
}

/// The last promotion's phases in seconds: from the old primary's last lease renewal for a
/// failover, from the start of `pg_promote` for a switchover (whose lease was handed over).
fn failover_metrics(out: &mut Metrics, timeline: &FailoverTimeline) {
    let origin = timeline.last_renewal_ms.unwrap_or(timeline.promote_started_ms);
    let since = |ms: u64| ms.saturating_sub(origin) as f64 / 1000.0;
    let name = "raftgres_last_failover_seconds";
    out.help(
        name,
        "Phases of the last promotion, in seconds from the old primary's last lease renewal (failover) or from the \
         start of pg_promote (switchover).",
    );
    out.line(&format!("# TYPE {name} gauge"));
    let base = out.labels.trim_end_matches('}').to_string();
    let kind = timeline.kind.as_str();
    let phases = [
        ("lease_expired", timeline.lease_expired_ms),
        ("promote_started", Some(timeline.promote_started_ms)),
        ("promoted", Some(timeline.promoted_ms)),
        ("first_healthy", timeline.first_healthy_ms),
    ];
    for (phase, at) in phases {
        if let Some(at) = at {
            out.line(&format!(r#"{name}{base},kind="{kind}",phase="{phase}"}} {}"#, since(at)));
        }
    }
    out.gauge(
        "raftgres_last_failover_timestamp_seconds",
        "Epoch seconds at which the last promoted primary left recovery.",
        timeline.promoted_ms as f64 / 1000.0,
    );
}

/// Free and total bytes of the filesystems under the data directory, `pg_wal` (when elsewhere) and the Raft
/// store, as the HA loop last sampled them; nothing for a directory it could not read.
fn filesystem_metrics(out: &mut Metrics, filesystems: &[FilesystemUsage]) {
    if filesystems.is_empty() {
        return;
    }
    let avail: Vec<(&str, u64)> = filesystems.iter().map(|usage| (usage.dir.as_str(), usage.avail_bytes)).collect();
    out.gauge_by_directory(
        "raftgres_filesystem_avail_bytes",
        "Bytes a non-root user can still write on the filesystem holding the data directory, pg_wal (only when on \
         another filesystem) or the Raft store.",
        &avail,
    );
    let size: Vec<(&str, u64)> = filesystems.iter().map(|usage| (usage.dir.as_str(), usage.size_bytes)).collect();
    out.gauge_by_directory(
        "raftgres_filesystem_size_bytes",
        "Size in bytes of the filesystem holding the data directory, pg_wal (only when on another filesystem) or \
         the Raft store.",
        &size,
    );
}

/// Version, running state, start time and role.
fn postgres_metrics(out: &mut Metrics, status: &NodeStatus, wire: &PatroniStatus) {
    let pg = &status.pg;
    let start_time = wire.postmaster_start_time.as_deref().and_then(parse_pg_timestamp).unwrap_or(0.0);
    out.gauge("patroni_version", "Patroni semver without periods.", padded_version(crate::status::PATRONI_VERSION));
    out.gauge(
        "patroni_postgres_running",
        "Value is 1 if Postgres is running, 0 otherwise.",
        flag(pg.state == PgState::Running),
    );
    out.gauge("patroni_postmaster_start_time", "Epoch seconds since Postgres started.", start_time);
    // Role-based, as in Patroni: a primary that lost its lease still reports 1 here.
    out.gauge("patroni_primary", "Value is 1 if this node is the leader, 0 otherwise.", flag(pg.role == Role::Primary));
}

/// WAL positions, replica roles and replication state, in Patroni's order.
fn wal_metrics(out: &mut Metrics, wire: &PatroniStatus) {
    let bytes = |lsn: &Option<Lsn>| lsn.map_or(0, |lsn| lsn.as_u64());
    let (location, received, replayed, replayed_timestamp, paused) = match &wire.xlog {
        None => (0, 0, 0, None, false),
        Some(Xlog::Primary { location }) => (location.as_u64(), 0, 0, None, false),
        Some(Xlog::Replica { received_location, replayed_location, replayed_timestamp, paused }) => {
            (0, bytes(received_location), bytes(replayed_location), replayed_timestamp.as_deref(), *paused)
        }
    };
    out.counter(
        "patroni_xlog_location",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        location,
    );
    let role = wire.role.as_str();
    out.gauge(
        "patroni_standby_leader",
        "Value is 1 if this node is the standby_leader, 0 otherwise.",
        flag(role == Role::StandbyLeader.as_str()),
    );
    out.gauge(
        "patroni_replica",
        "Value is 1 if this node is a replica, 0 otherwise.",
        flag(role == Role::Replica.as_str()),
    );
    out.gauge(
        "patroni_sync_standby",
        "Value is 1 if this node is a sync standby, 0 otherwise.",
        flag(wire.sync_standby),
    );
    out.gauge(
        "patroni_quorum_standby",
        "Value is 1 if this node is a quorum standby, 0 otherwise.",
        flag(wire.quorum_standby),
    );
    out.counter(
        "patroni_xlog_received_location",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        received,
    );
    out.counter(
        "patroni_xlog_replayed_location",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        replayed,
    );
    out.gauge(
        "patroni_xlog_replayed_timestamp",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        replayed_timestamp.and_then(parse_pg_timestamp).unwrap_or(0.0),
    );
    out.gauge("patroni_xlog_paused", "Value is 1 if the Postgres xlog is paused, 0 otherwise.", flag(paused));
    // Patroni only reads replication states on 9.6+, and counts an unknown version as 0.
    if wire.server_version.unwrap_or(0) >= 90600 {
        let replication_state = wire.replication_state.as_deref();
        out.gauge(
            "patroni_postgres_streaming",
            "Value is 1 if Postgres is streaming, 0 otherwise.",
            flag(replication_state == Some("streaming")),
        );
        out.gauge(
            "patroni_postgres_in_archive_recovery",
            "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
            flag(replication_state == Some("in archive recovery")),
        );
    }
}

/// Server version, timeline and the cluster-level flags.
fn cluster_metrics(out: &mut Metrics, wire: &PatroniStatus) {
    out.gauge(
        "patroni_postgres_server_version",
        "Version of Postgres (if running), 0 otherwise.",
        wire.server_version.unwrap_or(0),
    );
    out.gauge(
        "patroni_cluster_unlocked",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        flag(wire.cluster_unlocked),
    );
    out.gauge(
        "patroni_failsafe_mode_is_active",
        "Value is 1 if failsafe mode is active, 0 if inactive.",
        // raftgres has no failsafe mode (a Raft majority is the only authority), so it is never active.
        flag(false),
    );
    out.gauge(
        "patroni_postgres_timeline",
        "Postgres timeline of this node (if running), 0 otherwise.",
        wire.timeline.unwrap_or(0),
    );
    out.gauge(
        "patroni_dcs_last_seen",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        wire.dcs_last_seen,
    );
    out.gauge(
        "patroni_pending_restart",
        "Value is 1 if the node needs a restart, 0 otherwise.",
        flag(wire.pending_restart),
    );
    out.gauge("patroni_is_paused", "Value is 1 if auto failover is disabled, 0 otherwise.", flag(wire.pause));
}

/// The text being built and the label set shared by every sample.
struct Metrics {
    labels: String,
    text: String,
}

impl Metrics {
    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.help(name, help);
        self.sample(name, "gauge", value);
    }

    fn counter(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.help(name, help);
        self.sample(name, "counter", value);
    }

    /// One gauge with a sample per `(directory, value)`, labelled `directory` after the node's labels.
    fn gauge_by_directory(&mut self, name: &str, help: &str, samples: &[(&str, u64)]) {
        self.help(name, help);
        self.line(&format!("# TYPE {name} gauge"));
        let base = self.labels.trim_end_matches('}').to_string();
        for (directory, value) in samples {
            self.line(&format!(r#"{name}{base},directory="{directory}"}} {value}"#));
        }
    }

    fn help(&mut self, name: &str, help: &str) {
        self.line(&format!("# HELP {name} {help}"));
    }

    fn sample(&mut self, name: &str, kind: &str, value: impl std::fmt::Display) {
        self.line(&format!("# TYPE {name} {kind}"));
        self.line(&format!("{name}{} {value}", self.labels));
    }

    fn line(&mut self, line: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "{line}");
    }
}

fn flag(value: bool) -> u8 {
    u8::from(value)
}

/// `{scope="…",name="…"}` with Prometheus label escaping.
fn labels(status: &NodeStatus) -> String {
    format!(r#"{{scope="{}",name="{}"}}"#, escape_label(&status.scope), escape_label(&status.name))
}

fn escape_label(value: &str) -> String {
    value.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n")
}

/// Patroni's `patroni_version`: each dotted component zero-padded to 2 digits (`4.1.4` → `040104`).
pub(crate) fn padded_version(version: &str) -> String {
    let core = version.split(['-', '+']).next().unwrap_or(version);
    core.split('.').map(|part| format!("{part:0>2}")).collect()
}

/// Epoch seconds of a PostgreSQL `timestamptz` text (`2024-08-28 19:39:26.352526+00` or Python's `+00:00`).
///
/// Parsed with chrono as `api::actions::validate::parse_timestamp` does, but with seconds required; the offset
/// is `Z`, `+HH`, `+HHMM` or `+HH:MM`, and a text without one is read as UTC.
pub(crate) fn parse_pg_timestamp(text: &str) -> Option<f64> {
    const ZONED: [&str; 2] = ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"];
    const NAIVE: [&str; 2] = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"];
    let text = text.trim();
    let normalized = match text.strip_suffix('Z') {
        Some(rest) => format!("{rest}+00:00"),
        None => text.to_string(),
    };
    let zoned = ZONED.iter().find_map(|format| DateTime::parse_from_str(&normalized, format).ok());
    let at = match zoned {
        Some(at) => at.with_timezone(&Utc),
        None => NAIVE.iter().find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())?.and_utc(),
    };
    Some(at.timestamp() as f64 + f64::from(at.timestamp_subsec_nanos()) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(timeline: Option<FailoverTimeline>) -> RaftFacts {
        RaftFacts { term: 3, n_failovers: 1, last_failover: timeline, ..RaftFacts::default() }
    }

    #[test]
    fn a_failover_reports_its_phases_from_the_last_renewal() {
        let status = NodeStatus::initial("pg2", "demo", Instant::now());
        let timeline = FailoverTimeline {
            kind: crate::dcs::view::PromotionKind::Failover,
            last_renewal_ms: Some(10_000),
            lease_expired_ms: Some(12_600),
            promote_started_ms: 12_700,
            promoted_ms: 12_750,
            first_healthy_ms: Some(12_800),
        };
        let text = render_raft(&status, &facts(Some(timeline)));
        for line in [
            r#"raftgres_last_failover_seconds{scope="demo",name="pg2",kind="failover",phase="lease_expired"} 2.6"#,
            r#"raftgres_last_failover_seconds{scope="demo",name="pg2",kind="failover",phase="promoted"} 2.75"#,
            r#"raftgres_last_failover_seconds{scope="demo",name="pg2",kind="failover",phase="first_healthy"} 2.8"#,
            r#"raftgres_last_failover_timestamp_seconds{scope="demo",name="pg2"} 12.75"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE raftgres_last_failover_seconds gauge").count(), 1);
    }

    #[test]
    fn a_switchover_counts_from_the_promotion_start_and_no_history_means_no_phases() {
        let status = NodeStatus::initial("pg1", "demo", Instant::now());
        let timeline = FailoverTimeline {
            kind: crate::dcs::view::PromotionKind::Switchover,
            promote_started_ms: 5_000,
            promoted_ms: 5_200,
            ..FailoverTimeline::default()
        };
        let text = render_raft(&status, &facts(Some(timeline)));
        assert!(text.contains(r#"kind="switchover",phase="promoted"} 0.2"#), "{text}");
        assert!(!text.contains("lease_expired"), "{text}");
        assert!(!render_raft(&status, &facts(None)).contains("raftgres_last_failover"));
    }

    #[test]
    fn filesystems_render_one_sample_per_directory_and_nothing_when_unread() {
        use crate::status::NodeDir;
        let mut status = NodeStatus::initial("pg1", "demo", Instant::now());
        assert!(!render(&status, Instant::now()).contains("raftgres_filesystem"), "nothing sampled yet");
        let usage = |dir, avail_bytes| FilesystemUsage { dir, avail_bytes, size_bytes: 1 << 30 };
        status.filesystems = vec![usage(NodeDir::Data, 1000), usage(NodeDir::Wal, 20), usage(NodeDir::Raft, 3)];
        let text = render(&status, Instant::now());
        for line in [
            r#"raftgres_filesystem_avail_bytes{scope="demo",name="pg1",directory="data"} 1000"#,
            r#"raftgres_filesystem_avail_bytes{scope="demo",name="pg1",directory="wal"} 20"#,
            r#"raftgres_filesystem_avail_bytes{scope="demo",name="pg1",directory="raft"} 3"#,
            r#"raftgres_filesystem_size_bytes{scope="demo",name="pg1",directory="raft"} 1073741824"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE raftgres_filesystem_avail_bytes gauge").count(), 1);
        assert_eq!(text.matches("# TYPE raftgres_filesystem_size_bytes gauge").count(), 1);
    }
}
