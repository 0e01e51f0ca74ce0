//! How this node opens Redis for commands: one
//! [`redis::aio::ConnectionManager`] per user of Redis (presence, typing,
//! rate limits, the bus's publisher).
//!
//! The manager is redis-rs's own answer to what was hand-written here
//! before: a multiplexed connection, cheap to clone and shared by
//! concurrent commands, opened on first use (so the node starts while
//! Redis is down) and reopened in the background when it breaks. On top
//! of its defaults we bound every wait: a Redis that is gone, or behind a
//! partition that answers nothing, costs a command [`TIMEOUT`], never a
//! request's whole deadline. (A command that timed out does not make the
//! manager reconnect by itself; a broken socket does.)
//!
//! Pub/sub subscriptions cannot use a manager; the bus keeps its own loop
//! for them (`hub::redis_bus`).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long connecting, or waiting for any one answer, may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// A manager for the Redis at `url`; nothing is opened yet.
pub fn connect(url: &str) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        // One quick retry per reconnection: while Redis is down, callers
        // get their error at once rather than after a long backoff; the
        // next command starts another reconnection.
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(redis::Client::open(url)?, config)
}
