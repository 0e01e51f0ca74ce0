//! `spawn_app()` and `TestApp`: the real server on port 0 with a fresh SQLite
//! file, and a client that speaks the domain's words.

use std::{pin::Pin, sync::Arc, time::Duration};

use eventsource_stream::{Event as SseEvent, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tidings::{
    AppState, Application, Settings,
    auth::{JwtKeys, keys::KeySource},
    stream::StreamSettings,
};
use tokio::{sync::oneshot, task::JoinHandle};

/// The HS256 secret every test server uses.
pub const SECRET: &[u8] = b"integration-test-secret-0123456789";

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    /// The separate metrics listener's address, when configured.
    pub metrics_addr: Option<std::net::SocketAddr>,
    keys: Arc<JwtKeys>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// The database, shared with a server restarted on the same data.
    pub database: Arc<TestDatabase>,
}

/// The environment variable that switches the suite to PostgreSQL: a server
/// URL such as `postgres://postgres@127.0.0.1:5432`. Each test then gets a
/// database of its own, dropped when the test ends.
pub const POSTGRES_ENV: &str = "TIDINGS_TEST_POSTGRES";

/// A test's own database: a SQLite file in a temporary folder, or a fresh
/// PostgreSQL database when [`POSTGRES_ENV`] is set.
pub struct TestDatabase {
    pub url: String,
    _dir: TempDir,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// Creates the database.
    pub async fn create() -> Arc<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        match std::env::var(POSTGRES_ENV).ok().filter(|url| !url.is_empty()) {
            None => Arc::new(TestDatabase {
                url: format!("sqlite://{}/tidings.db?mode=rwc", dir.path().display()),
                _dir: dir,
                postgres: None,
            }),
            Some(server) => {
                let server = server.trim_end_matches('/').to_owned();
                let name = format!("tidings_test_{}", rand::random::<u64>());
                let admin = format!("{server}/postgres");
                let db = sea_orm::Database::connect(&admin).await.expect("PostgreSQL answers");
                use sea_orm::ConnectionTrait;
                db.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create the test database");
                db.close().await.ok();
                Arc::new(TestDatabase { url: format!("{server}/{name}"), _dir: dir, postgres: Some((admin, name)) })
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.postgres.take() {
            // Drop runs outside async code: a short-lived runtime of its own.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async {
                    use sea_orm::ConnectionTrait;
                    let db = sea_orm::Database::connect(&admin).await?;
                    db.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
                    db.close().await
                })
            })
            .join();
            if !matches!(dropped, Ok(Ok(()))) {
                eprintln!("could not drop a test database: {dropped:?}");
            }
        }
    }
}

/// A server with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose settings the test adjusts first.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_in(TestDatabase::create().await, configure).await
}

/// A server on `database` (to restart one on the same data).
pub async fn spawn_app_in(database: Arc<TestDatabase>, configure: impl FnOnce(&mut Settings)) -> TestApp {
    if std::env::var_os("RUST_LOG").is_some() {
        tidings::telemetry::init(tidings::telemetry::LogFormat::Text);
    }
    let mut settings = Settings {
        bind: "127.0.0.1:0".into(),
        database_url: database.url.clone().into(),
        database_timeout: Duration::from_secs(10),
        sqlite_synchronous: tidings::store::SqliteSync::Normal,
        writer: tidings::writer::WriterSettings::default(),
        keys: KeySource::Secret(SECRET.to_vec().into()),
        jwt_audience: None,
        redis_url: None,
        redis_namespace: "tidings".into(),
        tail_poll: Duration::from_secs(1),
        stream: StreamSettings::default(),
        mailbox_capacity: 256,
        limits: tidings::config::Limits::default(),
        cors_origins: Vec::new(),
        metrics_bind: None,
        shutdown_grace: Duration::from_secs(5),
        // Tests publish hundreds of notifications to one user; the limits'
        // own tests set them low.
        rate_limits: tidings::ratelimit::RateLimitSettings {
            recipient_per_minute: 1_000_000,
            caller_burst: 1_000_000,
            caller_per_second: 1_000_000,
        },
        default_channels: tidings::domain::preference::Channels::default(),
        public_topics: Vec::new(),
        // Off, as in any configured deployment; the status tests turn it on.
        status_topic_every: None,
        retention: tidings::retention::RetentionSettings::default(),
        typing_expiry: Duration::from_secs(5),
        outbox: tidings::outbox::OutboxSettings { retry_base: Duration::from_millis(20), poll: Duration::from_millis(50), lease: Duration::from_secs(5), ..Default::default() },
        email: None,
        public_url: None,
        presence_grace: Duration::from_secs(10),
        presence_visibility: tidings::presence::Visibility::Conversations,
        print_demo: false,
        max_token_lifetime: Duration::from_secs(30 * 24 * 3600),
        connections: tidings::server::ConnectionSettings::default(),
        // Web Push on, as `tidings serve` always has it, with a fresh key;
        // the fake push services of the tests listen on http://127.0.0.1.
        push: tidings::push::PushSettings {
            vapid: Some(Arc::new(tidings::push::VapidKey::generate().expect("a VAPID key"))),
            allow_insecure: true,
            ..Default::default()
        },
    };
    configure(&mut settings);
    let keys = Arc::new(JwtKeys::new(&settings.keys, settings.jwt_audience.as_deref()).expect("test keys"));
    let app = Application::build(settings).await.expect("the application builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    let metrics_addr = app.metrics_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        http: reqwest::Client::new(),
        state,
        metrics_addr,
        keys,
        stop: Some(stop),
        server: Some(server),
        database,
    }
}

impl TestApp {
    /// A token for `user` with no scope, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        self.keys.mint(user, None, Duration::from_secs(3600)).unwrap()
    }

    /// A token for `user` that expires after `ttl`.
    pub fn token_expiring(&self, user: &str, ttl: Duration) -> String {
        self.keys.mint(user, None, ttl).unwrap()
    }

    /// The server's signing keys, for a test that plays an app's backend
    /// and mints tokens on demand.
    pub fn keys(&self) -> Arc<JwtKeys> {
        self.keys.clone()
    }

    /// A backend's token, with the `publish` scope.
    pub fn publisher_token(&self) -> String {
        self.keys.mint("backend", Some("publish"), Duration::from_secs(3600)).unwrap()
    }

    /// An operator's token, with the `admin` scope.
    pub fn admin_token(&self) -> String {
        self.keys.mint("operator", Some("admin"), Duration::from_secs(3600)).unwrap()
    }

    /// `POST /v1/notifications` with `body`, as a backend.
    pub async fn publish_raw(&self, body: &Value) -> Response {
        self.http
            .post(format!("{}/v1/notifications", self.base))
            .bearer_auth(self.publisher_token())
            .json(body)
            .send()
            .await
            .expect("publish request")
    }

    /// Publishes one notification to `user` and returns it.
    pub async fn notify(&self, user: &str, title: &str) -> Value {
        let response = self
            .publish_raw(&json!({"user_id": user, "type": "test", "title": title, "body": "body"}))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "publishing must succeed");
        let body: Value = response.json().await.unwrap();
        body["created"][0].clone()
    }

    /// A request as `user` to `path` (under the base URL).
    pub fn request(&self, method: reqwest::Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path)).bearer_auth(token)
    }

    /// `GET path` as the holder of `token`, answering (status, JSON body).
    pub async fn get_json(&self, path: &str, token: &str) -> (StatusCode, Value) {
        into_json(self.request(reqwest::Method::GET, path, token).send().await.unwrap()).await
    }

    /// `POST path` with an optional JSON body, answering (status, JSON body).
    pub async fn post_json(&self, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = self.request(reqwest::Method::POST, path, token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        into_json(request.send().await.unwrap()).await
    }

    /// Opens `user`'s stream, resuming after `last_event_id` if given.
    pub async fn open_stream(&self, token: &str, last_event_id: Option<&str>) -> EventStream {
        let mut request = self.http.get(format!("{}/v1/stream", self.base)).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("stream request");
        assert_eq!(response.status(), StatusCode::OK, "the stream must open");
        EventStream::new(response)
    }

    /// A token for `user` that may read the broadcast topics matching `topics`.
    pub fn reader_token(&self, user: &str, topics: &[&str]) -> String {
        self.keys.mint_reader(user, topics, Duration::from_secs(3600)).unwrap()
    }

    /// `GET /v1/stream?topic=...` with `token`, resuming after `last_event_id`.
    pub async fn open_topic_stream(&self, token: &str, topics: &[&str], last_event_id: Option<&str>) -> EventStream {
        let mut request = self.http.get(format!("{}/v1/stream?{}", self.base, topic_query(topics))).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("stream request");
        assert_eq!(response.status(), StatusCode::OK, "the stream must open");
        EventStream::new(response)
    }

    /// Publishes `data` to broadcast topic `topic`, with an optional key; the answer.
    pub async fn publish_topic(&self, topic: &str, kind: &str, data: Value, key: Option<&str>) -> Value {
        let mut body = json!({"type": kind, "data": data});
        if let Some(key) = key {
            body["key"] = json!(key);
        }
        let response = self.http.post(format!("{}/v1/topics/{topic}/events", self.base)).bearer_auth(self.publisher_token()).json(&body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "publishing to a topic must succeed");
        response.json().await.unwrap()
    }

    /// Stops the server the way a signal would, and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(PATIENCE, server)
                .await
                .expect("the server stops promptly")
                .expect("the server task")
                .expect("the server ran cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Status and JSON body of a response (`Null` when it has none).
pub async fn into_json(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, body)
}

type SseStream = Pin<Box<dyn Stream<Item = Result<SseEvent, String>> + Send>>;

/// A stream read with a real SSE parser (`eventsource-stream`), tracking the
/// last event id the way a browser's EventSource does.
pub struct EventStream {
    events: SseStream,
    /// The last event id seen, as EventSource would send it on reconnect.
    pub last_id: Option<String>,
}

impl EventStream {
    /// Wraps the body of a stream response.
    pub fn new(response: Response) -> Self {
        Self::from_bytes(response.bytes_stream().map(|chunk| chunk.map_err(|e| e.to_string())))
    }

    /// Wraps any byte stream of SSE.
    pub fn from_bytes<S, B>(bytes: S) -> Self
    where
        S: Stream<Item = Result<B, String>> + Send + 'static,
        B: AsRef<[u8]>,
    {
        let events = bytes.eventsource().map(|event| event.map_err(|e| e.to_string()));
        EventStream { events: Box::pin(events), last_id: None }
    }

    /// The next event, or `None` when the server ended the stream. Panics if
    /// nothing arrives within [`PATIENCE`].
    pub async fn next(&mut self) -> Option<SseEvent> {
        let event = tokio::time::timeout(PATIENCE, self.events.next())
            .await
            .expect("an event should arrive in time")?
            .expect("the stream parses");
        if !event.id.is_empty() {
            self.last_id = Some(event.id.clone());
        }
        Some(event)
    }

    /// The next event named `name`, skipping others.
    pub async fn next_named(&mut self, name: &str) -> SseEvent {
        loop {
            let event = self.next().await.expect("the stream ended early");
            if event.event == name {
                return event;
            }
        }
    }

    /// The next event not named `skip`: for a test about one kind of event
    /// on a stream that also carries another (presence) at moments the test
    /// does not control.
    pub async fn next_except(&mut self, skip: &str) -> SseEvent {
        loop {
            let event = self.next().await.expect("the stream ended early");
            if event.event != skip {
                return event;
            }
        }
    }

    /// Events up to and including the next `unread_count`: the end of the
    /// initial state of a fresh or resumed stream.
    pub async fn until_unread_count(&mut self) -> (Vec<SseEvent>, u64) {
        let mut before = Vec::new();
        loop {
            let event = self.next().await.expect("the stream ended early");
            if event.event == "unread_count" {
                let count = data(&event)["count"].as_u64().unwrap();
                return (before, count);
            }
            before.push(event);
        }
    }

    /// Whether the server has ended the stream (waits up to [`PATIENCE`]).
    pub async fn ended(&mut self) -> bool {
        loop {
            match tokio::time::timeout(PATIENCE, self.events.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// The JSON data of an event.
pub fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).expect("event data is JSON")
}

/// Waits until `condition` holds, checking every few milliseconds, failing
/// after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl TestApp {
    /// Creates a conversation as the holder of `token` with `members`.
    pub async fn create_conversation(&self, token: &str, members: &[&str]) -> Value {
        let (status, body) = self.post_json("/v1/conversations", token, Some(json!({ "members": members }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Sends a message and returns it.
    pub async fn say(&self, token: &str, conversation: &Value, content: &str) -> Value {
        let path = format!("/v1/conversations/{}/messages", conversation["id"]);
        let (status, body) = self.post_json(&path, token, Some(json!({ "content": content }))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }
}

/// The environment variable naming the Redis server for cluster tests.
pub const REDIS_ENV: &str = "TIDINGS_TEST_REDIS";

/// The value of the environment variable `name`, or a panic saying `why`.
/// Tests that need a service are `#[ignore]`d, so plain `cargo test` lists
/// them as ignored; run with `--include-ignored` (as `bash .ci/run` does),
/// a missing service fails the test instead of passing it silently.
pub fn required_env(name: &str, why: &str) -> String {
    match std::env::var(name).ok().filter(|value| !value.is_empty()) {
        Some(value) => value,
        None => panic!("{why}: set {name} (bash .ci/run does)"),
    }
}

/// Waits until `app` answers `/readyz` with 200 (a Redis node has connected).
pub async fn until_ready(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let ready = app.http.get(format!("{}/readyz", app.base)).send().await.map(|r| r.status());
        if matches!(ready, Ok(StatusCode::OK)) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the node becomes ready: {ready:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` nodes on one PostgreSQL database and one Redis. Panics when either
/// is not configured: cluster tests are `#[ignore]`d, and run by
/// `bash .ci/run` with both set.
pub async fn spawn_cluster(n: usize, configure: impl Fn(&mut Settings)) -> Vec<TestApp> {
    let why = "cluster tests need PostgreSQL and Redis";
    required_env(POSTGRES_ENV, why);
    let redis = required_env(REDIS_ENV, why);
    let database = TestDatabase::create().await;
    let namespace = format!("tidings-test-{}", rand::random::<u64>());
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let (redis, namespace) = (redis.clone(), namespace.clone());
        nodes.push(
            spawn_app_in(database.clone(), |settings| {
                settings.redis_url = Some(redis.into());
                settings.redis_namespace = namespace;
                configure(settings);
            })
            .await,
        );
    }
    for node in &nodes {
        until_ready(node).await;
    }
    nodes
}

/// A `tidings serve` process of the real binary, for tests that kill it.
pub struct NodeProcess {
    pub child: tokio::process::Child,
    pub base: String,
}

/// Starts the binary with `env` (on top of a clean `TIDINGS_*` environment
/// and the test secret) and waits until it listens.
pub async fn spawn_node_process(env: &[(&str, &str)]) -> NodeProcess {
    use tokio::io::AsyncBufReadExt;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TIDINGS_") {
            command.env_remove(name);
        }
    }
    command
        .env("TIDINGS_BIND", "127.0.0.1:0")
        .env("TIDINGS_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("TIDINGS_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("the binary starts");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = tokio::time::timeout(PATIENCE, lines.next_line()).await.expect("the node logs").unwrap().expect("the node runs");
        let entry: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if entry["message"] == "listening" {
            break entry["address"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    NodeProcess { child, base: format!("http://{address}") }
}

/// `topic=a&topic=b`, encoded.
pub fn topic_query(topics: &[&str]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for topic in topics {
        query.append_pair("topic", topic);
    }
    query.finish()
}
