//! Webhooks: registration, Standard Webhooks signatures, retries with one
//! `webhook-id`, and the delivery's state, against a real HTTP receiver
//! started by the test.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, spawn_app};

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    /// The `webhook-id` header.
    pub fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_owned()
    }
}

/// A real HTTP endpoint on port 0 that records every request and answers
/// what `answer` says for the n-th (0-based) request with a given
/// `webhook-id`.
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

type Answer = Arc<dyn Fn(usize) -> u16 + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    answer: Answer,
    delay: Duration,
}

/// Records the request as it arrives (so a request in flight when its
/// sender dies is on record), then answers after the delay.
async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let seen = {
        let mut received = state.received.lock().unwrap();
        let seen = received.iter().filter(|r| r.id() == id).count();
        received.push(Received { headers, body, at: Instant::now() });
        seen
    };
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    AxumStatus::from_u16((state.answer)(seen)).unwrap()
}

impl Receiver {
    /// Starts a receiver that answers `answer(n)` to the n-th attempt of an
    /// id, after `delay`.
    pub async fn start(answer: impl Fn(usize) -> u16 + Send + Sync + 'static, delay: Duration) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState { received: received.clone(), answer: Arc::new(answer), delay };
        let app = Router::new().route("/hook", post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, received }
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Requests received per `webhook-id`.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.all() {
            *counts.entry(r.id()).or_insert(0) += 1;
        }
        counts
    }

    /// Waits until `condition` holds of what was received.
    pub async fn until(&self, what: &str, condition: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + PATIENCE * 4;
        loop {
            if condition(&self.all()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Registers `url` for `types` as the operator; the endpoint's answer.
pub async fn register(app: &TestApp, url: &str, types: Option<&[&str]>) -> Value {
    let mut body = json!({"url": url});
    if let Some(types) = types {
        body["types"] = json!(types);
    }
    let (status, webhook) = app.post_json("/v1/webhooks", &app.admin_token(), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{webhook}");
    webhook
}

/// Waits until the notification's deliveries satisfy `done`; returns them.
pub async fn deliveries_until(app: &TestApp, id: i64, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, found) = app.get_json(&format!("/v1/notifications/{id}/deliveries"), token).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        if done(&found) {
            return found;
        }
        assert!(Instant::now() < deadline, "deliveries never settled: {found}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn webhooks_need_the_admin_scope_and_an_http_url() {
    let app = spawn_app().await;
    let (status, _) = app.post_json("/v1/webhooks", &app.publisher_token(), Some(json!({"url": "http://example.com/hook"}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for bad in ["ftp://example.com/hook", "javascript:alert(1)", "/relative", "not a url"] {
        let (status, body) = app.post_json("/v1/webhooks", &app.admin_token(), Some(json!({"url": bad}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["field"], "url");
    }
    let (status, body) = app.post_json("/v1/webhooks", &app.admin_token(), Some(json!({"url": "https://example.com/h", "types": ["Bad Type"]}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "types");
    let (_, list) = app.get_json("/v1/webhooks", &app.admin_token()).await;
    assert_eq!(list, json!([]), "refused requests store nothing");

    let created = register(&app, "https://example.com/hook", Some(&["order.shipped"])).await;
    assert!(created["id"].as_str().unwrap().starts_with("wh_"));
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["types"], json!(["order.shipped"]));
    let (_, list) = app.get_json("/v1/webhooks", &app.admin_token()).await;
    assert_eq!(list, json!([created]));
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    let deleted = app.request(reqwest::Method::DELETE, &path, &app.admin_token()).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = app.request(reqwest::Method::DELETE, &path, &app.admin_token()).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_receiver_failing_twice_sees_three_signed_attempts_with_one_webhook_id_and_the_delivery_ends_sent() {
    let app = spawn_app().await;
    let receiver = Receiver::start(|n| if n < 2 { 500 } else { 204 }, Duration::ZERO).await;
    let webhook = register(&app, &receiver.url, None).await;
    let contact = json!({"email": "alice@example.com", "locale": "en", "time_zone": "Europe/Paris"});
    let (status, _) = crate::outbox::put_contact(&app, "alice", &contact).await;
    assert_eq!(status, StatusCode::OK);

    let notification = app.notify("alice", "Your order shipped").await;
    let id = notification["id"].as_i64().unwrap();
    let deliveries = deliveries_until(&app, id, &app.token("alice"), |d| d[0]["status"] == "sent").await;
    assert_eq!(deliveries.as_array().unwrap().len(), 1);
    assert_eq!(deliveries[0]["channel"], "webhook");
    assert_eq!(deliveries[0]["attempts"], 3);
    assert_eq!(deliveries[0]["last_error"], Value::Null, "a delivered row keeps no error");

    let attempts = receiver.all();
    assert_eq!(attempts.len(), 3, "two failures, then the success");
    let ids: std::collections::HashSet<String> = attempts.iter().map(Received::id).collect();
    assert_eq!(ids.len(), 1, "one webhook-id across retries: {ids:?}");
    let verifier = standardwebhooks::Webhook::new(webhook["secret"].as_str().unwrap()).unwrap();
    for attempt in &attempts {
        verifier.verify(&attempt.body, &attempt.headers).expect("every attempt carries a valid signature");
    }
    assert!(attempts[1].at > attempts[0].at && attempts[2].at > attempts[1].at);
    let payload: Value = serde_json::from_slice(&attempts[2].body).unwrap();
    assert_eq!(payload["type"], "notification.created");
    assert_eq!(payload["data"]["notification"]["title"], "Your order shipped");
    assert_eq!(payload["data"]["notification"]["id"], id);
    assert_eq!(payload["data"]["contact"], json!({"email": "alice@example.com", "locale": "en", "time_zone": "Europe/Paris"}));

    // The owner and backends see the deliveries; another user does not.
    let (status, _) = app.get_json(&format!("/v1/notifications/{id}/deliveries"), &app.token("mallory")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get_json(&format!("/v1/notifications/{id}/deliveries"), &app.publisher_token()).await;
    assert_eq!(status, StatusCode::OK);

    // Clicked and counted per channel.
    app.post_json(&format!("/v1/notifications/{id}/click"), &app.token("alice"), None).await;
    let (_, stats) = app.get_json("/v1/stats/notifications", &app.publisher_token()).await;
    assert_eq!(stats[0]["sent"], 1, "existing fields stay: {stats}");
    assert_eq!(stats[0]["channels"]["webhook"], json!({"sent": 1, "failed": 0, "clicked": 1}));
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_ends_failed_with_its_last_error() {
    let app = spawn_app_with_attempts(3).await;
    let receiver = Receiver::start(|_| 503, Duration::ZERO).await;
    register(&app, &receiver.url, None).await;
    let id = app.notify("alice", "doomed").await["id"].as_i64().unwrap();
    let deliveries = deliveries_until(&app, id, &app.publisher_token(), |d| d[0]["status"] == "failed").await;
    assert_eq!(deliveries[0]["attempts"], 3);
    assert!(deliveries[0]["last_error"].as_str().unwrap().contains("503"), "{deliveries}");
    assert_eq!(receiver.all().len(), 3, "no attempt beyond the limit");
    let (_, stats) = app.get_json("/v1/stats/notifications", &app.publisher_token()).await;
    assert_eq!(stats[0]["channels"]["webhook"]["failed"], 1);
}

async fn spawn_app_with_attempts(attempts: u32) -> TestApp {
    crate::helpers::spawn_app_with(|settings| settings.outbox.max_attempts = attempts).await
}

#[tokio::test]
async fn only_endpoints_that_want_the_type_and_users_who_want_webhooks_get_deliveries() {
    let app = spawn_app().await;
    let receiver = Receiver::start(|_| 204, Duration::ZERO).await;
    register(&app, &receiver.url, Some(&["order.shipped"])).await;
    let publish = |user: &str, kind: &str| json!({"user_id": user, "type": kind, "title": "t"});

    let other = app.publish_raw(&publish("alice", "comment.created")).await.json::<Value>().await.unwrap();
    let other_id = other["created"][0]["id"].as_i64().unwrap();
    let (_, none) = app.get_json(&format!("/v1/notifications/{other_id}/deliveries"), &app.publisher_token()).await;
    assert_eq!(none, json!([]), "the endpoint does not want this type");

    let bob = app.token("bob");
    let off = app
        .request(reqwest::Method::PUT, "/v1/preferences/order.shipped", &bob)
        .json(&json!({"enabled": true, "channels": {"webhook": false}}))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), StatusCode::OK);
    let both = app.publish_raw(&json!({"user_ids": ["alice", "bob"], "type": "order.shipped", "title": "t", "group_key": "g"})).await.json::<Value>().await.unwrap();
    let (alice_id, bob_id) = (both["created"][0]["id"].as_i64().unwrap(), both["created"][1]["id"].as_i64().unwrap());
    deliveries_until(&app, alice_id, &app.publisher_token(), |d| d[0]["status"] == "sent").await;
    let (_, bobs) = app.get_json(&format!("/v1/notifications/{bob_id}/deliveries"), &app.publisher_token()).await;
    assert_eq!(bobs, json!([]), "bob turned webhooks off for this type");
    assert_eq!(receiver.all().len(), 1);
}
