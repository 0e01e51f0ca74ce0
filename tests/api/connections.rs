//! The accept loop against raw sockets: slow and silent clients are cut off
//! after the header timeout while others are served, one address cannot
//! hold more connections than its cap, and a declared body over the limit
//! is refused before it is sent.

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
    assert!(started.elapsed() < Duration::from_secs(2));
    let (_, count) = app.get_json("/v1/notifications/unread_count", &app.token("alice")).await;
    assert_eq!(count["count"], 0);
}
