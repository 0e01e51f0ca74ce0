//! `/healthz` (the process lives) and `/readyz` (it can serve: the database
//! answers and the bus reaches the other nodes).

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    app::AppState,
    error::{ApiError, ErrorBody},
};

/// Routes of this resource.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz))
}

/// The answer of both probes.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: &'static str,
}

/// Liveness: 200 while the process runs, whatever its dependencies do.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 200 when the database answers and the bus is up, else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // Bounded: a database behind a partition never answers at all, and a
    // probe that hangs tells the balancer nothing.
    match tokio::time::timeout(state.database_timeout, state.db.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            return Err(ApiError::Unavailable("the database does not answer".into()));
        }
        Err(_) => {
            tracing::warn!(timeout_ms = state.database_timeout.as_millis() as u64, "not ready: the database did not answer in time");
            return Err(ApiError::Unavailable("the database does not answer".into()));
        }
    }
    if !state.hub.is_healthy() {
        return Err(ApiError::Unavailable("the event bus is down".into()));
    }
    Ok(Json(Health { status: "ready" }))
}
