//! HTTPS for the REST API (`restapi.certfile`, `keyfile`, `cafile`, `verify_client`; contract §1.1) with rustls
//! through tokio-rustls, the TLS stack already in the dependency tree (reqwest uses it), with the aws-lc-rs
//! provider.
//!
//! [`TlsListener`] is the raft crate's accept loop (`raft::network::tls::listener`, shared with the peer
//! transport) with [`TlsHandle`] as its policy: finished handshakes are handed to axum together with the
//! [`PeerInfo`] the access checks need, and failed ones are logged at DEBUG. The certificate is re-read by
//! [`TlsHandle::reload`] (`POST /reload`), and new connections use the new one.
//! Not supported: `keyfile_password` (encrypted keys) and `ciphers`; the first is refused at start-up.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::RwLock;

use anyhow::Context;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use raft::network::tls::listener::ListenerPolicy;
use raft::network::tls::listener::NoDelay;
use raft::network::tls::listener::Refusal;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::TlsAcceptor;

use crate::api::security::PeerInfo;
use crate::config::RestApiConfig;
use crate::config::VerifyClient;

/// Where the certificate, key and client CA come from, and the client-certificate policy.
#[derive(Debug, Clone)]
struct TlsFiles {
    certfile: PathBuf,
    keyfile: Option<PathBuf>,
    cafile: Option<PathBuf>,
    verify_client: VerifyClient,
}

/// The server's TLS configuration, swappable at run time.
pub struct TlsHandle {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for TlsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHandle").field("files", &self.files).finish_non_exhaustive()
    }
}

impl TlsHandle {
    /// The TLS configuration of `restapi`, `None` when `certfile` is not set.
    pub fn from_config(restapi: &RestApiConfig) -> anyhow::Result<Option<Arc<TlsHandle>>> {
        let Some(certfile) = restapi.certfile.clone() else { return Ok(None) };
        anyhow::ensure!(
            restapi.keyfile_password.is_none(),
            "restapi.keyfile_password: encrypted keys are not supported; \
             decrypt the key (openssl pkey -in KEY -out PLAIN) and remove keyfile_password"
        );
        let files = TlsFiles {
            certfile,
            keyfile: restapi.keyfile.clone(),
            cafile: restapi.cafile.clone(),
            verify_client: restapi.verify_client,
        };
        let config = server_config(&files)?;
        Ok(Some(Arc::new(TlsHandle { files, current: RwLock::new(Arc::new(config)) })))
    }

    /// Re-reads the files (blocking I/O: call it from `spawn_blocking`); on error the old configuration stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
        Ok(())
    }
}

/// Builds the rustls configuration from the PEM files.
fn server_config(files: &TlsFiles) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = read_certs(&files.certfile, "restapi.certfile")?;
    let key_path = files.keyfile.as_deref().unwrap_or(&files.certfile);
    let key_bytes = fs::read(key_path).with_context(|| format!("read restapi.keyfile {}", key_path.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| anyhow::anyhow!("restapi.keyfile: no PEM private key in {}: {e}", key_path.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("choose the TLS protocol versions")?;
    let builder = match (&files.cafile, files.verify_client) {
        (_, VerifyClient::None) => builder.with_no_client_auth(),
        (None, _) => anyhow::bail!("restapi.cafile: verify_client needs the CA that signs client certificates"),
        (Some(cafile), verify_client) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(cafile, "restapi.cafile")? {
                roots.add(cert).context("restapi.cafile: add a CA certificate")?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match verify_client {
                VerifyClient::Optional => verifier.allow_unauthenticated(),
                VerifyClient::Required | VerifyClient::None => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().context("restapi.cafile: build the client verifier")?)
        }
    };
    let mut config = builder.with_single_cert(certs, key).context("restapi.certfile/keyfile: load the key pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = fs::read(path).with_context(|| format!("read {key} {}", path.display()))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = certs.map_err(|e| anyhow::anyhow!("{key}: bad PEM in {}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{key}: no certificate in {}", path.display());
    Ok(certs)
}

/// Accepts TCP connections and hands out finished TLS sessions.
pub type TlsListener = raft::network::tls::listener::TlsListener<TlsHandle>;

impl ListenerPolicy for TlsHandle {
    type Identity = PeerInfo;
    const MAX_HANDSHAKES: usize = 128;
    const NO_DELAY: NoDelay = NoDelay::Off;

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
    }

    fn identity(addr: SocketAddr, session: &rustls::ServerConnection) -> PeerInfo {
        let client_cert = session.peer_certificates().is_some_and(|certs| !certs.is_empty());
        PeerInfo { addr, client_cert }
    }

    fn local_identity(addr: SocketAddr) -> PeerInfo {
        PeerInfo { addr, client_cert: false }
    }

    fn log_refusal(refusal: Refusal<'_>) {
        match refusal {
            Refusal::Accept(e) => tracing::warn!(error = %e, "failed to accept a REST API connection"),
            Refusal::Handshake { addr, error } => {
                tracing::debug!(client = %addr, error = %error, "TLS handshake failed")
            }
            Refusal::Timeout { addr } => tracing::debug!(client = %addr, "TLS handshake timed out"),
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        *stream.remote_addr()
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerInfo { addr: *stream.remote_addr(), client_cert: false }
    }
}
