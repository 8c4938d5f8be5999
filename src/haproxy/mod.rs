//! Pushes role changes to HAProxy's runtime API (the `haproxy` section), so HAProxy routes to a new primary at
//! once and away from a stopping one before it stops accepting writes, instead of at its next health check.
//!
//! [`Pusher`] is a cheap handle; its pushes run in order on one background task (a demotion's push can never be
//! overtaken by an earlier promotion's), each sent to every configured runtime API in parallel, bounded by
//! `haproxy.timeout`. A push that fails is logged and dropped: the health checks correct HAProxy within one
//! interval, so nothing waits for HAProxy and nothing retries. What is sent is [`plan`]'s (forced health, never
//! the administrative state).

pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tracing::debug;
use tracing::info;
use tracing::warn;
use tracing::Instrument;

use crate::config::HaproxyConfig;
use crate::config::RuntimeApi;

/// What can go wrong talking to one runtime API.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// The socket could not be reached.
    #[error("connect to the HAProxy runtime API {address}: {source}")]
    Connect {
        /// The runtime API.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Sending the command or reading the answer failed.
    #[error("talk to the HAProxy runtime API {address}: {source}")]
    Io {
        /// The runtime API.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No complete answer in time.
    #[error("the HAProxy runtime API {address} did not answer within {timeout:?}")]
    Timeout {
        /// The runtime API.
        address: String,
        /// The bound.
        timeout: Duration,
    },
}

/// Sends one command line (commands separated by `;`) to a runtime API in its non-interactive mode (HAProxy
/// answers and closes the connection) and returns the answer.
pub async fn command(address: &RuntimeApi, line: &str, timeout: Duration) -> Result<String, HaproxyError> {
    let name = address.to_string();
    let exchange = async {
        let connect = |source| HaproxyError::Connect { address: name.clone(), source };
        let request = format!("{line}\n");
        let answer = match address {
            RuntimeApi::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(connect)?;
                send_and_read(stream, &request).await
            }
            RuntimeApi::Tcp(host_port) => {
                let stream =
                    tokio::net::TcpStream::connect((host_port.host.as_str(), host_port.port)).await.map_err(connect)?;
                send_and_read(stream, &request).await
            }
        };
        let answer = answer.map_err(|source| HaproxyError::Io { address: name.clone(), source })?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(HaproxyError::Timeout { address: name, timeout }))
}

/// What one push sends.
enum Commands {
    /// These commands.
    Fixed(Vec<String>),
    /// [`plan::promoted`] for `me` and the cluster's `members`, with the servers each HAProxy lists in the primary
    /// backend (`show servers state`, asked first).
    Promoted { me: String, members: Vec<String> },
}

/// Writes `request` and reads until HAProxy closes the connection (its non-interactive mode).
async fn send_and_read(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    request: &str,
) -> std::io::Result<Vec<u8>> {
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// One push: the commands and, when someone waits for it, whom to tell it was sent.
struct Job {
    what: &'static str,
    commands: Commands,
    sent: Option<oneshot::Sender<()>>,
}

struct Inner {
    names: plan::Names,
    timeout: Duration,
    jobs: mpsc::UnboundedSender<Job>,
}

/// The handle the HA loop, its long actions and the fence push through; [`Pusher::disabled`] without a
/// `haproxy` section.
#[derive(Clone, Default)]
pub struct Pusher {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Some(inner) => write!(f, "Pusher({:?})", inner.names),
            None => write!(f, "Pusher(disabled)"),
        }
    }
}

impl Pusher {
    /// Pushes nothing.
    pub fn disabled() -> Self {
        Pusher { inner: None }
    }

    /// A pusher for `config` (`None`: disabled), with its background task spawned on the current runtime.
    pub fn start(config: Option<&HaproxyConfig>) -> Self {
        let Some(config) = config else { return Pusher::disabled() };
        let (jobs, queue) = mpsc::unbounded_channel();
        let names = plan::Names {
            primary_backend: config.primary_backend.clone(),
            replica_backend: config.replica_backend.clone(),
            server: config.server.clone(),
        };
        let addresses = config.runtime_api.clone();
        tokio::spawn(run(queue, addresses, names.clone(), config.timeout).instrument(tracing::info_span!("haproxy")));
        Pusher { inner: Some(Arc::new(Inner { names, timeout: config.timeout, jobs })) }
    }

    /// Whether a `haproxy` section is configured.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// `me` was promoted: the other `members` down in the primary backend, `me` up (not waited for).
    pub fn promoted(&self, me: &str, members: &[String]) {
        if let Some(inner) = &self.inner {
            let commands = Commands::Promoted { me: me.to_string(), members: members.to_vec() };
            let _ = inner.jobs.send(Job { what: "promoted", commands, sent: None });
        }
    }

    /// `me` is about to stop accepting writes: `me` down in the primary backend. Waits until the push was
    /// answered (or its timeout passed), at most twice `haproxy.timeout`, so HAProxy stops routing first.
    pub async fn demoting(&self, me: &str) {
        let Some(inner) = &self.inner else { return };
        let (sent, done) = oneshot::channel();
        let commands = Commands::Fixed(plan::demoting(&inner.names, me));
        if inner.jobs.send(Job { what: "demoting", commands, sent: Some(sent) }).is_ok() {
            let _ = tokio::time::timeout(2 * inner.timeout, done).await;
        }
    }

    /// [`Pusher::demoting`] without waiting: for a stop that may not be delayed (a lost lease, the fence).
    pub fn demoting_now(&self, me: &str) {
        if let Some(inner) = &self.inner {
            let commands = Commands::Fixed(plan::demoting(&inner.names, me));
            let _ = inner.jobs.send(Job { what: "demoting", commands, sent: None });
        }
    }
}

/// The background task: one push at a time, in order, to every runtime API in parallel.
async fn run(
    mut queue: mpsc::UnboundedReceiver<Job>,
    addresses: Vec<RuntimeApi>,
    names: plan::Names,
    timeout: Duration,
) {
    let names = Arc::new(names);
    while let Some(job) = queue.recv().await {
        let commands = Arc::new(job.commands);
        let mut sends = tokio::task::JoinSet::new();
        for address in addresses.iter().cloned() {
            let (commands, names) = (commands.clone(), names.clone());
            sends.spawn(async move {
                let line = match &*commands {
                    Commands::Fixed(fixed) => fixed.join("; "),
                    Commands::Promoted { me, members } => {
                        let show = format!("show servers state {}", names.primary_backend);
                        let listed: Vec<String> = match command(&address, &show, timeout).await {
                            Ok(answer) => plan::parse_servers_state(&answer).into_iter().map(|s| s.server).collect(),
                            Err(e) => {
                                debug!(error = %e, "could not list the primary backend's servers");
                                Vec::new()
                            }
                        };
                        plan::promoted(&names, me, members, &listed).join("; ")
                    }
                };
                if line.is_empty() {
                    return (Ok(String::new()), address, line);
                }
                (command(&address, &line, timeout).await, address, line)
            });
        }
        while let Some(joined) = sends.join_next().await {
            let Ok((answer, address, line)) = joined else { continue };
            match answer {
                Ok(_) if line.is_empty() => {}
                Ok(answer) => {
                    let complaints = plan::complaints(&answer);
                    if complaints.is_empty() {
                        info!(what = job.what, %address, commands = %line, "pushed the role change to HAProxy");
                    } else {
                        warn!(what = job.what, %address, commands = %line, answer = %complaints.join(" | "),
                            "HAProxy refused part of the role change; its health checks will correct it");
                    }
                }
                Err(e) => {
                    warn!(what = job.what, error = %e, "failed to push the role change to HAProxy; its health checks will")
                }
            }
        }
        debug!(what = job.what, "push done");
        if let Some(sent) = job.sent {
            let _ = sent.send(());
        }
    }
}
