//! The stream's framing, initial state, live delivery, heartbeats, expiry, isolation.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;

use crate::helpers::{PATIENCE, data, spawn_app, spawn_app_with};

#[tokio::test]
async fn the_stream_answers_with_sse_headers_a_retry_hint_first_and_an_unread_count_without_id() {
    let app = spawn_app().await;
    let token = app.token("alice");
    app.notify("alice", "first").await;

    let response = app.http.get(format!("{}/v1/stream", app.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");

    let mut raw = String::new();
    let mut body = response.bytes_stream();
    while !raw.contains("event: unread_count") {
        let chunk = tokio::time::timeout(PATIENCE, body.next()).await.unwrap().unwrap().unwrap();
        raw.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(raw.starts_with("retry: "), "the first frame is the retry hint: {raw:?}");
    let count_frame = raw.split("\n\n").find(|frame| frame.contains("event: unread_count")).unwrap();
    assert!(!count_frame.contains("id:"), "unread_count carries no id: {count_frame:?}");
    let notification_frame = raw.split("\n\n").find(|frame| frame.contains("event: notification")).unwrap();
    assert!(notification_frame.starts_with("id: "), "notifications carry ids: {notification_frame:?}");
}

#[tokio::test]
async fn a_fresh_stream_starts_with_the_unread_notifications_oldest_first_then_the_count() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let first = app.notify("alice", "one").await;
    app.notify("alice", "two").await;
    app.notify("alice", "three").await;
    let (status, _) = app.post_json(&format!("/v1/notifications/{}/read", first["id"]), &token, None).await;
    assert_eq!(status, StatusCode::OK);

    let mut stream = app.open_stream(&token, None).await;
    let (initial, count) = stream.until_unread_count().await;
    let titles: Vec<_> = initial
        .iter()
        .filter(|e| e.event == "notification")
        .map(|e| data(e)["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(titles, ["two", "three"]);
    assert_eq!(count, 2);
}

#[tokio::test]
async fn a_fresh_stream_sends_at_most_the_newest_hundred_unread() {
    let app = spawn_app().await;
    for i in 0..105 {
        app.notify("alice", &format!("n{i}")).await;
    }
    let mut stream = app.open_stream(&app.token("alice"), None).await;
    let (initial, count) = stream.until_unread_count().await;
    let titles: Vec<_> = initial.iter().map(|e| data(e)["title"].as_str().unwrap().to_owned()).collect();
    let expected: Vec<_> = (5..105).map(|i| format!("n{i}")).collect();
    assert_eq!(titles, expected);
    assert_eq!(count, 105, "the count covers all unread, not only those sent");
}

#[tokio::test]
async fn a_notification_published_while_connected_arrives_live_followed_by_the_new_count() {
    let app = spawn_app().await;
    let mut stream = app.open_stream(&app.token("alice"), None).await;
    let (_, count) = stream.until_unread_count().await;
    assert_eq!(count, 0);

    let published = app.notify("alice", "live").await;
    let event = stream.next_named("notification").await;
    assert_eq!(data(&event), published);
    let next = stream.next().await.unwrap();
    assert_eq!(next.event, "unread_count");
    assert_eq!(data(&next)["count"], 1);
}

#[tokio::test]
async fn a_read_on_one_tab_reaches_every_other_open_stream_of_the_user() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let published = app.notify("alice", "hello").await;
    let mut tab_one = app.open_stream(&token, None).await;
    let mut tab_two = app.open_stream(&token, None).await;
    tab_one.until_unread_count().await;
    tab_two.until_unread_count().await;

    let (status, _) = app.post_json(&format!("/v1/notifications/{}/read", published["id"]), &token, None).await;
    assert_eq!(status, StatusCode::OK);
    for tab in [&mut tab_one, &mut tab_two] {
        let read = tab.next().await.unwrap();
        assert_eq!(read.event, "notification.read");
        assert_eq!(data(&read)["ids"], serde_json::json!([published["id"]]));
        let count = tab.next().await.unwrap();
        assert_eq!(count.event, "unread_count");
        assert_eq!(data(&count)["count"], 0);
    }
}

#[tokio::test]
async fn one_user_never_receives_another_users_events() {
    let app = spawn_app().await;
    let mut bob = app.open_stream(&app.token("bob"), None).await;
    bob.until_unread_count().await;

    app.notify("alice", "for alice").await;
    app.notify("bob", "for bob").await;
    let event = bob.next_named("notification").await;
    assert_eq!(data(&event)["title"], "for bob");

    // And a resume from 0 replays only bob's own history.
    let mut replay = app.open_stream(&app.token("bob"), Some("0")).await;
    let (events, _) = replay.until_unread_count().await;
    let titles: Vec<_> = events.iter().map(|e| data(e)["title"].clone()).collect();
    assert_eq!(titles, [serde_json::json!("for bob")]);
}

#[tokio::test]
async fn idle_streams_get_heartbeat_comments() {
    let app = spawn_app_with(|settings| settings.stream.heartbeat = Duration::from_millis(200)).await;
    let response = app.http.get(format!("{}/v1/stream", app.base)).bearer_auth(app.token("alice")).send().await.unwrap();
    let mut body = response.bytes_stream();
    let mut raw = String::new();
    while raw.matches(": ping").count() < 2 {
        let chunk = tokio::time::timeout(PATIENCE, body.next()).await.unwrap().unwrap().unwrap();
        raw.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn the_stream_ends_when_its_token_expires() {
    let app = spawn_app().await;
    let mut stream = app.open_stream(&app.token_expiring("alice", Duration::from_secs(2)), None).await;
    stream.until_unread_count().await;
    assert!(stream.ended().await, "the server closes the stream at the token's expiry");
}

#[tokio::test]
async fn stopping_the_server_ends_open_streams_promptly() {
    let app = spawn_app().await;
    let mut stream = app.open_stream(&app.token("alice"), None).await;
    stream.until_unread_count().await;
    let stopping = tokio::spawn(app.stop());
    assert!(stream.ended().await);
    tokio::time::timeout(PATIENCE, stopping).await.expect("stop returns").unwrap();
}

/// Admission: a surge of opens takes turns at reading starting state; an
/// open that gets no turn in time is refused before any byte, with 503 and
/// `Retry-After`, instead of answering 200 and ending soon after.
#[tokio::test]
async fn an_open_that_gets_no_turn_in_time_is_refused_with_503_before_the_stream() {
    let app = crate::helpers::spawn_app_with(|settings| {
        settings.stream.max_opening = 0;
        settings.stream.open_deadline = std::time::Duration::from_millis(100);
    })
    .await;
    let response = app.http.get(format!("{}/v1/stream", app.base)).bearer_auth(app.token("alice")).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let (_, body) = crate::helpers::into_json(response).await;
    assert_eq!(body["error"]["code"], "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_of_opens_beyond_the_turns_all_open_and_start_in_turn() {
    // The deadline is not what this test is about (the test above is): it is
    // set long enough that 30 rounds of 2 turns fit on a loaded CI machine.
    let app = std::sync::Arc::new(
        crate::helpers::spawn_app_with(|settings| {
            settings.stream.max_opening = 2;
            settings.stream.open_deadline = std::time::Duration::from_secs(12);
        })
        .await,
    );
    let opens: Vec<_> = (0..60)
        .map(|n| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut stream = app.open_stream(&app.token(&format!("user{n}")), None).await;
                stream.until_unread_count().await
            })
        })
        .collect();
    for open in opens {
        let (_, count) = tokio::time::timeout(crate::helpers::PATIENCE, open).await.expect("every open starts").unwrap();
        assert_eq!(count, 0);
    }
}

/// Opens that arrive together have their starting state read together
/// (`crate::coalesce`): one batch serves many users. Each must still get
/// exactly its own unread notifications, oldest first, its own count, and
/// its own conversations live; a user whose preferences hide a type is read
/// on the slower path within the same batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_read_together_each_get_exactly_their_own_state() {
    let app = std::sync::Arc::new(spawn_app().await);
    const USERS: usize = 24;
    let user = |n: usize| format!("batch{n}");
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); USERS];
    for (n, titles) in expected.iter_mut().enumerate() {
        for k in 0..(n % 5) {
            let title = format!("{}-{k}", user(n));
            app.notify(&user(n), &title).await;
            titles.push(title);
        }
        // Every third user has read their oldest: it is neither sent nor counted.
        if n % 3 == 0 && !titles.is_empty() {
            let token = app.token(&user(n));
            let (_, list) = app.get_json("/v1/notifications?status=unread", &token).await;
            let oldest = list["items"].as_array().unwrap().iter().find(|item| item["title"] == titles[0].as_str()).unwrap()["id"].clone();
            let (status, _) = app.post_json(&format!("/v1/notifications/{oldest}/read"), &token, None).await;
            assert_eq!(status, StatusCode::OK);
            titles.remove(0);
        }
    }
    // One user hides a type (not the one published): its state takes the other path.
    let hidden = app.request(reqwest::Method::PUT, "/v1/preferences/digest.weekly", &app.token(&user(7))).json(&serde_json::json!({"enabled": false})).send().await.unwrap();
    assert_eq!(hidden.status(), StatusCode::OK);
    // Pairs of users share a conversation: their memberships are read together too.
    let mut conversations = Vec::new();
    for n in (0..USERS).step_by(2) {
        conversations.push(app.create_conversation(&app.token(&user(n)), &[&user(n + 1)]).await);
    }

    let opens: Vec<_> = (0..USERS)
        .map(|n| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut stream = app.open_stream(&app.token(&format!("batch{n}")), None).await;
                let (before, count) = stream.until_unread_count().await;
                (stream, before, count)
            })
        })
        .collect();
    let mut streams = Vec::new();
    for (n, open) in opens.into_iter().enumerate() {
        let (stream, before, count) = tokio::time::timeout(PATIENCE, open).await.expect("every open starts").unwrap();
        let titles: Vec<String> = before
            .iter()
            .filter(|event| event.event == "notification")
            .map(|event| data(event)["title"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(titles, expected[n], "{} got exactly its own unread notifications, oldest first", user(n));
        assert!(before.iter().all(|event| event.event == "notification" || event.event == "presence" || event.data.is_empty()), "nothing else before the count: {before:?}");
        assert_eq!(count, expected[n].len() as u64, "{}'s count", user(n));
        streams.push(stream);
    }
    // Live: each conversation's message reaches its two members, no one else.
    for (pair, conversation) in conversations.iter().enumerate() {
        let (a, b) = (pair * 2, pair * 2 + 1);
        app.say(&app.token(&user(a)), conversation, &format!("to pair {pair}")).await;
        for n in [a, b] {
            let message = streams[n].next_named("message").await;
            assert_eq!(data(&message)["content"], format!("to pair {pair}"), "{} hears its own conversation", user(n));
        }
    }
    for (n, stream) in streams.iter_mut().enumerate() {
        app.notify(&user(n), "last").await;
        let event = stream.next_except("presence").await;
        assert_eq!((event.event.as_str(), data(&event)["title"].as_str()), ("notification", Some("last")), "{}: nothing of another pair arrived first", user(n));
    }
}
