//! PURE: what a node says about itself on `GET /patroni`, and whether the answers of all running
//! nodes make a healthy cluster (one running primary, every other running node a replica that
//! streams from it).
//!
//! The HTTP calls live in `cluster.rs`; this module only reads JSON and decides, so the verdict is
//! table-tested without any process.

use serde_json::Value;

use crate::status::Role;

/// What the harness needs from one node's `GET /patroni` answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberProbe {
    /// The reported role; `None` for a role string raftgres does not define.
    pub role: Option<Role>,
    /// PostgreSQL state string (`running`, `starting`, `creating replica`, …).
    pub state: String,
    /// Replicas: `streaming` or `in archive recovery`, when reported.
    pub replication_state: Option<String>,
    /// Primaries: `application_name` of every walsender in state `streaming`.
    pub streaming_to: Vec<String>,
    /// Tagged `nostream`: a healthy replica recovers from the archive instead of streaming.
    pub nostream: bool,
}

/// Patroni's role string as a [`Role`] (`master` is Patroni 3's name of `primary`).
pub fn parse_role(text: &str) -> Option<Role> {
    Role::from_patroni(text)
}

/// Reads a `GET /patroni` body; `None` when it is not a status object.
pub fn parse_patroni(body: &Value) -> Option<MemberProbe> {
    let role = body.get("role")?.as_str()?;
    let state = body.get("state")?.as_str()?;
    let streaming_to = body
        .get("replication")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|row| row.get("state").and_then(Value::as_str) == Some("streaming"))
        .filter_map(|row| row.get("application_name").and_then(Value::as_str).map(str::to_string))
        .collect();
    Some(MemberProbe {
        role: parse_role(role),
        state: state.to_string(),
        replication_state: body.get("replication_state").and_then(Value::as_str).map(str::to_string),
        streaming_to,
        nostream: body.pointer("/tags/nostream").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// One node as the verdict sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// 1-based node index.
    pub node_idx: usize,
    /// Member name.
    pub name: String,
    /// Whether its raftgres process is running (stopped nodes are left out of the verdict).
    pub running: bool,
    /// Its `GET /patroni` answer, `None` when unreachable.
    pub probe: Option<MemberProbe>,
}

/// The node index of the primary when every running node is healthy, else why not (one sentence).
pub fn healthy_primary(members: &[MemberView]) -> Result<usize, String> {
    let running: Vec<&MemberView> = members.iter().filter(|m| m.running).collect();
    if running.is_empty() {
        return Err("no node is running".to_string());
    }
    if let Some(member) = running.iter().find(|m| m.probe.is_none()) {
        return Err(format!("{} does not answer on its REST API yet", member.name));
    }
    // The leader: a primary, or the standby leader of a standby cluster.
    let is_running_primary = |m: &&&MemberView| {
        m.probe
            .as_ref()
            .is_some_and(|p| matches!(p.role, Some(Role::Primary | Role::StandbyLeader)) && p.state == "running")
    };
    let primaries: Vec<&&MemberView> = running.iter().filter(is_running_primary).collect();
    let primary = match primaries.as_slice() {
        [] => return Err("no running primary yet".to_string()),
        [primary] => *primary,
        several => {
            let names: Vec<&str> = several.iter().map(|m| m.name.as_str()).collect();
            return Err(format!("more than one primary: {}", names.join(", ")));
        }
    };
    let streaming_to = primary.probe.as_ref().map(|p| p.streaming_to.as_slice()).unwrap_or_default();
    for member in running.iter().filter(|m| m.node_idx != primary.node_idx) {
        let Some(probe) = &member.probe else { continue };
        let streaming = probe.replication_state.as_deref() == Some("streaming")
            || streaming_to.contains(&member.name)
            || (probe.nostream && probe.replication_state.as_deref() == Some("in archive recovery"));
        if probe.role != Some(Role::Replica) || probe.state != "running" || !streaming {
            return Err(format!("{} is not a streaming replica yet ({})", member.name, describe_probe(probe)));
        }
    }
    Ok(primary.node_idx)
}

/// `node1 primary/running, node2 replica/creating replica, node3 unreachable, node4 stopped`.
pub fn describe(members: &[MemberView]) -> String {
    let parts: Vec<String> = members
        .iter()
        .map(|member| match (&member.probe, member.running) {
            (_, false) => format!("{} stopped", member.name),
            (None, true) => format!("{} unreachable", member.name),
            (Some(probe), true) => format!("{} {}", member.name, describe_probe(probe)),
        })
        .collect();
    parts.join(", ")
}

fn describe_probe(probe: &MemberProbe) -> String {
    let role = probe.role.map_or("unknown role", Role::as_str);
    format!("{role}/{}", probe.state)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn primary(streaming_to: &[&str]) -> Value {
        let rows: Vec<Value> =
            streaming_to.iter().map(|name| json!({"application_name": name, "state": "streaming"})).collect();
        json!({"state": "running", "role": "primary", "replication": rows})
    }

    fn replica(state: &str, replication_state: Option<&str>) -> Value {
        json!({"state": state, "role": "replica", "replication_state": replication_state})
    }

    /// `None` body: unreachable; `running` false: the process is stopped.
    #[track_caller]
    fn check(nodes: &[(bool, Option<Value>)], expected: Result<usize, &str>) {
        let members: Vec<MemberView> = nodes
            .iter()
            .enumerate()
            .map(|(idx, (running, body))| MemberView {
                node_idx: idx + 1,
                name: format!("node{}", idx + 1),
                running: *running,
                probe: body.as_ref().and_then(parse_patroni),
            })
            .collect();
        assert_eq!(healthy_primary(&members), expected.map_err(str::to_string));
    }

    #[test]
    fn one_primary_and_two_streaming_replicas_is_healthy() {
        let streaming = Some(replica("running", Some("streaming")));
        check(&[(true, streaming.clone()), (true, Some(primary(&[]))), (true, streaming)], Ok(2));
    }

    #[test]
    fn primary_walsenders_count_as_streaming() {
        let quiet = Some(replica("running", None));
        check(&[(true, Some(primary(&["node2", "node3"]))), (true, quiet.clone()), (true, quiet)], Ok(1));
    }

    #[test]
    fn replica_being_created_is_not_healthy() {
        let cloning = Some(replica("creating replica", None));
        let streaming = Some(replica("running", Some("streaming")));
        let expected = Err("node2 is not a streaming replica yet (replica/creating replica)");
        check(&[(true, Some(primary(&[]))), (true, cloning), (true, streaming)], expected);
    }

    #[test]
    fn stopped_nodes_are_left_out() {
        check(&[(false, None), (true, Some(primary(&["node3"]))), (true, Some(replica("running", None)))], Ok(2));
    }

    #[test]
    fn unreachable_running_node_is_not_healthy() {
        check(&[(true, Some(primary(&[]))), (true, None)], Err("node2 does not answer on its REST API yet"));
    }

    #[test]
    fn two_primaries_are_not_healthy() {
        check(&[(true, Some(primary(&[]))), (true, Some(primary(&[])))], Err("more than one primary: node1, node2"));
    }

    #[test]
    fn no_primary_is_not_healthy() {
        let streaming = Some(replica("running", Some("streaming")));
        check(&[(true, streaming.clone()), (true, streaming)], Err("no running primary yet"));
    }

    #[test]
    fn patroni_3_master_is_a_primary() {
        assert_eq!(parse_role("master"), Some(Role::Primary));
    }
}
