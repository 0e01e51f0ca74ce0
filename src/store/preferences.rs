//! Preference rows: only the types a user changed are stored.

use chrono::Utc;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, Set,
    sea_query::OnConflict,
};

use crate::domain::{UserId, preference::Channels};
use entity::{
    notification,
    preference::{self, Column, Entity as Preferences, Model},
};

/// The stored preferences of `users` for one type.
pub async fn for_type(conn: &impl ConnectionTrait, users: &[&str], kind: &str) -> Result<Vec<Model>, DbErr> {
    Preferences::find()
        .filter(Column::Kind.eq(kind))
        .filter(Column::UserId.is_in(users.iter().copied()))
        .all(conn)
        .await
}

/// Every stored preference of `user`.
pub async fn of_user(conn: &impl ConnectionTrait, user: &UserId) -> Result<Vec<Model>, DbErr> {
    Preferences::find().filter(Column::UserId.eq(user.as_str())).all(conn).await
}

/// The types `user` has received, so a preferences panel can offer them.
pub async fn received_types(conn: &impl ConnectionTrait, user: &UserId) -> Result<Vec<String>, DbErr> {
    notification::Entity::find()
        .select_only()
        .column(notification::Column::Kind)
        .distinct()
        .filter(notification::Column::UserId.eq(user.as_str()))
        .into_tuple()
        .all(conn)
        .await
}

/// Stores a preference, replacing the previous one.
pub async fn upsert(conn: &impl ConnectionTrait, user: &UserId, kind: &str, enabled: bool, channels: Channels) -> Result<Model, DbErr> {
    let row = preference::ActiveModel {
        user_id: Set(user.as_str().to_owned()),
        kind: Set(kind.to_owned()),
        enabled: Set(enabled),
        web: Set(channels.web),
        email: Set(channels.email),
        push: Set(channels.push),
        webhook: Set(channels.webhook),
        updated_at: Set(Utc::now()),
    };
    Preferences::insert(row)
        .on_conflict(
            OnConflict::columns([Column::UserId, Column::Kind])
                .update_columns([Column::Enabled, Column::Web, Column::Email, Column::Push, Column::Webhook, Column::UpdatedAt])
                .to_owned(),
        )
        .exec(conn)
        .await?;
    Ok(Model {
        user_id: user.as_str().to_owned(),
        kind: kind.to_owned(),
        enabled,
        web: channels.web,
        email: channels.email,
        push: channels.push,
        webhook: channels.webhook,
        updated_at: Utc::now(),
    })
}

/// A preference row that hides its type on the page: the type disabled, or
/// its web channel off.
pub fn hides_type() -> sea_orm::Condition {
    sea_orm::Condition::any().add(Column::Enabled.eq(false)).add(Column::Web.eq(false))
}

/// The types `user` turned off on the page (disabled, or the web channel
/// off): announcements of these types are not shown to them, unless critical.
pub async fn hidden_types(conn: &impl ConnectionTrait, user: &UserId) -> Result<Vec<String>, DbErr> {
    Preferences::find()
        .select_only()
        .column(Column::Kind)
        .filter(Column::UserId.eq(user.as_str()))
        .filter(hides_type())
        .into_tuple()
        .all(conn)
        .await
}
