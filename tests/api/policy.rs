//! Notification policy: preferences, grouping, rate limits, retention, statistics.

use std::{sync::Arc, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{data, into_json, spawn_app, spawn_app_with};

async fn put_preference(app: &crate::helpers::TestApp, token: &str, kind: &str, body: Value) -> (StatusCode, Value) {
    into_json(app.request(Method::PUT, &format!("/v1/preferences/{kind}"), token).json(&body).send().await.unwrap()).await
}

#[tokio::test]
async fn preferences_list_received_types_with_defaults_and_store_changes() {
    let app = spawn_app().await;
    let token = app.token("alice");
    app.publish_raw(&json!({"user_id": "alice", "type": "comment.created", "title": "x"})).await;
    let (status, list) = app.get_json("/v1/preferences", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([{"type": "comment.created", "enabled": true, "channels": {"web": true, "email": false, "push": false, "webhook": true}}]));

    let (status, saved) = put_preference(&app, &token, "digest.weekly", json!({"enabled": true, "channels": {"email": true}})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(saved, json!({"type": "digest.weekly", "enabled": true, "channels": {"web": true, "email": true, "push": false, "webhook": true}}));
    let (_, list) = app.get_json("/v1/preferences", &token).await;
    assert_eq!(list.as_array().unwrap().len(), 2);

    let (status, _) = put_preference(&app, &token, "Bad Type", json!({"enabled": true})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = put_preference(&app, &token, "ok", json!({"enabled": true, "colour": "red"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, other) = app.get_json("/v1/preferences", &app.token("bob")).await;
    assert_eq!(other, json!([]), "preferences are per user");
}

#[tokio::test]
async fn a_disabled_type_is_suppressed_stored_nowhere_and_sent_nowhere_unless_critical() {
    let app = spawn_app().await;
    let token = app.token("alice");
    put_preference(&app, &token, "marketing", json!({"enabled": false})).await;
    put_preference(&app, &token, "mentions", json!({"enabled": true, "channels": {"web": false, "email": true}})).await;
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;

    for kind in ["marketing", "mentions"] {
        let (status, body) = into_json(app.publish_raw(&json!({"user_ids": ["alice", "bob"], "type": kind, "title": "x"})).await).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body["suppressed"], json!(["alice"]), "{kind}");
        assert_eq!(body["created"].as_array().unwrap().len(), 1);
        assert_eq!(body["created"][0]["user_id"], "bob");
    }
    let (_, count) = app.get_json("/v1/notifications/unread_count", &token).await;
    assert_eq!(count["count"], 0);

    let (_, body) = into_json(app.publish_raw(&json!({"user_id": "alice", "type": "marketing", "title": "breach", "critical": true})).await).await;
    assert_eq!(body["suppressed"], json!([]));
    let event = stream.next_named("notification").await;
    assert_eq!(data(&event)["title"], "breach", "the first event alice sees is the critical one");
}

#[tokio::test]
async fn a_group_key_folds_unread_notifications_into_one_and_starts_anew_once_read() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let grouped = |title: &str| json!({"user_id": "alice", "type": "comment", "title": title, "group_key": "post-7"});
    let (_, first) = into_json(app.publish_raw(&grouped("1 new comment")).await).await;
    let mut stream = app.open_stream(&token, None).await;
    let (_, count) = stream.until_unread_count().await;
    assert_eq!(count, 1);
    let first_event_id: i64 = stream.last_id.clone().unwrap().parse().unwrap();

    let (_, second) = into_json(app.publish_raw(&grouped("2 new comments")).await).await;
    let second = &second["created"][0];
    assert_eq!(second["id"], first["created"][0]["id"], "the same notification");
    assert_eq!(second["count"], 2);
    assert_eq!(second["title"], "2 new comments");
    assert_ne!(second["updated_at"], first["created"][0]["updated_at"]);
    let event = stream.next_named("notification").await;
    assert_eq!(data(&event), *second);
    assert!(event.id.parse::<i64>().unwrap() > first_event_id, "re-sent with a new event id");
    assert_eq!(data(&stream.next_named("unread_count").await)["count"], 1, "the count does not grow");

    app.post_json(&format!("/v1/notifications/{}/read", second["id"]), &token, None).await;
    let (_, third) = into_json(app.publish_raw(&grouped("1 new comment")).await).await;
    assert_ne!(third["created"][0]["id"], second["id"], "a read group is closed; a new one starts");
    assert_eq!(third["created"][0]["count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_with_one_group_key_leave_exactly_one_unread_notification() {
    let app = Arc::new(spawn_app().await);
    let publishers: Vec<_> = (0..20)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                let response = app
                    .publish_raw(&json!({"user_id": "alice", "type": "like", "title": format!("like {i}"), "group_key": "photo-1"}))
                    .await;
                assert_eq!(response.status(), StatusCode::CREATED);
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let (_, list) = app.get_json("/v1/notifications?status=unread", &app.token("alice")).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["count"], 20);
}

#[tokio::test]
async fn a_recipient_over_the_limit_is_listed_refused_or_folded() {
    let app = spawn_app_with(|settings| settings.rate_limits.recipient_per_minute = 2).await;
    for _ in 0..2 {
        assert_eq!(app.publish_raw(&json!({"user_id": "alice", "type": "ping", "title": "x"})).await.status(), StatusCode::CREATED);
    }
    let response = app.publish_raw(&json!({"user_id": "alice", "type": "ping", "title": "x"})).await;
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    let (status, body) = into_json(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "every recipient is limited");
    assert_eq!(body["error"]["code"], "rate_limited");

    let (status, body) = into_json(app.publish_raw(&json!({"user_ids": ["alice", "bob"], "type": "ping", "title": "x"})).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["rate_limited"], json!(["alice"]));
    assert_eq!(body["created"][0]["user_id"], "bob");

    let (status, _) = into_json(app.publish_raw(&json!({"user_id": "alice", "type": "other", "title": "x"})).await).await;
    assert_eq!(status, StatusCode::CREATED, "limits are per type");

    // With a group key, an over-limit notification still folds into its unread group.
    let limited = spawn_app_with(|settings| settings.rate_limits.recipient_per_minute = 1).await;
    let grouped = json!({"user_id": "alice", "type": "like", "title": "x", "group_key": "g"});
    assert_eq!(limited.publish_raw(&grouped).await.status(), StatusCode::CREATED);
    let (status, body) = into_json(limited.publish_raw(&grouped).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["created"][0]["count"], 2);
}

#[tokio::test]
async fn a_user_token_gets_a_burst_of_writes_then_429_while_backends_are_not_limited_per_token() {
    let app = spawn_app_with(|settings| {
        settings.rate_limits.caller_burst = 3;
        settings.rate_limits.caller_per_second = 1;
    })
    .await;
    let token = app.token("alice");
    for _ in 0..3 {
        let (status, _) = app.post_json("/v1/notifications/read_all", &token, None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let response = app.request(Method::POST, "/v1/notifications/read_all", &token).send().await.unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = into_json(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limited");
    let (status, _) = app.get_json("/v1/notifications", &token).await;
    assert_eq!(status, StatusCode::OK, "reads are not limited");
    for i in 0..5 {
        let response = app.publish_raw(&json!({"user_id": format!("u{i}"), "type": "t", "title": "x"})).await;
        assert_eq!(response.status(), StatusCode::CREATED, "the backend is limited per recipient only");
    }
}

#[tokio::test]
async fn retention_prunes_beyond_the_per_user_count_and_a_resume_from_before_gets_reset() {
    let app = spawn_app_with(|settings| settings.retention.events_per_topic = 3).await;
    let token = app.token("alice");
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;
    app.notify("alice", "n0").await;
    stream.next_named("notification").await;
    let early = stream.last_id.clone().unwrap();
    for i in 1..5 {
        app.notify("alice", &format!("n{i}")).await;
        stream.next_named("notification").await;
    }
    let late = stream.last_id.clone().unwrap();
    app.notify("bob", "bob keeps his").await;

    let pruned = app.state.retention.run_once().await.unwrap();
    assert_eq!(pruned.events, 2, "alice's 5 events become 3; bob's 1 stays");

    let mut resumed = app.open_stream(&token, Some(&early)).await;
    let (events, _) = resumed.until_unread_count().await;
    assert_eq!(events[0].event, "reset");
    assert_eq!(events.len(), 6, "reset, then the 5 unread notifications");

    let mut recent = app.open_stream(&token, Some(&late)).await;
    let (events, _) = recent.until_unread_count().await;
    assert!(events.is_empty(), "a resume point inside the retained history is served");
}

#[tokio::test]
async fn retention_runs_in_the_background_and_prunes_old_events_and_read_notifications() {
    let app = spawn_app_with(|settings| {
        settings.retention.event_max_age = Duration::ZERO;
        settings.retention.notification_max_age = Duration::ZERO;
        settings.retention.interval = Duration::from_millis(50);
    })
    .await;
    let token = app.token("alice");
    let read = app.notify("alice", "read me").await;
    app.post_json(&format!("/v1/notifications/{}/read", read["id"]), &token, None).await;
    let db = app.state.db.clone();
    use sea_orm::{EntityTrait, PaginatorTrait};
    let mut gone = false;
    for _ in 0..300 {
        let events = entity::event::Entity::find().count(&db).await.unwrap();
        let notifications = entity::notification::Entity::find().count(&db).await.unwrap();
        if events == 0 && notifications == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the background task pruned the events and the read notification");
    let floor = entity::history_floor::Entity::find_by_id("u:alice".to_owned()).one(&db).await.unwrap();
    assert!(floor.is_some_and(|f| f.floor >= 2));
}

#[tokio::test]
async fn statistics_count_sent_read_and_clicked_per_type_for_backends_only() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let a1 = app.publish_raw(&json!({"user_id": "alice", "type": "a", "title": "1"})).await;
    let a1: Value = a1.json().await.unwrap();
    let a2: Value = app.publish_raw(&json!({"user_id": "alice", "type": "a", "title": "2"})).await.json().await.unwrap();
    app.publish_raw(&json!({"user_id": "alice", "type": "a", "title": "3"})).await;
    app.publish_raw(&json!({"user_id": "bob", "type": "b", "title": "4"})).await;
    app.post_json(&format!("/v1/notifications/{}/read", a1["created"][0]["id"]), &token, None).await;
    app.post_json(&format!("/v1/notifications/{}/click", a2["created"][0]["id"]), &token, None).await;

    let (status, stats) = app.get_json("/v1/stats/notifications", &app.publisher_token()).await;
    assert_eq!(status, StatusCode::OK);
    let a = &stats[0];
    assert_eq!((a["type"].as_str(), a["sent"].as_u64(), a["read"].as_u64(), a["clicked"].as_u64()), (Some("a"), Some(3), Some(2), Some(1)));
    assert!((a["read_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert!((a["click_rate"].as_f64().unwrap() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(stats[1]["type"], "b");

    let (_, only_b) = app.get_json("/v1/stats/notifications?type=b", &app.publisher_token()).await;
    assert_eq!(only_b.as_array().unwrap().len(), 1);
    let (_, future) = app.get_json("/v1/stats/notifications?since=2999-01-01T00:00:00Z", &app.publisher_token()).await;
    assert_eq!(future, json!([]));
    let (status, _) = app.get_json("/v1/stats/notifications?since=yesterday", &app.publisher_token()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get_json("/v1/stats/notifications", &token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
