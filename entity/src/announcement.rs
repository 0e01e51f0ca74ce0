//! Announcements: one notification for a whole audience, stored once.

use sea_orm::entity::prelude::*;

/// One announcement. Users' read, click and delete marks live in
/// `announcement_marks`, written only when a user acts.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "announcements")]
pub struct Model {
    /// From the notifications' id sequence: one id space for both.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    /// The topic whose readers are the audience; `None` for everyone.
    pub audience_topic: Option<String>,
    #[sea_orm(column_name = "type")]
    pub kind: String,
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub data: Option<String>,
    pub action_url: Option<String>,
    pub group_key: Option<String>,
    pub count: i32,
    /// Shown whatever the users' preferences say.
    pub critical: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    /// The latest `notification` event that carried it.
    pub event_id: i64,
    /// Deliveries to streams, as counted by the nodes.
    pub seen: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
