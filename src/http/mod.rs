//! The HTTP surface: one module per resource, each with its `router()`,
//! merged here. Handlers are thin: extract, call the core, map the answer.
//! Routers are `utoipa-axum` routers, so the OpenAPI document is built from
//! the very routes that are served.

pub mod contacts;
pub mod conversations;
pub mod edge;
pub mod email;
pub mod health;
pub mod input;
pub mod metrics;
pub mod notifications;
pub mod openapi;
pub mod page;
pub mod preferences;
pub mod presence;
pub mod push;
pub mod request_log;
pub mod revocations;
pub mod stats;
pub mod stream;
pub mod templates;
pub mod topics;
pub mod webhooks;

use std::time::Duration;

use axum::{
    BoxError, Router,
    error_handling::HandleErrorLayer,
    extract::DefaultBodyLimit,
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware,
    response::IntoResponse,
};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::{app::AppState, config::Settings, error::ApiError};

/// What the HTTP layer takes from the settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub cors_origins: Vec<String>,
    /// Whether `/metrics` is on the main router (no separate listener).
    pub metrics_on_main: bool,
}

impl HttpSettings {
    /// The HTTP part of the settings.
    pub fn from_settings(settings: &Settings) -> Self {
        HttpSettings {
            max_body_bytes: settings.limits.max_body_bytes,
            request_timeout: settings.limits.request_timeout,
            cors_origins: settings.cors_origins.clone(),
            metrics_on_main: settings.metrics_bind.is_none(),
        }
    }
}

/// Every route of the service, with the OpenAPI document they produce.
pub fn router(state: AppState, settings: &HttpSettings) -> Router {
    let (routes, mut api) = documented_routes(settings).split_for_parts();
    openapi::describe_stream_events(&mut api);
    openapi::require_one_recipient(&mut api);
    let docs = Router::from(SwaggerUi::new("/docs").url("/openapi.json", api)).layer(middleware::map_response(page::docs_security_headers));
    let mut router = routes
        .merge(docs)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(settings.max_body_bytes, edge::edge));
    if let Some(cors) = cors_layer(&settings.cors_origins) {
        router = router.layer(cors);
    }
    router.with_state(state)
}

/// The routes that the OpenAPI document describes.
pub fn documented_routes(settings: &HttpSettings) -> OpenApiRouter<AppState> {
    let deadline = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: BoxError| async {
            ApiError::Unavailable("the request took too long; it may or may not have taken effect".into())
        }))
        .timeout(settings.request_timeout);
    // Every request but the stream has a deadline; the stream is meant to last.
    let api = OpenApiRouter::new()
        .merge(stream::router())
        .merge(
            OpenApiRouter::new()
                .merge(notifications::router())
                .merge(preferences::router())
                .merge(stats::router())
                .merge(conversations::router())
                .merge(presence::router())
                .merge(topics::router())
                .merge(revocations::router())
                .merge(templates::router())
                .merge(contacts::router())
                .merge(webhooks::router())
                .merge(push::router())
                .merge(email::router())
                .layer(deadline),
        );
    let mut router = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::router())
        .merge(page::router())
        .merge(api);
    if settings.metrics_on_main {
        router = router.merge(metrics::router());
    }
    router
}

/// CORS for browsers on other origins. None configured: same-origin only.
/// `*`: any origin, without credentials. A list: those origins, with
/// credentials, so the `tidings_token` cookie works across them.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    let exposed = [header::RETRY_AFTER, HeaderName::from_static("idempotent-replayed")];
    if origins.iter().any(|o| o == "*") {
        return Some(CorsLayer::new().allow_origin(Any).allow_methods(methods).allow_headers(Any).expose_headers(exposed));
    }
    let allowed: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods(methods)
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers(exposed)
            .allow_credentials(true),
    )
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> impl IntoResponse {
    let mut response = ApiError::bad_request("this method is not allowed on this path").into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}
