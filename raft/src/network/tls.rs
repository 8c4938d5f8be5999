//! Mutual TLS of the peer transport (rustls with the aws-lc-rs provider, no OpenSSL).
//!
//! Every node holds a certificate from the cluster's private CA that names the node (DNS SAN =
//! member name). The server side requires a client certificate from that CA; the handlers then
//! check that it names the node the message claims to come from ([`cert_names`]). The client
//! side verifies that the server's certificate chains to the CA *and* names the peer it meant to
//! reach ([`PeerVerifier`]), whatever address it connected to.
//!
//! [`PeerTls`] holds the loaded files behind a lock so [`PeerTls::reload`] (SIGHUP) swaps them
//! without touching open connections: new handshakes and new HTTP clients use the new files.
//! Loading is blocking file I/O, done at start-up or in `spawn_blocking`.
//! The accept loop is [`listener`], shared with the REST API's HTTPS listener; [`PeerTls`] is its
//! policy (the peer's certificate as identity, refused handshakes at WARN).

pub mod listener;

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use time::UtcOffset;
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::client::danger::ServerCertVerified;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::PrivateKeyDer;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::pki_types::UnixTime;
use tokio_rustls::rustls::CertificateError;
use tokio_rustls::rustls::DigitallySignedStruct;
use tokio_rustls::rustls::SignatureScheme;
use tokio_rustls::TlsAcceptor;
use tracing::info;
use tracing::warn;

use self::listener::ListenerPolicy;
use self::listener::NoDelay;
use self::listener::Refusal;
use self::listener::TlsListener;
use crate::config::TlsFiles;
use crate::error::RaftError;

/// A certificate expiring sooner than this is reported at WARN on every load.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// What was loaded: logged on start and reload, returned to the caller of a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The node name the certificate was checked against.
    pub node_name: String,
    /// `raft.tls.certfile`.
    pub certfile: String,
    /// `raft.tls.cafile`.
    pub cafile: String,
    /// Start of validity, RFC 3339 UTC.
    pub not_before: String,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
}

impl std::fmt::Display for CertSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} for node {} (CA {}), valid until {}", self.certfile, self.node_name, self.cafile, self.not_after)
    }
}

/// The loaded files and what is built from them.
struct Loaded {
    server: Arc<rustls::ServerConfig>,
    verifier: Arc<WebPkiServerVerifier>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// HTTP clients by the peer name they verify (`None`: the URL host); built on first use.
    clients: Mutex<HashMap<Option<String>, reqwest::Client>>,
    summary: CertSummary,
}

/// The peer transport's TLS state, shared by the client and the listener.
pub struct PeerTls {
    files: TlsFiles,
    node_name: String,
    connect_timeout: Duration,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").field("files", &self.files).field("node_name", &self.node_name).finish()
    }
}

impl PeerTls {
    /// Loads and checks the files of node `node_name`: the certificate must chain to the CA,
    /// name the node and be valid now.
    pub fn load(files: &TlsFiles, node_name: &str, connect_timeout: Duration) -> Result<PeerTls, RaftError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let loaded = load_files(files, node_name, &provider, UnixTime::now())?;
        log_loaded(&loaded.summary, "loaded raft peer certificate");
        Ok(PeerTls {
            files: files.clone(),
            node_name: node_name.to_string(),
            connect_timeout,
            provider,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    /// Re-reads the files (blocking I/O). On error the old certificates stay in use. Open
    /// connections are kept; new handshakes and new peer clients use the new files.
    pub fn reload(&self) -> Result<CertSummary, RaftError> {
        let loaded = load_files(&self.files, &self.node_name, &self.provider, UnixTime::now())?;
        log_loaded(&loaded.summary, "reloaded raft peer certificate");
        let summary = loaded.summary.clone();
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(loaded);
        Ok(summary)
    }

    /// What is loaded now.
    pub fn summary(&self) -> CertSummary {
        self.loaded().summary.clone()
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// An HTTP client that presents this node's certificate and accepts only a server
    /// certificate from the CA naming `peer_name` (or the URL host when the name is unknown).
    pub fn client_for(&self, peer_name: Option<&str>) -> Result<reqwest::Client, RaftError> {
        let loaded = self.loaded();
        let key = peer_name.map(str::to_string);
        let mut clients = loaded.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let expected = match peer_name {
            Some(name) => Some(server_name(name)?),
            None => None,
        };
        let verifier = Arc::new(PeerVerifier { inner: loaded.verifier.clone(), expected });
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| RaftError::Tls(format!("choose TLS protocol versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(loaded.certs.clone(), loaded.key.clone_key())
            .map_err(|e| RaftError::Tls(format!("raft.tls.keyfile: use the key as client identity: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .map_err(|e| RaftError::Tls(format!("build the peer HTTPS client: {e}")))?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

fn log_loaded(summary: &CertSummary, what: &str) {
    info!(
        node = %summary.node_name,
        certfile = %summary.certfile,
        cafile = %summary.cafile,
        not_before = %summary.not_before,
        not_after = %summary.not_after,
        "{what}"
    );
}

fn server_name(name: &str) -> Result<ServerName<'static>, RaftError> {
    ServerName::try_from(name.to_string())
        .map_err(|e| RaftError::Tls(format!("node name {name:?} cannot be checked against a certificate: {e}")))
}

fn load_files(
    files: &TlsFiles,
    node_name: &str,
    provider: &Arc<CryptoProvider>,
    now: UnixTime,
) -> Result<Loaded, RaftError> {
    let ca_certs = read_certs(&files.cafile, "raft.tls.cafile")?;
    let certs = read_certs(&files.certfile, "raft.tls.certfile")?;
    let key = read_key(&files.keyfile)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca_certs {
        roots.add(cert).map_err(|e| {
            RaftError::Tls(format!("raft.tls.cafile: {} holds an unusable CA certificate: {e}", files.cafile.display()))
        })?;
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| RaftError::Tls(format!("raft.tls.cafile: build the certificate verifier: {e}")))?;
    let (not_before, not_after) = certs.first().and_then(|c| validity(c)).unwrap_or((String::new(), String::new()));
    let summary = CertSummary {
        node_name: node_name.to_string(),
        certfile: files.certfile.display().to_string(),
        cafile: files.cafile.display().to_string(),
        not_before,
        not_after,
    };
    check_own_cert(&verifier, &certs, node_name, now, &summary)?;
    warn_if_expiring(&certs, &summary, now);
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| RaftError::Tls(format!("raft.tls.cafile: build the client verifier: {e}")))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| RaftError::Tls(format!("choose TLS protocol versions: {e}")))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| RaftError::Tls(format!("raft.tls.certfile/keyfile: the key does not fit the certificate: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded { server: Arc::new(server), verifier, certs, key, clients: Mutex::new(HashMap::new()), summary })
}

/// The own certificate must chain to the CA, name this node and be valid at `now`.
fn check_own_cert(
    verifier: &WebPkiServerVerifier,
    certs: &[CertificateDer<'static>],
    node_name: &str,
    now: UnixTime,
    summary: &CertSummary,
) -> Result<(), RaftError> {
    let Some((end_entity, intermediates)) = certs.split_first() else {
        return Err(RaftError::Tls(format!("raft.tls.certfile: no certificate in {}", summary.certfile)));
    };
    let name = server_name(node_name)?;
    let Err(e) = verifier.verify_server_cert(end_entity, intermediates, &name, &[], now) else { return Ok(()) };
    let certfile = &summary.certfile;
    let reissue = "issue a new one with `raftgres certs init` (or your CA) and restart or send SIGHUP";
    let message = match e {
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            format!("raft.tls.certfile: {certfile} expired at {}; {reissue}", summary.not_after)
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => format!(
            "raft.tls.certfile: {certfile} is not valid before {}; check this host's clock or {reissue}",
            summary.not_before
        ),
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "raft.tls.certfile: {certfile} does not name this node {node_name:?}; use the certificate issued for \
             {node_name:?}"
        ),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "raft.tls.certfile: {certfile} is not signed by the CA in raft.tls.cafile {}; use the files of one \
             `raftgres certs init` run",
            summary.cafile
        ),
        other => {
            format!("raft.tls.certfile: {certfile} is not usable with raft.tls.cafile {}: {other}", summary.cafile)
        }
    };
    Err(RaftError::Tls(message))
}

fn warn_if_expiring(certs: &[CertificateDer<'static>], summary: &CertSummary, now: UnixTime) {
    let Some(not_after) = certs.first().and_then(|c| validity_times(c)).map(|(_, after)| after) else { return };
    let now = OffsetDateTime::from_unix_timestamp(i64::try_from(now.as_secs()).unwrap_or(i64::MAX));
    if let Ok(now) = now {
        if not_after - now < EXPIRY_WARNING {
            warn!(certfile = %summary.certfile, not_after = %summary.not_after, "raft peer certificate expires soon");
        }
    }
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, RaftError> {
    let bytes = fs::read(path).map_err(|e| RaftError::io(format!("read {key} {}", path.display()), e))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = certs.map_err(|e| RaftError::Tls(format!("{key}: bad PEM in {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(RaftError::Tls(format!("{key}: no certificate in {}", path.display())));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, RaftError> {
    let bytes = fs::read(path).map_err(|e| RaftError::io(format!("read raft.tls.keyfile {}", path.display()), e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| RaftError::Tls(format!("raft.tls.keyfile: no PEM private key in {}: {e}", path.display())))
}

/// Whether `cert` names node `name` (a DNS SAN). Chain and validity are checked by the
/// handshake; this is the name check the handshake cannot do because the server learns which
/// node a client claims to be only from the message.
pub fn cert_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(end_entity) = webpki::EndEntityCert::try_from(cert) else { return false };
    let Ok(name) = ServerName::try_from(name) else { return false };
    end_entity.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Verifies a peer's server certificate against the CA and the node name the client meant
/// to reach, ignoring the host of the URL (peers are dialled by address).
#[derive(Debug)]
pub struct PeerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: Option<ServerName<'static>>,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = self.expected.as_ref().unwrap_or(server_name);
        self.inner.verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Who is on the other end of an inbound peer connection.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// Remote address.
    pub addr: SocketAddr,
    /// The client certificate the handshake verified (`None` on a plaintext listener).
    pub cert: Option<Arc<CertificateDer<'static>>>,
}

/// Accepts TCP connections and hands out finished TLS sessions with their client certificate.
pub type PeerTlsListener = TlsListener<PeerTls>;

impl ListenerPolicy for PeerTls {
    type Identity = PeerIdentity;
    const MAX_HANDSHAKES: usize = 64;
    const NO_DELAY: NoDelay = NoDelay::On;

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.loaded().server.clone())
    }

    fn identity(addr: SocketAddr, session: &rustls::ServerConnection) -> PeerIdentity {
        let cert = session.peer_certificates().and_then(|certs| certs.first()).cloned();
        PeerIdentity { addr, cert: cert.map(Arc::new) }
    }

    fn local_identity(addr: SocketAddr) -> PeerIdentity {
        PeerIdentity { addr, cert: None }
    }

    fn log_refusal(refusal: Refusal<'_>) {
        match refusal {
            Refusal::Accept(e) => warn!(error = %e, "failed to accept a raft peer connection"),
            // A bare TCP connect (port check, load balancer probe) closes before any TLS record.
            Refusal::Handshake { addr, error } if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::debug!(peer = %addr, "raft peer connection closed before the TLS handshake");
            }
            // The log line an operator needs when a node with a foreign or expired certificate knocks.
            Refusal::Handshake { addr, error } => {
                warn!(peer = %addr, error = %error, "refused raft peer connection: TLS handshake failed");
            }
            Refusal::Timeout { addr } => warn!(peer = %addr, "refused raft peer connection: TLS handshake timed out"),
        }
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, PeerTlsListener>> for PeerIdentity {
    fn connect_info(stream: axum::serve::IncomingStream<'_, PeerTlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for PeerIdentity {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        PeerIdentity { addr: *stream.remote_addr(), cert: None }
    }
}

/// Start and end of validity of a DER certificate, RFC 3339 UTC (`2026-12-06T20:51:05Z`).
pub fn validity(cert: &CertificateDer<'_>) -> Option<(String, String)> {
    let (not_before, not_after) = validity_times(cert)?;
    Some((rfc3339(not_before)?, rfc3339(not_after)?))
}

/// `t` in UTC as RFC 3339; `None` only for a year RFC 3339 cannot write (outside 0 to 9999).
fn rfc3339(t: OffsetDateTime) -> Option<String> {
    t.to_offset(UtcOffset::UTC).format(&Rfc3339).ok()
}

/// Reads `tbsCertificate.validity` (RFC 5280 §4.1): only what the log lines need, never a trust decision
/// (webpki makes those).
fn validity_times(cert: &CertificateDer<'_>) -> Option<(OffsetDateTime, OffsetDateTime)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let validity = parsed.validity();
    Some((validity.not_before.to_datetime(), validity.not_after.to_datetime()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::certs::ClusterCa;
    use crate::network::certs::Validity;

    fn at(year: i32, month: u8, day: u8, hms: (u8, u8, u8)) -> OffsetDateTime {
        let date = time::Date::from_calendar_date(year, time::Month::try_from(month).expect("month"), day);
        date.expect("date").with_hms(hms.0, hms.1, hms.2).expect("time").assume_utc()
    }

    fn der_of(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM certificate")
    }

    #[test]
    fn validity_is_read_from_a_generated_certificate() {
        let window = Validity { not_before: at(2024, 1, 2, (3, 4, 5)), not_after: at(2061, 6, 7, (8, 9, 10)) };
        let ca = ClusterCa::generate("t", window).expect("CA");
        let node = ca.issue_node("pg1", &[], window).expect("node cert");
        let got = validity(&der_of(&node.cert_pem));
        assert_eq!(got, Some(("2024-01-02T03:04:05Z".to_string(), "2061-06-07T08:09:10Z".to_string())));
    }

    #[test]
    fn names_are_checked_on_the_certificate() {
        let ca = ClusterCa::generate("t", Validity::days_from_now(1)).expect("CA");
        let node = ca.issue_node("pg1", &["10.0.0.1".into(), "db1.example".into()], Validity::days_from_now(1));
        let cert = der_of(&node.expect("node cert").cert_pem);
        assert!(cert_names(&cert, "pg1"));
        assert!(cert_names(&cert, "db1.example"));
        assert!(!cert_names(&cert, "pg2"));
        assert!(!cert_names(&cert, "pg"));
    }

    #[test]
    fn validity_survives_garbage() {
        for bytes in [&b""[..], &[0x30], &[0x30, 0x85, 1, 1, 1, 1, 1], &[0x30, 0x05, 0x30], &[0x30, 0x82, 0xff]] {
            assert_eq!(validity_times(&CertificateDer::from(bytes.to_vec())), None);
        }
    }
}
