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

/// The statements needed to go from the existing slots to the desired ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotDiff {
    /// Slots to create (`pg_create_physical_replication_slot`).
    pub to_create: BTreeSet<String>,
    /// Slots to drop (`pg_drop_replication_slot`).
    pub to_drop: BTreeSet<String>,
}

/// Diffs the desired slots against the physical slots that exist.
///
/// The caller adds permanent slots to `desired` and removes slots matched by `ignore_slots` from `existing`
/// first; in pause mode it must not drop anything.
pub fn diff_slots(desired: &BTreeSet<String>, existing: &BTreeSet<String>) -> SlotDiff {
    SlotDiff {
        to_create: desired.difference(existing).cloned().collect(),
        to_drop: existing.difference(desired).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, nostream: bool, replicatefrom: Option<&str>) -> SlotMember {
        SlotMember { name: name.to_owned(), nostream, replicatefrom: replicatefrom.map(str::to_owned) }
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
        Diff(&'a [&'a str], &'a [&'a str]),
    }

    #[track_caller]
    fn check(input: Input<'_>, expected: &str) {
        let actual = match input {
            Input::Name(name) => slot_name(name),
            Input::Plan(plan) => {
                let res = desired_slots(&plan);
                format!("{:?} conflicts={:?}", res.slots, res.conflicts)
            }
            Input::Diff(desired, existing) => {
                let diff = diff_slots(&set(desired), &set(existing));
                format!("create={:?} drop={:?}", diff.to_create, diff.to_drop)
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
    fn members_sharing_a_slot_name_are_reported() {
        let members = vec![member("pg-1", false, None), member("pg-2", false, None), member("pg.2", false, None)];
        let input = plan("pg-1", SlotRole::Leader, &members, SlotRetention::AllMembers);
        check(Input::Plan(input), r#"{"pg_2"} conflicts={"pg_2": ["pg-2", "pg.2"]}"#);
    }

    #[test]
    fn diff_creates_missing_and_drops_unwanted() {
        check(Input::Diff(&["pg_2", "pg_3"], &["pg_3", "pg_9"]), r#"create={"pg_2"} drop={"pg_9"}"#);
        check(Input::Diff(&[], &[]), "create={} drop={}");
    }
}
