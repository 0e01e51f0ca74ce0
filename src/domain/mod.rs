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
pub use topic::{Topic, TopicName};
pub use user_id::UserId;

/// The OpenAPI `pattern` of text without control characters (Unicode `Cc`,
/// what `char::is_control` refuses). Written with `\x` escapes, which ECMA
/// and Python regular expressions read alike. Attributes need the literal,
/// so they repeat it; a test checks the document carries it.
pub const NO_CONTROL_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*$";
