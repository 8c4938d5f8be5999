//! `raftgres members list|add|remove` (the Raft replica set, raftgres' own) over `GET /raft`, `POST /raft/members`
//! and `DELETE /raft/members/{id}`; and `raftgres remove <cluster>` over `DELETE /cluster`, with patronictl's
//! typed confirmations.
//!
//! Any node serves membership changes: it forwards them to the Raft leader. Any node serves the removal too: it
//! wipes the cluster's keys through Raft, and refuses while the leader runs PostgreSQL.

use anyhow::Context as _;
use reqwest::Method;
use serde_json::Value;

use crate::cli::client;
use crate::cli::client::ApiClient;
use crate::cli::cluster;
use crate::cli::prompt;
use crate::cli::switchover;
use crate::cli::table;
use crate::cli::table::Format;
use crate::cli::table::Output;

/// `members list`.
pub async fn list(client: &ApiClient, format: Format) -> anyhow::Result<()> {
    let raft = read_raft(client).await?;
    print!("{}", render_members(&raft, format));
    Ok(())
}

/// PURE: the membership table of a `GET /raft` document, with the Raft leader and term in the pretty form.
pub fn render_members(raft: &Value, format: Format) -> String {
    let leader_id = raft.get("leader").and_then(|l| l.get("id")).and_then(Value::as_u64);
    let columns: Vec<String> =
        ["Id", "Member", "Raft address", "API address", "Role", "Lag"].map(String::from).to_vec();
    let rows = raft
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|member| {
            let id = member.get("id").and_then(Value::as_u64);
            let role = match (id == leader_id, member.get("voter").and_then(Value::as_bool)) {
                (true, _) => "Leader",
                (false, Some(true)) => "Voter",
                (false, _) => "Learner",
            };
            let get = |key: &str| member.get(key).cloned().unwrap_or(Value::from(""));
            vec![get("id"), get("name"), get("raft_addr"), get("api_addr"), Value::from(role), get("lag")]
        })
        .collect();
    let mut res = table::render(&Output { columns, rows, right_aligned: &["Id", "Lag"], title: String::new() }, format);
    if format.is_human() {
        let term = raft.get("term").map(table::text).unwrap_or_default();
        let answered = raft.get("name").map(table::text).unwrap_or_default();
        res.push_str(&format!(" Raft term {term}, as seen by {answered}\n"));
    }
    res
}

/// A node to add to the Raft membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMember {
    /// Member name.
    pub name: String,
    /// Raft node id.
    pub id: u64,
    /// Its Raft listener, `host:port`.
    pub raft_addr: String,
    /// Its REST API, `host:port` (may be empty).
    pub api_addr: String,
}

/// `members add`.
pub async fn add(client: &ApiClient, member: &NewMember) -> anyhow::Result<()> {
    let NewMember { name, id, raft_addr, api_addr } = member;
    let body = serde_json::json!({"id": id, "name": name, "raft_addr": raft_addr, "api_addr": api_addr});
    let reply = client.first_answer(client.nodes(), Method::POST, "/raft/members", Some(&body)).await?;
    anyhow::ensure!(reply.is_success(), "add {name} to the raft membership: {}", reply.summary());
    println!("Success: {name} (raft id {id}) is a voter of the raft membership");
    Ok(())
}

/// `members remove`: by member name or raft id.
pub async fn remove(client: &ApiClient, member: &str, force: bool) -> anyhow::Result<()> {
    let raft = read_raft(client).await?;
    let members = raft.get("members").and_then(Value::as_array).cloned().unwrap_or_default();
    let found = members.iter().find(|m| {
        m.get("name").and_then(Value::as_str) == Some(member)
            || m.get("id").and_then(Value::as_u64).is_some_and(|id| id.to_string() == member)
    });
    let Some(found) = found else {
        anyhow::bail!("no member named {member} in the raft membership");
    };
    let id = found.get("id").and_then(Value::as_u64).unwrap_or_default();
    let name = found.get("name").map(table::text).unwrap_or_default();
    let question = format!("Are you sure you want to remove {name} (raft id {id}) from the raft membership?");
    if !force && !prompt::confirm(&question, "remove the member").await? {
        anyhow::bail!("Aborted member removal");
    }
    let path = format!("/raft/members/{id}");
    let reply = client.first_answer(client.nodes(), Method::DELETE, &path, None).await?;
    anyhow::ensure!(reply.is_success(), "remove {name} from the raft membership: {}", reply.summary());
    println!("Success: {name} (raft id {id}) is no longer in the raft membership");
    Ok(())
}

/// The membership as the Raft leader sees it. A node removed from the membership never learns so (the leader stops
/// replicating to it before the change commits) and keeps answering with the old list; a follower may lag a
/// change. So the first answer is only a pointer: its leader's own answer is read when it is not the leader, and
/// failing that every node is asked for one that leads.
async fn read_raft(client: &ApiClient) -> anyhow::Result<Value> {
    let first = raft_of(client.get_any("/raft").await.context("read the raft membership (GET /raft)")?)?;
    if answers_as_leader(&first) {
        return Ok(first);
    }
    if let Some(api) = leader_api_addr(&first) {
        if let Ok(base) = client.member_base(&api) {
            if let Some(raft) = read_leader(client, &base).await {
                return Ok(raft);
            }
        }
    }
    for node in client.nodes() {
        if let Some(raft) = read_leader(client, node).await {
            return Ok(raft);
        }
    }
    Ok(first)
}

/// `GET /raft` of `node` when it answers as the Raft leader.
async fn read_leader(client: &ApiClient, node: &reqwest::Url) -> Option<Value> {
    let reply = client.send(node, Method::GET, "/raft", None).await.ok()?;
    let raft = reply.is_success().then(|| reply.json::<Value>().ok()).flatten()?;
    answers_as_leader(&raft).then_some(raft)
}

fn raft_of(reply: client::Reply) -> anyhow::Result<Value> {
    let raft: Value = reply.json()?;
    anyhow::ensure!(raft.get("members").is_some(), "{} does not serve GET /raft", reply.node);
    Ok(raft)
}

/// PURE: a `GET /raft` document written by the Raft leader itself.
pub fn answers_as_leader(raft: &Value) -> bool {
    let leader = raft.get("leader").and_then(|l| l.get("id")).and_then(Value::as_u64);
    leader.is_some() && leader == raft.get("node_id").and_then(Value::as_u64)
}

/// PURE: the REST API address of the leader a `GET /raft` document names, from its member list.
pub fn leader_api_addr(raft: &Value) -> Option<String> {
    let leader = raft.get("leader")?.get("id")?.as_u64()?;
    let members = raft.get("members")?.as_array()?;
    let member = members.iter().find(|m| m.get("id").and_then(Value::as_u64) == Some(leader))?;
    member.get("api_addr")?.as_str().filter(|a| !a.is_empty()).map(str::to_owned)
}

/// `remove <cluster>`: patronictl's typed confirmations (unless `force`), then `DELETE /cluster`, which wipes every
/// key of the cluster from the raft store. Refused (by the node, and here before asking) while the leader runs.
pub async fn remove_cluster(client: &ApiClient, cluster_name: &str, force: bool) -> anyhow::Result<()> {
    let cluster = cluster::fetch(client).await?;
    cluster.check_name(Some(cluster_name))?;
    switchover::print_table(client).await;
    if let Some(leader) = cluster.leader().filter(|leader| leader.state == "running") {
        anyhow::bail!(
            "This cluster has a running leader ({}); pause the cluster (raftgres pause) and stop PostgreSQL on it \
             first",
            leader.name
        );
    }
    if !force {
        confirm_removal(&cluster, cluster_name).await?;
    }
    let body = serde_json::json!({ "cluster": cluster_name });
    let mut failures = Vec::new();
    let mut nodes = cluster.bases_leader_first(client);
    for node in client.nodes() {
        if !nodes.contains(node) {
            nodes.push(node.clone());
        }
    }
    for node in &nodes {
        match client.send(node, Method::DELETE, "/cluster", Some(&body)).await {
            Ok(reply) if reply.is_success() => {
                let removed: Value = reply.json()?;
                let n_keys = removed.get("removed").and_then(Value::as_array).map_or(0, Vec::len);
                println!("Success: removed cluster {cluster_name} from the raft store ({n_keys} keys)");
                return Ok(());
            }
            // A refusal is the cluster's answer; another node would say the same.
            Ok(reply) if reply.status < 500 => anyhow::bail!("{}", reply.text()),
            Ok(reply) => failures.push(format!("{}: {}", client::display_url(node), reply.summary())),
            Err(e) => failures.push(format!("{}: {e}", client::display_url(node))),
        }
    }
    anyhow::bail!("cannot remove cluster {cluster_name}; nothing was removed (tried {})", failures.join(", "))
}

/// patronictl's questions: the cluster name, "Yes I am aware", and the leader's name when there is a leader.
async fn confirm_removal(cluster: &cluster::Cluster, cluster_name: &str) -> anyhow::Result<()> {
    let action = "remove the cluster";
    if prompt::ask_required("Please confirm the cluster name to remove", action).await? != cluster_name {
        anyhow::bail!("Cluster names specified do not match");
    }
    let message = "Yes I am aware";
    let question =
        format!("You are about to remove all information in DCS for {cluster_name}, please type: \"{message}\"");
    if prompt::ask_required(&question, action).await? != message {
        anyhow::bail!("You did not exactly type \"{message}\"");
    }
    if let Some(leader) = cluster.leader() {
        let question = "This cluster currently is healthy. Please specify the leader name to continue";
        if prompt::ask_required(question, action).await? != leader.name {
            anyhow::bail!("You did not specify the current leader of the cluster");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_leaders_answer_is_recognised_and_found() {
        let member = |id: u64, api: &str| json!({"id": id, "name": format!("node{id}"), "api_addr": api});
        let members = json!([member(1, "127.0.0.1:8008"), member(2, "127.0.0.1:8009"), member(3, "")]);
        let from = |node: u64, leader: Value| json!({"node_id": node, "leader": leader, "members": members});
        assert!(answers_as_leader(&from(1, json!({"id": 1, "name": "node1"}))));
        assert!(!answers_as_leader(&from(2, json!({"id": 1, "name": "node1"}))));
        assert!(!answers_as_leader(&from(2, Value::Null)));
        assert_eq!(leader_api_addr(&from(2, json!({"id": 1}))).as_deref(), Some("127.0.0.1:8008"));
        assert_eq!(leader_api_addr(&from(2, json!({"id": 3}))), None, "no API address");
        assert_eq!(leader_api_addr(&from(2, json!({"id": 9}))), None, "not a member");
        assert_eq!(leader_api_addr(&from(2, Value::Null)), None, "no leader");
    }

    #[test]
    fn members_table_marks_the_raft_leader() {
        let raft = json!({"node_id": 2, "name": "node2", "term": 4, "leader": {"id": 1, "name": "node1"}, "members": [
            {"id": 1, "name": "node1", "raft_addr": "127.0.0.1:7000", "api_addr": "127.0.0.1:8008", "voter": true, "lag": 0},
            {"id": 2, "name": "node2", "raft_addr": "127.0.0.1:7001", "api_addr": "127.0.0.1:8009", "voter": true, "lag": null},
            {"id": 3, "name": "node3", "raft_addr": "127.0.0.1:7002", "api_addr": "", "voter": false, "lag": 12},
        ]});
        let expected = "\
+----+--------+----------------+----------------+---------+-----+
| Id | Member | Raft address   | API address    | Role    | Lag |
+----+--------+----------------+----------------+---------+-----+
|  1 | node1  | 127.0.0.1:7000 | 127.0.0.1:8008 | Leader  |   0 |
|  2 | node2  | 127.0.0.1:7001 | 127.0.0.1:8009 | Voter   |     |
|  3 | node3  | 127.0.0.1:7002 |                | Learner |  12 |
+----+--------+----------------+----------------+---------+-----+
 Raft term 4, as seen by node2
";
        assert_eq!(render_members(&raft, Format::Pretty), expected);
        assert!(render_members(&raft, Format::Tsv)
            .starts_with("Id\tMember\tRaft address\tAPI address\tRole\tLag\n1\tnode1"));
    }
}
