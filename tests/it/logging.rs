//! Logging as a Patroni operator configures it: with `log.type: json` and `log.dir` a node writes one JSON
//! object per line into `patroni.log`, rotated by size into at most `log.file_num` backups; a node that logs
//! to stderr, which the harness redirects into a file, writes plain text without ANSI colours.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use serde_json::Value;

use crate::harness::*;

/// Small enough that the DEBUG lines of a few HA cycles fill a file.
const FILE_SIZE: u64 = 2000;
const FILE_NUM: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_log_file_is_rotated_and_stderr_in_a_file_has_no_colours() {
    if !pg_available("json_log_file_is_rotated_and_stderr_in_a_file_has_no_colours") {
        return;
    }
    let (mut spec, dir) = spec();
    spec.n_nodes = 2;
    let log_dir = dir.path().join("node1-log");
    spec.node_overrides.insert(
        1,
        json!({"log": {
            "type": "json",
            "level": "DEBUG",
            "dir": log_dir.display().to_string(),
            "file_size": FILE_SIZE,
            "file_num": FILE_NUM,
            "static_fields": {"cluster": "it"},
        }}),
    );
    let (tc, _primary) = start(spec, dir).await;
    let c = &tc.cluster;

    // The oldest backup exists, and then a later rotation replaces it: rotation went past file_num.
    let oldest = log_dir.join(format!("patroni.log.{FILE_NUM}"));
    let first = eventually(Duration::from_secs(90), "patroni.log rotated into its last backup", || async {
        std::fs::read_to_string(&oldest).ok().and_then(|text| text.lines().next().map(str::to_string))
    })
    .await;
    eventually(Duration::from_secs(90), "the last backup replaced by a later rotation", || async {
        let text = std::fs::read_to_string(&oldest).ok()?;
        (text.lines().next() != Some(first.as_str())).then_some(())
    })
    .await;

    let names = file_names(&log_dir);
    let expected: Vec<String> =
        std::iter::once("patroni.log".to_string()).chain((1..=FILE_NUM).map(|n| format!("patroni.log.{n}"))).collect();
    assert_eq!(names, expected, "patroni.log and file_num backups, nothing else");
    let mut n_lines = 0;
    for name in &names {
        let text = std::fs::read_to_string(log_dir.join(name)).unwrap_or_default();
        // Python's rule, which raftgres follows: a file rotates before a line that would take it past file_size,
        // so only a file holding a single line longer than file_size may be larger.
        let one_long_line = text.lines().count() == 1;
        assert!(text.len() as u64 <= FILE_SIZE || one_long_line, "{name} is {} bytes, above file_size", text.len());
        for line in text.lines() {
            let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            for key in ["asctime", "levelname", "message"] {
                assert!(parsed[key].is_string(), "{name}: no {key}: {line}");
            }
            assert_eq!(parsed["cluster"], "it", "{name}: static_fields: {line}");
            n_lines += 1;
        }
    }
    assert!(n_lines > 0, "the log files hold lines");

    // node2 logs plain text to stderr, which the harness appends to nodeN/raftgres.log.
    let stderr = std::fs::read_to_string(c.dir().join("node2/raftgres.log")).unwrap_or_default();
    assert!(stderr.contains(" INFO "), "node2 logged plain lines to stderr:\n{stderr}");
    for node in 1..=2 {
        let stderr = std::fs::read_to_string(c.dir().join(format!("node{node}/raftgres.log"))).unwrap_or_default();
        assert!(!stderr.contains('\u{1b}'), "node{node}'s stderr, redirected into a file, has ANSI escapes");
    }
    finish(c, &[]).await;
}

fn file_names(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).expect("read the log dir").flatten();
    let mut res: Vec<String> = entries.map(|entry| entry.file_name().to_string_lossy().into_owned()).collect();
    res.sort();
    res
}
