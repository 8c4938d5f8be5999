//! The REST API's cluster and action endpoints (contract §1.5-§1.11) and its security (§1.1):
//! - against an in-process single-node raft store and a stand-in HA loop (no PostgreSQL): `/config`,
//!   `/cluster`, `/history`, `/failsafe`, the 412 pre-checks, scheduled switchovers and restarts, basic auth;
//! - over HTTPS with a client-certificate policy (certificates made with `openssl`, skipped without it);
//! - against a live three-node cluster with `restapi.authentication`: auth enforced, reload, restart,
//!   `/metrics` parsed line by line, a parameter change through `PATCH /config`, reinitialize of a replica,
//!   failover refused with 412, and a switchover to a named candidate.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use raftgres::api::ApiState;
use raftgres::config::BasicAuth;
use raftgres::config::RestApiConfig;
use raftgres::config::Secret;
use raftgres::config::ServerTokens;
use raftgres::config::VerifyClient;
use raftgres::dcs::Dcs;
use raftgres::ha::requests::HaRequest;
use raftgres::status::NodeStatus;
use reqwest::Method;
use serde_json::json;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::sync::watch;

use crate::harness::*;

const USER: &str = "admin";
const PASSWORD: &str = "s3cr:et";

/// One HTTP answer: code, `WWW-Authenticate`, body text.
#[derive(Debug)]
struct Answer {
    code: u16,
    www_authenticate: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `method path` with an optional JSON body and the test credentials when `auth` is set.
async fn call(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    auth: bool,
) -> Answer {
    let mut req = http.request(method, format!("{base}{path}"));
    if auth {
        req = req.basic_auth(USER, Some(PASSWORD));
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("{path} is answered: {e}"));
    let code = res.status().as_u16();
    let www_authenticate = res.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_string);
    Answer { code, www_authenticate, body: res.text().await.unwrap_or_default() }
}

#[track_caller]
fn check(answer: &Answer, code: u16, body: &str) {
    assert_eq!((answer.code, answer.body.as_str()), (code, body), "{answer:?}");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client builds")
}

/// A single-node raft store serving an API with basic auth, and a stand-in for the HA loop.
struct StoreServer {
    base: String,
    dcs: Dcs,
    requests: mpsc::Receiver<HaRequest>,
    _status_tx: watch::Sender<NodeStatus>,
    _dir: tempfile::TempDir,
}

async fn store_server() -> StoreServer {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let raft_port = free_port_block(1);
    let peers = vec![raft::PeerConfig {
        id: 1,
        name: "pg1".into(),
        raft_addr: format!("127.0.0.1:{raft_port}"),
        api_addr: String::new(),
    }];
    let mut raft_config = raft::RaftConfig::new(1, "apitest", peers, dir.path().join("raft"));
    raft_config.transport = raft::config::PeerTransport::Insecure;
    let node = raft::RaftNode::start(raft_config).await.expect("start a single-node raft");
    eventually(Duration::from_secs(30), "the single raft node leads", || async {
        (node.status().leader == Some(1)).then_some(())
    })
    .await;
    let dcs = Dcs::new(node, "pg1");
    let mut status = NodeStatus::initial("pg1", "apitest", tokio::time::Instant::now());
    status.loop_wait = Duration::from_secs(1);
    let (status_tx, status_rx) = watch::channel(status);
    let (ha_tx, requests) = mpsc::channel(4);
    let security = raftgres::api::security::Security::with_auth(&BasicAuth {
        username: USER.into(),
        password: Secret::new(PASSWORD),
    });
    let state = ApiState::new(status_rx).with_control(dcs.clone(), ha_tx).expect("state").with_security(security);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(raftgres::api::serve(listener, state, std::future::pending()));
    StoreServer { base, dcs, requests, _status_tx: status_tx, _dir: dir }
}

/// Writes `key` = `value` unconditionally.
async fn put(dcs: &Dcs, key: &str, value: Value) {
    let cmd = raft::Command::put(key, value.to_string(), raft::Guard::Always);
    assert!(dcs.node().write(cmd, Duration::from_secs(5)).await.expect("write").is_applied());
}

fn member_json(n: u16, role: &str, api_port: u16) -> Value {
    json!({"conn_url": format!("postgres://127.0.0.1:{}/postgres", 5430 + n),
           "api_url": format!("http://127.0.0.1:{api_port}/patroni"),
           "state": "running", "role": role, "xlog_location": 4096})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_backed_endpoints_follow_patroni() {
    let mut server = store_server().await;
    let (http, base) = (client(), server.base.clone());
    let req = |method: Method, path: &'static str, body: Option<Value>, auth: bool| {
        let (http, base) = (http.clone(), base.clone());
        async move { call(&http, &base, method, path, body, auth).await }
    };

    // Security: every protected endpoint asks for credentials, Patroni's way.
    let denied = req(Method::PATCH, "/config", Some(json!({"ttl": 30})), false).await;
    check(&denied, 401, "no auth header received");
    assert_eq!(denied.www_authenticate.as_deref(), Some(r#"Basic realm="Patroni""#));
    let wrong = http.post(format!("{base}/reload")).basic_auth(USER, Some("nope")).send().await.expect("answered");
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(wrong.text().await.expect("body"), "not authenticated");
    for (method, path) in [
        (Method::PUT, "/config"),
        (Method::POST, "/switchover"),
        (Method::POST, "/failover"),
        (Method::DELETE, "/switchover"),
        (Method::POST, "/restart"),
        (Method::DELETE, "/restart"),
        (Method::POST, "/reload"),
        (Method::POST, "/reinitialize"),
    ] {
        assert_eq!(call(&http, &base, method.clone(), path, None, false).await.code, 401, "{method} {path}");
    }

    // /config: 502 while absent, 503 for PATCH, then merge with null deletes, validation with the key path.
    assert_eq!(req(Method::GET, "/config", None, false).await.code, 502);
    assert_eq!(req(Method::PATCH, "/config", Some(json!({"ttl": 30})), true).await.code, 503);
    put(&server.dcs, "config", json!({"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"work_mem": "4MB"}}}))
        .await;
    let patched = req(
        Method::PATCH,
        "/config",
        Some(json!({"loop_wait": null, "postgresql": {"parameters": {"work_mem": "8MB"}}})),
        true,
    )
    .await;
    assert_eq!(patched.code, 200, "{patched:?}");
    assert_eq!(patched.json(), json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "8MB"}}}));
    assert_eq!(req(Method::GET, "/config", None, false).await.json(), patched.json());
    let bad = req(Method::PATCH, "/config", Some(json!({"ttl": "soon"})), true).await;
    assert_eq!(bad.code, 400);
    assert!(bad.json()["error"].as_str().is_some_and(|e| e.starts_with("ttl:")), "{bad:?}");
    assert_eq!(req(Method::PATCH, "/config", Some(json!({})), true).await.code, 400);
    let not_json = http
        .patch(format!("{base}/config"))
        .basic_auth(USER, Some(PASSWORD))
        .body("{oops")
        .send()
        .await
        .expect("answered");
    assert_eq!(not_json.status().as_u16(), 400);
    let put_doc = json!({"ttl": 20, "pause": true});
    let replaced = req(Method::PUT, "/config", Some(put_doc.clone()), true).await;
    assert_eq!((replaced.code, replaced.json()), (200, put_doc.clone()));
    assert_eq!(req(Method::GET, "/config", None, false).await.json(), put_doc);
    req(Method::PUT, "/config", Some(json!({"ttl": 20})), true).await;

    // /cluster, /history, /failsafe.
    let dead_port = free_port_block(1);
    put(&server.dcs, "members/pg2", member_json(2, "replica", dead_port)).await;
    put(&server.dcs, "members/pg1", member_json(1, "primary", dead_port)).await;
    let cluster = req(Method::GET, "/cluster", None, false).await.json();
    let names: Vec<&str> =
        cluster["members"].as_array().expect("members").iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!((names, &cluster["scope"]), (vec!["pg1", "pg2"], &json!("apitest")));
    assert_eq!(cluster["members"][1]["role"], "replica");
    assert_eq!(cluster["members"][1]["port"], 5432);
    assert_eq!(req(Method::GET, "/history", None, false).await.json(), json!([]));
    assert_eq!(req(Method::GET, "/failsafe", None, false).await.code, 502);

    // Switchover and failover: the 400 and 412 rows, then a scheduled switchover and its deletion.
    let leader_only = req(Method::POST, "/failover", Some(json!({"leader": "pg1"})), true).await;
    check(&leader_only, 400, "Failover could be performed only to a specific candidate");
    let no_leader = req(Method::POST, "/switchover", Some(json!({"leader": "pg1"})), true).await;
    check(&no_leader, 412, "leader name does not match");
    let missing = req(Method::POST, "/failover", Some(json!({"candidate": "pg9"})), true).await;
    check(&missing, 412, "candidate does not exists");
    let unreachable = req(Method::POST, "/failover", Some(json!({"candidate": "pg2"})), true).await;
    check(&unreachable, 412, "failover is not possible: no good candidates have been found");
    check(&req(Method::DELETE, "/switchover", None, true).await, 404, "no switchover is scheduled");
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let scheduled =
        req(Method::POST, "/switchover", Some(json!({"leader": "pg1", "candidate": "pg2", "scheduled_at": at})), true)
            .await;
    check(&scheduled, 202, "Switchover scheduled");
    let cluster = req(Method::GET, "/cluster", None, false).await.json();
    assert_eq!(
        (&cluster["scheduled_switchover"]["from"], &cluster["scheduled_switchover"]["to"]),
        (&json!("pg1"), &json!("pg2"))
    );
    check(&req(Method::DELETE, "/switchover", None, true).await, 200, "scheduled switchover deleted");
    assert!(req(Method::GET, "/cluster", None, false).await.json().get("scheduled_switchover").is_none());

    // Restarts: scheduled in memory, shown in /patroni, one at a time, deletable.
    check(&req(Method::DELETE, "/restart", None, true).await, 404, "no restarts are scheduled");
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    check(
        &req(Method::POST, "/restart", Some(json!({"schedule": at, "role": "replica"})), true).await,
        202,
        "Restart scheduled",
    );
    let patroni = req(Method::GET, "/patroni", None, false).await.json();
    assert_eq!(patroni["scheduled_restart"]["role"], "replica", "{patroni}");
    check(
        &req(Method::POST, "/restart", Some(json!({"schedule": at})), true).await,
        409,
        "Another restart is already scheduled",
    );
    check(&req(Method::DELETE, "/restart", None, true).await, 200, "scheduled restart deleted");
    check(
        &req(Method::POST, "/restart", Some(json!({"role": "leader"})), true).await,
        400,
        "PostgreSQL role should be either primary, standby_leader, or replica",
    );

    // Requests that reach the HA loop: a stand-in answers them.
    let answering = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(request) = server.requests.recv().await {
            match request {
                HaRequest::Reload { reply } => {
                    seen.push("reload");
                    let _ = reply.send(Ok("reload scheduled".into()));
                }
                HaRequest::Restart { reply, .. } => {
                    seen.push("restart");
                    let _ = reply.send(Ok("restarted successfully".into()));
                }
                HaRequest::Reinitialize { force, reply, .. } => {
                    seen.push(if force { "reinitialize force" } else { "reinitialize" });
                    let _ = reply.send(Err(raftgres::ha::requests::Refusal::IsLeader));
                }
                HaRequest::SetTags { .. } => seen.push("tags"),
            }
            if seen.len() == 3 {
                return seen;
            }
        }
        seen
    });
    check(&req(Method::POST, "/reload", None, true).await, 202, "reload scheduled");
    check(&req(Method::POST, "/restart", None, true).await, 200, "restarted successfully");
    let reinit = req(Method::POST, "/reinitialize", Some(json!({"force": true})), true).await;
    check(&reinit, 503, "I am the leader, can not reinitialize");
    let seen =
        tokio::time::timeout(Duration::from_secs(10), answering).await.expect("stand-in finishes").expect("joins");
    assert_eq!(seen, vec!["reload", "restart", "reinitialize force"]);

    // /metrics carries the raft metrics next to Patroni's.
    let metrics = req(Method::GET, "/metrics", None, false).await.body;
    let samples = parse_metrics(&metrics);
    assert!(samples.get("raftgres_raft_term").is_some_and(|term| *term >= 1.0), "{metrics}");
    assert_eq!(samples.get("raftgres_raft_leader"), Some(&1.0));
}

/// Parses Prometheus text format line by line: every sample is `name{labels} value` after its `# TYPE` line;
/// returns the value of each metric name (each has one sample here).
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut typed = std::collections::BTreeSet::new();
    let mut res = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("a TYPE line names a metric");
            let kind = parts.next().expect("a TYPE line has a kind");
            assert!(matches!(kind, "gauge" | "counter"), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without a value: {line}"));
        let (name, labels) = series.split_once('{').unwrap_or_else(|| panic!("sample without labels: {line}"));
        assert!(labels.ends_with('}') && labels.contains("scope=") && labels.contains("name="), "{line}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        assert!(typed.contains(name), "sample before its TYPE line: {line}");
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("bad value in {line}: {e}"));
        res.insert(name.to_string(), value);
    }
    res
}

/// Runs `openssl` with `args` in `dir`; false when it is missing or fails.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn make_certificates(dir: &Path) -> bool {
    let subject_alt = "subjectAltName=IP:127.0.0.1";
    std::fs::write(dir.join("san.ext"), subject_alt).is_ok()
        && openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=raftgres-test-ca",
            ],
        )
        && ["server", "client"].iter().all(|who| {
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                    "-subj",
                    &format!("/CN={who}"),
                ],
            ) && openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{who}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{who}.crt"),
                    "-days",
                    "2",
                    "-extfile",
                    "san.ext",
                ],
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_optional_client_certificates() {
    let dir = tempfile::tempdir().expect("temp dir");
    if !make_certificates(dir.path()) {
        println!(
            "skipping https_with_optional_client_certificates: openssl is not installed (apt-get install -y openssl)"
        );
        return;
    }
    init_tracing();
    let address = raftgres::config::HostPort { host: "127.0.0.1".into(), port: 8008 };
    let restapi = RestApiConfig {
        listen: address.clone(),
        connect_address: address,
        authentication: Some(BasicAuth { username: USER.into(), password: Secret::new(PASSWORD) }),
        certfile: Some(dir.path().join("server.crt")),
        keyfile: Some(dir.path().join("server.key")),
        keyfile_password: None,
        cafile: Some(dir.path().join("ca.crt")),
        verify_client: VerifyClient::Optional,
        allowlist: vec!["127.0.0.1".into()],
        allowlist_include_members: false,
        http_extra_headers: BTreeMap::new(),
        https_extra_headers: BTreeMap::new(),
        server_tokens: ServerTokens::Original,
    };
    let (_status_tx, status_rx) = watch::channel(NodeStatus::initial("pg1", "tls", tokio::time::Instant::now()));
    let tls = raftgres::api::tls::TlsHandle::from_config(&restapi).expect("certificates load");
    let security = raftgres::api::security::Security::from_config(&restapi);
    let state = ApiState { tls, ..ApiState::new(status_rx).with_security(security) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("https://{}", listener.local_addr().expect("address"));
    tokio::spawn(raftgres::api::serve(listener, state, std::future::pending()));

    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.path().join("ca.crt")).expect("ca")).expect("ca pem");
    let anonymous = reqwest::Client::builder().add_root_certificate(ca.clone()).build().expect("client");
    let mut identity_pem = std::fs::read(dir.path().join("client.crt")).expect("client cert");
    identity_pem.extend(std::fs::read(dir.path().join("client.key")).expect("client key"));
    let identity = reqwest::Identity::from_pem(&identity_pem).expect("identity");
    let with_cert = reqwest::Client::builder().add_root_certificate(ca).identity(identity).build().expect("client");

    // Health checks need no certificate; protected endpoints do (403), then credentials (401).
    let health = anonymous.get(format!("{base}/patroni")).send().await.expect("HTTPS answers");
    assert_eq!(health.status().as_u16(), 200);
    let res = anonymous.post(format!("{base}/reload")).basic_auth(USER, Some(PASSWORD)).send().await.expect("answered");
    assert_eq!((res.status().as_u16(), res.text().await.expect("body")), (403, "client certificate required".into()));
    let res = with_cert.post(format!("{base}/reload")).send().await.expect("answered");
    assert_eq!((res.status().as_u16(), res.text().await.expect("body")), (401, "no auth header received".into()));
    // Past the checks, this health-only server has no HA loop to reload.
    let res = with_cert.post(format!("{base}/reload")).basic_auth(USER, Some(PASSWORD)).send().await.expect("answered");
    assert_eq!(res.status().as_u16(), 503);

    // A client outside the allowlist is refused before anything else.
    let outside = raftgres::api::security::Security::with_allowlist(&["10.0.0.0/8"]);
    let (_status_tx, status_rx) = watch::channel(NodeStatus::initial("pg1", "tls", tokio::time::Instant::now()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let plain = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(raftgres::api::serve(
        listener,
        ApiState::new(status_rx).with_security(outside),
        std::future::pending(),
    ));
    let res = reqwest::Client::new().post(format!("{plain}/reload")).send().await.expect("answered");
    assert_eq!((res.status().as_u16(), res.text().await.expect("body")), (403, "Access is denied".into()));
}

/// `GET /patroni` of a node as JSON.
async fn patroni(http: &reqwest::Client, base: &str) -> Option<Value> {
    http.get(format!("{base}/patroni")).send().await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actions_against_a_live_three_node_cluster() {
    if !pg_available("actions_against_a_live_three_node_cluster") {
        return;
    }
    let (mut spec, dir) = spec();
    spec.restapi_overrides = json!({"authentication": {"username": USER, "password": PASSWORD}});
    let (tc, primary) = start(spec, dir).await;
    let c = &tc.cluster;
    let http = client();
    let replicas: Vec<usize> = (1..=3).filter(|n| *n != primary).collect();
    let (first, second) = (replicas[0], replicas[1]);
    let api = |node: usize| c.api(node);

    // Auth is required and enforced on the live nodes.
    let denied = call(&http, &api(first), Method::POST, "/reload", None, false).await;
    check(&denied, 401, "no auth header received");
    assert_eq!(denied.www_authenticate.as_deref(), Some(r#"Basic realm="Patroni""#));
    check(&call(&http, &api(first), Method::POST, "/reload", None, true).await, 202, "reload scheduled");

    // /metrics parses and agrees with the roles.
    let metrics = call(&http, &api(primary), Method::GET, "/metrics", None, false).await.body;
    let samples = parse_metrics(&metrics);
    assert_eq!(samples.get("patroni_primary"), Some(&1.0), "{metrics}");
    assert!(samples.get("raftgres_raft_term").is_some_and(|term| *term >= 1.0), "{metrics}");
    let replica_metrics = parse_metrics(&call(&http, &api(first), Method::GET, "/metrics", None, false).await.body);
    assert_eq!(replica_metrics.get("patroni_replica"), Some(&1.0));

    // /cluster names the leader and both replicas.
    let cluster = call(&http, &api(first), Method::GET, "/cluster", None, false).await.json();
    let roles: Vec<(String, String)> = cluster["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            (m["name"].as_str().unwrap_or_default().to_string(), m["role"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    assert_eq!(roles.iter().filter(|(_, role)| role == "leader").count(), 1, "{cluster}");
    assert!(roles.contains(&(format!("node{primary}"), "leader".into())), "{cluster}");

    // Failover refused with 412 when no candidate qualifies; switchover from the wrong leader too.
    let missing = call(&http, &api(first), Method::POST, "/failover", Some(json!({"candidate": "node9"})), true).await;
    check(&missing, 412, "candidate does not exists");
    let wrong_leader = json!({"leader": format!("node{first}"), "candidate": format!("node{second}")});
    check(
        &call(&http, &api(first), Method::POST, "/switchover", Some(wrong_leader), true).await,
        412,
        "leader name does not match",
    );

    // Restart of a replica: 200, and it streams again.
    check(&call(&http, &api(first), Method::POST, "/restart", None, true).await, 200, "restarted successfully");
    eventually(Duration::from_secs(60), "the restarted replica is back in recovery", || async {
        (in_recovery(c, first).await == Some(true)).then_some(())
    })
    .await;

    // A dynamic parameter change reaches PostgreSQL by reload; a restart-only one shows as pending_restart.
    let patch = json!({"postgresql": {"parameters": {"work_mem": "8MB", "max_connections": 110}}});
    let patched = call(&http, &api(second), Method::PATCH, "/config", Some(patch), true).await;
    assert_eq!(patched.code, 200, "{patched:?}");
    for node in 1..=3 {
        eventually(Duration::from_secs(60), &format!("node{node} runs with work_mem 8MB"), || async {
            let client = connect(c, node).await?;
            let row = client.query_one("SHOW work_mem", &[]).await.ok()?;
            (row.get::<_, String>(0) == "8MB").then_some(())
        })
        .await;
    }
    eventually(Duration::from_secs(60), "the primary reports pending_restart", || async {
        (patroni(&http, &api(primary)).await?["pending_restart"] == json!(true)).then_some(())
    })
    .await;

    // Reinitialize: refused on the leader, accepted on a replica that then streams again.
    let on_leader = call(&http, &api(primary), Method::POST, "/reinitialize", None, true).await;
    check(&on_leader, 503, "I am the leader, can not reinitialize");
    check(
        &call(&http, &api(second), Method::POST, "/reinitialize", Some(json!({"force": true})), true).await,
        200,
        "reinitialize started",
    );
    let streaming = format!(
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'node{second}' AND state = 'streaming'"
    );
    eventually(Duration::from_secs(90), "the reinitialized replica streams again", || async {
        (count(c, primary, &streaming).await == Some(1) && in_recovery(c, second).await == Some(true)).then_some(())
    })
    .await;

    // Switchover to a named candidate changes the primary.
    let request = json!({"leader": format!("node{primary}"), "candidate": format!("node{first}")});
    let switched = call(&http, &api(second), Method::POST, "/switchover", Some(request), true).await;
    check(&switched, 200, &format!(r#"Successfully switched over to "node{first}""#));
    let new = new_primary(c, primary, Duration::from_secs(60)).await;
    assert_eq!(new, first, "the named candidate is the new primary\n{}", logs(c));
    eventually(Duration::from_secs(90), "the old primary rejoins as a replica", || async {
        (in_recovery(c, primary).await == Some(true)).then_some(())
    })
    .await;

    // A scheduled switchover waits in the failover key and is carried out by the leader when due.
    let at = (chrono::Utc::now() + chrono::Duration::seconds(5)).to_rfc3339();
    let request = json!({"leader": format!("node{first}"), "candidate": format!("node{second}"), "scheduled_at": at});
    check(
        &call(&http, &api(primary), Method::POST, "/switchover", Some(request), true).await,
        202,
        "Switchover scheduled",
    );
    let cluster = call(&http, &api(primary), Method::GET, "/cluster", None, false).await.json();
    assert_eq!(cluster["scheduled_switchover"]["to"], json!(format!("node{second}")), "{cluster}");
    let scheduled = new_primary(c, first, Duration::from_secs(60)).await;
    assert_eq!(scheduled, second, "the scheduled candidate is the new primary\n{}", logs(c));
    finish(c, &[]).await;
}
