//! SeaORM entities of Tidings: one module per table, the schema as Rust types.
//!
//! The schema itself is owned by the `migration` crate; these types only
//! mirror it so that queries are checked by the compiler.

pub mod announcement;
pub mod announcement_mark;
pub mod contact;
pub mod conversation;
pub mod delivery;
pub mod event;
pub mod history_floor;
pub mod idempotency_key;
pub mod member;
pub mod member_period;
pub mod message;
pub mod notification;
pub mod preference;
pub mod revocation;
pub mod template;
pub mod unread_counter;
pub mod webhook;
