//! The write engine: group commit with a savepoint per job, set-based plain
//! publishes, unread counters, back-pressure, batch publishing, and what a
//! crash leaves behind.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use rand::Rng;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::{Value, json};
use tidings::domain::{DomainError, Topic};
use tokio::sync::oneshot;

use crate::helpers::{EventStream, PATIENCE, data, spawn_app, spawn_app_with, spawn_node_process};

/// Occupies the writer with a job that waits for `release`; returns once
/// the writer is inside it, so whatever is queued next forms one batch.
async fn hold_the_writer(app: &crate::helpers::TestApp) -> (oneshot::Sender<()>, tokio::task::JoinHandle<Result<(), DomainError>>) {
    let (release, released) = oneshot::channel::<()>();
    let (started, inside) = oneshot::channel::<()>();
    let writer = app.state.writer.clone();
    let holder = tokio::spawn(async move {
        writer
            .run(move |_write| {
                Box::pin(async move {
                    let _ = started.send(());
                    let _ = released.await;
                    Ok(())
                })
            })
            .await
    });
    tokio::time::timeout(PATIENCE, inside).await.expect("the writer takes the holding job").unwrap();
    (release, holder)
}

/// A job that appends `notification.deleted` for `id` on alice's topic, then
/// fails if asked to: what a job that breaks a rule after writing looks like.
fn append_job(writer: &Arc<tidings::writer::Writer>, id: i64, fail: bool) -> tokio::task::JoinHandle<Result<(), DomainError>> {
    let writer = writer.clone();
    tokio::spawn(async move {
        writer
            .run(move |write| {
                Box::pin(async move {
                    let alice = Topic::from_stored("u:alice");
                    write.append(&alice, "notification.deleted", &json!({ "id": id })).await?;
                    if fail {
                        return Err(DomainError::invalid_field("id", "refused after writing"));
                    }
                    Ok(())
                })
            })
            .await
    })
}

async fn scalar(url: &str, sql: &str) -> i64 {
    let db = Database::connect(url).await.unwrap();
    let backend = db.get_database_backend();
    let row = db.query_one_raw(Statement::from_string(backend, sql.to_owned())).await.unwrap().unwrap();
    let value: i64 = row.try_get_by_index(0).unwrap();
    db.close().await.ok();
    value
}

/// The user's unread, undeleted notifications that have not expired,
/// judged here in Rust rather than by the database's clock and formats.
async fn unexpired_unread(url: &str, user: &str) -> usize {
    let db = Database::connect(url).await.unwrap();
    let backend = db.get_database_backend();
    let sql = format!("SELECT expires_at FROM notifications WHERE user_id = '{user}' AND read_at IS NULL AND deleted_at IS NULL");
    let rows = db.query_all_raw(Statement::from_string(backend, sql)).await.unwrap();
    let now = chrono::Utc::now();
    let visible = rows
        .iter()
        .filter(|row| row.try_get_by_index::<Option<chrono::DateTime<chrono::Utc>>>(0).unwrap().is_none_or(|at| at > now))
        .count();
    db.close().await.ok();
    visible
}

#[tokio::test]
async fn a_batch_that_mixes_a_failing_job_with_good_ones_commits_the_good_ones_and_sends_nothing_of_the_failed_one() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;

    let (release, holder) = hold_the_writer(&app).await;
    let writer = app.state.writer.clone();
    let good_before = append_job(&writer, 1001, false);
    let failing = append_job(&writer, 1002, true);
    let good_after = append_job(&writer, 1003, false);
    // All three are queued behind the holder, so they commit as one batch.
    let queued = async {
        while app.state.writer.stats().queued.load(std::sync::atomic::Ordering::Relaxed) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(PATIENCE, queued).await.expect("the three jobs are queued");
    let batches_before = app.state.writer.stats().batches.load(std::sync::atomic::Ordering::Relaxed);
    release.send(()).unwrap();
    holder.await.unwrap().unwrap();

    good_before.await.unwrap().expect("the first good job commits");
    let refused = failing.await.unwrap().expect_err("the failing job gets its own error");
    assert!(matches!(refused, DomainError::Invalid { .. }), "{refused:?}");
    good_after.await.unwrap().expect("the last good job commits");
    let batches_after = app.state.writer.stats().batches.load(std::sync::atomic::Ordering::Relaxed);
    assert!(batches_after - batches_before <= 2, "the holder and the three jobs took at most two transactions");

    let first = stream.next_named("notification.deleted").await;
    let second = stream.next_named("notification.deleted").await;
    assert_eq!(data(&first)["id"], 1001);
    assert_eq!(data(&second)["id"], 1003, "the failed job's event is never sent");
    assert!(first.id.parse::<i64>().unwrap() < second.id.parse::<i64>().unwrap());

    let stored = scalar(&app.database.url, "SELECT COUNT(*) FROM events WHERE event = 'notification.deleted'").await;
    assert_eq!(stored, 2, "nothing of the failed job is stored");
}

#[tokio::test]
async fn a_full_write_queue_answers_503_with_retry_after_and_the_queued_writes_still_commit() {
    let app = spawn_app_with(|settings| settings.writer.queue_capacity = 4).await;
    let (release, holder) = hold_the_writer(&app).await;
    let queued: Vec<_> = (0..4).map(|n| append_job(&app.state.writer, n, false)).collect();
    let full = async {
        while app.state.writer.stats().queued.load(std::sync::atomic::Ordering::Relaxed) < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(PATIENCE, full).await.expect("the queue fills");

    let response = app.publish_raw(&json!({"user_id": "bob", "type": "test", "title": "one too many"})).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(app.state.writer.stats().refused.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    release.send(()).unwrap();
    holder.await.unwrap().unwrap();
    for job in queued {
        job.await.unwrap().expect("a queued write commits once the writer is free");
    }
    let (status, page) = app.get_json("/v1/notifications", &app.token("bob")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"], json!([]), "the refused publish stored nothing");
    // And the writer takes new work again.
    app.notify("bob", "after").await;
}

#[tokio::test]
async fn unread_counters_equal_a_count_of_the_rows_after_a_random_mix_of_writes() {
    let app = Arc::new(spawn_app().await);
    let users = ["ann", "ben", "cat", "dan"];
    let mut rng = rand::rng();
    let soon = || (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    for step in 0..160 {
        let user = users[rng.random_range(0..users.len())];
        let token = app.token(user);
        match rng.random_range(0..10) {
            0..=3 => {
                app.notify(user, &format!("plain {step}")).await;
            }
            4 => {
                let body = json!({"user_ids": users, "type": "digest", "title": format!("to all {step}")});
                assert_eq!(app.publish_raw(&body).await.status(), StatusCode::CREATED);
            }
            5 => {
                let body = json!({"user_id": user, "type": "comment", "title": "grouped", "group_key": format!("g{}", step % 3)});
                assert_eq!(app.publish_raw(&body).await.status(), StatusCode::CREATED);
            }
            6 => {
                let body = json!({"user_id": user, "type": "flash", "title": "short-lived", "expires_at": soon()});
                assert_eq!(app.publish_raw(&body).await.status(), StatusCode::CREATED);
            }
            7 | 8 => {
                let (_, page) = app.get_json("/v1/notifications?unread_only=true", &token).await;
                if let Some(item) = page["items"].as_array().and_then(|items| items.first()) {
                    let action = if rng.random_bool(0.5) { "read" } else { "click" };
                    app.post_json(&format!("/v1/notifications/{}/{action}", item["id"]), &token, None).await;
                }
                let (_, page) = app.get_json("/v1/notifications", &token).await;
                if let Some(item) = page["items"].as_array().and_then(|items| items.last()) {
                    let response = app.request(reqwest::Method::DELETE, &format!("/v1/notifications/{}", item["id"]), &token).send().await.unwrap();
                    // A short-lived one may expire between the list and the
                    // delete (on a loaded machine); then it is gone: 404.
                    let expired = item["expires_at"].as_str().and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok()).is_some_and(|at| at <= chrono::Utc::now());
                    if !(expired && response.status() == StatusCode::NOT_FOUND) {
                        assert_eq!(response.status(), StatusCode::NO_CONTENT);
                    }
                }
            }
            _ => {
                app.post_json("/v1/notifications/read_all", &token, None).await;
            }
        }
    }
    // Let every short-lived notification expire, then compare.
    let last_expiry = chrono::Utc::now() + chrono::Duration::milliseconds(1600);
    while chrono::Utc::now() < last_expiry {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for user in users {
        let stored = scalar(&app.database.url, &format!("SELECT COALESCE((SELECT count FROM unread_counters WHERE user_id = '{user}'), 0)")).await;
        let rows = scalar(&app.database.url, &format!("SELECT COUNT(*) FROM notifications WHERE user_id = '{user}' AND read_at IS NULL AND deleted_at IS NULL")).await;
        assert_eq!(stored, rows, "{user}'s stored counter equals its unread, undeleted rows");
        let visible = unexpired_unread(&app.database.url, user).await;
        let (_, answer) = app.get_json("/v1/notifications/unread_count", &app.token(user)).await;
        assert_eq!(answer["count"], visible, "{user}'s unread count leaves out expired ones");
    }
}

#[tokio::test]
async fn a_batch_publish_answers_each_item_alone_and_a_failed_item_stores_nothing() {
    let app = spawn_app().await;
    let items = json!([
        {"user_id": "alice", "type": "job.done", "title": "first"},
        {"user_id": "alice", "type": "bad type!", "title": "refused"},
        {"user_ids": ["bob", "carol"], "type": "job.done", "title": "second"},
        {"user_id": "bob", "type": "job.done", "title": "grouped", "group_key": "jobs"},
        {"user_id": "carol", "type": "job.done"},
        {"user_id": "bob", "type": "job.done", "title": "grouped again", "group_key": "jobs"}
    ]);
    let response = app
        .http
        .post(format!("{}/v1/notifications/batch", app.base))
        .bearer_auth(app.publisher_token())
        .json(&json!({ "items": items }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    assert_eq!(results[0]["created"][0]["title"], "first");
    assert_eq!(results[1]["error"]["code"], "invalid_request");
    assert_eq!(results[1]["error"]["field"], "type");
    assert_eq!(results[2]["created"].as_array().unwrap().len(), 2);
    assert_eq!(results[3]["created"][0]["count"], 1);
    assert_eq!(results[4]["error"]["code"], "invalid_request", "a missing title is refused");
    assert_eq!(results[5]["created"][0]["count"], 2, "the second grouped item folds into the first");

    let titles = |page: &Value| page["items"].as_array().unwrap().iter().map(|n| n["title"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let (_, alice) = app.get_json("/v1/notifications", &app.token("alice")).await;
    assert_eq!(titles(&alice), ["first"], "the refused item stored nothing");
    let (_, bob) = app.get_json("/v1/notifications", &app.token("bob")).await;
    assert_eq!(titles(&bob), ["grouped again", "second"]);

    // Over 1,000 items, or none, is refused whole.
    for size in [0, 1001] {
        let items: Vec<Value> = (0..size).map(|n| json!({"user_id": "dave", "type": "t", "title": format!("{n}")})).collect();
        let response = app
            .http
            .post(format!("{}/v1/notifications/batch", app.base))
            .bearer_auth(app.publisher_token())
            .json(&json!({ "items": items }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["field"], "items");
    }
    let (_, dave) = app.get_json("/v1/notifications", &app.token("dave")).await;
    assert_eq!(dave["items"], json!([]));
    // Users without the publish scope cannot batch.
    let response = app.http.post(format!("{}/v1/notifications/batch", app.base)).bearer_auth(app.token("mallory")).json(&json!({"items": [{"user_id": "x", "type": "t", "title": "t"}]})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_batch_with_an_idempotency_key_is_stored_once() {
    let app = spawn_app().await;
    let body = json!({"items": [{"user_id": "erin", "type": "t", "title": "once"}, {"user_id": "erin", "type": "t", "title": "twice?"}]});
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = app
            .http
            .post(format!("{}/v1/notifications/batch", app.base))
            .bearer_auth(app.publisher_token())
            .header("idempotency-key", "batch-1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        answers.push((response.headers().get("idempotent-replayed").is_some(), response.json::<Value>().await.unwrap()));
    }
    assert!(!answers[0].0 && answers[1].0, "the retry is marked as replayed");
    assert_eq!(answers[0].1, answers[1].1);
    let (_, page) = app.get_json("/v1/notifications", &app.token("erin")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
}

/// Single and batch publishers at once, while the subscriber drops and
/// resumes: the exact set, in id order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_and_batch_publishers_while_a_subscriber_drops_and_resumes_deliver_all_once_in_order() {
    let app = Arc::new(spawn_app().await);
    let token = app.token("alice");
    let mut stream = app.open_stream(&token, None).await;
    stream.until_unread_count().await;
    let mut last_id = stream.last_id.clone();

    let mut publishers = Vec::new();
    for publisher in 0..4 {
        let app = app.clone();
        publishers.push(tokio::spawn(async move {
            for n in 0..50 {
                app.notify("alice", &format!("s{publisher}:{n}")).await;
            }
        }));
    }
    for publisher in 0..4 {
        let app = app.clone();
        publishers.push(tokio::spawn(async move {
            for batch in 0..5 {
                let items: Vec<Value> = (0..10)
                    .map(|k| json!({"user_ids": ["alice", format!("other{publisher}")], "type": "test", "title": format!("b{publisher}:{}", batch * 10 + k)}))
                    .collect();
                let response = app
                    .http
                    .post(format!("{}/v1/notifications/batch", app.base))
                    .bearer_auth(app.publisher_token())
                    .json(&json!({ "items": items }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            }
        }));
    }

    let mut received: Vec<(i64, String)> = Vec::new();
    while received.len() < 400 {
        let mut take = rand::rng().random_range(1..=30);
        while take > 0 && received.len() < 400 {
            let event = tokio::time::timeout(PATIENCE, stream.next()).await.expect("events keep coming").expect("the stream stays open");
            assert_ne!(event.event, "reset");
            if event.event == "notification" {
                received.push((event.id.parse().unwrap(), data(&event)["title"].as_str().unwrap().to_owned()));
                take -= 1;
            }
            if stream.last_id.is_some() {
                last_id = stream.last_id.clone();
            }
        }
        drop(stream);
        stream = app.open_stream(&token, last_id.as_deref()).await;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    let (extra, count) = stream.until_unread_count().await;
    assert!(extra.iter().all(|e| e.event != "notification"), "nothing beyond the 400");
    assert_eq!(count, 400);
    let ids: Vec<i64> = received.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids strictly increase");
    let titles: BTreeSet<&str> = received.iter().map(|(_, t)| t.as_str()).collect();
    let expected: BTreeSet<String> = (0..4).flat_map(|p| (0..50).flat_map(move |n| [format!("s{p}:{n}"), format!("b{p}:{n}")])).collect();
    assert_eq!(titles, expected.iter().map(String::as_str).collect(), "exactly the 400, once each");
    let mut next: HashMap<&str, u32> = HashMap::new();
    for (_, title) in &received {
        let (publisher, n) = title.split_once(':').unwrap();
        let expected_n = next.entry(publisher).or_insert(0);
        assert_eq!(n.parse::<u32>().unwrap(), *expected_n, "each publisher's order is kept");
        *expected_n += 1;
    }
}

/// SIGKILL while 32 publishers run: every acknowledged publish survives
/// with its event, nothing is half-written, and a stream resuming from the
/// start sees each notification once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_write_keeps_every_acknowledged_publish_and_leaves_nothing_half_written() {
    if std::env::var_os(crate::helpers::POSTGRES_ENV).is_some() {
        // The crash is about the SQLite file; the PostgreSQL run covers a
        // killed node in the cluster tests.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/tidings.db?mode=rwc", dir.path().display());
    let node = spawn_node_process(&[("TIDINGS_DATABASE_URL", &url), ("TIDINGS_RECIPIENT_RATE_PER_MINUTE", "1000000"), ("TIDINGS_CLIENT_BURST", "1000000"), ("TIDINGS_CLIENT_RATE_PER_SECOND", "1000000")]).await;
    let keys = tidings::auth::JwtKeys::new(&tidings::auth::keys::KeySource::Secret(crate::helpers::SECRET.to_vec().into()), None).unwrap();
    let publisher = keys.mint("backend", Some("publish"), Duration::from_secs(3600)).unwrap();
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for p in 0..32 {
        let (http, base, token, acknowledged) = (http.clone(), node.base.clone(), publisher.clone(), acknowledged.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let body = json!({"user_id": format!("u{}", p % 4), "type": "crash", "title": format!("{p}:{n}")});
                let Ok(response) = http.post(format!("{base}/v1/notifications")).bearer_auth(&token).json(&body).send().await else { break };
                if response.status() != StatusCode::CREATED {
                    break;
                }
                let Ok(answer) = response.json::<Value>().await else { break };
                acknowledged.lock().unwrap().push(answer["created"][0]["id"].as_i64().unwrap());
            }
        }));
    }
    let enough = async {
        while acknowledged.lock().unwrap().len() < 1500 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), enough).await.expect("publishes are acknowledged");
    let mut node = node;
    node.child.start_kill().unwrap();
    node.child.wait().await.unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let acknowledged: BTreeSet<i64> = acknowledged.lock().unwrap().iter().copied().collect();

    let restarted = spawn_node_process(&[("TIDINGS_DATABASE_URL", &url)]).await;
    let db = Database::connect(&url).await.unwrap();
    let backend = DbBackend::Sqlite;
    let rows = db.query_all_raw(Statement::from_string(backend, "SELECT id, event_id FROM notifications".to_owned())).await.unwrap();
    let mut stored: HashMap<i64, i64> = HashMap::new();
    for row in rows {
        stored.insert(row.try_get_by_index(0).unwrap(), row.try_get_by_index(1).unwrap());
    }
    let events = db.query_all_raw(Statement::from_string(backend, "SELECT id, data FROM events WHERE event = 'notification'".to_owned())).await.unwrap();
    let mut carried: HashMap<i64, i64> = HashMap::new();
    for row in events {
        let id: i64 = row.try_get_by_index(0).unwrap();
        let data: String = row.try_get_by_index(1).unwrap();
        carried.insert(serde_json::from_str::<Value>(&data).unwrap()["id"].as_i64().unwrap(), id);
    }
    for id in &acknowledged {
        assert!(stored.contains_key(id), "acknowledged notification {id} survived the crash");
    }
    assert_eq!(stored.len(), carried.len(), "as many notification events as notifications");
    for (id, event_id) in &stored {
        assert_eq!(carried.get(id), Some(event_id), "notification {id} has exactly its event");
    }

    // A stream of one user from the very start: each of their notifications once.
    let user_token = keys.mint("u1", None, Duration::from_secs(3600)).unwrap();
    let response = reqwest::Client::new().get(format!("{}/v1/stream", restarted.base)).bearer_auth(&user_token).header("last-event-id", "0").send().await.unwrap();
    let mut stream = EventStream::new(response);
    let (events, count) = stream.until_unread_count().await;
    let ids: Vec<i64> = events.iter().filter(|e| e.event == "notification").map(|e| data(e)["id"].as_i64().unwrap()).collect();
    let expected = scalar(&url, "SELECT COUNT(*) FROM notifications WHERE user_id = 'u1'").await;
    assert_eq!(ids.len() as i64, expected, "every stored notification of u1 replays");
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "none twice");
    assert_eq!(count as i64, expected);
    db.close().await.ok();
}
