//! The cluster as the CLI sees it: `GET /cluster` from the first node that answers, the members with their REST
//! API addresses, and patronictl's member selection (`--role`, member names, the optional cluster name).
//!
//! Selection is PURE over the fetched JSON; [`fetch`] is the only I/O here.

use reqwest::Url;
use serde_json::Value;

use crate::cli::client::ApiClient;

/// patronictl's `-r/--role` filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleFilter {
    /// The member holding the leader key.
    Leader,
    /// The leader, when it runs as a primary (not a standby leader).
    Primary,
    /// The leader of a standby cluster.
    StandbyLeader,
    /// Every member but the leader.
    Replica,
    /// Every member but the leader.
    Standby,
    /// Every member.
    Any,
}

/// One member of `GET /cluster`.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Member name.
    pub name: String,
    /// `leader`, `standby_leader`, `sync_standby`, `quorum_standby` or `replica`.
    pub role: String,
    /// State (`running`, `streaming`, …).
    pub state: String,
    /// `http://host:port/patroni`.
    pub api_url: String,
    /// Tagged `nofailover` (or `failover_priority: 0`).
    pub nofailover: bool,
    /// A restart is pending.
    pub pending_restart: bool,
    /// A restart is scheduled.
    pub scheduled_restart: bool,
    /// PostgreSQL host, when published.
    pub host: Option<String>,
    /// PostgreSQL port, when published.
    pub port: Option<u16>,
}

/// A fetched `GET /cluster`.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The node that answered.
    pub node: Url,
    /// The document as received.
    pub json: Value,
    /// Cluster name.
    pub scope: String,
    /// Members, sorted by name.
    pub members: Vec<Member>,
}

/// `GET /cluster` from the first node that answers.
pub async fn fetch(client: &ApiClient) -> anyhow::Result<Cluster> {
    let reply = client.get_any("/cluster").await?;
    let json: Value = reply.json()?;
    Ok(Cluster::from_json(reply.node, json))
}

impl Cluster {
    /// Reads the members out of a `GET /cluster` document.
    pub fn from_json(node: Url, json: Value) -> Cluster {
        let text = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let members = json
            .get("members")
            .and_then(Value::as_array)
            .map(|members| {
                members
                    .iter()
                    .map(|member| Member {
                        name: text(member, "name"),
                        role: text(member, "role"),
                        state: text(member, "state"),
                        api_url: text(member, "api_url"),
                        nofailover: nofailover(member.get("tags")),
                        pending_restart: member.get("pending_restart").is_some_and(truthy),
                        scheduled_restart: member.get("scheduled_restart").is_some_and(truthy),
                        host: member.get("host").and_then(Value::as_str).map(String::from),
                        port: member.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let scope = text(&json, "scope");
        Cluster { node, json, scope, members }
    }

    /// The member holding the leader key.
    pub fn leader(&self) -> Option<&Member> {
        self.members.iter().find(|member| member.role.ends_with("leader"))
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|member| member.name == name)
    }

    /// Maintenance mode is on.
    pub fn paused(&self) -> bool {
        self.json.get("pause").is_some_and(truthy)
    }

    /// Fails when the operator named another cluster than the one the nodes serve.
    pub fn check_name(&self, name: Option<&str>) -> anyhow::Result<()> {
        match name {
            Some(name) if name != self.scope => {
                anyhow::bail!("the nodes serve cluster {:?}, not {name:?}", self.scope)
            }
            _ => Ok(()),
        }
    }

    /// Drops a leading cluster name from `restart demo node1`-style arguments (patronictl's first argument), when it
    /// is the scope and no member has that name.
    pub fn strip_cluster_name(&self, names: &[String]) -> Vec<String> {
        match names.split_first() {
            Some((first, rest)) if *first == self.scope && self.member(first).is_none() => rest.to_vec(),
            _ => names.to_vec(),
        }
    }

    /// patronictl's `get_all_members` for `role`.
    pub fn with_role(&self, role: RoleFilter) -> Vec<&Member> {
        let is_leader = |member: &&Member| member.role.ends_with("leader");
        match role {
            RoleFilter::Leader => self.members.iter().filter(is_leader).collect(),
            RoleFilter::Primary => self.members.iter().filter(|m| m.role == "leader").collect(),
            RoleFilter::StandbyLeader => self.members.iter().filter(|m| m.role == "standby_leader").collect(),
            RoleFilter::Replica | RoleFilter::Standby => self.members.iter().filter(|m| !is_leader(m)).collect(),
            RoleFilter::Any => self.members.iter().collect(),
        }
    }

    /// The members named in `names` (all of `role` when none is named); fails naming the first unknown one.
    pub fn select(&self, names: &[String], role: RoleFilter) -> anyhow::Result<Vec<&Member>> {
        let candidates = self.with_role(role);
        if names.is_empty() {
            return Ok(candidates);
        }
        let mut res = Vec::new();
        for name in names {
            match candidates.iter().find(|member| member.name == *name) {
                Some(member) if !res.iter().any(|m: &&Member| m.name == member.name) => res.push(*member),
                Some(_) => {}
                None if self.member(name).is_some() => {
                    anyhow::bail!("member {name} is not a {} of cluster {}", role_word(role), self.scope)
                }
                None => anyhow::bail!("no member named {name} in cluster {}", self.scope),
            }
        }
        Ok(res)
    }

    /// REST API base URLs of every member, the leader first (patronictl's `get_all_members_leader_first`), then
    /// the node that answered `GET /cluster`.
    pub fn bases_leader_first(&self, client: &ApiClient) -> Vec<Url> {
        let leader = self.leader().into_iter();
        let others = self.members.iter().filter(|member| !member.role.ends_with("leader"));
        let mut res: Vec<Url> = Vec::new();
        for member in leader.chain(others) {
            if let Ok(base) = client.member_base(&member.api_url) {
                if !res.contains(&base) {
                    res.push(base);
                }
            }
        }
        if !res.contains(&self.node) {
            res.push(self.node.clone());
        }
        res
    }
}

/// The timing a dynamic configuration document runs with (raftgres' defaults for absent keys, Patroni's
/// adjustment rule applied).
pub fn timing(config: &Value) -> crate::config::Timing {
    crate::config::DynamicConfig::parse_lenient(config.clone()).0.timing().0
}

/// Python's truthiness of a JSON value.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64().is_some_and(|n| n != 0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

fn nofailover(tags: Option<&Value>) -> bool {
    let Some(tags) = tags else { return false };
    let flag = tags.get("nofailover").is_some_and(truthy);
    let priority_zero = tags.get("failover_priority").and_then(Value::as_i64).is_some_and(|p| p <= 0);
    flag || priority_zero
}

fn role_word(role: RoleFilter) -> &'static str {
    match role {
        RoleFilter::Leader => "leader",
        RoleFilter::Primary => "primary",
        RoleFilter::StandbyLeader => "standby leader",
        RoleFilter::Replica | RoleFilter::Standby => "replica",
        RoleFilter::Any => "member",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cluster() -> Cluster {
        let node = crate::cli::client::parse_base("127.0.0.1:8008", false).expect("parses");
        Cluster::from_json(
            node,
            json!({"scope": "demo", "members": [
                {"name": "node1", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:8008/patroni"},
                {"name": "node2", "role": "replica", "state": "streaming", "api_url": "http://127.0.0.1:8009/patroni",
                 "pending_restart": true},
                {"name": "node3", "role": "sync_standby", "state": "streaming",
                 "api_url": "http://127.0.0.1:8010/patroni", "tags": {"nofailover": true}},
            ]}),
        )
    }

    #[track_caller]
    fn check_select(names: &[&str], role: RoleFilter, expected: Result<&[&str], &str>) {
        let cluster = cluster();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        match (cluster.select(&names, role), expected) {
            (Ok(got), Ok(expected)) => assert_eq!(got.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), expected),
            (Err(e), Err(expected)) => assert_eq!(e.to_string(), expected),
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn members_are_selected_by_name_and_role() {
        check_select(&[], RoleFilter::Any, Ok(&["node1", "node2", "node3"]));
        check_select(&[], RoleFilter::Replica, Ok(&["node2", "node3"]));
        check_select(&[], RoleFilter::Leader, Ok(&["node1"]));
        check_select(&["node3", "node2", "node3"], RoleFilter::Any, Ok(&["node3", "node2"]));
        check_select(&["node1"], RoleFilter::Replica, Err("member node1 is not a replica of cluster demo"));
        check_select(&["node9"], RoleFilter::Any, Err("no member named node9 in cluster demo"));
    }

    #[test]
    fn a_leading_cluster_name_is_dropped() {
        let cluster = cluster();
        let args = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(cluster.strip_cluster_name(&args(&["demo", "node2"])), args(&["node2"]));
        assert_eq!(cluster.strip_cluster_name(&args(&["node2"])), args(&["node2"]));
        assert!(cluster.check_name(Some("other")).is_err());
        assert!(cluster.check_name(Some("demo")).is_ok());
    }

    #[test]
    fn flags_come_from_the_member_documents() {
        let cluster = cluster();
        assert_eq!(cluster.leader().map(|m| m.name.as_str()), Some("node1"));
        assert!(cluster.member("node2").is_some_and(|m| m.pending_restart));
        assert!(cluster.member("node3").is_some_and(|m| m.nofailover));
        let bases: Vec<String> = cluster.bases_leader_first(&test_client()).iter().map(|u| u.to_string()).collect();
        assert_eq!(bases, ["http://127.0.0.1:8008/", "http://127.0.0.1:8009/", "http://127.0.0.1:8010/"]);
    }

    fn test_client() -> ApiClient {
        ApiClient::new(&crate::cli::client::Target::default()).expect("a client without a config")
    }
}
