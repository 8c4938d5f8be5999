//! Access control of the protected endpoints (contract §1.1 "Security"), checked in Patroni's order, the first
//! failure winning: the allowlist (403 `Access is denied`), the client certificate (403
//! `client certificate required`), then basic auth (401 with `WWW-Authenticate: Basic realm="Patroni"`).
//!
//! The checks are PURE functions over the request's facts; [`protect`] is the middleware that gathers them.
//! Credentials are compared in constant time against `base64("<username>:<password>")`, as Patroni does, and
//! are never logged: neither the expected key nor the received header appears in any log line or error.

use std::net::IpAddr;
use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::extract::Request;
use axum::extract::State;
use axum::http::header::AUTHORIZATION;
use axum::http::header::WWW_AUTHENTICATE;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use base64::Engine as _;
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use crate::api::reply;
use crate::api::ApiState;
use crate::config::BasicAuth;
use crate::config::RestApiConfig;
use crate::config::VerifyClient;

/// Who is calling: the peer address and whether it presented a verified client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's socket address.
    pub addr: SocketAddr,
    /// A client certificate was presented and verified during the TLS handshake.
    pub client_cert: bool,
}

/// One allowlist entry: an address or network, or a host name resolved at check time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// An IP network (a single address is a /32 or /128).
    Net(IpNet),
    /// A host name.
    Host(String),
}

impl AllowEntry {
    /// Parses `10.0.0.0/8`, `192.168.1.7`, `::1`, `fe80::/10` or a host name.
    ///
    /// Text that is not an address or network (a prefix too long for the family included) is taken as a host
    /// name, which never matches unless it resolves, as Patroni ignores an unusable entry.
    pub fn parse(text: &str) -> AllowEntry {
        let text = text.trim();
        let (addr_text, prefix_text) = text.split_once('/').unwrap_or((text, ""));
        // The address goes through std's parser, not ipnet's: std refuses leading zeros (`010.0.0.0`, octal
        // to some tools), which ipnet would read as decimal, quietly letting in a network nobody wrote.
        // IPv6 may be written as in URLs, `[::1]` or `[fe80::]/10`.
        let Ok(addr) = addr_text.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else {
            return AllowEntry::Host(text.to_string());
        };
        let net = if prefix_text.is_empty() {
            Some(IpNet::from(addr))
        } else {
            prefix_text.parse::<u8>().ok().and_then(|prefix| IpNet::new(addr, prefix).ok())
        };
        net.map_or_else(|| AllowEntry::Host(text.to_string()), AllowEntry::Net)
    }
}

/// Whether `ip` lies in `net` (an IPv4-mapped IPv6 client matches IPv4 networks).
pub fn in_network(ip: IpAddr, net: &IpNet) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    net.contains(&ip)
}

/// The access rules of the protected endpoints, from `restapi.*`.
#[derive(Clone, Default)]
pub struct Security {
    /// `base64("<username>:<password>")`, when authentication is configured.
    auth_key: Option<String>,
    /// `restapi.allowlist`.
    pub allowlist: Vec<AllowEntry>,
    /// `restapi.allowlist_include_members`.
    pub allowlist_include_members: bool,
    /// Client certificates are checked on protected endpoints (HTTPS with `verify_client` optional/required).
    pub require_client_cert: bool,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<redacted>"))
            .field("allowlist", &self.allowlist)
            .field("allowlist_include_members", &self.allowlist_include_members)
            .field("require_client_cert", &self.require_client_cert)
            .finish()
    }
}

impl Security {
    /// The rules of `restapi`; client certificates matter only when TLS is on.
    pub fn from_config(restapi: &RestApiConfig) -> Security {
        Security {
            auth_key: restapi.authentication.as_ref().map(auth_key),
            allowlist: restapi.allowlist.iter().map(|entry| AllowEntry::parse(entry)).collect(),
            allowlist_include_members: restapi.allowlist_include_members,
            require_client_cert: restapi.certfile.is_some() && restapi.verify_client != VerifyClient::None,
        }
    }

    /// Rules requiring basic auth with `credentials` and nothing else.
    pub fn with_auth(credentials: &BasicAuth) -> Security {
        Security { auth_key: Some(auth_key(credentials)), ..Security::default() }
    }

    /// Rules allowing only the `allowlist` entries (`10.0.0.0/8`, a host name, …), without credentials.
    pub fn with_allowlist(allowlist: &[&str]) -> Security {
        Security { allowlist: allowlist.iter().map(|entry| AllowEntry::parse(entry)).collect(), ..Security::default() }
    }

    /// Whether any allowlist applies (only then is the client address needed).
    pub fn has_allowlist(&self) -> bool {
        !self.allowlist.is_empty() || self.allowlist_include_members
    }
}

/// `base64("<username>:<password>")` (RFC 4648 with padding), as Patroni builds it.
fn auth_key(credentials: &BasicAuth) -> String {
    BASE64_STANDARD.encode(format!("{}:{}", credentials.username, credentials.password.expose()))
}

/// A denied request: the code, Patroni's text, and whether to ask for basic credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// 403 `Access is denied`.
    NotAllowed,
    /// 403 `client certificate required`.
    NoClientCert,
    /// 401 `no auth header received`.
    NoAuthHeader,
    /// 401 `not authenticated`.
    NotAuthenticated,
}

impl Denied {
    /// Patroni's response.
    pub fn response(self) -> Response {
        let (code, text) = match self {
            Denied::NotAllowed => (403, "Access is denied"),
            Denied::NoClientCert => (403, "client certificate required"),
            Denied::NoAuthHeader => (401, "no auth header received"),
            Denied::NotAuthenticated => (401, "not authenticated"),
        };
        let mut res = reply::text(code, text);
        if code == 401 {
            res.headers_mut()
                .insert(WWW_AUTHENTICATE, axum::http::HeaderValue::from_static(r#"Basic realm="Patroni""#));
        }
        res
    }
}

/// PURE: the checks after the allowlist, in order: client certificate, then basic auth.
pub fn check_credentials(security: &Security, client_cert: bool, authorization: Option<&[u8]>) -> Result<(), Denied> {
    if security.require_client_cert && !client_cert {
        return Err(Denied::NoClientCert);
    }
    let Some(expected) = security.auth_key.as_deref() else { return Ok(()) };
    let Some(header) = authorization else { return Err(Denied::NoAuthHeader) };
    match header.strip_prefix(b"Basic ") {
        Some(given) if constant_time_eq(given, expected.as_bytes()) => Ok(()),
        _ => Err(Denied::NotAuthenticated),
    }
}

/// PURE: whether `ip` is in the static allowlist entries or among `member_ips`; host names arrive resolved.
pub fn allowed(ip: IpAddr, networks: &[IpNet], member_ips: &[IpAddr]) -> bool {
    networks.iter().any(|net| in_network(ip, net))
        || member_ips.iter().any(|member| in_network(ip, &IpNet::from(*member)))
}

/// Equality whose running time depends only on the length of `given`, which the caller chose: neither the
/// contents nor the length of `expected` (the key) shows in the timing, so a guess learns nothing about it.
///
/// subtle's slice comparison returns early when the lengths differ, which would let the timing tell the key's
/// length; so `given` is compared with the key repeated to `given`'s length, and the lengths are compared
/// separately, both in constant time.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        // Never the case for a basic-auth key (`base64(":")` is four bytes); refuse rather than divide by zero.
        return false;
    }
    let repeated: Vec<u8> = (0..given.len()).map(|idx| expected[idx % expected.len()]).collect();
    (given.ct_eq(&repeated) & given.len().ct_eq(&expected.len())).into()
}

/// The access rules in force, replaced by a reload of the configuration (SIGHUP, `POST /reload`).
#[derive(Debug, Default)]
pub struct SharedSecurity(std::sync::RwLock<std::sync::Arc<Security>>);

impl SharedSecurity {
    /// Rules that start as `security`.
    pub fn new(security: Security) -> SharedSecurity {
        SharedSecurity(std::sync::RwLock::new(std::sync::Arc::new(security)))
    }

    /// The rules in force.
    pub fn current(&self) -> std::sync::Arc<Security> {
        self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Replaces the rules for the requests that arrive from now on.
    pub fn replace(&self, security: Security) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(security);
    }
}

/// Middleware of every protected endpoint.
pub async fn protect(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let security = state.security.current();
    let peer = req.extensions().get::<ConnectInfo<PeerInfo>>().map(|info| info.0);
    if security.has_allowlist() {
        let permitted = match peer {
            Some(peer) => allowlist_permits(&state, &security, peer.addr.ip()).await,
            // Without a known peer (an in-process call) an allowlist cannot be satisfied.
            None => false,
        };
        if !permitted {
            tracing::info!(client = ?peer.map(|p| p.addr), "denied by restapi.allowlist");
            return Denied::NotAllowed.response();
        }
    }
    let authorization = req.headers().get(AUTHORIZATION).map(|value| value.as_bytes());
    if let Err(denied) = check_credentials(&security, peer.is_some_and(|p| p.client_cert), authorization) {
        tracing::info!(client = ?peer.map(|p| p.addr), ?denied, "protected endpoint refused");
        return denied.response();
    }
    next.run(req).await.into_response()
}

/// Resolves the host names of the allowlist (and of the members' `api_url`s when asked) and checks `ip`.
async fn allowlist_permits(state: &ApiState, security: &Security, ip: IpAddr) -> bool {
    let mut networks = Vec::new();
    let mut hosts = Vec::new();
    for entry in &security.allowlist {
        match entry {
            AllowEntry::Net(net) => networks.push(*net),
            AllowEntry::Host(host) => hosts.push(host.clone()),
        }
    }
    if security.allowlist_include_members {
        if let Some(control) = state.control.as_ref() {
            let view = control.dcs.view();
            hosts.extend(view.members.values().filter_map(|member| api_url_host(&member.api_url)));
        }
    }
    let mut member_ips = Vec::new();
    for host in hosts {
        match tokio::net::lookup_host((host.as_str(), 0)).await {
            Ok(addrs) => member_ips.extend(addrs.map(|addr| addr.ip())),
            Err(e) => tracing::debug!(host, error = %e, "allowlist host does not resolve"),
        }
    }
    allowed(ip, &networks, &member_ips)
}

/// The host of `http[s]://host:port/path`.
fn api_url_host(api_url: &str) -> Option<String> {
    let rest = api_url.split_once("://").map_or(api_url, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    /// `base64("patroni:s3cr:et")`, the key of [`auth`], written out so the tests do not share the encoder they check.
    const PATRONI_KEY: &str = "cGF0cm9uaTpzM2NyOmV0";

    fn auth() -> Security {
        Security::with_auth(&BasicAuth { username: "patroni".into(), password: Secret::new("s3cr:et") })
    }

    #[track_caller]
    fn check(security: &Security, client_cert: bool, header: Option<&str>, expected: Result<(), Denied>) {
        assert_eq!(check_credentials(security, client_cert, header.map(str::as_bytes)), expected, "{header:?}");
    }

    #[test]
    fn credential_rows() {
        let good = format!("Basic {PATRONI_KEY}");
        check(&Security::default(), false, None, Ok(()));
        check(&auth(), false, None, Err(Denied::NoAuthHeader));
        check(&auth(), false, Some("Basic bm9wZTpub3Bl"), Err(Denied::NotAuthenticated));
        check(&auth(), false, Some("Bearer x"), Err(Denied::NotAuthenticated));
        check(&auth(), false, Some(&good[..good.len() - 1]), Err(Denied::NotAuthenticated));
        check(&auth(), false, Some(&good), Ok(()));
        let tls = Security { require_client_cert: true, ..auth() };
        check(&tls, false, Some(&good), Err(Denied::NoClientCert));
        check(&tls, true, None, Err(Denied::NoAuthHeader));
        check(&tls, true, Some(&good), Ok(()));
    }

    #[test]
    fn auth_key_is_patronis_padded_base64() {
        let rows = [("patroni", "patroni", "cGF0cm9uaTpwYXRyb25p"), ("a", "", "YTo="), ("ab", "c", "YWI6Yw==")];
        for (username, password, key) in rows {
            let credentials = BasicAuth { username: username.into(), password: Secret::new(password) };
            assert_eq!(auth_key(&credentials), key, "{username}:{password}");
        }
        assert_eq!(auth().auth_key.as_deref(), Some(PATRONI_KEY));
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abd", b"abc"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"abc"));
        assert!(!constant_time_eq(b"abcabc", b"abc"), "a repeated key is not the key");
        assert!(!constant_time_eq(b"", b""), "an empty key never matches");
    }

    #[track_caller]
    fn check_allowed(entries: &[&str], members: &[&str], ip: &str, expected: bool) {
        let networks: Vec<IpNet> = entries
            .iter()
            .filter_map(|entry| match AllowEntry::parse(entry) {
                AllowEntry::Net(net) => Some(net),
                AllowEntry::Host(_) => None,
            })
            .collect();
        let members: Vec<IpAddr> = members.iter().map(|m| m.parse().expect("ip")).collect();
        assert_eq!(allowed(ip.parse().expect("ip"), &networks, &members), expected, "{ip} in {entries:?}/{members:?}");
    }

    #[test]
    fn allowlist_rows() {
        check_allowed(&["127.0.0.1"], &[], "127.0.0.1", true);
        check_allowed(&["127.0.0.1"], &[], "127.0.0.2", false);
        check_allowed(&["10.0.0.0/8"], &[], "10.200.3.4", true);
        check_allowed(&["10.0.0.0/8"], &[], "11.0.0.1", false);
        check_allowed(&["10.1.2.3/8"], &[], "10.9.9.9", true);
        check_allowed(&["192.168.1.128/25"], &[], "192.168.1.129", true);
        check_allowed(&["192.168.1.128/25"], &[], "192.168.1.127", false);
        check_allowed(&["0.0.0.0/0"], &[], "8.8.8.8", true);
        check_allowed(&["fe80::/10"], &[], "fe80::1", true);
        check_allowed(&["127.0.0.1"], &[], "::ffff:127.0.0.1", true);
        check_allowed(&[], &["10.0.0.5"], "10.0.0.5", true);
        check_allowed(&[], &["10.0.0.5"], "10.0.0.6", false);
        check_allowed(&[], &["10.0.0.5"], "::ffff:10.0.0.5", true);
        assert_eq!(AllowEntry::parse("db1.example.com"), AllowEntry::Host("db1.example.com".into()));
        assert_eq!(AllowEntry::parse("10.0.0.0/33"), AllowEntry::Host("10.0.0.0/33".into()));
        assert_eq!(AllowEntry::parse("010.0.0.0/8"), AllowEntry::Host("010.0.0.0/8".into()));
        assert_eq!(AllowEntry::parse(" [fe80::]/10 "), AllowEntry::parse("fe80::/10"));
        assert_eq!(AllowEntry::parse("[::1]"), AllowEntry::parse("::1/128"));
    }

    #[test]
    fn api_url_hosts() {
        assert_eq!(api_url_host("http://10.0.0.1:8008/patroni").as_deref(), Some("10.0.0.1"));
        assert_eq!(api_url_host("https://[::1]:8008/patroni").as_deref(), Some("::1"));
        assert_eq!(api_url_host("http://db1/patroni").as_deref(), Some("db1"));
        assert_eq!(api_url_host("").as_deref(), None);
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert!(!format!("{:?}", auth()).contains(PATRONI_KEY));
    }
}
