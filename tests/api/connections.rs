//! The accept loop against raw sockets: slow and silent clients are cut off
//! after the header timeout while others are served, one address cannot
//! hold more connections than its cap, a declared body over the limit is
//! refused before it is sent, and streams are served on both paths (written
//! directly when they are a connection's first request, by hyper after
//! other requests).

use std::time::Duration;

use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

use crate::helpers::{PATIENCE, TestApp, spawn_app, spawn_app_with};

/// A raw TCP connection to `app`.
async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://")).await.expect("the server accepts")
}

/// Reads until the server closes the connection (EOF or reset), giving up
/// after [`PATIENCE`]; returns what it sent.
async fn read_until_closed(socket: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, socket.read(&mut buf)).await.expect("the server closes the connection in time") {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a whole request for `/healthz` and reads the status line.
async fn healthz_over(socket: &mut TcpStream) -> String {
    socket.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(PATIENCE, socket.read(&mut buf)).await.expect("an answer in time").unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_client_trickling_its_request_head_is_cut_off_after_the_header_timeout_while_others_are_served() {
    let timeout = Duration::from_secs(2);
    let app = spawn_app_with(|s| s.connections.header_read_timeout = timeout).await;
    let mut slow = connect(&app).await;
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut_off = false;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        // Another client is served normally meanwhile.
        let (status, _) = crate::helpers::into_json(app.http.get(format!("{}/healthz", app.base)).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => {
                cut_off = true;
                break;
            }
            Ok(Ok(n)) => panic!("the trickling client got an answer: {:?}", String::from_utf8_lossy(&buf[..n])),
        }
    }
    let elapsed = started.elapsed();
    assert!(cut_off, "the trickling client was never cut off");
    assert!(elapsed >= timeout - Duration::from_millis(100), "cut off too early: {elapsed:?}");
    assert!(elapsed < timeout + Duration::from_secs(3), "cut off too late: {elapsed:?}");
}

#[tokio::test]
async fn a_socket_that_sends_nothing_is_closed_after_the_header_timeout() {
    let timeout = Duration::from_secs(1);
    let app = spawn_app_with(|s| s.connections.header_read_timeout = timeout).await;
    let mut silent = connect(&app).await;
    let started = Instant::now();
    read_until_closed(&mut silent).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout - Duration::from_millis(100), "closed too early: {elapsed:?}");
    assert!(elapsed < timeout + Duration::from_secs(3), "closed too late: {elapsed:?}");
    // The server goes on serving.
    let mut next = connect(&app).await;
    assert_eq!(healthz_over(&mut next).await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn one_address_cannot_open_more_connections_than_its_cap() {
    let app = spawn_app_with(|s| s.connections.max_per_ip = 2).await;
    let mut first = connect(&app).await;
    let mut second = connect(&app).await;
    assert_eq!(healthz_over(&mut first).await, "HTTP/1.1 200 OK");
    assert_eq!(healthz_over(&mut second).await, "HTTP/1.1 200 OK");

    let mut third = connect(&app).await;
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(read_until_closed(&mut third).await.is_empty(), "the connection over the cap is closed unanswered");

    // Once one closes, its slot is free again.
    drop(first);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut again = connect(&app).await;
        let _ = again.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(PATIENCE, again.read(&mut buf)).await
            && buf[..n].starts_with(b"HTTP/1.1 200")
        {
            break;
        }
        assert!(Instant::now() < deadline, "a slot was never given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(healthz_over(&mut second).await, "HTTP/1.1 200 OK", "connections under the cap are untouched");
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_with_413_at_once() {
    let app = spawn_app().await;
    let mut socket = connect(&app).await;
    let head = format!(
        "POST /v1/notifications HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
        app.publisher_token()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // Nothing of the body is sent; the answer must not wait for it.
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf))
        .await
        .expect("the 413 comes at once, not after the request deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""code":"payload_too_large""#), "the contract's body: {answer}");
    assert!(answer.to_ascii_lowercase().contains("cache-control: no-store"), "a JSON answer, so no-store like every other: {answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let (_, count) = app.get_json("/v1/notifications/unread_count", &app.token("alice")).await;
    assert_eq!(count["count"], 0);
}

/// 5,000 streams whose clients never read while announcements reach every
/// one of them: each connection's queue is capped (its mailbox overflows
/// instead of growing, and the kernel buffers are small), the server goes
/// on serving, and a client that reads again gets every event it missed,
/// once and in order, caught up from the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_streams_that_never_read_stay_bounded_and_catch_up_from_the_log_when_read_again() {
    const STREAMS: usize = 5_000;
    const MAX_ANNOUNCEMENTS: usize = 400;
    rlimit::increase_nofile_limit(20_000).expect("raising the open-file limit");
    let app = spawn_app_with(|settings| {
        settings.mailbox_capacity = 16;
        settings.connections.max_per_ip = STREAMS + 100;
        settings.limits.streams.total = STREAMS + 100;
    })
    .await;
    let address: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let mut sockets = Vec::with_capacity(STREAMS);
    for n in 0..STREAMS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small receive window: the server's writes stall after a few KiB.
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(address).await.expect("the server accepts");
        // HTTP/1.0: the body is the raw SSE bytes until the server closes.
        let request = format!("GET /v1/stream HTTP/1.0\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n", app.token(&format!("idle{n}")));
        stream.write_all(request.as_bytes()).await.unwrap();
        sockets.push(stream);
    }
    let hub = app.state.hub.clone();
    crate::helpers::eventually("every stream is open", || hub.stats().open_streams.load(std::sync::atomic::Ordering::Relaxed) >= STREAMS as u64).await;

    let filler = "x".repeat(2000);
    // Publish until the stalled streams' queues overflow (capped, instead of
    // growing): how many it takes depends on the kernel's socket buffers.
    let mut titles = Vec::new();
    while app.state.hub.overflows() < (STREAMS / 2) as u64 {
        assert!(titles.len() < MAX_ANNOUNCEMENTS, "queues never overflowed: {} overflows after {} announcements", app.state.hub.overflows(), titles.len());
        let title = format!("announcement {}", titles.len());
        let response = app.publish_raw(&serde_json::json!({"audience": "all", "type": "bulk", "title": title, "body": filler})).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        titles.push(title);
        if titles.len() % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // The server still serves everyone else.
    let (status, _) = app.get_json("/v1/notifications/unread_count", &app.token("someone")).await;
    assert_eq!(status, StatusCode::OK);

    // Three of the stalled clients read again: each gets every announcement once, in order.
    for socket in sockets.iter_mut().step_by(STREAMS / 3).take(3) {
        let mut received = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + PATIENCE;
        let last = format!("\"title\":\"{}\"", titles.last().unwrap());
        while !String::from_utf8_lossy(&received).contains(&last) {
            assert!(Instant::now() < deadline, "the stalled stream caught up in time");
            let n = tokio::time::timeout(PATIENCE, socket.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "the server kept the stream open");
            received.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&received);
        let seen: Vec<&str> = text.match_indices("\"title\":\"announcement ").map(|(at, _)| {
            let rest = &text[at + 9..];
            &rest[..rest.find('"').unwrap()]
        }).collect();
        assert_eq!(seen, titles.iter().map(String::as_str).collect::<Vec<_>>(), "every announcement once, in order");
    }
    drop(sockets);
}

/// The listener asks the kernel for the configured backlog, not tokio's
/// 1,024: a reconnect storm's handshakes wait there instead of being
/// dropped and retransmitted a second later. Read back with `ss` (iproute2;
/// `.ci/run` installs it), which shows a listening socket's backlog as its
/// Send-Q.
#[tokio::test]
async fn the_listener_queues_as_many_connections_as_configured() {
    let app = spawn_app_with(|settings| settings.connections.backlog = 777).await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let output = std::process::Command::new("ss").args(["-Hltn", &format!("sport = :{port}")]).output().expect("ss (iproute2) runs");
    let listing = String::from_utf8_lossy(&output.stdout);
    let backlog: Vec<&str> = listing.lines().filter_map(|line| line.split_whitespace().nth(2)).collect();
    assert_eq!(backlog, ["777"], "the listening socket's backlog, from: {listing}");
}

/// Reads from `socket` until what it sent contains `expected`, within
/// [`PATIENCE`]; returns all it sent.
async fn read_until_contains(socket: &mut TcpStream, expected: &str) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(&received).contains(expected) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, socket.read(&mut buf)).await.unwrap_or_else(|_| panic!("{expected:?} in time; got {:?}", String::from_utf8_lossy(&received))).unwrap();
        assert!(n > 0, "the connection stayed open until {expected:?}; got {:?}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// A stream that is a connection's first request is written directly
/// (`server::direct`); one opened after other requests on a kept-alive
/// connection is served by hyper. Both deliver the same frames, live.
#[tokio::test]
async fn a_stream_opened_on_a_kept_alive_connection_after_other_requests_is_served_too() {
    let app = spawn_app().await;
    let token = app.token("kept");
    let mut socket = connect(&app).await;
    assert_eq!(healthz_over(&mut socket).await, "HTTP/1.1 200 OK");
    socket.write_all(format!("GET /v1/stream HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes()).await.unwrap();
    let head = read_until_contains(&mut socket, "event: unread_count").await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("content-type: text/event-stream\r\n"), "{head}");
    app.publish_raw(&serde_json::json!({"user_id": "kept", "type": "t", "title": "over hyper"})).await;
    read_until_contains(&mut socket, "\"title\":\"over hyper\"").await;
}

/// On the direct path: the head hyper would send, chunked framing, events
/// live; and a client that closes its side ends the stream at once (its
/// user goes offline), without waiting for a heartbeat's write to fail.
#[tokio::test]
async fn a_stream_written_directly_is_framed_like_hypers_and_ends_when_its_client_closes() {
    let app = spawn_app().await;
    let mut socket = connect(&app).await;
    socket.write_all(format!("GET /v1/stream HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\r\n", app.token("direct")).as_bytes()).await.unwrap();
    let head = read_until_contains(&mut socket, "event: unread_count").await;
    for expected in ["HTTP/1.1 200 OK\r\n", "content-type: text/event-stream\r\n", "cache-control: no-cache\r\n", "x-accel-buffering: no\r\n", "transfer-encoding: chunked\r\n", "connection: close\r\n"] {
        assert!(head.contains(expected), "{expected:?} in {head:?}");
    }
    app.publish_raw(&serde_json::json!({"user_id": "direct", "type": "t", "title": "written directly"})).await;
    read_until_contains(&mut socket, "\"title\":\"written directly\"").await;

    let hub = app.state.hub.clone();
    let open = move || hub.stats().open_streams.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(open(), 1);
    socket.shutdown().await.unwrap();
    crate::helpers::eventually("the stream ended when its client closed", || open() == 0).await;
    // The server closes its side too (within PATIENCE, or this panics).
    read_until_closed(&mut socket).await;
}
