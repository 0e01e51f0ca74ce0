//! Resume: exactly what was missed, nothing twice, in order; `reset` when
//! that cannot be promised; lag caught up from the log.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyStream, Empty};
use rand::Rng;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::json;

use crate::helpers::{EventStream, PATIENCE, data, eventually, spawn_app, spawn_app_in, spawn_app_with};

#[tokio::test]
async fn resuming_by_header_replays_exactly_the_events_after_the_last_id() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;
    let first = app.notify("alice", "seen").await;
    stream.next_named("notification").await;
    let last_seen = stream.last_id.clone().unwrap();
    drop(stream);

    let missed = app.notify("alice", "missed").await;
    app.post_json(&format!("/v1/notifications/{}/read", first["id"]), &token, None).await;

    let mut resumed = app.open_stream(&token, Some(&last_seen)).await;
    let (events, count) = resumed.until_unread_count().await;
    let kinds: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["notification", "notification.read"]);
    assert_eq!(data(&events[0]), missed);
    assert_eq!(data(&events[1])["ids"], json!([first["id"]]));
    assert_eq!(count, 1);
}

#[tokio::test]
async fn resuming_by_query_parameter_works_like_the_header() {
    let app = spawn_app().await;
    let token = app.token("alice");
    app.notify("alice", "one").await;
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;
    let last = stream.last_id.clone().unwrap();
    let missed = app.notify("alice", "two").await;

    let response = app
        .http
        .get(format!("{}/v1/stream?access_token={token}&last_event_id={last}", app.base))
        .send()
        .await
        .unwrap();
    let mut resumed = EventStream::new(response);
    let (events, _) = resumed.until_unread_count().await;
    assert_eq!(events.len(), 1);
    assert_eq!(data(&events[0]), missed);
}

#[tokio::test]
async fn a_fresh_stream_moves_the_resume_point_to_the_log_head_so_a_reconnect_replays_nothing() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let read_one = app.notify("alice", "read later").await;
    app.post_json(&format!("/v1/notifications/{}/read", read_one["id"]), &token, None).await;

    let mut stream = app.open_stream(&token, None).await;
    let (initial, _) = stream.until_unread_count().await;
    assert!(initial.is_empty(), "nothing unread: no notification frames");
    let resume_point = stream.last_id.clone().expect("the head position frame set the last id");

    let mut again = app.open_stream(&token, Some(&resume_point)).await;
    let (replayed, _) = again.until_unread_count().await;
    assert!(replayed.is_empty(), "the read event was already reflected: {replayed:?}");
}

#[tokio::test]
async fn a_resume_point_this_server_never_issued_gets_reset_then_the_fresh_state() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let unread = app.notify("alice", "unread").await;
    for bad in ["999999", "not-a-number", "-5"] {
        let mut stream = app.open_stream(&token, Some(bad)).await;
        let (events, count) = stream.until_unread_count().await;
        assert_eq!(events[0].event, "reset", "for {bad}");
        assert_eq!(data(&events[0]), json!({}));
        assert_eq!(events[1].event, "notification");
        assert_eq!(data(&events[1]), unread);
        assert_eq!(count, 1);
    }
}

#[tokio::test]
async fn a_resume_point_older_than_the_retained_history_gets_reset() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;
    app.notify("alice", "old").await;
    stream.next_named("notification").await;
    let old_point: i64 = stream.last_id.clone().unwrap().parse().unwrap();
    app.notify("alice", "newer").await;
    app.notify("alice", "newest").await;

    // Prune the history up to the second event, as retention does.
    let floor = old_point + 1;
    entity::event::Entity::delete_many()
        .filter(entity::event::Column::Id.lte(floor))
        .exec(&app.state.db)
        .await
        .unwrap();
    entity::history_floor::ActiveModel { topic: Set("u:alice".into()), floor: Set(floor) }
        .insert(&app.state.db)
        .await
        .unwrap();

    let mut resumed = app.open_stream(&token, Some(&old_point.to_string())).await;
    let (events, _) = resumed.until_unread_count().await;
    assert_eq!(events[0].event, "reset");
    let titles: Vec<_> = events[1..].iter().map(|e| data(e)["title"].clone()).collect();
    assert_eq!(titles, [json!("old"), json!("newer"), json!("newest")], "then the unread state");

    let mut within = app.open_stream(&token, Some(&floor.to_string())).await;
    let (events, _) = within.until_unread_count().await;
    assert_eq!(events.len(), 1, "a resume point at the floor is still served");
    assert_eq!(data(&events[0])["title"], "newest");
}

/// The contract's central promise, under load: 8 publishers × 50
/// notifications while the subscriber keeps dropping and resuming with its
/// last id. It must end with exactly the 400, each once, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_dropping_and_resuming_during_concurrent_publishing_gets_all_400_once_in_order() {
    let app = std::sync::Arc::new(spawn_app().await);
    let token = app.token("alice");
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;
    let mut last_id = stream.last_id.clone();

    let publishers: Vec<_> = (0..8)
        .map(|publisher| {
            let app = app.clone();
            tokio::spawn(async move {
                for n in 0..50 {
                    app.notify("alice", &format!("{publisher}:{n}")).await;
                }
            })
        })
        .collect();

    let mut received: Vec<(i64, String)> = Vec::new();
    let mut reconnects = 0;
    while received.len() < 400 {
        let mut take = rand::rng().random_range(1..=25);
        while take > 0 && received.len() < 400 {
            let event = stream.next().await.expect("the stream stays open");
            assert_ne!(event.event, "reset", "a valid resume point never resets");
            if event.event == "notification" {
                let id: i64 = event.id.parse().unwrap();
                received.push((id, data(&event)["title"].as_str().unwrap().to_owned()));
                take -= 1;
            }
            if stream.last_id.is_some() {
                last_id = stream.last_id.clone();
            }
        }
        drop(stream);
        reconnects += 1;
        stream = app.open_stream(&token, last_id.as_deref()).await;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    // After the last publish, a resumed stream has nothing more to say.
    let (extra, count) = stream.until_unread_count().await;
    assert!(extra.iter().all(|e| e.event != "notification"), "nothing beyond the 400: {extra:?}");
    assert_eq!(count, 400);

    assert!(reconnects > 10, "the subscriber really did drop and resume ({reconnects} times)");
    let ids: Vec<i64> = received.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "event ids strictly increase");
    let titles: BTreeSet<&str> = received.iter().map(|(_, title)| title.as_str()).collect();
    assert_eq!(titles.len(), 400, "no duplicates");
    let expected: BTreeSet<String> = (0..8).flat_map(|p| (0..50).map(move |n| format!("{p}:{n}"))).collect();
    assert_eq!(titles, expected.iter().map(String::as_str).collect(), "exactly the 400 published");
    let mut next_per_publisher: HashMap<&str, u32> = HashMap::new();
    for (_, title) in &received {
        let (publisher, n) = title.split_once(':').unwrap();
        let expected_n = next_per_publisher.entry(publisher).or_insert(0);
        assert_eq!(n.parse::<u32>().unwrap(), *expected_n, "each publisher's notifications arrive in its order");
        *expected_n += 1;
    }
}

/// A client that stops reading: its socket fills, its mailbox overflows, and
/// when it reads again it catches up from the log, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_overflows_its_queue_then_catches_up_without_loss() {
    let app = spawn_app_with(|settings| settings.mailbox_capacity = 8).await;
    let token = app.token("alice");

    // A client with a tiny receive buffer, so the server's writes block soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = app.base.trim_start_matches("http://").parse().unwrap();
    let tcp = socket.connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/v1/stream")
        .header("host", "tidings")
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);

    let big_body = "x".repeat(9000);
    let mut published = Vec::new();
    let mut after_overflow = 0;
    while after_overflow < 20 {
        assert!(published.len() < 3000, "the mailbox should have overflowed by now");
        let title = format!("n{}", published.len());
        let response = app
            .publish_raw(&json!({"user_id": "alice", "type": "bulk", "title": title, "body": big_body}))
            .await;
        assert_eq!(response.status(), 201);
        published.push(title);
        if app.state.hub.overflows() > 0 {
            after_overflow += 1;
        }
    }

    let bytes = BodyStream::new(response.into_body()).filter_map(|frame| async move {
        match frame {
            Ok(frame) => frame.into_data().ok().map(Ok),
            Err(e) => Some(Err(e.to_string())),
        }
    });
    let mut stream = EventStream::from_bytes(bytes);
    let mut received = Vec::new();
    let mut ids = Vec::new();
    while received.len() < published.len() {
        let event = stream.next().await.expect("the stream stays open");
        if event.event == "notification" {
            ids.push(event.id.parse::<i64>().unwrap());
            received.push(data(&event)["title"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(received, published, "every notification, once, in order");
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
    eventually("the stream has caught up from the log", || {
        app.state.hub.stats().catch_ups.load(std::sync::atomic::Ordering::Relaxed) > 0
    })
    .await;
    let (_, count) = stream.until_unread_count().await;
    assert_eq!(count as usize, published.len(), "the count after catching up is current");
}

#[tokio::test]
async fn a_client_resumes_without_loss_against_a_restarted_server() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;
    app.notify("alice", "before").await;
    stream.next_named("notification").await;
    let last_seen = stream.last_id.clone().unwrap();
    let missed = [app.notify("alice", "missed 1").await, app.notify("alice", "missed 2").await];
    let database = app.database.clone();
    let stopping = tokio::spawn(app.stop());
    assert!(stream.ended().await, "the stream ends with the server");
    stopping.await.unwrap();

    let restarted = spawn_app_in(database, |_| {}).await;
    let mut resumed = restarted.open_stream(&token, Some(&last_seen)).await;
    let (events, count) = resumed.until_unread_count().await;
    let replayed: Vec<_> = events.iter().map(data).collect();
    assert_eq!(replayed, missed);
    assert_eq!(count, 3);
}

#[tokio::test]
async fn a_last_event_id_that_is_not_ascii_gets_reset_like_other_garbage() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let unread = app.notify("alice", "unread").await;
    for bad in ["\u{e9}t\u{e9}".as_bytes(), b"12\xff", "\u{661}\u{662}".as_bytes()] {
        let response = app
            .http
            .get(format!("{}/v1/stream", app.base))
            .bearer_auth(&token)
            .header("Last-Event-ID", reqwest::header::HeaderValue::from_bytes(bad).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let mut stream = crate::helpers::EventStream::new(response);
        let (events, count) = stream.until_unread_count().await;
        assert_eq!(events[0].event, "reset", "for {bad:?}");
        assert_eq!(data(&events[1]), unread);
        assert_eq!(count, 1);
    }
}

/// What a test expects of a resumed stream, one label per event before
/// its `unread_count` (presence, which comes and goes on its own, aside).
fn labels(events: &[eventsource_stream::Event]) -> Vec<String> {
    events
        .iter()
        .filter(|event| event.event != "presence")
        .map(|event| match event.event.as_str() {
            "notification" => format!("n:{}", data(event)["title"].as_str().unwrap()),
            "message" => format!("m:{}", data(event)["content"].as_str().unwrap()),
            "topic.event" => format!("t:{}", data(event)["data"]["v"].as_str().unwrap()),
            other => format!("other:{other}"),
        })
        .collect()
}

/// Streams that resume at the same moment are read together (one snapshot
/// for a batch, `stream::reads::resumes`): each must still get exactly what
/// it missed, in log order: its own notifications, its conversation's
/// messages, its broadcast topic's events conflated by key; a resume point
/// from another database still resets. Then a gap longer than a read holds
/// is replayed page by page, as exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resumes_read_together_each_get_exactly_what_they_missed() {
    let app = std::sync::Arc::new(spawn_app_with(|settings| settings.stream.replay_page = 200).await);
    const USERS: usize = 24;
    let user = |n: usize| format!("resumer{n}");
    let on_board = |n: usize| n.is_multiple_of(4);
    let open = |n: usize, last: Option<String>| {
        let app = app.clone();
        async move {
            let name = format!("resumer{n}");
            if on_board(n) {
                app.open_topic_stream(&app.reader_token(&name, &["board"]), &["board"], last.as_deref()).await
            } else {
                app.open_stream(&app.token(&name), last.as_deref()).await
            }
        }
    };
    let mut conversations = Vec::new();
    for n in (0..USERS).step_by(2) {
        conversations.push(app.create_conversation(&app.token(&user(n)), &[&user(n + 1)]).await);
    }
    let mut resume_points = Vec::new();
    for n in 0..USERS {
        let mut stream = open(n, None).await;
        stream.until_unread_count().await;
        resume_points.push(stream.last_id.clone().expect("a fresh stream gives its position"));
    }

    // Missed while every stream was closed, in this order.
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); USERS];
    for round in 0..3 {
        for (n, expected) in expected.iter_mut().enumerate() {
            if (n + round) % 3 != 0 {
                let title = format!("{}-r{round}", user(n));
                app.notify(&user(n), &title).await;
                expected.push(format!("n:{title}"));
            }
        }
        for (pair, conversation) in conversations.iter().enumerate() {
            let content = format!("pair{pair}-r{round}");
            app.say(&app.token(&user(pair * 2)), conversation, &content).await;
            expected[pair * 2].push(format!("m:{content}"));
            expected[pair * 2 + 1].push(format!("m:{content}"));
        }
        for (v, key) in [(format!("r{round}-keyed"), Some("a")), (format!("r{round}-free"), None)] {
            app.publish_topic("board", "score", json!({"v": v}), key).await;
            for n in (0..USERS).filter(|n| on_board(*n)) {
                expected[n].push(format!("t:{v}"));
            }
        }
    }
    // Catching up conflates by key: only the newest keyed event of the gap.
    for n in (0..USERS).filter(|n| on_board(*n)) {
        expected[n].retain(|label| label != "t:r0-keyed" && label != "t:r1-keyed");
    }
    // The last resumes from a point beyond this log: reset, then its fresh state.
    resume_points[USERS - 1] = "999999999".into();
    let unread_of_last: Vec<String> = expected[USERS - 1].iter().filter(|label| label.starts_with("n:")).cloned().collect();

    let resumes: Vec<_> = (0..USERS).map(|n| tokio::spawn(open(n, Some(resume_points[n].clone())))).collect();
    let mut streams = Vec::new();
    for (n, resume) in resumes.into_iter().enumerate() {
        let mut stream = tokio::time::timeout(PATIENCE, resume).await.expect("every resume opens").unwrap();
        let (events, count) = stream.until_unread_count().await;
        let got = labels(&events);
        if n == USERS - 1 {
            assert_eq!(got[0], "other:reset", "{got:?}");
            assert_eq!(got[1..], unread_of_last[..], "then its unread notifications");
        } else {
            assert_eq!(got, expected[n], "{} got exactly what it missed, in order", user(n));
        }
        let notified = expected[n].iter().filter(|label| label.starts_with("n:")).count() as u64;
        assert_eq!(count, notified, "{}'s count", user(n));
        resume_points[n] = stream.last_id.clone().unwrap();
        streams.push(stream);
    }
    drop(streams);

    // A gap longer than a read holds (one user missed 230): the shared read
    // is each stream's first page, the rest page by page; the topic's
    // subscribers, whose keyed events are conflated, replay it all.
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); USERS - 1];
    for k in 0..230 {
        let title = format!("long-{k}");
        app.notify(&user(1), &title).await;
        expected[1].push(format!("n:{title}"));
    }
    for (n, expected) in expected.iter_mut().enumerate() {
        if n != 1 {
            let title = format!("{}-late", user(n));
            app.notify(&user(n), &title).await;
            expected.push(format!("n:{title}"));
        }
    }
    for (v, key) in [("late-keyed-1", Some("a")), ("late-free", None), ("late-keyed-2", Some("a"))] {
        app.publish_topic("board", "score", json!({"v": v}), key).await;
        for n in (0..USERS - 1).filter(|n| on_board(*n)) {
            if v != "late-keyed-1" {
                expected[n].push(format!("t:{v}"));
            }
        }
    }
    let resumes: Vec<_> = (0..USERS - 1).map(|n| tokio::spawn(open(n, Some(resume_points[n].clone())))).collect();
    for (n, resume) in resumes.into_iter().enumerate() {
        let mut stream = tokio::time::timeout(PATIENCE, resume).await.expect("every resume opens").unwrap();
        let (events, _) = stream.until_unread_count().await;
        assert_eq!(labels(&events), expected[n], "{} got exactly what it missed, in order", user(n));
    }
}

/// The central promise with many subscribers dropping and resuming at the
/// same moments, so that their resumes are read together, while publishers
/// keep publishing to all of them: each ends with exactly its own
/// notifications, each once, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_resuming_together_during_concurrent_publishing_each_get_theirs_once_in_order() {
    const USERS: usize = 16;
    const PER_PUBLISHER: usize = 30;
    const PUBLISHERS: usize = 4;
    let app = std::sync::Arc::new(spawn_app().await);
    let user = |n: usize| format!("crowd{n}");
    let mut streams = Vec::new();
    for n in 0..USERS {
        let mut stream = app.open_stream(&app.token(&user(n)), None).await;
        stream.until_unread_count().await;
        streams.push(stream);
    }
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let app = app.clone();
            tokio::spawn(async move {
                for k in 0..PER_PUBLISHER {
                    for n in 0..USERS {
                        app.notify(&format!("crowd{n}"), &format!("{publisher}:{k}")).await;
                    }
                }
            })
        })
        .collect();
    let total = PUBLISHERS * PER_PUBLISHER;
    // Every round, each subscriber reads a few, then all drop and resume together.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(USERS));
    let subscribers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(n, mut stream)| {
            let (app, barrier) = (app.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut received: Vec<(i64, String)> = Vec::new();
                let mut rounds = 0;
                while rounds < 8 || received.len() < total {
                    let mut take = rand::rng().random_range(1..=8);
                    while take > 0 && received.len() < total {
                        let event = stream.next().await.expect("the stream stays open");
                        assert_ne!(event.event, "reset", "a valid resume point never resets");
                        if event.event == "notification" {
                            received.push((event.id.parse().unwrap(), data(&event)["title"].as_str().unwrap().to_owned()));
                            take -= 1;
                        }
                    }
                    let last = stream.last_id.clone();
                    drop(stream);
                    rounds += 1;
                    // Everyone who is still resuming reconnects at once.
                    if rounds <= 8 {
                        barrier.wait().await;
                    }
                    stream = app.open_stream(&app.token(&format!("crowd{n}")), last.as_deref()).await;
                }
                let (extra, count) = stream.until_unread_count().await;
                (received, extra, count)
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    for (n, subscriber) in subscribers.into_iter().enumerate() {
        let (received, extra, count) = subscriber.await.unwrap();
        assert!(extra.iter().all(|e| e.event != "notification"), "{}: nothing beyond its own: {extra:?}", user(n));
        assert_eq!(count, total as u64, "{}'s count", user(n));
        let ids: Vec<i64> = received.iter().map(|(id, _)| *id).collect();
        assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{}: ids strictly increase", user(n));
        let titles: Vec<&str> = received.iter().map(|(_, title)| title.as_str()).collect();
        let distinct: BTreeSet<&str> = titles.iter().copied().collect();
        assert_eq!(distinct.len(), total, "{}: no duplicates", user(n));
        let expected: BTreeSet<String> = (0..PUBLISHERS).flat_map(|p| (0..PER_PUBLISHER).map(move |k| format!("{p}:{k}"))).collect();
        assert_eq!(distinct, expected.iter().map(String::as_str).collect(), "{}: exactly its own", user(n));
        let mut next_per_publisher: HashMap<&str, usize> = HashMap::new();
        for title in titles {
            let (publisher, k) = title.split_once(':').unwrap();
            let expected_k = next_per_publisher.entry(publisher).or_insert(0);
            assert_eq!(k.parse::<usize>().unwrap(), *expected_k, "{}: each publisher's in its order", user(n));
            *expected_k += 1;
        }
    }
}
