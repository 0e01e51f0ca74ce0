//! What an SRE relies on: the OpenAPI document, metrics, logs without
//! secrets, graceful shutdown, limits, CORS and the page's headers.

use std::{process::Stdio, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::helpers::{EventStream, PATIENCE, SECRET, into_json, spawn_app, spawn_app_with};

/// Every route of the contract, as (method, path in the document).
const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/stream"),
    ("post", "/v1/notifications"),
    ("post", "/v1/notifications/batch"),
    ("get", "/v1/notifications"),
    ("get", "/v1/notifications/unread_count"),
    ("post", "/v1/notifications/{id}/read"),
    ("post", "/v1/notifications/read_all"),
    ("post", "/v1/notifications/{id}/click"),
    ("delete", "/v1/notifications/{id}"),
    ("get", "/v1/preferences"),
    ("put", "/v1/preferences/{type}"),
    ("get", "/v1/stats/notifications"),
    ("post", "/v1/conversations"),
    ("get", "/v1/conversations"),
    ("get", "/v1/conversations/{id}"),
    ("post", "/v1/conversations/{id}/members"),
    ("delete", "/v1/conversations/{id}/members/{user_id}"),
    ("post", "/v1/conversations/{id}/messages"),
    ("get", "/v1/conversations/{id}/messages"),
    ("patch", "/v1/conversations/{id}/messages/{message_id}"),
    ("delete", "/v1/conversations/{id}/messages/{message_id}"),
    ("post", "/v1/conversations/{id}/typing"),
    ("post", "/v1/conversations/{id}/read"),
    ("post", "/v1/presence"),
    ("get", "/v1/presence"),
    ("post", "/v1/topics/{topic}/events"),
    ("get", "/v1/topics/{topic}/events"),
    ("post", "/v1/revocations"),
    ("put", "/v1/templates/{type}"),
    ("get", "/v1/templates/{type}"),
    ("delete", "/v1/templates/{type}"),
    ("put", "/v1/users/{user_id}/contact"),
    ("get", "/v1/users/{user_id}/contact"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("delete", "/v1/webhooks/{id}"),
    ("get", "/v1/notifications/{id}/deliveries"),
    // Additions of the email channel.
    ("get", "/v1/channels"),
    ("get", "/v1/unsubscribe/{token}"),
    ("post", "/v1/unsubscribe/{token}"),
    ("get", "/v1/r/{token}"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/"),
];

/// The document states the contract's limits, so that generated clients and
/// fuzzers send what the server takes (issue 15, item 7).
#[tokio::test]
async fn the_openapi_document_states_the_contracts_limits() {
    let app = spawn_app().await;
    let (status, doc) = into_json(app.http.get(format!("{}/openapi.json", app.base)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    // The publish body: its fields, and exactly one of user_id / user_ids.
    let publish = &schemas["PublishRequest"]["allOf"][0];
    let fields = &publish["properties"];
    assert_eq!(fields["title"]["maxLength"], 255);
    assert_eq!(fields["title"]["minLength"], 1);
    assert_eq!(fields["type"]["pattern"], "^[a-z0-9_.-]{1,50}$");
    assert_eq!(fields["type"]["maxLength"], 50);
    assert_eq!(fields["body"]["maxLength"], 10_000);
    assert_eq!(fields["user_ids"]["maxItems"], 1000);
    assert_eq!(fields["user_ids"]["minItems"], 1);
    assert_eq!(fields["user_ids"]["items"]["$ref"], "#/components/schemas/UserId");
    assert_eq!(fields["group_key"]["maxLength"], 255);
    assert_eq!(fields["action_url"]["maxLength"], 2048);
    let required: Vec<&str> = publish["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(!required.contains(&"user_ids") && !required.contains(&"user_id"), "neither recipient field is required alone: {required:?}");
    assert_eq!(
        schemas["PublishRequest"]["allOf"][1]["oneOf"],
        json!([{"type": "object", "required": ["user_id"]}, {"type": "object", "required": ["user_ids"]}, {"type": "object", "required": ["audience"]}])
    );
    assert_eq!(schemas["UserId"]["maxLength"], 255);
    assert_eq!(schemas["UserId"]["pattern"], tidings::domain::NO_CONTROL_PATTERN);
    assert_eq!(schemas["BatchRequest"]["properties"]["items"]["maxItems"], 1000);
    assert_eq!(schemas["NewMessage"]["properties"]["content"]["maxLength"], 10_000);
    assert_eq!(schemas["NewConversation"]["properties"]["members"]["maxItems"], 1000);
    assert_eq!(schemas["TopicEventRequest"]["properties"]["type"]["pattern"], "^[a-z0-9_.-]{1,50}$");

    // Parameters: limit 1-100 wherever it is taken, the topic name's rule,
    // and presence's user_ids, which may be left out.
    let param = |path: &str, method: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{method} {path} has {name}"))
    };
    for (path, method) in [("/v1/notifications", "get"), ("/v1/conversations/{id}/messages", "get"), ("/v1/topics/{topic}/events", "get")] {
        let limit = param(path, method, "limit");
        assert_eq!(limit["schema"]["minimum"], 1, "{path}");
        assert_eq!(limit["schema"]["maximum"], 100, "{path}");
    }
    assert_eq!(param("/v1/topics/{topic}/events", "post", "topic")["schema"]["pattern"], "^[a-z0-9_.:-]{1,100}$");
    assert_eq!(param("/v1/notifications", "get", "cursor")["schema"]["pattern"], "^[1-9][0-9]{0,17}$");
    assert_eq!(param("/v1/presence", "get", "user_ids")["required"], false);
}

#[tokio::test]
async fn the_openapi_document_covers_every_route_and_every_documented_route_is_served() {
    let app = spawn_app().await;
    let (status, doc) = into_json(app.http.get(format!("{}/openapi.json", app.base)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for (method, path) in CONTRACT_ROUTES {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is documented");
    }
    let token = app.token("alice");
    let mut documented = 0;
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            documented += 1;
            let url = format!(
                "{}{}",
                app.base,
                path.replace("{id}", "1").replace("{type}", "some.type").replace("{user_id}", "alice").replace("{message_id}", "1").replace("{module}", "stream.js")
            );
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = app.http.request(method.clone(), &url).bearer_auth(&token).timeout(Duration::from_secs(2)).send().await;
            // The stream answers 200 and stays open: its headers are enough.
            let status = response.map(|r| r.status()).unwrap();
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is routed");
            if !path.contains('{') {
                assert_ne!(status, StatusCode::NOT_FOUND, "{method} {path} is routed");
            }
        }
    }
    for path in ["/app.js", "/app.css", "/js/{module}", "/tidings.js"] {
        assert!(doc["paths"][path]["get"].is_object(), "GET {path} is documented");
    }
    assert_eq!(
        documented,
        CONTRACT_ROUTES.len() + 4,
        "the contract's routes plus the page's files (app.js, app.css, its modules) and /tidings.js, nothing unknown"
    );
    let events = &doc["paths"]["/v1/stream"]["get"]["x-sse-events"];
    for name in [
        "notification", "notification.read", "notification.deleted", "unread_count", "reset",
        "message", "message.updated", "message.deleted", "read", "conversation", "typing", "presence",
    ] {
        assert!(events[name]["data"]["$ref"].is_string(), "the stream documents {name}");
    }
    for schema in ["Notification", "PublishRequest", "ErrorBody", "NotificationRead", "UnreadCount"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema}");
    }
    let docs = app.http.get(format!("{}/docs/", app.base)).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK, "a readable reference is served");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_metrics_scrape_counts_a_delivered_event_and_the_request() {
    let app = spawn_app().await;
    let mut stream = app.open_stream(&app.token("alice"), None).await;
    stream.until_unread_count().await;
    app.notify("alice", "counted").await;
    stream.next_named("notification").await;

    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(metric(&text, "tidings_frames_delivered_total") >= 1.0, "{text}");
    assert!(metric(&text, "tidings_events_appended_total") >= 1.0);
    assert!(metric(&text, "tidings_open_streams") >= 1.0);
    assert!(text.contains("tidings_http_requests_total{method=\"POST\",route=\"/v1/notifications\",status=\"201\"}"), "{text}");
    assert!(text.contains("tidings_http_request_duration_seconds_bucket"));
    assert!(text.contains("tidings_db_pool_connections"));
}

#[tokio::test]
async fn metrics_can_live_on_a_separate_listener() {
    let app = spawn_app_with(|settings| settings.metrics_bind = Some("127.0.0.1:0".into())).await;
    let addr = app.metrics_addr.expect("a metrics listener");
    let response = app.http.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let main = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(main.status(), StatusCode::NOT_FOUND, "not on the public listener");
}

#[tokio::test]
async fn a_user_cannot_hold_more_streams_than_the_limit() {
    let app = spawn_app_with(|settings| settings.limits.streams.per_user = 2).await;
    let token = app.token("alice");
    let _one = app.open_stream(&token, None).await;
    let _two = app.open_stream(&token, None).await;
    let response = app.http.get(format!("{}/v1/stream", app.base)).bearer_auth(&token).send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = into_json(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limited");
    let other = app.open_stream(&app.token("bob"), None).await;
    drop(other);
}

#[tokio::test]
async fn a_full_node_refuses_new_streams_with_503() {
    let app = spawn_app_with(|settings| settings.limits.streams.total = 1).await;
    let _one = app.open_stream(&app.token("alice"), None).await;
    let (status, body) = into_json(app.http.get(format!("{}/v1/stream", app.base)).bearer_auth(app.token("bob")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["code"], "unavailable");
}

#[tokio::test]
async fn a_request_past_its_deadline_gets_503_but_streams_have_none() {
    let app = spawn_app_with(|settings| settings.limits.request_timeout = Duration::from_millis(1)).await;
    let everyone: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let response = app.publish_raw(&json!({"user_ids": everyone, "type": "t", "title": "slow"})).await;
    let (status, body) = into_json(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");

    // The stream outlives the deadline: it still delivers after it passed.
    let mut stream = app.open_stream(&app.token("alice"), None).await;
    stream.until_unread_count().await;
    let writes = app.state.notifications.clone();
    let alice = tidings::domain::UserId::parse("alice").unwrap();
    let new = tidings::domain::notification::PublishRequest {
        user_id: Some("alice".into()), user_ids: None, kind: "t".into(), title: Some("after the deadline".into()),
        body: String::new(), data: None, action_url: None, expires_at: None, group_key: None, critical: false, audience: None,
    }
    .validate(chrono::Utc::now())
    .unwrap();
    writes.publish(&alice, None, new).await.unwrap();
    let event = stream.next_named("notification").await;
    assert_eq!(crate::helpers::data(&event)["title"], "after the deadline");
}

#[tokio::test]
async fn cors_allows_the_configured_origins_with_credentials_and_no_others() {
    let app = spawn_app_with(|settings| settings.cors_origins = vec!["https://app.example".into()]).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(Method::OPTIONS, format!("{}/v1/notifications", app.base))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
    assert_eq!(allowed.headers()["access-control-allow-credentials"], "true");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(!refused.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn the_page_is_served_with_security_headers() {
    let app = spawn_app().await;
    let page = app.http.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers();
    assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
}

/// The real binary: JSON logs at debug level never contain a token, and
/// SIGTERM stops it promptly with streams open.
#[tokio::test]
async fn the_binary_logs_no_token_and_stops_promptly_on_sigterm_with_streams_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TIDINGS_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .current_dir(dir.path())
        .env("TIDINGS_BIND", "127.0.0.1:0")
        .env("TIDINGS_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("TIDINGS_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut logs = String::new();
    let address = loop {
        let mut line = String::new();
        let read = tokio::time::timeout(PATIENCE, stderr.read_line(&mut line)).await.expect("the server logs").unwrap();
        assert!(read > 0, "the server exited early: {logs}");
        logs.push_str(&line);
        let entry: Value = serde_json::from_str(&line).expect("log lines are JSON");
        if entry["message"] == "listening" {
            break entry["address"].as_str().unwrap().to_owned();
        }
    };
    let app = spawn_app().await; // only to mint tokens with the same secret
    let token = app.token("alice");
    let http = reqwest::Client::new();
    let response = http.get(format!("http://{address}/v1/stream?access_token={token}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = EventStream::new(response);
    stream.until_unread_count().await;
    let bad = http.get(format!("http://{address}/v1/stream?access_token=not.a.token")).send().await.unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);

    let pid = child.id().unwrap().to_string();
    let started = std::time::Instant::now();
    let killed = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    assert!(killed.success());
    assert!(stream.ended().await, "the open stream ends");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("the process exits promptly").unwrap();
    assert!(status.success(), "a clean exit: {status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    stderr.read_to_string(&mut logs).await.unwrap();
    assert!(logs.contains("\"route\":\"/v1/stream\""), "requests are logged with their route: {logs}");
    assert!(!logs.contains(&token), "the token never reaches the log");
    assert!(!logs.contains("not.a.token"), "not even a bad one");
    assert!(!logs.contains(std::str::from_utf8(SECRET).unwrap()), "nor the secret");
}

/// Label values of `tidings_http_requests_total` series, as (method, route).
fn request_series(text: &str) -> Vec<(String, String)> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..].split('"').next()?.to_owned())
    };
    text.lines()
        .filter(|line| line.starts_with("tidings_http_requests_total{"))
        .filter_map(|line| Some((label(line, "method")?, label(line, "route")?)))
        .collect()
}

#[tokio::test]
async fn unknown_methods_and_unmatched_paths_do_not_grow_the_metrics() {
    let app = spawn_app().await;
    let marker = format!("zq{}", rand::random::<u32>());
    for i in 0..50 {
        let method = Method::from_bytes(format!("FOO{}{i}", marker.to_uppercase()).as_bytes()).unwrap();
        let response = app.http.request(method, format!("{}/healthz", app.base)).send().await.unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
        let response = app.http.get(format!("{}/{marker}/{i}", app.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
    let text = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
    assert!(!text.to_lowercase().contains(&marker), "no request's method or path became a label");
    let series = request_series(&text);
    let standard = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "other"];
    assert!(series.iter().all(|(method, _)| standard.contains(&method.as_str())), "{series:?}");
    assert!(series.iter().any(|(method, route)| method == "other" && route == "/healthz"), "{series:?}");
    let unmatched: Vec<_> = series.iter().filter(|(_, route)| !route.starts_with('/')).collect();
    assert!(unmatched.iter().all(|(_, route)| route == "unmatched"), "one label for every unmatched path: {unmatched:?}");
    let others = series.iter().filter(|(method, _)| method == "other").count();
    assert!(others <= 4, "the 50 methods share a few series: {series:?}");
}

#[tokio::test]
async fn the_api_reference_has_the_pages_security_headers_and_its_unknown_files_the_contracts_404() {
    let app = spawn_app().await;
    let docs = app.http.get(format!("{}/docs/", app.base)).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    let headers = docs.headers();
    assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(headers["content-security-policy"].to_str().unwrap().contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");

    let missing = app.http.get(format!("{}/docs/no-such-file.js", app.base)).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()["x-frame-options"], "DENY");
    let (status, body) = into_json(missing).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
}
