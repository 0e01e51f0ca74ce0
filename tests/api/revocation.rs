//! `POST /v1/revocations`: a revoked token is refused everywhere from then
//! on, streams that use one end at once, newer tokens work, and the
//! revocation outlives a restart.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_in, spawn_cluster};

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A token for `user`, and the wait until the clock has moved past the
/// second it was issued in: `iat` is in whole seconds, and a revocation
/// covers tokens issued strictly before its time.
async fn token_issued_in_the_past(app: &TestApp, user: &str) -> String {
    let issued = now_secs();
    let token = app.token(user);
    eventually("the clock passes the token's issue second", || now_secs() > issued).await;
    token
}

async fn revoke(app: &TestApp, token: &str, body: Value) -> (StatusCode, Value) {
    app.post_json("/v1/revocations", token, Some(body)).await
}

async fn unread_status(app: &TestApp, token: &str) -> StatusCode {
    app.get_json("/v1/notifications/unread_count", token).await.0
}

#[tokio::test]
async fn revoking_a_user_ends_their_open_stream_at_once_and_refuses_the_old_token_while_a_new_one_works() {
    let app = spawn_app().await;
    let old = token_issued_in_the_past(&app, "alice").await;
    let mut stream = app.open_stream(&old, None).await;
    stream.until_unread_count().await;
    let bob = app.token("bob");
    let mut bobs_stream = app.open_stream(&bob, None).await;
    bobs_stream.until_unread_count().await;

    let started = Instant::now();
    let (status, body) = revoke(&app, &app.admin_token(), json!({"user_id": "alice"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(unread_status(&app, &old).await, StatusCode::UNAUTHORIZED, "refused as soon as the revocation is answered");
    assert!(stream.ended().await, "the stream of the revoked token ends");
    assert!(started.elapsed() < Duration::from_secs(5), "at once, not at the next heartbeat: {:?}", started.elapsed());

    let fresh = app.token("alice");
    assert_eq!(unread_status(&app, &fresh).await, StatusCode::OK, "a token issued since works");
    let mut again = app.open_stream(&fresh, None).await;
    again.until_unread_count().await;
    let response = app.http.get(format!("{}/v1/stream", app.base)).bearer_auth(&old).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "the old token opens no stream");

    // Other users are untouched.
    assert_eq!(unread_status(&app, &bob).await, StatusCode::OK);
    app.notify("bob", "still here").await;
    assert_eq!(bobs_stream.next_named("notification").await.event, "notification");
}

#[tokio::test]
async fn before_in_the_body_revokes_only_tokens_issued_earlier() {
    let app = spawn_app().await;
    let old = token_issued_in_the_past(&app, "alice").await;
    let cutoff = chrono::Utc::now();
    let newer = token_issued_in_the_past(&app, "alice").await;
    let (status, body) = revoke(&app, &app.admin_token(), json!({"user_id": "alice", "before": cutoff.to_rfc3339()})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(unread_status(&app, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(unread_status(&app, &newer).await, StatusCode::OK);

    // Revoking again raises the instant; an earlier one never lowers it,
    // in the cache or in the table (a restart reads the table).
    let admin = app.admin_token();
    assert_eq!(revoke(&app, &admin, json!({"user_id": "alice"})).await.0, StatusCode::NO_CONTENT);
    assert_eq!(unread_status(&app, &newer).await, StatusCode::UNAUTHORIZED);
    let earlier = (cutoff - chrono::Duration::hours(1)).to_rfc3339();
    assert_eq!(revoke(&app, &admin, json!({"user_id": "alice", "before": earlier})).await.0, StatusCode::NO_CONTENT);
    assert_eq!(unread_status(&app, &newer).await, StatusCode::UNAUTHORIZED);
    let database = app.database.clone();
    app.stop().await;
    let restarted = spawn_app_in(database, |_| {}).await;
    assert_eq!(unread_status(&restarted, &newer).await, StatusCode::UNAUTHORIZED, "the stored instant was not lowered");
}

#[tokio::test]
async fn only_admin_tokens_may_revoke_and_bad_bodies_are_refused_with_the_field_changing_nothing() {
    let app = spawn_app().await;
    let alice = token_issued_in_the_past(&app, "alice").await;
    for token in [app.token("mallory"), app.publisher_token()] {
        let (status, body) = revoke(&app, &token, json!({"user_id": "alice"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = app.post_json("/v1/revocations", "not-a-token", Some(json!({"user_id": "alice"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let admin = app.admin_token();
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    for (body, expected, field) in [
        (json!({}), StatusCode::BAD_REQUEST, "user_id"),
        (json!({"user_id": "alice", "extra": 1}), StatusCode::BAD_REQUEST, "extra"),
        (json!({"user_id": "alice", "before": "yesterday"}), StatusCode::BAD_REQUEST, "before"),
        (json!({"user_id": "alice", "before": future}), StatusCode::UNPROCESSABLE_ENTITY, "before"),
        (json!({"user_id": ""}), StatusCode::UNPROCESSABLE_ENTITY, "user_id"),
    ] {
        let (status, answer) = revoke(&app, &admin, body.clone()).await;
        assert_eq!(status, expected, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
    }
    assert_eq!(unread_status(&app, &alice).await, StatusCode::OK, "nothing was revoked");
}

#[tokio::test]
async fn a_revocation_survives_a_restart() {
    let app = spawn_app().await;
    let old = token_issued_in_the_past(&app, "alice").await;
    let (status, _) = revoke(&app, &app.admin_token(), json!({"user_id": "alice"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let database = app.database.clone();
    app.stop().await;

    let restarted = spawn_app_in(database, |_| {}).await;
    assert_eq!(unread_status(&restarted, &old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(unread_status(&restarted, &restarted.token("alice")).await, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs PostgreSQL and Redis: set TIDINGS_TEST_POSTGRES and TIDINGS_TEST_REDIS (bash .ci/run does)"]
async fn a_revocation_on_one_node_ends_the_stream_on_another_and_refuses_the_token_there() {
    let nodes = spawn_cluster(2, |_| {}).await;
    let old = token_issued_in_the_past(&nodes[0], "alice").await;
    let mut stream = nodes[0].open_stream(&old, None).await;
    stream.until_unread_count().await;

    let started = Instant::now();
    let (status, body) = revoke(&nodes[1], &nodes[1].admin_token(), json!({"user_id": "alice"})).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(unread_status(&nodes[1], &old).await, StatusCode::UNAUTHORIZED);
    assert!(stream.ended().await, "the stream on the other node ends");
    assert!(started.elapsed() < Duration::from_secs(5), "through the bus, at once: {:?}", started.elapsed());
    assert_eq!(unread_status(&nodes[0], &old).await, StatusCode::UNAUTHORIZED, "the other node refuses the token too");
    assert_eq!(unread_status(&nodes[0], &nodes[0].token("alice")).await, StatusCode::OK);
}
