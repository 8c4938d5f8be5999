//! API errors as JSON (`{"error": "…"}`) and a `Json` extractor whose rejections are JSON errors too.
//!
//! Every failure the REST API returns goes through [`ApiError`], so clients never have to parse an HTML
//! error page. This module must not decide *which* error a request deserves; handlers do.

use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequest;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest request body the API accepts; its JSON bodies are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A failed API request; the variant picks the HTTP status and the message is the JSON `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad JSON, bad parameter).
    #[error("{0}")]
    BadRequest(String),
    /// 404: the thing asked about does not exist (no scheduled switchover, …).
    #[error("{0}")]
    NotFound(String),
    /// 405: the path exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: a compare-and-set lost against a concurrent change.
    #[error("{0}")]
    Conflict(String),
    /// 411: a body is required but the request has no length.
    #[error("{0}")]
    LengthRequired(String),
    /// 501: no handler for this method and path (Patroni's "Unsupported method").
    #[error("unsupported method {method} {path}")]
    NotImplemented {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// 502: the stored value is missing or unreadable, or a write failed (`GET /config`, `PUT /config`).
    #[error("{0}")]
    BadGateway(String),
    /// 503: the node cannot serve this now (no leader, store unreachable, …).
    #[error("{0}")]
    Unavailable(String),
    /// 500: the node's own state refuses the request (a reloaded configuration file that is invalid).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::LengthRequired(_) => StatusCode::LENGTH_REQUIRED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotImplemented { .. } => StatusCode::NOT_IMPLEMENTED,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The request span already names method and path; the client receives the message itself.
        tracing::debug!(status = self.status().as_u16(), error = %self, "request rejected");
        (self.status(), axum::Json(ErrorBody { error: self.to_string() })).into_response()
    }
}

/// `axum::Json`, except that a rejected body becomes a 400 [`ApiError`] with a JSON body.
///
/// Body size is capped by the router's `DefaultBodyLimit` ([`MAX_BODY_BYTES`]); an oversized body is a 400 too.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(rejection_to_error(rejection)),
        }
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn rejection_to_error(rejection: JsonRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Switchover {
        leader: String,
    }

    async fn echo(Json(body): Json<Switchover>) -> Json<serde_json::Value> {
        Json(serde_json::json!({ "leader": body.leader }))
    }

    /// Sends `body` to a test route that uses the wrapper; returns (status, body).
    async fn check_post(body: Vec<u8>) -> (u16, serde_json::Value) {
        let router = Router::new().route("/switchover", post(echo)).layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
        let req = Request::builder()
            .method("POST")
            .uri("/switchover")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("static request parts are valid");
        let res = router.oneshot(req).await.expect("router is infallible");
        let status = res.status().as_u16();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("body reads");
        (status, serde_json::from_slice(&bytes).expect("response is JSON"))
    }

    #[tokio::test]
    async fn good_json_body_is_extracted() {
        let (status, body) = check_post(br#"{"leader": "pg0"}"#.to_vec()).await;
        assert_eq!((status, body), (200, serde_json::json!({"leader": "pg0"})));
    }

    #[tokio::test]
    async fn bad_json_body_is_400_with_json_error() {
        let (status, body) = check_post(b"{not json".to_vec()).await;
        assert_eq!(status, 400);
        let error = body["error"].as_str().expect("error is a string");
        assert!(error.contains("Failed to parse the request body as JSON"), "{error}");
    }

    #[tokio::test]
    async fn missing_field_is_400_with_json_error() {
        let (status, body) = check_post(br#"{"candidate": "pg1"}"#.to_vec()).await;
        assert_eq!(status, 400);
        assert!(body["error"].as_str().expect("error is a string").contains("missing field `leader`"));
    }

    #[tokio::test]
    async fn oversized_body_is_400_with_json_error() {
        let big = format!(r#"{{"leader": "{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let (status, body) = check_post(big.into_bytes()).await;
        assert_eq!(status, 400);
        assert!(body["error"].is_string());
    }

    #[test]
    fn every_error_has_its_status() {
        let cases = [
            (ApiError::BadRequest("bad".into()), 400),
            (ApiError::NotFound("no switchover is scheduled".into()), 404),
            (ApiError::MethodNotAllowed("no".into()), 405),
            (ApiError::Conflict("lost".into()), 409),
            (ApiError::LengthRequired("no body".into()), 411),
            (ApiError::BadGateway("no config".into()), 502),
            (ApiError::NotImplemented { method: "POST".into(), path: "/x".into() }, 501),
            (ApiError::Unavailable("no leader".into()), 503),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
        }
    }
}
