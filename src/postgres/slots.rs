//! Pure physical replication slot planning: member name → slot name, the member slots a node should have,
//! and the difference with the slots that exist.
//!
//! This module owns Patroni's slot naming and its member-slot rules for PostgreSQL 11+ (§2.13 of the contract).
//! It must not query or change PostgreSQL: the caller lists the physical slots, applies permanent and ignored
//! slots, and runs the create/drop statements.

use std::collections::{BTreeMap, BTreeSet};

/// PostgreSQL's `NAMEDATALEN - 1`: the longest slot name.
pub const MAX_SLOT_NAME_LEN: usize = 63;

/// The slot name for a member: lower-cased, `-` and `.` become `_`, any other character outside `[a-z0-9_]`
/// becomes `u` and its code point in decimal padded to 4 digits (Patroni's `u%04d`), truncated to 63 bytes.
///
/// Different names may map to the same slot (`pg-1` and `pg.1`); [`desired_slots`] reports such conflicts.
pub fn slot_name(member_name: &str) -> String {
    let mut slot = String::with_capacity(member_name.len());
    for c in member_name.to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' => slot.push(c),
            '-' | '.' => slot.push('_'),
            other => slot.push_str(&format!("u{:04}", u32::from(other))),
        }
    }
    // Every character pushed is ASCII, so cutting at a byte offset keeps the string valid.
    slot.truncate(MAX_SLOT_NAME_LEN);
    slot
}

/// A cluster member as far as slots are concerned (Patroni's member tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMember {
    /// The member name.
    pub name: String,
    /// `nostream` tag: the member does not stream WAL, so nobody keeps a slot for it.
    pub nostream: bool,
    /// `replicatefrom` tag: the member streams from this member instead of the leader.
    pub replicatefrom: Option<String>,
    /// The WAL position the member reports in its member key (0 when unknown).
    pub lsn: u64,
}

/// The role of the node the slots are planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRole {
    /// The primary, or the standby leader of a standby cluster.
    Leader,
    /// A replica.
    Replica,
}

/// Whether member slots are kept on nodes where the member does not stream from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRetention {
    /// `member_slots_ttl > 0` (the default `30min`) on PostgreSQL 11+: every node that could become leader keeps
    /// (and advances) a slot for every member, so a new leader already holds the WAL its replicas need.
    AllMembers,
    /// `member_slots_ttl = 0`: a node keeps slots only for members that stream from it now.
    StreamingOnly,
}

/// Everything [`desired_slots`] looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPlanInput<'a> {
    /// This node's member name.
    pub me: &'a str,
    /// This node's role.
    pub role: SlotRole,
    /// This node's `nofailover` tag: a node that can never lead keeps only slots of members streaming from it.
    pub nofailover: bool,
    /// The current leader's name, if any.
    pub leader: Option<&'a str>,
    /// All members in the cluster view, including this node.
    pub members: &'a [SlotMember],
    /// See [`SlotRetention`].
    pub retention: SlotRetention,
    /// `status.retain_slots`: slot names of members that left less than `member_slots_ttl` ago.
    pub retain_slots: &'a BTreeSet<String>,
}

/// The member slots a node should have.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredSlots {
    /// Slot names.
    pub slots: BTreeSet<String>,
    /// Slot names that several members map to, with those members (log as an error: they share one slot).
    pub conflicts: BTreeMap<String, Vec<String>>,
}

/// Computes the physical member slots this node should have (Patroni's `_get_members_slots`).
pub fn desired_slots(input: &SlotPlanInput<'_>) -> DesiredSlots {
    let SlotPlanInput { me, role, nofailover, leader, members, retention, retain_slots } = *input;
    let is_member = |name: &str| members.iter().any(|member| member.name == name);
    let streams_from_me = |member: &SlotMember| match role {
        // A member whose `replicatefrom` names a missing node falls back to streaming from the leader.
        SlotRole::Leader => member.replicatefrom.as_deref().is_none_or(|from| from == me || !is_member(from)),
        SlotRole::Replica => member.replicatefrom.as_deref() == Some(me) && Some(member.name.as_str()) != leader,
    };
    let wanted =
        members.iter().filter(|member| member.name != me && !member.nostream).filter(|member| match retention {
            SlotRetention::AllMembers => !nofailover || member.replicatefrom.as_deref() == Some(me),
            SlotRetention::StreamingOnly => streams_from_me(member),
        });
    let mut by_slot: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for member in wanted {
        by_slot.entry(slot_name(&member.name)).or_default().push(member.name.clone());
    }
    let mut slots: BTreeSet<String> = by_slot.keys().cloned().collect();
    if !nofailover {
        let own = slot_name(me);
        slots.extend(retain_slots.iter().filter(|slot| **slot != own).cloned());
    }
    let conflicts = by_slot.into_iter().filter(|(_, names)| names.len() > 1).collect();
    DesiredSlots { slots, conflicts }
}

/// PURE: the member at the head of `me`'s `replicatefrom` chain: the one that streams from the leader (itself when
/// it has no `replicatefrom`, or names a member that is gone). A loop in the chain ends where it closes.
pub fn head_of_chain(me: &str, members: &[SlotMember]) -> String {
    let mut current = me.to_owned();
    let mut seen = BTreeSet::new();
    while seen.insert(current.clone()) {
        let next = members.iter().find(|m| m.name == current).and_then(|m| m.replicatefrom.clone());
        match next.filter(|next| members.iter().any(|m| m.name == *next)) {
            Some(next) => current = next,
            None => break,
        }
    }
    current
}

/// What kind of slot, with a logical slot's database and output plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotKind {
    /// A physical slot.
    Physical,
    /// A logical slot.
    Logical {
        /// The database it decodes.
        database: String,
        /// Its output plugin (`pgoutput`, `test_decoding`, `wal2json`, …).
        plugin: String,
    },
}

impl std::fmt::Display for SlotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotKind::Physical => write!(f, "physical"),
            SlotKind::Logical { database, plugin } => write!(f, "logical (database {database}, plugin {plugin})"),
        }
    }
}

/// A permanent slot of the dynamic `slots:` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermanentSlot {
    /// The slot name.
    pub name: String,
    /// Its kind.
    pub kind: SlotKind,
}

/// Whether `name` is a valid permanent slot name (Patroni's `^[a-z0-9_]{1,63}$`).
pub fn valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SLOT_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Reads one entry of the dynamic `slots:` map as Patroni does: no value (or an empty map) is a physical slot;
/// `type` defaults to `logical` when `database` and `plugin` are given, else `physical`. The error says what is
/// wrong with the entry.
pub fn permanent_slot(name: &str, value: &serde_json::Value) -> Result<PermanentSlot, String> {
    use serde_json::Value;
    if !valid_slot_name(name) {
        return Err(format!("invalid slot name {name:?}: use 1 to 63 lower case letters, digits and underscores"));
    }
    let empty = serde_json::Map::new();
    let map = match value {
        Value::Null => &empty,
        Value::Object(map) => map,
        other => return Err(format!("expected a map (type, database, plugin) or nothing, got {other}")),
    };
    let text = |key: &str| match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(other) => Err(format!("{key}: expected a non-empty string, got {other}")),
    };
    let (database, plugin) = (text("database")?, text("plugin")?);
    let kind = match text("type")?.as_deref() {
        Some("physical") => SlotKind::Physical,
        Some("logical") => match (database, plugin) {
            (Some(database), Some(plugin)) => SlotKind::Logical { database, plugin },
            _ => return Err("a logical slot needs database and plugin".to_owned()),
        },
        None => match (database, plugin) {
            (Some(database), Some(plugin)) => SlotKind::Logical { database, plugin },
            _ => SlotKind::Physical,
        },
        Some(other) => return Err(format!("type: expected physical or logical, got {other:?}")),
    };
    Ok(PermanentSlot { name: name.to_owned(), kind })
}

/// One entry of `ignore_slots`: a slot matching every given property is left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreMatcher {
    /// `name`.
    pub name: Option<String>,
    /// `type`: `physical` or `logical`.
    pub kind: Option<String>,
    /// `database`.
    pub database: Option<String>,
    /// `plugin`.
    pub plugin: Option<String>,
}

impl IgnoreMatcher {
    /// Reads one `ignore_slots` entry (a map of `name`, `type`, `database`, `plugin`).
    pub fn from_value(value: &serde_json::Value) -> Result<IgnoreMatcher, String> {
        let map =
            value.as_object().ok_or_else(|| format!("expected a map (name, type, database, plugin), got {value}"))?;
        let text = |key: &str| match map.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("{key}: expected a string, got {other}")),
        };
        if let Some(key) = map.keys().find(|key| !["name", "type", "database", "plugin"].contains(&key.as_str())) {
            return Err(format!("unknown property {key:?}: use name, type, database and plugin"));
        }
        Ok(IgnoreMatcher {
            name: text("name")?,
            kind: text("type")?,
            database: text("database")?,
            plugin: text("plugin")?,
        })
    }

    /// Patroni's `ignore_replication_slot`: every property given (non-empty) equals the slot's.
    pub fn matches(&self, slot: &ExistingSlot) -> bool {
        let (kind, database, plugin) = match &slot.kind {
            SlotKind::Physical => ("physical", None, None),
            SlotKind::Logical { database, plugin } => ("logical", Some(database.as_str()), Some(plugin.as_str())),
        };
        let same = |wanted: &Option<String>, actual: Option<&str>| {
            wanted.as_deref().is_none_or(|w| w.is_empty() || Some(w) == actual)
        };
        self.name.as_deref().is_none_or(|name| name == slot.name)
            && same(&self.kind, Some(kind))
            && same(&self.database, database)
            && same(&self.plugin, plugin)
    }
}

/// A slot that exists on this PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingSlot {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: SlotKind,
    /// A walsender (or a decoding session) uses it now: it cannot be dropped.
    pub active: bool,
    /// `restart_lsn`: the oldest WAL it holds, `None` when it reserves none.
    pub restart_lsn: Option<u64>,
    /// `confirmed_flush_lsn` of a logical slot: what its consumer confirmed.
    pub confirmed_flush_lsn: Option<u64>,
    /// `xmin` is set: hot standby feedback through the slot holds back vacuum on this node.
    pub has_xmin: bool,
    /// `catalog_xmin` of a logical slot: the oldest catalog rows it needs.
    pub catalog_xmin: Option<u32>,
}

/// Why a slot is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Neither a member's, nor permanent, nor matched by `ignore_slots`.
    Unknown,
    /// A permanent slot of that name is configured with another kind, database or plugin.
    Changed {
        /// The configured kind.
        wanted: SlotKind,
    },
}

/// The slot statements of one cycle on the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotPlan {
    /// Physical slots to create.
    pub create_physical: BTreeSet<String>,
    /// Logical slots to create, each in its database.
    pub create_logical: Vec<PermanentSlot>,
    /// Slots to drop, with the reason to log.
    pub drop: Vec<(ExistingSlot, DropReason)>,
    /// Slots left alone although they would be dropped: in use now (tried again next cycle) or paused.
    pub kept: Vec<(String, &'static str)>,
    /// Permanent slots that cannot be honoured (logged as errors): a logical slot named like a member's slot.
    pub conflicts: Vec<String>,
}

/// Everything [`plan_slots`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct LeaderSlots<'a> {
    /// This node's slot name (never created here).
    pub own: &'a str,
    /// The members' physical slots (see [`desired_slots`]).
    pub members: &'a BTreeSet<String>,
    /// The dynamic `slots:`.
    pub permanent: &'a [PermanentSlot],
    /// The dynamic `ignore_slots`.
    pub ignore: &'a [IgnoreMatcher],
    /// Maintenance mode: unknown slots are kept.
    pub paused: bool,
}

/// Patroni's slot maintenance on the leader (`sync_replication_slots` → `_drop_incorrect_slots`,
/// `_ensure_physical_slots`, `_ensure_logical_slots_primary`): create the member and permanent slots that are
/// missing; drop a slot whose kind, database or plugin differs from its permanent definition (created again next
/// cycle); drop every other slot that no `ignore_slots` entry matches, except in pause; never an active slot.
pub fn plan_slots(wanted: &LeaderSlots<'_>, existing: &[ExistingSlot]) -> SlotPlan {
    let mut plan = SlotPlan::default();
    let mut desired: BTreeMap<&str, SlotKind> =
        wanted.members.iter().map(|name| (name.as_str(), SlotKind::Physical)).collect();
    for slot in wanted.permanent {
        if slot.name == wanted.own && slot.kind == SlotKind::Physical {
            continue;
        }
        if wanted.members.contains(&slot.name) {
            if slot.kind != SlotKind::Physical {
                plan.conflicts.push(slot.name.clone());
            }
            continue;
        }
        desired.insert(&slot.name, slot.kind.clone());
    }
    for slot in existing {
        let drop = match desired.get(slot.name.as_str()) {
            Some(kind) if *kind == slot.kind => None,
            Some(kind) => Some(DropReason::Changed { wanted: kind.clone() }),
            None if wanted.ignore.iter().any(|matcher| matcher.matches(slot)) => None,
            None if wanted.paused => {
                plan.kept.push((slot.name.clone(), "maintenance mode"));
                None
            }
            None => Some(DropReason::Unknown),
        };
        match drop {
            Some(_) if slot.active => plan.kept.push((slot.name.clone(), "in use")),
            Some(reason) => plan.drop.push((slot.clone(), reason)),
            None => {}
        }
    }
    for (name, kind) in desired {
        if existing.iter().any(|slot| slot.name == name) {
            continue;
        }
        match kind {
            SlotKind::Physical => {
                plan.create_physical.insert(name.to_owned());
            }
            kind @ SlotKind::Logical { .. } => plan.create_logical.push(PermanentSlot { name: name.to_owned(), kind }),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, nostream: bool, replicatefrom: Option<&str>) -> SlotMember {
        SlotMember { name: name.to_owned(), nostream, replicatefrom: replicatefrom.map(str::to_owned), lsn: 0 }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    fn cluster() -> Vec<SlotMember> {
        vec![
            member("pg-1", false, None),
            member("pg-2", false, None),
            member("pg-3", false, Some("pg-2")),
            member("backup", true, None),
            member("far", false, Some("gone")),
        ]
    }

    enum Input<'a> {
        Name(&'a str),
        Plan(SlotPlanInput<'a>),
    }

    #[track_caller]
    fn check(input: Input<'_>, expected: &str) {
        let actual = match input {
            Input::Name(name) => slot_name(name),
            Input::Plan(plan) => {
                let res = desired_slots(&plan);
                format!("{:?} conflicts={:?}", res.slots, res.conflicts)
            }
        };
        assert_eq!(actual, expected);
    }

    fn plan<'a>(me: &'a str, role: SlotRole, members: &'a [SlotMember], retention: SlotRetention) -> SlotPlanInput<'a> {
        static NO_RETAIN: BTreeSet<String> = BTreeSet::new();
        SlotPlanInput {
            me,
            role,
            nofailover: false,
            leader: Some("pg-1"),
            members,
            retention,
            retain_slots: &NO_RETAIN,
        }
    }

    #[test]
    fn slot_names_follow_patroni() {
        check(Input::Name("pg-1"), "pg_1");
        check(Input::Name("Node.Example.COM"), "node_example_com");
        check(Input::Name("a b+c"), "au0032bu0043c");
        check(Input::Name("über"), "u0252ber");
        check(Input::Name("ok_name_9"), "ok_name_9");
        check(Input::Name(&"x".repeat(70)), &"x".repeat(63));
        check(Input::Name(&format!("{}é", "x".repeat(60))), &format!("{}u02", "x".repeat(60)));
    }

    #[test]
    fn every_node_keeps_slots_for_all_streaming_members() {
        let members = cluster();
        let leader = plan("pg-1", SlotRole::Leader, &members, SlotRetention::AllMembers);
        check(Input::Plan(leader), r#"{"far", "pg_2", "pg_3"} conflicts={}"#);
        let replica = plan("pg-2", SlotRole::Replica, &members, SlotRetention::AllMembers);
        check(Input::Plan(replica), r#"{"far", "pg_1", "pg_3"} conflicts={}"#);
    }

    #[test]
    fn nofailover_node_keeps_only_its_cascading_members() {
        let members = cluster();
        let retain = set(&["old_member"]);
        let input = SlotPlanInput {
            nofailover: true,
            retain_slots: &retain,
            ..plan("pg-2", SlotRole::Replica, &members, SlotRetention::AllMembers)
        };
        check(Input::Plan(input), r#"{"pg_3"} conflicts={}"#);
    }

    #[test]
    fn streaming_only_leader_skips_members_cascading_from_others() {
        let members = cluster();
        let leader = plan("pg-1", SlotRole::Leader, &members, SlotRetention::StreamingOnly);
        check(Input::Plan(leader), r#"{"far", "pg_2"} conflicts={}"#);
        let replica = plan("pg-2", SlotRole::Replica, &members, SlotRetention::StreamingOnly);
        check(Input::Plan(replica), r#"{"pg_3"} conflicts={}"#);
        let other_replica = plan("pg-3", SlotRole::Replica, &members, SlotRetention::StreamingOnly);
        check(Input::Plan(other_replica), "{} conflicts={}");
    }

    #[test]
    fn retained_slots_of_departed_members_are_kept_except_our_own() {
        let members = cluster();
        let retain = set(&["old_member", "pg_1"]);
        let input = SlotPlanInput {
            retain_slots: &retain,
            ..plan("pg-1", SlotRole::Leader, &members, SlotRetention::AllMembers)
        };
        check(Input::Plan(input), r#"{"far", "old_member", "pg_2", "pg_3"} conflicts={}"#);
    }

    #[test]
    fn the_head_of_a_replicatefrom_chain_streams_from_the_leader() {
        let members = cluster();
        assert_eq!(head_of_chain("pg-3", &members), "pg-2", "pg-3 cascades from pg-2");
        assert_eq!(head_of_chain("pg-2", &members), "pg-2");
        assert_eq!(head_of_chain("far", &members), "far", "its replicatefrom names a member that is gone");
        let looped = vec![member("a", false, Some("b")), member("b", false, Some("a"))];
        assert_eq!(head_of_chain("a", &looped), "a", "a loop ends where it closes");
    }

    #[test]
    fn members_sharing_a_slot_name_are_reported() {
        let members = vec![member("pg-1", false, None), member("pg-2", false, None), member("pg.2", false, None)];
        let input = plan("pg-1", SlotRole::Leader, &members, SlotRetention::AllMembers);
        check(Input::Plan(input), r#"{"pg_2"} conflicts={"pg_2": ["pg-2", "pg.2"]}"#);
    }
}

#[cfg(test)]
mod leader_tests {
    use serde_json::json;

    use super::*;

    fn physical(name: &str, active: bool) -> ExistingSlot {
        ExistingSlot {
            name: name.to_owned(),
            kind: SlotKind::Physical,
            active,
            restart_lsn: Some(1),
            confirmed_flush_lsn: None,
            has_xmin: false,
            catalog_xmin: None,
        }
    }

    fn logical(name: &str, database: &str, plugin: &str, active: bool) -> ExistingSlot {
        let kind = SlotKind::Logical { database: database.to_owned(), plugin: plugin.to_owned() };
        ExistingSlot {
            name: name.to_owned(),
            kind,
            active,
            restart_lsn: Some(1),
            confirmed_flush_lsn: Some(1),
            has_xmin: false,
            catalog_xmin: None,
        }
    }

    fn permanent(entries: serde_json::Value) -> Vec<PermanentSlot> {
        let map = entries.as_object().cloned().unwrap_or_default();
        map.iter().map(|(name, value)| permanent_slot(name, value).unwrap_or_else(|e| panic!("{name}: {e}"))).collect()
    }

    fn ignore(entries: serde_json::Value) -> Vec<IgnoreMatcher> {
        let list = entries.as_array().cloned().unwrap_or_default();
        list.iter().map(|value| IgnoreMatcher::from_value(value).unwrap_or_else(|e| panic!("{e}"))).collect()
    }

    /// (permanent, ignore, paused, existing) → the plan in words.
    #[track_caller]
    fn check(perm: serde_json::Value, ign: serde_json::Value, paused: bool, existing: &[ExistingSlot], expected: &str) {
        let members: BTreeSet<String> = ["node2".to_owned(), "node3".to_owned()].into();
        let (permanent, ignore) = (permanent(perm), ignore(ign));
        let wanted = LeaderSlots { own: "node1", members: &members, permanent: &permanent, ignore: &ignore, paused };
        let plan = plan_slots(&wanted, existing);
        let logical: Vec<&str> = plan.create_logical.iter().map(|slot| slot.name.as_str()).collect();
        let dropped: Vec<String> = plan
            .drop
            .iter()
            .map(|(slot, reason)| match reason {
                DropReason::Unknown => format!("{} unknown", slot.name),
                DropReason::Changed { wanted } => format!("{} changed to {wanted}", slot.name),
            })
            .collect();
        let kept: Vec<String> = plan.kept.iter().map(|(name, why)| format!("{name} {why}")).collect();
        let actual = format!(
            "physical={:?} logical={logical:?} drop={dropped:?} kept={kept:?} conflicts={:?}",
            plan.create_physical, plan.conflicts
        );
        assert_eq!(actual, expected);
    }

    #[test]
    fn member_and_permanent_slots_are_created_and_unknown_ones_dropped() {
        let perm =
            json!({"archiver": null, "cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"}, "node1": {}});
        check(
            perm,
            json!([]),
            false,
            &[physical("node2", true), physical("stale", false), logical("debezium", "app", "pgoutput", false)],
            r#"physical={"archiver", "node3"} logical=["cdc"] drop=["stale unknown", "debezium unknown"] kept=[] conflicts=[]"#,
        );
    }

    #[test]
    fn ignore_slots_keep_matching_slots_alone() {
        let existing = [
            logical("debezium", "app", "pgoutput", false),
            logical("other_db", "crm", "pgoutput", false),
            physical("barman", false),
        ];
        check(
            json!({}),
            json!([{"type": "logical", "database": "app"}, {"name": "barman"}]),
            false,
            &existing,
            r#"physical={"node2", "node3"} logical=[] drop=["other_db unknown"] kept=[] conflicts=[]"#,
        );
    }

    #[test]
    fn pause_and_activity_keep_unknown_slots() {
        check(
            json!({}),
            json!([]),
            true,
            &[physical("node2", false), physical("node3", false), physical("stale", false)],
            r#"physical={} logical=[] drop=[] kept=["stale maintenance mode"] conflicts=[]"#,
        );
        check(
            json!({}),
            json!([]),
            false,
            &[physical("node2", false), physical("node3", false), logical("busy", "app", "x", true)],
            r#"physical={} logical=[] drop=[] kept=["busy in use"] conflicts=[]"#,
        );
    }

    #[test]
    fn a_permanent_slot_of_another_kind_is_dropped_then_recreated() {
        let existing =
            [physical("node2", false), physical("node3", false), logical("cdc", "app", "test_decoding", false)];
        check(
            json!({"cdc": {"database": "app", "plugin": "pgoutput"}}),
            json!([]),
            false,
            &existing,
            r#"physical={} logical=[] drop=["cdc changed to logical (database app, plugin pgoutput)"] kept=[] conflicts=[]"#,
        );
    }

    #[test]
    fn a_logical_permanent_slot_named_like_a_member_slot_is_a_conflict() {
        check(
            json!({"node2": {"type": "logical", "database": "app", "plugin": "pgoutput"}}),
            json!([]),
            false,
            &[physical("node2", false), physical("node3", false)],
            r#"physical={} logical=[] drop=[] kept=[] conflicts=["node2"]"#,
        );
    }

    #[test]
    fn permanent_slot_definitions_are_read_as_patroni_reads_them() {
        let read = |name: &str, value: serde_json::Value| match permanent_slot(name, &value) {
            Ok(slot) => slot.kind.to_string(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(read("a", json!(null)), "physical");
        assert_eq!(read("a", json!({"type": "physical"})), "physical");
        assert_eq!(read("a", json!({"database": "db", "plugin": "p"})), "logical (database db, plugin p)");
        assert_eq!(
            read("a", json!({"type": "logical", "database": "db"})),
            "error: a logical slot needs database and plugin"
        );
        assert_eq!(read("a", json!({"type": "other"})), r#"error: type: expected physical or logical, got "other""#);
        assert_eq!(
            read("a", json!("physical")),
            r#"error: expected a map (type, database, plugin) or nothing, got "physical""#
        );
        assert!(read("Bad-Name", json!(null)).starts_with("error: invalid slot name \"Bad-Name\""));
        assert!(IgnoreMatcher::from_value(&json!({"nmae": "x"})).is_err());
    }
}
