//! `GET`, `PATCH` and `PUT /config` (contract §1.7): the dynamic configuration kept in the raft store.
//!
//! `PATCH` merges with Patroni's rules (`null` deletes, objects merge, the rest replaces) and writes with
//! compare-and-set on the key's revision; `PUT` replaces the document. Unlike Patroni, both refuse a document
//! that [`DynamicConfig::parse`] rejects (400 naming the key path), because every node would otherwise fall back
//! to defaults for the bad key on its next cycle. The HA loops notice a written config through their view watch.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::response::Response;
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
        Some(config) if config.value.is_object() => Ok(Json(config.value).into_response()),
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
    let merged = merge_patch(&stored.value, &patch);
    check_document(&merged)?;
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
        tracing::info!(patch = %patch, "dynamic configuration patched");
    }
    Ok(Json(merged).into_response())
}

/// `PUT /config`: replace the document; 200 echoing it, 502 when the write fails.
pub async fn put_config(State(state): State<ApiState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let document = Value::Object(reply::json_object(&headers, body, BodyRule::Required).await?);
    check_document(&document)?;
    let control = state.control()?;
    let view = control.dcs.view_linearizable(LINEARIZABLE_READ_TIMEOUT).await.map_err(unavailable)?;
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
    Ok(Json(document).into_response())
}

/// 400 naming the key path when the document is not a valid dynamic configuration.
fn check_document(document: &Value) -> Result<(), ApiError> {
    DynamicConfig::parse(document.clone(), "").map(|_| ()).map_err(|e| ApiError::BadRequest(e.to_string()))
}

fn unavailable(e: DcsError) -> ApiError {
    ApiError::Unavailable(format!("the cluster store is unavailable: {e}"))
}
