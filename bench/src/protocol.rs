//! The line protocol between the coordinator and its worker processes: one
//! JSON value per line, setup and commands on the worker's stdin, replies on
//! its stdout.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{metrics::Tally, target::ConnSpec};

/// The first line a worker reads: what to connect to, and from where.
#[derive(Debug, Serialize, Deserialize)]
pub struct Setup {
    /// Source address for every connection of this worker.
    pub source: Option<IpAddr>,
    pub conns: Vec<ConnSpec>,
    /// Connections being opened at once.
    pub connect_concurrency: usize,
    pub connect_timeout_secs: u64,
    /// The worker exits by itself after this long, whatever happens.
    pub lifetime_secs: u64,
    /// Streams behave as EventSource does: a refused open (503 or 429) is
    /// retried after its `Retry-After`, a connection error after 1 s, and a
    /// stream that ends (or is dropped on [`Command::Drop`]) reconnects with
    /// its `Last-Event-ID`. Without it a stream is opened once and an end is
    /// final.
    #[serde(default)]
    pub resume: bool,
}

/// What the coordinator asks.
#[derive(Debug, Serialize, Deserialize)]
pub enum Command {
    /// Reply with [`Reply::Progress`].
    Progress,
    /// Reply with [`Reply::Final`].
    Final,
    /// Close every connection and exit.
    Stop,
    /// Close every stream at once; with [`Setup::resume`], each reconnects
    /// at once with its `Last-Event-ID`. Replied to with [`Reply::Dropped`].
    Drop,
}

/// What a worker says.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Every connection attempt is over: how many succeeded, and the first
    /// few errors.
    Connected { ok: u64, failed: u64, errors: Vec<String> },
    /// Deliveries so far (first deliveries only).
    Progress {
        delivered: u64,
        disconnects: u64,
        /// Streams live again after [`Command::Drop`] (their first
        /// `unread_count` after reconnecting).
        #[serde(default)]
        live_again: u64,
    },
    /// Every stream was told to drop.
    Dropped { streams: u64 },
    /// The full tally.
    Final(Tally),
}
