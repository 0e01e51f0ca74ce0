//! The web page in `static/`, compiled into the binary so that `tidings`
//! serves it from any working directory with nothing to deploy beside it:
//! the HTML, the style sheet, the entry module `app.js` and its modules under
//! `/js/`, and `/tidings.js`, the stream client other apps may import too.
//!
//! Each file gets a strong ETag (a hash of its bytes) computed once at
//! start; browsers revalidate (`Cache-Control: no-cache`) and get `304 Not
//! Modified` while it still matches, so a new release is picked up at once
//! and an unchanged one costs a few bytes. Bodies are compressed (gzip or
//! brotli, as the browser accepts) by tower-http, on these routes only:
//! never on the SSE stream, where a compressor would hold events back.
//!
//! Served with a strict Content-Security-Policy: the page loads nothing but
//! its own scripts (module scripts from `'self'`) and style, and talks only
//! to its own origin.

use std::{collections::HashMap, sync::LazyLock};

use axum::{
    extract::Path,
    http::{HeaderMap, HeaderValue, Response, StatusCode, header},
    middleware,
    response::IntoResponse,
};
use sha2::{Digest, Sha256};
use tower_http::compression::CompressionLayer;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{app::AppState, error::ApiError};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The policy of the API reference under `/docs/` (Swagger UI): the page's,
/// except that Swagger UI sets inline styles.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                        connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const HTML: &str = "text/html; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The page's modules, served under `/js/`: one per concern, imported by
/// `app.js` (see its opening comment for what each is for).
const MODULES: &[(&str, &str)] = &[
    ("channels.js", include_str!("../../static/js/channels.js")),
    ("chat-state.js", include_str!("../../static/js/chat-state.js")),
    ("chat-view.js", include_str!("../../static/js/chat-view.js")),
    ("chat.js", include_str!("../../static/js/chat.js")),
    ("dom.js", include_str!("../../static/js/dom.js")),
    ("hub-status.js", include_str!("../../static/js/hub-status.js")),
    ("notifications.js", include_str!("../../static/js/notifications.js")),
    ("preferences.js", include_str!("../../static/js/preferences.js")),
    ("presence.js", include_str!("../../static/js/presence.js")),
    ("session.js", include_str!("../../static/js/session.js")),
    ("stream.js", include_str!("../../static/js/stream.js")),
];

static INDEX: LazyLock<Asset> = LazyLock::new(|| Asset::new(HTML, include_str!("../../static/index.html")));
static SCRIPT: LazyLock<Asset> = LazyLock::new(|| Asset::new(JAVASCRIPT, include_str!("../../static/app.js")));
static STYLE: LazyLock<Asset> = LazyLock::new(|| Asset::new(CSS, include_str!("../../static/app.css")));
static CLIENT: LazyLock<Asset> = LazyLock::new(|| Asset::new(JAVASCRIPT, include_str!("../../static/tidings.js")).for_any_origin());
static MODULE_ASSETS: LazyLock<HashMap<&'static str, Asset>> =
    LazyLock::new(|| MODULES.iter().map(|(name, body)| (*name, Asset::new(JAVASCRIPT, body))).collect());

/// One embedded file and what its answers carry.
struct Asset {
    content_type: &'static str,
    body: &'static str,
    /// `"<hash>"`: the first 128 bits of the SHA-256 of the body, in hex.
    /// Strong: the same bytes, byte for byte, for as long as it matches.
    etag: HeaderValue,
    /// Whether pages on other origins may load it (`Access-Control-Allow-Origin: *`).
    any_origin: bool,
}

impl Asset {
    fn new(content_type: &'static str, body: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let etag = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..16]))).expect("hex is a valid header value");
        Asset { content_type, body, etag, any_origin: false }
    }

    /// A file meant to be imported by other apps' pages: a module script
    /// from another origin is fetched with CORS, and holds nothing private.
    fn for_any_origin(mut self) -> Self {
        self.any_origin = true;
        self
    }

    /// `304` if the request's `If-None-Match` names this version, else the
    /// file; both with its validator and caching headers.
    fn respond(&self, request: &HeaderMap) -> axum::response::Response {
        let unchanged = request.get(header::IF_NONE_MATCH).is_some_and(|tags| names_etag(tags, &self.etag));
        let mut response = if unchanged {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            ([(header::CONTENT_TYPE, self.content_type)], self.body).into_response()
        };
        let headers = response.headers_mut();
        headers.insert(header::ETAG, self.etag.clone());
        // Revalidate every time: a release changes the files under the same names.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // The compression layer adds it to the bodies it compresses; a 304
        // must carry it too, or a cache could reuse one encoding for all.
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        for (name, value) in [
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        if self.any_origin {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
        response
    }
}

/// Whether an `If-None-Match` list names `etag`, by the weak comparison RFC
/// 9110 prescribes for it (`W/` ignored), or is `*`. Our tags are quoted
/// hex, so a comma always separates two tags.
fn names_etag(list: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(list) = list.to_str() else { return false };
    let Ok(ours) = etag.to_str() else { return false };
    let ours = ours.trim_start_matches("W/");
    list.split(',').map(str::trim).any(|tag| tag == "*" || tag.trim_start_matches("W/") == ours)
}

/// Middleware, outside the compression layer: a compressed body is not the
/// bytes the strong tag was computed over, so its tag becomes weak (`W/`),
/// as nginx does. `If-None-Match` compares weakly, so it still revalidates.
async fn weaken_etag_when_encoded<B>(mut response: Response<B>) -> Response<B> {
    let headers = response.headers_mut();
    if headers.contains_key(header::CONTENT_ENCODING)
        && let Some(tag) = headers.get(header::ETAG)
        && !tag.as_bytes().starts_with(b"W/")
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(tag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, weak);
        }
    }
    response
}

/// Middleware for `/docs/`: the page's security headers on the API
/// reference, which is served by `utoipa-swagger-ui` and sets none itself.
pub async fn docs_security_headers<B>(mut response: Response<B>) -> Response<B> {
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

/// Routes of the page, compressed. The files' tags are computed here, at
/// start, rather than on the first request.
pub fn router() -> OpenApiRouter<AppState> {
    for asset in [&INDEX, &SCRIPT, &STYLE, &CLIENT] {
        LazyLock::force(asset);
    }
    LazyLock::force(&MODULE_ASSETS);
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(script))
        .routes(routes!(module))
        .routes(routes!(style))
        .routes(routes!(client))
        .layer(CompressionLayer::new())
        .layer(middleware::map_response(weaken_etag_when_encoded))
}

/// The notification center page; open `/#token=<jwt>` to sign in.
#[utoipa::path(get, path = "/", tag = "operations",
    params(("If-None-Match" = Option<String>, Header, description = "A tag from an earlier answer's ETag")),
    responses((status = 200, content_type = "text/html", body = String), (status = 304, description = "Unchanged since that tag")))]
async fn index(headers: HeaderMap) -> impl IntoResponse {
    INDEX.respond(&headers)
}

/// The page's entry module, which imports those under `/js/`.
#[utoipa::path(get, path = "/app.js", tag = "operations",
    params(("If-None-Match" = Option<String>, Header, description = "A tag from an earlier answer's ETag")),
    responses((status = 200, content_type = "text/javascript", body = String), (status = 304, description = "Unchanged since that tag")))]
async fn script(headers: HeaderMap) -> impl IntoResponse {
    SCRIPT.respond(&headers)
}

/// One of the page's modules (stream, notifications, chat, preferences, ...).
#[utoipa::path(get, path = "/js/{module}", tag = "operations",
    params(("module" = String, Path, description = "The module's file name, e.g. `chat.js`"),
        ("If-None-Match" = Option<String>, Header, description = "A tag from an earlier answer's ETag")),
    responses((status = 200, content_type = "text/javascript", body = String), (status = 304, description = "Unchanged since that tag"),
        (status = 404, body = crate::error::ErrorBody, description = "No such module")))]
async fn module(Path(module): Path<String>, headers: HeaderMap) -> Result<axum::response::Response, ApiError> {
    MODULE_ASSETS.get(module.as_str()).map(|asset| asset.respond(&headers)).ok_or(ApiError::NotFound)
}

/// The page's style sheet.
#[utoipa::path(get, path = "/app.css", tag = "operations",
    params(("If-None-Match" = Option<String>, Header, description = "A tag from an earlier answer's ETag")),
    responses((status = 200, content_type = "text/css", body = String), (status = 304, description = "Unchanged since that tag")))]
async fn style(headers: HeaderMap) -> impl IntoResponse {
    STYLE.respond(&headers)
}

/// `tidings.js`: the stream client as an ES module, for this page and any
/// other app (`import { TidingsStream } from 'https://<hub>/tidings.js'`).
/// It resumes from the last event id, refreshes an expiring token through
/// the app's `getToken`, calls the app back on `reset`, and hands out typed
/// events. Loadable from any origin.
#[utoipa::path(get, path = "/tidings.js", tag = "stream",
    params(("If-None-Match" = Option<String>, Header, description = "A tag from an earlier answer's ETag")),
    responses((status = 200, content_type = "text/javascript", body = String), (status = 304, description = "Unchanged since that tag")))]
async fn client(headers: HeaderMap) -> impl IntoResponse {
    CLIENT.respond(&headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn if_none_match_names_a_tag_in_a_list_weakly_or_with_a_star() {
        let ours = value("\"abc\"");
        assert!(names_etag(&value("\"abc\""), &ours));
        assert!(names_etag(&value("W/\"abc\""), &ours));
        assert!(names_etag(&value("\"x\", W/\"abc\""), &ours));
        assert!(names_etag(&value("*"), &ours));
        assert!(!names_etag(&value("\"abcd\""), &ours));
        assert!(!names_etag(&value("abc"), &ours));
    }

    #[test]
    fn every_module_app_js_imports_is_served() {
        let entry = include_str!("../../static/app.js");
        let mut imported: Vec<&str> = entry.split("from './js/").skip(1).filter_map(|rest| rest.split('\'').next()).collect();
        imported.sort();
        let served: Vec<&str> = MODULES.iter().map(|(name, _)| *name).collect();
        assert_eq!(imported, served, "static/app.js imports exactly the modules served under /js/");
    }
}
