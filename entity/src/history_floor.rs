//! How far back a topic's history still reaches.

use sea_orm::entity::prelude::*;

/// Events of `topic` with an id at or below `floor` may have been pruned. A
/// client resuming from below the floor cannot be given "exactly what it
/// missed", so it is told to `reset` instead of being silently short-changed.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "history_floors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub topic: String,
    pub floor: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
