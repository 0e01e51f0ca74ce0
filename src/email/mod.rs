//! Email: the outbox channel that sends what a user has not seen on the
//! page, over SMTP (lettre, rustls).
//!
//! - **Configured** only when `TIDINGS_SMTP_URL` is set: `smtp://host:25`
//!   (plain), `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465`
//!   (TLS), with `user:password@` for AUTH. The URL is a secret: it never
//!   prints.
//! - **Late on purpose.** An email row falls due `TIDINGS_EMAIL_DELAY_SECS`
//!   after the publish, its due time rounded up to the next multiple of
//!   `TIDINGS_EMAIL_DIGEST_SECS`; the outbox skips it if the notification
//!   was read by then ([`crate::outbox`]).
//! - **Digests.** The rows of one user that fall due together are handed
//!   over at once ([`Channel::deliver_group`]) and go out as one mail, "3
//!   new notifications"; each row of it is `sent` when the server accepts it.
//! - **Links** ([`links`]): the mail's `List-Unsubscribe` (RFC 8058 one
//!   click) and the tracked `/v1/r/...` links are signed tokens, checked
//!   by the HTTP handlers in `crate::http::email`.
//! - **Faults.** Any answer of the SMTP server other than acceptance (4xx,
//!   5xx), a refused connection or a timeout is retried by the outbox with
//!   backoff, then `failed` with the server's words; publishing never waits
//!   for any of it.

pub mod links;
pub mod message;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use futures_util::future::BoxFuture;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor, message::Mailbox};
use secrecy::{ExposeSecret, SecretString};

use crate::outbox::{Channel, ChannelKind, Contact, Delivery, DeliveryError, RenderedNotification};
use links::LinkSigner;
use message::MailBuilder;

/// How the hub sends email.
#[derive(Clone)]
pub struct EmailSettings {
    /// `smtp://`, `smtp://...?tls=required` or `smtps://`, with credentials.
    pub smtp_url: SecretString,
    /// The sender, `Name <address>` or a bare address.
    pub from: String,
    /// Signs unsubscribe and redirect links when the JWT key is public (no
    /// shared secret to sign with); otherwise the JWT secret signs them.
    pub link_secret: Option<SecretString>,
}

impl std::fmt::Debug for EmailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSettings")
            .field("smtp_url", &redacted_url(self.smtp_url.expose_secret()))
            .field("from", &self.from)
            .field("link_secret", &self.link_secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The URL with its password hidden, for logs and `Debug`.
fn redacted_url(url: &str) -> String {
    crate::config::redact_url(url)
}

/// The email channel.
pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    mail: MailBuilder,
    links: Arc<LinkSigner>,
}

impl EmailChannel {
    /// A channel sending through `settings.smtp_url`, giving up on one
    /// attempt after `timeout` (well within the outbox lease).
    pub fn new(settings: &EmailSettings, links: Arc<LinkSigner>, timeout: Duration) -> anyhow::Result<Self> {
        let url = settings.smtp_url.expose_secret();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .with_context(|| format!("TIDINGS_SMTP_URL {} (smtp://, smtp://...?tls=required or smtps://)", redacted_url(url)))?
            .timeout(Some(timeout))
            .build();
        let from: Mailbox = settings.from.parse().with_context(|| format!("TIDINGS_EMAIL_FROM {:?} is not an address", settings.from))?;
        Ok(EmailChannel { transport, mail: MailBuilder::new(from), links })
    }

    /// Sends one mail of `items` (all of one user).
    async fn send(&self, items: &[(&Delivery, &RenderedNotification)], contact: &Contact) -> Result<(), DeliveryError> {
        let Some(to) = contact.email.as_deref() else {
            return Err(DeliveryError::permanent("the user's contact has no email address"));
        };
        let message = self.mail.build(to, items, &self.links).map_err(|e| DeliveryError::permanent(e.0))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // 4xx and 5xx, refused connections and timeouts alike: a 5xx from a
            // misconfigured relay is as passing as its outage, and the outbox
            // gives up after its limit anyway.
            Err(e) => Err(DeliveryError::retryable(format!("SMTP: {}", error_chain(&e)))),
        }
    }
}

/// An error with its causes (lettre's own message omits the server's words).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl Channel for EmailChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery, notification: &'a RenderedNotification, contact: &'a Contact) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let items = [(delivery, notification)];
            self.send(&items, contact).await
        })
    }

    fn groups_per_user(&self) -> bool {
        true
    }

    fn deliver_group<'a>(&'a self, items: &'a [(Delivery, RenderedNotification)], contact: &'a Contact) -> BoxFuture<'a, Vec<Result<(), DeliveryError>>> {
        Box::pin(async move {
            let refs: Vec<(&Delivery, &RenderedNotification)> = items.iter().map(|(d, n)| (d, n)).collect();
            // One mail: every row of it shares its fate.
            let result = self.send(&refs, contact).await;
            vec![result; items.len()]
        })
    }
}
