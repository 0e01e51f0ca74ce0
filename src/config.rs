//! Settings: from environment variables and flags (each variable is also a
//! flag), resolved into one [`Settings`] value that `Application::build`
//! takes. Secrets never print: they are held as `secrecy` secrets, whose
//! `Debug` says `[REDACTED]`, and read only where used (`expose_secret`).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use secrecy::SecretString;
use clap::{Args, Parser, Subcommand};
use jsonwebtoken::Algorithm;

use crate::{
    auth::keys::KeySource, domain::preference::Channels, hub::StreamLimits, ratelimit::RateLimitSettings,
    retention::RetentionSettings, stream::StreamSettings,
};

/// The longest retention, in days: a hundred years. Beyond it, the days in
/// seconds overflow, and "now minus the retention" leaves the calendar.
const MAX_RETENTION_DAYS: u64 = 36_500;

/// The database used when none is configured: a file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://tidings.db?mode=rwc";

/// Everything the application needs to start. `Debug` is safe to log: the
/// URLs (which may carry passwords) and the key are secrets.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free one (tests).
    pub bind: String,
    pub database_url: SecretString,
    /// How long the database may take to hand out a connection, answer the
    /// readiness ping, or (PostgreSQL) commit a write batch. A database that
    /// vanished without closing its sockets (a partition) then costs a
    /// request this long, not the kernel's quarter of an hour.
    pub database_timeout: Duration,
    /// How SQLite syncs commits (ignored on PostgreSQL).
    pub sqlite_synchronous: crate::store::SqliteSync,
    /// The write queue and batch sizes.
    pub writer: crate::writer::WriterSettings,
    pub keys: KeySource,
    /// When set, every token must carry this `aud`.
    pub jwt_audience: Option<String>,
    /// Multi-node fan-out through Redis; `None` for a single node.
    pub redis_url: Option<SecretString>,
    /// Prefix of the Redis channel, so that several clusters can share one Redis.
    pub redis_namespace: String,
    /// How often a cluster node reads the log without a doorbell: the upper
    /// bound on delivery delay while Redis is down.
    pub tail_poll: Duration,
    pub stream: StreamSettings,
    /// Events a connection may fall behind before it catches up from the log.
    pub mailbox_capacity: usize,
    pub limits: Limits,
    /// Origins allowed to call the API from a browser (CORS); empty means
    /// same-origin only, `*` any origin without credentials.
    pub cors_origins: Vec<String>,
    /// Serve `/metrics` on this separate address instead of the main one.
    pub metrics_bind: Option<String>,
    /// How long in-flight requests may take to finish once stopping.
    pub shutdown_grace: Duration,
    pub rate_limits: RateLimitSettings,
    /// Channels of a type a user never set a preference for.
    pub default_channels: Channels,
    /// Broadcast topic patterns anyone may read, token or no topic claim.
    pub public_topics: Vec<String>,
    /// How often the hub publishes its own figures to the public topic
    /// `tidings:status` (see [`crate::status`]); `None`: never.
    pub status_topic_every: Option<Duration>,
    pub retention: RetentionSettings,
    /// How long a `typing: true` lasts without renewal.
    pub typing_expiry: Duration,
    /// Deliveries beyond the page: retries, leases, the email delay.
    pub outbox: crate::outbox::OutboxSettings,
    /// The email channel; `None` (no `TIDINGS_SMTP_URL`): not configured.
    pub email: Option<crate::email::EmailSettings>,
    /// The hub's address as users reach it, for absolute links in mail
    /// (unsubscribe, tracked links); `None`: `http://` and the bound address.
    pub public_url: Option<String>,
    /// How long after their last stream closes a user turns offline.
    pub presence_grace: Duration,
    /// Who sees a user's presence.
    pub presence_visibility: crate::presence::Visibility,
    /// Print a ready-to-use demo (page URL, curl command) at start: only on a
    /// zero-configuration first run, never with operator-supplied keys.
    pub print_demo: bool,
    /// The longest lifetime of a token: how long a revocation is kept.
    pub max_token_lifetime: Duration,
    /// How sockets are accepted and held: the header timeout, the per-IP cap.
    pub connections: crate::server::ConnectionSettings,
    /// Web Push: the VAPID key and subject, when to push.
    pub push: crate::push::PushSettings,
}

/// Protections against oversized or slow requests and stream exhaustion.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body; larger ones answer 413.
    pub max_body_bytes: usize,
    /// Deadline of every request but the stream; past it, 503.
    pub request_timeout: Duration,
    pub streams: StreamLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 512 * 1024,
            request_timeout: Duration::from_secs(30),
            streams: StreamLimits::default(),
        }
    }
}

/// Hides the password of a `scheme://user:password@host` URL.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// The `tidings` command line.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about = "A real-time notification hub: one SSE stream per user, lossless resume.")]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve`'s flags, so that plain `tidings` serves.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the hub (the default).
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Print a signed JWT (HS256) for a user, for scripts and trials.
    Token(TokenArgs),
}

/// Where the database is.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://FILE?mode=rwc` or `postgres://USER@HOST/DB`.
    #[arg(long, env = "TIDINGS_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

/// How tokens are verified.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// HS256 secret (at least 16 bytes). Unset: a random one is generated and
    /// kept beside the database.
    #[arg(long, env = "TIDINGS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM file of an RS256 or ES256 public key; replaces the secret.
    #[arg(long, env = "TIDINGS_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Algorithm of the public key.
    #[arg(long, env = "TIDINGS_JWT_ALGORITHM", default_value = "RS256", value_parser = ["RS256", "ES256"])]
    pub jwt_algorithm: String,
    /// Required `aud` claim, if any.
    #[arg(long, env = "TIDINGS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// `tidings serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TIDINGS_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Redis URL for fan-out across nodes (all nodes on one PostgreSQL database).
    #[arg(long, env = "TIDINGS_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Channel prefix in Redis, to share one Redis between clusters.
    #[arg(long, env = "TIDINGS_REDIS_NAMESPACE", default_value = "tidings")]
    pub redis_namespace: String,
    /// Seconds between `: ping` comments on idle streams.
    #[arg(long, env = "TIDINGS_HEARTBEAT_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_secs: u64,
    /// Streams that may read their starting state at once; a surge beyond
    /// it takes turns, and an open that waits more than
    /// `TIDINGS_OPEN_WAIT_SECS` gets 503 with `Retry-After` before any byte.
    #[arg(long, env = "TIDINGS_MAX_OPENING_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_opening_streams: u64,
    /// Seconds an open may wait for its turn before it is refused with 503.
    /// Long on purpose: a browser's `EventSource` does not reconnect after
    /// a 503 (only the page's own code can), and a refused open that comes
    /// back costs its connection and authentication twice; a waiting one
    /// costs a socket and a few hundred bytes.
    #[arg(long, env = "TIDINGS_OPEN_WAIT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub open_wait_secs: u64,
    /// Streams opening at the same time whose starting state is read
    /// together, at most (1: each alone). Batches cost a third less CPU per
    /// open and about 1.4 KiB more memory per idle stream (BENCHMARKS.md,
    /// "opens read together").
    #[arg(long, env = "TIDINGS_OPEN_BATCH", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub open_batch: u64,
    /// Reconnection delay suggested to clients (`retry:`), in milliseconds.
    #[arg(long, env = "TIDINGS_RETRY_MS", default_value_t = 3000)]
    pub retry_ms: u64,
    /// Seconds the database may take to hand out a connection, answer
    /// `/readyz`'s ping, or (PostgreSQL) commit a write batch; beyond it
    /// the request gets 503 `unavailable`. Raise it for a distant database.
    #[arg(long, env = "TIDINGS_DATABASE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub database_timeout_secs: u64,
    /// SQLite only: `normal` survives a crash of the process, `full` also
    /// power loss (one fsync per write batch).
    #[arg(long, env = "TIDINGS_SQLITE_SYNCHRONOUS", value_enum, default_value_t = crate::store::SqliteSync::Normal)]
    pub sqlite_synchronous: crate::store::SqliteSync,
    /// Writes that may wait for the writer; beyond it a write gets 503 with `Retry-After`.
    #[arg(long, env = "TIDINGS_WRITE_QUEUE", default_value_t = 8192, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub write_queue: u64,
    /// Events a stream may fall behind before it catches up from the log.
    #[arg(long, env = "TIDINGS_MAILBOX_CAPACITY", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub mailbox_capacity: u64,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, env = "TIDINGS_MAX_BODY_BYTES", default_value_t = 512 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a request (other than the stream) may take (503 beyond).
    #[arg(long, env = "TIDINGS_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,
    /// Open streams one user may hold on this node (429 beyond).
    #[arg(long, env = "TIDINGS_MAX_STREAMS_PER_USER", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub max_streams_per_user: u64,
    /// Open streams on this node (503 beyond). Default: the open-file limit minus 1,024.
    #[arg(long, env = "TIDINGS_MAX_STREAMS")]
    pub max_streams: Option<usize>,
    /// Comma-separated origins allowed by CORS, or `*`.
    #[arg(long, env = "TIDINGS_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Serve `/metrics` on this address instead of the main one.
    #[arg(long, env = "TIDINGS_METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// Seconds in-flight requests get to finish at shutdown.
    #[arg(long, env = "TIDINGS_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Notifications one recipient may receive of one type per minute.
    #[arg(long, env = "TIDINGS_RECIPIENT_RATE_PER_MINUTE", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    pub recipient_rate_per_minute: u32,
    /// Write requests (POST, PUT, DELETE) a user token may make at once.
    #[arg(long, env = "TIDINGS_CLIENT_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub client_burst: u32,
    /// Write requests a user token may make per second after the burst.
    #[arg(long, env = "TIDINGS_CLIENT_RATE_PER_SECOND", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub client_rate_per_second: u32,
    /// Broadcast topics every signed-in user may read, as patterns (`*` any
    /// run without `:`, `**` any run), comma-separated, e.g. `status,news:*`.
    #[arg(long, env = "TIDINGS_PUBLIC_TOPICS", value_delimiter = ',')]
    pub public_topics: Vec<String>,
    /// Seconds between the hub's own figures on the public topic
    /// `tidings:status` (the page's "Hub status" panel); 0: off. Unset: off,
    /// except every 5 s on a zero-configuration first run (no key configured).
    #[arg(long, env = "TIDINGS_STATUS_TOPIC_SECS", value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub status_topic_secs: Option<u64>,
    /// Channels on by default for types a user never set: any of `web`,
    /// `email`, `push`, `webhook`.
    #[arg(long, env = "TIDINGS_DEFAULT_CHANNELS", default_value = "web,webhook", value_delimiter = ',')]
    pub default_channels: Vec<String>,
    /// Days events are kept for resuming streams (at most 36,500: the
    /// retention cutoff is a date, and must stay one).
    #[arg(long, env = "TIDINGS_EVENT_RETENTION_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u64).range(1..=MAX_RETENTION_DAYS))]
    pub event_retention_days: u64,
    /// Events kept per user at most.
    #[arg(long, env = "TIDINGS_EVENTS_PER_USER", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub events_per_user: u64,
    /// Days read, expired and deleted notifications are kept (at most 36,500).
    #[arg(long, env = "TIDINGS_NOTIFICATION_RETENTION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=MAX_RETENTION_DAYS))]
    pub notification_retention_days: u64,
    /// Seconds a user stays online after their last stream closes.
    #[arg(long, env = "TIDINGS_PRESENCE_GRACE_SECS", default_value_t = 10)]
    pub presence_grace_secs: u64,
    /// Seconds a client may take to send a request head, and an idle
    /// kept-alive connection may wait for its next request (slowloris guard).
    #[arg(long, env = "TIDINGS_HEADER_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Connections one IP address may hold open; 0: no cap (behind a proxy
    /// every client has the proxy's address).
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// Connections the kernel may hold for the node before it accepts them
    /// (the listen backlog; the kernel caps it at `net.core.somaxconn`).
    #[arg(long, env = "TIDINGS_LISTEN_BACKLOG", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub listen_backlog: u32,
    /// The longest lifetime (`exp` - `iat`) of the tokens you issue, in
    /// seconds: a revocation is kept this long after its time.
    #[arg(long, env = "TIDINGS_MAX_TOKEN_LIFETIME_SECS", default_value_t = 30 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..=crate::auth::keys::MAX_TTL.as_secs()))]
    pub max_token_lifetime_secs: u64,
    /// Who sees a user's presence: `conversations` (everyone sharing a
    /// conversation) or `contacts` (only users who have both written in a
    /// conversation they share).
    #[arg(long, env = "TIDINGS_PRESENCE_VISIBILITY", value_enum, default_value_t = crate::presence::Visibility::Conversations)]
    pub presence_visibility: crate::presence::Visibility,
    /// Seconds after a publish before its email is sent; an email whose
    /// notification was read on the page by then is not sent.
    #[arg(long, env = "TIDINGS_EMAIL_DELAY_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=7 * 24 * 3600))]
    pub email_delay_secs: u64,
    /// Emails of one user falling due within this many seconds go out as
    /// one digest: due times are rounded up to a multiple of it. 0: no
    /// rounding (a digest only of rows due at the same instant).
    #[arg(long, env = "TIDINGS_EMAIL_DIGEST_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=24 * 3600))]
    pub email_digest_secs: u64,
    /// The SMTP server: `smtp://host:25`, `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS) or `smtps://user:pass@host:465` (TLS). Unset: no email channel.
    #[arg(long, env = "TIDINGS_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of mails, `Name <address>` or an address; needed with
    /// TIDINGS_SMTP_URL.
    #[arg(long, env = "TIDINGS_EMAIL_FROM")]
    pub email_from: Option<String>,
    /// The secret that signs unsubscribe and tracked links in mails (at
    /// least 16 bytes). Unset: the HS256 JWT secret signs them; needed when
    /// tokens are verified with a public key.
    #[arg(long, env = "TIDINGS_EMAIL_LINK_SECRET", hide_env_values = true)]
    pub email_link_secret: Option<String>,
    /// The hub's address as users reach it (`https://notify.example.com`),
    /// for the absolute links in mails. Unset: `http://` and TIDINGS_BIND.
    #[arg(long, env = "TIDINGS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The first retry's wait, in milliseconds; each next one doubles (with
    /// jitter) up to TIDINGS_OUTBOX_RETRY_MAX_SECS.
    #[arg(long, env = "TIDINGS_OUTBOX_RETRY_BASE_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub outbox_retry_base_ms: u64,
    /// The longest wait between two attempts of a delivery, in seconds.
    #[arg(long, env = "TIDINGS_OUTBOX_RETRY_MAX_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub outbox_retry_max_secs: u64,
    /// Attempts before a delivery is `failed`.
    #[arg(long, env = "TIDINGS_OUTBOX_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub outbox_max_attempts: u32,
    /// How long a worker holds a claimed delivery: after it, a delivery of a
    /// worker that died is taken again. Channels time out well before it.
    #[arg(long, env = "TIDINGS_OUTBOX_LEASE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub outbox_lease_secs: u64,
    /// Most deliveries a worker claims, and sends concurrently, at once.
    #[arg(long, env = "TIDINGS_OUTBOX_BATCH", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub outbox_batch: u64,
    /// The VAPID private key of Web Push: the raw 32-byte P-256 scalar in
    /// base64url (what `web-push generate-vapid-keys` prints). Unset: one is
    /// generated and kept beside the database (`<db>.vapid`, mode 0600).
    #[arg(long, env = "TIDINGS_VAPID_PRIVATE_KEY", hide_env_values = true)]
    pub vapid_private_key: Option<String>,
    /// The VAPID subject: how push services reach the operator, a `mailto:`
    /// or `https:` URL. Set it in production: some push services refuse
    /// the default.
    #[arg(long, env = "TIDINGS_VAPID_SUBJECT", default_value = crate::push::DEFAULT_SUBJECT)]
    pub vapid_subject: String,
    /// When a notification goes out by Web Push: `offline` (only if the user
    /// has no stream open when it falls due) or `always`.
    #[arg(long, env = "TIDINGS_PUSH_WHEN", value_enum, default_value_t = crate::push::PushWhen::Offline)]
    pub push_when: crate::push::PushWhen,
    /// Accept push endpoints over plain `http://` and on loopback or private
    /// addresses: for tests and local trials only.
    #[arg(long, env = "TIDINGS_PUSH_ALLOW_INSECURE", default_value_t = false)]
    pub push_allow_insecure: bool,
    /// Log format: `text` or `json`.
    #[arg(long, env = "TIDINGS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// `tidings token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Space-separated scopes: `publish` (backends), `admin` (revocations).
    #[arg(long)]
    pub scope: Option<String>,
    /// A broadcast topic pattern the token may read (`*` any run without
    /// `:`, `**` any run); repeat for several.
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Lifetime in seconds (at most a hundred years).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=crate::auth::keys::MAX_TTL.as_secs()))]
    pub ttl: u64,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
}

impl ServeArgs {
    /// Resolves flags into settings, generating the secret on a first run.
    pub fn into_settings(self) -> anyhow::Result<Settings> {
        let resolved = resolve_keys(&self.keys, &self.database.database_url)?;
        let vapid_path = crate::push::vapid::key_path(&self.database.database_url);
        let (vapid, generated) = crate::push::VapidKey::resolve(self.vapid_private_key.as_deref(), &vapid_path)?;
        if generated {
            tracing::warn!(path = %vapid_path.display(), "no TIDINGS_VAPID_PRIVATE_KEY: generated a VAPID key for Web Push and saved it; keep it (browsers subscribed with it), and set the same key on every node of a cluster");
        }
        if !self.vapid_subject.starts_with("mailto:") && !self.vapid_subject.starts_with("https://") {
            anyhow::bail!("TIDINGS_VAPID_SUBJECT must be a mailto: or https: URL");
        }
        Ok(Settings {
            bind: self.bind,
            database_url: self.database.database_url.into(),
            database_timeout: Duration::from_secs(self.database_timeout_secs),
            sqlite_synchronous: self.sqlite_synchronous,
            writer: crate::writer::WriterSettings { queue_capacity: self.write_queue as usize, ..Default::default() },
            keys: resolved.source,
            jwt_audience: self.keys.jwt_audience,
            redis_url: self.redis_url.map(SecretString::from),
            redis_namespace: self.redis_namespace,
            tail_poll: Duration::from_secs(1),
            stream: StreamSettings {
                heartbeat: Duration::from_secs(self.heartbeat_secs),
                max_opening: self.max_opening_streams as usize,
                open_deadline: Duration::from_secs(self.open_wait_secs),
                open_batch: self.open_batch as usize,
                retry: Duration::from_millis(self.retry_ms),
                ..StreamSettings::default()
            },
            mailbox_capacity: self.mailbox_capacity as usize,
            limits: Limits {
                max_body_bytes: self.max_body_bytes,
                request_timeout: Duration::from_secs(self.request_timeout_secs),
                streams: StreamLimits {
                    per_user: self.max_streams_per_user as usize,
                    total: self.max_streams.unwrap_or_else(|| crate::limits::open_files().saturating_sub(1024).max(1)),
                },
            },
            cors_origins: self.cors_origins.into_iter().map(|o| o.trim().to_owned()).filter(|o| !o.is_empty()).collect(),
            metrics_bind: self.metrics_bind,
            shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
            rate_limits: RateLimitSettings {
                recipient_per_minute: self.recipient_rate_per_minute,
                caller_burst: self.client_burst,
                caller_per_second: self.client_rate_per_second,
            },
            default_channels: parse_channels(&self.default_channels)?,
            public_topics: self.public_topics.into_iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect(),
            status_topic_every: crate::status::period(self.status_topic_secs, resolved.from_secret_file),
            retention: RetentionSettings {
                event_max_age: Duration::from_secs(self.event_retention_days * 24 * 3600),
                events_per_topic: self.events_per_user,
                notification_max_age: Duration::from_secs(self.notification_retention_days * 24 * 3600),
                ..RetentionSettings::default()
            },
            typing_expiry: Duration::from_secs(5),
            outbox: crate::outbox::OutboxSettings {
                email_delay: Duration::from_secs(self.email_delay_secs),
                email_digest: Duration::from_secs(self.email_digest_secs),
                retry_base: Duration::from_millis(self.outbox_retry_base_ms),
                retry_max: Duration::from_secs(self.outbox_retry_max_secs),
                max_attempts: self.outbox_max_attempts,
                lease: Duration::from_secs(self.outbox_lease_secs),
                batch: self.outbox_batch as usize,
                ..crate::outbox::OutboxSettings::default()
            },
            email: email_settings(self.smtp_url, self.email_from, self.email_link_secret)?,
            public_url: public_url(self.public_url)?,
            presence_grace: Duration::from_secs(self.presence_grace_secs),
            presence_visibility: self.presence_visibility,
            print_demo: resolved.from_secret_file,
            max_token_lifetime: Duration::from_secs(self.max_token_lifetime_secs),
            connections: crate::server::ConnectionSettings {
                header_read_timeout: Duration::from_secs(self.header_timeout_secs),
                max_per_ip: self.max_connections_per_ip,
                backlog: self.listen_backlog,
            },
            push: crate::push::PushSettings {
                vapid: Some(std::sync::Arc::new(vapid)),
                subject: self.vapid_subject,
                when: self.push_when,
                allow_insecure: self.push_allow_insecure,
            },
        })
    }
}

/// The email settings, when an SMTP server is configured.
fn email_settings(smtp_url: Option<String>, from: Option<String>, link_secret: Option<String>) -> anyhow::Result<Option<crate::email::EmailSettings>> {
    let Some(smtp_url) = smtp_url.filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let from = from.filter(|f| !f.trim().is_empty()).context("TIDINGS_SMTP_URL is set: TIDINGS_EMAIL_FROM must name the sender")?;
    if link_secret.as_ref().is_some_and(|s| s.len() < 16) {
        anyhow::bail!("TIDINGS_EMAIL_LINK_SECRET must be at least 16 bytes");
    }
    Ok(Some(crate::email::EmailSettings { smtp_url: smtp_url.into(), from, link_secret: link_secret.map(Into::into) }))
}

/// Checks `TIDINGS_PUBLIC_URL`: an absolute http(s) URL.
fn public_url(raw: Option<String>) -> anyhow::Result<Option<String>> {
    let Some(raw) = raw.filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let parsed = url::Url::parse(raw.trim()).with_context(|| format!("TIDINGS_PUBLIC_URL {raw:?} is not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        anyhow::bail!("TIDINGS_PUBLIC_URL {raw:?} must be an http(s) URL with a host");
    }
    Ok(Some(parsed.as_str().trim_end_matches('/').to_owned()))
}

fn parse_channels(names: &[String]) -> anyhow::Result<Channels> {
    let mut channels = Channels { web: false, email: false, push: false, webhook: false };
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match name {
            "web" => channels.web = true,
            "email" => channels.email = true,
            "push" => channels.push = true,
            "webhook" => channels.webhook = true,
            other => anyhow::bail!("unknown channel {other:?} in TIDINGS_DEFAULT_CHANNELS (web, email, push, webhook)"),
        }
    }
    Ok(channels)
}

/// Keys, and whether they came from the generated secret file.
pub struct ResolvedKeys {
    pub source: KeySource,
    pub from_secret_file: bool,
}

/// Picks the verification key: a public key, else the configured secret,
/// else the secret file beside the database (created on first use).
pub fn resolve_keys(args: &KeyArgs, database_url: &str) -> anyhow::Result<ResolvedKeys> {
    if let Some(path) = &args.jwt_public_key {
        let pem = std::fs::read(path).with_context(|| format!("reading the JWT public key {}", path.display()))?;
        let algorithm = if args.jwt_algorithm == "ES256" { Algorithm::ES256 } else { Algorithm::RS256 };
        return Ok(ResolvedKeys { source: KeySource::PublicKey { algorithm, pem }, from_secret_file: false });
    }
    if let Some(secret) = &args.jwt_secret {
        return Ok(ResolvedKeys { source: KeySource::Secret(secret.as_bytes().to_vec().into()), from_secret_file: false });
    }
    let path = secret_path(database_url);
    let secret = match std::fs::read_to_string(&path) {
        Ok(existing) => existing.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = hex::encode(rand::random::<[u8; 32]>());
            write_private(&path, &secret).with_context(|| format!("writing the generated secret to {}", path.display()))?;
            tracing::warn!(path = %path.display(), "no TIDINGS_JWT_SECRET: generated a random secret and saved it; set TIDINGS_JWT_SECRET in production");
            secret
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(ResolvedKeys { source: KeySource::Secret(secret.into_bytes().into()), from_secret_file: true })
}

/// Beside the SQLite file (`tidings.db` → `tidings.db.secret`), or in the
/// working directory for other databases.
pub fn secret_path(database_url: &str) -> PathBuf {
    let sqlite_file = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|file| !file.is_empty() && !file.starts_with(":memory:"));
    match sqlite_file {
        Some(file) => PathBuf::from(format!("{file}.secret")),
        None => PathBuf::from("tidings.secret"),
    }
}

/// Writes a generated secret readable by its owner only (mode 0600), and
/// never over an existing file.
pub fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(secret.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_lives_beside_the_sqlite_file() {
        assert_eq!(secret_path("sqlite://tidings.db?mode=rwc"), PathBuf::from("tidings.db.secret"));
        assert_eq!(secret_path("sqlite:///var/lib/t/hub.db"), PathBuf::from("/var/lib/t/hub.db.secret"));
        assert_eq!(secret_path("postgres://u@h/db"), PathBuf::from("tidings.secret"));
    }

    #[test]
    fn durations_that_would_overflow_a_clock_or_a_calendar_are_refused_at_parse_time() {
        for args in [
            &["tidings", "--event-retention-days", "1000000000"][..],
            &["tidings", "--notification-retention-days", "213503982334601"],
            &["tidings", "token", "--sub", "alice", "--ttl", "18446744073709551615"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
        assert!(Cli::try_parse_from(["tidings", "--event-retention-days", "36500"]).is_ok());
        assert!(Cli::try_parse_from(["tidings", "token", "--sub", "alice", "--ttl", "86400"]).is_ok());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:hunter2@h/db"), "postgres://u:redacted@h/db");
        assert!(!format!("{:?}", KeySource::Secret(b"hunter2hunter2hunter2".to_vec().into())).contains("hunter2"));
    }

    #[test]
    fn settings_print_without_their_secrets() {
        let args = Cli::try_parse_from([
            "tidings",
            "--database-url",
            "postgres://u:hunter2@h/db",
            "--redis-url",
            "redis://:hunter3@r:6379",
            "--jwt-secret",
            "hunter4hunter4hunter4",
        ])
        .unwrap();
        assert!(args.command.is_none());
        let printed = format!("{:?}", args.serve.into_settings().unwrap());
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("REDACTED"));
    }
}
