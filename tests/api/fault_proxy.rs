//! A small TCP fault proxy, put between a node and PostgreSQL or Redis so
//! that a test can break the network on purpose (no such tool is packaged
//! on this machine, and the fault must be switchable mid-test).
//!
//! It listens on port 0 and forwards every connection to its target. The
//! test switches its [`Fault`] at any time, for connections open and new:
//!
//! - [`Fault::Pass`]: bytes flow as they came;
//! - [`Fault::Cut`]: every connection is closed with a reset, and new ones
//!   are reset as soon as they are accepted (a crashed server, a refused
//!   port);
//! - [`Fault::Blackhole`]: connections are accepted, nothing is forwarded
//!   either way and nothing is answered (a partition: packets vanish). A
//!   connection that lived through a blackhole has lost bytes, so it is
//!   reset when the fault ends, as TCP would give up on it;
//! - [`Fault::Latency`]: each chunk is delivered that much later than it
//!   arrived, in both directions, in order.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Cut,
    Blackhole,
    Latency(Duration),
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    fault: watch::Sender<Fault>,
    accepting: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy in front of `target` (`host:port`), passing traffic.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("the proxy binds");
        let addr = listener.local_addr().unwrap();
        let (fault, watching) = watch::channel(Fault::Pass);
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                tokio::spawn(connection(client, target, watching.clone()));
            }
        });
        FaultProxy { addr, fault, accepting }
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault for every connection, open or new.
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        // Open connections see the sender go and close.
    }
}

/// Closes `stream` with a reset rather than a polite FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// One client connection, forwarded to a fresh connection to `target`.
async fn connection(client: TcpStream, target: SocketAddr, mut fault: watch::Receiver<Fault>) {
    // Wait out a blackhole before connecting; refuse while cut.
    let now = *fault.borrow_and_update();
    match now {
        Fault::Cut => return reset(client),
        Fault::Blackhole => {
            // Hold the socket, answer nothing, read nothing, until the fault changes.
            if fault.changed().await.is_err() {
                return;
            }
            // Whatever the client sent meanwhile is lost: give up on it.
            return reset(client);
        }
        Fault::Pass | Fault::Latency(_) => {}
    }
    let Ok(server) = TcpStream::connect(target).await else { return reset(client) };
    // Every close from here on is a reset: a fault that ends the connection
    // must not pass for an orderly close.
    for stream in [&client, &server] {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_zero_linger();
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pump(client_read, server_write, fault.clone()));
    let down = tokio::spawn(pump(server_read, client_write, fault));
    let _ = tokio::join!(up, down);
}

/// Forwards one direction under the current fault, until a peer closes or
/// a fault ends the connection.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, mut fault: watch::Receiver<Fault>) {
    // Chunks go through a queue to a writer that delivers each at its due
    // time, so latency delays every chunk without serializing the delays.
    let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let deliver = tokio::spawn(async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    let mut blackholed = false;
    let ended_by_fault = loop {
        let current = *fault.borrow_and_update();
        match current {
            Fault::Cut => break true,
            Fault::Pass | Fault::Latency(_) if blackholed => break true,
            Fault::Blackhole => blackholed = true,
            _ => {}
        }
        tokio::select! {
            changed = fault.changed() => if changed.is_err() { break true },
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break false,
                Ok(n) => {
                    let delay = match *fault.borrow() {
                        Fault::Latency(delay) => delay,
                        Fault::Blackhole => continue, // vanishes
                        _ => Duration::ZERO,
                    };
                    if queue.send((Instant::now() + delay, buffer[..n].to_vec())).is_err() {
                        break false;
                    }
                }
            },
        }
    };
    drop(queue);
    if ended_by_fault {
        deliver.abort();
    } else {
        // A peer closed: deliver what is queued, then pass the close on.
        let _ = deliver.await;
    }
}
