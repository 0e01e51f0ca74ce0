//! Templates of a notification type, one row per locale.

use sea_orm::entity::prelude::*;

/// The strings a publish of `kind` is rendered from when it leaves out its
/// title and body. `locale` is a BCP 47 tag, or `""` for the default.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "templates")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false, column_name = "type")]
    pub kind: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub locale: String,
    #[sea_orm(column_type = "Text")]
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub email_subject: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub email_html: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub email_text: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
