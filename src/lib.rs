//! Tidings: a real-time notification hub. Each user holds one Server-Sent
//! Events stream; everything a client or a backend does is an HTTP request
//! that writes through the database and publishes. A client that reconnects
//! with the last event id it saw gets exactly what it missed, in order, once.
//!
//! The modules, from the edge inwards:
//!
//! - [`config`] — settings from environment and flags, secrets redacted;
//! - [`app`] — `Application::build` / `run_until_stopped`, the seam tests use;
//! - [`server`] — the accept loop: HTTP/1.1 connection settings, header timeout, per-IP cap;
//! - [`http`] — one module per resource, thin handlers over the core;
//! - [`auth`] — JWT verification and the extractors that yield a `Principal`;
//! - [`error`] — the one error type, mapped once to the contract's body;
//! - [`stream`] — one user's SSE stream, from resume point through replay to live;
//! - [`notifications`] — the notification use cases, preferences and grouping;
//! - [`chat`] — conversations, membership, messages and read receipts;
//! - [`topics`] — broadcast topics: stored once, read by token patterns, resumed with the rest;
//! - [`typing`] and [`presence`] — ephemeral state, never stored, behind seams;
//! - [`ratelimit`] — per-recipient and per-caller limits behind a seam;
//! - [`retention`] — pruning of old events and notifications;
//! - [`status`] — the hub's own figures on the public topic `tidings:status`, the live demo;
//! - [`email`] — the email channel over SMTP (lettre): digests, one-click unsubscribe and tracked links, signed;
//! - [`outbox`] — the durable outbox of deliveries beyond the page, its workers and the `Channel` trait (webhooks here);
//! - [`templates`] and [`contacts`] — per-type templates rendered at publish, and how users are reached;
//! - [`webhooks`] — the operator's webhook endpoints and their secrets;
//! - [`push`] — Web Push: the VAPID key, browsers' subscriptions, the outbox's `push` channel;
//! - [`revocation`] — revoked tokens: stored, cached on every node, ending open streams;
//! - [`domain`] — newtypes parsed at the edge and the rules that go with them;
//! - [`writer`] — the one writer per node: group commit, ids in commit order, back-pressure;
//! - [`store`] — SeaORM queries, run inside the writer's transactions or on the read pool;
//! - [`hub`] — fan-out from committed events to the connections of their audience;
//! - [`limits`] — the open-file limit that bounds a node's streams;
//! - [`shared_redis`] — the lazily opened Redis connection of the cluster's shared state;
//! - [`telemetry`] — logging.
//!
//! `main.rs` only parses the command line and wires these together.

pub mod app;
pub mod auth;
pub mod chat;
pub mod coalesce;
pub mod config;
pub mod contacts;
pub mod domain;
pub mod email;
pub mod error;
pub mod http;
pub mod hub;
pub mod limits;
pub mod notifications;
pub mod outbox;
pub mod presence;
pub mod push;
pub mod ratelimit;
pub mod retention;
pub mod revocation;
pub mod server;
pub mod shared_redis;
pub mod status;
pub mod store;
pub mod stream;
pub mod telemetry;
pub mod templates;
pub mod topics;
pub mod webhooks;
pub mod typing;
pub mod writer;

pub use app::{AppState, Application};
pub use config::Settings;
