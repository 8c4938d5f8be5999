//! Tests of `raft::faultproxy` over real sockets: each link mode against a recording echo server, and a 3-node mesh.
//!
//! No test asserts timing: waiting uses `eventually`, and "nothing arrives" is a read that must time out.
#![allow(clippy::unwrap_used, reason = "test crate: `allow-unwrap-in-tests` does not reach its helper functions")]

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use raft::faultproxy::FaultProxy;
use raft::faultproxy::LinkMode;
use raft::faultproxy::ProxyMesh;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio::time::Instant;

/// How long `eventually` and any single network step may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long a read must stay silent for "nothing arrives" to hold.
const SILENCE: Duration = Duration::from_millis(300);

/// A TCP server that records every byte it receives, sends `banner` to each new client, then echoes.
struct Upstream {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    task: JoinHandle<()>,
}

impl Upstream {
    async fn start(banner: &'static [u8]) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&received);
        let task = tokio::spawn(async move {
            // Dropping the JoinSet when this task is aborted ends every connection too.
            let mut connections = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(echo(stream, banner, Arc::clone(&recorded)));
            }
        });
        Upstream { addr, received, task }
    }

    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(mut stream: TcpStream, banner: &'static [u8], recorded: Arc<Mutex<Vec<u8>>>) {
    if stream.write_all(banner).await.is_err() {
        return;
    }
    let mut buf = [0_u8; 4096];
    while let Ok(n_read @ 1..) = stream.read(&mut buf).await {
        recorded.lock().unwrap().extend_from_slice(&buf[..n_read]);
        if stream.write_all(&buf[..n_read]).await.is_err() {
            return;
        }
    }
}

/// Polls `probe` until it holds, failing the test with `what` once `deadline` has passed.
async fn eventually<F, Fut>(deadline: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up_at = Instant::now() + deadline;
    while !probe().await {
        assert!(Instant::now() < give_up_at, "not within {deadline:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect(addr: impl tokio::net::ToSocketAddrs) -> TcpStream {
    timeout(DEADLINE, TcpStream::connect(addr)).await.expect("connect in time").expect("connect")
}

/// Writes `message` on `stream` and reads back exactly as many bytes.
async fn exchange(stream: &mut TcpStream, message: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut reply = vec![0_u8; message.len()];
    timeout(DEADLINE, stream.read_exact(&mut reply)).await??;
    Ok(reply)
}

/// A fresh connection to `addr` echoes `message`.
async fn echoes(addr: impl tokio::net::ToSocketAddrs, message: &[u8]) -> bool {
    let Ok(Ok(mut stream)) = timeout(DEADLINE, TcpStream::connect(addr)).await else { return false };
    exchange(&mut stream, message).await.is_ok_and(|reply| reply == message)
}

/// Nothing can be read from `stream` within `SILENCE`.
async fn assert_silent(stream: &mut TcpStream, what: &str) {
    let mut buf = [0_u8; 64];
    let read = timeout(SILENCE, stream.read(&mut buf)).await;
    assert!(read.is_err(), "{what}: expected silence, read {read:?}");
}

/// The peer closed or reset `stream`: a read returns EOF or an error within `DEADLINE`.
async fn assert_closed(stream: &mut TcpStream, what: &str) {
    let mut buf = [0_u8; 64];
    match timeout(DEADLINE, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => {}
        other => panic!("{what}: expected EOF or an error, got {other:?}"),
    }
}

async fn proxy_to(upstream: &Upstream) -> FaultProxy {
    FaultProxy::start("127.0.0.1:0", upstream.addr.to_string()).await.unwrap()
}

#[tokio::test]
async fn pass_echoes_and_counts_bytes() {
    let upstream = Upstream::start(b"").await;
    let proxy = proxy_to(&upstream).await;
    assert_eq!(proxy.mode(), LinkMode::Pass);
    let mut stream = connect(proxy.local_addr()).await;
    assert_eq!(exchange(&mut stream, b"hello").await.unwrap(), b"hello");
    assert_eq!(exchange(&mut stream, b" world").await.unwrap(), b" world");
    assert_eq!(upstream.received(), b"hello world");
    eventually(DEADLINE, "both directions counted", || async {
        let stats = proxy.stats();
        stats.bytes_forward == 11 && stats.bytes_backward == 11
    })
    .await;
    let stats = proxy.stats();
    assert_eq!((stats.n_accepted, stats.n_refused, stats.n_blackholed, stats.bytes_dropped), (1, 0, 0, 0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn refuse_resets_new_and_live_connections() {
    let upstream = Upstream::start(b"").await;
    let proxy = proxy_to(&upstream).await;
    let mut live = connect(proxy.local_addr()).await;
    assert_eq!(exchange(&mut live, b"ping").await.unwrap(), b"ping");

    proxy.set(LinkMode::Refuse);
    assert_closed(&mut live, "live connection after Refuse").await;
    let mut refused = connect(proxy.local_addr()).await;
    assert_closed(&mut refused, "new connection under Refuse").await;
    assert_eq!(proxy.stats().n_refused, 1);

    proxy.set(LinkMode::Pass);
    assert!(echoes(proxy.local_addr(), b"back").await, "a new connection works after Refuse");
}

#[tokio::test]
async fn blackhole_stalls_then_closes_when_lifted() {
    let upstream = Upstream::start(b"").await;
    let proxy = proxy_to(&upstream).await;
    let mut live = connect(proxy.local_addr()).await;
    assert_eq!(exchange(&mut live, b"before").await.unwrap(), b"before");

    proxy.set(LinkMode::Blackhole);
    live.write_all(b"stalled").await.unwrap();
    assert_silent(&mut live, "live connection under Blackhole").await;
    let mut held = connect(proxy.local_addr()).await;
    held.write_all(b"held").await.unwrap();
    assert_silent(&mut held, "new connection under Blackhole").await;
    assert_eq!(upstream.received(), b"before", "nothing crossed the black hole");
    eventually(DEADLINE, "held connection counted", || async { proxy.stats().n_blackholed == 1 }).await;

    proxy.set(LinkMode::Pass);
    assert_closed(&mut live, "live connection once Blackhole is lifted").await;
    assert_closed(&mut held, "held connection once Blackhole is lifted").await;
    assert!(echoes(proxy.local_addr(), b"after").await, "a new connection works after Blackhole");
}

#[tokio::test]
async fn delay_holds_bytes_back_and_keeps_order() {
    let upstream = Upstream::start(b"").await;
    let proxy = proxy_to(&upstream).await;
    // Longer than SILENCE, so "nothing yet" cannot flake: the proxy never releases a chunk early.
    proxy.set(LinkMode::Delay(SILENCE * 3));
    let mut stream = connect(proxy.local_addr()).await;
    let messages: Vec<Vec<u8>> = (0..5).map(|i| format!("message-{i};").into_bytes()).collect();
    for message in &messages {
        stream.write_all(message).await.unwrap();
    }
    assert_silent(&mut stream, "echo before the delay has passed").await;
    let expected = messages.concat();
    let mut reply = vec![0_u8; expected.len()];
    timeout(DEADLINE, stream.read_exact(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply, expected);

    // A live connection survives leaving Delay: no bytes were lost.
    proxy.set(LinkMode::Pass);
    assert_eq!(exchange(&mut stream, b"undelayed").await.unwrap(), b"undelayed");
}

#[tokio::test]
async fn one_way_forward_drops_client_bytes_only() {
    let upstream = Upstream::start(b"banner").await;
    let proxy = proxy_to(&upstream).await;
    proxy.set(LinkMode::OneWayForward);
    let mut stream = connect(proxy.local_addr()).await;
    let mut banner = [0_u8; 6];
    timeout(DEADLINE, stream.read_exact(&mut banner)).await.unwrap().unwrap();
    assert_eq!(&banner, b"banner", "upstream to client still flows");

    stream.write_all(b"lost").await.unwrap();
    assert_silent(&mut stream, "no echo of dropped bytes").await;
    assert_eq!(upstream.received(), b"", "upstream received nothing");
    eventually(DEADLINE, "dropped bytes counted", || async { proxy.stats().bytes_dropped == 4 }).await;

    // The stream now has a hole, so leaving the lossy mode closes it rather than resuming it.
    proxy.set(LinkMode::Pass);
    assert_closed(&mut stream, "connection once OneWayForward is lifted").await;
}

#[tokio::test]
async fn one_way_backward_delivers_but_never_replies() {
    let upstream = Upstream::start(b"").await;
    let proxy = proxy_to(&upstream).await;
    proxy.set(LinkMode::OneWayBackward);
    let mut stream = connect(proxy.local_addr()).await;
    stream.write_all(b"request").await.unwrap();
    eventually(DEADLINE, "upstream received the request", || async { upstream.received() == b"request" }).await;
    assert_silent(&mut stream, "the echo is dropped").await;
    eventually(DEADLINE, "dropped echo counted", || async { proxy.stats().bytes_dropped == 7 }).await;
}

#[tokio::test]
async fn shutdown_closes_listener_and_connections() {
    let upstream = Upstream::start(b"").await;
    let proxy = proxy_to(&upstream).await;
    let addr = proxy.local_addr();
    let mut live = connect(addr).await;
    assert_eq!(exchange(&mut live, b"ping").await.unwrap(), b"ping");
    proxy.shutdown().await;
    assert_closed(&mut live, "live connection after shutdown").await;
    assert!(TcpStream::connect(addr).await.is_err(), "nothing listens after shutdown");
}

async fn three_upstreams() -> (BTreeMap<u64, Upstream>, ProxyMesh) {
    let mut upstreams = BTreeMap::new();
    for node in 1..=3 {
        upstreams.insert(node, Upstream::start(b"").await);
    }
    let targets = upstreams.iter().map(|(&node, upstream)| (node, upstream.addr.to_string())).collect();
    let mesh = ProxyMesh::start(&targets).await.unwrap();
    (upstreams, mesh)
}

/// Every directed link of the 3-node mesh.
const ALL_LINKS: [(u64, u64); 6] = [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)];

/// A fresh connection over each link in `open` echoes, and one over every other link gets nothing back.
async fn assert_links(mesh: &ProxyMesh, open: &[(u64, u64)]) {
    for (from, to) in ALL_LINKS {
        let (addr, message) = (mesh.addr(from, to), format!("{from}->{to}"));
        if open.contains(&(from, to)) {
            assert!(echoes(addr.as_str(), message.as_bytes()).await, "link {from}->{to} should be open");
            continue;
        }
        let mut stream = connect(addr.as_str()).await;
        // Under Refuse the write itself may already see the reset; either way no echo may come back.
        if stream.write_all(message.as_bytes()).await.is_ok() {
            let mut reply = vec![0_u8; message.len()];
            let read = timeout(SILENCE, stream.read_exact(&mut reply)).await;
            assert!(!matches!(read, Ok(Ok(_))), "link {from}->{to} should be cut, got {reply:?}");
        }
    }
}

#[tokio::test]
async fn mesh_isolate_and_heal() {
    let (_upstreams, mesh) = three_upstreams().await;
    assert_links(&mesh, &ALL_LINKS).await;

    mesh.isolate(1, LinkMode::Blackhole);
    assert_links(&mesh, &[(2, 3), (3, 2)]).await;
    mesh.heal_all();
    assert_links(&mesh, &ALL_LINKS).await;

    mesh.isolate(2, LinkMode::Refuse);
    let mut refused = connect(mesh.addr(1, 2).as_str()).await;
    assert_closed(&mut refused, "isolated by Refuse").await;
    assert_links(&mesh, &[(1, 3), (3, 1)]).await;
    mesh.heal_all();
    assert_links(&mesh, &ALL_LINKS).await;
    mesh.shutdown().await;
}

#[tokio::test]
async fn mesh_one_way_and_set_link() {
    let (_upstreams, mesh) = three_upstreams().await;
    mesh.one_way(1, 2);
    assert_eq!((mesh.link(1, 2).mode(), mesh.link(2, 1).mode()), (LinkMode::Blackhole, LinkMode::Pass));
    assert_links(&mesh, &[(1, 3), (2, 1), (2, 3), (3, 1), (3, 2)]).await;
    mesh.heal_all();

    mesh.set_link(3, 1, LinkMode::Refuse);
    assert_links(&mesh, &[(1, 2), (1, 3), (2, 1), (2, 3), (3, 2)]).await;
    mesh.heal_all();
    assert_links(&mesh, &ALL_LINKS).await;
}
