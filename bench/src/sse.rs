//! Opening SSE connections: an HTTP/1.1 GET whose body is parsed by
//! eventsource-stream (never by hand), from a chosen source address.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context, bail};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::Stream;

use crate::target::ConnSpec;

/// A client for streams, bound to `source` when given. Streams have no
/// overall timeout (they last the whole run); connecting has one.
pub fn stream_client(source: Option<IpAddr>, connect_timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .pool_max_idle_per_host(0);
    if let Some(ip) = source {
        builder = builder.local_address(ip);
    }
    Ok(builder.build()?)
}

/// Opens the stream `spec` describes, resuming after `last_event_id` if
/// given, and returns its events once the server answered 200.
pub async fn open(
    client: &reqwest::Client,
    spec: &ConnSpec,
    last_event_id: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<impl Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + use<>> {
    match try_open(client, spec, last_event_id, timeout).await {
        Ok(events) => Ok(events),
        Err(OpenError::Refused { status, .. } | OpenError::Status(status)) => bail!("status {status}"),
        Err(OpenError::Connect(e)) => Err(e),
    }
}

/// Why a stream did not open.
#[derive(Debug)]
pub enum OpenError {
    /// 503 or 429: the server asks to come back after `retry_after` (its
    /// `Retry-After` in seconds, or 1 s without one).
    Refused { status: u16, retry_after: Duration },
    /// Any other status that is not 2xx.
    Status(u16),
    /// No answer: connection refused or reset, timeout.
    Connect(anyhow::Error),
}

/// [`open`], telling refusals (which EventSource-like clients retry after
/// `Retry-After`) from other failures.
pub async fn try_open(
    client: &reqwest::Client,
    spec: &ConnSpec,
    last_event_id: Option<&str>,
    timeout: Duration,
) -> Result<impl Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + use<>, OpenError> {
    let mut request = client.get(&spec.url).header("accept", "text/event-stream");
    for (name, value) in &spec.headers {
        request = request.header(name, value);
    }
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = tokio::time::timeout(timeout, request.send())
        .await
        .with_context(|| format!("no answer within {timeout:?}"))
        .map_err(OpenError::Connect)?
        .map_err(|e| OpenError::Connect(e.into()))?;
    let status = response.status();
    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs);
        return Err(OpenError::Refused { status: status.as_u16(), retry_after });
    }
    if !status.is_success() {
        return Err(OpenError::Status(status.as_u16()));
    }
    Ok(response.bytes_stream().eventsource())
}
