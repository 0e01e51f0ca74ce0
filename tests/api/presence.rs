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
        settings.redis_url = Some(redis.into());
        settings.redis_namespace = namespace;
    })
    .await;
    crate::helpers::until_ready(&app).await;
    reads_agree_with_events_through_the_grace_period(app).await;
}

/// The ids `GET /v1/presence` answers for, as seen by the holder of `token`.
async fn visible(app: &TestApp, token: &str, users: &str) -> Vec<String> {
    let (status, views) = app.get_json(&format!("/v1/presence?user_ids={users}"), token).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{views}");
    let mut ids: Vec<String> = views.as_array().unwrap().iter().map(|v| v["user_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_user_who_left_a_conversation_cannot_be_added_back_by_others_and_their_presence_stays_hidden() {
    let app = crate::helpers::spawn_app().await;
    let (mallory, bob) = (app.token("mallory"), app.token("bob"));
    let conversation = app.create_conversation(&mallory, &["bob"]).await;
    assert_eq!(visible(&app, &mallory, "bob").await, ["bob"]);
    let path = format!("/v1/conversations/{}/members", conversation["id"]);
    let response = app.request(reqwest::Method::DELETE, &format!("{path}/bob"), &bob).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
    assert!(visible(&app, &mallory, "bob").await.is_empty(), "bob left: his presence is hidden from mallory");

    let (status, body) = app.post_json(&path, &mallory, Some(json!({"user_id": "bob"}))).await;
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body["error"]["message"].as_str().unwrap().contains("left"), "{body}");
    assert!(visible(&app, &mallory, "bob").await.is_empty(), "still hidden");
    let (_, seen) = app.get_json(&format!("/v1/conversations/{}", conversation["id"]), &mallory).await;
    assert_eq!(seen["members"], json!(["mallory"]), "nothing changed");

    // Adding someone who never was a member still works.
    let (status, body) = app.post_json(&path, &mallory, Some(json!({"user_id": "carol"}))).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
}

#[tokio::test]
async fn with_contacts_visibility_presence_is_shared_only_after_both_have_written_in_a_shared_conversation() {
    let app = spawn_app_with(|s| s.presence_visibility = tidings::presence::Visibility::Contacts).await;
    let (alice, bob, mallory) = (app.token("alice"), app.token("bob"), app.token("mallory"));
    // Mallory starts a conversation with alice and writes; alice never answers.
    let cold = app.create_conversation(&mallory, &["alice"]).await;
    app.say(&mallory, &cold, "hello?").await;
    assert!(visible(&app, &mallory, "alice").await.is_empty(), "a conversation alone shows no presence");
    assert!(visible(&app, &alice, "mallory").await.is_empty());

    let chat = app.create_conversation(&alice, &["bob"]).await;
    app.say(&alice, &chat, "hi bob").await;
    assert!(visible(&app, &alice, "bob").await.is_empty(), "only one of them has written");
    let mut alices_stream = app.open_stream(&alice, None).await;
    alices_stream.until_unread_count().await;
    app.say(&bob, &chat, "hi alice").await;
    assert_eq!(visible(&app, &alice, "bob,mallory").await, ["bob"]);
    assert_eq!(visible(&app, &bob, "alice").await, ["alice"]);

    // Events follow the same rule: bob connecting reaches alice; mallory's does not.
    let mut mallorys_stream = app.open_stream(&mallory, None).await;
    mallorys_stream.until_unread_count().await;
    let mut bobs_stream = app.open_stream(&bob, None).await;
    bobs_stream.until_unread_count().await;
    let seen = alices_stream.next_named("presence").await;
    assert_eq!(data(&seen)["user_id"], "bob", "the first presence alice hears is bob's, not mallory's");
    // And mallory hears nothing of alice: alice's own status change reaches bob only.
    let (status, _) = app.post_json("/v1/presence", &alice, Some(json!({"status": "busy"}))).await;
    assert_eq!(status, reqwest::StatusCode::NO_CONTENT);
    let busy = loop {
        let event = bobs_stream.next_named("presence").await;
        if data(&event)["user_id"] == "alice" {
            break event;
        }
    };
    assert_eq!(data(&busy)["status"], "busy");
    app.notify("mallory", "marker").await;
    loop {
        let event = mallorys_stream.next().await.expect("mallory's stream stays open");
        assert_ne!(event.event, "presence", "mallory hears no presence: {}", event.data);
        if event.event == "notification" {
            break;
        }
    }
}

#[tokio::test]
async fn the_default_visibility_shows_presence_to_everyone_sharing_a_conversation() {
    let app = crate::helpers::spawn_app().await;
    let (alice, mallory) = (app.token("alice"), app.token("mallory"));
    app.create_conversation(&mallory, &["alice"]).await;
    assert_eq!(visible(&app, &mallory, "alice").await, ["alice"]);
    assert_eq!(visible(&app, &alice, "mallory").await, ["mallory"]);
}
