//! `DELETE /cluster` (raftgres' own, protected): `raftgres remove <cluster>` wipes every key of the cluster from
//! the raft store, as `patronictl remove` deletes the cluster's DCS prefix. Patroni has no REST endpoint for it
//! because patronictl writes the DCS directly; raftgres' store lives inside the nodes, so a node does it.
//!
//! The body names the cluster, `{"cluster": "<scope>"}`, so a request sent to the wrong cluster's node does not
//! wipe that one (400 otherwise). The request is refused with 409 while a member runs PostgreSQL as the leader:
//! wiping the `leader` key under a running primary would make it demote and start a leader race, an unplanned
//! failover. The operator first puts the cluster in maintenance mode (`raftgres pause`) and stops PostgreSQL on
//! the leader; a paused leader whose PostgreSQL stopped releases the leader key.
//!
//! The nodes keep running Raft and their HA loops: after the wipe they register their members again, and as the
//! `config` key (with `pause`) is gone they run with their bootstrap dynamic configuration, start PostgreSQL from
//! their data directories and race for the leader key. [`refusal`] is PURE; the handler reads, checks and writes.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::Response;
use serde_json::Value;

use crate::api::cluster::LINEARIZABLE_READ_TIMEOUT;
use crate::api::error::ApiError;
use crate::api::error::Json;
use crate::api::reply;
use crate::api::reply::BodyRule;
use crate::api::ApiState;
use crate::dcs::view::ClusterView;

/// `DELETE /cluster` with `{"cluster": "<scope>"}`: 200 `{"cluster", "removed": [keys]}`, 409 while a leader
/// runs, 400 for another cluster's name, 503 when the store does not answer.
pub async fn delete_cluster(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = reply::json_object(&headers, body, BodyRule::Required).await?;
    let control = state.control()?;
    let scope = state.status.borrow().scope.clone();
    check_cluster_name(body.get("cluster"), &scope)?;
    let snapshot = control
        .dcs
        .node()
        .read_linearizable(LINEARIZABLE_READ_TIMEOUT)
        .await
        .map_err(|e| ApiError::Unavailable(format!("read the cluster: {e}")))?;
    if let Some(why) = refusal(&ClusterView::from_state(&snapshot)) {
        return Err(ApiError::Conflict(why));
    }
    let removed: Vec<String> = snapshot.keys.keys().cloned().collect();
    let dcs = control.dcs.clone();
    // A spawned write finishes even when the client hangs up (house rule 14).
    tokio::spawn(async move { dcs.delete_cluster(LINEARIZABLE_READ_TIMEOUT).await })
        .await
        .map_err(|e| ApiError::Unavailable(format!("remove the cluster: {e}")))?
        .map_err(|e| ApiError::Unavailable(format!("remove the cluster: {e}")))?;
    tracing::warn!(cluster = %scope, n_keys = removed.len(), "removed every key of the cluster from the raft store");
    Ok(Json(serde_json::json!({"cluster": scope, "removed": removed})).into_response())
}

/// The body's `cluster` must be the scope this node serves.
fn check_cluster_name(name: Option<&Value>, scope: &str) -> Result<(), ApiError> {
    match name.and_then(Value::as_str) {
        Some(name) if name == scope => Ok(()),
        Some(name) => Err(ApiError::BadRequest(format!("this node serves cluster {scope:?}, not {name:?}"))),
        None => Err(ApiError::BadRequest(format!("name the cluster to remove: {{\"cluster\": {scope:?}}}"))),
    }
}

/// PURE: why the cluster must not be wiped now: a member holds the leader key while its PostgreSQL runs, or a
/// member runs PostgreSQL as a primary.
pub fn refusal(view: &ClusterView) -> Option<String> {
    let advice = "pause the cluster (raftgres pause) and stop PostgreSQL on it first";
    if let Some(leader) = view.leader.as_ref() {
        if view.members.get(&leader.name).is_some_and(|member| member.is_running()) {
            return Some(format!("This cluster has a running leader ({}); {advice}", leader.name));
        }
    }
    let mut primaries = view
        .members
        .iter()
        .filter(|(_, member)| member.role() == Some(crate::status::Role::Primary) && member.is_running());
    primaries.next().map(|(name, _)| format!("Member {name} runs PostgreSQL as a primary; {advice}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcs::view::LeaderKey;
    use crate::dcs::view::MemberData;

    fn view(leader: Option<&str>, members: &[(&str, &str, &str)]) -> ClusterView {
        let leader = leader.map(|name| LeaderKey {
            name: name.into(),
            session: None,
            create_rev: 1,
            mod_rev: 1,
            ..LeaderKey::default()
        });
        let mut view = ClusterView { leader, ..ClusterView::default() };
        for (name, role, state) in members {
            let member = MemberData { role: (*role).into(), state: (*state).into(), ..MemberData::default() };
            view.members.insert((*name).into(), member);
        }
        view
    }

    #[track_caller]
    fn check(view: ClusterView, expected: Option<&str>) {
        assert_eq!(refusal(&view).as_deref(), expected);
    }

    #[test]
    fn a_running_leader_or_primary_blocks_the_removal() {
        let advice = "pause the cluster (raftgres pause) and stop PostgreSQL on it first";
        check(
            view(Some("pg1"), &[("pg1", "primary", "running"), ("pg2", "replica", "running")]),
            Some(&format!("This cluster has a running leader (pg1); {advice}")),
        );
        check(
            view(None, &[("pg1", "replica", "running"), ("pg2", "primary", "running")]),
            Some(&format!("Member pg2 runs PostgreSQL as a primary; {advice}")),
        );
        check(view(Some("pg1"), &[("pg1", "demoted", "stopped"), ("pg2", "replica", "running")]), None);
        check(view(Some("pg1"), &[("pg2", "replica", "stopped")]), None);
        check(view(None, &[("pg1", "replica", "stopped"), ("pg2", "primary", "start failed")]), None);
        check(view(None, &[]), None);
    }

    #[test]
    fn the_body_names_this_cluster() {
        assert!(check_cluster_name(Some(&Value::from("demo")), "demo").is_ok());
        let other = check_cluster_name(Some(&Value::from("other")), "demo").map_err(|e| e.to_string());
        assert_eq!(other, Err("this node serves cluster \"demo\", not \"other\"".to_string()));
        assert!(check_cluster_name(None, "demo").is_err());
        assert!(check_cluster_name(Some(&Value::from(1)), "demo").is_err());
    }
}
