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
    let mut request = client.get(&spec.url).header("accept", "text/event-stream");
    for (name, value) in &spec.headers {
        request = request.header(name, value);
    }
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = tokio::time::timeout(timeout, request.send())
        .await
        .with_context(|| format!("no answer within {timeout:?}"))??;
    if !response.status().is_success() {
        bail!("status {}", response.status());
    }
    Ok(response.bytes_stream().eventsource())
}
