//! The binary as a newcomer meets it: the first run's demo works as printed,
//! `tidings token` mints tokens the server accepts, `tidings migrate` migrates.

use std::{path::Path, process::Stdio, time::Duration};

use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{EventStream, PATIENCE, SECRET, data, spawn_app};

fn tidings() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidings"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TIDINGS_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "warn").kill_on_drop(true);
    command
}

#[tokio::test]
async fn the_first_run_generates_a_secret_and_prints_a_demo_that_works_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tidings()
        .current_dir(dir.path())
        .env("TIDINGS_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut page_url, mut publish_token, mut payload) = (None, None, None);
    while payload.is_none() {
        let line = tokio::time::timeout(PATIENCE, lines.next_line()).await.expect("the demo is printed").unwrap().expect("more output");
        if let Some(at) = line.find("/#token=") {
            page_url = Some(line.trim().to_owned());
            assert!(line[..at].trim().starts_with("http://127.0.0.1:"));
        }
        if let Some(rest) = line.split("Authorization: Bearer ").nth(1) {
            publish_token = Some(rest.split('\'').next().unwrap().to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("-d '") {
            payload = Some(rest.trim_end_matches('\'').to_owned());
        }
    }
    let page_url = page_url.expect("a page URL");
    let (base, user_token) = page_url.split_once("/#token=").unwrap();
    assert!(Path::new(&dir.path().join("tidings.db")).exists());
    let secret = dir.path().join("tidings.db.secret");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600, "the secret is private");
    }

    let http = reqwest::Client::new();
    let page = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let response = http.get(format!("{base}/v1/stream")).bearer_auth(user_token).send().await.unwrap();
    let mut stream = EventStream::new(response);
    stream.until_unread_count().await;
    let published = http
        .post(format!("{base}/v1/notifications"))
        .bearer_auth(publish_token.unwrap())
        .header("content-type", "application/json")
        .body(payload.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(published.status(), StatusCode::CREATED);
    let event = stream.next_named("notification").await;
    assert_eq!(data(&event)["title"], "Hello from Tidings");

    // The first run publishes the hub's figures (every 5 s) to a public
    // topic: the demo user's plain token may stream them.
    let response = http.get(format!("{base}/v1/stream?topic=tidings:status")).bearer_auth(user_token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "tidings:status is public on the first run");
    let status = data(&EventStream::new(response).next_named("topic.event").await);
    assert_eq!((status["topic"].as_str(), status["type"].as_str()), (Some("tidings:status"), Some("hub.status")));
    child.kill().await.unwrap();
}

#[tokio::test]
async fn tidings_token_prints_only_a_token_the_server_accepts() {
    let app = spawn_app().await;
    let output = tidings()
        .args(["token", "--sub", "backend", "--scope", "publish", "--ttl", "600"])
        .env("TIDINGS_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "stdout holds the token alone: {token}");
    let response = app
        .http
        .post(format!("{}/v1/notifications", app.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"user_id": "alice", "type": "t", "title": "from the cli token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn tidings_migrate_creates_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/migrated.db?mode=rwc", dir.path().display());
    let status = tokio::time::timeout(Duration::from_secs(60), tidings().args(["migrate", "--database-url", &url]).status())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let db = tidings::store::connect(&url).await.unwrap();
    use sea_orm::{EntityTrait, PaginatorTrait};
    assert_eq!(entity::event::Entity::find().count(&db).await.unwrap(), 0, "the events table exists");
}

#[tokio::test]
async fn tidings_token_refuses_a_lifetime_too_long_to_represent_with_a_clear_error() {
    for ttl in ["18446744073709551615", "18446744070000000000"] {
        let output = tidings()
            .args(["token", "--sub", "alice", "--ttl", ttl])
            .env("TIDINGS_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "--ttl {ttl} is refused");
        assert!(output.stdout.is_empty(), "no token is printed");
        assert!(!stderr.contains("panicked"), "an error, not a crash: {stderr}");
        assert!(stderr.contains("ttl"), "the error names the flag: {stderr}");
    }
}

#[tokio::test]
async fn tidings_token_mints_admin_tokens_that_may_revoke() {
    let app = spawn_app().await;
    let output = tidings()
        .args(["token", "--sub", "operator", "--scope", "admin", "--ttl", "600"])
        .env("TIDINGS_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let (status, body) = app.post_json("/v1/revocations", &token, Some(serde_json::json!({"user_id": "alice"}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}
