//! PURE: synchronous replication planning on the primary (Patroni's `synchronous_mode`).
//!
//! Safety rule (mode `on`): a member is named in the `sync` key only once PostgreSQL reports it
//! as a synchronous standby, and it leaves the key *before* it leaves
//! `synchronous_standby_names`. So every member the key names holds every acknowledged commit,
//! and only those members may take the leader key on failover (see `candidate::race`).
//! Failure scenario this prevents: (1) the primary drops standby B from the GUC first; (2) it
//! acknowledges commits B never received; (3) the primary dies; (4) B, still named in `sync`,
//! promotes and those acknowledged commits are lost. Narrowing the key first closes step (4).

pub mod quorum;

use std::collections::BTreeSet;

use crate::config::SynchronousMode;
use crate::dcs::view::ClusterView;
use crate::dcs::view::SyncData;
use crate::postgres::sync::render_synchronous_standby_names;
use crate::postgres::sync::Strictness;
use crate::postgres::sync::SyncMode;
use crate::postgres::sync::SyncRequest;
use crate::status::ReplicationRow;

/// The standby name strict mode waits for when no eligible standby is left (refused as a
/// member name).
pub const STRICT_PLACEHOLDER: &str = "__raftgres_strict_sync_placeholder__";

/// The policy, from the dynamic config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// `synchronous_mode`.
    pub mode: SynchronousMode,
    /// `synchronous_mode_strict`.
    pub strict: bool,
    /// `synchronous_node_count`.
    pub node_count: u32,
    /// `maximum_lag_on_syncnode` in bytes; negative: never replace a lagging standby.
    pub maximum_lag_on_syncnode: i64,
}

/// What the primary must do this cycle, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    /// Write the `sync` key first (narrowing); `Some(None)` deletes it.
    pub key_before: Option<Option<SyncData>>,
    /// Then set `synchronous_standby_names` (`Some(None)` resets it).
    pub guc: Option<Option<String>>,
    /// Then write the `sync` key again (widening to standbys PostgreSQL confirmed).
    pub key_after: Option<SyncData>,
}

impl SyncPlan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.key_before.is_none() && self.guc.is_none() && self.key_after.is_none()
    }
}

fn key(me: &str, members: &BTreeSet<String>) -> SyncData {
    let joined = members.iter().cloned().collect::<Vec<_>>().join(",");
    SyncData { leader: Some(me.to_string()), sync_standby: (!joined.is_empty()).then_some(joined), quorum: 0 }
}

/// Eligible standbys, best first: streaming, not `nosync`, `sync_priority` > 0, within
/// `maximum_lag_on_syncnode`, preferring higher priority, current sync standbys, then position.
fn candidates(
    view: &ClusterView,
    me: &str,
    rows: &[ReplicationRow],
    primary_lsn: u64,
    policy: &SyncPolicy,
) -> Vec<String> {
    let mut eligible: Vec<(i64, bool, u64, String)> = rows
        .iter()
        .filter(|row| row.state == "streaming" && row.application_name != me)
        .filter_map(|row| {
            let member = view.members.get(&row.application_name)?;
            let priority = if member.tag_bool("nosync") {
                0
            } else {
                member.tags.get("sync_priority").and_then(serde_json::Value::as_i64).unwrap_or(1)
            };
            let flush = row.flush_lsn.map(|l| l.0).unwrap_or(0);
            let lagging = policy.maximum_lag_on_syncnode >= 0
                && primary_lsn.saturating_sub(flush) > policy.maximum_lag_on_syncnode as u64;
            (priority > 0 && !lagging)
                .then(|| (priority, row.sync_state == "sync", flush, row.application_name.clone()))
        })
        .collect();
    eligible.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)).then(a.3.cmp(&b.3)));
    eligible.into_iter().map(|(_, _, _, name)| name).collect()
}

/// Plans one cycle for the primary `me`; `current_guc` is PostgreSQL's current value.
pub fn plan(
    view: &ClusterView,
    me: &str,
    rows: &[ReplicationRow],
    primary_lsn: u64,
    current_guc: &str,
    policy: &SyncPolicy,
) -> SyncPlan {
    let current_key = view.sync.as_ref().map(|s| &s.value);
    if policy.mode == SynchronousMode::Off {
        return SyncPlan {
            key_before: current_key.map(|_| None),
            guc: (!current_guc.is_empty()).then_some(None),
            key_after: None,
        };
    }
    if policy.mode == SynchronousMode::Quorum {
        // Quorum commit lists every eligible standby; `synchronous_node_count` is how many must confirm.
        let active: BTreeSet<String> = candidates(view, me, rows, primary_lsn, policy).into_iter().collect();
        return quorum::plan(view, me, &active, rows, primary_lsn, current_guc, policy);
    }
    if current_key.is_some_and(|k| k.leader.as_deref() == Some(me) && k.quorum > 0) {
        // Leaving quorum mode: its voters need not each hold every commit, so first let only the
        // leader be promotable; the next cycle names confirmed synchronous standbys again.
        return SyncPlan { key_before: Some(Some(key(me, &BTreeSet::new()))), guc: None, key_after: None };
    }
    let node_count = policy.node_count.max(1) as usize;
    let wanted: BTreeSet<String> =
        candidates(view, me, rows, primary_lsn, policy).into_iter().take(node_count).collect();
    let named: BTreeSet<String> = current_key
        .filter(|k| k.leader.as_deref() == Some(me))
        .map(|k| k.members().into_iter().collect())
        .unwrap_or_default();
    let keep: BTreeSet<String> = named.intersection(&wanted).cloned().collect();
    let key_is_mine = current_key.is_some_and(|k| k.leader.as_deref() == Some(me));
    let key_before = (!key_is_mine || keep != named).then(|| Some(key(me, &keep)));
    let mode = SyncMode::Priority;
    let strictness = if policy.strict { Strictness::Strict } else { Strictness::Relaxed };
    let num = None;
    let guc_value = if wanted.is_empty() && policy.strict {
        // Patroni 4.1.4 writes `*` here, which lets *any* standby (even a `nosync` one)
        // acknowledge commits; a name no standby uses keeps commits waiting, which is what
        // strict mode promises (upstream master made the same change).
        Some(STRICT_PLACEHOLDER.to_string())
    } else {
        render_synchronous_standby_names(&SyncRequest { mode, standbys: &wanted, num, strictness })
    };
    let guc = (guc_value.as_deref().unwrap_or("") != current_guc).then_some(guc_value.clone());
    // Widen the key only to standbys PostgreSQL already treats as synchronous under the GUC we
    // had before this cycle; ones added to the GUC just now are confirmed next cycle.
    let confirmed: BTreeSet<String> = rows
        .iter()
        .filter(|row| wanted.contains(&row.application_name) && matches!(row.sync_state.as_str(), "sync" | "quorum"))
        .map(|row| row.application_name.clone())
        .collect();
    let after: BTreeSet<String> = keep.union(&confirmed).cloned().collect();
    let key_after = (after != keep && guc.is_none()).then(|| key(me, &after));
    SyncPlan { key_before, guc, key_after }
}

/// What a node that won the leader key does to synchronous replication before `pg_promote`, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotePlan {
    /// Write the `sync` key first: `{leader: me, sync_standby: null, quorum: 0}`; `None` when it already says so
    /// or synchronous replication is off.
    pub key: Option<SyncData>,
    /// Then `synchronous_standby_names` (`None` clears it).
    pub guc: Option<String>,
}

/// PURE: the synchronous replication pre-step of a promotion by `me` (Patroni's
/// `process_sync_replication_prepromote`).
///
/// The `sync` key is narrowed to this node before PostgreSQL accepts its first write, in both modes: until the
/// first cycle as primary names standbys, only this node holds every commit it acknowledges.
/// Failure scenario this prevents (quorum): (1) key `{leader: a, sync_standby: b,c, quorum: 1}`; (2) a dies, b
/// gathers c's vote, takes the leader key and promotes with an empty `synchronous_standby_names`; (3) b
/// acknowledges commits alone and dies before its first cycle rewrites the key; (4) c, with a's vote once a
/// returns as a replica, still satisfies the old key and promotes without those commits. With the narrowed key,
/// c needs b's vote and waits for b. Mode `on` has the same window (the old key names a and b).
/// Patroni 4.x keeps the old quorum key here and sets `ANY k (old voters)` instead; narrowing trades the
/// ability to fail over during that first cycle for a key that never names a member lacking a commit.
///
/// Strict mode must not acknowledge a commit on this node alone, nor on a standby the planner would not choose
/// (`*` lets even a `nosync` one acknowledge): it starts with the placeholder no standby uses, as the planner
/// does when no standby is eligible; the first cycle as primary names the real standbys.
pub fn promote_plan(view: &ClusterView, me: &str, policy: &SyncPolicy) -> PromotePlan {
    if policy.mode == SynchronousMode::Off {
        return PromotePlan { key: None, guc: None };
    }
    let narrowed = key(me, &BTreeSet::new());
    let key = (view.sync.as_ref().map(|s| &s.value) != Some(&narrowed)).then_some(narrowed);
    let guc = policy.strict.then(|| strict_placeholder_guc(policy.mode)).flatten();
    PromotePlan { key, guc }
}

/// PURE: `synchronous_standby_names` that holds every commit (strict mode with no standby to name):
/// `ANY 1 (placeholder)` in quorum mode, the bare placeholder otherwise.
pub fn strict_placeholder_guc(mode: SynchronousMode) -> Option<String> {
    let placeholder: BTreeSet<String> = [STRICT_PLACEHOLDER.to_string()].into();
    let mode = if mode == SynchronousMode::Quorum { SyncMode::Quorum } else { SyncMode::Priority };
    render_synchronous_standby_names(&SyncRequest {
        mode,
        standbys: &placeholder,
        num: Some(1),
        strictness: Strictness::Strict,
    })
}

/// Whether `me` may race for the leader key under synchronous replication: only members the
/// `sync` key names (and its leader) hold every acknowledged commit.
/// In quorum mode anybody may race; `candidate::quorum_votes` decides whether it gathered enough votes.
pub fn may_race(view: &ClusterView, me: &str, mode: SynchronousMode) -> bool {
    if matches!(mode, SynchronousMode::Off | SynchronousMode::Quorum) {
        return true;
    }
    match view.sync.as_ref().map(|s| &s.value) {
        Some(key) if key.leader.is_some() => key.leader.as_deref() == Some(me) || key.members().iter().any(|m| m == me),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::view::MemberData;
    use crate::dcs::view::Versioned;
    use crate::postgres::types::Lsn;

    fn row(name: &str, sync_state: &str, flush: u64) -> ReplicationRow {
        ReplicationRow {
            application_name: name.into(),
            state: "streaming".into(),
            sync_state: sync_state.into(),
            flush_lsn: Some(Lsn(flush)),
            ..ReplicationRow::default()
        }
    }

    fn view(sync: Option<&str>) -> ClusterView {
        let mut v = ClusterView::default();
        for name in ["pg1", "pg2", "pg3"] {
            v.members.insert(name.into(), MemberData { state: "running".into(), ..MemberData::default() });
        }
        if let Some(members) = sync {
            let value = SyncData {
                leader: Some("pg1".into()),
                sync_standby: (!members.is_empty()).then(|| members.to_string()),
                quorum: 0,
            };
            v.sync = Some(Versioned { value, mod_rev: 3 });
        }
        v
    }

    const ON: SyncPolicy =
        SyncPolicy { mode: SynchronousMode::On, strict: false, node_count: 1, maximum_lag_on_syncnode: -1 };

    fn sd(members: &str) -> SyncData {
        SyncData {
            leader: Some("pg1".into()),
            sync_standby: (!members.is_empty()).then(|| members.to_string()),
            quorum: 0,
        }
    }

    #[track_caller]
    fn check(v: ClusterView, rows: Vec<ReplicationRow>, guc: &str, policy: SyncPolicy, want: SyncPlan) {
        assert_eq!(plan(&v, "pg1", &rows, 1000, guc, &policy), want);
    }

    #[test]
    fn enabling_writes_the_key_then_widens_the_guc() {
        check(
            view(None),
            vec![row("pg2", "async", 1000), row("pg3", "async", 900)],
            "",
            ON,
            SyncPlan { key_before: Some(Some(sd(""))), guc: Some(Some("pg2".into())), key_after: None },
        );
    }

    #[test]
    fn confirmed_standby_joins_the_key_after_the_guc() {
        check(
            view(Some("")),
            vec![row("pg2", "sync", 1000), row("pg3", "async", 900)],
            "pg2",
            ON,
            SyncPlan { key_before: None, guc: None, key_after: Some(sd("pg2")) },
        );
    }

    #[test]
    fn steady_state_does_nothing() {
        check(
            view(Some("pg2")),
            vec![row("pg2", "sync", 1000), row("pg3", "async", 900)],
            "pg2",
            ON,
            SyncPlan { key_before: None, guc: None, key_after: None },
        );
    }

    #[test]
    fn departed_standby_leaves_the_key_before_the_guc() {
        check(
            view(Some("pg2")),
            vec![row("pg3", "async", 900)],
            "pg2",
            ON,
            SyncPlan { key_before: Some(Some(sd(""))), guc: Some(Some("pg3".into())), key_after: None },
        );
    }

    #[test]
    fn strict_mode_with_no_standby_waits_for_any() {
        let strict = SyncPolicy { strict: true, ..ON };
        check(
            view(Some("pg2")),
            vec![],
            "pg2",
            strict,
            SyncPlan { key_before: Some(Some(sd(""))), guc: Some(Some(STRICT_PLACEHOLDER.into())), key_after: None },
        );
    }

    #[test]
    fn relaxed_mode_with_no_standby_runs_standalone() {
        check(
            view(Some("pg2")),
            vec![],
            "pg2",
            ON,
            SyncPlan { key_before: Some(Some(sd(""))), guc: Some(None), key_after: None },
        );
    }

    #[test]
    fn nosync_member_is_never_chosen() {
        let mut v = view(None);
        if let Some(m) = v.members.get_mut("pg2") {
            m.tags.insert("nosync".into(), true.into());
        }
        check(
            v,
            vec![row("pg2", "async", 1000), row("pg3", "async", 900)],
            "",
            ON,
            SyncPlan { key_before: Some(Some(sd(""))), guc: Some(Some("pg3".into())), key_after: None },
        );
    }

    #[test]
    fn turning_sync_off_deletes_the_key_and_resets_the_guc() {
        let off = SyncPolicy { mode: SynchronousMode::Off, ..ON };
        check(
            view(Some("pg2")),
            vec![row("pg2", "sync", 1000)],
            "pg2",
            off,
            SyncPlan { key_before: Some(None), guc: Some(None), key_after: None },
        );
    }

    #[test]
    fn leaving_quorum_mode_first_lets_only_the_leader_be_promoted() {
        let mut v = view(Some("pg2,pg3"));
        if let Some(sync) = v.sync.as_mut() {
            sync.value.quorum = 1;
        }
        check(
            v,
            vec![row("pg2", "quorum", 1000), row("pg3", "quorum", 1000)],
            "ANY 1 (pg2,pg3)",
            ON,
            SyncPlan { key_before: Some(Some(sd(""))), guc: None, key_after: None },
        );
    }

    #[track_caller]
    fn check_promote(sync: Option<SyncData>, policy: SyncPolicy, want_key: bool, want_guc: Option<&str>) {
        let mut v = view(None);
        v.sync = sync.map(|value| Versioned { value, mod_rev: 7 });
        let plan = promote_plan(&v, "pg2", &policy);
        let narrowed = SyncData { leader: Some("pg2".into()), sync_standby: None, quorum: 0 };
        assert_eq!(plan.key, want_key.then_some(narrowed), "key for {policy:?}");
        assert_eq!(plan.guc.as_deref(), want_guc, "guc for {policy:?}");
    }

    #[test]
    fn promotion_narrows_the_key_before_accepting_writes() {
        let quorum = SyncPolicy { mode: SynchronousMode::Quorum, ..ON };
        let strict_quorum = SyncPolicy { strict: true, ..quorum };
        let quorum_key = SyncData { quorum: 1, ..sd("pg2,pg3") };
        let placeholder_any = format!("ANY 1 ({STRICT_PLACEHOLDER})");
        // Quorum: the old voters lose their say before the first write; strict waits for a name nobody has.
        check_promote(Some(quorum_key.clone()), quorum, true, None);
        check_promote(Some(quorum_key.clone()), strict_quorum, true, Some(placeholder_any.as_str()));
        check_promote(None, quorum, true, None);
        // Mode on: the same window, the same narrowing.
        check_promote(Some(sd("pg2")), ON, true, None);
        check_promote(Some(sd("pg2")), SyncPolicy { strict: true, ..ON }, true, Some(STRICT_PLACEHOLDER));
        // Already narrowed to us (a retried promotion): nothing to write.
        let ours = SyncData { leader: Some("pg2".into()), sync_standby: None, quorum: 0 };
        check_promote(Some(ours), quorum, false, None);
        // Off: the key and the GUC are the planner's business.
        check_promote(Some(quorum_key), SyncPolicy { mode: SynchronousMode::Off, ..ON }, false, None);
    }

    #[test]
    fn only_named_members_race() {
        let v = view(Some("pg2"));
        assert!(may_race(&v, "pg2", SynchronousMode::On));
        assert!(!may_race(&v, "pg3", SynchronousMode::On));
        assert!(may_race(&v, "pg3", SynchronousMode::Off));
        assert!(may_race(&view(None), "pg3", SynchronousMode::On));
    }
}
