//! The SQL status probe and the one cached SQL connection every local statement goes through.
//!
//! This module owns the cached superuser connection (TCP to the first listen address, reconnected after any
//! failure), the statement helpers the other submodules share (`session`, `sql`, `bounded`), and the status
//! probe: one round trip of pipelined queries bounded by a timeout, so a hung server reads as a failed probe,
//! never as a stuck HA loop. It must not spawn processes, send signals or write files.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, NoTls, Row};
use tracing::Instrument;

use super::{PgConfig, PgError, Supervisor};
use crate::postgres::types::{Lsn, PgVersion, SystemId, TimelineId};
use crate::status::{PgState, PgStatus, ReplicationRow, Role, WalPosition};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a whole probe (connect plus queries) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long other short statements (users, slots) may take.
pub(super) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// One row: role, version, start time, system id, positions, timeline candidates and the WAL receiver.
/// Functions that fail in the other role sit behind `CASE`, which PostgreSQL evaluates lazily for volatile calls.
const STATUS_SQL: &str = "\
SELECT pg_catalog.pg_is_in_recovery(),
       pg_catalog.current_setting('server_version_num'),
       pg_catalog.to_char(pg_catalog.pg_postmaster_start_time(), 'YYYY-MM-DD HH24:MI:SS.USTZH:TZM'),
       (SELECT system_identifier::text FROM pg_catalog.pg_control_system()),
       CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_current_wal_flush_lsn()::text END,
       CASE WHEN NOT pg_catalog.pg_is_in_recovery()
            THEN ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))
                 ::bit(32)::int END,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_receive_lsn()::text END,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()::text END,
       CASE WHEN pg_catalog.pg_is_in_recovery()
            THEN pg_catalog.to_char(pg_catalog.pg_last_xact_replay_timestamp(), 'YYYY-MM-DD HH24:MI:SS.USTZH:TZM') END,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_is_wal_replay_paused() ELSE false END,
       (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()),
       (SELECT min_recovery_end_timeline FROM pg_catalog.pg_control_recovery()),
       w.status, w.received_tli, w.written_lsn::text, w.latest_end_lsn::text
  FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_stat_wal_receiver AS w ON true";

const REPLICATION_SQL: &str = "\
SELECT usename::text, application_name, host(client_addr), state, sync_state, sync_priority,
       flush_lsn::text, replay_lsn::text
  FROM pg_catalog.pg_stat_replication ORDER BY application_name, pid";

/// `pending_restart` settings with the running value and the last value in the config files.
const PENDING_RESTART_SQL: &str = "\
SELECT s.name, s.setting,
       COALESCE((SELECT f.setting FROM pg_catalog.pg_file_settings AS f
                  WHERE f.name = s.name ORDER BY f.seqno DESC LIMIT 1), '')
  FROM pg_catalog.pg_settings AS s WHERE s.pending_restart ORDER BY s.name";

/// The result of one status probe of a running PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// `server_version_num`.
    pub server_version: PgVersion,
    /// `pg_postmaster_start_time()` as `YYYY-MM-DD HH:MM:SS.ffffff+HH:MM`.
    pub postmaster_start_time: String,
    /// Primary: the timeline of the current WAL file; replica: the highest timeline its WAL receiver streamed
    /// since this postmaster started (see [`Supervisor::probe`]), else pg_control's.
    pub timeline: Option<TimelineId>,
    /// Replica: the timeline the WAL receiver streams right now (`pg_stat_wal_receiver.received_tli`).
    pub streamed_timeline: Option<TimelineId>,
    /// `pg_control_system().system_identifier`.
    pub system_identifier: SystemId,
    /// WAL positions.
    pub wal: WalPosition,
    /// Replicas: `streaming` when the WAL receiver streams, else `in archive recovery`.
    pub replication_state: Option<String>,
    /// `pg_stat_replication` rows.
    pub replication: Vec<ReplicationRow>,
    /// Some setting waits for a restart.
    pub pending_restart: bool,
    /// Per such setting: (running value, value in the config files).
    pub pending_restart_reason: BTreeMap<String, (String, String)>,
}

impl Probe {
    /// `Primary` or `Replica`, from `pg_is_in_recovery()`.
    pub fn role(&self) -> Role {
        if self.in_recovery {
            Role::Replica
        } else {
            Role::Primary
        }
    }

    /// The status the HA loop publishes for a running server.
    pub fn to_status(&self) -> PgStatus {
        PgStatus::from(self.clone())
    }
}

impl From<Probe> for PgStatus {
    fn from(probe: Probe) -> PgStatus {
        PgStatus {
            state: PgState::Running,
            role: probe.role(),
            server_version: Some(probe.server_version.0),
            postmaster_start_time: Some(probe.postmaster_start_time),
            timeline: probe.timeline,
            system_identifier: Some(probe.system_identifier),
            wal: probe.wal,
            replication_state: probe.replication_state,
            replication: probe.replication,
            pending_restart: probe.pending_restart,
            pending_restart_reason: probe.pending_restart_reason,
            failing: None,
        }
    }
}

/// The cached connection, checked out under its lock; [`Session::done`] puts it back unless it broke.
pub(super) struct Session<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<Client>>,
    pub(super) client: Client,
}

impl Session<'_> {
    pub(super) fn done<T>(self, res: Result<T, PgError>) -> Result<T, PgError> {
        let Session { mut slot, client } = self;
        if !client.is_closed() {
            *slot = Some(client);
        }
        res
    }
}

pub(super) fn sql(context: &str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    let context = context.to_owned();
    move |cause| PgError::Sql { context, cause }
}

/// Bounds `work` by `limit`: a timed-out session is dropped with its connection.
pub(super) async fn bounded<T>(
    what: &str,
    limit: Duration,
    work: impl Future<Output = Result<T, PgError>>,
) -> Result<T, PgError> {
    match tokio::time::timeout(limit, work).await {
        Ok(res) => res,
        Err(_) => Err(PgError::Timeout { what: what.to_owned(), log_tail: String::new() }),
    }
}

impl Supervisor {
    /// One status round trip: role, version, start time, timeline, system id, WAL positions, replication rows
    /// and pending restarts. Fails (never hangs) when PostgreSQL is down or does not answer in 5 seconds.
    ///
    /// A replica's timeline is the highest one its WAL receiver was seen streaming since this postmaster started.
    /// SQL offers no replay timeline: with the receiver down (the leader it streamed from is stopping for a
    /// switchover) only pg_control's timelines are left, and they lag behind until the next restartpoint, so a
    /// replica that had followed the new timeline looked as if it had replayed past the fork on the old one and
    /// stopped for a needless pg_rewind, in the middle of a switchover that named it. A replica's replay timeline
    /// never goes back while the postmaster runs, and one that streamed the leader's timeline is on its history.
    pub async fn probe(&self) -> Result<Probe, PgError> {
        let mut probe = bounded("the status probe", PROBE_TIMEOUT, async {
            let session = self.session().await?;
            let res = run_probe(&session.client).await;
            session.done(res)
        })
        .await?;
        let mut streamed = self.inner.streamed_timeline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *streamed = highest_streamed(streamed.take(), &probe);
        if let Some((_, timeline)) = streamed.as_ref() {
            probe.timeline = probe.timeline.max(Some(*timeline));
        }
        Ok(probe)
    }

    pub(super) async fn session(&self) -> Result<Session<'_>, PgError> {
        let mut slot = self.inner.sql.lock().await;
        let client = match slot.take() {
            Some(client) if !client.is_closed() => client,
            _ => self.connect().await?,
        };
        Ok(Session { slot, client })
    }

    async fn connect(&self) -> Result<Client, PgError> {
        self.connect_to("postgres").await
    }

    /// A new connection to `dbname` as the superuser (the cached session is for `postgres`).
    pub(super) async fn connect_to(&self, dbname: &str) -> Result<Client, PgError> {
        let cfg = &self.inner.cfg;
        let host = sql_host(cfg, self.socket_dir());
        let mut config = tokio_postgres::Config::new();
        config
            .host(&host)
            .port(cfg.port)
            .user(&cfg.superuser.username)
            .dbname(dbname)
            .application_name("raftgres")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = &cfg.superuser.password {
            config.password(password);
        }
        let context = format!("connect to PostgreSQL at {host}:{} (database {dbname})", cfg.port);
        let (client, connection) = config.connect(NoTls).await.map_err(sql(&context))?;
        let connection = async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "SQL connection closed");
            }
        };
        self.inner.tasks.spawn(connection.instrument(tracing::info_span!(parent: None, "pg_sql", port = cfg.port)));
        Ok(client)
    }
}

/// PURE: the highest timeline the WAL receiver of this postmaster (by start time) streamed, after `probe`; `None`
/// on a primary and until a receiver streamed.
fn highest_streamed(before: Option<(String, TimelineId)>, probe: &Probe) -> Option<(String, TimelineId)> {
    if !probe.in_recovery {
        return None;
    }
    let start = &probe.postmaster_start_time;
    let before = before.filter(|(started, _)| started == start).map(|(_, timeline)| timeline);
    let highest = before.max(probe.streamed_timeline)?;
    Some((start.clone(), highest))
}

/// Where the probe connects: loopback when PostgreSQL listens on it or on every address, else the first listen
/// address, else (no TCP) the unix socket directory.
pub(super) fn sql_host(cfg: &PgConfig, socket_dir: Option<std::path::PathBuf>) -> String {
    let addresses: Vec<&str> = cfg.listen_addresses.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    let loopback = ["*", "0.0.0.0", "localhost", "127.0.0.1"];
    if addresses.iter().any(|address| loopback.contains(address)) {
        return "127.0.0.1".to_owned();
    }
    if addresses.iter().any(|address| *address == "::" || *address == "::1") {
        return "::1".to_owned();
    }
    match addresses.first() {
        Some(first) => (*first).to_owned(),
        None => socket_dir.map_or_else(|| "/tmp".to_owned(), |dir| dir.to_string_lossy().into_owned()),
    }
}

async fn run_probe(client: &Client) -> Result<Probe, PgError> {
    let (status, replication, pending) = tokio::try_join!(
        client.query_one(STATUS_SQL, &[]),
        client.query(REPLICATION_SQL, &[]),
        client.query(PENDING_RESTART_SQL, &[]),
    )
    .map_err(sql("probe PostgreSQL"))?;
    let mut probe = parse_status_row(&status)?;
    probe.replication = replication.iter().map(parse_replication_row).collect::<Result<_, _>>()?;
    for row in &pending {
        let name: String = column(row, 0, "pg_settings")?;
        // As Patroni: the recovery settings raftgres writes itself (a promoted primary drops
        // `recovery_target_timeline`, a postmaster setting) are never a reason to restart.
        if crate::postgres::params::is_recovery_parameter(&name) {
            continue;
        }
        let running: Option<String> = column(row, 1, "pg_settings")?;
        let configured: String = column(row, 2, "pg_settings")?;
        probe.pending_restart_reason.insert(name, (running.unwrap_or_default(), configured));
    }
    probe.pending_restart = !probe.pending_restart_reason.is_empty();
    Ok(probe)
}

fn column<'a, T: FromSql<'a>>(row: &'a Row, idx: usize, what: &str) -> Result<T, PgError> {
    row.try_get(idx).map_err(sql(&format!("read {what} column {idx}")))
}

fn parse_status_row(row: &Row) -> Result<Probe, PgError> {
    let text = |idx: usize| column::<Option<String>>(row, idx, "status");
    let int = |idx: usize| column::<Option<i32>>(row, idx, "status");
    let in_recovery: bool = column(row, 0, "status")?;
    let server_version: PgVersion = column::<String>(row, 1, "status")?.parse().map_err(unexpected)?;
    let postmaster_start_time: String = column(row, 2, "status")?;
    let system_identifier: SystemId = column::<String>(row, 3, "status")?.parse().map_err(unexpected)?;
    let positive = |tli: Option<i32>| tli.and_then(|tli| u32::try_from(tli).ok()).filter(|tli| *tli > 0);
    let checkpoint_tli = positive(int(10)?);
    let (timeline, streamed_timeline, wal, replication_state) = if in_recovery {
        let streamed = positive(int(13)?).map(TimelineId);
        let timeline = positive(int(13)?).or(positive(int(11)?)).or(checkpoint_tli);
        let replayed = parse_lsn(text(7)?)?;
        let received = parse_lsn(text(14)?)?.or(parse_lsn(text(6)?)?).or(replayed);
        let wal = WalPosition::Replica {
            received,
            replayed,
            replayed_timestamp: text(8)?,
            paused: column(row, 9, "status")?,
            latest_end: parse_lsn(text(15)?)?,
        };
        let streaming = text(12)?.as_deref() == Some("streaming");
        let state = if streaming { "streaming" } else { "in archive recovery" };
        (timeline, streamed, wal, Some(state.to_owned()))
    } else {
        let location = parse_lsn(text(4)?)?.ok_or_else(|| unexpected("missing flush LSN on a primary"))?;
        (positive(int(5)?).or(checkpoint_tli), None, WalPosition::Primary { location }, None)
    };
    Ok(Probe {
        in_recovery,
        server_version,
        postmaster_start_time,
        timeline: timeline.map(TimelineId),
        streamed_timeline,
        system_identifier,
        wal,
        replication_state,
        replication: Vec::new(),
        pending_restart: false,
        pending_restart_reason: BTreeMap::new(),
    })
}

fn parse_replication_row(row: &Row) -> Result<ReplicationRow, PgError> {
    let text = |idx: usize| column::<Option<String>>(row, idx, "pg_stat_replication");
    Ok(ReplicationRow {
        usename: text(0)?.unwrap_or_default(),
        application_name: text(1)?.unwrap_or_default(),
        client_addr: text(2)?,
        state: text(3)?.unwrap_or_default(),
        sync_state: text(4)?.unwrap_or_default(),
        sync_priority: column::<Option<i32>>(row, 5, "pg_stat_replication")?.unwrap_or(0),
        flush_lsn: parse_lsn(text(6)?)?,
        replay_lsn: parse_lsn(text(7)?)?,
    })
}

fn parse_lsn(text: Option<String>) -> Result<Option<Lsn>, PgError> {
    text.map(|text| text.parse::<Lsn>()).transpose().map_err(unexpected)
}

fn unexpected(what: impl std::fmt::Display) -> PgError {
    PgError::Unexpected { what: what.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listen: &str) -> PgConfig {
        let creds = crate::postgres::supervisor::Credentials { username: "postgres".into(), password: None };
        PgConfig {
            name: "n1".into(),
            bin_dir: "/usr/lib/postgresql/15/bin".into(),
            data_dir: "/data".into(),
            run_as: None,
            listen_addresses: listen.into(),
            port: 5432,
            connect_host: "10.0.0.1".into(),
            superuser: creds.clone(),
            replication: creds,
            rewind: None,
            parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
            initdb_options: Vec::new(),
            basebackup_options: Vec::new(),
            replica_methods: vec![super::super::ReplicaMethod::Basebackup],
            custom_bootstrap: None,
            nostream: false,
            pgpass: "/pgpass".into(),
            scope: "s".into(),
            start_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(1),
            recovery_params: Default::default(),
            standby_leader_recovery: None,
            method_sections: Default::default(),
            hooks: Default::default(),
        }
    }

    #[test]
    fn probe_connects_to_loopback_when_possible() {
        assert_eq!(sql_host(&cfg("*"), None), "127.0.0.1");
        assert_eq!(sql_host(&cfg("10.0.0.1, localhost"), None), "127.0.0.1");
        assert_eq!(sql_host(&cfg("::"), None), "::1");
        assert_eq!(sql_host(&cfg("10.0.0.1,10.0.0.2"), None), "10.0.0.1");
        assert_eq!(sql_host(&cfg(""), Some("/run/pg".into())), "/run/pg");
    }
}

#[cfg(test)]
mod streamed_timeline_tests {
    use super::*;

    fn replica(started: &str, streamed: Option<u32>) -> Probe {
        Probe {
            in_recovery: true,
            server_version: PgVersion(150000),
            postmaster_start_time: started.into(),
            timeline: Some(TimelineId(2)),
            streamed_timeline: streamed.map(TimelineId),
            system_identifier: SystemId(1),
            wal: WalPosition::Replica {
                received: None,
                replayed: None,
                replayed_timestamp: None,
                paused: false,
                latest_end: None,
            },
            replication_state: Some("in archive recovery".into()),
            replication: Vec::new(),
            pending_restart: false,
            pending_restart_reason: BTreeMap::new(),
        }
    }

    #[test]
    fn a_replica_keeps_the_timeline_it_streamed_while_its_receiver_is_down() {
        let streaming = highest_streamed(None, &replica("t0", Some(3)));
        assert_eq!(streaming, Some(("t0".into(), TimelineId(3))));
        // The leader stops for a switchover: no receiver, pg_control still says 2; 3 is kept.
        assert_eq!(highest_streamed(streaming.clone(), &replica("t0", None)), streaming);
        // A lower timeline never replaces a higher one.
        assert_eq!(highest_streamed(streaming.clone(), &replica("t0", Some(2))), streaming);
    }

    #[test]
    fn a_new_postmaster_or_a_primary_forgets_the_streamed_timeline() {
        let streaming = highest_streamed(None, &replica("t0", Some(3)));
        assert_eq!(highest_streamed(streaming.clone(), &replica("t1", None)), None);
        assert_eq!(highest_streamed(streaming.clone(), &replica("t1", Some(2))), Some(("t1".into(), TimelineId(2))));
        let primary = Probe { in_recovery: false, ..replica("t0", None) };
        assert_eq!(highest_streamed(streaming, &primary), None);
        assert_eq!(highest_streamed(None, &replica("t0", None)), None);
    }
}
