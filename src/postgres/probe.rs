//! SQL against the local PostgreSQL: the status probe, users, physical slots, promotion and checkpoints.
//!
//! This module owns the one cached superuser connection (TCP to the first listen address, reconnected
//! after any failure) and every statement raftgres runs locally. A probe is one round trip of pipelined
//! queries and is bounded by a timeout, so a hung server reads as a failed probe, never as a stuck HA loop.
//! It must not spawn processes, send signals or write files.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, NoTls, Row};
use tracing::Instrument;

use crate::postgres::files;
use crate::postgres::files::RecoveryConf;
use crate::postgres::slots;
use crate::postgres::supervisor::{ConnTarget, PgConfig, PgError, Supervisor};
use crate::postgres::types::{Lsn, PgVersion, SystemId, TimelineId};
use crate::status::{PgState, PgStatus, ReplicationRow, Role, WalPosition};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a whole probe (connect plus queries) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long other short statements (users, slots) may take.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

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
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_xact_replay_timestamp()::text END,
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
    /// Primary: the timeline of the current WAL file; replica: the received timeline, else pg_control's.
    pub timeline: Option<TimelineId>,
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
        }
    }
}

/// The cached connection, checked out under its lock; [`Session::done`] puts it back unless it broke.
pub(crate) struct Session<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<Client>>,
    client: Client,
}

impl Session<'_> {
    fn done<T>(self, res: Result<T, PgError>) -> Result<T, PgError> {
        let Session { mut slot, client } = self;
        if !client.is_closed() {
            *slot = Some(client);
        }
        res
    }
}

fn sql(context: &str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    let context = context.to_owned();
    move |source| PgError::Sql { context, source }
}

/// Bounds `work` by `limit`: a timed-out session is dropped with its connection.
async fn bounded<T>(what: &str, limit: Duration, work: impl Future<Output = Result<T, PgError>>) -> Result<T, PgError> {
    match tokio::time::timeout(limit, work).await {
        Ok(res) => res,
        Err(_) => Err(PgError::Timeout { what: what.to_owned(), log_tail: String::new() }),
    }
}

impl Supervisor {
    /// One status round trip: role, version, start time, timeline, system id, WAL positions, replication rows
    /// and pending restarts. Fails (never hangs) when PostgreSQL is down or does not answer in 5 seconds.
    pub async fn probe(&self) -> Result<Probe, PgError> {
        bounded("the status probe", PROBE_TIMEOUT, async {
            let session = self.session().await?;
            let res = run_probe(&session.client).await;
            session.done(res)
        })
        .await
    }

    /// On the bootstrap primary: creates or updates the replication user (REPLICATION LOGIN), the superuser's
    /// password, and the rewind user with the function grants pg_rewind needs.
    pub async fn create_users(&self) -> Result<(), PgError> {
        let cfg = &self.inner.cfg;
        bounded("creating users", STATEMENT_TIMEOUT, async {
            let session = self.session().await?;
            let res = async {
                let client = &session.client;
                upsert_role(client, &cfg.superuser.username, "SUPERUSER LOGIN", cfg.superuser.password.as_deref())
                    .await?;
                if cfg.replication.username != cfg.superuser.username {
                    let password = cfg.replication.password.as_deref();
                    upsert_role(client, &cfg.replication.username, "REPLICATION LOGIN", password).await?;
                }
                if let Some(rewind) = cfg.rewind.as_ref().filter(|rewind| rewind.username != cfg.superuser.username) {
                    upsert_role(client, &rewind.username, "LOGIN", rewind.password.as_deref()).await?;
                    grant_rewind_functions(client, &rewind.username).await?;
                }
                Ok(())
            }
            .await;
            session.done(res)
        })
        .await?;
        tracing::info!("created or updated the superuser, replication and rewind users");
        Ok(())
    }

    /// Creates the missing physical slots of `desired` (reserving WAL at once) and drops other physical slots
    /// that are not active.
    pub async fn ensure_slots(&self, desired: &BTreeSet<String>) -> Result<(), PgError> {
        bounded("replication slot changes", STATEMENT_TIMEOUT, async {
            let session = self.session().await?;
            let res = sync_slots(&session.client, desired).await;
            session.done(res)
        })
        .await
    }

    /// Runs `CHECKPOINT`. After a promotion, pg_rewind on the old primary reads the new timeline from the new
    /// primary's pg_control, which changes only at its first checkpoint: run this on the new primary first.
    pub async fn checkpoint(&self) -> Result<(), PgError> {
        let session = self.session().await?;
        let res = session.client.batch_execute("CHECKPOINT").await.map_err(sql("run CHECKPOINT"));
        session.done(res)
    }

    /// Sets `synchronous_standby_names` (`None` resets it) with `ALTER SYSTEM` and reloads; the
    /// HA loop's synchronous replication manager calls it in Patroni's order relative to `/sync`.
    pub async fn set_synchronous_standby_names(&self, value: Option<&str>) -> Result<(), PgError> {
        let session = self.session().await?;
        let statement = match value {
            Some(value) => format!("ALTER SYSTEM SET synchronous_standby_names = '{}'", value.replace('\'', "''")),
            None => "ALTER SYSTEM RESET synchronous_standby_names".to_string(),
        };
        let res = async {
            session.client.batch_execute(&statement).await.map_err(sql("set synchronous_standby_names"))?;
            session
                .client
                .batch_execute("SELECT pg_catalog.pg_reload_conf()")
                .await
                .map_err(sql("reload the configuration"))
        }
        .await;
        session.done(res)
    }

    /// The current `synchronous_standby_names`.
    pub async fn synchronous_standby_names(&self) -> Result<String, PgError> {
        let session = self.session().await?;
        let res = async {
            let row = session
                .client
                .query_one("SELECT pg_catalog.current_setting('synchronous_standby_names')", &[])
                .await
                .map_err(sql("read synchronous_standby_names"))?;
            Ok(row.get::<_, String>(0))
        }
        .await;
        session.done(res)
    }

    /// `pg_promote(true, timeout)` on a replica; `Ok(true)` once it is a primary (also when it already was).
    pub(crate) async fn sql_promote(&self, timeout: Duration) -> Result<bool, PgError> {
        bounded("promotion", timeout + Duration::from_secs(10), async {
            let session = self.session().await?;
            let res = async {
                let client = &session.client;
                let row = client.query_one("SELECT pg_catalog.pg_is_in_recovery()", &[]).await;
                if !row.map_err(sql("check recovery state"))?.get::<_, bool>(0) {
                    return Ok(true);
                }
                let wait_seconds = i32::try_from(timeout.as_secs().max(1)).unwrap_or(i32::MAX);
                let row = client.query_one("SELECT pg_catalog.pg_promote(true, $1)", &[&wait_seconds]).await;
                Ok(row.map_err(sql("run pg_promote"))?.get::<_, bool>(0))
            }
            .await;
            session.done(res)
        })
        .await
    }

    /// Whether the running server is a replica streaming settings-wise from `primary` through `slot`: its
    /// `primary_conninfo` is the one a start as that leader's replica writes. Lets a restarted raftgres keep an
    /// adopted replica running instead of restarting it to follow the leader it already follows.
    pub async fn follows(&self, primary: &ConnTarget, slot: &str) -> Result<bool, PgError> {
        let expected = files::replica_conninfo(&self.inner.cfg, &primary.host, primary.port)?;
        Ok(match self.recovery_conf_from_server().await? {
            files::RecoveryConf::Replica { primary_conninfo, slot: Some(current) } => {
                primary_conninfo == expected && current == slot
            }
            _ => false,
        })
    }

    /// The recovery settings of a running server whose configuration raftgres did not write in this process
    /// (an adopted postmaster), so a reload keeps them.
    pub(crate) async fn recovery_conf_from_server(&self) -> Result<RecoveryConf, PgError> {
        let session = self.session().await?;
        let res = async {
            let row = session
                .client
                .query_one(
                    "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('primary_conninfo'), \
                     pg_catalog.current_setting('primary_slot_name')",
                    &[],
                )
                .await
                .map_err(sql("read recovery settings"))?;
            if !row.get::<_, bool>(0) {
                return Ok(RecoveryConf::Primary);
            }
            let slot: String = row.get(2);
            Ok(RecoveryConf::Replica { primary_conninfo: row.get(1), slot: (!slot.is_empty()).then_some(slot) })
        }
        .await;
        session.done(res)
    }

    async fn session(&self) -> Result<Session<'_>, PgError> {
        let mut slot = self.inner.sql.lock().await;
        let client = match slot.take() {
            Some(client) if !client.is_closed() => client,
            _ => self.connect().await?,
        };
        Ok(Session { slot, client })
    }

    async fn connect(&self) -> Result<Client, PgError> {
        let cfg = &self.inner.cfg;
        let host = sql_host(cfg, self.socket_dir());
        let mut config = tokio_postgres::Config::new();
        config
            .host(&host)
            .port(cfg.port)
            .user(&cfg.superuser.username)
            .dbname("postgres")
            .application_name("raftgres")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = &cfg.superuser.password {
            config.password(password);
        }
        let context = format!("connect to PostgreSQL at {host}:{}", cfg.port);
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

/// Where the probe connects: loopback when PostgreSQL listens on it or on every address, else the first listen
/// address, else (no TCP) the unix socket directory.
pub(crate) fn sql_host(cfg: &PgConfig, socket_dir: Option<std::path::PathBuf>) -> String {
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
        let running: Option<String> = column(row, 1, "pg_settings")?;
        let configured: String = column(row, 2, "pg_settings")?;
        probe.pending_restart_reason.insert(column(row, 0, "pg_settings")?, (running.unwrap_or_default(), configured));
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
    let (timeline, wal, replication_state) = if in_recovery {
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
        (timeline, wal, Some(state.to_owned()))
    } else {
        let location = parse_lsn(text(4)?)?.ok_or_else(|| unexpected("missing flush LSN on a primary"))?;
        (positive(int(5)?).or(checkpoint_tli), WalPosition::Primary { location }, None)
    };
    Ok(Probe {
        in_recovery,
        server_version,
        postmaster_start_time,
        timeline: timeline.map(TimelineId),
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

/// `CREATE ROLE` or `ALTER ROLE` with `attributes`, quoting done by the server's `format()` (`%I`, `%L`).
async fn upsert_role(client: &Client, name: &str, attributes: &str, password: Option<&str>) -> Result<(), PgError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&name])
        .await
        .map_err(sql(&format!("look up role {name}")))?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let template = match password {
        Some(_) => "SELECT pg_catalog.format('%s ROLE %I WITH %s PASSWORD %L', $1::text, $2::text, $3::text, $4::text)",
        None => "SELECT pg_catalog.format('%s ROLE %I WITH %s', $1::text, $2::text, $3::text, $4::text)",
    };
    let row = client.query_one(template, &[&verb, &name, &attributes, &password]).await;
    let statement: String = row.map_err(sql(&format!("quote role {name}")))?.get(0);
    client.batch_execute(&statement).await.map_err(sql(&format!("{} role {name}", verb.to_lowercase())))
}

/// The functions pg_rewind calls on the source as a non-superuser.
async fn grant_rewind_functions(client: &Client, name: &str) -> Result<(), PgError> {
    const FUNCTIONS: [&str; 4] = [
        "pg_catalog.pg_ls_dir(text, boolean, boolean)",
        "pg_catalog.pg_stat_file(text, boolean)",
        "pg_catalog.pg_read_binary_file(text)",
        "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
    ];
    for function in FUNCTIONS {
        let template = format!("SELECT pg_catalog.format('GRANT EXECUTE ON FUNCTION {function} TO %I', $1::text)");
        let row = client.query_one(&template, &[&name]).await;
        let statement: String = row.map_err(sql(&format!("quote role {name}")))?.get(0);
        client.batch_execute(&statement).await.map_err(sql(&format!("grant {function} to {name}")))?;
    }
    Ok(())
}

async fn sync_slots(client: &Client, desired: &BTreeSet<String>) -> Result<(), PgError> {
    let rows = client
        .query("SELECT slot_name::text, active FROM pg_catalog.pg_replication_slots WHERE slot_type = 'physical'", &[])
        .await
        .map_err(sql("list replication slots"))?;
    let mut existing = BTreeSet::new();
    let mut active = BTreeSet::new();
    for row in &rows {
        let name: String = row.try_get(0).map_err(sql("list replication slots"))?;
        if row.try_get::<_, bool>(1).map_err(sql("list replication slots"))? {
            active.insert(name.clone());
        }
        existing.insert(name);
    }
    let diff = slots::diff_slots(desired, &existing);
    for slot in &diff.to_create {
        let res = client.query("SELECT pg_catalog.pg_create_physical_replication_slot($1, true)", &[slot]).await;
        match res {
            Ok(_) => tracing::info!(slot = %slot, "created physical replication slot"),
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
            Err(e) => return Err(sql(&format!("create replication slot {slot}"))(e)),
        }
    }
    for slot in diff.to_drop.iter().filter(|slot| !active.contains(*slot)) {
        match client.query("SELECT pg_catalog.pg_drop_replication_slot($1)", &[slot]).await {
            Ok(_) => tracing::info!(slot = %slot, "dropped physical replication slot"),
            // Gone already, or a walsender attached since the listing: try again next cycle.
            Err(e) if [SqlState::UNDEFINED_OBJECT, SqlState::OBJECT_IN_USE].iter().any(|c| e.code() == Some(c)) => {}
            Err(e) => return Err(sql(&format!("drop replication slot {slot}"))(e)),
        }
    }
    Ok(())
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
            pgpass: "/pgpass".into(),
            scope: "s".into(),
            start_timeout: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(1),
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
