//! The hub's own figures on the public topic `tidings:status`: a plain user
//! token streams them when the setting is on, catching up yields only the
//! newest, and with the setting off the topic is refused like any other.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{PATIENCE, data, into_json, spawn_app, spawn_app_with};

const TOPIC: &str = "tidings:status";
const FIGURES: [&str; 6] = ["open_streams", "events_appended", "frames_delivered", "writer_batches", "writer_jobs", "uptime_secs"];

/// Checks one `topic.event` of the status topic and answers its figures.
fn figures(event: &Value) -> Value {
    assert_eq!(event["topic"], TOPIC);
    assert_eq!(event["type"], "hub.status");
    assert_eq!(event["key"], "hub", "the key conflates catch-up to the newest figures");
    let figures = event["data"].as_object().expect("the figures are an object");
    let mut names: Vec<&str> = figures.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = FIGURES.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "exactly the documented figures");
    for name in FIGURES {
        assert!(figures[name].is_u64(), "{name} is a count: {}", figures[name]);
    }
    event["data"].clone()
}

#[tokio::test]
async fn a_plain_user_token_streams_the_hubs_figures_from_tidings_status_and_catches_up_with_the_newest_only() {
    let app = spawn_app_with(|settings| settings.status_topic_every = Some(Duration::from_secs(1))).await;
    let token = app.token("ann");
    let mut stream = app.open_topic_stream(&token, &[TOPIC], None).await;
    stream.until_unread_count().await;

    // The figures published at start may have been read before ann's stream
    // opened (and still reach it live); the next period's count it.
    let (first_event, first) = loop {
        let event = stream.next_named("topic.event").await;
        let first = figures(&data(&event));
        if first["open_streams"].as_u64().unwrap() >= 1 {
            break (event, first);
        }
        assert_eq!(first["uptime_secs"], 0, "only the figures read at start predate ann's stream: {first}");
    };
    let second_event = stream.next_named("topic.event").await;
    let second = figures(&data(&second_event));
    assert!(second_event.id.parse::<i64>().unwrap() > first_event.id.parse::<i64>().unwrap());
    for (name, grew) in [("events_appended", true), ("writer_jobs", true), ("writer_batches", true), ("frames_delivered", false), ("uptime_secs", false)] {
        let (before, after) = (first[name].as_u64().unwrap(), second[name].as_u64().unwrap());
        assert!(if grew { after > before } else { after >= before }, "{name}: {before} then {after}");
    }

    // A gap of at least two status events, seen in the topic's history
    // (public, so the plain token may read it too).
    let last_seen = stream.last_id.clone().expect("topic events carry ids");
    drop(stream);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let gap = loop {
        let (status, page) = app.get_json(&format!("/v1/topics/{TOPIC}/events?after={last_seen}"), &token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let ids: Vec<i64> = page["items"].as_array().unwrap().iter().map(|item| item["id"].as_i64().unwrap()).collect();
        if ids.len() >= 2 {
            break ids;
        }
        assert!(tokio::time::Instant::now() < deadline, "two more status events in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut resumed = app.open_topic_stream(&token, &[TOPIC], Some(&last_seen)).await;
    let (caught_up, _) = resumed.until_unread_count().await;
    let replayed: Vec<i64> = caught_up.iter().filter(|e| e.event == "topic.event").map(|e| e.id.parse().unwrap()).collect();
    assert!(!replayed.is_empty(), "the newest figures of the gap are sent");
    assert!(replayed[0] >= *gap.last().unwrap(), "older figures of the gap are skipped: gap {gap:?}, replayed {replayed:?}");
    // And live figures keep coming after the catch-up.
    figures(&data(&resumed.next_named("topic.event").await));
}

#[tokio::test]
async fn the_status_topic_is_off_unless_set_and_then_a_user_token_gets_403() {
    let off = spawn_app().await;
    let response = off.http.get(format!("{}/v1/stream?topic={TOPIC}", off.base)).bearer_auth(off.token("ann")).send().await.unwrap();
    let (status, body) = into_json(response).await;
    assert_eq!((status, body["error"]["code"].clone()), (StatusCode::FORBIDDEN, "forbidden".into()), "{body}");
    // Nothing is published either: a publisher, who may read any topic, finds no history.
    let (status, page) = off.get_json(&format!("/v1/topics/{TOPIC}/events"), &off.publisher_token()).await;
    assert_eq!((status, page["items"].clone()), (StatusCode::OK, Value::Array(Vec::new())));

    // On, the operator's own public topics stay public beside it.
    let on = spawn_app_with(|settings| {
        settings.status_topic_every = Some(Duration::from_secs(1));
        settings.public_topics = vec!["news:*".into()];
    })
    .await;
    let mut stream = on.open_topic_stream(&on.token("ann"), &[TOPIC, "news:today"], None).await;
    figures(&data(&stream.next_named("topic.event").await));
    let response = on.http.get(format!("{}/v1/stream?topic=secret", on.base)).bearer_auth(on.token("ann")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "only the status topic was made public");
}
