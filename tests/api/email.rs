//! Email: a real SMTP server inside the test (the `mailin` protocol state
//! machine on a tokio socket, port 0) receives what the hub sends over
//! lettre. Headers, digests, the one-click unsubscribe link, the tracked
//! redirect, "read before due sends nothing", and an SMTP server that
//! refuses or is down.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mailin::{Action, AuthMechanism, Handler, Response, SessionBuilder, response};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

use crate::{
    helpers::{PATIENCE, TestApp, spawn_app, spawn_app_with},
    outbox::put_contact,
    webhooks::deliveries_until,
};

/// The credentials the sink accepts (AUTH PLAIN).
const SMTP_USER: &str = "tidings";
const SMTP_PASSWORD: &str = "s3cret pass";

/// One mail the sink accepted.
#[derive(Clone, Debug)]
pub struct Mail {
    pub envelope_to: Vec<String>,
    pub raw: Vec<u8>,
}

impl Mail {
    fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default().parse(&self.raw).expect("a parsable mail")
    }

    fn header(&self, name: &str) -> String {
        self.parsed().header_raw(name).unwrap_or_else(|| panic!("no {name} header")).trim().to_owned()
    }

    fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_owned()
    }

    fn text(&self) -> String {
        self.parsed().body_text(0).unwrap_or_default().into_owned()
    }

    fn html(&self) -> String {
        self.parsed().body_html(0).unwrap_or_default().into_owned()
    }

    /// The `https?://` URL in `List-Unsubscribe`.
    fn unsubscribe_url(&self) -> String {
        let header = self.header("List-Unsubscribe");
        header.trim_start_matches('<').split('>').next().unwrap().to_owned()
    }

    /// Every tracked link in the text part.
    fn tracked_links(&self) -> Vec<String> {
        self.text().lines().filter_map(|line| line.strip_prefix("Open: ")).map(|l| l.trim().to_owned()).collect()
    }
}

/// What the sink answers to the n-th (0-based) DATA command: `None` to
/// accept.
type Answer = Arc<dyn Fn(usize) -> Option<Response> + Send + Sync>;

struct SinkState {
    mails: Mutex<Vec<Mail>>,
    data_commands: AtomicUsize,
    logins: Mutex<Vec<String>>,
    answer: Answer,
}

/// A real SMTP server on port 0 that requires AUTH PLAIN and records every
/// accepted mail.
pub struct SmtpSink {
    pub addr: SocketAddr,
    state: Arc<SinkState>,
}

struct Recorder {
    state: Arc<SinkState>,
    to: Vec<String>,
    data: Vec<u8>,
    refused: bool,
}

impl Handler for Recorder {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        let n = self.state.data_commands.fetch_add(1, Ordering::SeqCst);
        match (self.state.answer)(n) {
            Some(refusal) => {
                self.refused = true;
                refusal
            }
            None => {
                self.refused = false;
                response::OK
            }
        }
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        if !self.refused {
            self.state.mails.lock().unwrap().push(Mail { envelope_to: self.to.clone(), raw: std::mem::take(&mut self.data) });
        }
        response::OK
    }

    fn auth_plain(&mut self, _authorization_id: &str, authentication_id: &str, password: &str) -> Response {
        self.state.logins.lock().unwrap().push(authentication_id.to_owned());
        if authentication_id == SMTP_USER && password == SMTP_PASSWORD { response::AUTH_OK } else { response::INVALID_CREDENTIALS }
    }
}

async fn write_response(socket: &mut tokio::net::tcp::OwnedWriteHalf, response: &Response) -> std::io::Result<()> {
    socket.write_all(&response.buffer()?).await
}

async fn session(socket: TcpStream, peer: SocketAddr, state: Arc<SinkState>) -> std::io::Result<()> {
    let mut builder = SessionBuilder::new("sink.test");
    // The test's server speaks plain TCP; lettre sends the credentials the URL carries.
    builder.enable_auth(AuthMechanism::Plain).insecure_enable_plaintext_auth();
    let mut session = builder.build(peer.ip(), Recorder { state, to: Vec::new(), data: Vec::new(), refused: false });
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    write_response(&mut write, &session.greeting()).await?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let answer = session.process(&line);
        match answer.action {
            Action::NoReply => {}
            Action::Close => {
                write_response(&mut write, &answer).await?;
                return Ok(());
            }
            _ => write_response(&mut write, &answer).await?,
        }
    }
}

impl SmtpSink {
    /// A sink that accepts every mail.
    pub async fn start() -> SmtpSink {
        SmtpSink::answering(|_| None).await
    }

    /// A sink that answers `answer(n)` to the n-th DATA command.
    pub async fn answering(answer: impl Fn(usize) -> Option<Response> + Send + Sync + 'static) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(SinkState { mails: Mutex::default(), data_commands: AtomicUsize::new(0), logins: Mutex::default(), answer: Arc::new(answer) });
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, peer)) = listener.accept().await {
                tokio::spawn(session(socket, peer, shared.clone()));
            }
        });
        SmtpSink { addr, state }
    }

    /// `smtp://user:password@host:port`, the password percent-encoded.
    pub fn url(&self) -> String {
        format!("smtp://{SMTP_USER}:{}@{}", SMTP_PASSWORD.replace(' ', "%20"), self.addr)
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.state.mails.lock().unwrap().clone()
    }

    pub fn data_commands(&self) -> usize {
        self.state.data_commands.load(Ordering::SeqCst)
    }

    /// Waits until `n` mails arrived; returns them.
    pub async fn until_mails(&self, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mails = self.mails();
            if mails.len() >= n {
                return mails;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {n} mails; got {}", mails.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A hub sending through `smtp_url`, emails due `delay` after a publish.
async fn spawn_mailing_app(smtp_url: &str, delay: Duration) -> TestApp {
    let url = smtp_url.to_owned();
    spawn_app_with(move |settings| {
        settings.email = Some(tidings::email::EmailSettings { smtp_url: url.into(), from: "Tidings <hub@tidings.test>".into(), link_secret: None });
        settings.outbox.email_delay = delay;
        settings.outbox.email_digest = Duration::ZERO;
        settings.outbox.max_attempts = 3;
    })
    .await
}

/// Gives `user` an address and turns email on for `kind`.
async fn wants_email(app: &TestApp, user: &str, kind: &str) {
    let (status, _) = put_contact(app, user, &json!({"email": format!("{user}@example.com")})).await;
    assert_eq!(status, StatusCode::OK);
    let response = app
        .request(Method::PUT, &format!("/v1/preferences/{kind}"), &app.token(user))
        .json(&json!({"enabled": true, "channels": {"web": true, "email": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn publish(app: &TestApp, body: Value) -> Value {
    let (status, answer) = into_json_of(app.request(Method::POST, "/v1/notifications", &app.publisher_token()).json(&body).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["created"][0].clone()
}

async fn into_json_of(response: reqwest::Response) -> (StatusCode, Value) {
    crate::helpers::into_json(response).await
}

async fn preference(app: &TestApp, user: &str, kind: &str) -> Value {
    let (_, list) = app.get_json("/v1/preferences", &app.token(user)).await;
    list.as_array().unwrap().iter().find(|p| p["type"] == kind).cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn notifications_falling_due_together_go_out_as_one_digest_with_the_list_headers() {
    let sink = SmtpSink::start().await;
    let app = spawn_mailing_app(&sink.url(), Duration::ZERO).await;
    wants_email(&app, "alice", "comment.created").await;

    // One batch: the three rows share a due time, so one claim takes them.
    let items: Vec<Value> = (1..=3)
        .map(|i| json!({"user_id": "alice", "type": "comment.created", "title": format!("Comment {i}"), "body": format!("Body <{i}>"), "action_url": format!("https://app.example.com/c/{i}")}))
        .collect();
    let (status, answer) = app.post_json("/v1/notifications/batch", &app.publisher_token(), Some(json!({"items": items}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let ids: Vec<i64> = answer["results"].as_array().unwrap().iter().map(|r| r["created"][0]["id"].as_i64().unwrap()).collect();

    let mails = sink.until_mails(1).await;
    for id in &ids {
        let deliveries = deliveries_until(&app, *id, &app.token("alice"), |d| d[0]["status"] == "sent").await;
        assert_eq!(deliveries[0]["channel"], "email");
        assert_eq!(deliveries[0]["attempts"], 1);
    }
    assert_eq!(sink.mails().len(), 1, "one digest, not three mails");
    assert_eq!(sink.state.logins.lock().unwrap().as_slice(), [SMTP_USER], "the URL's credentials were used");
    let mail = &mails[0];
    assert_eq!(mail.envelope_to, ["alice@example.com"]);
    assert_eq!(mail.subject(), "3 new notifications");
    assert_eq!(mail.header("From"), "Tidings <hub@tidings.test>");
    assert_eq!(mail.header("To"), "alice@example.com");
    assert_eq!(mail.header("List-Unsubscribe-Post"), "List-Unsubscribe=One-Click");
    let unsubscribe = mail.unsubscribe_url();
    assert!(unsubscribe.starts_with(&format!("{}/v1/unsubscribe/", app.base)), "{unsubscribe}");
    assert!(mail.header("Message-ID").contains(&format!("msg_{}_email", ids[0])), "stable across retries");
    let text = mail.text();
    for i in 1..=3 {
        assert!(text.contains(&format!("Comment {i}")) && text.contains(&format!("Body <{i}>")), "{text}");
    }
    assert_eq!(mail.tracked_links().len(), 3, "{text}");
    let html = mail.html();
    assert!(html.contains("Body &lt;1&gt;"), "the HTML part escapes bodies: {html}");

    // A notification alone is its own subject.
    publish(&app, json!({"user_id": "alice", "type": "comment.created", "title": "Just one", "body": "alone"})).await;
    let mails = sink.until_mails(2).await;
    assert_eq!(mails[1].subject(), "Just one");
    assert!(mails[1].tracked_links().is_empty(), "no action_url, no link");
}

#[tokio::test]
async fn the_one_click_unsubscribe_link_turns_that_types_email_off_and_later_ones_send_nothing() {
    let sink = SmtpSink::start().await;
    let app = spawn_mailing_app(&sink.url(), Duration::ZERO).await;
    wants_email(&app, "alice", "digest.weekly").await;
    wants_email(&app, "alice", "order.shipped").await;
    publish(&app, json!({"user_id": "alice", "type": "digest.weekly", "title": "This week", "body": "..."})).await;
    let url = sink.until_mails(1).await[0].unsubscribe_url();

    // The confirmation page changes nothing: mail scanners fetch links.
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("digest.weekly"));
    assert_eq!(preference(&app, "alice", "digest.weekly").await["channels"]["email"], true);

    // The provider's one-click POST (RFC 8058), without any login.
    let client = reqwest::Client::new();
    let done = client.post(&url).header("content-type", "application/x-www-form-urlencoded").body("List-Unsubscribe=One-Click").send().await.unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let preference_now = preference(&app, "alice", "digest.weekly").await;
    assert_eq!(preference_now["channels"]["email"], false, "{preference_now}");
    assert_eq!(preference_now["channels"]["web"], true, "the rest of the preference stays");
    assert_eq!(preference_now["enabled"], true);
    assert_eq!(preference(&app, "alice", "order.shipped").await["channels"]["email"], true, "other types keep their email");
    let again = client.post(&url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK, "repeating it is harmless");

    let later = publish(&app, json!({"user_id": "alice", "type": "digest.weekly", "title": "Next week", "body": "..."})).await;
    let (_, deliveries) = app.get_json(&format!("/v1/notifications/{}/deliveries", later["id"]), &app.token("alice")).await;
    assert_eq!(deliveries, json!([]), "no email delivery is written any more");

    // A forged or altered link is not found, and changes nothing.
    for bad in [format!("{}/v1/unsubscribe/not-a-token", app.base), format!("{url}x")] {
        let response = client.post(&bad).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let (_, body) = crate::helpers::into_json(response).await;
        assert_eq!(body["error"]["code"], "not_found");
    }
    assert_eq!(preference(&app, "alice", "order.shipped").await["channels"]["email"], true);
}

#[tokio::test]
async fn a_tracked_link_records_the_click_and_redirects_to_the_stored_action_url() {
    let sink = SmtpSink::start().await;
    let app = spawn_mailing_app(&sink.url(), Duration::ZERO).await;
    wants_email(&app, "alice", "order.shipped").await;
    let notification = publish(&app, json!({"user_id": "alice", "type": "order.shipped", "title": "Shipped", "body": "Your order", "action_url": "https://shop.example.com/orders/7"})).await;
    let links = sink.until_mails(1).await[0].tracked_links();
    assert_eq!(links.len(), 1);
    assert!(links[0].starts_with(&format!("{}/v1/r/", app.base)), "{}", links[0]);

    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = client.get(&links[0]).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()["location"], "https://shop.example.com/orders/7");

    let (_, page) = app.get_json("/v1/notifications?status=all", &app.token("alice")).await;
    let found = page["items"].as_array().unwrap().iter().find(|n| n["id"] == notification["id"]).unwrap().clone();
    assert!(found["read_at"].is_string(), "a click marks it read: {found}");
    let (_, stats) = app.get_json("/v1/stats/notifications?type=order.shipped", &app.publisher_token()).await;
    assert_eq!(stats[0]["clicked"], 1, "{stats}");
    assert_eq!(stats[0]["channels"]["email"]["sent"], 1, "{stats}");
    assert_eq!(stats[0]["channels"]["email"]["clicked"], 1, "{stats}");

    let forged = client.get(format!("{}/v1/r/{}", app.base, "eyJhbGciOiJIUzI1NiJ9.e30.x")).send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_notification_read_before_its_email_is_due_sends_nothing() {
    let sink = SmtpSink::start().await;
    let app = spawn_mailing_app(&sink.url(), Duration::from_secs(2)).await;
    wants_email(&app, "alice", "comment.created").await;
    let seen = publish(&app, json!({"user_id": "alice", "type": "comment.created", "title": "Seen", "body": "on the page"})).await;
    let unseen = publish(&app, json!({"user_id": "alice", "type": "comment.created", "title": "Unseen", "body": "by mail"})).await;

    // While it waits, the list shows the pending email (the page's mark).
    let (_, page) = app.get_json("/v1/notifications?status=unread", &app.token("alice")).await;
    assert!(page["items"].as_array().unwrap().iter().all(|n| n["email_due_at"].is_string()), "{page}");

    let (status, _) = app.post_json(&format!("/v1/notifications/{}/read", seen["id"]), &app.token("alice"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, page) = app.get_json("/v1/notifications?status=all", &app.token("alice")).await;
    let read = page["items"].as_array().unwrap().iter().find(|n| n["id"] == seen["id"]).unwrap().clone();
    assert!(read.get("email_due_at").is_none(), "a read one shows no pending email: {read}");

    let token = app.token("alice");
    let skipped = deliveries_until(&app, seen["id"].as_i64().unwrap(), &token, |d| d[0]["status"] != "pending").await;
    assert_eq!(skipped[0]["status"], "skipped", "{skipped}");
    deliveries_until(&app, unseen["id"].as_i64().unwrap(), &token, |d| d[0]["status"] == "sent").await;
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].subject(), "Unseen", "only the unread one went out");
}

#[tokio::test]
async fn an_smtp_server_answering_4xx_then_5xx_is_retried_until_it_accepts() {
    let sink = SmtpSink::answering(|n| match n {
        0 => Some(Response::custom(451, "4.3.0 try again later".into())),
        1 => Some(Response::custom(554, "5.7.1 relay refused for now".into())),
        _ => None,
    })
    .await;
    let app = spawn_mailing_app(&sink.url(), Duration::ZERO).await;
    wants_email(&app, "alice", "alert").await;
    let notification = publish(&app, json!({"user_id": "alice", "type": "alert", "title": "Disk full", "body": "90%"})).await;
    let deliveries = deliveries_until(&app, notification["id"].as_i64().unwrap(), &app.token("alice"), |d| d[0]["status"] == "sent").await;
    assert_eq!(deliveries[0]["attempts"], 3, "{deliveries}");
    assert_eq!(sink.data_commands(), 3);
    assert_eq!(sink.mails().len(), 1);
}

#[tokio::test]
async fn an_smtp_server_that_is_down_never_holds_up_publishing_and_the_email_fails_after_the_limit() {
    // A port nobody listens on: connections are refused.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let app = spawn_mailing_app(&format!("smtp://{closed}"), Duration::ZERO).await;
    wants_email(&app, "alice", "alert").await;
    let mut slowest = Duration::ZERO;
    let mut ids = Vec::new();
    for i in 0..20 {
        let started = Instant::now();
        let notification = publish(&app, json!({"user_id": "alice", "type": "alert", "title": format!("Alert {i}"), "body": "..."})).await;
        slowest = slowest.max(started.elapsed());
        ids.push(notification["id"].as_i64().unwrap());
    }
    assert!(slowest < Duration::from_millis(500), "a publish waited for SMTP: {slowest:?}");
    for id in ids {
        let deliveries = deliveries_until(&app, id, &app.token("alice"), |d| d[0]["status"] == "failed").await;
        assert_eq!(deliveries[0]["attempts"], 3, "{deliveries}");
        let error = deliveries[0]["last_error"].as_str().unwrap();
        assert!(error.starts_with("SMTP:"), "{error}");
    }
}

#[tokio::test]
async fn the_hub_lists_email_among_its_channels_only_when_an_smtp_server_is_configured() {
    let plain = spawn_app().await;
    let (status, channels) = plain.get_json("/v1/channels", &plain.token("alice")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(channels, json!(["web"]));
    let (status, _) = plain.get_json("/v1/channels", "not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let sink = SmtpSink::start().await;
    let mailing = spawn_mailing_app(&sink.url(), Duration::ZERO).await;
    let (_, channels) = mailing.get_json("/v1/channels", &mailing.token("alice")).await;
    assert_eq!(channels, json!(["web", "email"]));
    crate::webhooks::register(&mailing, "https://example.com/hook", None).await;
    let (_, channels) = mailing.get_json("/v1/channels", &mailing.token("alice")).await;
    assert_eq!(channels, json!(["web", "email", "webhook"]));
}
