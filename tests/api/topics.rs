//! Broadcast topics: who may read them, one publish to every subscriber,
//! resume across the user's events and topics together, conflation on
//! catch-up, history, and bad input.

use std::{collections::BTreeSet, sync::Arc};

use rand::Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, data, into_json, spawn_app, spawn_app_with, topic_query};

#[tokio::test]
async fn topics_are_read_by_token_patterns_and_public_topics_and_refused_before_the_stream_otherwise() {
    let app = spawn_app_with(|settings| settings.public_topics = vec!["status".into(), "news:*".into()]).await;
    let one_segment = app.reader_token("ann", &["org:42:*"]);
    let any_depth = app.reader_token("ben", &["org:42:**"]);
    let plain = app.token("cat");
    let opens = |token: String, topics: Vec<&'static str>| {
        app.http.get(format!("{}/v1/stream?{}", app.base, topic_query(&topics))).bearer_auth(token).send()
    };
    assert_eq!(opens(one_segment.clone(), vec!["org:42:alerts"]).await.unwrap().status(), StatusCode::OK);
    let refused = opens(one_segment.clone(), vec!["org:42:team:a"]).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "* stays within one segment");
    let (_, body) = into_json(refused).await;
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(opens(any_depth.clone(), vec!["org:42:team:a"]).await.unwrap().status(), StatusCode::OK, "** crosses segments");
    assert_eq!(opens(any_depth, vec!["org:43:x"]).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(opens(plain.clone(), vec!["status", "news:today"]).await.unwrap().status(), StatusCode::OK, "public topics need no claim");
    assert_eq!(opens(plain.clone(), vec!["status", "secret"]).await.unwrap().status(), StatusCode::FORBIDDEN, "one unreadable topic refuses the stream");
    assert_eq!(opens(plain, vec!["news:a:b"]).await.unwrap().status(), StatusCode::FORBIDDEN);

    // History follows the same rule.
    let (status, _) = app.get_json("/v1/topics/org:42:alerts/events", &one_segment).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get_json("/v1/topics/secret/events", &one_segment).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn one_publish_reaches_every_subscriber_of_the_topic_once_and_nobody_else() {
    let app = spawn_app().await;
    let mut subscribers = Vec::new();
    for user in ["ann", "ben", "cat"] {
        let mut stream = app.open_topic_stream(&app.reader_token(user, &["dash"]), &["dash"], None).await;
        stream.until_unread_count().await;
        subscribers.push(stream);
    }
    let mut outsider = app.open_topic_stream(&app.reader_token("dan", &["other"]), &["other"], None).await;
    outsider.until_unread_count().await;
    let mut plain = app.open_stream(&app.token("eve"), None).await;
    plain.until_unread_count().await;

    let published = app.publish_topic("dash", "metric", json!({"cpu": 0.5}), None).await;
    assert_eq!(published["topic"], "dash");
    assert_eq!(published["type"], "metric");
    assert_eq!(published["data"], json!({"cpu": 0.5}));
    assert_eq!(published["key"], Value::Null);
    for stream in &mut subscribers {
        let event = stream.next_named("topic.event").await;
        assert_eq!(data(&event), published);
        assert_eq!(event.id, published["id"].to_string());
    }
    // The others' next event is their own marker, not the dashboard's.
    let marker = app.publish_topic("other", "marker", json!({}), None).await;
    let first = tokio::time::timeout(PATIENCE, outsider.next()).await.unwrap().unwrap();
    assert_eq!(data(&first), marker, "a topic's event never reaches a stream without it");
    app.notify("eve", "marker").await;
    assert_eq!(plain.next().await.unwrap().event, "notification");
    // And each subscriber got the dashboard's event exactly once.
    let again = app.publish_topic("dash", "metric", json!({"cpu": 0.6}), None).await;
    for stream in &mut subscribers {
        assert_eq!(data(&stream.next_named("topic.event").await), again);
    }
}

/// The user's notifications and two topics, interleaved by 8 concurrent
/// publishers, while the subscriber drops and resumes with one
/// Last-Event-ID: the exact set, in id order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_last_event_id_resumes_the_users_events_and_two_topics_together_exactly_once_in_order() {
    let app = Arc::new(spawn_app().await);
    let token = app.reader_token("alice", &["room:*"]);
    let topics = ["room:a", "room:b"];
    let mut stream = app.open_topic_stream(&token, &topics, None).await;
    stream.until_unread_count().await;
    let mut last_id = stream.last_id.clone();

    let publishers: Vec<_> = (0..8)
        .map(|p| {
            let app = app.clone();
            tokio::spawn(async move {
                for n in 0..40 {
                    let label = format!("{p}:{n}");
                    match p % 3 {
                        0 => {
                            app.notify("alice", &label).await;
                        }
                        1 => {
                            app.publish_topic("room:a", "say", json!({"label": label}), None).await;
                        }
                        _ => {
                            app.publish_topic("room:b", "say", json!({"label": label}), None).await;
                        }
                    }
                    // Noise on a topic this stream did not ask for.
                    if n % 10 == 0 {
                        app.publish_topic("room:c", "say", json!({"label": format!("noise {p}:{n}")}), None).await;
                    }
                }
            })
        })
        .collect();

    let total = 8 * 40;
    let mut received: Vec<(i64, String)> = Vec::new();
    let mut reconnects = 0;
    while received.len() < total {
        let mut take = rand::rng().random_range(1..=25);
        while take > 0 && received.len() < total {
            let event = tokio::time::timeout(PATIENCE, stream.next()).await.expect("events keep coming").expect("the stream stays open");
            assert_ne!(event.event, "reset", "a valid resume point never resets");
            let label = match event.event.as_str() {
                "notification" => Some(data(&event)["title"].as_str().unwrap().to_owned()),
                "topic.event" => Some(data(&event)["data"]["label"].as_str().unwrap().to_owned()),
                _ => None,
            };
            if let Some(label) = label {
                assert!(!label.starts_with("noise"), "room:c was never asked for");
                received.push((event.id.parse().unwrap(), label));
                take -= 1;
            }
            if stream.last_id.is_some() {
                last_id = stream.last_id.clone();
            }
        }
        drop(stream);
        reconnects += 1;
        stream = app.open_topic_stream(&token, &topics, last_id.as_deref()).await;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    assert!(reconnects > 5, "the subscriber really dropped and resumed ({reconnects} times)");
    let ids: Vec<i64> = received.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids strictly increase");
    let labels: BTreeSet<&str> = received.iter().map(|(_, l)| l.as_str()).collect();
    let expected: BTreeSet<String> = (0..8).flat_map(|p| (0..40).map(move |n| format!("{p}:{n}"))).collect();
    assert_eq!(labels, expected.iter().map(String::as_str).collect(), "exactly every event, once");
    let mut next = std::collections::HashMap::new();
    for (_, label) in &received {
        let (p, n) = label.split_once(':').unwrap();
        let expected_n = next.entry(p.to_owned()).or_insert(0u32);
        assert_eq!(n.parse::<u32>().unwrap(), *expected_n, "each publisher's order is kept");
        *expected_n += 1;
    }
}

#[tokio::test]
async fn catching_up_after_a_gap_gets_only_the_newest_event_per_key_and_every_keyless_one() {
    let app = spawn_app().await;
    let token = app.reader_token("ops", &["dash"]);
    let mut stream = app.open_topic_stream(&token, &["dash"], None).await;
    stream.until_unread_count().await;
    let before_gap = app.publish_topic("dash", "cpu", json!({"v": 0}), Some("cpu")).await;
    assert_eq!(data(&stream.next_named("topic.event").await), before_gap);
    let last = stream.last_id.clone();
    drop(stream);

    // The gap: three cpu readings, two memory readings, two keyless alerts.
    app.publish_topic("dash", "cpu", json!({"v": 1}), Some("cpu")).await;
    app.publish_topic("dash", "mem", json!({"v": 1}), Some("mem")).await;
    let alert_one = app.publish_topic("dash", "alert", json!({"n": 1}), None).await;
    app.publish_topic("dash", "cpu", json!({"v": 2}), Some("cpu")).await;
    let alert_two = app.publish_topic("dash", "alert", json!({"n": 2}), None).await;
    let mem = app.publish_topic("dash", "mem", json!({"v": 2}), Some("mem")).await;
    let cpu = app.publish_topic("dash", "cpu", json!({"v": 3}), Some("cpu")).await;

    let mut resumed = app.open_topic_stream(&token, &["dash"], last.as_deref()).await;
    let (events, _) = resumed.until_unread_count().await;
    let got: Vec<Value> = events.iter().filter(|e| e.event == "topic.event").map(data).collect();
    assert_eq!(got, vec![alert_one, alert_two, mem, cpu], "per key only the newest of the gap, in id order; keyless ones all");

    // Live delivery is not conflated.
    let live_one = app.publish_topic("dash", "cpu", json!({"v": 4}), Some("cpu")).await;
    let live_two = app.publish_topic("dash", "cpu", json!({"v": 5}), Some("cpu")).await;
    assert_eq!(data(&resumed.next_named("topic.event").await), live_one);
    assert_eq!(data(&resumed.next_named("topic.event").await), live_two);

    // History lists everything, oldest first, a page at a time.
    let (status, page) = app.get_json("/v1/topics/dash/events?limit=3", &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(page["items"][0], before_gap);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, rest) = app.get_json(&format!("/v1/topics/dash/events?after={cursor}&limit=100"), &token).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 10 - 3);
    assert_eq!(rest["next_cursor"], Value::Null);
}

#[tokio::test]
async fn bad_topic_input_is_refused_with_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let publisher = app.publisher_token();
    let post = |topic: &str, body: Value, token: &str| app.http.post(format!("{}/v1/topics/{topic}/events", app.base)).bearer_auth(token).json(&body).send();

    let (status, body) = into_json(post("Bad Name", json!({"type": "t", "data": {}}), &publisher).await.unwrap()).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("topic")));
    let (status, body) = into_json(post(&"a".repeat(101), json!({"type": "t", "data": {}}), &publisher).await.unwrap()).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("topic")));
    let big = "x".repeat(17 * 1024);
    let (status, body) = into_json(post("dash", json!({"type": "t", "data": {"big": big}}), &publisher).await.unwrap()).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("data")));
    let (status, body) = into_json(post("dash", json!({"type": "t", "data": [1, 2]}), &publisher).await.unwrap()).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("data")));
    let (status, body) = into_json(post("dash", json!({"type": "Not A Type", "data": {}}), &publisher).await.unwrap()).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("type")));
    let (status, body) = into_json(post("dash", json!({"type": "t", "data": {}, "key": ""}), &publisher).await.unwrap()).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("key")));
    // Without the publish scope.
    let (status, body) = into_json(post("dash", json!({"type": "t", "data": {}}), &app.reader_token("mallory", &["**"])).await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, json!("forbidden")));

    // Streams: a bad name, and more than 32 topics.
    let token = app.reader_token("ann", &["**"]);
    let response = app.http.get(format!("{}/v1/stream?topic=UPPER", app.base)).bearer_auth(&token).send().await.unwrap();
    let (status, body) = into_json(response).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("topic")));
    let names: Vec<String> = (0..33).map(|n| format!("t{n}")).collect();
    let many: Vec<&str> = names.iter().map(String::as_str).collect();
    let response = app.http.get(format!("{}/v1/stream?{}", app.base, topic_query(&many))).bearer_auth(&token).send().await.unwrap();
    let (status, body) = into_json(response).await;
    assert_eq!((status, body["error"]["field"].clone()), (StatusCode::BAD_REQUEST, json!("topic")));

    // Nothing was stored.
    let (_, page) = app.get_json("/v1/topics/dash/events", &token).await;
    assert_eq!(page["items"], json!([]));
}

/// A stream without a resume point answers 200 as soon as it is
/// subscribed: every topic event published after that 200 reaches it, even
/// while it is still reading its starting state (a conversation's events
/// too), and each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_stream_gets_every_topic_event_published_after_its_200_even_while_it_starts() {
    let app = Arc::new(spawn_app().await);
    let token = app.reader_token("ann", &["live"]);
    for round in 0..30 {
        let response = app
            .http
            .get(format!("{}/v1/stream?topic=live", app.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // Published at once, racing the stream's first reads.
        let mut published = Vec::new();
        for n in 0..3 {
            published.push(app.publish_topic("live", "tick", json!({"round": round, "n": n}), None).await);
        }
        let mut stream = crate::helpers::EventStream::new(response);
        for expected in &published {
            let event = tokio::time::timeout(PATIENCE, stream.next_named("topic.event")).await.expect("every event after the 200 arrives");
            assert_eq!(&data(&event), expected, "in order, none skipped");
        }
    }
}
