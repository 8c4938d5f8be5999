//! The Patroni-compatible REST API (contract §1): the router, its fallbacks, request tracing, and the server.
//!
//! Routing mirrors Patroni's `do_<METHOD>_<first path segment>` dispatch: `GET /patroni`, `/liveness`,
//! `/readiness` and `/metrics` (and any path below them) have handlers; every other `GET` runs the health
//! evaluator and answers 503 for an unknown path, never 404; `HEAD` and `OPTIONS` on any path return the health
//! evaluator's code with no body, because that is what HAProxy's `option httpchk` reads.
//! The cluster endpoints (`/cluster`, `/history`, `/config`, `/failsafe`) read the raft store through [`Dcs`];
//! the actions (`/switchover`, `/failover`, `/restart`, `/reload`, `/reinitialize`) are protected by
//! [`security`] and carried out by the HA loop; so is raftgres' `DELETE /cluster` (`raftgres remove`), which
//! wipes the cluster's keys itself. Health answers come from the HA loop's [`NodeStatus`] watch
//! channel only; the API never touches PostgreSQL. The server speaks HTTPS when `restapi.certfile` is set
//! ([`tls`]).

pub mod actions;
pub mod cluster;
pub mod config;
pub mod error;
pub mod health;
pub mod members;
pub mod metrics;
pub mod reply;
pub mod security;
pub mod status;
pub mod tls;
pub mod types;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::extract::State;
use axum::handler::Handler;
use axum::http::header::SERVER;
use axum::http::HeaderValue;
use axum::http::Method;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::response::Response;
use axum::routing::get;
use axum::routing::MethodRouter;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::api::actions::restart::RestartSchedule;
use crate::api::error::ApiError;
use crate::api::security::PeerInfo;
use crate::api::security::Security;
use crate::api::security::SharedSecurity;
use crate::api::tls::TlsHandle;
use crate::config::RestApiConfig;
use crate::dcs::Dcs;
use crate::ha::requests::HaRequest;
use crate::status::NodeStatus;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    /// The HA loop's latest snapshot of this node (also the source of scope, name, ttl and loop_wait).
    pub status: watch::Receiver<NodeStatus>,
    /// The raft store and the HA loop; `None` for a health-only server (tests, benchmarks).
    pub control: Option<Arc<Control>>,
    /// Access rules of the protected endpoints (a reload replaces them).
    pub security: Arc<SharedSecurity>,
    /// HTTPS configuration, when `restapi.certfile` is set.
    pub tls: Option<Arc<TlsHandle>>,
    /// This node's scheduled restart.
    pub restarts: Arc<RestartSchedule>,
    /// `restapi.http_extra_headers` (and `https_extra_headers` over TLS), added to every response.
    pub extra_headers: Arc<Vec<(axum::http::HeaderName, HeaderValue)>>,
    /// Reads the node's configuration again (`POST /reload`); `None` on a server without one (tests).
    pub reload: Option<Arc<crate::reload::Reloader>>,
}

/// What the cluster and action endpoints need besides the status.
pub struct Control {
    /// The raft store.
    pub dcs: Dcs,
    /// Requests to the HA loop.
    pub ha: mpsc::Sender<HaRequest>,
    /// Client for the candidates' `GET /patroni` during the failover pre-check.
    pub http: reqwest::Client,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("control", &self.control.is_some())
            .field("security", &self.security)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// A health-only state answering from `status`: the cluster and action endpoints answer 503.
    pub fn new(status: watch::Receiver<NodeStatus>) -> ApiState {
        ApiState {
            status,
            control: None,
            security: Arc::new(SharedSecurity::default()),
            tls: None,
            restarts: Arc::new(RestartSchedule::default()),
            extra_headers: Arc::new(Vec::new()),
            reload: None,
        }
    }

    /// The full state of a node: the store, the HA loop's request channel and the `restapi` settings
    /// (access rules, TLS files, which are read here).
    pub fn for_node(
        status: watch::Receiver<NodeStatus>,
        dcs: Dcs,
        ha: mpsc::Sender<HaRequest>,
        restapi: &RestApiConfig,
    ) -> anyhow::Result<ApiState> {
        let tls = TlsHandle::from_config(restapi)?;
        let mut state = ApiState::new(status).with_control(dcs, ha)?.with_security(Security::from_config(restapi));
        if let (Some(cafile), Some(control)) = (&restapi.cafile, state.control.as_mut()) {
            // Peers' HTTPS `api_url`s are signed by the same CA as ours, as in a Patroni deployment.
            let http = peer_client(Some(cafile))?;
            *control = Arc::new(Control { dcs: control.dcs.clone(), ha: control.ha.clone(), http });
        }
        let extra_headers = Arc::new(extra_headers(restapi, tls.is_some()));
        Ok(ApiState { tls, extra_headers, ..state })
    }

    /// Adds the store and the HA loop.
    pub fn with_control(self, dcs: Dcs, ha: mpsc::Sender<HaRequest>) -> anyhow::Result<ApiState> {
        let http = peer_client(None)?;
        Ok(ApiState { control: Some(Arc::new(Control { dcs, ha, http })), ..self })
    }

    /// Replaces the access rules.
    pub fn with_security(self, security: Security) -> ApiState {
        ApiState { security: Arc::new(SharedSecurity::new(security)), ..self }
    }

    /// The store and HA loop, or 503 on a health-only server.
    pub fn control(&self) -> Result<&Control, ApiError> {
        self.control.as_deref().ok_or_else(|| ApiError::Unavailable("this server has no cluster store".into()))
    }
}

/// The client for peers' `GET /patroni` (the switchover pre-check here, the HA loop's leader race), trusting
/// `cafile` besides the system roots.
pub fn peer_client(cafile: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    let mut builder = reqwest::Client::builder().timeout(actions::failover::CANDIDATE_TIMEOUT);
    if let Some(cafile) = cafile {
        let pem = std::fs::read(cafile).with_context(|| format!("read restapi.cafile {}", cafile.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).context("restapi.cafile: parse the certificates")?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("build the HTTP client for peer status requests")
}

/// The API's router, with tracing and a request body limit applied.
pub fn router(state: ApiState) -> Router {
    let guard = axum::middleware::from_fn_with_state(state.clone(), security::protect);
    let segments: [(&str, MethodRouter<ApiState>); 13] = [
        ("patroni", status_route(get(status::get_patroni))),
        ("liveness", status_route(get(status::get_liveness))),
        ("readiness", status_route(get(status::get_readiness))),
        ("metrics", status_route(get(status::get_metrics))),
        (
            "cluster",
            status_route(get(cluster::get_cluster).delete(actions::remove::delete_cluster.layer(guard.clone()))),
        ),
        ("history", status_route(get(cluster::get_history))),
        ("failsafe", status_route(get(cluster::get_failsafe))),
        (
            "config",
            status_route(
                get(config::get_config)
                    .patch(config::patch_config.layer(guard.clone()))
                    .put(config::put_config.layer(guard.clone())),
            ),
        ),
        (
            "switchover",
            action_route(
                axum::routing::post(actions::failover::post_switchover.layer(guard.clone()))
                    .delete(actions::failover::delete_switchover.layer(guard.clone())),
            ),
        ),
        ("failover", action_route(axum::routing::post(actions::failover::post_failover.layer(guard.clone())))),
        (
            "restart",
            action_route(
                axum::routing::post(actions::restart::post_restart.layer(guard.clone()))
                    .delete(actions::restart::delete_restart.layer(guard.clone())),
            ),
        ),
        ("reload", action_route(axum::routing::post(actions::post_reload.layer(guard.clone())))),
        ("reinitialize", action_route(axum::routing::post(actions::post_reinitialize.layer(guard)))),
    ];
    let mut router = members::routes(&state);
    for (segment, method_router) in segments {
        // Patroni routes on the first path segment only, so `/patroni/` and `/metrics/x` reach the same handler.
        router = router
            .route(&format!("/{segment}"), method_router.clone())
            .route(&format!("/{segment}/"), method_router.clone())
            .route(&format!("/{segment}/{{*rest}}"), method_router);
    }
    router
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(error::MAX_BODY_BYTES))
        .layer(axum::middleware::map_response_with_state(state.clone(), server_header))
        .layer(
            // A 503 is a health verdict, not a failure, so tower-http's "5xx is an error" logging is off.
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .with_state(state)
}

/// Serves the API on `listener` (over TLS when `state.tls` is set) until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let app = router(state.clone()).into_make_service_with_connect_info::<PeerInfo>();
    match state.tls.clone() {
        Some(tls) => {
            tracing::info!(addr = %addr, "REST API listening (HTTPS)");
            let listener = tls::TlsListener::new(listener, tls)?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
        None => {
            tracing::info!(addr = %addr, "REST API listening");
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await
        }
    }
}

/// A GET handler whose `HEAD`/`OPTIONS` go to the health evaluator, as in Patroni, and whose other methods
/// are unsupported.
fn status_route(get_route: MethodRouter<ApiState>) -> MethodRouter<ApiState> {
    get_route.head(status::health_bare).options(status::health_bare).fallback(unsupported)
}

/// An action segment without a GET handler: `GET /switchover` runs Patroni's generic `do_GET` (the health
/// evaluator, 503 with the status object for an unknown path).
fn action_route(route: MethodRouter<ApiState>) -> MethodRouter<ApiState> {
    status_route(route.get(status::health_with_body))
}

/// Everything no route matched: Patroni's generic `do_GET` / `do_HEAD` / `do_OPTIONS`, or 501.
async fn fallback(state: State<ApiState>, method: Method, uri: Uri) -> Response {
    match method {
        Method::GET => status::health_with_body(state, uri).await,
        Method::HEAD | Method::OPTIONS => status::health_bare(state, uri).await.into_response(),
        _ => unsupported(method, uri).await,
    }
}

/// Unknown POST/PUT/PATCH/DELETE paths: 501 like Patroni's stdlib server, but with a JSON body instead of its
/// HTML error page (our one deliberate deviation: every API failure is JSON, house rule 12).
async fn unsupported(method: Method, uri: Uri) -> Response {
    ApiError::NotImplemented { method: method.to_string(), path: uri.path().to_string() }.into_response()
}

async fn server_header(State(state): State<ApiState>, mut res: Response) -> Response {
    res.headers_mut().insert(SERVER, HeaderValue::from_static(concat!("raftgres/", env!("CARGO_PKG_VERSION"))));
    for (name, value) in state.extra_headers.iter() {
        res.headers_mut().insert(name.clone(), value.clone());
    }
    res
}

/// `restapi.http_extra_headers`, plus `https_extra_headers` when TLS is on; invalid names or values are skipped
/// with a warning.
fn extra_headers(restapi: &RestApiConfig, tls: bool) -> Vec<(axum::http::HeaderName, HeaderValue)> {
    let https = restapi.https_extra_headers.iter().filter(|_| tls);
    let mut res = Vec::new();
    for (name, value) in restapi.http_extra_headers.iter().chain(https) {
        match (axum::http::HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            (Ok(name), Ok(value)) => res.push((name, value)),
            _ => tracing::warn!(header = %name, "restapi extra header is not a valid HTTP header; skipped"),
        }
    }
    res
}

/// Sequence number that ties a request's log lines together.
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// The span `api{method,path,request_id}` every request's log lines carry.
fn request_span(req: &Request) -> Span {
    let request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed);
    tracing::info_span!("api", method = %req.method(), path = %req.uri().path(), request_id)
}

/// One DEBUG line per response: health probes arrive every few seconds from every load balancer.
fn log_response(res: &Response, latency: Duration, _span: &Span) {
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    tracing::debug!(status = res.status().as_u16(), latency_us, "answered");
}
