//! Integration tests: the real server on an ephemeral port, a real SQLite
//! file, streams read with a real SSE parser. One binary, one module per
//! resource.

mod helpers;

mod announcements;
mod auth;
mod browser;
mod chat;
mod cli;
mod cluster;
mod connections;
mod email;
mod errors;
mod fault_proxy;
mod faults;
mod notifications;
mod operations;
mod outbox;
mod page;
mod policy;
mod presence;
mod resume;
mod revocation;
mod status;
mod stream;
mod templates;
mod topics;
mod webhooks;
mod writer;
