//! Chat over the stream: membership windows, resume, idempotent sends,
//! receipts, unread counts, typing and presence.

use std::{collections::HashSet, sync::Arc, time::Duration};

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{EventStream, data, into_json, spawn_app, spawn_app_with};

/// Reads events until a `notification` titled `marker`, returning those before it.
async fn until_marker(stream: &mut EventStream, marker: &str) -> Vec<eventsource_stream::Event> {
    let mut before = Vec::new();
    loop {
        let event = stream.next().await.expect("the stream stays open");
        if event.event == "notification" && data(&event)["title"] == marker {
            return before;
        }
        before.push(event);
    }
}

#[tokio::test]
async fn members_receive_the_conversation_and_its_messages_and_nobody_else_does() {
    let app = spawn_app().await;
    let (alice, bob, mallory) = (app.token("alice"), app.token("bob"), app.token("mallory"));
    let mut bob_stream = app.open_stream(&bob, None).await;
    bob_stream.until_unread_count().await;
    let mut mallory_stream = app.open_stream(&mallory, None).await;
    mallory_stream.until_unread_count().await;

    let conversation = app.create_conversation(&alice, &["bob"]).await;
    assert_eq!(conversation["members"], json!(["alice", "bob"]));
    assert_eq!(conversation["unread_count"], 0);
    let joined = bob_stream.next().await.unwrap();
    assert_eq!(joined.event, "conversation");
    assert_eq!(data(&joined)["id"], conversation["id"]);

    let message = app.say(&alice, &conversation, "hello bob").await;
    let received = bob_stream.next_named("message").await;
    assert_eq!(data(&received), message);
    assert_eq!(message["sender_id"], "alice");

    app.notify("mallory", "marker").await;
    let seen = until_marker(&mut mallory_stream, "marker").await;
    assert!(seen.iter().all(|e| e.event != "message" && e.event != "conversation"), "{seen:?}");

    let id = &conversation["id"];
    for (method, path) in [
        (Method::GET, format!("/v1/conversations/{id}")),
        (Method::GET, format!("/v1/conversations/{id}/messages")),
        (Method::POST, format!("/v1/conversations/{id}/members")),
        (Method::POST, format!("/v1/conversations/{id}/messages")),
        (Method::PATCH, format!("/v1/conversations/{id}/messages/{}", message["id"])),
        (Method::DELETE, format!("/v1/conversations/{id}/messages/{}", message["id"])),
        (Method::POST, format!("/v1/conversations/{id}/typing")),
        (Method::POST, format!("/v1/conversations/{id}/read")),
        (Method::DELETE, format!("/v1/conversations/{id}/members/mallory")),
    ] {
        let body = match method {
            Method::GET | Method::DELETE => None,
            _ => Some(json!({"content": "x", "user_id": "mallory", "is_typing": true, "message_id": message["id"]})),
        };
        let mut request = app.request(method.clone(), &path, &mallory);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let (status, answer) = into_json(request.send().await.unwrap()).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "a non-member gets 404 (or 400 for a body this route does not take): {method} {path} → {status} {answer}"
        );
        if status == StatusCode::BAD_REQUEST {
            let request = app.request(method.clone(), &path, &mallory).body(
                match path.rsplit('/').next() {
                    Some("members") => json!({"user_id": "mallory"}),
                    Some("messages") => json!({"content": "x"}),
                    Some("typing") => json!({"is_typing": true}),
                    Some("read") => json!({"message_id": message["id"]}),
                    _ => json!({"content": "x"}),
                }
                .to_string(),
            );
            let (status, _) = into_json(request.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path} with its own body");
        }
    }
    let (_, list) = app.get_json("/v1/conversations", &mallory).await;
    assert_eq!(list, json!([]));
}

/// Three members; two send concurrently while the third keeps dropping and
/// resuming with its last id. The third ends with every message exactly
/// once, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_dropping_and_resuming_while_two_others_chat_gets_every_message_once_in_order() {
    let app = Arc::new(spawn_app().await);
    let (alice, bob, carol) = (app.token("alice"), app.token("bob"), app.token("carol"));
    let conversation = app.create_conversation(&alice, &["bob", "carol"]).await;
    let mut stream = app.open_stream(&carol, None).await;
    stream.until_unread_count().await;
    let mut last_id = stream.last_id.clone();

    let senders: Vec<_> = [("alice", alice), ("bob", bob)]
        .into_iter()
        .map(|(name, token)| {
            let (app, conversation) = (app.clone(), conversation.clone());
            tokio::spawn(async move {
                for n in 0..60 {
                    app.say(&token, &conversation, &format!("{name}:{n}")).await;
                }
            })
        })
        .collect();
    let mut received: Vec<(i64, String)> = Vec::new();
    let mut reconnects = 0;
    while received.len() < 120 {
        let mut take = rand::rng().random_range(1..=15);
        while take > 0 && received.len() < 120 {
            let event = stream.next().await.expect("the stream stays open");
            assert_ne!(event.event, "reset");
            if event.event == "message" {
                received.push((event.id.parse().unwrap(), data(&event)["content"].as_str().unwrap().to_owned()));
                take -= 1;
            }
            last_id = stream.last_id.clone().or(last_id);
        }
        drop(stream);
        reconnects += 1;
        stream = app.open_stream(&carol, last_id.as_deref()).await;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let (extra, _) = stream.until_unread_count().await;
    assert!(extra.iter().all(|e| e.event != "message"), "nothing beyond the 120: {extra:?}");
    assert!(reconnects > 5);
    assert!(received.windows(2).all(|w| w[0].0 < w[1].0), "ids strictly increase");
    let unique: HashSet<&str> = received.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(unique.len(), 120, "no duplicates");
    for name in ["alice", "bob"] {
        let theirs: Vec<u32> = received
            .iter()
            .filter_map(|(_, c)| c.strip_prefix(&format!("{name}:")).map(|n| n.parse().unwrap()))
            .collect();
        assert_eq!(theirs, (0..60).collect::<Vec<_>>(), "{name}'s messages, all, in order");
    }
}

#[tokio::test]
async fn a_member_added_later_never_receives_older_messages_live_or_on_replay() {
    let app = spawn_app().await;
    let (alice, carol) = (app.token("alice"), app.token("carol"));
    let conversation = app.create_conversation(&alice, &["bob"]).await;
    app.say(&alice, &conversation, "before carol").await;

    let mut live = app.open_stream(&carol, None).await;
    live.until_unread_count().await;
    let replay_from = live.last_id.clone().unwrap_or_else(|| "0".into());
    let (status, added) = app
        .post_json(&format!("/v1/conversations/{}/members", conversation["id"]), &alice, Some(json!({"user_id": "carol"})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(added["members"], json!(["alice", "bob", "carol"]));
    app.say(&alice, &conversation, "after carol").await;

    let joined = live.next().await.unwrap();
    assert_eq!(joined.event, "conversation");
    let message = live.next_named("message").await;
    assert_eq!(data(&message)["content"], "after carol");

    for from in [replay_from.as_str(), "0"] {
        let mut replay = app.open_stream(&carol, Some(from)).await;
        let (events, _) = replay.until_unread_count().await;
        let contents: Vec<_> = events.iter().filter(|e| e.event == "message").map(|e| data(e)["content"].clone()).collect();
        assert_eq!(contents, [json!("after carol")], "resuming from {from}");
    }
}

#[tokio::test]
async fn a_member_who_left_stops_receiving_live_and_on_replay() {
    let app = spawn_app().await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let conversation = app.create_conversation(&alice, &["bob"]).await;
    let mut stream = app.open_stream(&bob, None).await;
    stream.until_unread_count().await;
    let start = stream.last_id.clone().unwrap();
    app.say(&alice, &conversation, "while bob is here").await;
    stream.next_named("message").await;

    let response = app.request(Method::DELETE, &format!("/v1/conversations/{}/members/alice", conversation["id"]), &bob).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "members remove only themselves");
    let response = app.request(Method::DELETE, &format!("/v1/conversations/{}/members/bob", conversation["id"]), &bob).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let farewell = stream.next().await.unwrap();
    assert_eq!(farewell.event, "conversation");
    assert_eq!(data(&farewell)["members"], json!(["alice"]));

    app.say(&alice, &conversation, "after bob left").await;
    app.notify("bob", "marker").await;
    let between = until_marker(&mut stream, "marker").await;
    assert!(between.iter().all(|e| e.event != "message"), "{between:?}");

    let mut replay = app.open_stream(&bob, Some(&start)).await;
    let (events, _) = replay.until_unread_count().await;
    let contents: Vec<_> = events.iter().filter(|e| e.event == "message").map(|e| data(e)["content"].clone()).collect();
    assert_eq!(contents, [json!("while bob is here")]);
    let (status, _) = app.get_json(&format!("/v1/conversations/{}", conversation["id"]), &bob).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_message_id_sends_once_even_when_retries_race() {
    let app = Arc::new(spawn_app().await);
    let alice = app.token("alice");
    let conversation = app.create_conversation(&alice, &["bob"]).await;
    let path = format!("/v1/conversations/{}/messages", conversation["id"]);
    let (first_status, first) = app.post_json(&path, &alice, Some(json!({"content": "once", "client_message_id": "c-1"}))).await;
    assert_eq!(first_status, StatusCode::CREATED);
    let (status, again) = app.post_json(&path, &alice, Some(json!({"content": "once", "client_message_id": "c-1"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);

    let racers: Vec<_> = (0..10)
        .map(|_| {
            let (app, alice, path) = (app.clone(), alice.clone(), path.clone());
            tokio::spawn(async move { app.post_json(&path, &alice, Some(json!({"content": "race", "client_message_id": "c-2"}))).await })
        })
        .collect();
    let mut created = 0;
    let mut ids = HashSet::new();
    for racer in racers {
        let (status, message) = racer.await.unwrap();
        created += usize::from(status == StatusCode::CREATED);
        ids.insert(message["id"].clone());
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let (_, history) = app.get_json(&path, &alice).await;
    assert_eq!(history["items"].as_array().unwrap().len(), 2, "two messages stored, not twelve");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_keep_unread_counts_exact_and_read_marks_only_move_forward() {
    let app = Arc::new(spawn_app().await);
    let tokens: Vec<String> = ["alice", "carol", "dave", "erin"].iter().map(|u| app.token(u)).collect();
    let bob = app.token("bob");
    let conversation = app.create_conversation(&tokens[0], &["bob", "carol", "dave", "erin"]).await;
    let senders: Vec<_> = tokens
        .iter()
        .cloned()
        .map(|token| {
            let (app, conversation) = (app.clone(), conversation.clone());
            tokio::spawn(async move {
                for n in 0..25 {
                    app.say(&token, &conversation, &format!("m{n}")).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let path = format!("/v1/conversations/{}", conversation["id"]);
    let (_, seen_by_bob) = app.get_json(&path, &bob).await;
    assert_eq!(seen_by_bob["unread_count"], 100);
    let (_, seen_by_alice) = app.get_json(&path, &tokens[0]).await;
    assert_eq!(seen_by_alice["unread_count"], 75, "one's own messages are not unread");

    let (_, history) = app.get_json(&format!("{path}/messages?limit=100"), &bob).await;
    let ids: Vec<i64> = history["items"].as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect();
    let middle = ids[49];
    let newer = ids.iter().filter(|id| **id > middle).count();
    let (status, answer) = app.post_json(&format!("{path}/read"), &bob, Some(json!({"message_id": middle}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["unread_count"], newer as u64);
    let (_, answer) = app.post_json(&format!("{path}/read"), &bob, Some(json!({"message_id": ids[99]}))).await;
    assert_eq!(answer["unread_count"], newer as u64, "the mark never moves back");
    let (status, _) = app.post_json(&format!("{path}/read"), &bob, Some(json!({"message_id": 999_999}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn read_receipts_reach_the_other_members() {
    let app = spawn_app().await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let conversation = app.create_conversation(&alice, &["bob"]).await;
    let message = app.say(&alice, &conversation, "did you read this?").await;
    let mut alice_stream = app.open_stream(&alice, None).await;
    alice_stream.until_unread_count().await;
    app.post_json(&format!("/v1/conversations/{}/read", conversation["id"]), &bob, Some(json!({"message_id": message["id"]}))).await;
    let receipt = alice_stream.next_named("read").await;
    let receipt = data(&receipt);
    assert_eq!((receipt["user_id"].as_str(), &receipt["message_id"]), (Some("bob"), &message["id"]));
    assert_eq!(receipt["conversation_id"], conversation["id"]);
    assert!(receipt["at"].is_string());
}

#[tokio::test]
async fn messages_are_edited_and_deleted_by_their_sender_only_leaving_a_tombstone() {
    let app = spawn_app().await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let conversation = app.create_conversation(&alice, &["bob"]).await;
    let first = app.say(&alice, &conversation, "frist").await;
    let path = format!("/v1/conversations/{}/messages", conversation["id"]);
    let (status, reply) = app.post_json(&path, &bob, Some(json!({"content": "typo", "reply_to": first["id"]}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(reply["reply_to"], first["id"]);
    let (status, _) = app.post_json(&path, &bob, Some(json!({"content": "x", "reply_to": 424242}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app.post_json(&path, &bob, Some(json!({"content": ""}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let mut bob_stream = app.open_stream(&bob, None).await;
    bob_stream.until_unread_count().await;
    let edit = |token: &str| app.request(Method::PATCH, &format!("{path}/{}", first["id"]), token).json(&json!({"content": "first"})).send();
    assert_eq!(edit(&bob).await.unwrap().status(), StatusCode::FORBIDDEN);
    let (status, edited) = into_json(edit(&alice).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(edited["content"], "first");
    assert!(edited["edited_at"].is_string());
    assert_eq!(data(&bob_stream.next_named("message.updated").await), edited);

    let delete = |token: &str| app.request(Method::DELETE, &format!("{path}/{}", first["id"]), token).send();
    assert_eq!(delete(&bob).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(delete(&alice).await.unwrap().status(), StatusCode::NO_CONTENT);
    let deleted = data(&bob_stream.next_named("message.deleted").await);
    assert_eq!(deleted["content"], Value::Null);
    assert!(deleted["deleted_at"].is_string());
    let (_, history) = app.get_json(&path, &bob).await;
    let tombstone = history["items"].as_array().unwrap().iter().find(|m| m["id"] == first["id"]).unwrap().clone();
    assert_eq!(tombstone["content"], Value::Null);
}

#[tokio::test]
async fn conversations_list_most_recent_activity_first_with_the_callers_counts() {
    let app = spawn_app().await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let older = app.create_conversation(&alice, &["bob"]).await;
    let newer = app.create_conversation(&alice, &["bob"]).await;
    app.say(&alice, &newer, "newer first").await;
    app.say(&alice, &older, "now older is more recent").await;
    let (_, list) = app.get_json("/v1/conversations", &bob).await;
    assert_eq!(list[0]["id"], older["id"]);
    assert_eq!(list[0]["last_message"]["content"], "now older is more recent");
    assert_eq!(list[0]["unread_count"], 1);
    assert_eq!(list[1]["id"], newer["id"]);
}

#[tokio::test]
async fn typing_reaches_the_others_renews_silently_and_ends_by_itself() {
    // Long enough that the renewal below lands inside it on a loaded machine.
    let app = spawn_app_with(|settings| settings.typing_expiry = Duration::from_millis(1500)).await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let conversation = app.create_conversation(&alice, &["bob"]).await;
    let mut alice_stream = app.open_stream(&alice, None).await;
    alice_stream.until_unread_count().await;
    let mut bob_stream = app.open_stream(&bob, None).await;
    bob_stream.until_unread_count().await;
    let path = format!("/v1/conversations/{}/typing", conversation["id"]);
    let typing = |value: bool| app.request(Method::POST, &path, &alice).json(&json!({"is_typing": value})).send();

    assert_eq!(typing(true).await.unwrap().status(), StatusCode::NO_CONTENT);
    typing(true).await.unwrap();
    // Alice's and Bob's presence reach each other on this stream too, at a
    // moment set by when each stream opened: they are not what is tested.
    let started = bob_stream.next_except("presence").await;
    assert_eq!(started.event, "typing");
    assert_eq!(data(&started), json!({"conversation_id": conversation["id"], "user_id": "alice", "is_typing": true}));
    let ended = bob_stream.next_except("presence").await;
    assert_eq!(ended.event, "typing", "no second start event for a renewal");
    assert_eq!(data(&ended)["is_typing"], false, "it ends by itself");

    app.notify("alice", "marker").await;
    let seen = until_marker(&mut alice_stream, "marker").await;
    assert!(seen.iter().all(|e| e.event != "typing"), "the typist does not hear herself: {seen:?}");

    typing(true).await.unwrap();
    assert_eq!(data(&bob_stream.next_named("typing").await)["is_typing"], true);
    app.say(&alice, &conversation, "sent").await;
    let stopped = bob_stream.next_except("presence").await;
    assert_eq!(stopped.event, "message");
    let stopped = bob_stream.next_except("presence").await;
    assert_eq!((stopped.event.as_str(), data(&stopped)["is_typing"].clone()), ("typing", json!(false)), "sending ends the indicator");
}

#[tokio::test]
async fn presence_turns_offline_after_the_grace_period_but_not_on_a_quick_reconnect() {
    let app = spawn_app_with(|settings| settings.presence_grace = Duration::from_millis(500)).await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    app.create_conversation(&alice, &["bob"]).await;
    let mut watcher = app.open_stream(&alice, None).await;
    watcher.until_unread_count().await;

    let mut bob_stream = app.open_stream(&bob, None).await;
    bob_stream.until_unread_count().await;
    let online = watcher.next_named("presence").await;
    assert_eq!(data(&online)["status"], "online");
    assert_eq!(data(&online)["user_id"], "bob");

    drop(bob_stream);
    let mut bob_again = app.open_stream(&bob, None).await;
    bob_again.until_unread_count().await;
    tokio::time::sleep(Duration::from_millis(700)).await; // past the grace period, with bob back
    app.notify("alice", "marker").await;
    let during = until_marker(&mut watcher, "marker").await;
    assert!(during.iter().all(|e| e.event != "presence"), "a quick reconnect does not flap: {during:?}");

    let (status, _) = app.post_json("/v1/presence", &bob, Some(json!({"status": "busy"}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(data(&watcher.next_named("presence").await)["status"], "busy");

    drop(bob_again);
    let offline = watcher.next_named("presence").await;
    assert_eq!(data(&offline)["status"], "offline");
    assert!(data(&offline)["last_seen_at"].is_string());

    let (_, views) = app.get_json("/v1/presence?user_ids=bob,alice,stranger", &alice).await;
    let users: Vec<_> = views.as_array().unwrap().iter().map(|v| v["user_id"].clone()).collect();
    assert_eq!(users, [json!("bob"), json!("alice")], "strangers are left out");
    assert_eq!(views[0]["status"], "offline");
    assert_eq!(views[1]["status"], "online");
    let (status, _) = app.post_json("/v1/presence", &bob, Some(json!({"status": "sleeping"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// The same race for a conversation: messages sent right after a member's
/// fresh stream answered 200 reach it while it is still reading its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_stream_gets_every_message_sent_after_its_200_even_while_it_starts() {
    let app = spawn_app().await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let conversation = app.create_conversation(&alice, &["bob"]).await;
    for round in 0..20 {
        let response = app.http.get(format!("{}/v1/stream", app.base)).bearer_auth(&bob).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut sent = Vec::new();
        for n in 0..3 {
            sent.push(app.say(&alice, &conversation, &format!("{round}:{n}")).await);
        }
        let mut stream = crate::helpers::EventStream::new(response);
        for expected in &sent {
            let event = tokio::time::timeout(crate::helpers::PATIENCE, stream.next_named("message")).await.expect("every message after the 200 arrives");
            assert_eq!(data(&event)["id"], expected["id"], "in order, none skipped");
        }
    }
}

/// Replies are stored one at a time, plain sends set-based: both take
/// their message ids from the writer, so they never collide (a reply once
/// took the database's own next id, which the next plain send took again).
#[tokio::test]
async fn replies_and_plain_sends_alternate_without_an_id_collision() {
    let app = spawn_app().await;
    let (alice, bob) = (app.token("alice"), app.token("bob"));
    let conversation = app.create_conversation(&alice, &["bob"]).await;
    let path = format!("/v1/conversations/{}/messages", conversation["id"]);
    let mut last = app.say(&alice, &conversation, "first").await;
    let mut ids = vec![last["id"].as_i64().unwrap()];
    for n in 0..5 {
        let (status, reply) = app.post_json(&path, &bob, Some(json!({"content": format!("reply {n}"), "reply_to": last["id"]}))).await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        ids.push(reply["id"].as_i64().unwrap());
        last = app.say(&alice, &conversation, &format!("plain {n}")).await;
        ids.push(last["id"].as_i64().unwrap());
    }
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "distinct, increasing ids: {ids:?}");
    let (_, page) = app.get_json(&path, &alice).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 11);
}

/// Streams opening together, members and non-members of a conversation in
/// the same batches, while a member sends without pause: a non-member's
/// start is read before (and instead of) its memberships, a member's after
/// it listens to its conversation. Every member gets an unbroken run of the
/// messages, in order, none twice, ending with the last and holding every
/// message whose sending began after its 200; no non-member gets any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_others_opening_together_while_messages_flow_each_get_exactly_theirs() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const EACH: usize = 8;
    const MESSAGES: usize = 60;
    let app = Arc::new(spawn_app().await);
    let members: Vec<String> = (0..EACH).map(|n| format!("member{n}")).collect();
    let others: Vec<String> = (0..EACH).map(|n| format!("other{n}")).collect();
    let names: Vec<&str> = members.iter().map(String::as_str).collect();
    let alice = app.token("alice");
    let conversation = app.create_conversation(&alice, &names).await;

    let begun = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (app, alice, conversation, begun) = (app.clone(), alice.clone(), conversation.clone(), begun.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for n in 0..MESSAGES {
                begun.store(n + 1, Ordering::SeqCst);
                sent.push(app.say(&alice, &conversation, &format!("m{n}")).await["id"].clone());
            }
            sent
        })
    };
    while begun.load(Ordering::SeqCst) < 5 {
        tokio::task::yield_now().await;
    }
    let opens: Vec<_> = members
        .iter()
        .chain(&others)
        .map(|user| {
            let (app, user, begun) = (app.clone(), user.clone(), begun.clone());
            tokio::spawn(async move {
                let response = app.http.get(format!("{}/v1/stream", app.base)).bearer_auth(app.token(&user)).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                // Messages whose sending began before this may or may not be in the start.
                let after_200 = begun.load(Ordering::SeqCst);
                (user, after_200, EventStream::new(response))
            })
        })
        .collect();
    let mut opened = Vec::new();
    for open in opens {
        opened.push(open.await.unwrap());
    }
    let mut sent = sender.await.unwrap();
    // Sent after every 200: each member's run ends with it.
    let last = app.say(&alice, &conversation, "end").await["id"].clone();
    sent.push(last.clone());

    for (user, after_200, mut stream) in opened {
        if user.starts_with("member") {
            let mut got = Vec::new();
            while got.last() != Some(&last) {
                got.push(data(&stream.next_named("message").await)["id"].clone());
            }
            let first = sent.iter().position(|id| *id == got[0]).expect("a message that was sent");
            assert_eq!(got, sent[first..], "{user}: an unbroken run, in order, none twice");
            assert!(first <= after_200, "{user}: every message begun after its 200 arrives (the run starts at {first}; {after_200} had begun at the 200)");
        } else {
            app.notify(&user, "marker").await;
            let before = until_marker(&mut stream, "marker").await;
            assert!(before.iter().all(|event| event.event != "message" && event.event != "conversation"), "{user} is no member: {before:?}");
        }
    }
}
