//! Presence as read over REST agrees with the `presence` events, whichever
//! implementation keeps it: in this process (one node) or in Redis.

use std::{sync::atomic::Ordering, time::Duration};

use serde_json::{Value, json};

use crate::helpers::{REDIS_ENV, TestApp, data, eventually, spawn_app_with};

/// Long enough to read presence several times inside it.
const GRACE: Duration = Duration::from_secs(3);

/// The one view `GET /v1/presence` gives of `user`, as seen by the holder of `token`.
async fn presence_of(app: &TestApp, token: &str, user: &str) -> Value {
    let (status, views) = app.get_json(&format!("/v1/presence?user_ids={user}"), token).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{views}");
    assert_eq!(views.as_array().map(Vec::len), Some(1), "{views}");
    views[0].clone()
}

/// Waits until the server has noticed that a stream closed: its count of
/// open streams is back to `open`.
async fn until_open_streams(app: &TestApp, open: u64) {
    let stats = app.state.hub.stats();
    eventually("the server notices the closed stream", || stats.open_streams.load(Ordering::Relaxed) == open).await;
}

/// Within the grace period after bob's last stream closes, his contacts hear
/// nothing and a read says what they last heard; once it passes, the event
/// and the read both say offline, with the same `last_seen_at`.
async fn reads_agree_with_events_through_the_grace_period(app: TestApp) {
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    app.create_conversation(&alice, &["bob"]).await;
    let mut watcher = app.open_stream(&alice, None).await;
    watcher.until_unread_count().await;
    assert_eq!(presence_of(&app, &alice, "bob").await, json!({"user_id": "bob", "status": "offline", "last_seen_at": null}));

    let mut bob_stream = app.open_stream(&bob, None).await;
    bob_stream.until_unread_count().await;
    let online = watcher.next_named("presence").await;
    assert_eq!(data(&online), json!({"user_id": "bob", "status": "online", "last_seen_at": null}));
    assert_eq!(presence_of(&app, &alice, "bob").await, data(&online));

    drop(bob_stream);
    until_open_streams(&app, 1).await;
    let during_grace = presence_of(&app, &alice, "bob").await;
    assert_eq!(during_grace, data(&online), "inside the grace period a read says what the events said");

    let offline = watcher.next_named("presence").await;
    assert_eq!(data(&offline)["status"], "offline");
    assert!(data(&offline)["last_seen_at"].is_string(), "{}", offline.data);
    assert_eq!(presence_of(&app, &alice, "bob").await, data(&offline), "after it, the read says what the event said");

    // A chosen status holds through the grace period too.
    let mut bob_stream = app.open_stream(&bob, None).await;
    bob_stream.until_unread_count().await;
    assert_eq!(data(&watcher.next_named("presence").await)["status"], "online");
    let (status, _) = app.post_json("/v1/presence", &bob, Some(json!({"status": "busy"}))).await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    let busy = watcher.next_named("presence").await;
    assert_eq!(data(&busy)["status"], "busy");
    drop(bob_stream);
    until_open_streams(&app, 1).await;
    assert_eq!(presence_of(&app, &alice, "bob").await["status"], "busy", "still busy inside the grace period");
    let offline_again = watcher.next_named("presence").await;
    assert_eq!(data(&offline_again)["status"], "offline");
    assert_eq!(presence_of(&app, &alice, "bob").await, data(&offline_again));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_node_presence_reads_agree_with_events_through_the_grace_period() {
    let app = spawn_app_with(|settings| settings.presence_grace = GRACE).await;
    reads_agree_with_events_through_the_grace_period(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: set TIDINGS_TEST_REDIS (bash .ci/run does)"]
async fn with_redis_presence_reads_agree_with_events_through_the_grace_period() {
    let redis = crate::helpers::required_env(REDIS_ENV, "this test needs Redis");
    let namespace = format!("tidings-test-{}", rand::random::<u64>());
    let app = spawn_app_with(|settings| {
        settings.presence_grace = GRACE;
        settings.redis_url = Some(redis);
        settings.redis_namespace = namespace;
    })
    .await;
    crate::helpers::until_ready(&app).await;
    reads_agree_with_events_through_the_grace_period(app).await;
}
