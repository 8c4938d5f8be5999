//! A fault-injecting TCP proxy, and a mesh of them, that cut, delay and one-way-partition links.
//!
//! This module owns [`FaultProxy`] (one listener forwarding to one upstream under a [`LinkMode`] switchable at any
//! time) and [`ProxyMesh`] (one proxy per ordered pair of nodes, so each direction of each link fails on its own).
//! It is test and chaos-harness infrastructure: a production node never starts one, and nothing else in this crate
//! calls it. It only moves bytes and must not know Raft, HTTP or PostgreSQL.
//! Every task it spawns belongs to the proxy and ends on `shutdown` or drop.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWrite;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use tracing::debug_span;
use tracing::info;
use tracing::warn;
use tracing::Instrument;

use crate::NodeId;

/// Bytes read from a socket at once; a chunk is the unit that is delayed or dropped.
const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks one direction may hold in its delay line before it stops reading (back-pressure).
const DELAY_LINE_CHUNKS: usize = 256;
/// Pause after a failed `accept` (for example EMFILE) so the accept loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How a proxied link treats traffic; switch it at any time with [`FaultProxy::set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkMode {
    /// Forward bytes both ways unchanged.
    #[default]
    Pass,
    /// Accept, then reset at once, so the client sees a reset or EOF quickly; live connections are closed.
    Refuse,
    /// Accept but never forward nor answer; live connections stall, and are closed when the mode changes again.
    Blackhole,
    /// Forward every chunk after this delay, in both directions, keeping order.
    Delay(Duration),
    /// Drop client→upstream bytes while upstream→client bytes still flow.
    OneWayForward,
    /// Drop upstream→client bytes while client→upstream bytes still flow.
    OneWayBackward,
}

/// One direction of a connection: the mode that drops its bytes, and the counter of the bytes it delivers.
struct Lane {
    dropped_by: LinkMode,
    delivered: fn(&mut ProxyStats) -> &mut u64,
}

/// The client-to-upstream lane, then the upstream-to-client lane.
const FORWARD: Lane = Lane { dropped_by: LinkMode::OneWayForward, delivered: |stats| &mut stats.bytes_forward };
const BACKWARD: Lane = Lane { dropped_by: LinkMode::OneWayBackward, delivered: |stats| &mut stats.bytes_backward };

/// Counters of one proxy since it started, as returned by [`FaultProxy::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProxyStats {
    /// Connections accepted, including the refused and black-holed ones.
    pub n_accepted: u64,
    /// Connections reset on accept because the mode was [`LinkMode::Refuse`].
    pub n_refused: u64,
    /// Connections held without an upstream because the mode was [`LinkMode::Blackhole`] on accept.
    pub n_blackholed: u64,
    /// Bytes delivered from clients to the upstream.
    pub bytes_forward: u64,
    /// Bytes delivered from the upstream to clients.
    pub bytes_backward: u64,
    /// Bytes read and thrown away by a one-way mode.
    pub bytes_dropped: u64,
}

/// What the handle, the accept loop and every connection task share.
struct Shared {
    listen: SocketAddr,
    upstream: String,
    mode_tx: watch::Sender<LinkMode>,
    stats: Mutex<ProxyStats>,
}

impl Shared {
    fn count(&self, update: impl FnOnce(&mut ProxyStats)) {
        // A poisoned lock only means a counter update panicked; the counters are still usable.
        update(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// A TCP proxy from a local listener to one upstream address that injects the faults of its [`LinkMode`].
/// Dropping it aborts its tasks; [`FaultProxy::shutdown`] also waits until every socket is closed.
pub struct FaultProxy {
    shared: Arc<Shared>,
    stop: CancellationToken,
    accept_task: JoinHandle<()>,
}

impl FaultProxy {
    /// Binds `listen` (for example `127.0.0.1:0`) and forwards every accepted connection to `upstream`
    /// (`host:port`, resolved per connection) in [`LinkMode::Pass`].
    pub async fn start(listen: &str, upstream: String) -> io::Result<FaultProxy> {
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let (mode_tx, _) = watch::channel(LinkMode::Pass);
        let shared = Arc::new(Shared { listen, upstream, mode_tx, stats: Mutex::default() });
        let stop = CancellationToken::new();
        let span = debug_span!("fault_proxy", listen = %listen, upstream = %shared.upstream);
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stop.clone()).instrument(span));
        Ok(FaultProxy { shared, stop, accept_task })
    }

    /// The address clients must connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Switches the link to `mode`; live connections obey it at once (see [`LinkMode`]).
    pub fn set(&self, mode: LinkMode) {
        if self.shared.mode_tx.send_replace(mode) != mode {
            info!(listen = %self.shared.listen, upstream = %self.shared.upstream, ?mode, "link mode changed");
        }
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        *self.shared.mode_tx.borrow()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        *self.shared.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops listening, closes every connection and waits until all of the proxy's tasks have ended.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Err(e) = (&mut self.accept_task).await {
            warn!(listen = %self.shared.listen, error = %e, "fault proxy accept task did not end cleanly");
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.stop.cancel();
        self.accept_task.abort();
    }
}

/// Accepts connections until `stop` fires, then ends every connection task before returning.
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let mut connections = JoinSet::new();
    loop {
        // All three branches are cancel-safe: `cancelled`, `join_next` and `TcpListener::accept`.
        tokio::select! {
            () = stop.cancelled() => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = joined {
                    warn!(error = %e, "fault proxy connection task did not end cleanly");
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let span = debug_span!("proxy_conn", peer = %peer);
                    connections.spawn(serve(client, Arc::clone(&shared)).instrument(span));
                }
                Err(e) => {
                    warn!(error = %e, "failed to accept a proxied connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    connections.shutdown().await;
    debug!("fault proxy stopped");
}

/// Runs one accepted connection under the link's mode until it closes or a mode change cuts it.
async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    shared.count(|stats| stats.n_accepted += 1);
    let mode = *shared.mode_tx.borrow();
    debug!(?mode, "connection accepted");
    match mode {
        LinkMode::Refuse => {
            shared.count(|stats| stats.n_refused += 1);
            return reset(&client);
        }
        LinkMode::Blackhole => shared.count(|stats| stats.n_blackholed += 1),
        LinkMode::Pass | LinkMode::Delay(_) | LinkMode::OneWayForward | LinkMode::OneWayBackward => {}
    }
    let relayed = async {
        if mode == LinkMode::Blackhole {
            // Hold the client without an upstream and without reading: its writes fill the buffers, then block.
            match stall().await {}
        }
        relay(&mut client, &shared).await
    };
    let cut_by = tokio::select! {
        cut_by = until_cut(shared.mode_tx.subscribe(), mode) => cut_by,
        relayed = relayed => return match relayed {
            Ok(()) => debug!("connection closed"),
            Err(e) => debug!(error = %e, "connection ended"),
        },
    };
    if cut_by == LinkMode::Refuse {
        reset(&client);
    }
    debug!(mode = ?cut_by, "connection cut by a mode change");
}

/// Makes the coming close send a TCP reset instead of a FIN, so the client notices at once.
fn reset(client: &TcpStream) {
    if let Err(e) = client.set_zero_linger() {
        debug!(error = %e, "failed to set SO_LINGER to zero; closing with a FIN");
    }
}

/// Resolves with the mode that must end a connection started under `start_mode`.
///
/// `Refuse` ends it at once. After a lossy mode (`Blackhole`, `OneWay*`) any other mode ends it, because bytes were
/// held or dropped: resuming would hand the peer a stream with a hole in it, which a framed protocol (HTTP, the
/// PostgreSQL protocol) could misparse instead of failing.
async fn until_cut(mut mode_rx: watch::Receiver<LinkMode>, start_mode: LinkMode) -> LinkMode {
    let is_lossy = |mode| matches!(mode, LinkMode::Blackhole | LinkMode::OneWayForward | LinkMode::OneWayBackward);
    let mut lossy = is_lossy(start_mode).then_some(start_mode);
    loop {
        let mode = *mode_rx.borrow_and_update();
        if mode == LinkMode::Refuse || lossy.is_some_and(|seen| seen != mode) {
            return mode;
        }
        if is_lossy(mode) {
            lossy = Some(mode);
        }
        if mode_rx.changed().await.is_err() {
            // The proxy is gone; its shutdown is ending this task anyway.
            return mode;
        }
    }
}

/// Connects to the upstream and pumps both directions until both have closed or one has failed.
async fn relay(client: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    let mut upstream = TcpStream::connect(shared.upstream.as_str())
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("connect upstream {}: {e}", shared.upstream)))?;
    // Small RPCs must not wait for Nagle's algorithm: the proxy adds only the faults it is told to.
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    tokio::try_join!(
        pump(client_read, upstream_write, &FORWARD, shared),
        pump(upstream_read, client_write, &BACKWARD, shared),
    )?;
    Ok(())
}

/// Moves bytes one way through a delay line: the reader stamps each chunk with its release time and the writer sends
/// chunks in order once their time has come, so `Delay` keeps order and delays each chunk once, not once per chunk
/// queued ahead of it.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    lane: &Lane,
    shared: &Shared,
) -> io::Result<()> {
    let mode_rx = &shared.mode_tx.subscribe();
    let (line_tx, mut line_rx) = mpsc::channel::<(Instant, Vec<u8>)>(DELAY_LINE_CHUNKS);
    let read_side = async move {
        let mut buf = vec![0_u8; CHUNK_BYTES];
        loop {
            let n_read = from.read(&mut buf).await?;
            if n_read == 0 {
                // Dropping `line_tx` lets the writer drain the line and pass the half-close on.
                return Ok(());
            }
            let mode = *mode_rx.borrow();
            let release_at = match mode {
                LinkMode::Blackhole | LinkMode::Refuse => match stall().await {},
                LinkMode::Delay(delay) => Instant::now() + delay,
                mode if mode == lane.dropped_by => {
                    shared.count(|stats| stats.bytes_dropped += n_read as u64);
                    continue;
                }
                LinkMode::Pass | LinkMode::OneWayForward | LinkMode::OneWayBackward => Instant::now(),
            };
            if line_tx.send((release_at, buf[..n_read].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let write_side = async move {
        while let Some((release_at, chunk)) = line_rx.recv().await {
            tokio::time::sleep_until(release_at).await;
            if matches!(*mode_rx.borrow(), LinkMode::Blackhole | LinkMode::Refuse) {
                match stall().await {}
            }
            to.write_all(&chunk).await?;
            shared.count(|stats| *(lane.delivered)(stats) += chunk.len() as u64);
        }
        to.shutdown().await
    };
    tokio::try_join!(read_side, write_side)?;
    Ok(())
}

/// Never resolves: a pump that must not forward waits here until [`until_cut`] ends the connection.
async fn stall() -> Infallible {
    std::future::pending().await
}

/// One [`FaultProxy`] per ordered pair of distinct nodes, so each direction of each link fails alone.
///
/// Node `from` must reach node `to` through [`ProxyMesh::addr`]`(from, to)`.
pub struct ProxyMesh {
    links: BTreeMap<(NodeId, NodeId), FaultProxy>,
}

impl ProxyMesh {
    /// Starts a proxy on `127.0.0.1:0` for every ordered pair of the nodes in `targets`
    /// (node id → the node's real `host:port`), all in [`LinkMode::Pass`].
    pub async fn start(targets: &BTreeMap<NodeId, String>) -> io::Result<ProxyMesh> {
        ProxyMesh::start_on("127.0.0.1", targets).await
    }

    /// Like [`ProxyMesh::start`], with the proxies listening on `host` (an address the nodes can
    /// reach, such as a bridge's when they run in network namespaces of their own).
    pub async fn start_on(host: &str, targets: &BTreeMap<NodeId, String>) -> io::Result<ProxyMesh> {
        let listen = if host.contains(':') { format!("[{host}]:0") } else { format!("{host}:0") };
        let mut links = BTreeMap::new();
        for &from in targets.keys() {
            for (&to, target) in targets {
                if to != from {
                    links.insert((from, to), FaultProxy::start(&listen, target.clone()).await?);
                }
            }
        }
        Ok(ProxyMesh { links })
    }

    /// The proxy that carries node `from`'s connections to node `to`. Panics unless `from` and `to` are distinct
    /// nodes given to [`ProxyMesh::start`]: that is a bug in the test, like an out-of-bounds index.
    pub fn link(&self, from: NodeId, to: NodeId) -> &FaultProxy {
        match self.links.get(&(from, to)) {
            Some(proxy) => proxy,
            None => panic!("no proxied link {from} -> {to}: both must be distinct nodes given to ProxyMesh::start"),
        }
    }

    /// The address (`127.0.0.1:port`) node `from` must use to reach node `to`; panics as [`ProxyMesh::link`].
    pub fn addr(&self, from: NodeId, to: NodeId) -> String {
        self.link(from, to).local_addr().to_string()
    }

    /// Sets the mode of the link from `from` to `to` only; panics as [`ProxyMesh::link`].
    pub fn set_link(&self, from: NodeId, to: NodeId, mode: LinkMode) {
        self.link(from, to).set(mode);
    }

    /// Cuts `node` off from every other node, in both directions: `mode` is normally
    /// [`LinkMode::Blackhole`] (a pulled cable, a DROP rule) or [`LinkMode::Refuse`] (a REJECT rule).
    pub fn isolate(&self, node: NodeId, mode: LinkMode) {
        for (&(from, to), proxy) in &self.links {
            if from == node || to == node {
                proxy.set(mode);
            }
        }
    }

    /// Sets every link back to [`LinkMode::Pass`].
    pub fn heal_all(&self) {
        for proxy in self.links.values() {
            proxy.set(LinkMode::Pass);
        }
    }

    /// A one-way partition: `from` can no longer reach `to` (black-holed), while `to` can reach `from` (its link is
    /// set to [`LinkMode::Pass`]); panics as [`ProxyMesh::link`].
    pub fn one_way(&self, from: NodeId, to: NodeId) {
        self.link(from, to).set(LinkMode::Blackhole);
        self.link(to, from).set(LinkMode::Pass);
    }

    /// Shuts every proxy down and waits until all their sockets are closed.
    pub async fn shutdown(self) {
        for proxy in self.links.into_values() {
            proxy.shutdown().await;
        }
    }
}
