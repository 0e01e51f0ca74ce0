//! The mail itself: one notification, or a digest of several of one user,
//! as `multipart/alternative` (plain text and HTML) with the headers that
//! mailbox providers expect of notification mail:
//!
//! - `List-Unsubscribe: <https://hub/v1/unsubscribe/TOKEN>` and
//!   `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058), so the
//!   provider's own "unsubscribe" button turns the types off in one POST;
//! - `Message-ID` from the delivery's idempotency id, the same on every
//!   retry, so a duplicate after a crash can be recognised;
//! - `Auto-Submitted: auto-generated` (RFC 3834), so vacation responders
//!   stay quiet.
//!
//! The layout is a minijinja template with HTML auto-escaping: titles and
//! bodies are escaped; a type's `email_html` part, already rendered (and
//! escaped) from its template, is inserted as it is.

use lettre::{
    Message,
    message::{
        Mailbox, MultiPart,
        header::{Header, HeaderName, HeaderValue},
    },
};
use minijinja::{AutoEscape, Environment, Value, context, value::Serde};
use serde::Serialize;

use super::links::LinkSigner;
use crate::outbox::{Delivery, RenderedNotification};

/// `List-Unsubscribe` (RFC 2369), as lettre has no type for it.
#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

/// `Auto-Submitted: auto-generated` (RFC 3834).
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(AutoSubmitted)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

const TEXT: &str = r#"{% if items|length > 1 %}You have {{ items|length }} new notifications.

{% endif %}{% for item in items %}{% if items|length > 1 %}{{ loop.index }}. {{ item.subject }}
{% endif %}{{ item.text }}
{% if item.link %}
Open: {{ item.link }}
{% endif %}
{% endfor %}--
You get these emails because email is on for {{ types|join(", ") }}.
Turn it off: {{ unsubscribe }}
"#;

const HTML: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>{{ subject }}</title></head>
<body style="font-family: system-ui, sans-serif; line-height: 1.5; color: #1f2328;">
{% if items|length > 1 %}<p>You have {{ items|length }} new notifications.</p>
{% endif %}{% for item in items %}<div style="margin: 0 0 1.5em;">
{% if items|length > 1 %}<h2 style="font-size: 1.1em; margin: 0 0 .25em;">{{ item.subject }}</h2>
{% endif %}{% if item.html %}{{ item.html|safe }}{% else %}<p style="white-space: pre-line; margin: 0;">{{ item.text }}</p>{% endif %}
{% if item.link %}<p style="margin: .5em 0 0;"><a href="{{ item.link }}">Open</a></p>
{% endif %}</div>
{% endfor %}<hr style="border: 0; border-top: 1px solid #d0d7de;">
<p style="font-size: .85em; color: #57606a;">You get these emails because email is on for {{ types|join(", ") }}. <a href="{{ unsubscribe }}">Turn it off</a>.</p>
</body></html>
"#;

/// One notification in the layout.
#[derive(Serialize)]
struct Item<'a> {
    subject: &'a str,
    text: &'a str,
    html: Option<&'a str>,
    /// The tracked link to the notification's `action_url`, if it has one.
    link: Option<String>,
}

/// Builds mails: the layout, the sender and the link signer.
pub struct MailBuilder {
    env: Environment<'static>,
    from: Mailbox,
    /// The domain in `Message-ID`s: the sender's.
    domain: String,
}

/// Why a mail could not be built: no retry changes it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

impl MailBuilder {
    /// A builder sending as `from`.
    pub fn new(from: Mailbox) -> Self {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| if name.ends_with(".html") { AutoEscape::Html } else { AutoEscape::None });
        env.add_template("mail.txt", TEXT).expect("the text layout parses");
        env.add_template("mail.html", HTML).expect("the HTML layout parses");
        let domain = from.email.domain().to_owned();
        MailBuilder { env, from, domain }
    }

    /// The mail of `items` (one notification, or a digest) to `to`.
    pub fn build(&self, to: &str, items: &[(&Delivery, &RenderedNotification)], links: &LinkSigner) -> Result<Message, BuildError> {
        let (first, _) = items.first().ok_or_else(|| BuildError("a mail of nothing".into()))?;
        let to: Mailbox = to.parse().map_err(|e| BuildError(format!("the address {to:?}: {e}")))?;
        let user = first.user_id.as_str();
        let mut types: Vec<&str> = items.iter().map(|(_, n)| n.kind.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        let unsubscribe = links.unsubscribe_url(user, &types).map_err(|e| BuildError(e.to_string()))?;
        let mut rendered = Vec::with_capacity(items.len());
        for (delivery, notification) in items {
            let link = match notification.action_url {
                Some(_) => Some(links.redirect_url(&delivery.user_id, notification.id, "email").map_err(|e| BuildError(e.to_string()))?),
                None => None,
            };
            rendered.push(Item { subject: &notification.email_subject, text: &notification.email_text, html: notification.email_html.as_deref(), link });
        }
        let subject = match items {
            [(_, only)] => only.email_subject.clone(),
            many => format!("{} new notifications", many.len()),
        };
        let context = context! { items => Value::from(Serde(&rendered)), subject => &subject, types => Value::from(Serde(&types)), unsubscribe => &unsubscribe };
        let render = |name: &str| self.env.get_template(name).and_then(|t| t.render(&context)).map_err(|e| BuildError(format!("the mail layout: {e}")));
        let (text, html) = (render("mail.txt")?, render("mail.html")?);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}@{}>", first.idempotency_id, self.domain)))
            .header(ListUnsubscribe(format!("<{unsubscribe}>")))
            .header(ListUnsubscribePost)
            .header(AutoSubmitted)
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| BuildError(format!("building the mail: {e}")))
    }
}
