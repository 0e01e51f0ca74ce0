//! The notifications API: publish, idempotency, list, count, read, click, delete, expiry.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{data, into_json, spawn_app};

#[tokio::test]
async fn publishing_to_several_users_creates_one_notification_each() {
    let app = spawn_app().await;
    let response = app
        .publish_raw(&json!({
            "user_ids": ["alice", "bob", "alice"], "type": "comment.created", "title": "New comment",
            "body": "Looks good", "data": {"post": 7}, "action_url": "https://example.com/posts/7"
        }))
        .await;
    let (status, body) = into_json(response).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["suppressed"], json!([]));
    let created = body["created"].as_array().unwrap();
    assert_eq!(created.len(), 2, "duplicates in user_ids are folded");
    let first = &created[0];
    assert_eq!(first["user_id"], "alice");
    assert_eq!(first["type"], "comment.created");
    assert_eq!(first["data"], json!({"post": 7}));
    assert_eq!(first["count"], 1);
    assert_eq!(first["read_at"], Value::Null);
    for field in ["id", "title", "body", "action_url", "group_key", "created_at", "updated_at", "expires_at"] {
        assert!(first.get(field).is_some(), "the object has {field}");
    }
    let (_, alice) = app.get_json("/v1/notifications", &app.token("alice")).await;
    assert_eq!(alice["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_creates_nothing_and_answers_the_same() {
    let app = spawn_app().await;
    let body = json!({"user_id": "alice", "type": "t", "title": "once"});
    let send = |body: Value| {
        app.http
            .post(format!("{}/v1/notifications", app.base))
            .bearer_auth(app.publisher_token())
            .header("Idempotency-Key", "order-42")
            .json(&body)
            .send()
    };
    let (first_status, first) = into_json(send(body.clone()).await.unwrap()).await;
    let (second_status, second) = into_json(send(body.clone()).await.unwrap()).await;
    assert_eq!(first_status, StatusCode::CREATED);
    assert_eq!(second_status, StatusCode::CREATED);
    assert_eq!(first, second);
    let (_, count) = app.get_json("/v1/notifications/unread_count", &app.token("alice")).await;
    assert_eq!(count["count"], 1);

    let (status, error) = into_json(send(json!({"user_id": "alice", "type": "t", "title": "other"})).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["error"]["code"], "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_retries_with_one_idempotency_key_create_exactly_once() {
    let app = std::sync::Arc::new(spawn_app().await);
    let attempts: Vec<_> = (0..10)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let response = app
                    .http
                    .post(format!("{}/v1/notifications", app.base))
                    .bearer_auth(app.publisher_token())
                    .header("Idempotency-Key", "race")
                    .json(&json!({"user_id": "alice", "type": "t", "title": "race"}))
                    .send()
                    .await
                    .unwrap();
                into_json(response).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for attempt in attempts {
        answers.push(attempt.await.unwrap());
    }
    assert!(answers.iter().all(|(status, body)| *status == StatusCode::CREATED && *body == answers[0].1));
    let (_, count) = app.get_json("/v1/notifications/unread_count", &app.token("alice")).await;
    assert_eq!(count["count"], 1);
}

#[tokio::test]
async fn the_list_pages_newest_first_and_filters_by_status_and_type() {
    let app = spawn_app().await;
    let token = app.token("alice");
    for i in 0..5 {
        app.publish_raw(&json!({"user_id": "alice", "type": if i % 2 == 0 { "even" } else { "odd" }, "title": format!("n{i}")}))
            .await;
    }
    let (_, page) = app.get_json("/v1/notifications?limit=2", &token).await;
    let titles = |page: &Value| page["items"].as_array().unwrap().iter().map(|n| n["title"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(titles(&page), ["n4", "n3"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = app.get_json(&format!("/v1/notifications?limit=2&cursor={cursor}"), &token).await;
    assert_eq!(titles(&page), ["n2", "n1"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = app.get_json(&format!("/v1/notifications?limit=2&cursor={cursor}"), &token).await;
    assert_eq!(titles(&page), ["n0"]);
    assert_eq!(page["next_cursor"], Value::Null);

    let (_, even) = app.get_json("/v1/notifications?type=even", &token).await;
    assert_eq!(titles(&even), ["n4", "n2", "n0"]);
    let newest = app.get_json("/v1/notifications?limit=1", &token).await.1["items"][0]["id"].clone();
    app.post_json(&format!("/v1/notifications/{newest}/read"), &token, None).await;
    let (_, unread) = app.get_json("/v1/notifications?status=unread", &token).await;
    assert_eq!(titles(&unread), ["n3", "n2", "n1", "n0"]);
    let (_, all) = app.get_json("/v1/notifications?status=all", &token).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn reading_is_idempotent_and_counts_follow() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let n = app.notify("alice", "x").await;
    let (status, read) = app.post_json(&format!("/v1/notifications/{}/read", n["id"]), &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(read["read_at"].is_string());
    let (status, again) = app.post_json(&format!("/v1/notifications/{}/read", n["id"]), &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["read_at"], read["read_at"], "a second read changes nothing");
    let (_, count) = app.get_json("/v1/notifications/unread_count", &token).await;
    assert_eq!(count, json!({"count": 0}));
}

#[tokio::test]
async fn read_all_marks_everything_or_one_type_and_splits_large_reads_into_events_of_500() {
    let app = spawn_app().await;
    let token = app.token("alice");
    app.publish_raw(&json!({"user_id": "alice", "type": "other", "title": "keep"})).await;
    for i in 0..501 {
        app.publish_raw(&json!({"user_id": "alice", "type": "bulk", "title": format!("b{i}")})).await;
    }
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;

    let (status, body) = app.post_json("/v1/notifications/read_all", &token, Some(json!({"type": "bulk"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"updated": 501}));
    let first = stream.next_named("notification.read").await;
    let second = stream.next_named("notification.read").await;
    assert_eq!(data(&first)["ids"].as_array().unwrap().len(), 500);
    assert_eq!(data(&second)["ids"].as_array().unwrap().len(), 1);
    let count = stream.next_named("unread_count").await;
    assert_eq!(data(&count)["count"], 1, "the other type stays unread");

    let response = app.request(Method::POST, "/v1/notifications/read_all", &token).send().await.unwrap();
    let (status, body) = into_json(response).await;
    assert_eq!(status, StatusCode::OK, "the body is optional");
    assert_eq!(body, json!({"updated": 1}));

    // `null` is what the document's optional body allows too (schemathesis
    // sent it and got 400): it reads as no body.
    let response = app.request(Method::POST, "/v1/notifications/read_all", &token).header("content-type", "application/json").body("null").send().await.unwrap();
    let (status, body) = into_json(response).await;
    assert_eq!(status, StatusCode::OK, "a null body is no body");
    assert_eq!(body, json!({"updated": 0}));
}

#[tokio::test]
async fn a_click_is_recorded_and_marks_the_notification_read() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let n = app.notify("alice", "x").await;
    let (status, clicked) = app.post_json(&format!("/v1/notifications/{}/click", n["id"]), &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(clicked["read_at"].is_string());
    use sea_orm::EntityTrait;
    let row = entity::notification::Entity::find_by_id(n["id"].as_i64().unwrap()).one(&app.state.db).await.unwrap().unwrap();
    assert!(row.clicked_at.is_some());
}

#[tokio::test]
async fn a_deleted_notification_is_announced_and_gone() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let n = app.notify("alice", "x").await;
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;

    let response = app.request(Method::DELETE, &format!("/v1/notifications/{}", n["id"]), &token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let deleted = stream.next().await.unwrap();
    assert_eq!(deleted.event, "notification.deleted");
    assert_eq!(data(&deleted), json!({"id": n["id"]}));
    assert_eq!(data(&stream.next_named("unread_count").await)["count"], 0);

    let response = app.request(Method::DELETE, &format!("/v1/notifications/{}", n["id"]), &token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let (_, list) = app.get_json("/v1/notifications", &token).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn an_expired_notification_disappears_from_lists_counts_and_fresh_streams() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let expires_at = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let response = app.publish_raw(&json!({"user_id": "alice", "type": "t", "title": "short-lived", "expires_at": expires_at})).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    app.notify("alice", "lasting").await;
    let (_, count) = app.get_json("/v1/notifications/unread_count", &token).await;
    assert_eq!(count["count"], 2);

    let deadline = tokio::time::Instant::now() + crate::helpers::PATIENCE;
    loop {
        let (_, count) = app.get_json("/v1/notifications/unread_count", &token).await;
        if count["count"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the notification should expire");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, list) = app.get_json("/v1/notifications", &token).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let mut stream = app.open_stream(&token, None).await;
    let (initial, _) = stream.until_unread_count().await;
    let titles: Vec<_> = initial.iter().map(|e| data(e)["title"].clone()).collect();
    assert_eq!(titles, [json!("lasting")]);
}

#[tokio::test]
async fn another_users_notification_is_not_found_for_every_action() {
    let app = spawn_app().await;
    let n = app.notify("alice", "private").await;
    let mallory = app.token("mallory");
    let id = n["id"].clone();
    for (method, path) in [
        (Method::POST, format!("/v1/notifications/{id}/read")),
        (Method::POST, format!("/v1/notifications/{id}/click")),
        (Method::DELETE, format!("/v1/notifications/{id}")),
    ] {
        let (status, body) = into_json(app.request(method, &path, &mallory).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let (_, list) = app.get_json("/v1/notifications", &mallory).await;
    assert_eq!(list["items"], json!([]));
    let (_, count) = app.get_json("/v1/notifications/unread_count", &app.token("alice")).await;
    assert_eq!(count["count"], 1, "alice's notification is untouched");
}
