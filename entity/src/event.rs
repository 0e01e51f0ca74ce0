//! The event log: every event that a stream gives an id, stored before it is sent.

use sea_orm::entity::prelude::*;

/// One persisted event. `id` is the stream's event id: it strictly increases
/// in commit order (see `tidings::store::journal` for how that is upheld), so
/// "everything after id N on these topics" is exactly what a resuming client missed.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The audience, e.g. `u:alice` for one user's stream. Routing and replay
    /// both select by topic, so a topic is the unit of delivery.
    pub topic: String,
    /// The SSE event name (`notification`, `notification.read`, ...).
    pub event: String,
    /// The SSE `data:` payload as compact JSON, stored encoded so that replay
    /// sends it without decoding it again.
    #[sea_orm(column_type = "Text")]
    pub data: String,
    pub created_at: DateTimeUtc,
    /// A membership change this event carries: `+c:<id>` (the user whose
    /// topic it is joins that conversation) or `-c:<id>` (leaves it).
    pub route: Option<String>,
    /// A broadcast topic's conflation key: catching up after a gap, a
    /// subscriber gets only the newest event of the gap per key.
    pub key: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
