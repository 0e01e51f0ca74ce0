//! `/healthz` (the process lives) and `/readyz` (it can serve: the database
//! answers and the bus reaches the other nodes).

use axum::{Json, Router, extract::State, response::IntoResponse, routing::get};
use serde_json::json;

use crate::{app::AppState, error::ApiError};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    if let Err(e) = state.db.ping().await {
        tracing::warn!(error = %e, "not ready: the database does not answer");
        return Err(ApiError::Unavailable("the database does not answer".into()));
    }
    if !state.hub.is_healthy() {
        return Err(ApiError::Unavailable("the event bus is down".into()));
    }
    Ok(Json(json!({ "status": "ready" })))
}
