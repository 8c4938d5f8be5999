//! The harness's own short-timeout access to the nodes: SQL connections and the REST reads the
//! workload and the sampler need (`GET /primary`, the leader lease in `GET /raft`).
//! Every call is bounded in time and answers `None` rather than failing: a node that does not
//! answer is what chaos is about.

use std::time::Duration;

use std::net::SocketAddr;

use serde_json::Value;
use tokio::net::TcpSocket;
use tokio_postgres::Client;
use tokio_postgres::NoTls;

/// Timeout of one REST call from the harness.
pub const HTTP_TIMEOUT: Duration = Duration::from_millis(700);
/// The HTTP client of endpoints whose connections come from `source`.
pub fn http_client(source: Option<std::net::IpAddr>) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context;
    reqwest::Client::builder().timeout(HTTP_TIMEOUT).local_address(source).build().context("build the HTTP client")
}

/// Timeout of opening one SQL connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the nodes are: PostgreSQL addresses and REST API base URLs, node1 first, and the local
/// address connections come from.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// PostgreSQL `host:port` per node.
    pub pg_addrs: Vec<String>,
    /// `http://host:port` per node.
    pub apis: Vec<String>,
    /// The local address SQL connections are made from (`None`: the kernel's choice); the HTTP client
    /// must be built with the same one.
    pub source: Option<std::net::IpAddr>,
    /// HAProxy's primary port (`host:port`), when the clients go through it (`--via haproxy`).
    pub via: Option<String>,
    /// The superuser password.
    pub password: String,
    /// The HTTP client (short timeout).
    pub http: reqwest::Client,
}

impl Endpoints {
    /// Number of nodes.
    pub fn n_nodes(&self) -> usize {
        self.apis.len()
    }

    /// Opens a superuser connection to node `node_idx` (1-based), `None` when it does not open
    /// within [`CONNECT_TIMEOUT`]. The connection task ends with the returned client.
    pub async fn connect(&self, node_idx: usize) -> Option<Client> {
        self.connect_to(self.pg_addrs.get(node_idx.checked_sub(1)?)?).await
    }

    /// Opens a superuser connection to PostgreSQL at `addr` (`host:port`: a node, or HAProxy).
    pub async fn connect_to(&self, addr: &str) -> Option<Client> {
        let addr: SocketAddr = addr.parse().ok()?;
        let mut config = tokio_postgres::Config::new();
        config.user("postgres").password(self.password.as_str()).dbname("postgres").application_name("chaos");
        let open = async {
            let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.ok()?;
            if let Some(source) = self.source {
                socket.bind(SocketAddr::new(source, 0)).ok()?;
            }
            let stream = socket.connect(addr).await.ok()?;
            let _ = stream.set_nodelay(true);
            config.connect_raw(stream, NoTls).await.ok()
        };
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, open).await.ok()??;
        tokio::spawn(async move {
            // The connection's error, if any, shows up on the client's next call.
            let _ = connection.await;
        });
        Some(client)
    }

    async fn get(&self, node_idx: usize, path: &str) -> Option<reqwest::Response> {
        let api = self.apis.get(node_idx.checked_sub(1)?)?;
        self.http.get(format!("{api}{path}")).send().await.ok()
    }

    /// Whether node `node_idx` answers `GET /primary` with 200.
    pub async fn is_primary(&self, node_idx: usize) -> bool {
        self.get(node_idx, "/primary").await.is_some_and(|res| res.status().as_u16() == 200)
    }

    /// The node a connection through HAProxy reached, from the server's own address and port.
    pub async fn node_behind(&self, client: &Client) -> Option<usize> {
        let sql = "SELECT host(inet_server_addr()), inet_server_port()";
        let row = client.query_one(sql, &[]).await.ok()?;
        let addr = format!("{}:{}", row.get::<_, Option<String>>(0)?, row.get::<_, Option<i32>>(1)?);
        self.pg_addrs.iter().position(|node| *node == addr).map(|idx| idx + 1)
    }

    /// The first node that answers `GET /primary` with 200, asked all at once.
    pub async fn find_primary(&self) -> Option<usize> {
        let mut set = tokio::task::JoinSet::new();
        for node_idx in 1..=self.n_nodes() {
            let endpoints = self.clone();
            set.spawn(async move { endpoints.is_primary(node_idx).await.then_some(node_idx) });
        }
        while let Some(joined) = set.join_next().await {
            if let Ok(Some(node_idx)) = joined {
                return Some(node_idx);
            }
        }
        None
    }

    /// The leader lease in node `node_idx`'s own view (`GET /raft`): (holder node index, fencing
    /// token); `None` when it does not answer or sees no leader key.
    pub async fn lease_view(&self, node_idx: usize) -> Option<(usize, u64)> {
        let body: Value = self.get(node_idx, "/raft").await?.json().await.ok()?;
        let lease = body.get("leader_lease")?;
        let holder = node_index(lease.get("holder")?.as_str()?)?;
        let token = lease.get("fencing_token")?.as_u64()?;
        Some((holder, token))
    }
}

/// `node3` → 3: the member names [`crate::demo::cluster::LocalCluster`] gives.
pub fn node_index(name: &str) -> Option<usize> {
    name.strip_prefix("node")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_map_to_indexes() {
        assert_eq!(node_index("node2"), Some(2));
        assert_eq!(node_index("pg2"), None);
    }
}
