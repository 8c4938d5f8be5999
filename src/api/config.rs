//! `GET`, `PATCH` and `PUT /config` (contract §1.7): the dynamic configuration kept in the raft store.
//!
//! `PATCH` merges with Patroni's rules (`null` deletes, objects merge, the rest replaces) and writes with
//! compare-and-set on the key's revision; `PUT` replaces the document. Unlike Patroni, both refuse a document
//! that [`DynamicConfig::parse`] rejects (400 naming the key path), because every node would otherwise fall back
//! to defaults for the bad key on its next cycle. The HA loops notice a written config through their view watch.
//!
//! Secrets never leave through this endpoint or the log: every answer (and the `PATCH` log line) shows
//! [`REDACTED`] instead of the value of a key ending in `password` and instead of the `password` of a libpq
//! connection string under a key ending in `conninfo` (see [`redact`]). Patroni shows them as stored. A
//! `PATCH` or `PUT` that sends [`REDACTED`] back keeps the stored secret (see [`restore_redacted`]), so
//! `edit-config` round trips never overwrite a password with the mask.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::Response;
use serde_json::Map;
use serde_json::Value;

use crate::api::cluster::LINEARIZABLE_READ_TIMEOUT;
use crate::api::error::ApiError;
use crate::api::error::Json;
use crate::api::reply;
use crate::api::reply::BodyRule;
use crate::api::ApiState;
use crate::config::merge_patch;
use crate::config::DynamicConfig;
use crate::dcs::DcsError;

/// How long a config write may wait for a quorum.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET /config`: the stored document; 502 when absent or unreadable.
pub async fn get_config(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let view = state.control()?.dcs.view();
    match view.config {
        Some(config) if config.value.is_object() => Ok(Json(redact(&config.value)).into_response()),
        _ => Err(ApiError::BadGateway("the dynamic configuration is not in the store".into())),
    }
}

/// `PATCH /config`: merge, check, compare-and-set; 200 with the merged document.
pub async fn patch_config(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let patch = Value::Object(reply::json_object(&headers, body, BodyRule::Required).await?);
    let control = state.control()?;
    let view = control.dcs.view_linearizable(LINEARIZABLE_READ_TIMEOUT).await.map_err(unavailable)?;
    let Some(stored) = view.config.filter(|config| config.value.is_object()) else {
        return Err(ApiError::Unavailable("the dynamic configuration is not in the store".into()));
    };
    let patch = restore_redacted(&patch, Some(&stored.value));
    let merged = merge_patch(&stored.value, &patch);
    check_document(&merged)?;
    check_no_new_standby_cluster(&stored.value, &merged)?;
    if merged != stored.value {
        let dcs = control.dcs.clone();
        let document = merged.clone();
        // A spawned write finishes even when the client hangs up (house rule 14).
        let written =
            tokio::spawn(async move { dcs.write_config(&document, Some(stored.mod_rev), WRITE_TIMEOUT).await })
                .await
                .map_err(|e| ApiError::Unavailable(format!("write the configuration: {e}")))?
                .map_err(unavailable)?;
        if !written {
            return Err(ApiError::Conflict("the configuration changed concurrently; read it and try again".into()));
        }
        tracing::info!(patch = %redact(&patch), "dynamic configuration patched");
    }
    Ok(Json(redact(&merged)).into_response())
}

/// `PUT /config`: replace the document; 200 echoing it, 502 when the write fails.
pub async fn put_config(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let document = Value::Object(reply::json_object(&headers, body, BodyRule::Required).await?);
    check_document(&document)?;
    let control = state.control()?;
    let view = control.dcs.view_linearizable(LINEARIZABLE_READ_TIMEOUT).await.map_err(unavailable)?;
    let document = restore_redacted(&document, view.config.as_ref().map(|stored| &stored.value));
    if let Some(stored) = view.config.as_ref() {
        check_no_new_standby_cluster(&stored.value, &document)?;
    }
    if view.config.as_ref().is_none_or(|stored| stored.value != document) {
        let dcs = control.dcs.clone();
        let to_write = document.clone();
        let written = tokio::spawn(async move { dcs.write_config(&to_write, None, WRITE_TIMEOUT).await })
            .await
            .map_err(|e| ApiError::BadGateway(format!("write the configuration: {e}")))?;
        match written {
            Ok(true) => tracing::info!("dynamic configuration replaced"),
            Ok(false) => return Err(ApiError::BadGateway("write the configuration: the store refused it".into())),
            Err(e) => return Err(ApiError::BadGateway(format!("write the configuration: {e}"))),
        }
    }
    Ok(Json(redact(&document)).into_response())
}

/// 400 when a change would turn a running cluster into a standby cluster: raftgres cannot demote a primary into
/// a standby leader of another cluster (its data has diverged from the remote primary's); a standby cluster is
/// made by bootstrapping it with `standby_cluster` in `bootstrap.dcs`. Removing the section (promoting the
/// standby cluster) and changing it are allowed.
fn check_no_new_standby_cluster(stored: &Value, document: &Value) -> Result<(), ApiError> {
    let standby = |doc: &Value| DynamicConfig::parse_lenient(doc.clone()).0.view().standby_cluster.is_some();
    if !standby(stored) && standby(document) {
        return Err(ApiError::BadRequest(
            "standby_cluster: a running cluster cannot become a standby cluster; bootstrap a new cluster with \
             standby_cluster in bootstrap.dcs"
                .into(),
        ));
    }
    Ok(())
}

/// 400 naming the key path when the document is not a valid dynamic configuration.
fn check_document(document: &Value) -> Result<(), ApiError> {
    DynamicConfig::parse(document.clone(), "").map(|_| ()).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn unavailable(e: DcsError) -> ApiError {
    ApiError::Unavailable(format!("the cluster store is unavailable: {e}"))
}

/// What the API shows instead of a secret.
pub const REDACTED: &str = "********";

/// PURE: `document` with every secret replaced by [`REDACTED`]: the value of a key ending in `password`
/// (`password`, `sslpassword`, `keyfile_password`; not `password_encryption`) and the password inside a
/// connection string under a key ending in `conninfo` (`password=…` or `postgresql://user:…@host`).
pub fn redact(document: &Value) -> Value {
    match document {
        Value::Object(map) => {
            let mut res = Map::with_capacity(map.len());
            for (key, value) in map {
                let shown = match secret_kind(key, value) {
                    Some(SecretKind::Whole) => Value::String(REDACTED.into()),
                    Some(SecretKind::Conninfo(text)) => Value::String(redact_conninfo(text)),
                    None => redact(value),
                };
                res.insert(key.clone(), shown);
            }
            Value::Object(res)
        }
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// PURE: `incoming` (a `PUT` document or a `PATCH`) with each secret that is still [`REDACTED`] taken back
/// from `stored` at the same key path; a masked secret with nothing stored behind it is dropped.
pub fn restore_redacted(incoming: &Value, stored: Option<&Value>) -> Value {
    let Value::Object(map) = incoming else { return incoming.clone() };
    let mut res = Map::with_capacity(map.len());
    for (key, value) in map {
        let stored_value = stored.and_then(|stored| stored.get(key));
        let restored = match secret_kind(key, value) {
            Some(SecretKind::Whole) if value.as_str() == Some(REDACTED) => match stored_value {
                Some(stored_value) if !stored_value.is_null() => stored_value.clone(),
                _ => continue,
            },
            Some(SecretKind::Conninfo(text)) => {
                Value::String(restore_conninfo(text, stored_value.and_then(Value::as_str)))
            }
            _ => restore_redacted(value, stored_value),
        };
        res.insert(key.clone(), restored);
    }
    Value::Object(res)
}

enum SecretKind<'a> {
    /// The whole value is a secret.
    Whole,
    /// A connection string that may hold a password.
    Conninfo(&'a str),
}

fn secret_kind<'a>(key: &str, value: &'a Value) -> Option<SecretKind<'a>> {
    let key = key.to_ascii_lowercase();
    match value {
        Value::Null | Value::Object(_) | Value::Array(_) => None,
        Value::String(text) if key.ends_with("conninfo") => Some(SecretKind::Conninfo(text)),
        _ if key.ends_with("password") => Some(SecretKind::Whole),
        _ => None,
    }
}

fn redact_conninfo(text: &str) -> String {
    match conninfo_password(text) {
        Some(range) => format!("{}{REDACTED}{}", &text[..range.start], &text[range.end..]),
        None => text.to_string(),
    }
}

/// `text` with a masked password replaced by the password of `stored`, when it has one.
fn restore_conninfo(text: &str, stored: Option<&str>) -> String {
    let Some(range) = conninfo_password(text).filter(|range| &text[range.clone()] == REDACTED) else {
        return text.to_string();
    };
    match stored.and_then(|stored| conninfo_password(stored).map(|stored_range| &stored[stored_range])) {
        Some(password) => format!("{}{password}{}", &text[..range.start], &text[range.end..]),
        None => text.to_string(),
    }
}

/// PURE: the byte range of the password in a libpq connection string, in either form: `password=value`
/// among `key=value` pairs (the value bare or single-quoted with backslash escapes), or the `:password@`
/// of a `postgres://` / `postgresql://` URI.
pub fn conninfo_password(text: &str) -> Option<std::ops::Range<usize>> {
    let trimmed = text.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        let offset = text.len() - trimmed.len();
        let after_scheme = offset + trimmed.find("://")? + 3;
        let authority_end = text[after_scheme..].find(['/', '?']).map_or(text.len(), |end| after_scheme + end);
        let at = after_scheme + text[after_scheme..authority_end].rfind('@')?;
        let colon = after_scheme + text[after_scheme..at].find(':')?;
        return Some(colon + 1..at);
    }
    let bytes = text.as_bytes();
    let mut idx = 0;
    while idx < bytes.len() {
        while idx < bytes.len() && bytes[idx].is_ascii_whitespace() {
            idx += 1;
        }
        let key_start = idx;
        while idx < bytes.len() && bytes[idx] != b'=' && !bytes[idx].is_ascii_whitespace() {
            idx += 1;
        }
        let key = &text[key_start..idx];
        while idx < bytes.len() && bytes[idx].is_ascii_whitespace() {
            idx += 1;
        }
        if idx >= bytes.len() || bytes[idx] != b'=' {
            return None;
        }
        idx += 1;
        while idx < bytes.len() && bytes[idx].is_ascii_whitespace() {
            idx += 1;
        }
        let value_start = idx;
        let value = if bytes.get(idx) == Some(&b'\'') {
            idx += 1;
            while idx < bytes.len() && bytes[idx] != b'\'' {
                idx += if bytes[idx] == b'\\' { 2 } else { 1 };
            }
            idx = idx.min(bytes.len());
            let range = value_start + 1..idx;
            idx = (idx + 1).min(bytes.len());
            range
        } else {
            while idx < bytes.len() && !bytes[idx].is_ascii_whitespace() {
                idx += 1;
            }
            value_start..idx
        };
        if key == "password" {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[track_caller]
    fn check_conninfo(text: &str, expected: &str) {
        assert_eq!(redact_conninfo(text), expected, "{text}");
        let restored = restore_conninfo(expected, Some(text));
        assert_eq!(restored, text, "restoring {expected}");
    }

    #[test]
    fn conninfo_passwords_are_masked_in_every_form() {
        check_conninfo("host=a password=s3cret user=r", "host=a password=******** user=r");
        check_conninfo("host=a password = 's3 c\\'ret' user=r", "host=a password = '********' user=r");
        check_conninfo("password=x", "password=********");
        check_conninfo(
            "postgresql://rep:s3cret@db1:5432/postgres?sslmode=require",
            "postgresql://rep:********@db1:5432/postgres?sslmode=require",
        );
        check_conninfo("postgres://rep@db1/postgres", "postgres://rep@db1/postgres");
        check_conninfo("host=a user=r passfile=/x", "host=a user=r passfile=/x");
        check_conninfo("host=a 'broken", "host=a 'broken");
        check_conninfo("password='unterminated", "password='********");
        check_conninfo("", "");
    }

    #[test]
    fn get_config_masks_secrets_and_keeps_the_rest() {
        let stored = json!({
            "ttl": 30,
            "postgresql": {
                "parameters": {"password_encryption": "scram-sha-256", "max_connections": 100},
                "recovery_conf": {"primary_conninfo": "host=p password=pw1"},
                "authentication": {"replication": {"username": "rep", "password": "pw2"}, "rewind": {"password": null}},
            },
            "standby_cluster": {"keyfile_password": 1234},
            "list": [{"password": "pw3"}],
        });
        let expected = json!({
            "ttl": 30,
            "postgresql": {
                "parameters": {"password_encryption": "scram-sha-256", "max_connections": 100},
                "recovery_conf": {"primary_conninfo": "host=p password=********"},
                "authentication": {"replication": {"username": "rep", "password": REDACTED}, "rewind": {"password": null}},
            },
            "standby_cluster": {"keyfile_password": REDACTED},
            "list": [{"password": REDACTED}],
        });
        let shown = redact(&stored);
        assert_eq!(shown, expected);
        assert!(!shown.to_string().contains("pw"), "{shown}");
    }

    #[test]
    fn writing_back_the_mask_keeps_the_stored_secrets() {
        let stored = json!({
            "postgresql": {
                "recovery_conf": {"primary_conninfo": "host=p password=pw1"},
                "authentication": {"replication": {"password": "pw2"}},
            },
        });
        // What edit-config or a client sends after reading GET /config and changing other keys.
        let put = json!({
            "ttl": 40,
            "postgresql": {
                "recovery_conf": {"primary_conninfo": "host=q password=********"},
                "authentication": {"replication": {"password": REDACTED}, "superuser": {"password": REDACTED}},
            },
        });
        let expected = json!({
            "ttl": 40,
            "postgresql": {
                "recovery_conf": {"primary_conninfo": "host=q password=pw1"},
                "authentication": {"replication": {"password": "pw2"}, "superuser": {}},
            },
        });
        assert_eq!(restore_redacted(&put, Some(&stored)), expected);
        let patch = json!({"postgresql": {"authentication": {"replication": {"password": "new"}}}});
        assert_eq!(restore_redacted(&patch, Some(&stored)), patch, "a real new password goes through");
        let merged = merge_patch(
            &stored,
            &restore_redacted(
                &json!({"postgresql": {"authentication": {"replication": {"password": REDACTED}}}}),
                Some(&stored),
            ),
        );
        assert_eq!(merged, stored, "patching the mask back changes nothing");
    }
}
