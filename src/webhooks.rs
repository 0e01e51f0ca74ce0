//! Webhook endpoints: `POST /v1/webhooks` registers a URL (and the types it
//! wants) with a secret of its own; the webhook channel
//! (`crate::outbox::webhook`) signs every delivery with it.
//!
//! The endpoint list is read on every publish (is the webhook channel
//! configured for this type?), so it is cached in memory: dropped after a
//! change on this node, trusted only briefly in a cluster where another
//! node may change it, and not cached by a load that raced with a change.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine;
use chrono::Utc;
use sea_orm::{DatabaseConnection, DbErr, EntityTrait, QueryOrder, Set};
use serde::Serialize;

use crate::{
    domain::{DomainError, notification::NotificationType},
    writer::Writer,
};
use entity::webhook::{self, Column, Entity as WebhookRows};

/// Most endpoints a hub keeps: each matching one is a delivery row per
/// notification.
pub const MAX_WEBHOOKS: usize = 100;
/// Most types one endpoint may name.
pub const MAX_TYPES: usize = 100;

/// An endpoint as the API shows it: with its secret, which the receiver
/// needs to verify signatures.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    /// `wh_` and 16 hex digits.
    pub id: String,
    pub url: String,
    /// `whsec_` and the base64 key, as Standard Webhooks libraries take it.
    pub secret: String,
    /// The types delivered; `null` for every type.
    pub types: Option<Vec<String>>,
}

impl Webhook {
    /// Whether notifications of `kind` go to this endpoint.
    pub fn wants(&self, kind: &str) -> bool {
        self.types.as_ref().is_none_or(|types| types.iter().any(|t| t == kind))
    }
}

impl From<webhook::Model> for Webhook {
    fn from(row: webhook::Model) -> Self {
        Webhook { id: row.id, url: row.url, secret: row.secret, types: row.types.and_then(|t| serde_json::from_str(&t).ok()) }
    }
}

#[derive(Default)]
struct Cache {
    generation: u64,
    endpoints: Option<(Arc<Vec<Webhook>>, Instant)>,
}

/// The registered endpoints.
pub struct Webhooks {
    writer: Arc<Writer>,
    db: DatabaseConnection,
    cache: Mutex<Cache>,
    /// How long the cached list is trusted; `None` on a single node.
    ttl: Option<Duration>,
}

impl Webhooks {
    /// Endpoints written through `writer`, read from `db`, cached for `ttl`.
    pub fn new(writer: Arc<Writer>, db: DatabaseConnection, ttl: Option<Duration>) -> Self {
        Webhooks { writer, db, cache: Mutex::new(Cache::default()), ttl }
    }

    /// Registers an endpoint. `url` must already be an http(s) URL (checked
    /// at the edge, which answers 400); `types` are checked here.
    pub async fn create(&self, url: url::Url, types: Option<Vec<String>>) -> Result<Webhook, DomainError> {
        if let Some(types) = &types {
            if types.len() > MAX_TYPES {
                return Err(DomainError::invalid_field("types", format!("types may name at most {MAX_TYPES} types")));
            }
            for kind in types {
                NotificationType::parse(kind).map_err(|why| DomainError::invalid_field("types", format!("type {why}")))?;
            }
        }
        let key: [u8; 32] = rand::random();
        let endpoint = Webhook {
            id: format!("wh_{}", hex::encode(rand::random::<[u8; 8]>())),
            url: url.to_string(),
            secret: format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key)),
            types,
        };
        let row = webhook::ActiveModel {
            id: Set(endpoint.id.clone()),
            url: Set(endpoint.url.clone()),
            secret: Set(endpoint.secret.clone()),
            types: Set(endpoint.types.as_ref().map(|t| serde_json::to_string(t).unwrap_or_default())),
            created_at: Set(Utc::now()),
        };
        self.writer
            .run(move |write| {
                Box::pin(async move {
                    let count = WebhookRows::find().all(write.conn()).await?.len();
                    if count >= MAX_WEBHOOKS {
                        return Err(DomainError::invalid_field("url", format!("a hub keeps at most {MAX_WEBHOOKS} webhooks")));
                    }
                    WebhookRows::insert(row).exec_without_returning(write.conn()).await?;
                    Ok(())
                })
            })
            .await?;
        self.invalidate();
        Ok(endpoint)
    }

    /// Every endpoint, oldest first.
    pub async fn list(&self) -> Result<Arc<Vec<Webhook>>, DomainError> {
        Ok(self.cached().await?)
    }

    /// Removes an endpoint; its pending deliveries then fail at their next attempt.
    pub async fn delete(&self, id: &str) -> Result<(), DomainError> {
        let id = id.to_owned();
        let deleted = self
            .writer
            .run(move |write| Box::pin(async move { Ok(WebhookRows::delete_by_id(id).exec(write.conn()).await?.rows_affected) }))
            .await?;
        self.invalidate();
        if deleted == 0 { Err(DomainError::NotFound) } else { Ok(()) }
    }

    /// The endpoint with this id: from the cache, or from the table when
    /// the cache does not have it (another node may have registered it
    /// since this one cached the list).
    pub async fn get(&self, id: &str) -> Result<Option<Webhook>, DbErr> {
        if let Some(found) = self.cached().await?.iter().find(|w| w.id == id) {
            return Ok(Some(found.clone()));
        }
        Ok(WebhookRows::find_by_id(id.to_owned()).one(&self.db).await?.map(Webhook::from))
    }

    /// The ids of the endpoints that want `kind`.
    pub async fn matching(&self, kind: &str) -> Result<Vec<String>, DbErr> {
        Ok(self.cached().await?.iter().filter(|w| w.wants(kind)).map(|w| w.id.clone()).collect())
    }

    async fn cached(&self) -> Result<Arc<Vec<Webhook>>, DbErr> {
        let generation = {
            let cache = self.cache.lock().expect("webhook cache lock");
            if let Some((list, at)) = &cache.endpoints
                && self.ttl.is_none_or(|ttl| at.elapsed() < ttl)
            {
                return Ok(list.clone());
            }
            cache.generation
        };
        let rows = WebhookRows::find().order_by_asc(Column::CreatedAt).order_by_asc(Column::Id).all(&self.db).await?;
        let list = Arc::new(rows.into_iter().map(Webhook::from).collect::<Vec<_>>());
        let mut cache = self.cache.lock().expect("webhook cache lock");
        if cache.generation == generation {
            cache.endpoints = Some((list.clone(), Instant::now()));
        }
        Ok(list)
    }

    fn invalidate(&self) {
        let mut cache = self.cache.lock().expect("webhook cache lock");
        cache.generation += 1;
        cache.endpoints = None;
    }
}
