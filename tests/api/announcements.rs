//! Announcements: one notification for `all` or a topic's readers, stored
//! once, shown to each user with their own read state, in their list,
//! count and stream; marks are per user.

use std::{collections::BTreeSet, sync::Arc};

use rand::Rng;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, data, into_json, spawn_app, spawn_app_with};

impl TestApp {
    /// Publishes an announcement to `audience` and returns the notification.
    async fn announce(&self, audience: Value, title: &str) -> Value {
        self.announce_with(json!({"audience": audience, "type": "news", "title": title, "body": "for everyone"})).await
    }

    async fn announce_with(&self, body: Value) -> Value {
        let (status, answer) = into_json(self.publish_raw(&body).await).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["suppressed"], json!([]));
        assert_eq!(answer["rate_limited"], json!([]));
        answer["created"][0].clone()
    }

    async fn count_of(&self, token: &str) -> u64 {
        let (status, body) = self.get_json("/v1/notifications/unread_count", token).await;
        assert_eq!(status, StatusCode::OK);
        body["count"].as_u64().unwrap()
    }

    async fn list_of(&self, token: &str, query: &str) -> Vec<Value> {
        let (status, body) = self.get_json(&format!("/v1/notifications{query}"), token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"].as_array().unwrap().clone()
    }

    async fn rows_in(&self, table: &str) -> i64 {
        let db = &self.state.db;
        let row = db
            .query_one_raw(Statement::from_string(db.get_database_backend(), format!("SELECT COUNT(*) AS n FROM {table}")))
            .await
            .unwrap()
            .unwrap();
        row.try_get::<i64>("", "n").unwrap()
    }
}

#[tokio::test]
async fn an_announcement_to_all_is_one_row_and_every_user_sees_it_with_their_own_read_state() {
    let app = spawn_app().await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    app.notify("alice", "her own").await;
    let announced = app.announce(json!("all"), "Maintenance tonight").await;
    assert_eq!(announced["user_id"], Value::Null);
    assert_eq!(announced["audience"], json!("all"));
    assert_eq!(announced["read_at"], Value::Null);
    assert_eq!(app.rows_in("announcements").await, 1, "stored once");
    assert_eq!(app.rows_in("announcement_marks").await, 0, "nothing per user until they act");
    assert_eq!(app.rows_in("notifications").await, 1, "only alice's own notification");

    assert_eq!(app.count_of(&alice).await, 2);
    assert_eq!(app.count_of(&bob).await, 1);
    let ids: Vec<i64> = app.list_of(&alice, "").await.iter().map(|n| n["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], announced["id"].as_i64().unwrap(), "newest first, one id order for both kinds");

    // Alice reads it: her view changes, bob's does not.
    let id = announced["id"].as_i64().unwrap();
    let (status, read) = app.post_json(&format!("/v1/notifications/{id}/read"), &alice, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(read["read_at"], Value::Null);
    assert_eq!(app.count_of(&alice).await, 1);
    assert_eq!(app.count_of(&bob).await, 1);
    let bobs = app.list_of(&bob, "").await;
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0]["read_at"], Value::Null, "bob's read state is his own");
    assert_eq!(app.list_of(&alice, "?status=unread").await.len(), 1, "only her own is unread");
    assert_eq!(app.rows_in("announcement_marks").await, 1);

    // Deletion is per user too.
    let response = app.request(reqwest::Method::DELETE, &format!("/v1/notifications/{id}"), &bob).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(app.list_of(&bob, "").await.is_empty());
    assert_eq!(app.count_of(&bob).await, 0);
    assert_eq!(app.list_of(&alice, "").await.len(), 2, "alice still has it");
    let (status, _) = app.post_json(&format!("/v1/notifications/{id}/read"), &bob, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleted for bob means gone for bob");
}

#[tokio::test]
async fn read_all_covers_announcements_and_counts_them() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    app.notify("alice", "own").await;
    app.announce(json!("all"), "one").await;
    app.announce(json!("all"), "two").await;
    assert_eq!(app.count_of(&alice).await, 3);
    let (status, body) = app.post_json("/v1/notifications/read_all", &alice, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["updated"], 3);
    assert_eq!(app.count_of(&alice).await, 0);
    assert_eq!(app.count_of(&app.token("bob")).await, 2, "bob's are still unread");
    let (_, again) = app.post_json("/v1/notifications/read_all", &alice, None).await;
    assert_eq!(again["updated"], 0);
}

#[tokio::test]
async fn an_audience_by_topic_is_the_users_whose_token_may_read_it() {
    let app = spawn_app_with(|settings| settings.public_topics = vec!["news".into()]).await;
    let member = app.reader_token("mia", &["org:1:*"]);
    let deep = app.reader_token("dov", &["org:**"]);
    let outsider = app.reader_token("oli", &["org:2:*"]);
    let plain = app.token("pat");
    let announced = app.announce(json!({"topic": "org:1:staff"}), "Staff meeting").await;
    assert_eq!(announced["audience"], json!({"topic": "org:1:staff"}));
    assert_eq!(app.count_of(&member).await, 1);
    assert_eq!(app.count_of(&deep).await, 1);
    assert_eq!(app.count_of(&outsider).await, 0);
    assert_eq!(app.count_of(&plain).await, 0);
    assert!(app.list_of(&outsider, "").await.is_empty());
    let id = announced["id"].as_i64().unwrap();
    let (status, body) = app.post_json(&format!("/v1/notifications/{id}/read"), &outsider, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "outside the audience it does not exist: {body}");

    // A public topic's announcement reaches every signed-in user.
    app.announce(json!({"topic": "news"}), "Public news").await;
    assert_eq!(app.count_of(&plain).await, 1);
    assert_eq!(app.count_of(&outsider).await, 1);
}

#[tokio::test]
async fn streams_get_announcements_of_their_audience_live_with_the_count_and_users_who_connect_later_get_them_too() {
    let app = spawn_app().await;
    let member = app.reader_token("mia", &["team"]);
    let outsider = app.token("oli");
    let mut in_audience = app.open_stream(&member, None).await;
    assert_eq!(in_audience.until_unread_count().await.1, 0);
    let mut outside = app.open_stream(&outsider, None).await;
    outside.until_unread_count().await;

    let announced = app.announce(json!({"topic": "team"}), "Team lunch").await;
    let event = in_audience.next_named("notification").await;
    assert_eq!(data(&event), announced);
    assert_eq!(event.id, announced_event_id(&app, &announced).await);
    let count = in_audience.next().await.unwrap();
    assert_eq!((count.event.as_str(), data(&count)["count"].as_u64()), ("unread_count", Some(1)));
    // The outsider's next event is their own, not the team's.
    app.notify("oli", "marker").await;
    let first = tokio::time::timeout(PATIENCE, outside.next()).await.unwrap().unwrap();
    assert_eq!(data(&first)["title"], "marker");

    // Her own notification: the shared count frame gets her announcement added.
    app.notify("mia", "own").await;
    in_audience.next_named("notification").await;
    let count = in_audience.next_named("unread_count").await;
    assert_eq!(data(&count)["count"], 2);

    // Reading the announcement elsewhere: this stream hears it and counts 1.
    let id = announced["id"].as_i64().unwrap();
    app.post_json(&format!("/v1/notifications/{id}/read"), &member, None).await;
    let read = in_audience.next_named("notification.read").await;
    assert_eq!(data(&read)["ids"], json!([id]));
    assert_eq!(data(&in_audience.next_named("unread_count").await)["count"], 1);

    // Someone who connects after the announcement still gets it (unread).
    let another = app.announce(json!("all"), "For all").await;
    let mut late = app.open_stream(&app.reader_token("lou", &["team"]), None).await;
    let (events, count) = late.until_unread_count().await;
    let titles: Vec<Value> = events.iter().filter(|e| e.event == "notification").map(|e| data(e)["title"].clone()).collect();
    assert_eq!(titles, vec![json!("Team lunch"), json!("For all")], "oldest first");
    assert_eq!(count, 2);
    assert_eq!(data(&events[events.len() - 1])["id"], another["id"]);
}

/// The event id an announcement was sent with: its stream position.
async fn announced_event_id(app: &TestApp, announced: &Value) -> String {
    let db = &app.state.db;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT event_id FROM announcements WHERE id = {}", announced["id"]),
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "event_id").unwrap().to_string()
}

#[tokio::test]
async fn preferences_hide_an_announcement_type_unless_it_is_critical() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let response = app
        .request(reqwest::Method::PUT, "/v1/preferences/news", &alice)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = app.open_stream(&alice, None).await;
    stream.until_unread_count().await;
    app.announce(json!("all"), "hidden from alice").await;
    assert_eq!(app.count_of(&alice).await, 0);
    assert_eq!(app.count_of(&app.token("bob")).await, 1);
    let critical = app
        .announce_with(json!({"audience": "all", "type": "news", "title": "Security", "critical": true}))
        .await;
    assert_eq!(critical["critical"], true);
    // The stream skipped the hidden one: its next notification is the critical one.
    assert_eq!(data(&stream.next_named("notification").await)["title"], "Security");
    assert_eq!(app.count_of(&alice).await, 1);
}

#[tokio::test]
async fn a_grouped_announcement_updates_in_place_and_is_unread_again_for_those_who_read_it() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let body = |title: &str| json!({"audience": "all", "type": "status", "title": title, "group_key": "incident-7"});
    let first = app.announce_with(body("Investigating")).await;
    let id = first["id"].as_i64().unwrap();
    app.post_json(&format!("/v1/notifications/{id}/read"), &alice, None).await;
    assert_eq!(app.count_of(&alice).await, 0);
    let second = app.announce_with(body("Resolved")).await;
    assert_eq!(second["id"], first["id"], "the same announcement");
    assert_eq!(second["count"], 2);
    assert_eq!(app.rows_in("announcements").await, 1);
    assert_eq!(app.count_of(&alice).await, 1, "the update is news again");
    let items = app.list_of(&alice, "").await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["title"], "Resolved");
    assert_eq!(items[0]["read_at"], Value::Null);
}

#[tokio::test]
async fn statistics_count_announcement_deliveries_reads_and_clicks() {
    let app = spawn_app().await;
    let mut stream = app.open_stream(&app.token("a"), None).await;
    stream.until_unread_count().await;
    let announced = app.announce(json!("all"), "Survey").await;
    stream.next_named("notification").await;
    let id = announced["id"].as_i64().unwrap();
    for user in ["a", "b", "c"] {
        app.post_json(&format!("/v1/notifications/{id}/read"), &app.token(user), None).await;
    }
    let (status, clicked) = app.post_json(&format!("/v1/notifications/{id}/click"), &app.token("a"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(clicked["read_at"], Value::Null);
    let (status, stats) = app.get_json("/v1/stats/notifications?type=news", &app.publisher_token()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats[0]["read"], 3);
    assert_eq!(stats[0]["clicked"], 1);
    // Deliveries are counted in memory and stored every few seconds.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (_, stats) = app.get_json("/v1/stats/notifications?type=news", &app.publisher_token()).await;
        if stats[0]["sent"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the delivery was never counted: {stats}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_bad_audience_is_refused_with_its_field_and_stores_nothing() {
    let app = spawn_app().await;
    for (body, expected) in [
        // Like user_id with user_ids: well-formed, but contradictory.
        (json!({"audience": "all", "user_id": "alice", "type": "news", "title": "x"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"audience": "everyone", "type": "news", "title": "x"}), StatusCode::BAD_REQUEST),
        // A name against the topic rule, as a body's other rule-breaking values.
        (json!({"audience": {"topic": "Not Valid"}, "type": "news", "title": "x"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"audience": {"topic": "ok", "extra": 1}, "type": "news", "title": "x"}), StatusCode::BAD_REQUEST),
    ] {
        let (status, answer) = into_json(app.publish_raw(&body).await).await;
        assert_eq!(status, expected, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], "invalid_request");
        assert_eq!(answer["error"]["field"], "audience", "{body} → {answer}");
    }
    let response = app
        .http
        .post(format!("{}/v1/notifications", app.base))
        .bearer_auth(app.token("alice"))
        .json(&json!({"audience": "all", "type": "news", "title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "publishing needs scope publish");
    assert_eq!(app.rows_in("announcements").await, 0);
}

/// The user's notifications, announcements to all and to a topic, and a
/// topic's events, interleaved by 8 concurrent publishers while the
/// subscriber drops and resumes: the exact set, in id order, each once;
/// announcements to a topic the token may not read never arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_across_announcements_and_the_users_events_gets_the_exact_set_in_order() {
    let app = Arc::new(spawn_app().await);
    let token = app.reader_token("alice", &["room:*"]);
    let mut stream = app.open_topic_stream(&token, &["room:a"], None).await;
    stream.until_unread_count().await;
    let mut last_id = stream.last_id.clone();
    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let app = app.clone();
            tokio::spawn(async move {
                for n in 0..30 {
                    let label = format!("{p}:{n}");
                    match p % 4 {
                        0 => drop(app.notify("alice", &label).await),
                        1 => drop(app.announce(json!("all"), &label).await),
                        2 => drop(app.announce(json!({"topic": "room:b"}), &label).await),
                        _ => drop(app.publish_topic("room:a", "say", json!({"label": label}), None).await),
                    }
                    if n % 10 == 0 {
                        app.announce(json!({"topic": "elsewhere"}), &format!("noise {p}:{n}")).await;
                    }
                }
            })
        })
        .collect();
    let total = 8 * 30;
    let mut received: Vec<(i64, String)> = Vec::new();
    let mut reconnects = 0;
    while received.len() < total {
        let mut take = rand::rng().random_range(1..=25);
        while take > 0 && received.len() < total {
            let event = tokio::time::timeout(PATIENCE, stream.next()).await.expect("events keep coming").expect("the stream stays open");
            assert_ne!(event.event, "reset");
            let label = match event.event.as_str() {
                "notification" => Some(data(&event)["title"].as_str().unwrap().to_owned()),
                "topic.event" => Some(data(&event)["data"]["label"].as_str().unwrap().to_owned()),
                _ => None,
            };
            if let Some(label) = label {
                assert!(!label.starts_with("noise"), "an announcement outside the token's topics arrived: {label}");
                received.push((event.id.parse().unwrap(), label));
                take -= 1;
            }
            if stream.last_id.is_some() {
                last_id = stream.last_id.clone();
            }
        }
        drop(stream);
        reconnects += 1;
        stream = app.open_topic_stream(&token, &["room:a"], last_id.as_deref()).await;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    assert!(reconnects > 5, "the subscriber really dropped and resumed ({reconnects} times)");
    let ids: Vec<i64> = received.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids strictly increase");
    let labels: BTreeSet<&str> = received.iter().map(|(_, l)| l.as_str()).collect();
    let expected: BTreeSet<String> = (0..8).flat_map(|p| (0..30).map(move |n| format!("{p}:{n}"))).collect();
    assert_eq!(labels, expected.iter().map(String::as_str).collect(), "exactly every event, once");
}
