//! One lazily opened, shared Redis connection per user of Redis.
//!
//! A multiplexed connection is cheap to clone and serves concurrent
//! commands, so presence, typing and rate limits each keep one, open it on
//! first use (the node starts even while Redis is down), and drop it after
//! an error so the next command reconnects.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// How long opening a connection may take before the caller gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A Redis client with its cached connection.
pub struct SharedRedis {
    client: redis::Client,
    /// Held only while checking or replacing the cached connection, never
    /// while a command runs, so commands from many tasks proceed together.
    cached: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl SharedRedis {
    /// A handle on the Redis at `url`; nothing is opened yet.
    pub fn open(url: &str) -> redis::RedisResult<Self> {
        Ok(SharedRedis { client: redis::Client::open(url)?, cached: tokio::sync::Mutex::new(None) })
    }

    /// The shared connection, opened if needed.
    pub async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut cached = self.cached.lock().await;
        if let Some(connection) = cached.as_ref() {
            return Ok(connection.clone());
        }
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connecting to Redis timed out")))??;
        *cached = Some(connection.clone());
        Ok(connection)
    }

    /// Drops the cached connection after an error; the next call reconnects.
    pub async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}
