//! Templates per notification type: `PUT /v1/templates/{type}` stores the
//! strings a publish of that type is rendered from when it leaves out its
//! title and body, one row per locale plus a default.
//!
//! - **Engine**: minijinja, with strict undefined values, so a placeholder
//!   whose field the publish's `data` lacks fails the publish (422 naming
//!   `data.field`) instead of rendering an empty string; the email HTML
//!   part is auto-escaped.
//! - **Locale**: the recipient's contact locale picks the row: the exact
//!   tag, else its language (`pt` for `pt-BR`), else the default row.
//! - **Hot path**: a type's rows are compiled once and cached in memory.
//!   A change drops the type's entry; a load that raced with a change is
//!   not cached (the generation guard of the preference cache). In a
//!   cluster another node may change a template, so entries also expire
//!   after a short time there.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, sea_query::OnConflict};
use serde::{Deserialize, Serialize};

use crate::{
    contacts::validate_locale,
    domain::{DomainError, notification::NotificationType},
    writer::Writer,
};
use entity::template::{self, Column, Entity as TemplateRows};

/// The longest template string, in characters (the HTML part included).
pub const MAX_TEMPLATE_CHARS: usize = 100_000;

/// The locale key of the default row.
const DEFAULT_LOCALE: &str = "";

/// The parts of a template, as named in errors and in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Title,
    Body,
    EmailSubject,
    EmailHtml,
    EmailText,
}

impl Part {
    const ALL: [Part; 5] = [Part::Title, Part::Body, Part::EmailSubject, Part::EmailHtml, Part::EmailText];

    /// The field's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Title => "title",
            Part::Body => "body",
            Part::EmailSubject => "email_subject",
            Part::EmailHtml => "email_html",
            Part::EmailText => "email_text",
        }
    }
}

/// The body of `PUT /v1/templates/{type}`, and what `GET` answers.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// With `{{ data.field }}` placeholders; renders to 1-255 characters.
    pub title: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub email_subject: Option<String>,
    /// Auto-escaped: `{{ data.x }}` inserts text, never markup.
    #[serde(default)]
    pub email_html: Option<String>,
    #[serde(default)]
    pub email_text: Option<String>,
    /// A BCP 47 tag; absent for the default row other locales fall back to.
    #[serde(default)]
    pub locale: Option<String>,
}

/// A stored template, as `GET` and `PUT` answer it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Template {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub body: TemplateBody,
    pub updated_at: DateTime<Utc>,
}

impl From<template::Model> for Template {
    fn from(row: template::Model) -> Self {
        Template {
            kind: row.kind,
            body: TemplateBody {
                title: row.title,
                body: row.body,
                email_subject: row.email_subject,
                email_html: row.email_html,
                email_text: row.email_text,
                locale: (!row.locale.is_empty()).then_some(row.locale),
            },
            updated_at: row.updated_at,
        }
    }
}

/// What a template rendered to, for one locale.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub title: String,
    pub body: String,
    /// Only the parts the template has.
    pub email_subject: Option<String>,
    pub email_html: Option<String>,
    pub email_text: Option<String>,
}

/// One type's rows, compiled.
struct Compiled {
    env: Environment<'static>,
    /// Locale keys present, lower-cased, mapped to their stored form.
    locales: HashMap<String, String>,
}

impl Compiled {
    fn build(rows: Vec<template::Model>) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| if name.ends_with("/email_html") { AutoEscape::Html } else { AutoEscape::None });
        let mut locales = HashMap::new();
        for row in rows {
            locales.insert(row.locale.to_ascii_lowercase(), row.locale.clone());
            let parts = [
                (Part::Title, Some(row.title)),
                (Part::Body, Some(row.body)),
                (Part::EmailSubject, row.email_subject),
                (Part::EmailHtml, row.email_html),
                (Part::EmailText, row.email_text),
            ];
            for (part, source) in parts {
                if let Some(source) = source {
                    env.add_template_owned(name(&row.locale, part), source)?;
                }
            }
        }
        Ok(Compiled { env, locales })
    }

    /// The stored locale key for a recipient's `locale`.
    fn pick(&self, locale: Option<&str>) -> Option<&str> {
        let wanted = locale.map(str::to_ascii_lowercase);
        let language = wanted.as_deref().and_then(|w| w.split('-').next());
        [wanted.as_deref(), language, Some(DEFAULT_LOCALE)]
            .into_iter()
            .flatten()
            .find_map(|key| self.locales.get(key).map(String::as_str))
    }

    fn render(&self, locale: &str, data: &serde_json::Value) -> Result<Rendered, DomainError> {
        let context = minijinja::context! { data => minijinja::Value::from(minijinja::value::Serde(data)) };
        let mut rendered = Rendered::default();
        for part in Part::ALL {
            let Ok(template) = self.env.get_template(&name(locale, part)) else { continue };
            let text = template.render(&context).map_err(|e| render_error(&template, part, data, &e))?;
            match part {
                Part::Title => rendered.title = text,
                Part::Body => rendered.body = text,
                Part::EmailSubject => rendered.email_subject = Some(text),
                Part::EmailHtml => rendered.email_html = Some(text),
                Part::EmailText => rendered.email_text = Some(text),
            }
        }
        Ok(rendered)
    }
}

/// A template's name in the environment: its locale and part.
fn name(locale: &str, part: Part) -> String {
    format!("{locale}/{}", part.as_str())
}

/// The 422 for a part that did not render: names the first placeholder
/// whose field `data` lacks (`data.order_id`), else the part.
fn render_error(template: &minijinja::Template<'_, '_>, part: Part, data: &serde_json::Value, error: &minijinja::Error) -> DomainError {
    let mut missing: Vec<String> = template
        .undeclared_variables(true)
        .into_iter()
        .filter(|path| !resolves(data, path))
        .collect();
    missing.sort_by_key(|path| std::cmp::Reverse(path.len()));
    match missing.first() {
        Some(path) => DomainError::invalid_field(path.clone(), format!("the {} template needs {path}, which the publish's data lacks", part.as_str())),
        None => DomainError::invalid_field(part.as_str(), format!("the {} template did not render: {}", part.as_str(), error.detail().unwrap_or(&error.to_string()))),
    }
}

/// Whether a dotted path such as `data.order.id` exists in the context.
fn resolves(data: &serde_json::Value, path: &str) -> bool {
    let mut segments = path.split('.');
    if segments.next() != Some("data") {
        return false;
    }
    let mut at = data;
    for segment in segments {
        match at.get(segment) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

/// Beyond this many cached types the cache starts over rather than grow.
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
struct Cache {
    /// Bumped by every change; see the module documentation.
    generation: u64,
    /// type → its compiled rows (`None`: the type has no template).
    entries: HashMap<String, (Option<Arc<Compiled>>, Instant)>,
}

/// Templates: stored through the writer, compiled and cached for publishing.
pub struct Templates {
    writer: Arc<Writer>,
    db: DatabaseConnection,
    cache: Mutex<Cache>,
    /// How long a cached type is trusted; `None` when this node sees every change.
    ttl: Option<Duration>,
}

impl Templates {
    /// Templates written through `writer`, read from `db`, cached for `ttl`.
    pub fn new(writer: Arc<Writer>, db: DatabaseConnection, ttl: Option<Duration>) -> Self {
        Templates { writer, db, cache: Mutex::new(Cache::default()), ttl }
    }

    /// Stores the template of `kind` for its locale (or the default),
    /// refusing one that does not compile, naming the part.
    pub async fn put(&self, kind: &NotificationType, body: TemplateBody) -> Result<Template, DomainError> {
        if let Some(locale) = &body.locale {
            validate_locale(locale).map_err(|why| DomainError::invalid_field("locale", why))?;
        }
        if body.title.trim().is_empty() {
            return Err(DomainError::invalid_field("title", "title must not be empty"));
        }
        let locale = body.locale.clone().unwrap_or_default();
        let parts = [
            (Part::Title, Some(&body.title)),
            (Part::Body, Some(&body.body)),
            (Part::EmailSubject, body.email_subject.as_ref()),
            (Part::EmailHtml, body.email_html.as_ref()),
            (Part::EmailText, body.email_text.as_ref()),
        ];
        let mut check = Environment::new();
        for (part, source) in parts {
            let Some(source) = source else { continue };
            if source.chars().count() > MAX_TEMPLATE_CHARS {
                return Err(DomainError::invalid_field(part.as_str(), format!("{} must be at most {MAX_TEMPLATE_CHARS} characters", part.as_str())));
            }
            check
                .add_template_owned(part.as_str(), source.clone())
                .map_err(|e| DomainError::invalid_field(part.as_str(), format!("{} is not a valid template: {}", part.as_str(), e.detail().unwrap_or(&e.to_string()))))?;
        }
        let now = crate::domain::notification::truncate_to_millis(Utc::now());
        let row = template::Model {
            kind: kind.as_str().to_owned(),
            locale,
            title: body.title,
            body: body.body,
            email_subject: body.email_subject,
            email_html: body.email_html,
            email_text: body.email_text,
            updated_at: now,
        };
        let stored = row.clone();
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    TemplateRows::insert(template::ActiveModel::from(stored))
                        .on_conflict(
                            OnConflict::columns([Column::Kind, Column::Locale])
                                .update_columns([Column::Title, Column::Body, Column::EmailSubject, Column::EmailHtml, Column::EmailText, Column::UpdatedAt])
                                .to_owned(),
                        )
                        .exec_without_returning(write.conn())
                        .await?;
                    Ok(())
                })
            })
            .await?;
        self.invalidate(kind.as_str());
        Ok(Template::from(row))
    }

    /// The template of `kind` for `locale` exactly (absent: the default row).
    pub async fn get(&self, kind: &NotificationType, locale: Option<&str>) -> Result<Template, DomainError> {
        let row = TemplateRows::find_by_id((kind.as_str().to_owned(), locale.unwrap_or(DEFAULT_LOCALE).to_owned())).one(&self.db).await?;
        row.map(Template::from).ok_or(DomainError::NotFound)
    }

    /// Deletes the row of `locale`, or with `None` every row of the type.
    pub async fn delete(&self, kind: &NotificationType, locale: Option<&str>) -> Result<(), DomainError> {
        let (type_name, locale) = (kind.as_str().to_owned(), locale.map(str::to_owned));
        let deleted = self
            .writer
            .run(move |write| {
                Box::pin(async move {
                    let mut delete = TemplateRows::delete_many().filter(Column::Kind.eq(type_name));
                    if let Some(locale) = locale {
                        delete = delete.filter(Column::Locale.eq(locale));
                    }
                    Ok(delete.exec(write.conn()).await?.rows_affected)
                })
            })
            .await?;
        self.invalidate(kind.as_str());
        if deleted == 0 { Err(DomainError::NotFound) } else { Ok(()) }
    }

    /// Whether `kind` has a template (any locale).
    pub async fn exists(&self, kind: &str) -> Result<bool, DomainError> {
        Ok(self.compiled(kind).await?.is_some())
    }

    /// Renders `kind`'s template for each distinct locale in `locales`
    /// (`None`: no contact locale). `Ok(None)` when the type has none.
    pub async fn render(&self, kind: &str, locale: Option<&str>, data: &serde_json::Value) -> Result<Option<Rendered>, DomainError> {
        let Some(compiled) = self.compiled(kind).await? else { return Ok(None) };
        let Some(key) = compiled.pick(locale) else {
            // Rows for other locales only, and none for this one.
            return Err(DomainError::invalid_field("locale", format!("type {kind} has no template for this locale and no default")));
        };
        compiled.render(key, data).map(Some)
    }

    /// The stored locale key `locale` falls back to, to group recipients
    /// who get the same rendering.
    pub async fn locale_key(&self, kind: &str, locale: Option<&str>) -> Result<Option<String>, DomainError> {
        Ok(self.compiled(kind).await?.and_then(|c| c.pick(locale).map(str::to_owned)))
    }

    async fn compiled(&self, kind: &str) -> Result<Option<Arc<Compiled>>, DbErr> {
        let generation = {
            let cache = self.cache.lock().expect("template cache lock");
            if let Some((entry, at)) = cache.entries.get(kind)
                && self.ttl.is_none_or(|ttl| at.elapsed() < ttl)
            {
                return Ok(entry.clone());
            }
            cache.generation
        };
        let rows = load(&self.db, kind).await?;
        let compiled = if rows.is_empty() {
            None
        } else {
            // Every row compiled when it was stored; a failure here is a row
            // written by hand, logged and treated as no template.
            match Compiled::build(rows) {
                Ok(compiled) => Some(Arc::new(compiled)),
                Err(e) => {
                    tracing::error!(error = %e, kind, "a stored template does not compile");
                    None
                }
            }
        };
        let mut cache = self.cache.lock().expect("template cache lock");
        if cache.generation == generation {
            if cache.entries.len() >= MAX_ENTRIES {
                cache.entries.clear();
            }
            cache.entries.insert(kind.to_owned(), (compiled.clone(), Instant::now()));
        }
        Ok(compiled)
    }

    fn invalidate(&self, kind: &str) {
        let mut cache = self.cache.lock().expect("template cache lock");
        cache.generation += 1;
        cache.entries.remove(kind);
    }
}

async fn load(conn: &impl ConnectionTrait, kind: &str) -> Result<Vec<template::Model>, DbErr> {
    TemplateRows::find().filter(Column::Kind.eq(kind)).all(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(locale: &str, title: &str, html: Option<&str>) -> template::Model {
        template::Model {
            kind: "order.shipped".into(),
            locale: locale.into(),
            title: title.into(),
            body: String::new(),
            email_subject: None,
            email_html: html.map(str::to_owned),
            email_text: None,
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_locale_falls_back_to_its_language_then_to_the_default() {
        let compiled = Compiled::build(vec![row("", "Shipped", None), row("fr", "Expédié", None), row("pt-BR", "Enviado", None)]).unwrap();
        assert_eq!(compiled.pick(Some("fr-CA")), Some("fr"));
        assert_eq!(compiled.pick(Some("PT-br")), Some("pt-BR"));
        assert_eq!(compiled.pick(Some("de")), Some(""));
        assert_eq!(compiled.pick(None), Some(""));
    }

    #[test]
    fn html_is_escaped_and_a_missing_field_is_named() {
        let compiled = Compiled::build(vec![row("", "Order {{ data.order.id }}", Some("<p>{{ data.note }}</p>"))]).unwrap();
        let data = serde_json::json!({"order": {"id": 7}, "note": "<script>"});
        let rendered = compiled.render("", &data).unwrap();
        assert_eq!(rendered.title, "Order 7");
        assert_eq!(rendered.email_html.as_deref(), Some("<p>&lt;script&gt;</p>"));
        let error = compiled.render("", &serde_json::json!({"note": "x"})).unwrap_err();
        assert!(matches!(&error, DomainError::Invalid { field: Some(f), .. } if f == "data.order.id"), "{error:?}");
    }
}
