//! Replication slots on this server: listing them with their positions, creating and dropping them as
//! `postgres::slots::plan_slots` says, moving them forward as `postgres::slot_positions::plan_advance` says, and
//! copying a permanent logical slot from the leader to this replica (Patroni's logical slot failover for
//! PostgreSQL 11 to 16: the slot's `pg_replslot/<name>/state` file read with `pg_read_binary_file` on the leader,
//! installed here while PostgreSQL is stopped, then advanced with `pg_replication_slot_advance`).
//!
//! This module owns the slot SQL and the slot files. It must not decide which slots are wanted or where they
//! should be (the pure planners and the HA loop do).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_postgres::NoTls;
use tracing::Instrument;

use super::probe::{bounded, sql, STATEMENT_TIMEOUT};
use super::{ConnTarget, PgError, StartRole, StopMode, Supervisor};
use crate::postgres::files;
use crate::postgres::slot_positions::{self, AdvancePlan, SlotTarget};
use crate::postgres::slots::{self, DropReason, ExistingSlot, PermanentSlot, SlotKind, SlotRole};

/// One cycle's slot work.
#[derive(Debug, Clone, Copy)]
pub struct SlotWork<'a> {
    /// The slots to keep, create and drop (see `slots::plan_slots`).
    pub wanted: slots::LeaderSlots<'a>,
    /// The leader creates missing logical slots; a replica reports them for copying instead.
    pub role: SlotRole,
    /// Where each kept slot should be (see `slot_positions::slot_targets`).
    pub targets: &'a BTreeMap<String, SlotTarget>,
    /// Drop idle physical slots that hold an `xmin` (Patroni does when a leader exists).
    pub clean_xmin: bool,
    /// On a replica: the leader's PostgreSQL and this node's slot name there, for the readiness check of
    /// copied logical slots.
    pub leader: Option<(&'a ConnTarget, &'a str)>,
}

/// What a cycle's slot work found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotReport {
    /// The kept slots' positions, and this node's own slot at its WAL position (what a leader publishes).
    pub positions: BTreeMap<String, u64>,
    /// Permanent logical slots a replica lacks (or whose advance found the WAL gone): to be copied from the leader.
    pub missing_logical: Vec<PermanentSlot>,
}

/// `SqlState` codes of `pg_replication_slot_advance` after which the slot must be copied anew: the WAL it
/// needs is gone (`58P01`) or the slot was invalidated (`55000`), as Patroni treats them.
fn needs_copy(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|code| *code == SqlState::UNDEFINED_FILE || *code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE)
}

impl Supervisor {
    /// One cycle of slot maintenance: lists the slots with their positions, creates the member and permanent
    /// slots that are missing (a logical one in its database, on the leader only), drops unknown slots and
    /// permanent ones configured anew (each logged with the reason), moves idle slots forward to their targets
    /// (logical ones in a background task, as `pg_replication_slot_advance` decodes WAL and may take long).
    /// A logical slot that cannot be created (`wal_level` below `logical`, a missing database or plugin) is
    /// logged and tried again next cycle; the others still go ahead.
    pub async fn maintain_slots(&self, work: &SlotWork<'_>) -> Result<SlotReport, PgError> {
        let (plan, listed, optime, replay) = bounded("replication slot changes", STATEMENT_TIMEOUT, async {
            let session = self.session().await?;
            let res = apply_slot_plan(&session.client, work).await;
            session.done(res)
        })
        .await?;
        let mut report = SlotReport::default();
        if work.role == SlotRole::Leader {
            // A standby leader publishes its replay position for its own slot, as a primary its WAL position.
            let at = optime.or(replay).unwrap_or(0);
            report.positions = slot_positions::published_positions(&listed, work.targets, work.wanted.own, at);
            self.spawn_logical_creation(plan.create_logical.clone());
        } else {
            report.missing_logical = plan.create_logical.clone();
            self.check_readiness(work, &listed);
            let recopy = std::mem::take(&mut *self.slot_sync().recopy.lock().unwrap_or_else(|p| p.into_inner()));
            for name in recopy {
                let slot = work.wanted.permanent.iter().find(|slot| slot.name == name);
                if let Some(slot) = slot.filter(|slot| !report.missing_logical.contains(slot)) {
                    report.missing_logical.push(slot.clone());
                }
            }
            // The pause grows with every copy until the replica has gone a whole longest pause without needing
            // one: a copy that does not cure the cause (its advance failing again) never restarts it in a loop.
            let mut backoff = self.slot_sync().copy_backoff.lock().unwrap_or_else(|p| p.into_inner());
            let quiet = backoff.1.is_none_or(|not_before| std::time::Instant::now() >= not_before + MAX_COPY_PAUSE);
            if report.missing_logical.is_empty() && quiet {
                *backoff = (0, None);
            }
        }
        let clean_xmin = work.clean_xmin && !work.wanted.paused;
        let mut advance = slot_positions::plan_advance(&listed, work.targets, work.role, replay, clean_xmin);
        if work.wanted.paused {
            // Maintenance mode: nothing is dropped (a slot that cannot be advanced stays as it is).
            advance.drop.clear();
        }
        self.advance_slots(advance).await;
        Ok(report)
    }

    /// Patroni's readiness check of the logical slots copied to this replica (see `slot_positions::ready_slots`):
    /// at the first cycle every permanent logical slot found here is pending, as is every slot copied since; while
    /// any is pending, the leader is asked for the `catalog_xmin` of this replica's physical slot and of the
    /// pending slots. Each slot found ready is logged; a promotion warns about those still pending.
    fn check_readiness(&self, work: &SlotWork<'_>, listed: &[ExistingSlot]) {
        let sync = self.slot_sync();
        if !sync.readiness_loaded.swap(true, Ordering::AcqRel) {
            let mut pending = sync.pending_ready.lock().unwrap_or_else(|p| p.into_inner());
            let permanent_logical = |slot: &&ExistingSlot| {
                matches!(slot.kind, SlotKind::Logical { .. })
                    && work.wanted.permanent.iter().any(|p| p.name == slot.name)
            };
            pending.extend(listed.iter().filter(permanent_logical).map(|slot| (slot.name.clone(), None)));
        }
        let Some((leader, my_slot)) = work.leader else { return };
        if sync.pending_ready.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            return;
        }
        // In the background, one at a time: a leader that does not answer must not hold up this node's HA cycle.
        if sync.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let (this, leader, my_slot, listed) = (self.clone(), leader.clone(), my_slot.to_owned(), listed.to_vec());
        let task = async move {
            if let Err(e) = this.readiness_round(&leader, &my_slot, &listed).await {
                tracing::warn!(error = %e, "failed to check the readiness of the copied logical slots on the leader");
            }
            this.slot_sync().checking.store(false, Ordering::Release);
        };
        self.inner.tasks.spawn(task.instrument(tracing::Span::current()));
    }

    async fn readiness_round(
        &self,
        leader: &ConnTarget,
        my_slot: &str,
        listed: &[ExistingSlot],
    ) -> Result<(), PgError> {
        let sync = self.slot_sync();
        let mut asked: Vec<String> = {
            let pending = sync.pending_ready.lock().unwrap_or_else(|p| p.into_inner());
            pending.iter().filter(|(_, xmin)| xmin.is_none()).map(|(name, _)| name.clone()).collect()
        };
        asked.push(my_slot.to_owned());
        let rows = bounded("the readiness check of logical slots", std::time::Duration::from_secs(5), async {
            let client = self.connect_remote(leader).await?;
            client
                .query(
                    "SELECT slot_name::text, catalog_xmin::text::bigint FROM pg_catalog.pg_get_replication_slots() \
                     WHERE NOT pg_catalog.pg_is_in_recovery() AND slot_name = ANY($1)",
                    &[&asked],
                )
                .await
                .map_err(sql("read the catalog_xmin of the slots on the leader"))
        })
        .await?;
        let mut xmins: BTreeMap<String, Option<u32>> = BTreeMap::new();
        for row in &rows {
            let name: Option<String> = row.try_get(0).map_err(sql("read a slot on the leader"))?;
            let xmin: Option<i64> = row.try_get(1).map_err(sql("read a slot on the leader"))?;
            if let Some(name) = name {
                xmins.insert(name, xmin.and_then(|x| u32::try_from(x).ok()));
            }
        }
        let Some(physical) = xmins.remove(my_slot) else {
            tracing::debug!(slot = my_slot, "the physical slot of this replica does not exist on the leader yet");
            return Ok(());
        };
        if physical.is_none() {
            tracing::debug!("no catalog_xmin from hot standby feedback on the leader yet; copied slots stay pending");
        }
        let leader_logical: BTreeMap<String, u32> =
            xmins.into_iter().filter_map(|(name, xmin)| Some((name, xmin?))).collect();
        let ready = {
            let mut pending = sync.pending_ready.lock().unwrap_or_else(|p| p.into_inner());
            slot_positions::ready_slots(&mut pending, physical, &leader_logical, listed)
        };
        for name in ready {
            tracing::info!(slot = %name, "logical slot is safe to be used after a failover");
        }
        Ok(())
    }

    /// The logical slots copied to this replica that were not found ready (see `check_readiness`); forgets them.
    /// A promotion logs them: their consumers may find catalog rows missing.
    pub fn take_unready_logical_slots(&self) -> Vec<String> {
        let mut pending = self.slot_sync().pending_ready.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pending).into_keys().collect()
    }

    /// Creates the missing permanent logical slots in a background task, one task at a time:
    /// `pg_create_logical_replication_slot` waits for the transactions running on the primary to end, and the
    /// leader's cycle (which renews its lease) must never wait for an application's long transaction.
    fn spawn_logical_creation(&self, create: Vec<PermanentSlot>) {
        if create.is_empty() || self.slot_sync().creating.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let task = async move {
            this.create_logical_slots(&create).await;
            this.slot_sync().creating.store(false, Ordering::Release);
        };
        self.inner.tasks.spawn(task.instrument(tracing::Span::current()));
    }

    async fn create_logical_slots(&self, create: &[PermanentSlot]) {
        for slot in create {
            let SlotKind::Logical { database, plugin } = &slot.kind else { continue };
            let created = bounded("logical slot creation", STATEMENT_TIMEOUT, async {
                let client = self.connect_to(database).await?;
                client
                    .query(
                        "SELECT pg_catalog.pg_create_logical_replication_slot($1, $2) WHERE NOT EXISTS \
                         (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
                        &[&slot.name, plugin],
                    )
                    .await
                    .map_err(sql(&format!("create logical replication slot {} in database {database}", slot.name)))
            })
            .await;
            match created {
                Ok(_) => {
                    tracing::info!(slot = %slot.name, database, plugin, "created permanent logical replication slot")
                }
                Err(e) => tracing::error!(
                    slot = %slot.name,
                    plugin,
                    "failed to create the permanent logical replication slot (wal_level must be logical): {e:#}"
                ),
            }
        }
    }

    /// Drops the slots `plan` says to drop, advances physical slots inline and logical ones in one background
    /// task at a time (a cycle that finds it still running leaves the logical slots for the next cycle).
    async fn advance_slots(&self, plan: AdvancePlan) {
        let AdvancePlan { advance, drop } = plan;
        let res = bounded("replication slot advance", STATEMENT_TIMEOUT, async {
            let session = self.session().await?;
            let client = &session.client;
            for (name, why) in &drop {
                match client.query("SELECT pg_catalog.pg_drop_replication_slot($1)", &[name]).await {
                    Ok(_) => tracing::warn!(slot = %name, "dropped physical replication slot: {why}; it is created anew"),
                    Err(e) => tracing::warn!(slot = %name, "failed to drop replication slot: {}", super::error_chain(&e)),
                }
            }
            for step in advance.iter().filter(|step| step.database.is_none()) {
                let lsn = crate::postgres::types::Lsn(step.lsn).to_string();
                let res = client
                    .query("SELECT pg_catalog.pg_replication_slot_advance($1, $2::text::pg_lsn)", &[&step.name, &lsn])
                    .await;
                if let Err(e) = res {
                    tracing::warn!(slot = %step.name, lsn, "failed to advance replication slot: {}", super::error_chain(&e));
                }
            }
            session.done(Ok(()))
        })
        .await;
        if let Err(e) = res {
            tracing::warn!(error = %e, "failed to advance the physical replication slots");
        }
        let logical: Vec<_> = advance.into_iter().filter(|step| step.database.is_some()).collect();
        if logical.is_empty() || self.slot_sync().advancing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        let task = async move {
            let mut by_database: BTreeMap<String, Vec<slot_positions::Advance>> = BTreeMap::new();
            for step in logical {
                by_database.entry(step.database.clone().unwrap_or_default()).or_default().push(step);
            }
            for (database, steps) in by_database {
                if let Err(e) = this.advance_logical(&database, &steps).await {
                    tracing::warn!(database, "failed to advance logical replication slots: {}", super::error_chain(&e));
                }
            }
            this.slot_sync().advancing.store(false, Ordering::Release);
        };
        self.inner.tasks.spawn(task.instrument(tracing::Span::current()));
    }

    async fn advance_logical(&self, database: &str, steps: &[slot_positions::Advance]) -> Result<(), PgError> {
        let client = self.connect_to(database).await?;
        for step in steps {
            let lsn = crate::postgres::types::Lsn(step.lsn).to_string();
            let res = client
                .query("SELECT pg_catalog.pg_replication_slot_advance($1, $2::text::pg_lsn)", &[&step.name, &lsn])
                .await;
            match res {
                Ok(_) => tracing::debug!(slot = %step.name, lsn, "advanced logical replication slot"),
                Err(e) if needs_copy(&e) => {
                    tracing::error!(
                        slot = %step.name,
                        "cannot advance the logical replication slot ({}); copying it from the leader again",
                        super::error_chain(&e)
                    );
                    self.slot_sync().recopy.lock().unwrap_or_else(|p| p.into_inner()).insert(step.name.clone());
                }
                Err(e) => {
                    tracing::error!(slot = %step.name, lsn, "failed to advance logical replication slot: {}", super::error_chain(&e))
                }
            }
        }
        Ok(())
    }

    /// Copies the permanent logical slots `wanted` from the leader at `source` to this replica, as Patroni does
    /// on PostgreSQL 11 to 16: reads each slot's state file on the leader (as the rewind user, or the superuser,
    /// who may run `pg_read_binary_file`), keeps only slots whose database and plugin match their definition,
    /// stops PostgreSQL, installs the files durably under `pg_replslot/`, and starts it again as `role` (the
    /// server loads slots only at start). Returns the names of the slots copied; the caller advances them from
    /// the next cycle on. `hot_standby_feedback` must be on (the HA loop enforces it) so that the leader keeps the
    /// catalog rows the copied slots need.
    pub async fn copy_logical_slots(
        &self,
        source: &ConnTarget,
        wanted: &[PermanentSlot],
        role: StartRole,
    ) -> Result<Vec<String>, PgError> {
        self.note_copy_attempt();
        let names: Vec<String> = wanted.iter().map(|slot| slot.name.clone()).collect();
        let rows = bounded("reading the logical slots on the leader", STATEMENT_TIMEOUT, async {
            let client = self.connect_remote(source).await?;
            client
                .query(
                    "SELECT slot_name::text, d.datname::text, plugin::text, \
                     pg_catalog.pg_read_binary_file('pg_replslot/' || slot_name || '/state') \
                     FROM pg_catalog.pg_get_replication_slots() s JOIN pg_catalog.pg_database d ON s.datoid = d.oid \
                     WHERE NOT pg_catalog.pg_is_in_recovery() AND slot_type = 'logical' AND slot_name = ANY($1)",
                    &[&names],
                )
                .await
                .map_err(sql(&format!(
                    "read the logical slots {names:?} on the leader {}:{}",
                    source.host, source.port
                )))
        })
        .await?;
        let mut copies: Vec<(String, Vec<u8>)> = Vec::new();
        for row in &rows {
            let get =
                |i: usize| row.try_get::<_, Option<String>>(i).map_err(sql("read the logical slots on the leader"));
            let (name, database, plugin) = (get(0)?.unwrap_or_default(), get(1)?, get(2)?);
            let data: Vec<u8> = row.try_get(3).map_err(sql("read a slot state file on the leader"))?;
            let on_leader =
                SlotKind::Logical { database: database.unwrap_or_default(), plugin: plugin.unwrap_or_default() };
            match wanted.iter().find(|slot| slot.name == name) {
                Some(slot) if slot.kind == on_leader => copies.push((name, data)),
                Some(slot) => tracing::warn!(
                    slot = %name,
                    "not copying the logical slot: it is {on_leader} on the leader and the dynamic slots want it {}",
                    slot.kind
                ),
                None => {}
            }
        }
        if copies.is_empty() {
            return Ok(Vec::new());
        }
        let copied: Vec<String> = copies.iter().map(|(name, _)| name.clone()).collect();
        tracing::info!(slots = ?copied, "copying logical replication slots from the leader; restarting PostgreSQL");
        self.shielded("copy logical slots", move |this| async move {
            this.stop_locked(StopMode::Fast).await?;
            let replslot = this.inner.cfg.data_dir.join("pg_replslot");
            let owner = this.inner.owner.clone();
            files::blocking("install the copied slot files", move || {
                for (name, data) in &copies {
                    files::install_slot_state(&replslot, name, data, owner.as_ref())?;
                }
                Ok(())
            })
            .await?;
            this.start_locked(&role, None).await?;
            this.started(&role, true);
            Ok(())
        })
        .await?;
        self.slot_sync().recopy.lock().unwrap_or_else(|p| p.into_inner()).retain(|name| !copied.contains(name));
        let mut pending = self.slot_sync().pending_ready.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend(copied.iter().map(|name| (name.clone(), None)));
        Ok(copied)
    }

    /// Whether a copy of logical slots may start now: the first at once, each further one (the slots are still
    /// missing after the last copy) after a pause that doubles from 10 s up to 5 minutes.
    pub fn slot_copy_due(&self) -> bool {
        let backoff = self.slot_sync().copy_backoff.lock().unwrap_or_else(|p| p.into_inner());
        backoff.1.is_none_or(|not_before| std::time::Instant::now() >= not_before)
    }

    fn note_copy_attempt(&self) {
        let mut backoff = self.slot_sync().copy_backoff.lock().unwrap_or_else(|p| p.into_inner());
        let pause = FIRST_COPY_PAUSE.saturating_mul(1 << backoff.0.min(10)).min(MAX_COPY_PAUSE);
        backoff.0 = backoff.0.saturating_add(1);
        backoff.1 = Some(std::time::Instant::now() + pause);
    }

    /// A connection to the leader's PostgreSQL as the rewind user (or the superuser), database `postgres`.
    async fn connect_remote(&self, target: &ConnTarget) -> Result<Client, PgError> {
        let cfg = &self.inner.cfg;
        let creds = cfg.rewind.as_ref().unwrap_or(&cfg.superuser);
        let mut config = tokio_postgres::Config::new();
        config
            .host(&target.host)
            .port(target.port)
            .user(&creds.username)
            .dbname("postgres")
            .application_name("raftgres")
            .options("-c statement_timeout=5000")
            .connect_timeout(std::time::Duration::from_secs(5));
        if let Some(password) = &creds.password {
            config.password(password);
        }
        let context = format!("connect to PostgreSQL at {}:{} as {}", target.host, target.port, creds.username);
        let (client, connection) = config.connect(NoTls).await.map_err(sql(&context))?;
        let connection = async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "SQL connection to the leader closed");
            }
        };
        self.inner.tasks.spawn(connection.instrument(tracing::info_span!(parent: None, "pg_sql_leader")));
        Ok(client)
    }
}

/// Which logical slots need a copy and whether an advance runs (see [`Supervisor::maintain_slots`]).
#[derive(Default)]
pub(super) struct SlotSync {
    /// A background task is advancing logical slots.
    pub(super) advancing: std::sync::atomic::AtomicBool,
    /// Logical slots whose advance found their WAL gone or the slot invalidated: copied anew.
    pub(super) recopy: std::sync::Mutex<BTreeSet<String>>,
    /// Copied logical slots not yet found safe to use after a failover, with the leader's `catalog_xmin` of the
    /// slot once hot standby feedback reached the leader (see `slot_positions::ready_slots`).
    pub(super) pending_ready: std::sync::Mutex<BTreeMap<String, Option<u32>>>,
    /// The logical slots found at the first replica cycle were queued for the readiness check.
    pub(super) readiness_loaded: std::sync::atomic::AtomicBool,
    /// A background readiness check runs.
    pub(super) checking: std::sync::atomic::AtomicBool,
    /// A background creation of logical slots runs.
    pub(super) creating: std::sync::atomic::AtomicBool,
    /// Copies attempted since the replica last had all its logical slots, and when the next may start.
    pub(super) copy_backoff: std::sync::Mutex<(u32, Option<std::time::Instant>)>,
}

/// The pause after the first copy of logical slots that did not leave the replica with all of them; it doubles
/// with every further attempt, up to [`MAX_COPY_PAUSE`].
const FIRST_COPY_PAUSE: std::time::Duration = std::time::Duration::from_secs(10);
/// The longest pause between two copies.
const MAX_COPY_PAUSE: std::time::Duration = std::time::Duration::from_secs(300);

/// The listing behind one cycle: the slots with their kinds and positions, the WAL position of a primary and the
/// replay position of a replica.
const LIST_SLOTS_SQL: &str = "\
SELECT slot_name::text, slot_type::text, database::text, plugin::text, active,
       pg_catalog.pg_wal_lsn_diff(restart_lsn, '0/0')::bigint,
       pg_catalog.pg_wal_lsn_diff(confirmed_flush_lsn, '0/0')::bigint,
       xmin IS NOT NULL,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL
            ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::bigint END,
       CASE WHEN pg_catalog.pg_is_in_recovery()
            THEN pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_replay_lsn(), '0/0')::bigint END,
       catalog_xmin::text::bigint
FROM pg_catalog.pg_replication_slots
UNION ALL
SELECT NULL, NULL, NULL, NULL, false, NULL, NULL, false,
       CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL
            ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), '0/0')::bigint END,
       CASE WHEN pg_catalog.pg_is_in_recovery()
            THEN pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_last_wal_replay_lsn(), '0/0')::bigint END,
       NULL";

type Listing = (slots::SlotPlan, Vec<ExistingSlot>, Option<u64>, Option<u64>);

/// Lists the slots, plans, drops and creates the physical ones; returns the plan (logical slots are created by
/// the caller, each in its own database), the slots kept with their positions, and the server's WAL (primary)
/// and replay (replica) positions.
async fn apply_slot_plan(client: &Client, work: &SlotWork<'_>) -> Result<Listing, PgError> {
    let rows = client.query(LIST_SLOTS_SQL, &[]).await.map_err(sql("list replication slots"))?;
    let mut existing = Vec::with_capacity(rows.len());
    let (mut optime, mut replay) = (None, None);
    for row in &rows {
        let err = || sql("list replication slots");
        let text = |i: usize| row.try_get::<_, Option<String>>(i).map_err(err());
        let lsn =
            |i: usize| row.try_get::<_, Option<i64>>(i).map(|v| v.and_then(|v| u64::try_from(v).ok())).map_err(err());
        optime = lsn(8)?;
        replay = lsn(9)?;
        let Some(name) = text(0)? else { continue };
        let kind = match text(1)?.as_deref() {
            Some("logical") => {
                SlotKind::Logical { database: text(2)?.unwrap_or_default(), plugin: text(3)?.unwrap_or_default() }
            }
            _ => SlotKind::Physical,
        };
        existing.push(ExistingSlot {
            name,
            kind,
            active: row.try_get::<_, bool>(4).map_err(err())?,
            restart_lsn: lsn(5)?,
            confirmed_flush_lsn: lsn(6)?,
            has_xmin: row.try_get::<_, bool>(7).map_err(err())?,
            catalog_xmin: lsn(10)?.and_then(|xmin| u32::try_from(xmin).ok()),
        });
    }
    let plan = slots::plan_slots(&work.wanted, &existing);
    for name in &plan.conflicts {
        tracing::error!(slot = %name, "permanent logical slot has the name of a member's physical slot; not created");
    }
    for (name, why) in &plan.kept {
        tracing::debug!(slot = %name, why, "keeping a replication slot that is not managed");
    }
    for (slot, reason) in &plan.drop {
        let why = match reason {
            DropReason::Unknown => {
                "unknown: not a member's slot, not in the dynamic slots, not matched by ignore_slots".to_owned()
            }
            DropReason::Changed { wanted } => format!("it is {} and the dynamic slots want it {wanted}", slot.kind),
        };
        match client.query("SELECT pg_catalog.pg_drop_replication_slot($1)", &[&slot.name]).await {
            Ok(_) => tracing::info!(slot = %slot.name, kind = %slot.kind, "dropped replication slot: {why}"),
            // Gone already, or a walsender attached since the listing: try again next cycle.
            Err(e) if [SqlState::UNDEFINED_OBJECT, SqlState::OBJECT_IN_USE].iter().any(|c| e.code() == Some(c)) => {}
            // One slot that cannot be dropped must not hold up the others or the creations.
            Err(e) => tracing::warn!(slot = %slot.name, "failed to drop replication slot: {}", super::error_chain(&e)),
        }
    }
    for name in &plan.create_physical {
        let res = client.query("SELECT pg_catalog.pg_create_physical_replication_slot($1, true)", &[name]).await;
        match res {
            Ok(_) => tracing::info!(slot = %name, "created physical replication slot"),
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_OBJECT) => {}
            // One slot that cannot be created (max_replication_slots reached?) must not stop the advances and the
            // positions the leader publishes: every node would hold WAL. Tried again next cycle.
            Err(e) => tracing::warn!(
                slot = %name,
                "failed to create physical replication slot (is max_replication_slots large enough?): {}",
                super::error_chain(&e)
            ),
        }
    }
    let dropped: BTreeSet<&str> = plan.drop.iter().map(|(slot, _)| slot.name.as_str()).collect();
    let kept = existing.iter().filter(|slot| !dropped.contains(slot.name.as_str())).cloned().collect();
    Ok((plan, kept, optime, replay))
}
