//! Changing a node's YAML without restarting raftgres, as with Patroni: SIGHUP and `POST /reload` read the file
//! again and apply PostgreSQL's local parameters (a reloadable one at once, one that needs a restart as
//! `pending_restart`), the tags, the REST API's authentication and the log level; a key that needs raftgres restarted is named
//! in the answer; a broken file is refused with its key path and the running configuration is kept.

use std::path::Path;
use std::time::Duration;

use raftgres::demo::cluster::LocalCluster;
use serde_json::Value;

use crate::harness::*;

/// Reads node `node`'s YAML, lets `change` edit it, writes it back (mode 0600: it holds passwords).
fn edit_yaml(c: &LocalCluster, node: usize, change: impl FnOnce(&mut serde_yaml_ng::Mapping)) {
    let path = c.node(node).config_path();
    let text = std::fs::read_to_string(&path).expect("read the node's YAML");
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("parse the node's YAML");
    change(doc.as_mapping_mut().expect("a map at the top"));
    write_private(&path, &serde_yaml_ng::to_string(&doc).expect("render YAML"));
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the node's YAML");
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(path, private).expect("chmod 0600");
}

/// The map under `key`, created when missing.
fn section<'a>(doc: &'a mut serde_yaml_ng::Mapping, key: &str) -> &'a mut serde_yaml_ng::Mapping {
    let key = serde_yaml_ng::Value::from(key);
    if !doc.get(&key).is_some_and(serde_yaml_ng::Value::is_mapping) {
        doc.insert(key.clone(), serde_yaml_ng::Value::Mapping(serde_yaml_ng::Mapping::new()));
    }
    doc.get_mut(&key).and_then(serde_yaml_ng::Value::as_mapping_mut).expect("a map")
}

/// `POST /reload` on a node, with optional credentials: (code, body).
async fn post_reload(c: &LocalCluster, node: usize, auth: Option<(&str, &str)>) -> (u16, String) {
    let mut req = reqwest::Client::new().post(format!("{}/reload", c.api(node))).timeout(Duration::from_secs(30));
    if let Some((user, password)) = auth {
        req = req.basic_auth(user, Some(password));
    }
    let res = req.send().await.expect("POST /reload");
    let code = res.status().as_u16();
    (code, res.text().await.unwrap_or_default())
}

/// `GET /patroni` of a node.
async fn patroni(c: &LocalCluster, node: usize) -> Option<Value> {
    reqwest::get(format!("{}/patroni", c.api(node))).await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_post_reload_apply_the_changed_yaml_and_refuse_a_broken_one() {
    if !pg_available("sighup_and_post_reload_apply_the_changed_yaml_and_refuse_a_broken_one") {
        return;
    }
    let (spec, dir) = spec();
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let node = (1..=3).find(|n| *n != primary).expect("a replica");

    // A reloadable parameter, through SIGHUP.
    edit_yaml(c, node, |doc| {
        let pg = section(doc, "postgresql");
        section(pg, "parameters").insert("work_mem".into(), "7MB".into());
    });
    let pid = c.pid(node).expect("the node's raftgres pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP)
        .expect("send SIGHUP");
    eventually(Duration::from_secs(30), "work_mem = 7MB after SIGHUP", || async {
        (show(c, node, "work_mem").await.as_deref() == Some("7MB")).then_some(())
    })
    .await;

    // Tags and a parameter that needs a restart, through POST /reload.
    edit_yaml(c, node, |doc| {
        section(doc, "tags").insert("nofailover".into(), true.into());
        let pg = section(doc, "postgresql");
        section(pg, "parameters").insert("shared_buffers".into(), "130MB".into());
    });
    let (code, body) = post_reload(c, node, None).await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("tags.nofailover") && body.contains("postgresql.parameters"), "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = patroni(c, node).await.unwrap_or_default();
        let tagged = status["tags"]["nofailover"] == Value::Bool(true);
        let pending = status["pending_restart_reason"]["shared_buffers"].is_object();
        if tagged && pending {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nofailover and the pending restart of shared_buffers in GET /patroni: {status}\n{}",
            logs(c)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A key raftgres cannot change while it runs is named, and keeps its running value.
    let api = c.api(node);
    edit_yaml(c, node, |doc| {
        section(doc, "restapi").insert("http_extra_headers".into(), serde_yaml_ng::Value::Mapping(Default::default()));
        section(doc, "restapi").insert("authentication".into(), {
            let mut auth = serde_yaml_ng::Mapping::new();
            auth.insert("username".into(), "ops".into());
            auth.insert("password".into(), "s3cret".into());
            serde_yaml_ng::Value::Mapping(auth)
        });
        section(doc, "postgresql").insert("pg_ctl_timeout".into(), 61.into());
    });
    let (code, body) = post_reload(c, node, None).await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("needs a restart of raftgres: ") && body.contains("postgresql.pg_ctl_timeout"), "{body}");
    // The REST API's authentication is in force from now on.
    let (code, _) = post_reload(c, node, None).await;
    assert_eq!(code, 401, "POST /reload without credentials after authentication was added");
    let (code, body) = post_reload(c, node, Some(("ops", "s3cret"))).await;
    assert_eq!(code, 202, "{body}");

    // Log settings apply at once: DEBUG lines appear in the node's log after the reload.
    edit_yaml(c, node, |doc| {
        section(doc, "log").insert("level".into(), "DEBUG".into());
    });
    let (code, body) = post_reload(c, node, Some(("ops", "s3cret"))).await;
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("log.level"), "{body}");
    let log_path = c.dir().join(format!("node{node}/raftgres.log"));
    eventually(Duration::from_secs(30), "DEBUG lines in the node's log after the reload", || async {
        let text = std::fs::read_to_string(&log_path).ok()?;
        let after = text.split("configuration reloaded").last()?;
        after.lines().any(|line| line.contains("DEBUG")).then_some(())
    })
    .await;

    // A broken file is refused with the key's path; the node keeps running with what it had.
    edit_yaml(c, node, |doc| {
        section(doc, "postgresql").insert("parameters".into(), 5.into());
    });
    let (code, body) = post_reload(c, node, Some(("ops", "s3cret"))).await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("postgresql.parameters") && body.contains("running one is kept"), "{body}");
    assert_eq!(show(c, node, "work_mem").await.as_deref(), Some("7MB"));
    assert!(reqwest::get(format!("{api}/health")).await.is_ok_and(|r| r.status().as_u16() == 200));
    finish(c, &["configuration reload refused"]).await;
}
