//! The TLS accept loop shared by the raft peer listener (`PeerTlsListener`) and the REST API's
//! HTTPS listener (`api::tls` in the binary, which cannot be reached from here).
//!
//! [`TlsListener`] is an `axum::serve::Listener`: a background task accepts TCP connections and
//! runs each handshake in its own task with [`HANDSHAKE_TIMEOUT`], at most
//! [`ListenerPolicy::MAX_HANDSHAKES`] at once, so a slow client cannot stall the others; finished
//! sessions are handed to axum with the identity the owner extracts from them. What differs
//! between the owners (certificates and their reload, the identity, the log lines) is the
//! [`ListenerPolicy`]; this module must not decide who may connect.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::ServerConnection;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the loop waits after a failed `accept` (EMFILE and friends) instead of spinning, as
/// axum's own listener does.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Whether accepted sockets get `TCP_NODELAY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDelay {
    /// Set it: small request/response messages are not held back by Nagle's algorithm.
    On,
    /// Leave the socket as the kernel made it.
    Off,
}

/// A connection the loop did not hand to axum, for the owner to log.
#[derive(Debug)]
pub enum Refusal<'a> {
    /// `accept` failed; the loop waits briefly and goes on.
    Accept(&'a io::Error),
    /// The TLS handshake failed.
    Handshake {
        /// Remote address.
        addr: SocketAddr,
        /// Why it failed.
        error: &'a io::Error,
    },
    /// The TLS handshake did not finish within [`HANDSHAKE_TIMEOUT`].
    Timeout {
        /// Remote address.
        addr: SocketAddr,
    },
}

/// What the owner of a [`TlsListener`] decides.
pub trait ListenerPolicy: Send + Sync + 'static {
    /// Who is on the other end of a session, handed to axum as the connection's address.
    type Identity: Send + 'static;
    /// Handshakes running at once (also the queue of finished sessions); more connections
    /// wait in the kernel's backlog.
    const MAX_HANDSHAKES: usize;
    /// Whether accepted sockets get `TCP_NODELAY`.
    const NO_DELAY: NoDelay;

    /// The acceptor for the next connection. It is asked once per connection, so a reload of
    /// the certificates applies to new connections and leaves open ones alone.
    fn acceptor(&self) -> TlsAcceptor;
    /// The identity of a finished session from `addr`.
    fn identity(addr: SocketAddr, session: &ServerConnection) -> Self::Identity;
    /// The identity reported as the listener's own address.
    fn local_identity(addr: SocketAddr) -> Self::Identity;
    /// Logs a connection that was not handed to axum (the level is the owner's choice).
    fn log_refusal(refusal: Refusal<'_>);
}

/// Accepts TCP connections and hands out finished TLS sessions with their identity.
pub struct TlsListener<P: ListenerPolicy> {
    sessions: mpsc::Receiver<(TlsStream<TcpStream>, P::Identity)>,
    local_addr: SocketAddr,
}

impl<P: ListenerPolicy> TlsListener<P> {
    /// Starts accepting on `listener`; the accept task ends when this listener is dropped.
    pub fn new(listener: TcpListener, policy: Arc<P>) -> io::Result<TlsListener<P>> {
        let local_addr = listener.local_addr()?;
        let (tx, sessions) = mpsc::channel(P::MAX_HANDSHAKES);
        tokio::spawn(accept_loop(listener, policy, tx));
        Ok(TlsListener { sessions, local_addr })
    }
}

async fn accept_loop<P: ListenerPolicy>(
    listener: TcpListener,
    policy: Arc<P>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, P::Identity)>,
) {
    let limit = Arc::new(Semaphore::new(P::MAX_HANDSHAKES));
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                P::log_refusal(Refusal::Accept(&e));
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if P::NO_DELAY == NoDelay::On {
            let _ = tcp.set_nodelay(true);
        }
        let Ok(permit) = limit.clone().acquire_owned().await else { return };
        let acceptor = policy.acceptor();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let identity = P::identity(addr, stream.get_ref().1);
                    let _ = tx.send((stream, identity)).await;
                }
                Ok(Err(error)) => P::log_refusal(Refusal::Handshake { addr, error: &error }),
                Err(_) => P::log_refusal(Refusal::Timeout { addr }),
            }
        });
    }
}

impl<P: ListenerPolicy> axum::serve::Listener for TlsListener<P> {
    type Io = TlsStream<TcpStream>;
    type Addr = P::Identity;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.sessions.recv().await {
            Some(session) => session,
            // The accept task only ends when this listener is dropped; wait for the shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(P::local_identity(self.local_addr))
    }
}
