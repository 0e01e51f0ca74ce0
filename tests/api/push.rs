//! Web Push against a fake push service: a real HTTP server on port 0 that
//! records what the hub posts. The test plays the browser: it makes the
//! subscription's keys as a browser does, checks the VAPID token with the
//! hub's public key, and decrypts the payload with its private key.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU16, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, spawn_app, spawn_app_with};
use crate::webhooks::deliveries_until;

/// The subject the tests configure.
const SUBJECT: &str = "mailto:ops@example.com";

/// One push the fake service received.
#[derive(Clone, Debug)]
struct Push {
    /// The subscription's path segment: which browser it was for.
    device: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Push {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A push service on 127.0.0.1: records every push, answers `status`.
struct PushService {
    origin: String,
    received: Arc<Mutex<Vec<Push>>>,
    status: Arc<AtomicU16>,
}

#[derive(Clone)]
struct ServiceState {
    received: Arc<Mutex<Vec<Push>>>,
    status: Arc<AtomicU16>,
}

async fn receive(State(state): State<ServiceState>, Path(device): Path<String>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    state.received.lock().unwrap().push(Push { device, headers, body });
    AxumStatus::from_u16(state.status.load(Ordering::SeqCst)).unwrap()
}

impl PushService {
    async fn start() -> PushService {
        let state = ServiceState { received: Arc::default(), status: Arc::new(AtomicU16::new(201)) };
        let app = Router::new().route("/push/{device}", post(receive)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        PushService { origin, received: state.received, status: state.status }
    }

    fn endpoint(&self, device: &str) -> String {
        format!("{}/push/{device}", self.origin)
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn pushes(&self) -> Vec<Push> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `n` pushes have arrived; returns them all.
    async fn until(&self, n: usize) -> Vec<Push> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let pushes = self.pushes();
            if pushes.len() >= n {
                return pushes;
            }
            assert!(Instant::now() < deadline, "timed out waiting for push {n}; got {pushes:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A browser's side of a subscription: its P-256 key pair and auth secret.
struct Browser {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl Browser {
    fn new() -> Browser {
        Browser { secret: p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng), auth: rand::random() }
    }

    /// `PushSubscription.toJSON()` for `endpoint`.
    fn subscription(&self, endpoint: &str) -> Value {
        json!({
            "endpoint": endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(self.secret.public_key().to_encoded_point(false).as_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
    }

    /// The push's payload, decrypted as the browser would.
    fn decrypt(&self, push: &Push) -> Value {
        assert_eq!(push.header("content-encoding").as_deref(), Some("aes128gcm"));
        let plain = web_push_native::decrypt(push.body.to_vec(), &self.secret, &web_push_native::Auth::from(self.auth)).expect("the payload decrypts with the browser's key");
        serde_json::from_slice(&plain).unwrap()
    }
}

/// Subscribes `browser` at `endpoint` as `user`, with push on for `test`.
async fn subscribe(app: &TestApp, user: &str, browser: &Browser, endpoint: &str) {
    let token = app.token(user);
    let (status, body) = app.post_json("/v1/push/subscriptions", &token, Some(browser.subscription(endpoint))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let response = app.request(Method::PUT, "/v1/preferences/test", &token).json(&json!({"enabled": true, "channels": {"push": true}})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn publish(app: &TestApp, body: Value) -> Value {
    let response = app.publish_raw(&body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let answer: Value = response.json().await.unwrap();
    answer["created"][0].clone()
}

/// The push delivery of notification `id` once it settled (not pending).
async fn settled_push(app: &TestApp, id: i64, user: &str) -> Value {
    let found = deliveries_until(app, id, &app.token(user), |all| {
        all.as_array().unwrap().iter().any(|d| d["channel"] == "push" && d["status"] != "pending")
    })
    .await;
    found.as_array().unwrap().iter().find(|d| d["channel"] == "push").unwrap().clone()
}

async fn subscriptions_of(app: &TestApp, user: &str) -> usize {
    tidings::push::of_user(&app.state.db, user).await.unwrap().len()
}

async fn with_subject() -> TestApp {
    spawn_app_with(|s| s.push.subject = SUBJECT.into()).await
}

#[tokio::test]
async fn a_push_is_signed_with_vapid_encrypted_to_the_browser_and_a_410_removes_the_subscription() {
    let app = with_subject().await;
    let service = PushService::start().await;
    let browser = Browser::new();
    subscribe(&app, "alice", &browser, &service.endpoint("alice-phone")).await;
    let (status, key) = app.get_json("/v1/push/vapid_public_key", "").await;
    assert_eq!(status, StatusCode::OK, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();

    let sent = publish(&app, json!({"user_id": "alice", "type": "test", "title": "Build 7 failed", "body": "3 tests failed", "action_url": "/builds/7", "critical": true})).await;
    let push = service.until(1).await.remove(0);
    assert_eq!(push.device, "alice-phone");

    // The VAPID token: signed by the key browsers subscribe with, for this
    // push service's origin (port included), for at most a day, with a subject.
    let authorization = push.header("authorization").expect("an Authorization header");
    let (token, k) = authorization.strip_prefix("vapid t=").and_then(|rest| rest.split_once(", k=")).expect("vapid t=..., k=...");
    assert_eq!(k, key, "k= is the published public key");
    let decoding = jsonwebtoken::DecodingKey::from_ec_der(&URL_SAFE_NO_PAD.decode(&key).unwrap());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&[service.origin.as_str()]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(token, &decoding, &validation).expect("the token verifies with the public key").claims;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > now && exp <= now + 24 * 3600, "exp {exp} within 24 h of {now}");
    assert_eq!(claims["aud"], service.origin.as_str());
    assert_eq!(claims["sub"], SUBJECT);

    // RFC 8030's headers, and the payload only the browser can read.
    assert_eq!(push.header("urgency").as_deref(), Some("high"), "a critical notification is urgent");
    assert!(push.header("ttl").unwrap().parse::<u64>().unwrap() > 0);
    assert_eq!(push.header("topic"), None, "no group, no topic");
    assert!(push.body.len() <= 4096);
    assert_eq!(
        browser.decrypt(&push),
        json!({"id": sent["id"], "title": "Build 7 failed", "body": "3 tests failed", "action_url": "/builds/7", "unread_count": 1})
    );
    assert_eq!(settled_push(&app, sent["id"].as_i64().unwrap(), "alice").await["status"], "sent");

    // The browser unsubscribed at the push service: 410 Gone.
    service.answer(410);
    let next = publish(&app, json!({"user_id": "alice", "type": "test", "title": "Build 8 failed", "body": "again"})).await;
    service.until(2).await;
    let delivery = settled_push(&app, next["id"].as_i64().unwrap(), "alice").await;
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert_eq!(delivery["attempts"], 1, "a 410 is not retried: {delivery}");
    let error = delivery["last_error"].as_str().unwrap();
    assert!(error.contains("410") && error.contains("removed"), "{error}");
    assert_eq!(subscriptions_of(&app, "alice").await, 0, "the subscription is gone");

    let after = publish(&app, json!({"user_id": "alice", "type": "test", "title": "Build 9", "body": "b"})).await;
    let delivery = settled_push(&app, after["id"].as_i64().unwrap(), "alice").await;
    assert_eq!((delivery["status"].as_str(), delivery["last_error"].as_str()), (Some("skipped"), Some("the user has no push subscription")));
    assert_eq!(service.pushes().len(), 2, "nothing more was pushed");
}

#[tokio::test]
async fn a_push_service_that_is_down_or_busy_is_tried_again() {
    let app = spawn_app().await;
    let service = PushService::start().await;
    let browser = Browser::new();
    subscribe(&app, "alice", &browser, &service.endpoint("a")).await;
    service.answer(503);
    let sent = publish(&app, json!({"user_id": "alice", "type": "test", "title": "Hi", "body": "there"})).await;
    service.until(2).await;
    service.answer(429);
    service.until(3).await;
    service.answer(201);
    let delivery = settled_push(&app, sent["id"].as_i64().unwrap(), "alice").await;
    assert_eq!(delivery["status"], "sent", "{delivery}");
    assert!(delivery["attempts"].as_i64().unwrap() >= 3, "{delivery}");
    assert_eq!(subscriptions_of(&app, "alice").await, 1, "a busy push service removes nothing");
}

#[tokio::test]
async fn a_grouped_update_carries_the_same_topic_and_replaces_the_earlier_push() {
    let app = spawn_app().await;
    let service = PushService::start().await;
    let browser = Browser::new();
    subscribe(&app, "alice", &browser, &service.endpoint("a")).await;
    let first = publish(&app, json!({"user_id": "alice", "type": "test", "title": "1 new comment", "body": "Ada: hi", "group_key": "post:42:comments"})).await;
    service.until(1).await;
    let second = publish(&app, json!({"user_id": "alice", "type": "test", "title": "2 new comments", "body": "Bob: hello", "group_key": "post:42:comments"})).await;
    assert_eq!(first["id"], second["id"], "the update folds into the group");
    let pushes = service.until(2).await;
    let topics: Vec<Option<String>> = pushes.iter().map(|p| p.header("topic")).collect();
    let topic = topics[0].clone().expect("a grouped notification's push has a Topic");
    assert_eq!(topics[1].as_deref(), Some(topic.as_str()), "the update replaces the earlier push");
    assert!(topic.len() <= 32 && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{topic}");
    assert_eq!(pushes[1].header("urgency").as_deref(), Some("normal"));
    let payload = browser.decrypt(&pushes[1]);
    assert_eq!((payload["id"].clone(), payload["title"].clone(), payload["body"].clone()), (first["id"].clone(), json!("2 new comments"), json!("Bob: hello")));

    let other = publish(&app, json!({"user_id": "alice", "type": "test", "title": "Other", "body": "x", "group_key": "post:43:comments"})).await;
    assert_ne!(other["id"], first["id"]);
    let pushes = service.until(3).await;
    assert_ne!(pushes[2].header("topic").as_deref(), Some(topic.as_str()), "another group, another topic");
}

#[tokio::test]
async fn with_push_when_offline_a_user_with_an_open_stream_gets_no_push_and_one_without_does() {
    let app = spawn_app().await;
    let service = PushService::start().await;
    let (alice, bob) = (Browser::new(), Browser::new());
    subscribe(&app, "alice", &alice, &service.endpoint("alice")).await;
    subscribe(&app, "bob", &bob, &service.endpoint("bob")).await;
    let mut stream = app.open_stream(&app.token("alice"), None).await;
    stream.until_unread_count().await;

    let to_alice = publish(&app, json!({"user_id": "alice", "type": "test", "title": "For alice", "body": "a"})).await;
    let to_bob = publish(&app, json!({"user_id": "bob", "type": "test", "title": "For bob", "body": "b"})).await;
    let delivery = settled_push(&app, to_alice["id"].as_i64().unwrap(), "alice").await;
    assert_eq!(delivery["status"], "skipped", "{delivery}");
    assert!(delivery["last_error"].as_str().unwrap().contains("stream open"), "{delivery}");
    assert_eq!(settled_push(&app, to_bob["id"].as_i64().unwrap(), "bob").await["status"], "sent");
    let pushes = service.pushes();
    assert_eq!(pushes.iter().map(|p| p.device.as_str()).collect::<Vec<_>>(), ["bob"]);
    assert_eq!(bob.decrypt(&pushes[0])["title"], "For bob");
    drop(stream);
}

#[tokio::test]
async fn with_push_when_always_a_user_with_an_open_stream_is_pushed_too() {
    let app = spawn_app_with(|s| s.push.when = tidings::push::PushWhen::Always).await;
    let service = PushService::start().await;
    let browser = Browser::new();
    subscribe(&app, "alice", &browser, &service.endpoint("alice")).await;
    let mut stream = app.open_stream(&app.token("alice"), None).await;
    stream.until_unread_count().await;
    publish(&app, json!({"user_id": "alice", "type": "test", "title": "Hi", "body": "b"})).await;
    assert_eq!(browser.decrypt(&service.until(1).await[0])["title"], "Hi");
}

#[tokio::test]
async fn a_long_body_is_cut_to_fit_4_kib_and_the_title_is_kept_whole() {
    let app = spawn_app().await;
    let service = PushService::start().await;
    let browser = Browser::new();
    subscribe(&app, "alice", &browser, &service.endpoint("a")).await;
    let title = "T".repeat(255);
    publish(&app, json!({"user_id": "alice", "type": "test", "title": title, "body": "word ".repeat(2000)})).await;
    let push = service.until(1).await.remove(0);
    assert!(push.body.len() <= 4096, "{}", push.body.len());
    let payload = browser.decrypt(&push);
    assert_eq!(payload["title"], title.as_str());
    let body = payload["body"].as_str().unwrap();
    assert!(body.ends_with('…') && body.len() > 3000, "{}", body.len());
}

#[tokio::test]
async fn several_devices_of_a_user_each_get_the_push() {
    let app = spawn_app().await;
    let service = PushService::start().await;
    let (phone, laptop) = (Browser::new(), Browser::new());
    subscribe(&app, "alice", &phone, &service.endpoint("phone")).await;
    subscribe(&app, "alice", &laptop, &service.endpoint("laptop")).await;
    publish(&app, json!({"user_id": "alice", "type": "test", "title": "Both", "body": "b"})).await;
    let mut pushes = service.until(2).await;
    pushes.sort_by(|a, b| a.device.cmp(&b.device));
    assert_eq!(laptop.decrypt(&pushes[0])["title"], "Both");
    assert_eq!(phone.decrypt(&pushes[1])["title"], "Both");
}

#[tokio::test]
async fn subscriptions_are_checked_field_by_field_and_deleted_by_endpoint() {
    let app = spawn_app_with(|s| s.push.allow_insecure = false).await;
    let token = app.token("alice");
    let browser = Browser::new();
    let endpoint = "https://push.example.com/send/abc";
    let post = |body: Value| app.post_json("/v1/push/subscriptions", &token, Some(body));

    for (bad, field) in [
        (browser.subscription("http://push.example.com/send/abc"), "endpoint"),
        (browser.subscription("https://127.0.0.1/send/abc"), "endpoint"),
        (browser.subscription("not a url"), "endpoint"),
        (json!({"endpoint": endpoint, "keys": {"p256dh": "BAAA", "auth": browser.subscription(endpoint)["keys"]["auth"]}}), "keys.p256dh"),
        (json!({"endpoint": endpoint, "keys": {"p256dh": browser.subscription(endpoint)["keys"]["p256dh"], "auth": "c2hvcnQ"}}), "keys.auth"),
    ] {
        let (status, body) = post(bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad} → {body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let (status, body) = post(json!({"endpoint": endpoint})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    let response = app.http.post(format!("{}/v1/push/subscriptions", app.base)).json(&browser.subscription(endpoint)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(subscriptions_of(&app, "alice").await, 0, "bad input stored nothing");

    let (status, _) = post(browser.subscription(endpoint)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = post(browser.subscription(endpoint)).await;
    assert_eq!(status, StatusCode::CREATED, "subscribing again is fine");
    assert_eq!(subscriptions_of(&app, "alice").await, 1, "one endpoint, one row");

    // The same browser signed in as bob: the endpoint is his now.
    let (status, _) = app.post_json("/v1/push/subscriptions", &app.token("bob"), Some(browser.subscription(endpoint))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!((subscriptions_of(&app, "alice").await, subscriptions_of(&app, "bob").await), (0, 1));

    // Alice cannot remove bob's; bob can.
    let delete = |token: String| app.request(Method::DELETE, "/v1/push/subscriptions", &token).json(&json!({"endpoint": endpoint})).send();
    assert_eq!(delete(token.clone()).await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(subscriptions_of(&app, "bob").await, 1);
    assert_eq!(delete(app.token("bob")).await.unwrap().status(), StatusCode::NO_CONTENT);
    assert_eq!(subscriptions_of(&app, "bob").await, 0);
}

#[tokio::test]
async fn the_vapid_public_key_is_public_and_an_uncompressed_p256_point() {
    let app = spawn_app().await;
    let response = app.http.get(format!("{}/v1/push/vapid_public_key", app.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let point = URL_SAFE_NO_PAD.decode(body["key"].as_str().unwrap()).unwrap();
    assert_eq!((point.len(), point[0]), (65, 4));
    assert!(p256::PublicKey::from_sec1_bytes(&point).is_ok());

    let off = spawn_app_with(|s| s.push.vapid = None).await;
    let (status, body) = off.get_json("/v1/push/vapid_public_key", "").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}

#[tokio::test]
async fn the_generated_vapid_key_is_kept_beside_the_database_readable_by_its_owner_only() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/hub.db?mode=rwc", dir.path().display());
    let settings = |extra: &[&str]| {
        let mut args = vec!["tidings", "--database-url", url.as_str(), "--jwt-secret", "0123456789abcdef0123"];
        args.extend_from_slice(extra);
        let cli = tidings::config::Cli::try_parse_from(args).unwrap();
        cli.serve.into_settings().unwrap()
    };
    let first = settings(&[]).push.vapid.unwrap();
    let again = settings(&[]).push.vapid.unwrap();
    assert_eq!(first.public_key(), again.public_key(), "the key survives a restart");
    let file = dir.path().join("hub.db.vapid");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let given = settings(&["--vapid-private-key", "RS0WdYWWo1HajXg3NZR1olzCf31i-ZBGDkFyCs7j1jw"]).push.vapid.unwrap();
    assert_ne!(given.public_key(), first.public_key(), "a configured key wins over the file");
    let bad_subject = tidings::config::Cli::try_parse_from(["tidings", "--database-url", url.as_str(), "--jwt-secret", "0123456789abcdef0123", "--vapid-subject", "ops@example.com"]);
    assert!(bad_subject.unwrap().serve.into_settings().is_err(), "a subject must be a mailto: or https: URL");
}

#[tokio::test]
async fn a_notification_read_before_its_push_goes_out_is_not_pushed() {
    // A retry a second or more away: the read lands well before it.
    let app = spawn_app_with(|s| s.outbox.retry_base = Duration::from_secs(2)).await;
    let service = PushService::start().await;
    let browser = Browser::new();
    subscribe(&app, "alice", &browser, &service.endpoint("a")).await;
    // The push service is down, so the push waits for a retry...
    service.answer(503);
    let sent = publish(&app, json!({"user_id": "alice", "type": "test", "title": "Hi", "body": "b"})).await;
    service.until(1).await;
    // ...and meanwhile alice reads it on another device.
    let id = sent["id"].as_i64().unwrap();
    let (status, _) = app.post_json(&format!("/v1/notifications/{id}/read"), &app.token("alice"), None).await;
    assert_eq!(status, StatusCode::OK);
    service.answer(201);
    let delivery = settled_push(&app, id, "alice").await;
    assert_eq!((delivery["status"].as_str(), delivery["last_error"].as_str()), (Some("skipped"), Some("read before the push was due")), "{delivery}");
    assert_eq!(service.pushes().len(), 1, "only the refused attempt reached the push service");
}
