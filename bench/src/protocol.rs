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
}

/// What a worker says.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// Every connection attempt is over: how many succeeded, and the first
    /// few errors.
    Connected { ok: u64, failed: u64, errors: Vec<String> },
    /// Deliveries so far (first deliveries only).
    Progress { delivered: u64, disconnects: u64 },
    /// The full tally.
    Final(Tally),
}
