//! Building and running the application: the seam tests use.
//!
//! [`Application::build`] connects the database, applies migrations, wires
//! the hub and binds the listener (port 0 works); [`Application::run_until_stopped`]
//! serves until the given shutdown future completes, then ends every open
//! stream so the process can exit.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::DatabaseConnection;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::JwtKeys,
    chat::Chat,
    presence::{LocalPresence, Presence, redis::RedisPresence},
    typing::{TypingState, TypingTracker},
    config::Settings,
    contacts::ContactBook,
    email::{EmailChannel, links::LinkSigner},
    outbox::{ChannelSet, Outbox, webhook::WebhookChannel, worker::Worker},
    push::{PushSettings, PushSubscriptions, channel::PushChannel},
    templates::Templates,
    webhooks::Webhooks,
    hub::{Hub, Registry, redis_bus::RedisBus},
    http,
    notifications::{Notifications, Policy},
    ratelimit::{LocalRateLimiter, RateLimiter, RedisRateLimiter},
    retention::Retention,
    revocation::{self, Revocations},
    shared_redis,
    status,
    store,
    stream::{StreamContext, StreamSettings},
    topics::{TopicAccess, Topics},
    writer::Writer,
};

/// What every handler can reach. axum clones the state for every request,
/// so it is one shared pointer: a clone is one reference count, not one per
/// part (the parts' clones and drops were 2.5 % of the server's CPU in a
/// reconnect storm, `perf record` during `bench/compare.sh storm`).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`], each shared with the tasks that need it.
pub struct AppParts {
    pub db: DatabaseConnection,
    /// How long `/readyz` waits for the database's answer.
    pub database_timeout: Duration,
    pub keys: Arc<JwtKeys>,
    pub hub: Arc<Hub>,
    pub notifications: Arc<Notifications>,
    pub chat: Arc<Chat>,
    pub topics: Arc<Topics>,
    /// Who may read which broadcast topics (the public ones included).
    pub topic_access: Arc<TopicAccess>,
    pub presence: Arc<dyn Presence>,
    /// Whose presence a user may read (`GET /v1/presence`).
    pub presence_visibility: crate::presence::Visibility,
    /// Per-caller limits on writes, checked by the auth extractors.
    pub limiter: Arc<dyn RateLimiter>,
    pub retention: Arc<Retention>,
    /// The node's one writer, for `/metrics`.
    pub writer: Arc<Writer>,
    pub stream: Arc<StreamSettings>,
    /// Revoked tokens, checked by the auth extractors and open streams.
    pub revocations: Arc<Revocations>,
    /// Templates per type, rendered at publish.
    pub templates: Arc<Templates>,
    /// How users are reached beyond the page.
    pub contacts: Arc<ContactBook>,
    /// The operator's webhook endpoints.
    pub webhooks: Arc<Webhooks>,
    /// The outbox's channels and settings.
    pub outbox: Arc<Outbox>,
    /// Browsers' Web Push subscriptions.
    pub push_subscriptions: Arc<PushSubscriptions>,
    /// The VAPID key (when Web Push is on) and what endpoints are accepted.
    pub push: Arc<PushSettings>,
    /// Signs and checks the links in mails (unsubscribe, tracked clicks);
    /// `None` when the hub has no secret to sign with.
    pub links: Option<Arc<LinkSigner>>,
    /// Turns for streams to read their starting state (admission control).
    pub stream_opening: Arc<tokio::sync::Semaphore>,
    /// The reads of opening streams, coalesced across streams.
    pub stream_starts: Arc<crate::stream::StartReads>,
    /// Cancelled when the server stops; every open stream watches it.
    /// Deliveries of announcements counted on this node, for statistics.
    pub announcements_seen: Arc<crate::notifications::announcements::SeenTally>,
    pub shutdown: CancellationToken,
    /// What every stream shares: built once, one pointer per stream.
    streams: Arc<StreamContext>,
}

impl AppState {
    /// What a new stream needs.
    pub fn stream_context(&self) -> Arc<StreamContext> {
        self.streams.clone()
    }

    /// The caller as announcements judge them: the user and the topics
    /// their token may read.
    pub fn viewer(&self, principal: &crate::auth::Principal) -> crate::notifications::announcements::Viewer {
        crate::notifications::announcements::Viewer::new(principal, &self.topic_access)
    }
}

/// Connections of SQLite's pool for batched reads (see [`batch_pool`]):
/// enough for a batch of each kind to run while the next gathers.
const BATCH_CONNECTIONS: u32 = 4;

/// The pool that the batched reads of opening streams and presence run on
/// (see `crate::coalesce`). On SQLite it is a small pool of its own: every
/// connection keeps each statement text it ran prepared, in this process's
/// memory, and the batches' statements are the big ones; on the readers'
/// 16 connections they were held 16 times over (heaptrack: SQLite's heap
/// 3.3 MB without batches, 7.3 MB with them, for 5,000 opens). PostgreSQL
/// keeps prepared statements in its own processes: there the readers' pool
/// serves the batches too.
async fn batch_pool(readers: &DatabaseConnection, settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    if readers.get_database_backend() != sea_orm::DbBackend::Sqlite {
        return Ok(readers.clone());
    }
    store::connect_with(settings.database_url.expose_secret(), store::Pool::Readers { connections: BATCH_CONNECTIONS }, settings.sqlite_synchronous, settings.database_timeout)
        .await
        .context("opening the pool of batched reads")
}

/// The operator's public topics, plus `tidings:status` while the hub
/// publishes its figures there: the status panel is for every signed-in user.
fn public_topics(settings: &Settings) -> Vec<String> {
    let mut public = settings.public_topics.clone();
    if settings.status_topic_every.is_some() && !public.iter().any(|p| p == status::STATUS_TOPIC) {
        public.push(status::STATUS_TOPIC.to_owned());
    }
    public
}

/// A built, bound, not yet running server.
pub struct Application {
    listener: TcpListener,
    /// `/metrics` on its own address, when configured.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    http: http::HttpSettings,
    shutdown_grace: Duration,
    print_demo: bool,
    /// Whether the hub publishes its figures to `tidings:status` (the demo says so).
    status_topic: bool,
    connections: crate::server::ConnectionSettings,
}

impl Application {
    /// Connects, migrates, wires and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let redis_url: Option<&str> = settings.redis_url.as_ref().map(|url| url.expose_secret());
        let db = store::connect_with(settings.database_url.expose_secret(), store::Pool::Readers { connections: 16 }, settings.sqlite_synchronous, settings.database_timeout)
            .await
            .with_context(|| format!("connecting to {}", crate::config::redact_url(settings.database_url.expose_secret())))?;
        Migrator::up(&db, None).await.context("applying migrations")?;
        let write_db = store::connect_with(settings.database_url.expose_secret(), store::Pool::Writer, settings.sqlite_synchronous, settings.database_timeout)
            .await
            .context("opening the writer's connection")?;
        let batch_db = batch_pool(&db, &settings).await?;
        let keys = Arc::new(JwtKeys::new(&settings.keys, settings.jwt_audience.as_deref())?);
        http::metrics::exporter();
        let shutdown = CancellationToken::new();
        // Where the log stands before this node delivers anything: a fresh
        // stream's floor starts here (see `Registry::delivered_upto`).
        let start_after = store::event_log::newest(&db).await?;
        let hub = match redis_url {
            None => Arc::new(Hub::in_process(settings.mailbox_capacity, settings.limits.streams)),
            Some(url) => {
                let registry = Arc::new(Registry::new());
                let bus = RedisBus::start(url, &settings.redis_namespace, db.clone(), registry.clone(), settings.tail_poll, start_after, shutdown.clone())
                    .context("configuring the Redis bus")?;
                Arc::new(Hub::new(registry, bus, settings.mailbox_capacity, settings.limits.streams))
            }
        };
        hub.registry().mark_delivered(start_after);
        let writer = Writer::start(write_db, hub.clone(), crate::writer::WriterSettings { batch_timeout: settings.database_timeout, ..settings.writer });
        let limiter: Arc<dyn RateLimiter> = match redis_url {
            None => {
                let local = Arc::new(LocalRateLimiter::new(settings.rate_limits));
                local.spawn_housekeeping();
                local
            }
            Some(url) => Arc::new(RedisRateLimiter::new(url, &settings.redis_namespace, settings.rate_limits)?),
        };
        // In a cluster another node may change a preference: trust a cached
        // one only briefly there.
        let preference_ttl = redis_url.map(|_| Duration::from_secs(2));
        let policy = Policy { default_channels: settings.default_channels, limiter: limiter.clone(), preference_ttl };
        // Templates and webhooks are cached like preferences: briefly in a cluster.
        let templates = Arc::new(Templates::new(writer.clone(), db.clone(), preference_ttl));
        let webhooks = Arc::new(Webhooks::new(writer.clone(), db.clone(), preference_ttl));
        let presence: Arc<dyn Presence> = match redis_url {
            None => Arc::new(LocalPresence::new(batch_db.clone(), settings.presence_visibility, hub.clone(), settings.presence_grace)),
            Some(url) => Arc::new(RedisPresence::start(
                url,
                &settings.redis_namespace,
                batch_db.clone(),
                settings.presence_visibility,
                hub.clone(),
                settings.presence_grace,
                shutdown.clone(),
            )?),
        };
        let mut channels = ChannelSet::default();
        // A webhook request gives up well within the lease, so a slow
        // endpoint never has one row sent by two workers at once.
        let webhook_timeout = (settings.outbox.lease / 2).min(Duration::from_secs(10));
        channels.add(Arc::new(WebhookChannel::new(webhooks.clone(), webhook_timeout).context("building the webhook client")?));
        // Bound here: the links in mails name the bound address unless the
        // operator gives the public one.
        let listener = crate::server::bind(&settings.bind, settings.connections.backlog)
            .await
            .with_context(|| format!("binding {}", settings.bind))?;
        let public_url = settings.public_url.clone().unwrap_or_else(|| format!("http://{}", listener.local_addr().map_or_else(|_| settings.bind.clone(), |a| a.to_string())));
        let link_secret: Option<Vec<u8>> = match (&settings.email, &settings.keys) {
            (Some(email), _) if email.link_secret.is_some() => email.link_secret.as_ref().map(|s| secrecy::ExposeSecret::expose_secret(s).as_bytes().to_vec()),
            (_, crate::auth::keys::KeySource::Secret(secret)) => Some(secrecy::ExposeSecret::expose_secret(secret).to_vec()),
            _ => None,
        };
        let links = link_secret.map(|secret| Arc::new(LinkSigner::new(&secret, &public_url)));
        if let Some(email) = &settings.email {
            let links = links.clone().context("TIDINGS_SMTP_URL with a public-key JWT setup needs TIDINGS_EMAIL_LINK_SECRET to sign the links in mails")?;
            // Like a webhook request, one SMTP attempt ends well within the lease.
            let timeout = (settings.outbox.lease / 2).min(Duration::from_secs(30));
            channels.add(Arc::new(EmailChannel::new(email, links, timeout).context("configuring email")?));
        }
        // Web Push: a push service is an HTTP endpoint like a webhook's, with
        // the same deadline. It needs the presence to skip users the page
        // reaches already.
        let push_subscriptions = Arc::new(PushSubscriptions::new(writer.clone(), db.clone()));
        if settings.push.vapid.is_some() {
            channels.add(Arc::new(
                PushChannel::new(&settings.push, push_subscriptions.clone(), presence.clone(), db.clone(), webhook_timeout).context("building the Web Push client")?,
            ));
        }
        let outbox = Arc::new(Outbox::new(channels, settings.outbox.clone()));
        let retention = Arc::new(Retention::new(writer.clone(), db.clone(), settings.retention.clone()));
        let typing_state = match redis_url {
            None => TypingState::Local(Default::default()),
            Some(url) => TypingState::Redis { redis: shared_redis::connect(url)?, namespace: settings.redis_namespace.clone() },
        };
        let typing = Arc::new(TypingTracker::new(hub.clone(), settings.typing_expiry, typing_state));
        let chat = Arc::new(Chat::new(writer.clone(), db.clone(), typing));
        let revocations = Revocations::load(db.clone(), writer.clone(), hub.clone(), settings.max_token_lifetime)
            .await
            .context("loading revocations")?;
        // One node alone writes every revocation and needs no re-reads; in a
        // cluster they cover what the bus may lose.
        revocations.clone().spawn_watcher(redis_url.map(|_| revocation::CLUSTER_RELOAD), shutdown.clone());
        let metrics_listener = match &settings.metrics_bind {
            Some(bind) => Some(TcpListener::bind(bind).await.with_context(|| format!("binding {bind} for metrics"))?),
            None => None,
        };
        let http = http::HttpSettings::from_settings(&settings);
        let stream_opening = Arc::new(tokio::sync::Semaphore::new(settings.stream.max_opening));
        let stream_starts = Arc::new(crate::stream::StartReads::spawn(batch_db.clone(), settings.stream.open_batch, settings.stream.snapshot_limit, settings.stream.replay_page));
        let stream = Arc::new(settings.stream.clone());
        let announcements_seen: Arc<crate::notifications::announcements::SeenTally> = Arc::default();
        let streams = Arc::new(StreamContext {
            seen: announcements_seen.clone(),
            db: db.clone(),
            hub: hub.clone(),
            presence: presence.clone(),
            settings: stream.clone(),
            shutdown: shutdown.clone(),
            revocations: revocations.clone(),
            opening: stream_opening.clone(),
            starts: stream_starts.clone(),
        });
        let state = AppState(Arc::new(AppParts {
            db: db.clone(),
            database_timeout: settings.database_timeout,
            keys,
            hub,
            notifications: Arc::new(Notifications::new(writer.clone(), db.clone(), policy, templates.clone(), outbox.clone())),
            contacts: Arc::new(ContactBook::new(writer.clone(), db.clone())),
            templates,
            webhooks,
            outbox,
            push_subscriptions,
            push: Arc::new(settings.push.clone()),
            links,
            chat,
            topics: Arc::new(Topics::new(writer.clone(), db.clone())),
            topic_access: Arc::new(TopicAccess { public: public_topics(&settings) }),
            presence,
            presence_visibility: settings.presence_visibility,
            limiter,
            retention,
            writer,
            stream_opening,
            stream_starts,
            stream,
            revocations,
            announcements_seen,
            shutdown,
            streams,
        }));
        state.hub.spawn_heartbeat(state.stream.heartbeat, state.shutdown.clone());
        state.announcements_seen.clone().spawn_flusher(state.writer.clone(), std::time::Duration::from_secs(5), state.shutdown.clone());
        state.retention.clone().spawn(state.shutdown.clone());
        Worker { outbox: state.outbox.clone(), db: state.db.clone(), writer: state.writer.clone(), templates: state.templates.clone() }.spawn(state.shutdown.clone());
        store::spawn_checkpointer(state.db.clone(), state.shutdown.clone());
        if let Some(every) = settings.status_topic_every {
            status::spawn(state.topics.clone(), state.hub.clone(), state.writer.clone(), every, state.shutdown.clone());
        }
        Ok(Application {
            listener,
            metrics_listener,
            state,
            http,
            shutdown_grace: settings.shutdown_grace,
            print_demo: settings.print_demo,
            status_topic: settings.status_topic_every.is_some(),
            connections: settings.connections,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The address of the separate metrics listener, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The shared state, for tests that look inside.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The first-run demo: a page URL and a curl command, with fresh tokens.
    /// `None` unless this is a zero-configuration run.
    pub fn demo(&self) -> Option<String> {
        if !self.print_demo || !self.state.keys.can_mint() {
            return None;
        }
        let week = Duration::from_secs(7 * 24 * 3600);
        let user_token = self.state.keys.mint("demo", None, week).ok()?;
        let publish_token = self.state.keys.mint("demo-backend", Some("publish"), week).ok()?;
        let mut addr = self.local_addr();
        if addr.ip().is_unspecified() {
            addr.set_ip([127, 0, 0, 1].into());
        }
        let status = if self.status_topic {
            format!("3. The page's \"Hub status\" panel shows this hub's own figures, live, from the public topic {}.\n\n", status::STATUS_TOPIC)
        } else {
            String::new()
        };
        Some(format!(
            "\nTidings is running on http://{addr}\n\n\
             1. Open the notification center as user \"demo\":\n   http://{addr}/#token={user_token}\n\n\
             2. Publish a notification to it:\n   \
             curl -X POST http://{addr}/v1/notifications \\\n     \
             -H 'Authorization: Bearer {publish_token}' \\\n     \
             -H 'Content-Type: application/json' \\\n     \
             -d '{{\"user_id\":\"demo\",\"type\":\"welcome\",\"title\":\"Hello from Tidings\",\"body\":\"It works.\"}}'\n\n\
             {status}\
             (These tokens are signed with the generated secret and valid for 7 days; mint more with `tidings token --sub USER`.)\n"
        ))
    }

    /// Serves until `shutdown` completes, then stops accepting, ends every
    /// open stream, gives in-flight requests `shutdown_grace` to finish and
    /// closes the database.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let stopping = self.state.shutdown.clone();
        let db = self.state.db.clone();
        if let Some(listener) = self.metrics_listener {
            let (metrics, _) = http::metrics::router().with_state(self.state.clone()).split_for_parts();
            let (stopped, connections) = (stopping.clone(), self.connections.clone());
            tokio::spawn(async move {
                crate::server::serve(listener, metrics, &connections, std::future::pending(), stopped).await;
            });
        }
        let router = http::router(self.state, &self.http);
        // The accept loop runs on a worker thread of the runtime, not on
        // the thread that called `block_on`: each connection's task is then
        // queued on that worker, where a task spawned from outside the
        // runtime goes through the shared queue and wakes a worker.
        let (listener, connections, stopped) = (self.listener, self.connections.clone(), stopping.clone());
        let serve = tokio::spawn(async move { crate::server::serve(listener, router, &connections, shutdown, stopped).await });
        let grace = self.shutdown_grace;
        let deadline = async move {
            stopping.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = serve => served.context("the accept loop panicked")?,
            () = deadline => tracing::warn!(grace_secs = grace.as_secs(), "in-flight requests did not finish in time; stopping anyway"),
        }
        db.close_by_ref().await.context("closing the database")?;
        Ok(())
    }
}
