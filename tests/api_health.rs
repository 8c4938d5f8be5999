//! The REST API over a real socket, as HAProxy sees it: health codes follow the watched `NodeStatus`,
//! HEAD and `/liveness` have empty bodies, `/metrics` parses as Prometheus text, and garbage on the wire
//! neither panics nor stops the server.
//!
//! No PostgreSQL and no raft here: the test plays the HA loop by sending snapshots into the watch channel.

use std::net::SocketAddr;
use std::time::Duration;

use raftgres::api;
use raftgres::api::ApiState;
use raftgres::postgres::types::Lsn;
use raftgres::postgres::types::TimelineId;
use raftgres::status::ClusterSummary;
use raftgres::status::NodeStatus;
use raftgres::status::PgState;
use raftgres::status::Role;
use raftgres::status::WalPosition;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A running API server and the handles a test drives it with.
struct Server {
    addr: SocketAddr,
    status_tx: watch::Sender<NodeStatus>,
    shutdown_tx: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
    client: reqwest::Client,
}

impl Server {
    async fn start(status: NodeStatus) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind an ephemeral port");
        let addr = listener.local_addr().expect("bound socket has an address");
        let (status_tx, status_rx) = watch::channel(status);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = shutdown_rx.await;
        };
        let task = tokio::spawn(api::serve(listener, ApiState::new(status_rx), shutdown));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client builds");
        Server { addr, status_tx, shutdown_tx, task, client }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET `path`; returns the code and the body text.
    async fn get(&self, path: &str) -> (u16, String) {
        let res = self.client.get(self.url(path)).send().await.expect("GET is answered");
        let code = res.status().as_u16();
        (code, res.text().await.expect("body reads"))
    }

    async fn stop(self) {
        let _ = self.shutdown_tx.send(());
        let res = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        res.expect("server stops after shutdown").expect("server task does not panic").expect("serve returns Ok");
    }
}

fn leader() -> NodeStatus {
    let now = Instant::now();
    let mut status = NodeStatus::initial("pg1", "batman", now);
    status.next_cycle_at = now + Duration::from_secs(1);
    status.leader_until = Some(now + Duration::from_secs(3600));
    status.pg.state = PgState::Running;
    status.pg.role = Role::Primary;
    status.pg.server_version = Some(160004);
    status.pg.timeline = Some(TimelineId(1));
    status.pg.wal = WalPosition::Primary { location: Lsn(0x0300_0000) };
    status.cluster = Some(ClusterSummary {
        leader: Some("pg1".into()),
        leader_optime: Some(Lsn(0x0300_0000)),
        sync_standbys: Vec::new(),
        quorum_mode: false,
    });
    status
}

fn replica() -> NodeStatus {
    let mut status = leader();
    status.leader_until = None;
    status.pg.role = Role::Replica;
    status.pg.replication_state = Some("streaming".into());
    status.pg.wal = WalPosition::Replica {
        received: Some(Lsn(0x0300_0000)),
        replayed: Some(Lsn(0x0300_0000)),
        replayed_timestamp: None,
        paused: false,
        latest_end: Some(Lsn(0x0300_0000)),
    };
    if let Some(cluster) = status.cluster.as_mut() {
        cluster.leader = Some("pg0".into());
    }
    status
}

#[tokio::test]
async fn health_codes_follow_the_watched_status() {
    let server = Server::start(leader()).await;

    let (code, body) = server.get("/").await;
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("GET / answers JSON");
    assert_eq!(json["role"], "primary");
    assert_eq!(json["patroni"]["name"], "pg1");
    assert_eq!(server.get("/replica").await.0, 503);

    let head = server.client.head(server.url("/primary")).send().await.expect("HEAD is answered");
    assert_eq!(head.status().as_u16(), 200);
    assert!(head.bytes().await.expect("body reads").is_empty());
    let options = server.client.request(reqwest::Method::OPTIONS, server.url("/replica")).send().await;
    let options = options.expect("OPTIONS is answered");
    assert_eq!(options.status().as_u16(), 503);
    assert!(options.bytes().await.expect("body reads").is_empty());

    assert_eq!(server.get("/liveness").await, (200, String::new()));
    assert_eq!(server.get("/readiness").await, (200, String::new()));

    let (code, body) = server.get("/no-such-endpoint").await;
    assert_eq!(code, 503);
    let json: serde_json::Value = serde_json::from_str(&body).expect("unknown GET path answers JSON");
    assert_eq!(json["state"], "running");

    let (code, body) = server.get("/patroni").await;
    assert_eq!(code, 200);
    assert!(!body.contains("cluster_unlocked"), "{body}");

    server.status_tx.send(replica()).expect("the server holds a receiver");
    assert_eq!(server.get("/replica").await.0, 200);
    assert_eq!(server.get("/replica?lag=1MB").await.0, 200);
    assert_eq!(server.get("/primary").await.0, 503);
    assert_eq!(server.get("/").await.0, 503);
    let (code, body) = server.get("/patroni").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("GET /patroni answers JSON");
    assert_eq!(json["role"], "replica");
    assert_eq!(json["xlog"]["replayed_location"], 0x0300_0000);

    let res = server.client.post(server.url("/no-such-action")).body("{}").send().await.expect("POST is answered");
    assert_eq!(res.status().as_u16(), 501);
    let json: serde_json::Value = res.json().await.expect("501 answers JSON");
    assert!(json["error"].is_string());
    let res = server.client.post(server.url("/switchover")).body("{}").send().await.expect("POST is answered");
    assert_eq!(res.status().as_u16(), 400, "an empty object is a bad request");
    let json: serde_json::Value = res.json().await.expect("400 answers JSON");
    assert!(json["error"].is_string());

    server.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let server = Server::start(leader()).await;
    let res = server.client.get(server.url("/metrics")).send().await.expect("GET /metrics is answered");
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res.headers().get("content-type").and_then(|value| value.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await.expect("body reads");
    let mut n_samples = 0;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
        let (name, labels) = series.split_once('{').expect("every sample has labels");
        assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{line}");
        // Every sample carries scope and name; `raftgres_build_info` also its version label.
        let labels = if name == "raftgres_build_info" {
            labels.split_once(',').map_or(labels, |(version, rest)| {
                assert!(version.starts_with("version=\""), "{line}");
                rest
            })
        } else {
            labels
        };
        assert_eq!(labels, r#"scope="batman",name="pg1"}"#, "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
        n_samples += 1;
    }
    assert!(n_samples >= 20, "{text}");
    assert!(text.contains("\npatroni_primary{scope=\"batman\",name=\"pg1\"} 1\n"), "{text}");
    server.stop().await;
}

/// Sends `bytes` on a fresh connection and returns whatever comes back before the server closes it.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may reset the connection mid-write on garbage; only its survival matters.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn garbage_on_the_wire_does_not_stop_the_server() {
    let server = Server::start(leader()).await;
    let garbage: [&[u8]; 5] = [
        b"\x00\xff\xfe garbage \r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /primary HTTP/9.9\r\n\r\n",
        b"GET /%zz?lag=%ff&tag_%=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /switchover HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n{",
    ];
    for bytes in garbage {
        let reply = raw_exchange(server.addr, bytes).await;
        assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 "), "{reply:?}");
    }
    let reply = raw_exchange(server.addr, b"HEAD / HTTP/1.0\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.0 200 OK\r\n") || reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply:?}");
    assert_eq!(server.get("/primary").await.0, 200);
    server.stop().await;
}
