//! The CLI's REST client: which nodes to talk to (`-c node.yml` or `--url`), basic auth from the config's
//! `ctl.authentication` (else `restapi.authentication`), and requests that try node after node until one
//! answers, failing with one line that names every address tried.
//!
//! This is the CLI's only way to reach a node (house rule 5): it never reads the raft store or PostgreSQL.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use reqwest::Method;
use reqwest::Url;
use serde_json::Value;

use crate::config::ctl_view::CtlView;
use crate::config::BasicAuth;

/// Where a node's REST API is when nothing else is said: Patroni's default port on this host.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8008";
/// How long connecting to one node may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a read (`GET /cluster` waits up to 5 s for a quorum) may take.
const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an action may take: a switchover polls for up to `2 * max(10, loop_wait)` seconds, a restart waits
/// for PostgreSQL to come back.
const ACTION_TIMEOUT: Duration = Duration::from_secs(180);
/// How much of a refusal's text an error about several nodes repeats.
const MAX_REASON_CHARS: usize = 200;

/// Which nodes the CLI talks to: patronictl's global options, accepted before or after the command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Target {
    /// Configuration file (or directory of YAML files): a node's configuration or a patronictl-style file with
    /// `restapi:` and `ctl:`. The CLI reads `restapi.connect_address` (or `listen`), the members'
    /// `raft.peers[].api_addr`, TLS settings and the credentials of `ctl.authentication` (else
    /// `restapi.authentication`). Default: $PATRONICTL_CONFIG_FILE, else ~/.config/patroni/patronictl.yaml
    /// when it exists. For `run` and `check`: the node configuration.
    #[arg(short = 'c', long = "config-file", visible_alias = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// REST API addresses to try in order, comma-separated or repeated (`http://10.0.0.1:8008`; the scheme
    /// defaults to http); patronictl's `--dcs-url` is accepted as an alias. Tried before the addresses of the
    /// configuration file. Default: http://127.0.0.1:8008.
    #[arg(
        long = "url",
        visible_alias = "dcs-url",
        short = 'd',
        value_name = "URL",
        value_delimiter = ',',
        global = true
    )]
    pub urls: Vec<String>,
    /// Accept any TLS certificate from the nodes (like `ctl.insecure`).
    #[arg(short = 'k', long, global = true)]
    pub insecure: bool,
}

impl Target {
    /// The configuration file the CLI reads: `-c`, else `PATRONICTL_CONFIG_FILE`, else patronictl's default file
    /// (`$XDG_CONFIG_HOME/patroni/patronictl.yaml`, `~/.config/…` without it) when it exists.
    pub fn config_file(&self) -> Option<PathBuf> {
        if let Some(path) = &self.config {
            return Some(path.clone());
        }
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
        if let Some(path) = var("PATRONICTL_CONFIG_FILE") {
            return Some(path);
        }
        let config_home = var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|home| home.join(".config")))?;
        let default = config_home.join("patroni").join("patronictl.yaml");
        default.exists().then_some(default)
    }
}

/// One answer from one node.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The node that answered (base URL, no path).
    pub node: Url,
    /// HTTP status code.
    pub status: u16,
    /// The body as text (Patroni's action replies are plain text).
    pub body: String,
}

impl Reply {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_str(&self.body).with_context(|| format!("read the JSON answer of {}", self.node))
    }

    /// The body with the JSON error wrapper (`{"error": "…"}`) removed, on one line.
    pub fn text(&self) -> String {
        let text = match serde_json::from_str::<Value>(&self.body) {
            Ok(Value::Object(map)) if map.len() == 1 && map.get("error").is_some_and(Value::is_string) => {
                map.get("error").and_then(Value::as_str).unwrap_or_default().to_string()
            }
            _ => self.body.trim().to_string(),
        };
        text.lines().map(str::trim).collect::<Vec<_>>().join(" ")
    }

    /// `503 Service Unavailable` plus the error text, for messages about a node that refused: a status document
    /// (Patroni answers unknown GET paths with one) is left out.
    pub fn summary(&self) -> String {
        let reason = reqwest::StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason());
        let status = match reason {
            Some(reason) => format!("{} {reason}", self.status),
            None => self.status.to_string(),
        };
        let is_document =
            matches!(serde_json::from_str::<Value>(&self.body), Ok(Value::Object(map)) if !map.contains_key("error"));
        let text = self.text();
        if is_document || text.is_empty() {
            status
        } else {
            format!("{status}: {}", text.chars().take(MAX_REASON_CHARS).collect::<String>())
        }
    }
}

/// The REST client: a list of nodes and the credentials to send.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    nodes: Vec<Url>,
    auth: Option<BasicAuth>,
    https: bool,
}

impl ApiClient {
    /// A client for `target`: its `--url`s, then the addresses of its `--config`, else [`DEFAULT_URL`].
    pub fn new(target: &Target) -> anyhow::Result<ApiClient> {
        let view = match target.config_file() {
            Some(path) => {
                crate::config::ctl_view::load_ctl_view(&path, &crate::config::process_env()).with_context(|| {
                    format!("read {} (-c, PATRONICTL_CONFIG_FILE or ~/.config/patroni/patronictl.yaml)", path.display())
                })?
            }
            None => CtlView::default(),
        };
        let mut nodes = Vec::new();
        for url in &target.urls {
            push_unique(&mut nodes, parse_base(url, view.https)?);
        }
        for address in &view.addresses {
            push_unique(&mut nodes, parse_base(address, view.https)?);
        }
        if nodes.is_empty() {
            nodes.push(parse_base(DEFAULT_URL, false)?);
        }
        let http = http_client(&view, target.insecure)?;
        Ok(ApiClient { http, nodes, auth: view.auth, https: view.https })
    }

    /// The nodes this client tries, in order.
    pub fn nodes(&self) -> &[Url] {
        &self.nodes
    }

    /// The base URL of a member from its `api_url` (`http://host:port/patroni`).
    pub fn member_base(&self, api_url: &str) -> anyhow::Result<Url> {
        parse_base(api_url, self.https)
    }

    /// `GET path` on each node in turn until one answers 2xx; the answer of the first one that did.
    pub async fn get_any(&self, path: &str) -> anyhow::Result<Reply> {
        self.first_success(&self.nodes, Method::GET, path, None).await
    }

    /// Sends the request to each of `nodes` in turn until one answers 2xx.
    pub async fn first_success(
        &self,
        nodes: &[Url],
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let mut failures = Vec::new();
        for node in nodes {
            match self.send(node, method.clone(), path, body).await {
                Ok(reply) if reply.is_success() => return Ok(reply),
                Ok(reply) => failures.push((node.clone(), reply.summary())),
                Err(e) => failures.push((node.clone(), e)),
            }
        }
        Err(no_node_answered(&failures))
    }

    /// Sends the request to each of `nodes` in turn until one answers at all (any status).
    pub async fn first_answer(
        &self,
        nodes: &[Url],
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let mut failures = Vec::new();
        for node in nodes {
            match self.send(node, method.clone(), path, body).await {
                Ok(reply) => return Ok(reply),
                Err(e) => failures.push((node.clone(), e)),
            }
        }
        Err(no_node_answered(&failures))
    }

    /// One request to one node; `Err` carries a short reason ("connection refused") when there is no answer.
    pub async fn send(&self, node: &Url, method: Method, path: &str, body: Option<&Value>) -> Result<Reply, String> {
        let url = node.join(path).map_err(|e| format!("build the URL for {path}: {e}"))?;
        let timeout = if method == Method::GET { READ_TIMEOUT } else { ACTION_TIMEOUT };
        let mut request = self.http.request(method, url).timeout(timeout);
        if let Some(auth) = &self.auth {
            request = request.basic_auth(&auth.username, Some(auth.password.expose()));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| short_reason(&e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| short_reason(&e))?;
        Ok(Reply { node: node.clone(), status, body })
    }
}

/// `restapi.connect_address`, then every peer's `api_addr`.
fn http_client(view: &CtlView, insecure: bool) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).no_proxy();
    if insecure || view.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(ca_file) = &view.cacert {
        let pem = std::fs::read(ca_file).with_context(|| format!("read the CA certificate {}", ca_file.display()))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("parse the CA certificate {}", ca_file.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().context("build the HTTP client")
}

/// A node's base URL from `host:port`, `http://host:port` or an `api_url` (`…/patroni`): scheme, host and
/// port only.
pub fn parse_base(text: &str, https: bool) -> anyhow::Result<Url> {
    let text = text.trim();
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("{}://{text}", if https { "https" } else { "http" })
    };
    let mut url = Url::parse(&with_scheme).with_context(|| format!("{text:?} is not a REST API address"))?;
    anyhow::ensure!(url.has_host(), "{text:?} is not a REST API address: it names no host");
    url.set_path("/");
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

fn push_unique(nodes: &mut Vec<Url>, url: Url) {
    if !nodes.contains(&url) {
        nodes.push(url);
    }
}

/// A node's URL as people write it: no trailing slash.
pub fn display_url(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

/// `no node answered (tried A, B: connection refused)`, or each address with its own reason when they differ.
fn no_node_answered(failures: &[(Url, String)]) -> anyhow::Error {
    let all_same = failures.windows(2).all(|pair| pair[0].1 == pair[1].1);
    let tried = match failures.first() {
        None => "no address to try".to_string(),
        Some((_, reason)) if all_same => {
            let urls: Vec<String> = failures.iter().map(|(url, _)| display_url(url)).collect();
            format!("tried {}: {reason}", urls.join(", "))
        }
        Some(_) => {
            let each: Vec<String> =
                failures.iter().map(|(url, reason)| format!("{}: {reason}", display_url(url))).collect();
            format!("tried {}", each.join("; "))
        }
    };
    anyhow::anyhow!("no node answered ({tried})")
}

/// The innermost cause of a transport error in a few words.
fn short_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e.to_string();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                _ => io.to_string(),
            };
        }
        innermost = err.to_string();
        source = err.source();
    }
    innermost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_base(text: &str, https: bool, expected: &str) {
        assert_eq!(parse_base(text, https).expect("parses").as_str(), expected);
    }

    #[test]
    fn base_urls_keep_scheme_host_and_port_only() {
        check_base("127.0.0.1:8008", false, "http://127.0.0.1:8008/");
        check_base("127.0.0.1:8008", true, "https://127.0.0.1:8008/");
        check_base("http://10.0.0.1:8009/patroni", true, "http://10.0.0.1:8009/");
        check_base("https://db1.example:8008/", false, "https://db1.example:8008/");
        check_base("[::1]:8008", false, "http://[::1]:8008/");
        assert!(parse_base("http://", false).is_err());
    }

    #[test]
    fn the_error_names_every_address_tried() {
        let a = parse_base("127.0.0.1:8008", false).expect("parses");
        let b = parse_base("127.0.0.1:8009", false).expect("parses");
        let same =
            no_node_answered(&[(a.clone(), "connection refused".into()), (b.clone(), "connection refused".into())]);
        assert_eq!(
            same.to_string(),
            "no node answered (tried http://127.0.0.1:8008, http://127.0.0.1:8009: connection refused)"
        );
        let mixed = no_node_answered(&[(a, "connection refused".into()), (b, "503 no quorum".into())]);
        assert_eq!(
            mixed.to_string(),
            "no node answered (tried http://127.0.0.1:8008: connection refused; http://127.0.0.1:8009: 503 no quorum)"
        );
    }

    #[test]
    fn json_errors_read_as_their_message() {
        let node = parse_base(DEFAULT_URL, false).expect("parses");
        let reply = Reply { node: node.clone(), status: 400, body: r#"{"error":"bad\nthing"}"#.into() };
        assert_eq!(reply.text(), "bad thing");
        assert_eq!(reply.summary(), "400 Bad Request: bad thing");
        let text = Reply { node: node.clone(), status: 412, body: "candidate does not exists".into() };
        assert_eq!(text.text(), "candidate does not exists");
        let document = Reply { node, status: 503, body: r#"{"state":"running","role":"replica"}"#.into() };
        assert_eq!(document.summary(), "503 Service Unavailable");
    }
}
