//! Pure slot positions: where each slot this node keeps should be, which slots to move forward there, and what
//! the leader publishes in the `status` key so that the other nodes can do so (Patroni 3.2+'s member slots on every
//! node and its logical slot failover for PostgreSQL 11 to 16, §2.13 of the contract).
//!
//! The leader publishes the position of every slot it keeps (`restart_lsn` of a physical slot,
//! `confirmed_flush_lsn` of a logical one) and its own slot name at its WAL position. A replica keeps the same
//! slots and moves each one forward to the published position with `pg_replication_slot_advance`, so that after a
//! failover the new primary holds the WAL (and, for a logical slot, the catalog rows) every consumer still needs.
//! A logical slot a replica lacks is copied from the leader's `pg_replslot/<name>/state` (the caller does the I/O).
//!
//! This module must not query or change PostgreSQL.

use std::collections::BTreeMap;

use super::slots::slot_name;
use super::slots::ExistingSlot;
use super::slots::PermanentSlot;
use super::slots::SlotKind;
use super::slots::SlotMember;
use super::slots::SlotRole;

/// Where one slot this node keeps should be moved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotTarget {
    /// The published position (0: none known, the slot is left where it is).
    pub lsn: u64,
    /// A walsender is expected to use the slot on this node: it moves by itself and is never advanced.
    pub expected_active: bool,
}

/// Everything [`slot_targets`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct TargetInput<'a> {
    /// This node's member name.
    pub me: &'a str,
    /// This node's role.
    pub role: SlotRole,
    /// The leader's name, if any.
    pub leader: Option<&'a str>,
    /// All members (with the position each reports in its member key).
    pub members: &'a [SlotMember],
    /// `status.slots`: the positions the leader published.
    pub published: &'a BTreeMap<String, u64>,
    /// The dynamic `slots:`.
    pub permanent: &'a [PermanentSlot],
}

/// PURE: the target of every member and permanent slot (Patroni's `_get_members_slots` and `__permanent_slots`):
/// the position the leader published; for a member that cascades from another member (`replicatefrom`), whose
/// slot on the leader does not move, at least the position that member reports. A member slot is expected active
/// on the leader when the member streams from it, on a replica when the member cascades from it; a permanent
/// physical slot is expected active on the leader only (its consumer connects there), unless a cascading member
/// bears its name.
pub fn slot_targets(input: &TargetInput<'_>) -> BTreeMap<String, SlotTarget> {
    let TargetInput { me, role, leader, members, published, permanent } = *input;
    let is_member = |name: &str| members.iter().any(|member| member.name == name);
    let expected_active = |member: &SlotMember| match role {
        SlotRole::Leader => member.replicatefrom.as_deref().is_none_or(|from| from == me || !is_member(from)),
        SlotRole::Replica => member.replicatefrom.as_deref() == Some(me) && Some(member.name.as_str()) != leader,
    };
    let published_at = |slot: &str| published.get(slot).copied().unwrap_or(0);
    let mut targets = BTreeMap::new();
    for member in members.iter().filter(|member| member.name != me) {
        let slot = slot_name(&member.name);
        let lsn = match member.replicatefrom {
            Some(_) => published_at(&slot).max(member.lsn),
            None => published_at(&slot),
        };
        targets.insert(slot, SlotTarget { lsn, expected_active: expected_active(member) });
    }
    for slot in permanent {
        if targets.contains_key(&slot.name) {
            continue;
        }
        let cascading = members.iter().find(|m| m.replicatefrom.is_some() && slot_name(&m.name) == slot.name);
        let lsn = match (&slot.kind, cascading) {
            (SlotKind::Physical, Some(member)) => published_at(&slot.name).max(member.lsn),
            _ => published_at(&slot.name),
        };
        let expected_active = slot.kind == SlotKind::Physical && role == SlotRole::Leader && cascading.is_none();
        targets.insert(slot.name.clone(), SlotTarget { lsn, expected_active });
    }
    targets
}

/// One `pg_replication_slot_advance` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advance {
    /// The slot.
    pub name: String,
    /// The database to run it in: a logical slot's own, `None` for a physical slot (any database).
    pub database: Option<String>,
    /// Where to move the slot.
    pub lsn: u64,
}

/// What to do with the slots that exist, as far as their positions go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdvancePlan {
    /// Slots to move forward.
    pub advance: Vec<Advance>,
    /// Physical slots to drop (created anew, reserving WAL, by the next cycle), with the reason to log.
    pub drop: Vec<(String, &'static str)>,
}

/// PURE: Patroni's `_ensure_physical_slots` and `_ensure_logical_slots_replica` on positions. A physical slot not
/// expected active and not in use moves forward to its target; one that reserves no WAL cannot be advanced and is
/// dropped; one holding an `xmin` (hot standby feedback a former walsender left behind) would hold back vacuum
/// everywhere and is dropped when `clean_xmin`. On a replica a logical slot moves to its target, never past what
/// this node has replayed (`replay`).
pub fn plan_advance(
    existing: &[ExistingSlot],
    targets: &BTreeMap<String, SlotTarget>,
    role: SlotRole,
    replay: Option<u64>,
    clean_xmin: bool,
) -> AdvancePlan {
    let mut plan = AdvancePlan::default();
    for slot in existing {
        let Some(target) = targets.get(&slot.name) else { continue };
        if target.expected_active || slot.active {
            continue;
        }
        match &slot.kind {
            SlotKind::Physical => {
                if clean_xmin && slot.has_xmin {
                    plan.drop.push((slot.name.clone(), "it is not expected to be in use but holds an xmin"));
                    continue;
                }
                match slot.restart_lsn {
                    None => plan.drop.push((slot.name.clone(), "it reserves no WAL, so it cannot be advanced")),
                    Some(at) if target.lsn > at => {
                        plan.advance.push(Advance { name: slot.name.clone(), database: None, lsn: target.lsn })
                    }
                    Some(_) => {}
                }
            }
            SlotKind::Logical { database, .. } => {
                let (SlotRole::Replica, Some(replay)) = (role, replay) else { continue };
                let to = target.lsn.min(replay);
                if slot.confirmed_flush_lsn.is_some_and(|at| at < to) {
                    plan.advance.push(Advance { name: slot.name.clone(), database: Some(database.clone()), lsn: to });
                }
            }
        }
    }
    plan
}

/// PURE: the `status.slots` a leader publishes: the position of every slot it keeps for members or as permanent
/// (`restart_lsn`, or `confirmed_flush_lsn` for a logical slot) and its own slot at its WAL position `optime`, which
/// the replicas advance their slot for the leader to.
pub fn published_positions(
    existing: &[ExistingSlot],
    targets: &BTreeMap<String, SlotTarget>,
    own: &str,
    optime: u64,
) -> BTreeMap<String, u64> {
    let mut positions: BTreeMap<String, u64> = existing
        .iter()
        .filter(|slot| targets.contains_key(&slot.name))
        .filter_map(|slot| {
            let at = match slot.kind {
                SlotKind::Physical => slot.restart_lsn,
                SlotKind::Logical { .. } => slot.confirmed_flush_lsn,
            };
            Some((slot.name.clone(), at.filter(|lsn| *lsn > 0)?))
        })
        .collect();
    if optime > 0 {
        positions.insert(own.to_owned(), optime);
    }
    positions
}

/// PURE: the permanent logical slots a replica lacks and can copy from the leader: only those the leader published
/// a position for (it has them), as Patroni copies only slots with feedback in the store.
pub fn slots_to_copy<'a>(missing: &'a [PermanentSlot], published: &BTreeMap<String, u64>) -> Vec<&'a PermanentSlot> {
    missing
        .iter()
        .filter(|slot| matches!(slot.kind, SlotKind::Logical { .. }) && published.contains_key(&slot.name))
        .collect()
}

/// PURE: Patroni's `member_slots_ttl` retention on the leader. `last_seen` maps the slot of every member the
/// leader published a position for (members not tagged `nostream`, never a permanent physical slot) to when it
/// was last seen; entries older than `ttl` are removed and returned. The keys that remain are the `retain_slots`
/// the leader publishes: every node keeps those slots for a while after their member left, so a member that comes
/// back (a reboot, a long network cut) finds the WAL it needs.
pub fn retain_slots(
    last_seen: &mut BTreeMap<String, std::time::Instant>,
    published: &BTreeMap<String, u64>,
    members: &[SlotMember],
    permanent: &[PermanentSlot],
    now: std::time::Instant,
    ttl: std::time::Duration,
) -> Vec<String> {
    let streaming: std::collections::BTreeSet<String> =
        members.iter().filter(|member| !member.nostream).map(|member| slot_name(&member.name)).collect();
    for name in published.keys() {
        let permanent_physical = permanent.iter().any(|slot| slot.name == *name && slot.kind == SlotKind::Physical);
        if streaming.contains(name) && !permanent_physical {
            last_seen.insert(name.clone(), now);
        }
    }
    let expired: Vec<String> = last_seen
        .iter()
        .filter(|(_, seen)| now.saturating_duration_since(**seen) >= ttl)
        .map(|(name, _)| name.clone())
        .collect();
    for name in &expired {
        last_seen.remove(name);
    }
    expired
}

/// PURE: Patroni's readiness check of logical slots copied to a replica (`check_logical_slots_readiness`). A copied
/// slot is safe to use after a failover once the leader's physical slot for this replica holds, through hot
/// standby feedback, a `catalog_xmin` (`physical`) that is not newer than the copied slot's own here
/// (`local`), and not older than the leader's logical slot had when that feedback first arrived (remembered in
/// `pending`: `None` until then). `leader_logical` has the leader's `catalog_xmin` of each pending slot. Updates
/// `pending` and returns the slots that became ready (the caller logs them).
pub fn ready_slots(
    pending: &mut BTreeMap<String, Option<u32>>,
    physical: Option<u32>,
    leader_logical: &BTreeMap<String, u32>,
    local: &[ExistingSlot],
) -> Vec<String> {
    let Some(physical) = physical else { return Vec::new() };
    for (name, remembered) in pending.iter_mut() {
        if remembered.is_none() {
            *remembered = leader_logical.get(name).copied();
        }
    }
    let ready: Vec<String> = pending
        .iter()
        .filter(|(name, remembered)| match local.iter().find(|slot| slot.name == **name) {
            // Gone from this replica: nothing left to check.
            None => true,
            Some(slot) => remembered.is_some_and(|leader_xmin| {
                slot.catalog_xmin.is_some_and(|own| leader_xmin <= physical && physical <= own)
            }),
        })
        .map(|(name, _)| name.clone())
        .collect();
    for name in &ready {
        pending.remove(name);
    }
    ready
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, replicatefrom: Option<&str>, lsn: u64) -> SlotMember {
        SlotMember { name: name.to_owned(), nostream: false, replicatefrom: replicatefrom.map(str::to_owned), lsn }
    }

    fn physical(name: &str, restart_lsn: Option<u64>, active: bool, has_xmin: bool) -> ExistingSlot {
        ExistingSlot {
            name: name.to_owned(),
            kind: SlotKind::Physical,
            active,
            restart_lsn,
            confirmed_flush_lsn: None,
            has_xmin,
            catalog_xmin: None,
        }
    }

    fn logical(name: &str, confirmed: u64) -> ExistingSlot {
        ExistingSlot {
            name: name.to_owned(),
            kind: SlotKind::Logical { database: "app".to_owned(), plugin: "pgoutput".to_owned() },
            active: false,
            restart_lsn: Some(confirmed.saturating_sub(10)),
            confirmed_flush_lsn: Some(confirmed),
            has_xmin: false,
            catalog_xmin: Some(confirmed as u32),
        }
    }

    fn permanent() -> Vec<PermanentSlot> {
        vec![
            PermanentSlot { name: "archiver".to_owned(), kind: SlotKind::Physical },
            PermanentSlot {
                name: "cdc".to_owned(),
                kind: SlotKind::Logical { database: "app".to_owned(), plugin: "pgoutput".to_owned() },
            },
        ]
    }

    fn published() -> BTreeMap<String, u64> {
        [("n1", 900), ("n2", 500), ("n3", 400), ("archiver", 300), ("cdc", 700)]
            .into_iter()
            .map(|(name, lsn)| (name.to_owned(), lsn))
            .collect()
    }

    fn targets(me: &str, role: SlotRole) -> String {
        let members = [member("n1", None, 900), member("n2", None, 800), member("n3", Some("n2"), 600)];
        let (published, permanent) = (published(), permanent());
        let input = TargetInput {
            me,
            role,
            leader: Some("n1"),
            members: &members,
            published: &published,
            permanent: &permanent,
        };
        let parts: Vec<String> = slot_targets(&input)
            .into_iter()
            .map(|(name, t)| format!("{name}@{}{}", t.lsn, if t.expected_active { " active" } else { "" }))
            .collect();
        parts.join(", ")
    }

    #[test]
    fn the_leader_expects_its_streaming_members_and_permanent_physical_slots_to_be_in_use() {
        // n3 cascades from n2: its slot on the leader is idle and follows n3's own position.
        assert_eq!(targets("n1", SlotRole::Leader), "archiver@300 active, cdc@700, n2@500 active, n3@600");
    }

    #[test]
    fn a_replica_advances_everything_except_the_slots_of_members_cascading_from_it() {
        assert_eq!(targets("n2", SlotRole::Replica), "archiver@300, cdc@700, n1@900, n3@600 active");
        assert_eq!(targets("n3", SlotRole::Replica), "archiver@300, cdc@700, n1@900, n2@500");
    }

    fn advance(existing: &[ExistingSlot], role: SlotRole, replay: Option<u64>, clean_xmin: bool) -> String {
        let members = [member("n1", None, 900), member("n2", None, 800), member("n3", None, 700)];
        let (published, permanent) = (published(), permanent());
        let input = TargetInput {
            me: "n2",
            role,
            leader: Some("n1"),
            members: &members,
            published: &published,
            permanent: &permanent,
        };
        let plan = plan_advance(existing, &slot_targets(&input), role, replay, clean_xmin);
        let moves: Vec<String> = plan.advance.iter().map(|a| format!("{}→{}", a.name, a.lsn)).collect();
        let drops: Vec<&str> = plan.drop.iter().map(|(name, _)| name.as_str()).collect();
        format!("advance {moves:?} drop {drops:?}")
    }

    #[test]
    fn physical_slots_move_forward_only() {
        let existing = [
            physical("n1", Some(100), false, false),
            physical("n3", Some(450), false, false),
            physical("archiver", Some(300), false, false),
            physical("unknown", Some(1), false, false),
        ];
        assert_eq!(advance(&existing, SlotRole::Replica, Some(2000), true), r#"advance ["n1→900"] drop []"#);
    }

    #[test]
    fn slots_in_use_are_left_alone() {
        let existing = [physical("n1", Some(100), true, true), logical("cdc", 100)];
        let busy = ExistingSlot { active: true, ..logical("cdc", 100) };
        assert_eq!(advance(&existing[..1], SlotRole::Replica, Some(2000), true), "advance [] drop []");
        assert_eq!(advance(&[busy], SlotRole::Replica, Some(2000), true), "advance [] drop []");
    }

    #[test]
    fn an_idle_physical_slot_with_xmin_or_without_wal_is_dropped() {
        let existing = [physical("n1", Some(100), false, true), physical("n3", None, false, false)];
        assert_eq!(advance(&existing, SlotRole::Replica, Some(2000), true), r#"advance [] drop ["n1", "n3"]"#);
        assert_eq!(advance(&existing[..1], SlotRole::Replica, Some(2000), false), r#"advance ["n1→900"] drop []"#);
    }

    #[test]
    fn a_logical_slot_moves_on_a_replica_never_past_its_replay_position() {
        assert_eq!(
            advance(&[logical("cdc", 100)], SlotRole::Replica, Some(2000), true),
            r#"advance ["cdc→700"] drop []"#
        );
        assert_eq!(
            advance(&[logical("cdc", 100)], SlotRole::Replica, Some(650), true),
            r#"advance ["cdc→650"] drop []"#
        );
        assert_eq!(advance(&[logical("cdc", 800)], SlotRole::Replica, Some(2000), true), "advance [] drop []");
        assert_eq!(advance(&[logical("cdc", 100)], SlotRole::Replica, None, true), "advance [] drop []");
        assert_eq!(advance(&[logical("cdc", 100)], SlotRole::Leader, Some(2000), true), "advance [] drop []");
    }

    #[test]
    fn the_leader_publishes_its_kept_slots_and_its_own_position() {
        let existing = [
            physical("n2", Some(500), true, false),
            physical("n3", None, false, false),
            physical("unknown", Some(1), false, false),
            logical("cdc", 700),
        ];
        let members = [member("n1", None, 0), member("n2", None, 0), member("n3", None, 0)];
        let (none, permanent) = (BTreeMap::new(), permanent());
        let input = TargetInput {
            me: "n1",
            role: SlotRole::Leader,
            leader: Some("n1"),
            members: &members,
            published: &none,
            permanent: &permanent,
        };
        let positions = published_positions(&existing, &slot_targets(&input), "n1", 900);
        assert_eq!(format!("{positions:?}"), r#"{"cdc": 700, "n1": 900, "n2": 500}"#);
    }

    #[test]
    fn slots_of_departed_members_are_retained_for_member_slots_ttl() {
        let start = std::time::Instant::now();
        let ttl = std::time::Duration::from_secs(1800);
        let mut seen = BTreeMap::new();
        let members = [member("n1", None, 0), member("n2", None, 0), member("n3", None, 0)];
        let all = published();
        assert!(retain_slots(&mut seen, &all, &members, &permanent(), start, ttl).is_empty());
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["n1", "n2", "n3"], "member slots only, not permanent ones");
        // n3 leaves: its slot is no longer published, and is retained until the ttl ran out.
        let without_n3: BTreeMap<String, u64> = all.into_iter().filter(|(name, _)| name != "n3").collect();
        let later = start + ttl / 2;
        assert!(retain_slots(&mut seen, &without_n3, &members[..2], &permanent(), later, ttl).is_empty());
        assert!(seen.contains_key("n3"));
        let expired = retain_slots(&mut seen, &without_n3, &members[..2], &permanent(), start + ttl, ttl);
        assert_eq!(expired, ["n3"]);
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["n1", "n2"]);
    }

    #[test]
    fn a_copied_slot_is_ready_once_feedback_covers_its_catalog_rows() {
        let local = |catalog_xmin: u32| ExistingSlot { catalog_xmin: Some(catalog_xmin), ..logical("cdc", 700) };
        let leader: BTreeMap<String, u32> = [("cdc".to_owned(), 750)].into();
        let mut pending: BTreeMap<String, Option<u32>> = [("cdc".to_owned(), None)].into();
        // No feedback yet (hot_standby_feedback off, or not streaming): nothing is learnt.
        assert!(ready_slots(&mut pending, None, &leader, &[local(760)]).is_empty());
        assert_eq!(pending["cdc"], None);
        // Feedback older than the leader's slot: the leader's catalog_xmin is remembered, not ready yet.
        assert!(ready_slots(&mut pending, Some(740), &leader, &[local(760)]).is_empty());
        assert_eq!(pending["cdc"], Some(750));
        // Feedback past the remembered value but newer than the copy's own catalog_xmin: not ready.
        assert!(ready_slots(&mut pending, Some(770), &BTreeMap::new(), &[local(760)]).is_empty());
        // Between the two: ready, and forgotten.
        assert_eq!(ready_slots(&mut pending, Some(755), &BTreeMap::new(), &[local(760)]), ["cdc"]);
        assert!(pending.is_empty());
        // A pending slot that vanished here is dropped from the queue.
        let mut gone: BTreeMap<String, Option<u32>> = [("old".to_owned(), None)].into();
        assert_eq!(ready_slots(&mut gone, Some(1), &BTreeMap::new(), &[]), ["old"]);
    }

    #[test]
    fn only_logical_slots_the_leader_published_are_copied() {
        let mut missing = permanent();
        missing.push(PermanentSlot {
            name: "new_cdc".to_owned(),
            kind: SlotKind::Logical { database: "app".to_owned(), plugin: "pgoutput".to_owned() },
        });
        let copy: Vec<&str> = slots_to_copy(&missing, &published()).iter().map(|slot| slot.name.as_str()).collect();
        assert_eq!(copy, ["cdc"]);
    }
}
