//! Static configuration of one Raft replica (the `raft:` section of raftgres' YAML).
//!
//! PURE validation: duplicate ids, names or addresses are rejected naming the offending entry;
//! the peer transport must be TLS unless plaintext is asked for and every address is loopback.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;

use crate::error::RaftError;
use crate::NodeId;
use crate::PeerNode;

/// One member of the static bootstrap list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// Raft node id (unique, never reused).
    pub id: NodeId,
    /// Member name.
    pub name: String,
    /// Address this node uses to reach the peer's Raft listener (`host:port`).
    pub raft_addr: String,
    /// The peer's REST API address (`host:port`), informational.
    #[serde(default)]
    pub api_addr: String,
}

/// How the Raft leader's lease keeper sets session deadlines when it takes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseMode {
    /// Every session gets a full fresh TTL from the new leader (etcd semantics, always safe).
    Strict,
    /// Carry over the remaining time from the leader-stamped renewal plus `max_clock_skew`
    /// (faster failover when the Raft leader dies with the primary; needs NTP).
    Stamped {
        /// Largest wall-clock difference between nodes that keeps this mode safe.
        max_clock_skew_ms: u64,
    },
}

/// The PEM files of the peer transport's mutual TLS (`raft.tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster's private CA (`raft.tls.cafile`): peers must present a certificate it signed.
    pub cafile: PathBuf,
    /// This node's certificate (`raft.tls.certfile`), naming this node.
    pub certfile: PathBuf,
    /// This node's private key (`raft.tls.keyfile`).
    pub keyfile: PathBuf,
}

/// How peers talk to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTransport {
    /// Nothing configured: refused by [`RaftConfig::validate`], so TLS is the default.
    Unset,
    /// Plaintext HTTP (`raft.insecure: true`), allowed only when every address is loopback.
    Insecure,
    /// Mutual TLS with the cluster's private CA.
    Tls(TlsFiles),
}

/// Configuration of one replica.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Cluster name (Patroni's `scope`); every peer message carries its hash.
    pub cluster_name: String,
    /// Address the peer listener binds (`host:port`; port 0 picks one).
    pub listen: String,
    /// Address peers use to reach this node (stored in the membership).
    pub advertise: String,
    /// This node's REST API address, stored in the membership for tooling.
    pub api_addr: String,
    /// Static bootstrap members, this node included.
    pub peers: Vec<PeerConfig>,
    /// Directory of the sled database.
    pub data_dir: PathBuf,
    /// Raft heartbeat interval (also the AppendEntries RPC timeout).
    pub heartbeat_interval: Duration,
    /// Election timeout lower bound.
    pub election_timeout_min: Duration,
    /// Election timeout upper bound.
    pub election_timeout_max: Duration,
    /// Lease keeper mode.
    pub lease_mode: LeaseMode,
    /// How long a pristine node probes its peers before it may bootstrap.
    pub bootstrap_timeout: Duration,
    /// sled page cache cap in bytes.
    pub cache_capacity: u64,
    /// Largest peer message accepted, bytes.
    pub max_message_bytes: usize,
    /// Peer transport: mutual TLS, or plaintext on loopback only.
    pub transport: PeerTransport,
    /// Keep Raft leadership on the node whose session owns this key (see `node::handover`);
    /// `None` leaves leadership wherever elections put it.
    pub leadership_follows_key: Option<String>,
    /// What the lease keeper's expiries record (`Command::Expire`); `None` records nothing.
    pub expiry_record: Option<crate::command::ExpiryRecord>,
}

/// Default sled cache: small, our state is a few KiB.
pub const DEFAULT_CACHE_CAPACITY: u64 = 32 << 20;
/// Default largest peer message.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;

impl RaftConfig {
    /// A config with the LAN defaults of the design notes for `node_id` among `peers`.
    pub fn new(node_id: NodeId, cluster_name: &str, peers: Vec<PeerConfig>, data_dir: PathBuf) -> Self {
        let me = peers.iter().find(|p| p.id == node_id).cloned();
        let advertise = me.as_ref().map(|p| p.raft_addr.clone()).unwrap_or_default();
        RaftConfig {
            node_id,
            cluster_name: cluster_name.to_string(),
            listen: advertise.clone(),
            advertise,
            api_addr: me.map(|p| p.api_addr).unwrap_or_default(),
            peers,
            data_dir,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(300),
            election_timeout_max: Duration::from_millis(600),
            lease_mode: LeaseMode::Strict,
            bootstrap_timeout: Duration::from_secs(30),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            transport: PeerTransport::Unset,
            leadership_follows_key: None,
            expiry_record: None,
        }
    }

    /// The cluster id carried by every peer message: FNV-1a of the cluster name.
    pub fn cluster_id(&self) -> u64 {
        cluster_id_of(&self.cluster_name)
    }

    /// This node's own membership record.
    pub fn me(&self) -> PeerNode {
        let name = self.peers.iter().find(|p| p.id == self.node_id).map(|p| p.name.clone()).unwrap_or_default();
        PeerNode { name, raft_addr: self.advertise.clone(), api_addr: self.api_addr.clone() }
    }

    /// The address to reach `id`: the static peer list wins over the membership record,
    /// so an operator (or a test's fault proxy) can route around NAT.
    pub fn peer_addr(&self, id: NodeId, node: &PeerNode) -> String {
        self.peers.iter().find(|p| p.id == id).map(|p| p.raft_addr.clone()).unwrap_or_else(|| node.raft_addr.clone())
    }

    /// Checks the config; errors name the key path of the offending entry.
    pub fn validate(&self) -> Result<(), RaftError> {
        validate_peers(&self.peers)?;
        if !self.peers.iter().any(|p| p.id == self.node_id) {
            return Err(config_error(
                "raft.node_id",
                format!("node id {} is not in raft.peers; add this node to the peer list", self.node_id),
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(config_error("raft.heartbeat_interval", "must be greater than zero".into()));
        }
        if self.election_timeout_min <= self.heartbeat_interval {
            return Err(config_error(
                "raft.election_timeout_min",
                "must be greater than raft.heartbeat_interval".into(),
            ));
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return Err(config_error(
                "raft.election_timeout_max",
                "must be greater than raft.election_timeout_min".into(),
            ));
        }
        self.validate_transport()
    }

    /// Checks the peer transport: TLS, or plaintext with loopback addresses only.
    pub fn validate_transport(&self) -> Result<(), RaftError> {
        match &self.transport {
            PeerTransport::Tls(_) => Ok(()),
            PeerTransport::Unset => Err(config_error(
                "raft.tls",
                "missing; peer traffic must be authenticated: run `raftgres certs init --nodes NAME,NAME,... --dir DIR` \
                 and set raft.tls.cafile, raft.tls.certfile and raft.tls.keyfile (or raft.insecure: true for a \
                 cluster whose raft addresses are all loopback)"
                    .into(),
            )),
            PeerTransport::Insecure => {
                let mut addresses = vec![("raft.listen".to_string(), self.listen.as_str())];
                addresses.push(("raft.advertise".to_string(), self.advertise.as_str()));
                for (idx, peer) in self.peers.iter().enumerate() {
                    addresses.push((format!("raft.peers[{idx}].raft_addr"), peer.raft_addr.as_str()));
                }
                for (path, addr) in addresses {
                    if !addr.is_empty() && !is_loopback(addr) {
                        return Err(config_error(
                            "raft.insecure",
                            format!(
                                "plaintext peer traffic is allowed only on loopback, but {path} is {addr}; \
                                 configure raft.tls (see `raftgres certs init`) and remove raft.insecure"
                            ),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Whether the host of `host:port` (or `[v6]:port`) is a loopback address or `localhost`.
pub fn is_loopback(addr: &str) -> bool {
    let host = match addr.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(host, _)| host).unwrap_or(rest),
        None => addr.rsplit_once(':').map(|(host, _)| host).unwrap_or(addr),
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Rejects duplicate ids, names and addresses in a static peer list, naming the entry.
pub fn validate_peers(peers: &[PeerConfig]) -> Result<(), RaftError> {
    if peers.is_empty() {
        return Err(config_error("raft.peers", "is empty; list every node of the cluster, this one included".into()));
    }
    let mut ids: HashMap<NodeId, usize> = HashMap::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<&str, usize> = HashMap::new();
    for (idx, peer) in peers.iter().enumerate() {
        if peer.name.is_empty() {
            return Err(config_error(&format!("raft.peers[{idx}].name"), "is empty".into()));
        }
        if peer.raft_addr.is_empty() {
            return Err(config_error(&format!("raft.peers[{idx}].raft_addr"), "is empty".into()));
        }
        if let Some(first) = ids.insert(peer.id, idx) {
            return Err(config_error(
                &format!("raft.peers[{idx}].id"),
                format!("duplicate node id {} (also used by raft.peers[{first}]); node ids must be unique", peer.id),
            ));
        }
        if let Some(first) = names.insert(peer.name.as_str(), idx) {
            return Err(config_error(
                &format!("raft.peers[{idx}].name"),
                format!("duplicate name {:?} (also used by raft.peers[{first}])", peer.name),
            ));
        }
        if let Some(first) = addrs.insert(peer.raft_addr.as_str(), idx) {
            return Err(config_error(
                &format!("raft.peers[{idx}].raft_addr"),
                format!("duplicate address {} (also used by raft.peers[{first}])", peer.raft_addr),
            ));
        }
    }
    Ok(())
}

fn config_error(path: &str, message: String) -> RaftError {
    RaftError::Config { path: path.to_string(), message }
}

/// FNV-1a 64 of a cluster name: stable across versions and platforms.
pub fn cluster_id_of(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: NodeId, name: &str, addr: &str) -> PeerConfig {
        PeerConfig { id, name: name.into(), raft_addr: addr.into(), api_addr: String::new() }
    }

    #[track_caller]
    fn check(peers: Vec<PeerConfig>, expected: Option<&str>) {
        let res = validate_peers(&peers).err().map(|e| e.to_string());
        match (res, expected) {
            (None, None) => {}
            (Some(msg), Some(want)) => assert!(msg.starts_with(want), "{msg:?} does not start with {want:?}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn distinct_peers_pass() {
        check(vec![peer(1, "a", "h:1"), peer(2, "b", "h:2"), peer(3, "c", "h:3")], None);
    }

    #[test]
    fn duplicate_id_is_named() {
        check(vec![peer(1, "a", "h:1"), peer(1, "b", "h:2")], Some("raft.peers[1].id: duplicate node id 1"));
    }

    #[test]
    fn duplicate_name_is_named() {
        check(vec![peer(1, "a", "h:1"), peer(2, "a", "h:2")], Some("raft.peers[1].name: duplicate name"));
    }

    #[test]
    fn duplicate_address_is_named() {
        check(
            vec![peer(1, "a", "h:1"), peer(2, "b", "h:2"), peer(3, "c", "h:2")],
            Some("raft.peers[2].raft_addr: duplicate address h:2"),
        );
    }

    #[test]
    fn empty_list_is_rejected() {
        check(vec![], Some("raft.peers: is empty"));
    }

    fn insecure(listen: &str, peers: Vec<PeerConfig>) -> RaftConfig {
        let mut cfg = RaftConfig::new(1, "c", peers, PathBuf::from("/nonexistent"));
        cfg.listen = listen.into();
        cfg.transport = PeerTransport::Insecure;
        cfg
    }

    #[test]
    fn insecure_on_loopback_passes() {
        let cfg = insecure("127.0.0.1:0", vec![peer(1, "a", "127.0.0.1:1"), peer(2, "b", "[::1]:2")]);
        assert!(cfg.validate().is_ok(), "{:?}", cfg.validate());
        let cfg = insecure("localhost:7000", vec![peer(1, "a", "localhost:7000"), peer(2, "b", "127.0.0.2:2")]);
        assert!(cfg.validate().is_ok(), "{:?}", cfg.validate());
    }

    #[test]
    fn insecure_with_a_remote_peer_names_the_key() {
        let cfg = insecure("127.0.0.1:1", vec![peer(1, "a", "127.0.0.1:1"), peer(2, "b", "10.0.0.2:7000")]);
        let msg = cfg.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.starts_with("raft.insecure: "), "{msg}");
        assert!(msg.contains("raft.peers[1].raft_addr is 10.0.0.2:7000"), "{msg}");
    }

    #[test]
    fn insecure_with_a_wildcard_listener_names_the_key() {
        let cfg = insecure("0.0.0.0:7000", vec![peer(1, "a", "127.0.0.1:7000")]);
        let msg = cfg.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("raft.listen is 0.0.0.0:7000"), "{msg}");
    }

    #[test]
    fn no_transport_is_refused_with_the_command_to_run() {
        let cfg = RaftConfig::new(1, "c", vec![peer(1, "a", "127.0.0.1:1")], PathBuf::from("/nonexistent"));
        let msg = cfg.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.starts_with("raft.tls: missing"), "{msg}");
        assert!(msg.contains("raftgres certs init"), "{msg}");
    }

    #[test]
    fn loopback_detection() {
        for addr in ["127.0.0.1:1", "[::1]:1", "localhost:1", "LOCALHOST:1", "127.5.6.7:1"] {
            assert!(is_loopback(addr), "{addr}");
        }
        for addr in ["10.0.0.1:1", "[::]:1", "0.0.0.0:1", "pg1:1", ":1", "localhost.example.com:1"] {
            assert!(!is_loopback(addr), "{addr}");
        }
    }

    #[test]
    fn cluster_id_is_stable() {
        assert_eq!(cluster_id_of(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(cluster_id_of("batman"), cluster_id_of("robin"));
    }
}
