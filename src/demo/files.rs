//! The file side of generating a local cluster: traversable directories, private files written
//! atomically, and the passwords of a cluster generated earlier (so a second run reuses its data).
//!
//! Rendering lives in `nodeconf.rs` (PURE); this module only reads and writes what it is given.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;
use rand::distributions::Alphanumeric;
use rand::distributions::DistString;

use super::nodeconf;
use super::nodeconf::Credentials;
use super::nodeconf::NodeLayout;
use crate::config::Secret;

/// Length of a generated password (alphanumeric: no quoting anywhere).
const PASSWORD_LEN: usize = 24;

/// A new random alphanumeric password.
pub fn generate_password() -> Secret {
    Secret::new(Alphanumeric.sample_string(&mut rand::thread_rng(), PASSWORD_LEN))
}

/// The passwords of a cluster already generated in `dir`: `DIR/pgpass`, else node1's config.
pub fn existing_credentials(dir: &Path, nodes: &[NodeLayout]) -> anyhow::Result<Option<Credentials>> {
    let pgpass = dir.join("pgpass");
    match fs::read_to_string(&pgpass) {
        Ok(text) => {
            if let Some(credentials) = nodeconf::parse_pgpass(&text) {
                return Ok(Some(credentials));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("read {}", pgpass.display())),
    }
    let Some(config) = nodes.first().map(NodeLayout::config_path).filter(|path| path.is_file()) else {
        return Ok(None);
    };
    let loaded = crate::config::load(&config, &crate::config::EnvMap::new())
        .with_context(|| format!("read the passwords of the existing cluster from {}", config.display()))?;
    let auth = loaded.config.postgresql.authentication;
    Ok(auth
        .superuser
        .password
        .zip(auth.replication.password)
        .map(|(superuser, replication)| Credentials { superuser, replication }))
}

/// Makes sure every node has its raft peer certificate (`NodeLayout::peer_tls`), as
/// `raftgres certs init` would write them: when any file is missing, a new CA and new
/// certificates for every node; otherwise the existing ones are kept (a second run reuses them).
pub fn ensure_peer_certs(nodes: &[NodeLayout]) -> anyhow::Result<()> {
    use raft::network::certs::ClusterCa;
    use raft::network::certs::Validity;
    let complete = nodes.iter().all(|node| {
        let files = node.peer_tls();
        files.cafile.is_file() && files.certfile.is_file() && files.keyfile.is_file()
    });
    if complete {
        return Ok(());
    }
    let ca = ClusterCa::generate(nodeconf::SCOPE, Validity::days_from_now(raft::network::certs::DEFAULT_CA_DAYS))
        .context("create the demo's peer CA")?;
    let ca_pem = ca.pem().cert_pem;
    let validity = Validity::days_from_now(raft::network::certs::DEFAULT_NODE_DAYS);
    for node in nodes {
        let mut hosts = vec![nodeconf::HOST.to_string(), "localhost".to_string()];
        if !hosts.contains(&node.host) {
            hosts.insert(0, node.host.clone());
        }
        let pair = ca.issue_node(&node.name, &hosts, validity).context("issue a demo peer certificate")?;
        let files = node.peer_tls();
        raft::network::certs::write_file(&files.cafile, &ca_pem, 0o644)?;
        raft::network::certs::write_file(&files.certfile, &pair.cert_pem, 0o644)?;
        raft::network::certs::write_file(&files.keyfile, &pair.key_pem, 0o600)?;
    }
    Ok(())
}

/// Creates `dir` (and its parents) with mode 0755, and sets 0755 on it if it existed.
pub fn create_traversable_dir(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).with_context(|| format!("chmod 0755 {}", dir.display()))
}

/// Writes `text` to `path` with mode 0600 (it holds passwords), replacing the file atomically.
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).with_context(|| format!("chmod {}", tmp.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("write {}", tmp.display()))?;
    file.sync_all().with_context(|| format!("sync {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
}
