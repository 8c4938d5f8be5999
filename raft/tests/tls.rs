//! Mutual TLS on the peer port, with real sockets and real certificates from
//! `network::certs`: a cluster forms and commits over TLS; a node with a certificate from
//! another CA cannot vote or join; a node presenting another node's name is refused with 403;
//! a client refuses a server that does not name the peer it meant; an expired certificate
//! stops the start with a clear error; a reload (what SIGHUP calls) keeps the cluster up and new
//! connections get the new certificate.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::Duration;

use raft::command::Command;
use raft::command::Guard;
use raft::config::PeerConfig;
use raft::config::PeerTransport;
use raft::config::TlsFiles;
use raft::network::certs::write_file;
use raft::network::certs::ClusterCa;
use raft::network::certs::Validity;
use raft::network::tls::PeerTls;
use raft::network::Wire;
use raft::NodeId;
use raft::RaftConfig;
use raft::RaftNode;
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::pki_types::ServerName;

const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every log line of this test binary, so tests can check what an operator would read.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn,raft=info"))
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

fn logged(needle: &str) -> bool {
    String::from_utf8_lossy(&logs().lock().unwrap_or_else(|p| p.into_inner())).contains(needle)
}

async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < end, "timed out after {deadline:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[path = "common/ports.rs"]
mod ports;
use ports::free_addr;

/// Writes the CA and a certificate for `name` into `dir`; returns the node's files.
fn write_node_files(dir: &Path, ca: &ClusterCa, name: &str, validity: Validity) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("create cert dir");
    let files = TlsFiles {
        cafile: dir.join("ca.crt"),
        certfile: dir.join(format!("{name}.crt")),
        keyfile: dir.join(format!("{name}.key")),
    };
    let node = ca.issue_node(name, &["127.0.0.1".to_string()], validity).expect("issue node cert");
    write_file(&files.cafile, &ca.pem().cert_pem, 0o644).expect("write CA");
    write_file(&files.certfile, &node.cert_pem, 0o644).expect("write cert");
    write_file(&files.keyfile, &node.key_pem, 0o600).expect("write key");
    files
}

struct TlsCluster {
    ca: ClusterCa,
    peers: Vec<PeerConfig>,
    nodes: Vec<RaftNode>,
    dir: tempfile::TempDir,
}

impl TlsCluster {
    async fn start(n: u64) -> TlsCluster {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ClusterCa::generate("tls-test", Validity::days_from_now(30)).expect("generate CA");
        let peers: Vec<PeerConfig> = (1..=n)
            .map(|id| PeerConfig { id, name: format!("node{id}"), raft_addr: free_addr(), api_addr: String::new() })
            .collect();
        let mut cluster = TlsCluster { ca, peers, nodes: Vec::new(), dir };
        for id in 1..=n {
            let files = cluster.files(id);
            let node = RaftNode::start(cluster.config(id, files)).await.expect("start raft node over TLS");
            cluster.nodes.push(node);
        }
        cluster.wait_leader().await;
        cluster
    }

    fn files(&self, id: NodeId) -> TlsFiles {
        write_node_files(&self.dir.path().join("certs"), &self.ca, &format!("node{id}"), Validity::days_from_now(30))
    }

    fn config(&self, id: NodeId, files: TlsFiles) -> RaftConfig {
        let mut cfg = RaftConfig::new(id, "tls-test", self.peers.clone(), self.dir.path().join(format!("node{id}")));
        cfg.transport = PeerTransport::Tls(files);
        cfg
    }

    fn node(&self, id: NodeId) -> &RaftNode {
        &self.nodes[usize::try_from(id - 1).expect("small id")]
    }

    fn addr(&self, id: NodeId) -> String {
        self.node(id).local_addr().to_string()
    }

    async fn wait_leader(&self) -> (NodeId, u64) {
        eventually(Duration::from_secs(20), "a leader every node agrees on", || async {
            let statuses: Vec<_> = self.nodes.iter().map(|n| n.status()).collect();
            let leader = statuses.first()?.leader?;
            statuses.iter().all(|s| s.leader == Some(leader)).then(|| (leader, statuses[0].term))
        })
        .await
    }

    async fn write_everywhere(&self, key: &str, value: &str) {
        for node in &self.nodes {
            node.write(Command::put(key, value, Guard::Always), WRITE_TIMEOUT).await.expect("write commits over TLS");
        }
        eventually(Duration::from_secs(10), "every node applied the write", || async {
            self.nodes.iter().all(|n| n.view().get(key).is_some_and(|v| v.value == value)).then_some(())
        })
        .await;
    }

    async fn shutdown(self) {
        for node in &self.nodes {
            node.shutdown().await.expect("shut down");
        }
    }
}

/// A raw HTTPS client presenting `identity` (cert PEM, key PEM) and trusting `ca_pem`, with
/// the ordinary name check against `server_name`.
fn raw_client(ca_pem: &str, identity: (&str, &str)) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM")).expect("add CA");
    let certs = vec![CertificateDer::from_pem_slice(identity.0.as_bytes()).expect("cert PEM")];
    let key = PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).expect("key PEM");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client identity");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder().use_preconfigured_tls(config).no_proxy().build().expect("client")
}

fn vote_body(from: NodeId, to: NodeId, term: u64) -> Vec<u8> {
    let vote = openraft::raft::VoteRequest::<NodeId> { vote: openraft::Vote::new(term, from), last_log_id: None };
    let wire = Wire {
        version: raft::network::PROTOCOL_VERSION,
        cluster_id: raft::config::cluster_id_of("tls-test"),
        from,
        to,
        body: vote,
    };
    raft::network::encode(&wire).expect("encode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_forms_and_commits_over_mutual_tls() {
    let cluster = TlsCluster::start(3).await;
    cluster.write_everywhere("k", "v").await;
    // The peer port does not speak plaintext.
    let plain = reqwest::Client::new().post(format!("http://{}/raft/status", cluster.addr(1))).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "plaintext must not be served");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_from_another_ca_cannot_vote_or_join() {
    let cluster = TlsCluster::start(3).await;
    let (leader, term) = cluster.wait_leader().await;
    // A fourth node whose CA is not the cluster's: same cluster name, lists every member.
    let rogue_ca = ClusterCa::generate("tls-test", Validity::days_from_now(30)).expect("rogue CA");
    let rogue_files =
        write_node_files(&cluster.dir.path().join("rogue"), &rogue_ca, "node4", Validity::days_from_now(30));
    let mut peers = cluster.peers.clone();
    peers.push(PeerConfig { id: 4, name: "node4".into(), raft_addr: free_addr(), api_addr: String::new() });
    let mut cfg = RaftConfig::new(4, "tls-test", peers, cluster.dir.path().join("node4"));
    cfg.transport = PeerTransport::Tls(rogue_files);
    let rogue = RaftNode::start(cfg).await.expect("the rogue node itself starts");
    // It also tries a vote with a much higher term, trusting the real CA so only its own
    // certificate is at fault.
    let rogue_cert = rogue_ca.issue_node("node1", &[], Validity::days_from_now(1)).expect("rogue cert");
    let client = raw_client(&cluster.ca.pem().cert_pem, (&rogue_cert.cert_pem, &rogue_cert.key_pem));
    let url = format!("https://{}/raft/vote", cluster.addr(leader));
    let res = client.post(&url).body(vote_body(4, leader, term + 100)).send().await;
    assert!(res.is_err(), "a foreign client certificate must fail the handshake: {res:?}");
    eventually(Duration::from_secs(10), "the refusal is logged with its reason", || async {
        (logged("refused raft peer connection: TLS handshake failed")
            && logged("invalid peer certificate: UnknownIssuer"))
        .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = cluster.node(leader).status();
    assert_eq!(status.leader, Some(leader), "the cluster keeps its leader");
    assert_eq!(status.term, term, "no vote from the rogue node reached the cluster");
    assert_eq!(status.voters, vec![1, 2, 3]);
    assert!(!rogue.is_initialized().await, "the rogue node never learned the cluster");
    cluster.write_everywhere("after-rogue", "ok").await;
    rogue.shutdown().await.expect("shut down rogue");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_speaking_for_another_is_refused() {
    let cluster = TlsCluster::start(3).await;
    let (leader, term) = cluster.wait_leader().await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");
    let other = (1..=3).find(|id| *id != leader && *id != follower).expect("a third node");
    // Node `other`'s real certificate, used to claim to be `follower`.
    let files = cluster.files(other);
    let tls = PeerTls::load(&files, &format!("node{other}"), Duration::from_secs(1)).expect("load");
    let client = tls.client_for(Some(&format!("node{leader}"))).expect("client");
    let url = format!("https://{}/raft/vote", cluster.addr(leader));
    let res = client.post(&url).body(vote_body(follower, leader, term + 100)).send().await.expect("answered");
    assert_eq!(res.status().as_u16(), 403);
    let text = res.text().await.expect("body");
    assert!(text.contains(&format!("does not name \"node{follower}\"")), "{text}");
    assert!(text.contains(&format!("it names node{other} (node {other})")), "{text}");
    assert!(logged("rejected peer message"), "the refusal is logged");
    // Speaking for itself works (the vote is answered, and refused by Raft for its old log).
    let res = client.post(&url).body(vote_body(other, leader, 0)).send().await.expect("answered");
    assert_eq!(res.status().as_u16(), 200);
    // The client refuses a server that is not the node it meant to reach.
    let wrong = tls.client_for(Some(&format!("node{follower}"))).expect("client");
    let err = wrong.post(&url).body(vote_body(other, leader, 0)).send().await.expect_err("wrong server name");
    let chain = raft::network::client::error_chain(&err);
    assert!(chain.contains("not valid for name"), "{chain}");
    assert_eq!(cluster.node(leader).status().term, term, "the refused vote changed nothing");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_stops_the_start_with_a_clear_error() {
    init_tracing();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = ClusterCa::generate("tls-test", Validity::days_from_now(30)).expect("CA");
    let now = time::OffsetDateTime::now_utc();
    let expired =
        Validity { not_before: now - Duration::from_secs(10 * 86_400), not_after: now - Duration::from_secs(86_400) };
    let files = write_node_files(dir.path(), &ca, "node1", expired);
    let peers = vec![PeerConfig { id: 1, name: "node1".into(), raft_addr: free_addr(), api_addr: String::new() }];
    let mut cfg = RaftConfig::new(1, "tls-test", peers.clone(), dir.path().join("raft"));
    cfg.transport = PeerTransport::Tls(files);
    let err = RaftNode::start(cfg).await.err().expect("an expired certificate is refused").to_string();
    assert!(err.contains("raft.tls.certfile") && err.contains("expired at"), "{err}");
    // A certificate for another node is refused too.
    let files = write_node_files(&dir.path().join("other"), &ca, "node2", Validity::days_from_now(1));
    let mut cfg = RaftConfig::new(1, "tls-test", peers, dir.path().join("raft2"));
    cfg.transport = PeerTransport::Tls(files);
    let err = RaftNode::start(cfg).await.err().expect("a foreign name is refused").to_string();
    assert!(err.contains("does not name this node \"node1\""), "{err}");
}

/// The certificate a fresh TLS connection to `addr` is served.
async fn served_cert(addr: &str, ca_pem: &str, identity: (&str, &str)) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM")).expect("add CA");
    let certs = vec![CertificateDer::from_pem_slice(identity.0.as_bytes()).expect("cert PEM")];
    let key = PrivateKeyDer::from_pem_slice(identity.1.as_bytes()).expect("key PEM");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("identity");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = connector.connect(ServerName::try_from("node1").expect("name"), tcp).await.expect("handshake");
    stream.get_ref().1.peer_certificates().and_then(|c| c.first()).cloned().expect("a server certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_rotates_the_certificate_without_dropping_the_cluster() {
    let cluster = TlsCluster::start(3).await;
    cluster.write_everywhere("before", "1").await;
    let client_identity = cluster.ca.issue_node("probe", &[], Validity::days_from_now(1)).expect("probe cert");
    let ca_pem = cluster.ca.pem().cert_pem;
    let identity = (client_identity.cert_pem.as_str(), client_identity.key_pem.as_str());
    let old = served_cert(&cluster.addr(1), &ca_pem, identity).await;
    // New files for node1 under the same CA, with a different lifetime so they are told apart.
    let certs_dir = cluster.dir.path().join("certs");
    let files = write_node_files(&certs_dir, &cluster.ca, "node1", Validity::days_from_now(90));
    let summary = cluster.node(1).reload_tls().await.expect("reload").expect("TLS is on");
    assert_eq!(summary.certfile, files.certfile.display().to_string());
    let new = served_cert(&cluster.addr(1), &ca_pem, identity).await;
    assert_ne!(old, new, "a new connection gets the new certificate");
    let on_disk = CertificateDer::from_pem_file(&files.certfile).expect("read new cert");
    assert_eq!(new, on_disk);
    cluster.write_everywhere("after", "2").await;
    // A broken file is refused and the old certificate stays in use.
    std::fs::write(&files.certfile, "not a certificate").expect("break the file");
    let err = cluster.node(1).reload_tls().await.expect_err("a broken file is refused").to_string();
    assert!(err.contains("raft.tls.certfile"), "{err}");
    assert_eq!(served_cert(&cluster.addr(1), &ca_pem, identity).await, new);
    cluster.write_everywhere("still", "3").await;
    cluster.shutdown().await;
}
