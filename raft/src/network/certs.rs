//! Issuing the peer certificates of a cluster: a private CA and one certificate per node that
//! names the node (DNS SAN = the member name, plus its hosts and IPs), usable both as a TLS
//! server and as a TLS client, since every node is both on the peer port.
//!
//! `raftgres certs init`, the local demo and the tests use this module; it never reads them back
//! (loading is `network::tls`). Files are written with private permissions: keys 0600, the
//! directory 0700, and an existing file is never overwritten unless the caller forces it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DistinguishedName;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
use time::OffsetDateTime;

use crate::error::RaftError;

/// Default lifetime of the CA: ten years.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Default lifetime of a node certificate: two years.
pub const DEFAULT_NODE_DAYS: u32 = 730;
/// File name of the CA certificate inside a certificate directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA key inside a certificate directory (keep it off the nodes).
pub const CA_KEY_FILE: &str = "ca.key";

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from an hour ago (tolerates small clock differences) for `days` days.
    pub fn days_from_now(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(u64::from(days) * 86_400),
        }
    }
}

/// A certificate and its private key, PEM encoded.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

/// A private CA held in memory while it issues node certificates.
pub struct ClusterCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn cert_error(what: &str, e: rcgen::Error) -> RaftError {
    RaftError::Tls(format!("{what}: {e}"))
}

impl ClusterCa {
    /// Creates a CA named after the cluster.
    pub fn generate(cluster_name: &str, validity: Validity) -> Result<ClusterCa, RaftError> {
        let key = KeyPair::generate().map_err(|e| cert_error("generate the CA key", e))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| cert_error("CA parameters", e))?;
        let mut name = DistinguishedName::new();
        // A random suffix keeps two CAs of one cluster name apart, so a certificate from the
        // other one fails as "unknown issuer" rather than as a bad signature.
        let suffix: u32 = rand::random();
        name.push(DnType::CommonName, format!("raftgres peer CA {cluster_name} {suffix:08x}"));
        name.push(DnType::OrganizationName, "raftgres");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key).map_err(|e| cert_error("self-sign the CA", e))?;
        Ok(ClusterCa { cert, key })
    }

    /// The CA certificate and key.
    pub fn pem(&self) -> PemPair {
        PemPair { cert_pem: self.cert.pem(), key_pem: self.key.serialize_pem() }
    }

    /// Issues the certificate of node `name`, valid for `name` and every entry of `hosts`
    /// (host names or IP addresses).
    pub fn issue_node(&self, name: &str, hosts: &[String], validity: Validity) -> Result<PemPair, RaftError> {
        let mut sans = vec![name.to_string()];
        for host in hosts {
            if !sans.contains(host) {
                sans.push(host.clone());
            }
        }
        let mut params =
            CertificateParams::new(sans).map_err(|e| cert_error(&format!("certificate names of node {name}"), e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "raftgres");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate().map_err(|e| cert_error(&format!("generate the key of node {name}"), e))?;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .map_err(|e| cert_error(&format!("sign the certificate of node {name}"), e))?;
        Ok(PemPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// One node of `certs init`.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Member name (the raft peer name); the certificate's first DNS name.
    pub name: String,
    /// Extra host names or IP addresses the certificate names.
    pub hosts: Vec<String>,
}

/// What `certs init` does.
#[derive(Debug, Clone)]
pub struct InitSpec {
    /// Cluster name, written into the CA's name.
    pub cluster_name: String,
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// Output directory (created 0700).
    pub dir: PathBuf,
    /// Lifetime of the node certificates in days.
    pub node_days: u32,
    /// Lifetime of the CA in days.
    pub ca_days: u32,
    /// Overwrite existing files.
    pub force: bool,
}

/// The files of one node, as written by [`init`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    /// Member name.
    pub name: String,
    /// `raft.tls.cafile`.
    pub cafile: PathBuf,
    /// `raft.tls.certfile`.
    pub certfile: PathBuf,
    /// `raft.tls.keyfile`.
    pub keyfile: PathBuf,
}

/// What [`init`] wrote.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The CA certificate (every node needs it).
    pub ca_cert: PathBuf,
    /// The CA key (keep it off the nodes; it signs new node certificates).
    pub ca_key: PathBuf,
    /// One entry per node.
    pub nodes: Vec<NodeFiles>,
}

/// The certificate and key paths of node `name` inside `dir`.
pub fn node_files(dir: &Path, name: &str) -> NodeFiles {
    NodeFiles {
        name: name.to_string(),
        cafile: dir.join(CA_CERT_FILE),
        certfile: dir.join(format!("{name}.crt")),
        keyfile: dir.join(format!("{name}.key")),
    }
}

/// Generates a CA and a certificate for every node into `spec.dir`.
///
/// Every target file is checked before anything is written, so a refused run leaves the
/// directory as it was.
pub fn init(spec: &InitSpec) -> Result<InitReport, RaftError> {
    check_names(&spec.nodes)?;
    if spec.node_days == 0 || spec.ca_days == 0 {
        return Err(RaftError::Tls("certificate lifetimes must be at least one day".into()));
    }
    let report = InitReport {
        ca_cert: spec.dir.join(CA_CERT_FILE),
        ca_key: spec.dir.join(CA_KEY_FILE),
        nodes: spec.nodes.iter().map(|n| node_files(&spec.dir, &n.name)).collect(),
    };
    let mut targets = vec![report.ca_cert.clone(), report.ca_key.clone()];
    for files in &report.nodes {
        targets.push(files.certfile.clone());
        targets.push(files.keyfile.clone());
    }
    if !spec.force {
        if let Some(existing) = targets.iter().find(|p| p.exists()) {
            return Err(RaftError::Tls(format!(
                "{} already exists; pass --force to replace every certificate in {} (nodes then need the new files)",
                existing.display(),
                spec.dir.display()
            )));
        }
    }
    create_private_dir(&spec.dir)?;
    let ca = ClusterCa::generate(&spec.cluster_name, Validity::days_from_now(spec.ca_days))?;
    let node_validity = Validity::days_from_now(spec.node_days);
    let mut issued = Vec::with_capacity(spec.nodes.len());
    for node in &spec.nodes {
        issued.push(ca.issue_node(&node.name, &node.hosts, node_validity)?);
    }
    let ca_pem = ca.pem();
    write_file(&report.ca_cert, &ca_pem.cert_pem, 0o644)?;
    write_file(&report.ca_key, &ca_pem.key_pem, 0o600)?;
    for (files, pair) in report.nodes.iter().zip(&issued) {
        write_file(&files.certfile, &pair.cert_pem, 0o644)?;
        write_file(&files.keyfile, &pair.key_pem, 0o600)?;
    }
    Ok(report)
}

/// Node names must be usable as DNS names in a certificate and unique.
pub fn check_names(nodes: &[NodeSpec]) -> Result<(), RaftError> {
    if nodes.is_empty() {
        return Err(RaftError::Tls("no node names given; list every member, e.g. --nodes pg1,pg2,pg3".into()));
    }
    for (idx, node) in nodes.iter().enumerate() {
        let valid = !node.name.is_empty()
            && node.name.len() <= 253
            && node.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !node.name.starts_with(['-', '.'])
            && !node.name.ends_with(['-', '.']);
        if !valid {
            return Err(RaftError::Tls(format!(
                "node name {:?} cannot be a certificate DNS name (letters, digits, '-' and '.' only)",
                node.name
            )));
        }
        if nodes[..idx].iter().any(|other| other.name == node.name) {
            return Err(RaftError::Tls(format!("node name {:?} is listed twice", node.name)));
        }
    }
    Ok(())
}

/// Creates `dir` (and parents) and makes it 0700.
pub fn create_private_dir(dir: &Path) -> Result<(), RaftError> {
    fs::create_dir_all(dir).map_err(|e| RaftError::io(format!("create {}", dir.display()), e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| RaftError::io(format!("chmod 0700 {}", dir.display()), e))
}

/// Writes `text` to `path` with `mode`, replacing the file and fsyncing it.
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), RaftError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
        // The mode of `open` is masked by the umask; set it explicitly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| RaftError::io(format!("write {}", path.display()), e))
}
