//! The domain's vocabulary: values parsed once at the edge, so the core never
//! re-validates, and the rules of each concept beside its types.

pub mod chat;
pub mod error;
pub mod event_id;
pub mod events;
pub mod notification;
pub mod preference;
pub mod topic;
pub mod user_id;

pub use error::DomainError;
pub use event_id::EventId;
pub use topic::Topic;
pub use user_id::UserId;
