//! Patroni's plain-text replies and request bodies.
//!
//! Patroni answers its action endpoints with a bare text body sent as `Content-Type: text/html`
//! (`reload scheduled`, `Switchover target and source are the same`, …); patronictl and scripts print or match
//! that text, so raftgres sends exactly the same bytes. Failures Patroni leaves to the stdlib's HTML error page
//! (bad JSON, 411, 502) are JSON errors here instead ([`ApiError`]), house rule 12.
//! This module must not decide which text a request deserves; handlers do.

use axum::body::Body;
use axum::http::header::CONTENT_LENGTH;
use axum::http::header::CONTENT_TYPE;
use axum::http::header::TRANSFER_ENCODING;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::Response;
use serde_json::Map;
use serde_json::Value;

use crate::api::error::ApiError;
use crate::api::error::MAX_BODY_BYTES;

/// The content type of Patroni's text replies.
pub const TEXT_CONTENT_TYPE: &str = "text/html";

/// A Patroni text reply: `code` with `text` as the whole body.
pub fn text(code: u16, text: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(CONTENT_TYPE, TEXT_CONTENT_TYPE)], text.into()).into_response()
}

/// Whether a request body is required (`PATCH /config`, `POST /switchover`) or optional (`POST /restart`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyRule {
    /// A non-empty JSON object is required: no length → 411, empty or anything else → 400.
    Required,
    /// No body or an empty one reads as `{}`; a body that is present must be a JSON object.
    Optional,
}

/// Reads a request body as Patroni's `_read_json_content` does, with JSON errors.
pub async fn json_object(headers: &HeaderMap, body: Body, rule: BodyRule) -> Result<Map<String, Value>, ApiError> {
    let has_length = headers.contains_key(CONTENT_LENGTH) || headers.contains_key(TRANSFER_ENCODING);
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError::BadRequest(format!("read the request body: {e}")))?;
    parse_object(has_length, &bytes, rule)
}

/// PURE: the body rules of [`json_object`] over bytes already read.
pub fn parse_object(has_length: bool, bytes: &[u8], rule: BodyRule) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return match (rule, has_length) {
            (BodyRule::Optional, _) => Ok(Map::new()),
            (BodyRule::Required, false) => Err(ApiError::LengthRequired("a JSON object body is required".into())),
            (BodyRule::Required, true) => Err(ApiError::BadRequest("the request body is empty".into())),
        };
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) if !map.is_empty() || rule == BodyRule::Optional => Ok(map),
        Ok(Value::Object(_)) => Err(ApiError::BadRequest("the request body is an empty JSON object".into())),
        Ok(other) => Err(ApiError::BadRequest(format!("the request body must be a JSON object, got {other}"))),
        Err(e) => Err(ApiError::BadRequest(format!("the request body is not valid JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(has_length: bool, bytes: &str, rule: BodyRule, expected: Result<&str, u16>) {
        let got = parse_object(has_length, bytes.as_bytes(), rule);
        match (got, expected) {
            (Ok(map), Ok(json)) => assert_eq!(Value::Object(map), serde_json::from_str::<Value>(json).expect("json")),
            (Err(e), Err(code)) => assert_eq!(e.status().as_u16(), code, "{e}"),
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn body_rules_follow_read_json_content() {
        check(false, "", BodyRule::Required, Err(411));
        check(true, "", BodyRule::Required, Err(400));
        check(true, "{}", BodyRule::Required, Err(400));
        check(true, "[1]", BodyRule::Required, Err(400));
        check(true, "{oops", BodyRule::Required, Err(400));
        check(true, r#"{"leader":"pg0"}"#, BodyRule::Required, Ok(r#"{"leader":"pg0"}"#));
        check(false, "", BodyRule::Optional, Ok("{}"));
        check(true, " ", BodyRule::Optional, Ok("{}"));
        check(true, "{}", BodyRule::Optional, Ok("{}"));
        check(true, "null", BodyRule::Optional, Err(400));
    }

    #[test]
    fn text_replies_are_text_html() {
        let res = text(202, "reload scheduled");
        assert_eq!(res.status().as_u16(), 202);
        assert_eq!(res.headers()[CONTENT_TYPE], TEXT_CONTENT_TYPE);
    }
}
