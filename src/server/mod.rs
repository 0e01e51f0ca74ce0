//! The accept loop: our own instead of `axum::serve`, so that every setting
//! of a connection is a decision written down here rather than a default.
//!
//! - **HTTP/1.1 only.** Browsers speak HTTP/2 to the proxy in front (nginx
//!   talks HTTP/1.1 to us, see `docs/operations.md`); cleartext HTTP/2 (h2c)
//!   had no user and cost every connection an auto-detecting builder.
//! - **Header read timeout.** A client must deliver a whole request head
//!   within [`ConnectionSettings::header_read_timeout`], measured from when
//!   the server starts waiting for it: a socket that sends nothing, half a
//!   head or a byte a second (slowloris) is closed then. The same clock runs
//!   while a kept-alive connection waits idle for its next request, so it is
//!   also the idle keep-alive timeout.
//! - **Keep-alive on**, so API clients reuse connections.
//! - **No half-close.** A client's EOF ends the connection at once, which is
//!   how an open stream notices that its client went away without waiting
//!   for the next heartbeat's write to fail (presence depends on it).
//! - **Streams written directly.** A connection whose first request is
//!   `GET /v1/stream` is answered by [`direct`]: the same router, but the
//!   response goes straight to the socket, without hyper's buffers and
//!   connection state, which were most of an idle stream's memory. Every
//!   other connection is hyper's.
//! - **A per-IP cap on open connections** ([`ConnectionSettings::max_per_ip`]):
//!   past it, a new connection is closed as soon as it is accepted, before a
//!   byte is read, so one address cannot hold all of the node's sockets.
//!
//! Shutdown follows mini-redis: every connection task holds a clone of a
//! watch receiver, and the loop, once stopped, waits until the last clone is
//! dropped. When `stopping` is cancelled the loop stops accepting and asks
//! each connection to finish its in-flight request and close.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Duration,
};

mod direct;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::watch,
};
use tokio_util::sync::CancellationToken;

/// How connections are accepted and held.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// The longest a client may take to send a request head (and the longest
    /// a kept-alive connection may sit idle between requests).
    pub header_read_timeout: Duration,
    /// Connections one IP address may hold open at once; 0 means no cap
    /// (the default: behind a proxy, every client has the proxy's address).
    pub max_per_ip: usize,
    /// Connections the kernel queues before they are accepted (see [`bind`]).
    pub backlog: u32,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings { header_read_timeout: Duration::from_secs(5), max_per_ip: 0, backlog: 4096 }
    }
}

/// Binds `address` (`host:port`) with a listen backlog of `backlog`.
///
/// Why not `TcpListener::bind`: it asks for a backlog of 1,024. In a
/// reconnect storm thousands of clients connect within a second; once the
/// queue is full the kernel drops their handshakes, and each client waits
/// for its own retransmission, a second or more, while the node sits idle
/// (one of six storm trials took 7.9 s instead of about 2, with
/// `TcpExtListenOverflows` counting the drops; BENCHMARKS.md). The kernel
/// caps the backlog at `net.core.somaxconn` (4,096 by default on Linux 5.4
/// and later).
pub async fn bind(address: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for candidate in tokio::net::lookup_host(address).await? {
        let socket = match candidate {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        // As `TcpListener::bind` does: a restarted node can bind its port
        // while the old one's connections are in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        match socket.bind(candidate).and_then(|()| socket.listen(backlog)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{address} names no address"))))
}

/// Serves `router` on `listener` until `stop` completes, then cancels
/// `stopping` (which ends open streams and asks every connection to close
/// once its in-flight request is answered) and waits for the last
/// connection to close. The caller bounds that wait.
pub async fn serve(listener: TcpListener, router: Router, settings: &ConnectionSettings, stop: impl Future<Output = ()>, stopping: CancellationToken) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true)
        .half_close(false);
    let http = Arc::new(http);
    let per_ip = Arc::new(PerIp { max: settings.max_per_ip, open: Mutex::default() });
    // Each connection task holds a receiver; `closed()` on the sender
    // completes when the last one is dropped.
    let (all_closed, connection_alive) = watch::channel(());
    tokio::pin!(stop);
    loop {
        let (socket, peer) = tokio::select! {
            () = &mut stop => break,
            () = stopping.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let Some(slot) = PerIp::admit(&per_ip, peer) else {
            metrics::counter!("tidings_connections_refused_total", "reason" => "per_ip").increment(1);
            tracing::debug!(peer = %peer.ip(), "connection refused: too many open from this address");
            drop(socket);
            continue;
        };
        // An event is written as soon as it is ready: without this, Nagle's
        // algorithm holds a small write back while an earlier one is not
        // yet acknowledged, and a client that delays its ACKs (up to 40 ms
        // on Linux) delays the event as long.
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set");
        }
        let (http, router, stopping, alive) = (http.clone(), router.clone(), stopping.clone(), connection_alive.clone());
        let header_read_timeout = settings.header_read_timeout;
        tokio::spawn(async move {
            serve_connection(socket, &http, router, header_read_timeout, stopping).await;
            drop(slot);
            drop(alive);
        });
    }
    drop(listener);
    stopping.cancel();
    drop(connection_alive);
    all_closed.closed().await;
}

/// Serves one connection: a stream opened by its first request directly
/// (see [`direct`]), anything else through hyper.
async fn serve_connection(mut socket: TcpStream, http: &http1::Builder, router: Router, header_read_timeout: Duration, stopping: CancellationToken) {
    let first = tokio::select! {
        first = direct::first_request(&mut socket, header_read_timeout) => first,
        () = stopping.cancelled() => return,
    };
    let read = match first {
        direct::FirstRequest::Stream(request) => return direct::serve_stream(socket, *request, router).await,
        direct::FirstRequest::Gone => return,
        direct::FirstRequest::Other(read) => read,
    };
    // Boxed: a stream connection's task does not carry the size of hyper's
    // connection state.
    let mut connection = Box::pin(http.serve_connection(TokioIo::new(direct::Replayed::new(read, socket)), TowerToHyperService::new(router)));
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        () = stopping.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = outcome {
        // Timeouts and clients that vanish mid-request end here; none of it
        // is the server's fault.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// An accept error. Errors about one connection (it was reset before we
/// took it) are skipped; others (out of file descriptors) would repeat at
/// once, so the loop pauses before trying again, as `axum::serve` does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Open connections per IP address. A std `Mutex`: it is held for one map
/// operation, never across an await.
struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection's place in its address's count, given back when
/// the connection ends.
struct Slot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// A slot for a connection from `peer`, or `None` when its address holds
    /// the maximum already. Without a cap, no slot is needed and nothing is
    /// counted.
    fn admit(per_ip: &Arc<PerIp>, peer: SocketAddr) -> Option<Option<Slot>> {
        if per_ip.max == 0 {
            return Some(None);
        }
        let ip = peer.ip();
        let mut open = per_ip.open.lock().expect("the per-IP map is never poisoned");
        let count = open.entry(ip).or_insert(0);
        if *count >= per_ip.max {
            return None;
        }
        *count += 1;
        Some(Some(Slot { per_ip: per_ip.clone(), ip }))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.per_ip.open.lock().expect("the per-IP map is never poisoned");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_slots_back_when_connections_end() {
        let per_ip = Arc::new(PerIp { max: 2, open: Mutex::default() });
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:1000".parse().unwrap();
        let first = PerIp::admit(&per_ip, a).unwrap();
        let _second = PerIp::admit(&per_ip, a).unwrap();
        assert!(PerIp::admit(&per_ip, a).is_none(), "the third from one address is refused");
        assert!(PerIp::admit(&per_ip, b).is_some(), "another address is not affected");
        drop(first);
        assert!(PerIp::admit(&per_ip, a).is_some(), "a slot is given back");
    }

    #[test]
    fn without_a_cap_nothing_is_counted() {
        let per_ip = Arc::new(PerIp { max: 0, open: Mutex::default() });
        for _ in 0..10 {
            assert!(matches!(PerIp::admit(&per_ip, "10.0.0.1:1".parse().unwrap()), Some(None)));
        }
        assert!(per_ip.open.lock().unwrap().is_empty());
    }
}
