//! The HTTP surface: one module per resource, each with its `router()`,
//! merged here. Handlers are thin: extract, call the core, map the answer.

pub mod health;
pub mod input;
pub mod notifications;
pub mod page;
pub mod stream;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath},
    http::{Request, StatusCode},
    response::IntoResponse,
};
use tower_http::trace::TraceLayer;

use crate::{app::AppState, error::ApiError};

/// The largest request body accepted: room for 1,000 recipients and a full
/// `data` object, far below anything that could hurt the server.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// Every route of the service.
pub fn router(state: AppState) -> Router {
    let api = Router::new().merge(stream::router()).merge(notifications::router());
    Router::new()
        .merge(health::router())
        .merge(page::router())
        .nest("/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            // The span names the matched route, never the raw URI: a stream's
            // query string may carry its token.
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let route = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
                tracing::info_span!("request", method = %request.method(), route)
            }),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> impl IntoResponse {
    let mut response = ApiError::bad_request("this method is not allowed on this path").into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}
