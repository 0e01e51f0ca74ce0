//! Contacts: how a user is reached outside the page (email address,
//! locale, time zone), set by the backend with `PUT /v1/users/{id}/contact`.
//!
//! The locale picks the template a notification is rendered from; the
//! address and time zone are for the channels (email, digests, webhooks,
//! which pass the contact on to the backend's own senders).

use std::sync::Arc;

use chrono::Utc;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, Set, sea_query::OnConflict};
use serde::{Deserialize, Serialize};

use crate::{
    domain::{DomainError, UserId},
    writer::Writer,
};
use entity::contact::{self, Column, Entity as Contacts};

/// The longest address (RFC 5321's path limit).
const MAX_EMAIL_CHARS: usize = 254;

/// A user's contact. Every field may be absent: a user without an address
/// gets no email, one without a locale the default template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contact {
    /// `local@domain`; checked for shape only (the mail server decides).
    pub email: Option<String>,
    /// A BCP 47 language tag such as `fr` or `pt-BR`.
    pub locale: Option<String>,
    /// An IANA time zone name such as `Europe/Paris`.
    pub time_zone: Option<String>,
}

impl Contact {
    /// Checks each field, naming the first at fault; trims nothing.
    pub fn validate(self) -> Result<Contact, DomainError> {
        if let Some(email) = &self.email {
            validate_email(email)?;
        }
        if let Some(locale) = &self.locale {
            validate_locale(locale).map_err(|why| DomainError::invalid_field("locale", why))?;
        }
        if let Some(zone) = &self.time_zone
            && zone.parse::<chrono_tz::Tz>().is_err()
        {
            return Err(DomainError::invalid_field("time_zone", "time_zone must be an IANA time zone name such as Europe/Paris"));
        }
        Ok(self)
    }
}

impl From<contact::Model> for Contact {
    fn from(row: contact::Model) -> Self {
        Contact { email: row.email, locale: row.locale, time_zone: row.time_zone }
    }
}

/// An address of the shape `local@domain.tld`: no spaces or control
/// characters, one `@`, a dotted domain. Deliverability is the mail
/// server's to judge; this only refuses what cannot be an address.
fn validate_email(email: &str) -> Result<(), DomainError> {
    let invalid = || DomainError::invalid_field("email", "email must be an address like name@example.com");
    if email.chars().count() > MAX_EMAIL_CHARS || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let labels_ok = domain.split('.').all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    if local.is_empty() || local.len() > 64 || domain.contains('@') || !domain.contains('.') || !labels_ok {
        return Err(invalid());
    }
    Ok(())
}

/// A BCP 47 tag's shape: a 2-3 letter (or 4-8 letter) language subtag,
/// then subtags of 1-8 letters or digits, separated by `-`, 35 characters
/// at most. Registered subtags are not checked: an unknown locale simply
/// falls back to the default template.
pub fn validate_locale(tag: &str) -> Result<(), &'static str> {
    let why = "locale must be a BCP 47 tag such as en, fr or pt-BR";
    if tag.is_empty() || tag.len() > 35 {
        return Err(why);
    }
    let mut subtags = tag.split('-');
    let language = subtags.next().unwrap_or_default();
    if !(2..=8).contains(&language.len()) || language.len() == 4 || !language.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(why);
    }
    if !subtags.all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return Err(why);
    }
    Ok(())
}

/// Contacts: set and read through the writer and the pool.
pub struct ContactBook {
    writer: Arc<Writer>,
    db: DatabaseConnection,
}

impl ContactBook {
    /// Contacts written through `writer` and read from `db`.
    pub fn new(writer: Arc<Writer>, db: DatabaseConnection) -> Self {
        ContactBook { writer, db }
    }

    /// Replaces `user`'s contact with `contact` (already validated).
    pub async fn set(&self, user: &UserId, contact: Contact) -> Result<Contact, DomainError> {
        let (owner, stored) = (user.clone(), contact.clone());
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let row = contact::ActiveModel {
                        user_id: Set(owner.as_str().to_owned()),
                        email: Set(stored.email),
                        locale: Set(stored.locale),
                        time_zone: Set(stored.time_zone),
                        updated_at: Set(Utc::now()),
                    };
                    Contacts::insert(row)
                        .on_conflict(OnConflict::column(Column::UserId).update_columns([Column::Email, Column::Locale, Column::TimeZone, Column::UpdatedAt]).to_owned())
                        .exec_without_returning(write.conn())
                        .await?;
                    Ok(())
                })
            })
            .await?;
        Ok(contact)
    }

    /// `user`'s contact: empty when never set.
    pub async fn get(&self, user: &UserId) -> Result<Contact, DomainError> {
        Ok(find(&self.db, user.as_str()).await?.unwrap_or_default())
    }
}

/// The stored contact of `user`, if any.
pub async fn find(conn: &impl ConnectionTrait, user: &str) -> Result<Option<Contact>, DbErr> {
    Ok(Contacts::find_by_id(user.to_owned()).one(conn).await?.map(Contact::from))
}

/// The stored locales of `users` (those that have one), by user id.
pub async fn locales(conn: &impl ConnectionTrait, users: &[&str]) -> Result<std::collections::HashMap<String, String>, DbErr> {
    let mut found = std::collections::HashMap::new();
    for chunk in users.chunks(500) {
        for row in Contacts::find().filter(Column::UserId.is_in(chunk.iter().copied())).filter(Column::Locale.is_not_null()).all(conn).await? {
            if let Some(locale) = row.locale {
                found.insert(row.user_id, locale);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_of_the_right_shape_pass_and_others_name_the_field() {
        assert!(validate_email("ada@example.com").is_ok());
        for bad in ["ada", "ada@", "@example.com", "ada@example", "a da@example.com", "ada@@example.com", "ada@.com"] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn locales_follow_the_bcp47_shape() {
        for good in ["en", "fr", "pt-BR", "zh-Hant-TW", "sr-Latn"] {
            assert!(validate_locale(good).is_ok(), "{good}");
        }
        for bad in ["", "e", "en_US", "english-", "12", "en--US", "abcd"] {
            assert!(validate_locale(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_zones_must_be_iana_names() {
        let ok = Contact { time_zone: Some("Europe/Paris".into()), ..Default::default() };
        assert!(ok.validate().is_ok());
        let bad = Contact { time_zone: Some("Mars/Olympus".into()), ..Default::default() };
        assert!(matches!(bad.validate(), Err(DomainError::Invalid { field: Some(ref f), .. }) if f == "time_zone"));
    }
}
