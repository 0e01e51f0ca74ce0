//! The webhook channel: an HTTP POST to each registered endpoint that wants
//! the type, signed with the Standard Webhooks scheme (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`, by the `standardwebhooks`
//! crate). The body is the rendered notification and the recipient's
//! contact, so a backend can pass it on to channels the hub does not speak
//! (SMS, FCM, APNs).
//!
//! `webhook-id` is the delivery's idempotency id: the same on every retry.
//! `webhook-timestamp` is the attempt's time (the signature covers both).
//! A 2xx is delivered; a 5xx, 408, 429, timeout or connection failure is
//! retried; any other answer is final.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Serialize;

use super::{Channel, ChannelKind, Contact, Delivery, DeliveryError, RenderedNotification};
use crate::webhooks::Webhooks;

/// The event type in the payload.
const EVENT_TYPE: &str = "notification.created";

/// What an endpoint receives.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: chrono::DateTime<chrono::Utc>,
    data: PayloadData<'a>,
}

#[derive(Serialize)]
struct PayloadData<'a> {
    notification: &'a RenderedNotification,
    contact: &'a Contact,
}

/// Posts deliveries to the registered endpoints.
pub struct WebhookChannel {
    endpoints: Arc<Webhooks>,
    /// hyper-util's pooled client over rustls (ring, the Mozilla roots of
    /// webpki-roots): keep-alive connections per endpoint, no redirects
    /// followed, no process-wide TLS provider needed.
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The whole attempt's deadline: connect, send, answer.
    timeout: Duration,
}

/// The `User-Agent` of every delivery.
const USER_AGENT: &str = concat!("tidings/", env!("CARGO_PKG_VERSION"));

impl WebhookChannel {
    /// A channel over `endpoints` whose attempts give up after `timeout`
    /// (shorter than the outbox lease, so a slow endpoint is never
    /// delivered to twice at once).
    pub fn new(endpoints: Arc<Webhooks>, timeout: Duration) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(5))));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        Ok(WebhookChannel { endpoints, client, timeout })
    }

    async fn post(&self, delivery: &Delivery, notification: &RenderedNotification, contact: &Contact) -> Result<(), DeliveryError> {
        let target = delivery.target.as_deref().ok_or_else(|| DeliveryError::permanent("a webhook delivery names no endpoint"))?;
        let endpoint = self
            .endpoints
            .get(target)
            .await
            .map_err(|e| DeliveryError::retryable(format!("reading webhooks: {e}")))?
            .ok_or_else(|| DeliveryError::permanent("the webhook was deleted"))?;
        let now = chrono::Utc::now();
        let payload = serde_json::to_vec(&Payload { kind: EVENT_TYPE, timestamp: now, data: PayloadData { notification, contact } })
            .map_err(|e| DeliveryError::permanent(format!("encoding the payload: {e}")))?;
        let signer = standardwebhooks::Webhook::new(&endpoint.secret).map_err(|e| DeliveryError::permanent(format!("the webhook's secret: {e:?}")))?;
        let timestamp = now.timestamp();
        let signature = signer
            .sign(&delivery.idempotency_id, timestamp, &payload)
            .map_err(|e| DeliveryError::permanent(format!("signing: {e:?}")))?;
        let request = Request::post(&endpoint.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .header("webhook-id", &delivery.idempotency_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| DeliveryError::permanent(format!("the webhook's URL: {e}")))?;
        let attempt = async {
            let response = self.client.request(request).await.map_err(|e| format!("POST {}: {}", endpoint.url, error_chain(&e)))?;
            let status = response.status();
            // Read the (small) answer, so the connection goes back to the pool.
            let _ = response.into_body().collect().await;
            Ok::<_, String>(status)
        };
        let status = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(status)) => status,
            Ok(Err(message)) => return Err(DeliveryError::retryable(message)),
            Err(_) => return Err(DeliveryError::retryable(format!("POST {}: no answer within {} s", endpoint.url, self.timeout.as_secs_f32()))),
        };
        if status.is_success() {
            return Ok(());
        }
        let message = format!("POST {} answered {}", endpoint.url, status.as_u16());
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
            Err(DeliveryError::retryable(message))
        } else {
            Err(DeliveryError::permanent(message))
        }
    }
}

/// An error with its causes, for `last_error` (reqwest's own message
/// alone says only "error sending request").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Channel for WebhookChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    fn targets<'a>(&'a self, kind: &'a str) -> BoxFuture<'a, Vec<Option<String>>> {
        Box::pin(async move {
            match self.endpoints.matching(kind).await {
                Ok(ids) => ids.into_iter().map(Some).collect(),
                Err(e) => {
                    // A publish never fails for want of a webhook list: the
                    // notification is stored, and this is logged.
                    tracing::error!(error = %e, "reading webhooks for a publish failed; no webhook delivery written");
                    Vec::new()
                }
            }
        })
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery, notification: &'a RenderedNotification, contact: &'a Contact) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(self.post(delivery, notification, contact))
    }
}
