//! Table tests of `list`, `topology` and `history` rendering, and the snapshot of the pretty `list`.

use serde_json::json;
use serde_json::Value;

use super::*;

/// The fixed `GET /cluster` document (plus `initialize` and `leader_lease`) of the snapshot.
const CLUSTER: &str = include_str!("../../../tests/data/cli/cluster.json");
/// The checked-in pretty output; regenerate by printing `render_list` when the format changes on purpose.
const LIST_PRETTY: &str = include_str!("../../../tests/data/cli/list_pretty.txt");

fn cluster() -> Value {
    serde_json::from_str(CLUSTER).expect("the fixture is JSON")
}

#[test]
fn pretty_list_matches_the_snapshot() {
    let got = render_list(&cluster(), Format::Pretty, false);
    assert_eq!(got, LIST_PRETTY, "render_list changed; got:\n{got}");
}

#[test]
fn tsv_keeps_patronictl_column_names() {
    let got = render_list(&cluster(), Format::Tsv, false);
    let mut lines = got.lines();
    assert_eq!(
        lines.next(),
        Some(
            "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag\tPending restart\t\
             Pending restart reason"
        )
    );
    assert_eq!(lines.next(), Some("demo\tnode1\t127.0.0.1:5432\tLeader\trunning\t3\t\t\t\t\t\t"));
    assert_eq!(
        lines.nth(1),
        Some("demo\tnode3\t127.0.0.1:5434\tReplica\tstreaming\t3\t0/3C004E8\t64\tunknown\t\t*\tmax_connections: 100->200")
    );
}

#[test]
fn json_rows_leave_out_empty_values() {
    let got: Value = serde_json::from_str(&render_list(&cluster(), Format::Json, false)).expect("valid JSON");
    assert_eq!(
        got[0],
        json!({"Cluster": "demo", "Member": "node1", "Host": "127.0.0.1:5432", "Role": "Leader", "State": "running",
               "TL": 3})
    );
    assert_eq!(got[1]["Role"], json!("Sync Standby"));
    assert_eq!(got[2]["Receive Lag"], json!(64));
    let yaml: Value = serde_yaml_ng::from_str(&render_list(&cluster(), Format::Yaml, false)).expect("valid YAML");
    assert_eq!(yaml, got);
}

#[test]
fn a_scheduled_restart_gets_its_column() {
    let mut document = cluster();
    document["members"][1]["scheduled_restart"] =
        json!({"schedule": "2026-11-22T13:00:00+00:00", "postgres_version": "15.4", "restart_pending": true});
    let got = render_list(&document, Format::Tsv, false);
    let mut lines = got.lines();
    assert!(
        lines.next().is_some_and(|header| header.ends_with("\tPending restart reason\tScheduled restart")),
        "{got}"
    );
    assert!(lines.next().is_some_and(|node1| node1.ends_with("\t\t\t")), "{got}");
    assert!(
        lines.next().is_some_and(|node2| node2.ends_with("\t\t2026-11-22T13:00:00+00:00 if version < 15.4")),
        "{got}"
    );
    let pretty = render_list(&document, Format::Pretty, false);
    let header = pretty.lines().nth(1).unwrap_or_default();
    assert!(header.ends_with("| Scheduled restart                           |"), "{pretty}");
    assert!(pretty.contains("| 2026-11-22T13:00:00+00:00 if version < 15.4 |\n"), "{pretty}");
}

#[test]
fn lags_are_mebibytes_rounded_half_to_even() {
    assert_eq!(lag_mb(&json!(0)), json!(0));
    assert_eq!(lag_mb(&json!(1_572_864)), json!(2), "1.5 MiB rounds to 2");
    assert_eq!(lag_mb(&json!(2_621_440)), json!(2), "2.5 MiB rounds to 2");
    assert_eq!(lag_mb(&json!("unknown")), json!(""));
}

#[test]
fn hosts_show_the_port_only_when_needed() {
    let document = json!({"scope": "demo", "members": [
        {"name": "a", "role": "leader", "state": "running", "host": "10.0.0.1", "port": 5432},
        {"name": "b", "role": "replica", "state": "streaming", "host": "10.0.0.2", "port": 5432},
    ]});
    let got = render_list(&document, Format::Tsv, false);
    assert!(got.contains("\ta\t10.0.0.1\tLeader"), "{got}");
    let title = render_list(&document, Format::Pretty, false);
    assert!(title.starts_with("+ Cluster: demo (uninitialized) "), "{title}");
}

#[test]
fn topology_nests_cascading_replicas() {
    let document = json!({"scope": "demo", "members": [
        {"name": "a", "role": "replica", "state": "streaming", "tags": {"replicatefrom": "c"}},
        {"name": "b", "role": "leader", "state": "running"},
        {"name": "c", "role": "replica", "state": "streaming"},
        {"name": "d", "role": "replica", "state": "streaming", "tags": {"replicatefrom": "a"}},
    ]});
    let got = render_list(&document, Format::Topology, false);
    let names: Vec<&str> = got.lines().skip(3).filter_map(|line| line.split('|').nth(1)).map(str::trim_end).collect();
    assert_eq!(names, [" b", " + c", "   + a", "     + d"]);
}

#[test]
fn the_footer_names_the_lease_holder() {
    let mut document = json!({"scope": "demo", "members": [], "leader_lease": null});
    assert!(render_list(&document, Format::Pretty, false).ends_with(" Leader lease: none\n"));
    document["leader_lease"] = json!({"holder": "node2", "fencing_token": 7});
    assert!(render_list(&document, Format::Pretty, false).ends_with(" Leader lease: node2 (fencing token 7)\n"));
    assert!(!render_list(&document, Format::Tsv, false).contains("lease"));
}

#[test]
fn history_pads_old_lines() {
    let history = json!([
        [1, 25165984, "no recovery target specified", "2026-11-22T01:00:00+00:00", "node1"],
        [2, 33554592, "x"]
    ]);
    let got = render_history(&history, &json!([]), Format::Tsv);
    assert_eq!(
        got,
        "TL\tLSN\tReason\tTimestamp\tNew Leader\n1\t25165984\tno recovery target specified\t2026-11-22T01:00:00+00:00\tnode1\n\
         2\t33554592\tx\t\t\n"
    );
    let promotions = json!([{"timeline": 1, "kind": "switchover", "promoted_ms": 1}]);
    let with_kind = render_history(&history, &promotions, Format::Tsv);
    assert_eq!(with_kind.lines().next(), Some("TL\tLSN\tReason\tTimestamp\tNew Leader\tKind"));
    assert!(with_kind.lines().nth(1).is_some_and(|line| line.ends_with("\tnode1\tswitchover")), "{with_kind}");
    let pretty = render_history(&json!([]), &json!([]), Format::Pretty);
    assert_eq!(pretty.lines().next(), Some("+----+-----+--------+-----------+------------+"));
}
