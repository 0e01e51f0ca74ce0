//! The page's files: validators, revalidation and compression, and that
//! the stream is never compressed.

use std::io::Read;

use reqwest::{StatusCode, header};

use crate::helpers::{into_json, spawn_app};

/// Every file the page is made of, and `/tidings.js`.
const FILES: &[&str] = &["/", "/app.js", "/app.css", "/js/stream.js", "/js/chat.js", "/tidings.js"];

#[tokio::test]
async fn each_file_has_a_strong_etag_and_answers_304_while_it_still_matches() {
    let app = spawn_app().await;
    for path in FILES {
        let url = format!("{}{path}", app.base);
        let first = app.http.get(&url).send().await.unwrap();
        assert_eq!(first.status(), StatusCode::OK, "{path}");
        assert_eq!(first.headers()[header::CACHE_CONTROL], "no-cache", "{path}: revalidated every time");
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 20, "{path}: a strong tag, got {etag}");
        let body = first.bytes().await.unwrap();
        assert!(!body.is_empty());

        let again = app.http.get(&url).header(header::IF_NONE_MATCH, &etag).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
        assert_eq!(again.headers()[header::ETAG], etag.as_str(), "{path}");
        assert_eq!(again.headers()[header::CACHE_CONTROL], "no-cache", "{path}");
        assert!(again.bytes().await.unwrap().is_empty(), "{path}: a 304 has no body");

        // A list that names it (weakly, as a browser echoes a compressed answer's tag) matches too.
        let listed = app.http.get(&url).header(header::IF_NONE_MATCH, format!("\"other\", W/{etag}")).send().await.unwrap();
        assert_eq!(listed.status(), StatusCode::NOT_MODIFIED, "{path}");

        let changed = app.http.get(&url).header(header::IF_NONE_MATCH, "\"an-older-release\"").send().await.unwrap();
        assert_eq!(changed.status(), StatusCode::OK, "{path}: another tag gets the file");
        assert_eq!(changed.bytes().await.unwrap(), body, "{path}");
    }
}

#[tokio::test]
async fn files_are_gzipped_or_brotli_compressed_for_browsers_that_accept_it() {
    let app = spawn_app().await;
    let url = format!("{}/app.js", app.base);
    let plain = app.http.get(&url).send().await.unwrap();
    assert!(!plain.headers().contains_key(header::CONTENT_ENCODING), "no Accept-Encoding, no compression");
    let strong = plain.headers()[header::ETAG].to_str().unwrap().to_owned();
    let original = plain.bytes().await.unwrap();

    let gzipped = app.http.get(&url).header(header::ACCEPT_ENCODING, "gzip").send().await.unwrap();
    assert_eq!(gzipped.status(), StatusCode::OK);
    assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");
    assert!(gzipped.headers()[header::VARY].to_str().unwrap().to_ascii_lowercase().contains("accept-encoding"));
    // Not the bytes the strong tag names: the same tag, weak.
    assert_eq!(gzipped.headers()[header::ETAG], format!("W/{strong}").as_str());
    let compressed = gzipped.bytes().await.unwrap();
    assert!(compressed.len() * 2 < original.len(), "{} bytes gzipped from {}", compressed.len(), original.len());
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut decoded).unwrap();
    assert_eq!(decoded, original, "gunzips to the file");

    let brotli = app.http.get(&url).header(header::ACCEPT_ENCODING, "br").send().await.unwrap();
    assert_eq!(brotli.headers()[header::CONTENT_ENCODING], "br");
    assert!(brotli.bytes().await.unwrap().len() < original.len());

    // The weak tag a browser echoes after a compressed answer revalidates.
    let revalidated = app
        .http
        .get(&url)
        .header(header::ACCEPT_ENCODING, "gzip")
        .header(header::IF_NONE_MATCH, format!("W/{strong}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn the_stream_is_never_compressed_whatever_the_client_accepts() {
    let app = spawn_app().await;
    let token = app.token("squeezer");
    let response = app
        .http
        .get(format!("{}/v1/stream?access_token={token}", app.base))
        .header(header::ACCEPT_ENCODING, "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    assert!(!response.headers().contains_key(header::CONTENT_ENCODING), "{:?}", response.headers());
    assert!(!response.headers().contains_key(header::ETAG));
}

#[tokio::test]
async fn tidings_js_may_be_imported_by_pages_on_any_origin() {
    let app = spawn_app().await;
    let response = app.http.get(format!("{}/tidings.js", app.base)).header(header::ORIGIN, "https://app.example").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));
    let page_module = app.http.get(format!("{}/js/stream.js", app.base)).send().await.unwrap();
    assert!(!page_module.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN), "the page's own modules stay same-origin");
}

#[tokio::test]
async fn an_unknown_module_gets_the_contracts_404() {
    let app = spawn_app().await;
    let response = app.http.get(format!("{}/js/no-such-module.js", app.base)).send().await.unwrap();
    let (status, body) = into_json(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}
