//! The web page in `static/`, compiled into the binary so that `tidings`
//! serves it from any working directory with nothing to deploy beside it.
//! Served with a strict Content-Security-Policy: the page loads nothing but
//! its own script and style, and talks only to its own origin.

use axum::{http::header, response::IntoResponse};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::app::AppState;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The policy of the API reference under `/docs/` (Swagger UI): the page's,
/// except that Swagger UI sets inline styles.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                        connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Middleware for `/docs/`: the page's security headers on the API
/// reference, which is served by `utoipa-swagger-ui` and sets none itself.
pub async fn docs_security_headers<B>(mut response: axum::http::Response<B>) -> axum::http::Response<B> {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, DOCS_CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.entry(name).or_insert(header::HeaderValue::from_static(value));
    }
    response
}

/// Routes of the page.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(index)).routes(routes!(script)).routes(routes!(style))
}

/// The notification center page; open `/#token=<jwt>` to sign in.
#[utoipa::path(get, path = "/", tag = "operations", responses((status = 200, content_type = "text/html", body = String)))]
async fn index() -> impl IntoResponse {
    asset("text/html; charset=utf-8", include_str!("../../static/index.html"))
}

/// The page's script.
#[utoipa::path(get, path = "/app.js", tag = "operations", responses((status = 200, content_type = "text/javascript", body = String)))]
async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", include_str!("../../static/app.js"))
}

/// The page's style sheet.
#[utoipa::path(get, path = "/app.css", tag = "operations", responses((status = 200, content_type = "text/css", body = String)))]
async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("../../static/app.css"))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}
