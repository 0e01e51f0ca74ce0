//! The HTTP surface: one module per resource, each with its `router()`,
//! merged here. Handlers are thin: extract, call the core, map the answer.
//! Routers are `utoipa-axum` routers, so the OpenAPI document is built from
//! the very routes that are served.

pub mod contacts;
pub mod conversations;
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
    body::Body,
    extract::{DefaultBodyLimit, State},
    http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, header},
    middleware::{self, Next},
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
        .layer(middleware::map_response(no_store_for_json))
        .layer(middleware::map_response(contract_error_body))
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(settings.max_body_bytes, refuse_declared_oversize))
        .layer(middleware::from_fn(metrics::record_request))
        .layer(middleware::from_fn(request_log::log_request));
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
        .nest("/v1", api);
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

/// Middleware: every JSON answer, errors included, carries `Cache-Control:
/// no-store` unless its handler chose otherwise. They hold one user's
/// notifications and messages, which no shared cache or browser history
/// should keep. The stream sets its own `no-cache`, as the contract says.
async fn no_store_for_json<B>(mut response: Response<B>) -> Response<B> {
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if json && !response.headers().contains_key(header::CACHE_CONTROL) {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Middleware: a request whose `Content-Length` already says it is over the
/// body limit gets `413` at once. The body limit alone only counts bytes as
/// they arrive, so a client that declares a huge body and sends nothing
/// would hold its request open until the deadline and get a 503.
async fn refuse_declared_oversize(State(max): State<usize>, request: Request<Body>, next: Next) -> Result<axum::response::Response, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > max as u64) {
        return Err(input::body_too_large());
    }
    Ok(next.run(request).await)
}

/// Middleware: an error answered without a body by a layer below our
/// handlers (Swagger UI's 404 for an unknown file under `/docs/`) gets the
/// contract's error body, keeping its status and headers. Our own errors
/// already carry it, and a JSON type, so they pass untouched.
async fn contract_error_body(response: axum::response::Response) -> axum::response::Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || response.headers().contains_key(header::CONTENT_TYPE) {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut replacement = ApiError::for_status(status).into_response();
    *replacement.status_mut() = status;
    let mut headers = parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    for (name, value) in replacement.headers() {
        headers.insert(name.clone(), value.clone());
    }
    *replacement.headers_mut() = headers;
    replacement
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> impl IntoResponse {
    let mut response = ApiError::bad_request("this method is not allowed on this path").into_response();
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}
