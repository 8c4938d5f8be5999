//! PURE: `synchronous_mode: quorum` planning on the primary.
//!
//! Two places describe quorum commit, as in Patroni: `synchronous_standby_names = 'ANY n (S)'` says which
//! standbys acknowledge a commit (the primary plus any `n` of `S`), and the `sync` key
//! (`{leader, sync_standby: V, quorum: q}`) says what a failover candidate must see: itself and `q` other
//! members of `V ∪ {leader}` that are not ahead of it (an outsider needs `q + 1` such votes).
//! Zero loss needs every such promotion set to share a member with every acknowledging set, at every instant.
//! The steady state is `S = V = active`, `n = min(synchronous_node_count, |active|)`, `q = |active| - n`.
//!
//! Failure scenario the planner prevents: (1) with `ANY 1 (b,c)` and the key `{V: {b,c}, q: 1}`, c dies;
//! (2) the primary narrows the key to `{V: {b}, q: 0}` before the GUC; (3) a commit is acknowledged by c
//! alone in between; (4) the primary dies and b promotes with no vote, losing that commit.
//! So every state written is checked against the GUC before and after the change ([`safe`]), a key only
//! weakens when the new one is at least as strong as the old ([`at_least_as_strong`]) or when the
//! members it relies on are confirmed to hold every commit ([`covered`]).
//! It must not do I/O; `ha::execute` carries the plan out in order.

use std::collections::BTreeSet;

use super::SyncPlan;
use super::SyncPolicy;
use super::STRICT_PLACEHOLDER;
use crate::config::SynchronousMode;
use crate::dcs::view::ClusterView;
use crate::dcs::view::SyncData;
use crate::postgres::sync::parse_synchronous_standby_names;
use crate::postgres::sync::render_synchronous_standby_names;
use crate::postgres::sync::Strictness;
use crate::postgres::sync::SyncMode;
use crate::postgres::sync::SyncRequest;
use crate::status::ReplicationRow;

/// The failover half: `sync_standby` (voters) and `quorum` of the `sync` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumKey {
    /// Members named in the key (the leader excluded).
    pub voters: BTreeSet<String>,
    /// Votes a voter needs from other members of `voters ∪ {leader}`.
    pub quorum: u32,
}

impl QuorumKey {
    /// `{V: ∅, q: 0}`: only the leader itself may promote.
    pub fn leader_only() -> QuorumKey {
        QuorumKey { voters: BTreeSet::new(), quorum: 0 }
    }

    /// No promotion set can form among the voters: only the leader (or a member it votes for) may promote.
    pub fn is_blocked(&self) -> bool {
        self.quorum as usize + 1 > self.voters.len()
    }

    fn to_data(&self, me: &str) -> SyncData {
        let joined = self.voters.iter().cloned().collect::<Vec<_>>().join(",");
        SyncData {
            leader: Some(me.to_string()),
            sync_standby: (!joined.is_empty()).then_some(joined),
            quorum: self.quorum,
        }
    }
}

/// The commit half: which standbys may acknowledge a commit under `synchronous_standby_names`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRule {
    /// Standbys listed (the strict placeholder, which no member can use, left out).
    pub standbys: BTreeSet<String>,
    /// How many of them must confirm (0: the primary alone acknowledges).
    pub num: u32,
    /// `*` or an unreadable value: any standby may acknowledge.
    pub any_standby: bool,
}

impl AckRule {
    /// Reads PostgreSQL's current value; `FIRST n` is treated as `ANY n`, which allows more acknowledging sets.
    pub fn from_guc(guc: &str) -> AckRule {
        match parse_synchronous_standby_names(guc) {
            Ok(None) => AckRule { standbys: BTreeSet::new(), num: 0, any_standby: false },
            Ok(Some(parsed)) => {
                let standbys: BTreeSet<String> =
                    parsed.names.into_iter().filter(|name| name != STRICT_PLACEHOLDER).collect();
                AckRule { any_standby: parsed.has_star, standbys, num: parsed.num }
            }
            Err(_) => AckRule { standbys: BTreeSet::new(), num: 1, any_standby: true },
        }
    }
}

/// PURE: can a commit acknowledged under `ack` be missing from every member of some promotion set of `key`?
/// `false` means safe: every set of `q + 1` voters shares a member with every acknowledging set.
pub fn safe(key: &QuorumKey, ack: &AckRule) -> bool {
    if key.is_blocked() {
        return true;
    }
    if ack.any_standby {
        return false;
    }
    let n_ack = ack.num as usize;
    if ack.standbys.len() < n_ack {
        // Not enough standbys can ever confirm (the strict placeholder): no commit is acknowledged.
        return true;
    }
    let outside = key.voters.difference(&ack.standbys).count();
    // The promotion set avoids the acknowledging standbys as far as it can...
    let forced_overlap = (key.quorum as usize + 1).saturating_sub(outside);
    // ...and is safe when too few standbys remain outside it to acknowledge a commit.
    ack.standbys.len().saturating_sub(forced_overlap) < n_ack
}

/// PURE: every promotion set of `new` contains a promotion set of `old`, so `new` protects whatever `old` did.
pub fn at_least_as_strong(new: &QuorumKey, old: &QuorumKey) -> bool {
    if new.is_blocked() {
        return true;
    }
    if old.is_blocked() {
        return false;
    }
    let added = new.voters.difference(&old.voters).count() as i64;
    i64::from(new.quorum) - added >= i64::from(old.quorum)
}

/// PURE: every promotion set of `key` contains a member known to hold every commit so far (`confirmed`).
pub fn covered(key: &QuorumKey, confirmed: &BTreeSet<String>) -> bool {
    key.is_blocked() || key.voters.difference(confirmed).count() < key.quorum as usize + 1
}

/// The state to reach: the GUC text (`None` clears it), its rule, and the key.
struct Target {
    guc: Option<String>,
    ack: AckRule,
    key: QuorumKey,
}

fn target(active: &BTreeSet<String>, current: Option<&QuorumKey>, policy: &SyncPolicy) -> Target {
    if active.is_empty() {
        if policy.strict {
            // Commits wait for a standby nobody can be; the key keeps the voters that hold every commit.
            return Target {
                guc: super::strict_placeholder_guc(SynchronousMode::Quorum),
                ack: AckRule { standbys: BTreeSet::new(), num: 1, any_standby: false },
                key: current.cloned().unwrap_or_else(QuorumKey::leader_only),
            };
        }
        return Target {
            guc: None,
            ack: AckRule { standbys: BTreeSet::new(), num: 0, any_standby: false },
            key: QuorumKey::leader_only(),
        };
    }
    let num = policy.node_count.max(1).min(u32::try_from(active.len()).unwrap_or(u32::MAX));
    let request =
        SyncRequest { mode: SyncMode::Quorum, standbys: active, num: Some(num), strictness: Strictness::Relaxed };
    let quorum = u32::try_from(active.len()).unwrap_or(u32::MAX) - num;
    Target {
        guc: render_synchronous_standby_names(&request),
        ack: AckRule { standbys: active.clone(), num, any_standby: false },
        key: QuorumKey { voters: active.clone(), quorum },
    }
}

/// Keys worth writing on the way to `wanted`, best first: the target, then `voters` with a growing quorum.
/// Blocked keys with voters are left out: they protect no more than [`QuorumKey::leader_only`].
fn options(wanted: &QuorumKey, voters: &BTreeSet<String>) -> Vec<QuorumKey> {
    let mut res = vec![wanted.clone()];
    let n_voters = u32::try_from(voters.len()).unwrap_or(u32::MAX);
    res.extend((0..n_voters).map(|quorum| QuorumKey { voters: voters.clone(), quorum }));
    res.retain(|key| !key.is_blocked() || key.voters.is_empty());
    res
}

/// Standbys streaming at least up to the primary's flush position at the probe, hence holding every commit
/// acknowledged before it.
fn confirmed(rows: &[ReplicationRow], primary_lsn: u64) -> BTreeSet<String> {
    rows.iter()
        .filter(|row| row.state == "streaming" && primary_lsn > 0)
        .filter(|row| row.flush_lsn.is_some_and(|lsn| lsn.0 >= primary_lsn))
        .map(|row| row.application_name.clone())
        .collect()
}

/// Plans one cycle of quorum commit for the primary `me`; `active` are the eligible standbys.
pub fn plan(
    view: &ClusterView,
    me: &str,
    active: &BTreeSet<String>,
    rows: &[ReplicationRow],
    primary_lsn: u64,
    current_guc: &str,
    policy: &SyncPolicy,
) -> SyncPlan {
    let owned: Option<QuorumKey> = view
        .sync
        .as_ref()
        .map(|s| &s.value)
        .filter(|key| key.leader.as_deref() == Some(me))
        .map(|key| QuorumKey { voters: key.members().into_iter().collect(), quorum: key.quorum });
    // Without a key of ours, every acknowledged commit is on this node (a fresh promotion holds every
    // commit, or synchronous replication was off): only we may promote until the key says otherwise.
    let key = owned.clone().unwrap_or_else(QuorumKey::leader_only);
    let ack = AckRule::from_guc(current_guc);
    let wanted = target(active, owned.as_ref(), policy);
    let guc_changes = wanted.guc.as_deref().unwrap_or("") != current_guc;
    let mut plan = SyncPlan { key_before: None, guc: None, key_after: None };
    if !guc_changes {
        let conf = confirmed(rows, primary_lsn);
        let next = options(&wanted.key, &wanted.key.voters).into_iter().find(|candidate| {
            safe(candidate, &ack) && (at_least_as_strong(candidate, &key) || covered(candidate, &conf))
        });
        let next = next.filter(|next| *next != key || owned.is_none()).or_else(|| owned.is_none().then(|| key.clone()));
        plan.key_after = next.map(|next| next.to_data(me));
        return plan;
    }
    // Before the GUC changes, the key must hold for the old and the new rule alike.
    let fits = |candidate: &QuorumKey| {
        at_least_as_strong(candidate, &key) && safe(candidate, &ack) && safe(candidate, &wanted.ack)
    };
    let union: BTreeSet<String> = key.voters.union(&wanted.key.voters).cloned().collect();
    let mut before_options = vec![key.clone()];
    before_options.extend(options(&wanted.key, &union));
    before_options.push(QuorumKey::leader_only());
    let before = before_options.into_iter().find(|candidate| fits(candidate)).unwrap_or_else(QuorumKey::leader_only);
    if before != key || owned.is_none() {
        plan.key_before = Some(Some(before.to_data(me)));
    }
    plan.guc = Some(wanted.guc.clone());
    // After it, the key may narrow only as far as the one written before still allows.
    plan.key_after = options(&wanted.key, &wanted.key.voters)
        .into_iter()
        .find(|candidate| at_least_as_strong(candidate, &before) && safe(candidate, &wanted.ack))
        .filter(|after| *after != before)
        .map(|after| after.to_data(me));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SynchronousMode;
    use crate::dcs::view::MemberData;
    use crate::dcs::view::Versioned;
    use crate::postgres::types::Lsn;

    fn names(list: &str) -> BTreeSet<String> {
        list.split(',').filter(|s| !s.is_empty()).map(String::from).collect()
    }

    fn key(voters: &str, quorum: u32) -> QuorumKey {
        QuorumKey { voters: names(voters), quorum }
    }

    fn data(leader: &str, voters: &str, quorum: u32) -> SyncData {
        SyncData { leader: Some(leader.into()), sync_standby: (!voters.is_empty()).then(|| voters.to_string()), quorum }
    }

    fn row(name: &str, flush: u64) -> ReplicationRow {
        ReplicationRow {
            application_name: name.into(),
            state: "streaming".into(),
            sync_state: "quorum".into(),
            flush_lsn: Some(Lsn(flush)),
            ..ReplicationRow::default()
        }
    }

    fn view(sync: Option<SyncData>, nosync: &[&str]) -> ClusterView {
        let mut v = ClusterView::default();
        for name in ["pg1", "pg2", "pg3"] {
            let mut member = MemberData { state: "running".into(), ..MemberData::default() };
            if nosync.contains(&name) {
                member.tags.insert("nosync".into(), true.into());
            }
            v.members.insert(name.into(), member);
        }
        v.sync = sync.map(|value| Versioned { value, mod_rev: 7 });
        v
    }

    fn policy(node_count: u32, strict: bool) -> SyncPolicy {
        SyncPolicy { mode: SynchronousMode::Quorum, strict, node_count, maximum_lag_on_syncnode: -1 }
    }

    /// One cycle of the primary pg1 whose flush position is 1000.
    #[track_caller]
    fn check(v: ClusterView, rows: Vec<ReplicationRow>, guc: &str, policy: SyncPolicy, want: SyncPlan) {
        assert_eq!(super::super::plan(&v, "pg1", &rows, 1000, guc, &policy), want);
    }

    fn steps(before: Option<SyncData>, guc: Option<Option<&str>>, after: Option<SyncData>) -> SyncPlan {
        SyncPlan { key_before: before.map(Some), guc: guc.map(|g| g.map(String::from)), key_after: after }
    }

    #[test]
    fn enabling_lists_every_standby_while_only_the_leader_may_promote() {
        let rows = vec![row("pg2", 1000), row("pg3", 1000)];
        check(
            view(None, &[]),
            rows,
            "",
            policy(1, false),
            steps(Some(data("pg1", "", 0)), Some(Some("ANY 1 (pg2,pg3)")), None),
        );
    }

    #[test]
    fn confirmed_standbys_become_voters_next_cycle() {
        let v = view(Some(data("pg1", "", 0)), &[]);
        let rows = vec![row("pg2", 1000), row("pg3", 1000)];
        check(v, rows, "ANY 1 (pg2,pg3)", policy(1, false), steps(None, None, Some(data("pg1", "pg2,pg3", 1))));
    }

    #[test]
    fn one_confirmed_standby_is_enough_when_every_promotion_set_contains_it() {
        let v = view(Some(data("pg1", "", 0)), &[]);
        let rows = vec![row("pg2", 1000), row("pg3", 900)];
        check(v, rows, "ANY 1 (pg2,pg3)", policy(1, false), steps(None, None, Some(data("pg1", "pg2,pg3", 1))));
    }

    #[test]
    fn unconfirmed_standbys_do_not_vote() {
        let v = view(Some(data("pg1", "", 0)), &[]);
        let rows = vec![row("pg2", 900), row("pg3", 900)];
        check(v, rows, "ANY 1 (pg2,pg3)", policy(1, false), steps(None, None, None));
    }

    #[test]
    fn steady_state_does_nothing() {
        let v = view(Some(data("pg1", "pg2,pg3", 1)), &[]);
        let rows = vec![row("pg2", 1000), row("pg3", 1000)];
        check(v, rows, "ANY 1 (pg2,pg3)", policy(1, false), steps(None, None, None));
    }

    #[test]
    fn departed_standby_leaves_the_guc_first_and_the_key_once_the_rest_caught_up() {
        let v = view(Some(data("pg1", "pg2,pg3", 1)), &[]);
        check(
            v,
            vec![row("pg2", 1000)],
            "ANY 1 (pg2,pg3)",
            policy(1, false),
            steps(None, Some(Some("ANY 1 (pg2)")), None),
        );
        let v = view(Some(data("pg1", "pg2,pg3", 1)), &[]);
        check(v, vec![row("pg2", 990)], "ANY 1 (pg2)", policy(1, false), steps(None, None, None));
        let v = view(Some(data("pg1", "pg2,pg3", 1)), &[]);
        check(
            v,
            vec![row("pg2", 1000)],
            "ANY 1 (pg2)",
            policy(1, false),
            steps(None, None, Some(data("pg1", "pg2", 0))),
        );
    }

    #[test]
    fn returning_standby_joins_the_key_before_the_guc() {
        let v = view(Some(data("pg1", "pg2", 0)), &[]);
        let rows = vec![row("pg2", 1000), row("pg3", 500)];
        let want = steps(Some(data("pg1", "pg2,pg3", 1)), Some(Some("ANY 1 (pg2,pg3)")), None);
        check(v, rows, "ANY 1 (pg2)", policy(1, false), want);
    }

    #[test]
    fn raising_the_node_count_changes_the_guc_first() {
        let v = view(Some(data("pg1", "pg2,pg3", 1)), &[]);
        let rows = vec![row("pg2", 1000), row("pg3", 1000)];
        check(v, rows.clone(), "ANY 1 (pg2,pg3)", policy(2, false), steps(None, Some(Some("ANY 2 (pg2,pg3)")), None));
        let v = view(Some(data("pg1", "pg2,pg3", 1)), &[]);
        check(v, rows, "ANY 2 (pg2,pg3)", policy(2, false), steps(None, None, Some(data("pg1", "pg2,pg3", 0))));
    }

    #[test]
    fn lowering_the_node_count_raises_the_quorum_first() {
        let v = view(Some(data("pg1", "pg2,pg3", 0)), &[]);
        let rows = vec![row("pg2", 1000), row("pg3", 1000)];
        let want = steps(Some(data("pg1", "pg2,pg3", 1)), Some(Some("ANY 1 (pg2,pg3)")), None);
        check(v, rows, "ANY 2 (pg2,pg3)", policy(1, false), want);
    }

    #[test]
    fn relaxed_mode_without_standbys_runs_standalone_after_blocking_failover() {
        let v = view(Some(data("pg1", "pg2,pg3", 1)), &[]);
        check(v, vec![], "ANY 1 (pg2,pg3)", policy(1, false), steps(Some(data("pg1", "", 0)), Some(None), None));
    }

    #[test]
    fn strict_mode_without_standbys_blocks_commits_and_keeps_the_voters() {
        let v = view(Some(data("pg1", "pg2", 0)), &[]);
        let guc = format!("ANY 1 ({STRICT_PLACEHOLDER})");
        check(v, vec![], "ANY 1 (pg2)", policy(1, true), steps(None, Some(Some(&guc)), None));
    }

    #[test]
    fn new_primary_takes_the_key_over_with_only_itself_as_promotable() {
        let v = view(Some(data("pg0", "pg1,pg2", 1)), &[]);
        let rows = vec![row("pg2", 1000), row("pg3", 1000)];
        check(v, rows, "*", policy(1, true), steps(Some(data("pg1", "", 0)), Some(Some("ANY 1 (pg2,pg3)")), None));
    }

    #[test]
    fn nosync_member_is_never_listed() {
        let rows = vec![row("pg2", 1000), row("pg3", 1000)];
        let want = steps(Some(data("pg1", "", 0)), Some(Some("ANY 1 (pg2)")), None);
        check(view(None, &["pg3"]), rows, "", policy(1, false), want);
    }

    fn subsets(of: &BTreeSet<String>, size: usize) -> Vec<BTreeSet<String>> {
        let items: Vec<&String> = of.iter().collect();
        (0u32..(1 << items.len()))
            .filter(|mask| mask.count_ones() as usize == size)
            .map(|mask| {
                items.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, n)| (*n).clone()).collect()
            })
            .collect()
    }

    fn every_name_set() -> Vec<BTreeSet<String>> {
        subsets(&names("a,b,c,d"), 0).into_iter().chain((1..=4).flat_map(|n| subsets(&names("a,b,c,d"), n))).collect()
    }

    /// `safe` against brute force: no promotion set of the key is disjoint from an acknowledging set.
    #[test]
    fn safe_matches_enumeration() {
        for voters in every_name_set() {
            for quorum in 0..=voters.len() as u32 {
                let k = QuorumKey { voters: voters.clone(), quorum };
                let promotion_sets = subsets(&voters, quorum as usize + 1);
                for standbys in every_name_set() {
                    for num in 0..=standbys.len() as u32 + 1 {
                        let ack = AckRule { standbys: standbys.clone(), num, any_standby: false };
                        let ack_sets = subsets(&standbys, num as usize);
                        let disjoint =
                            promotion_sets.iter().any(|p| ack_sets.iter().any(|q| p.intersection(q).next().is_none()));
                        assert_eq!(safe(&k, &ack), !disjoint, "{k:?} {ack:?}");
                    }
                }
            }
        }
    }

    /// `at_least_as_strong` against brute force: every new promotion set contains an old one.
    #[test]
    fn strength_matches_enumeration() {
        for old_voters in every_name_set() {
            for old_quorum in 0..=old_voters.len() as u32 {
                let old = QuorumKey { voters: old_voters.clone(), quorum: old_quorum };
                let old_sets = subsets(&old_voters, old_quorum as usize + 1);
                for new_voters in every_name_set() {
                    for new_quorum in 0..=new_voters.len() as u32 {
                        let new = QuorumKey { voters: new_voters.clone(), quorum: new_quorum };
                        let expected = subsets(&new_voters, new_quorum as usize + 1)
                            .iter()
                            .all(|p| old_sets.iter().any(|o| o.is_subset(p)));
                        assert_eq!(at_least_as_strong(&new, &old), expected, "{new:?} over {old:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn covered_needs_a_confirmed_member_in_every_promotion_set() {
        assert!(covered(&key("b,c", 1), &names("b")));
        assert!(!covered(&key("b,c", 0), &names("b")));
        assert!(covered(&key("b,c", 0), &names("b,c")));
        assert!(covered(&key("b", 1), &names("")));
        assert!(!covered(&key("b,c,d", 1), &names("b")));
    }

    #[test]
    fn unreadable_or_star_guc_lets_any_standby_acknowledge() {
        assert!(AckRule::from_guc("*").any_standby);
        assert!(AckRule::from_guc("ANY 1 (").any_standby);
        assert!(!safe(&key("b", 0), &AckRule::from_guc("*")));
        assert!(safe(&key("", 0), &AckRule::from_guc("*")));
        let strict = AckRule::from_guc(&format!("ANY 1 ({STRICT_PLACEHOLDER})"));
        assert!(strict.standbys.is_empty() && safe(&key("b", 0), &strict));
    }
}
