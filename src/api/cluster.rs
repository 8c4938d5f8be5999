//! `GET /cluster`, `GET /history` and `GET /failsafe` (contract §1.5, §1.6, §1.12): the cluster as the raft
//! store holds it.
//!
//! [`cluster_json`] is PURE (Patroni's `cluster_as_json` over a [`ClusterView`]); the handlers only read the
//! store: `/cluster` with a linearizable read, `/history` and `/failsafe` from the local view, as Patroni reads
//! its cached cluster there.

use std::time::Duration;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::Response;
use serde_json::Value;

use crate::api::error::ApiError;
use crate::api::error::Json;
use crate::api::types::ClusterJson;
use crate::api::types::ClusterMember;
use crate::api::types::ScheduledSwitchover;
use crate::api::ApiState;
use crate::config::DynamicConfig;
use crate::config::DynamicView;
use crate::config::SynchronousMode;
use crate::dcs::view::ClusterView;
use crate::postgres::types::Lsn;

/// How long `GET /cluster` waits for a quorum to confirm its read.
pub const LINEARIZABLE_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /cluster`: a fresh, quorum-confirmed read of the store.
pub async fn get_cluster(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let control = state.control()?;
    let view = control
        .dcs
        .view_linearizable(LINEARIZABLE_READ_TIMEOUT)
        .await
        .map_err(|e| ApiError::Unavailable(format!("read the cluster: {e}")))?;
    let scope = state.status.borrow().scope.clone();
    let dynamic = dynamic_view(&view);
    Ok(Json(cluster_json(&view, &dynamic, &scope)).into_response())
}

/// `GET /history`: the timeline switches, `[]` without any, each row as Patroni writes it:
/// `[timeline, lsn, reason, timestamp, new_leader]` (tools unpack exactly five values).
/// `GET /history/promotions`: raftgres' own record of how each promotion unfolded (see `promotions`); Patroni
/// routes on the first path segment, so its tools never ask for it.
pub async fn get_history(State(state): State<ApiState>, uri: axum::http::Uri) -> Result<Response, ApiError> {
    let view = state.control()?.dcs.view();
    if uri.path().trim_end_matches('/').ends_with("/history/promotions") {
        return Ok(Json(promotions(&view.history_raw)).into_response());
    }
    Ok(Json(patroni_history(&view.history_raw)).into_response())
}

/// PURE: the history rows cut to Patroni's five elements.
pub fn patroni_history(rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .map(|row| match row.as_array() {
            Some(items) => Value::Array(items.iter().take(5).cloned().collect()),
            None => row.clone(),
        })
        .collect()
}

/// PURE: the promotion timelines stored as a sixth element of history rows, each as an object with the row's
/// `timeline`, `lsn` and `new_leader`: `{"timeline", "lsn", "new_leader", "kind", "last_renewal_ms", …}`.
pub fn promotions(rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .filter_map(|row| {
            let items = row.as_array()?;
            let mut detail = items.get(5)?.as_object()?.clone();
            detail.insert("timeline".into(), items.first().cloned().unwrap_or(Value::Null));
            detail.insert("lsn".into(), items.get(1).cloned().unwrap_or(Value::Null));
            detail.insert("new_leader".into(), items.get(4).cloned().unwrap_or(Value::Null));
            Some(Value::Object(detail))
        })
        .collect()
}

/// `GET /failsafe`: the members a failsafe primary last reported, 502 when there is no such key.
pub async fn get_failsafe(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let view = state.control()?.dcs.view();
    match view.failsafe {
        Some(failsafe) => Ok(Json(failsafe).into_response()),
        None => Err(ApiError::BadGateway("no failsafe information: failsafe_mode is off or not active".into())),
    }
}

/// The typed dynamic configuration stored in `view`, defaults when there is none.
pub fn dynamic_view(view: &ClusterView) -> DynamicView {
    match view.config.as_ref() {
        Some(config) => DynamicConfig::parse_lenient(config.value.clone()).0.view().clone(),
        None => DynamicView::default(),
    }
}

/// PURE: Patroni's `cluster_as_json`.
pub fn cluster_json(view: &ClusterView, dynamic: &DynamicView, scope: &str) -> ClusterJson {
    let leader_name = view.leader.as_ref().map(|leader| leader.name.as_str());
    let cluster_lsn = view.status.as_ref().map_or(0, |status| status.optime);
    let sync_members = view.sync.as_ref().map(|sync| sync.value.members()).unwrap_or_default();
    let sync_role = match dynamic.synchronous_mode {
        SynchronousMode::Off => None,
        SynchronousMode::On => Some("sync_standby"),
        SynchronousMode::Quorum => Some("quorum_standby"),
    };
    let members = view
        .members
        .iter()
        .map(|(name, member)| {
            let is_leader = Some(name.as_str()) == leader_name;
            let role = match (is_leader, sync_role) {
                (true, _) if dynamic.standby_cluster.is_some() => "standby_leader",
                (true, _) => "leader",
                (false, Some(sync_role)) if sync_members.contains(name) => sync_role,
                (false, _) => "replica",
            };
            let replication_state = member.replication_state.as_deref().filter(|_| role != "leader");
            let state = replication_state.filter(|s| !s.is_empty()).unwrap_or(&member.state).to_string();
            let host_port = member.host_port();
            let position = |lsn: Option<u64>| (!is_leader).then(|| lsn_and_lag(lsn, cluster_lsn));
            let (receive_lsn, receive_lag) = position(member.receive_lsn).unzip();
            let (replay_lsn, replay_lag) = position(member.replay_lsn).unzip();
            let (lsn, lag) = position(member.xlog_location).unzip();
            ClusterMember {
                name: name.clone(),
                role: role.to_string(),
                state,
                api_url: member.api_url.clone(),
                host: host_port.as_ref().map(|(host, _)| host.clone()).filter(|host| !host.is_empty()),
                port: host_port.map(|(_, port)| port).filter(|port| *port != 0),
                timeline: member.timeline,
                pending_restart: member.pending_restart,
                pending_restart_reason: member.pending_restart_reason.clone(),
                scheduled_restart: member.scheduled_restart.clone(),
                tags: member.tags.clone(),
                failing: member.failing.clone(),
                receive_lsn,
                receive_lag,
                replay_lsn,
                replay_lag,
                lsn,
                lag,
            }
        })
        .collect();
    let scheduled_switchover = view.failover.as_ref().and_then(|failover| {
        let failover = &failover.value;
        let at = failover.scheduled_at.clone()?;
        Some(ScheduledSwitchover { at, from: failover.leader.clone(), to: failover.member.clone() })
    });
    ClusterJson { members, scope: scope.to_string(), pause: dynamic.pause, scheduled_switchover }
}

/// `(lsn, lag)` of one position: `"X/Y"` and bytes behind the leader's optime (0 when ahead), or `"unknown"`.
fn lsn_and_lag(lsn: Option<u64>, cluster_lsn: u64) -> (Value, Value) {
    match lsn.filter(|lsn| *lsn > 0) {
        None => (Value::from("unknown"), Value::from("unknown")),
        Some(lsn) => (Value::from(Lsn(lsn).to_string()), Value::from(cluster_lsn.saturating_sub(lsn))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::dcs::view::FailoverData;
    use crate::dcs::view::LeaderKey;
    use crate::dcs::view::MemberData;
    use crate::dcs::view::StatusData;
    use crate::dcs::view::SyncData;
    use crate::dcs::view::Versioned;

    fn member(port: u16, role: &str, xlog: Option<u64>) -> MemberData {
        MemberData {
            conn_url: format!("postgres://10.0.0.{port}:5432/postgres"),
            api_url: format!("http://10.0.0.{port}:8008/patroni"),
            state: "running".into(),
            role: role.into(),
            xlog_location: xlog,
            receive_lsn: xlog.filter(|_| role == "replica"),
            replay_lsn: xlog.filter(|_| role == "replica").map(|l| l - 16),
            replication_state: (role == "replica").then(|| "streaming".into()),
            timeline: Some(2),
            ..MemberData::default()
        }
    }

    fn view() -> ClusterView {
        let leader =
            Some(LeaderKey { name: "pg1".into(), session: None, create_rev: 3, mod_rev: 9, ..LeaderKey::default() });
        let mut view = ClusterView { leader, ..ClusterView::default() };
        view.members.insert("pg2".into(), member(2, "replica", Some(0x3000_0060)));
        view.members.insert("pg1".into(), member(1, "primary", Some(0x3000_0060)));
        view.members.insert("pg3".into(), member(3, "replica", None));
        view.status = Some(StatusData { optime: 0x3000_0080, ..StatusData::default() });
        view.sync = Some(Versioned {
            value: SyncData { leader: Some("pg1".into()), sync_standby: Some("pg2".into()), quorum: 0 },
            mod_rev: 4,
        });
        view
    }

    #[track_caller]
    fn check(view: &ClusterView, dynamic: serde_json::Value, expected: serde_json::Value) {
        let dynamic = DynamicConfig::parse_lenient(dynamic).0.view().clone();
        let got = serde_json::to_value(cluster_json(view, &dynamic, "batman")).expect("serializes");
        assert_eq!(got, expected);
    }

    fn replica(name: &str, n: u8, role: &str, lsn: serde_json::Value) -> serde_json::Value {
        let mut res = json!({
            "name": name, "role": role, "state": "streaming", "api_url": format!("http://10.0.0.{n}:8008/patroni"),
            "host": format!("10.0.0.{n}"), "port": 5432, "timeline": 2,
        });
        let res_map = res.as_object_mut().expect("object");
        for (key, value) in lsn.as_object().expect("object") {
            res_map.insert(key.clone(), value.clone());
        }
        res
    }

    #[test]
    fn cluster_as_json_rows() {
        let leader = json!({
            "name": "pg1", "role": "leader", "state": "running", "api_url": "http://10.0.0.1:8008/patroni",
            "host": "10.0.0.1", "port": 5432, "timeline": 2,
        });
        let pg2_lsn = json!({"receive_lsn": "0/30000060", "receive_lag": 32, "replay_lsn": "0/30000050",
            "replay_lag": 48, "lsn": "0/30000060", "lag": 32});
        let unknown = json!({"receive_lsn": "unknown", "receive_lag": "unknown", "replay_lsn": "unknown",
            "replay_lag": "unknown", "lsn": "unknown", "lag": "unknown"});
        check(
            &view(),
            json!({}),
            json!({"members": [leader, replica("pg2", 2, "replica", pg2_lsn.clone()),
                replica("pg3", 3, "replica", unknown.clone())], "scope": "batman"}),
        );
        let mut standby_leader = leader.clone();
        standby_leader["role"] = json!("standby_leader");
        check(
            &view(),
            json!({"synchronous_mode": true, "pause": true, "standby_cluster": {"host": "remote"}}),
            json!({"members": [standby_leader, replica("pg2", 2, "sync_standby", pg2_lsn.clone()),
                replica("pg3", 3, "replica", unknown.clone())], "scope": "batman", "pause": true}),
        );
        let mut scheduled = view();
        scheduled.failover = Some(Versioned {
            value: FailoverData {
                leader: Some("pg1".into()),
                member: Some("pg3".into()),
                scheduled_at: Some("2025-06-01T13:00:00+00:00".into()),
            },
            mod_rev: 12,
        });
        let json = serde_json::to_value(cluster_json(&scheduled, &DynamicView::default(), "batman")).expect("json");
        assert_eq!(
            json["scheduled_switchover"],
            json!({"at": "2025-06-01T13:00:00+00:00", "from": "pg1", "to": "pg3"})
        );
    }

    #[test]
    fn restarts_come_from_the_member_key() {
        let mut view = view();
        let pg3 = view.members.get_mut("pg3").expect("pg3");
        pg3.pending_restart = true;
        let reason = json!({"max_connections": {"old_value": "100", "new_value": "200"}});
        pg3.pending_restart_reason = reason.as_object().cloned().expect("object");
        let schedule = json!({"schedule": "2026-11-22T13:00:00+00:00", "postgres_version": 150004});
        pg3.scheduled_restart = schedule.as_object().cloned();
        let json = serde_json::to_value(cluster_json(&view, &DynamicView::default(), "batman")).expect("json");
        assert_eq!(json["members"][2]["pending_restart"], json!(true));
        assert_eq!(json["members"][2]["pending_restart_reason"], reason);
        assert_eq!(json["members"][2]["scheduled_restart"], schedule);
        let pg2 = json["members"][1].as_object().expect("object");
        assert!(!pg2.contains_key("pending_restart_reason") && !pg2.contains_key("scheduled_restart"), "{pg2:?}");
    }

    #[test]
    fn a_replica_ahead_of_the_optime_has_no_negative_lag() {
        assert_eq!(lsn_and_lag(Some(200), 100), (json!("0/C8"), json!(0)));
        assert_eq!(lsn_and_lag(Some(0), 100), (json!("unknown"), json!("unknown")));
    }
}
