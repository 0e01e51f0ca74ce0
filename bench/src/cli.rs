//! Command-line arguments: one subcommand per scenario, each taking the same
//! target description, load-generator layout and output options, so that
//! `compare.sh` can run the exact same command against every hub.

use std::{net::Ipv4Addr, path::PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `tidings-bench`: holds many SSE connections, publishes to them, and
/// reports throughput, latency, loss and the server's memory and CPU.
#[derive(Debug, Parser)]
#[command(name = "tidings-bench", version, about, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// N streams open and idle: the server's memory per open stream.
    Idle(Run<IdleArgs>),
    /// N users connected, notifications to random users at R/s for T s.
    Notify(Run<NotifyArgs>),
    /// One audience of M connected users, R messages/s to all of them.
    Fanout(Run<FanoutArgs>),
    /// M subscribers of one broadcast topic (a channel on other hubs), R
    /// messages/s to it: the broadcast counterpart of `fanout`.
    Topic(Run<TopicArgs>),
    /// M subscribers, each a different user on their own stream, R
    /// announcements/s to `all` (Tidings) or publishes to one channel
    /// (other hubs); also the publish request's latency and, on Tidings,
    /// the rows stored.
    Announce(Run<AnnounceArgs>),
    /// Durable publishes per second at concurrency C, nobody listening.
    Ingest(Run<IngestArgs>),
    /// A subscriber resumes K events behind: time until it has them all.
    Catchup(Run<CatchupArgs>),
    /// Tidings only: durable batch publishes (N notifications per request)
    /// at concurrency C, nobody listening.
    Batch(Run<BatchArgs>),
    /// Tidings only: webhook deliveries per second to a local receiver, and
    /// batch publishing with the webhook channel off, then on.
    Webhook(Run<WebhookArgs>),
    /// Tidings only: chat messages into N two-member conversations, each
    /// receiver with one open stream.
    Chat(Run<ChatArgs>),
    /// Tidings only: a reconnect storm. N streams, notifications to random
    /// users at R/s; after a warm-up every stream drops at once and
    /// reconnects with its Last-Event-ID.
    Storm(Run<StormArgs>),
    /// Prints saved reports of one scenario side by side, with the ratio of
    /// the first (Tidings) to each other one.
    Table(TableArgs),
    /// Internal: a connection worker process, driven over stdin/stdout by
    /// the coordinator. Not for direct use.
    #[command(hide = true)]
    Worker,
}

/// A scenario run: the target, the load layout, the output, and the
/// scenario's own knobs.
#[derive(Debug, Args)]
pub struct Run<S: Args> {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub scenario: S,
}

/// Which hub to measure. Either `--tidings URL` (tokens are minted with
/// `--secret`), or a generic hub described by a publish URL template, a
/// subscribe URL template and how its ids look.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Label of the target in reports (default: `tidings`, or `hub`).
    #[arg(long)]
    pub name: Option<String>,
    /// Base URL of a Tidings server, e.g. `http://127.0.0.1:18080`.
    #[arg(long, conflicts_with_all = ["publish_url", "subscribe_url"])]
    pub tidings: Option<String>,
    /// Tidings only: publish to this node instead of `--tidings` (which the
    /// streams connect to), to measure delivery across a cluster's nodes.
    #[arg(long, requires = "tidings")]
    pub tidings_publish: Option<String>,
    /// Tidings' HS256 secret, to mint stream and publish tokens.
    #[arg(long, env = "TIDINGS_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Generic hub: the URL a message is POSTed to, with `{channel}`, e.g.
    /// `http://127.0.0.1:18081/pub/{channel}`. The body is delivered as is.
    #[arg(long, requires = "subscribe_url")]
    pub publish_url: Option<String>,
    /// Generic hub: the EventSource URL of a channel, with `{channel}`.
    #[arg(long, requires = "publish_url")]
    pub subscribe_url: Option<String>,
    /// Generic hub: how its event ids look. `opaque`: every event has an
    /// `id:` that the hub accepts back as `Last-Event-ID` (history replay);
    /// `none`: no usable ids, so `catchup` is n/a.
    #[arg(long, value_enum, default_value_t = IdStyle::None)]
    pub ids: IdStyle,
    /// The server's process id: its memory and CPU (including child
    /// processes, e.g. nginx workers) are read from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Tidings only: its SQLite database file, read (with the `sqlite3`
    /// command) after `announce` to count the rows the run stored.
    #[arg(long, requires = "tidings")]
    pub tidings_db: Option<PathBuf>,
    /// A sentence printed with the results about the target (how it stores
    /// messages, for instance).
    #[arg(long)]
    pub note: Vec<String>,
}

/// How a generic hub's event ids look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum IdStyle {
    /// Ids the hub accepts back as `Last-Event-ID`.
    Opaque,
    /// No ids, or none the hub resumes from.
    None,
}

/// How the load generator spreads its connections. One process cannot hold
/// more than ~19,900 sockets here and one source address has ~28,000
/// ephemeral ports, so connections go to several worker processes, each
/// bound to its own 127.0.0.x.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Worker processes (default: enough for `--conns-per-worker`, at least 2).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Most connections one worker holds; keep it under ~19,000.
    #[arg(long, default_value_t = 9_000, value_parser = clap::value_parser!(u64).range(1..=19_000))]
    pub conns_per_worker: u64,
    /// First source address; worker w binds to this address + w.
    #[arg(long, default_value = "127.0.0.2")]
    pub source_base: Ipv4Addr,
    /// Connections opened at once per worker.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Seconds a connection may take to get its response headers.
    #[arg(long, default_value_t = 30)]
    pub connect_timeout: u64,
    /// Scenarios that publish and count deliveries (`notify`, `fanout` and
    /// the others measured by `scenarios::deliver`): seconds the streams
    /// stay open after the measurement, before they are closed. Where
    /// several benches share the machine (`bench/cluster.sh`
    /// runs three at once), the first to finish would otherwise close its
    /// streams, thousands at once, while the others still measure, and its
    /// teardown would land in their last second of publishes.
    #[arg(long, default_value_t = 0)]
    pub hold_streams: u64,
}

/// Where results go.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Also write the report as JSON here (for `table`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit with status 1 if any event was lost, duplicated or misrouted,
    /// or any connection or publish failed.
    #[arg(long)]
    pub strict: bool,
    /// Prefix of user and channel names, so that runs never see each
    /// other's data (default: derived from the clock).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Bytes of filler text in each published message's body.
    #[arg(long, default_value_t = 64)]
    pub body_bytes: usize,
}

/// `idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Streams to open.
    #[arg(long, default_value_t = 10_000)]
    pub streams: u64,
    /// Seconds to wait after the last connection before reading memory.
    #[arg(long, default_value_t = 5)]
    pub settle: u64,
}

/// `notify`.
#[derive(Debug, Clone, Args)]
pub struct NotifyArgs {
    /// Users, each with one open stream.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Notifications per second (0: as fast as `--concurrency` allows).
    #[arg(long, default_value_t = 2_000.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Publish requests in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value_t = 15)]
    pub drain: u64,
}

/// `fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Members of the audience, each with one open stream.
    #[arg(long, default_value_t = 5_000)]
    pub members: u64,
    /// Messages per second to the whole audience (0: as fast as
    /// `--concurrency` allows).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Messages in flight at most.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value_t = 30)]
    pub drain: u64,
}

/// `topic`.
#[derive(Debug, Clone, Args)]
pub struct TopicArgs {
    /// Subscribers of the topic, each a different user with one open stream.
    #[arg(long, default_value_t = 5_000)]
    pub subscribers: u64,
    /// Messages per second to the topic (0: as fast as `--concurrency`
    /// allows).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Messages in flight at most.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value_t = 30)]
    pub drain: u64,
}

/// `announce`.
#[derive(Debug, Clone, Args)]
pub struct AnnounceArgs {
    /// Subscribers, each a different user with one open stream.
    #[arg(long, default_value_t = 5_000)]
    pub subscribers: u64,
    /// Announcements per second (0: as fast as `--concurrency` allows).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Announcements in flight at most.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value_t = 30)]
    pub drain: u64,
}

/// `ingest`.
#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Publish requests in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Distinct recipients (chosen at random; nobody is connected).
    #[arg(long, default_value_t = 1_000)]
    pub users: u64,
}

/// `catchup`.
#[derive(Debug, Clone, Args)]
pub struct CatchupArgs {
    /// Events the subscriber is behind.
    #[arg(long, default_value_t = 10_000)]
    pub events: u32,
    /// Publish requests in flight while building the backlog.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Resumes measured (the same backlog each time); the report gives the
    /// median and the slowest.
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Seconds one resume may take before it counts as failed.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// `batch`.
#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    /// Notifications per batch request (Tidings takes 1 to 1,000), each to
    /// a different user.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub items: u64,
    /// Batch requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Distinct recipients, taken in turn (nobody is connected); at least
    /// `--items`, so that no batch names a user twice.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
}

/// `webhook`.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Notifications per batch request, each to a different user.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub items: u64,
    /// Batch requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds of publishing in each phase (channels off, then on).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Distinct recipients, taken in turn; at least `--items`.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Seconds to wait, after the last publish, for the remaining deliveries.
    #[arg(long, default_value_t = 120)]
    pub drain: u64,
}

/// `chat`.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Two-member conversations; the receiving member of each holds one
    /// stream (in the coordinator's process).
    #[arg(long, default_value_t = 1_000)]
    pub conversations: u64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Sends in flight (also: conversations created at once during setup).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds to wait for outstanding deliveries after the last send.
    #[arg(long, default_value_t = 15)]
    pub drain: u64,
}

/// `storm`.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// Streams, one per user; all drop at once and reconnect.
    #[arg(long, default_value_t = 10_000)]
    pub streams: u64,
    /// Notifications per second to random users, for the whole run (0: as
    /// fast as `--concurrency` allows).
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Seconds of publishing before the drop.
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    /// Seconds of publishing after every stream is live again (or after
    /// `--storm-timeout`).
    #[arg(long, default_value_t = 10)]
    pub after: u64,
    /// Seconds the streams may take to be all live again before the run
    /// gives up on the stragglers (and reports them).
    #[arg(long, default_value_t = 120)]
    pub storm_timeout: u64,
    /// Publish requests in flight at most.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds to wait for outstanding deliveries after the last publish.
    #[arg(long, default_value_t = 15)]
    pub drain: u64,
    /// Streams per worker process when `--workers` is not given: fewer than
    /// other scenarios, so that each source address has ephemeral ports to
    /// spare for the reconnections and their retries.
    #[arg(long, default_value_t = 2_500)]
    pub streams_per_worker: u64,
}

/// `table`.
#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    /// Reports written with `--json`, Tidings first.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Also write the side-by-side table as Markdown here.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
}
