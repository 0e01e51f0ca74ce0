//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! the request and response types: never written by hand, so it cannot
//! drift from the routes. Served at `/openapi.json`, readable at `/docs`.

use utoipa::{
    Modify, OpenApi,
    openapi::{
        extensions::ExtensionsBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{
    domain::{
        chat::{ReadReceipt, Typing},
        events::{NotificationDeleted, NotificationRead, Reset, UnreadCount},
    },
    error::ErrorBody,
    presence::PresenceView,
};

/// The document's fixed parts; paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tidings",
        description = "A real-time notification hub: one Server-Sent Events stream per user with lossless resume, and a REST API to publish and manage notifications.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&BearerJwt),
    components(schemas(ErrorBody, NotificationRead, NotificationDeleted, UnreadCount, Reset, ReadReceipt, Typing, PresenceView, crate::topics::TopicEvent)),
    tags(
        (name = "stream", description = "The per-user SSE stream"),
        (name = "notifications", description = "Publishing and managing notifications"),
        (name = "preferences", description = "Which types a user wants, on which channels"),
        (name = "chat", description = "Conversations and messages over the same stream"),
        (name = "presence", description = "Who is online"),
        (name = "templates", description = "Templates per type, rendered at publish (scope admin)"),
        (name = "contacts", description = "How a user is reached beyond the page (scope publish)"),
        (name = "webhooks", description = "Signed deliveries to the operator's endpoints (scope admin)"),
        (name = "operations", description = "Health, readiness, metrics")
    )
)]
pub struct ApiDoc;

/// Declares the bearer JWT scheme that every `/v1` operation requires.
struct BearerJwt;

impl Modify for BearerJwt {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// OpenAPI 3.1 cannot type the events of an SSE response, so the stream
/// operation carries `x-sse-events`: each event name with its payload schema
/// and whether it has an id, for client generators and readers alike.
/// Applied once the routers have added their paths.
pub fn describe_stream_events(openapi: &mut utoipa::openapi::OpenApi) {
    let events = serde_json::json!({
        "notification": {"id": true, "data": {"$ref": "#/components/schemas/Notification"}},
        "notification.read": {"id": true, "data": {"$ref": "#/components/schemas/NotificationRead"}},
        "notification.deleted": {"id": true, "data": {"$ref": "#/components/schemas/NotificationDeleted"}},
        "unread_count": {"id": false, "data": {"$ref": "#/components/schemas/UnreadCount"}},
        "reset": {"id": false, "data": {"$ref": "#/components/schemas/Reset"}},
        "message": {"id": true, "data": {"$ref": "#/components/schemas/Message"}},
        "message.updated": {"id": true, "data": {"$ref": "#/components/schemas/Message"}},
        "message.deleted": {"id": true, "data": {"$ref": "#/components/schemas/Message"}},
        "read": {"id": true, "data": {"$ref": "#/components/schemas/ReadReceipt"}},
        "conversation": {"id": true, "data": {"$ref": "#/components/schemas/Conversation"}},
        "typing": {"id": false, "data": {"$ref": "#/components/schemas/Typing"}},
        "presence": {"id": false, "data": {"$ref": "#/components/schemas/PresenceView"}},
        "topic.event": {"id": true, "data": {"$ref": "#/components/schemas/TopicEvent"}}
    });
    if let Some(path) = openapi.paths.paths.get_mut("/v1/stream")
        && let Some(get) = path.get.as_mut()
    {
        get.extensions = Some(ExtensionsBuilder::new().add("x-sse-events", events).build());
    }
}

/// A publish names its recipients with exactly one of `user_id`,
/// `user_ids` and `audience` (an announcement). The derive cannot say
/// "one of these fields", so the schema becomes `allOf: [the fields,
/// oneOf: [required user_id, required user_ids, required audience]]`,
/// and a generated request carries exactly one. Applied once the routers
/// have added their schemas.
pub fn require_one_recipient(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        RefOr,
        schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema},
    };
    let Some(components) = openapi.components.as_mut() else { return };
    let Some(RefOr::T(fields)) = components.schemas.remove("PublishRequest") else { return };
    let description = match &fields {
        Schema::Object(object) => object.description.clone(),
        _ => None,
    };
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().required("user_id"))
        .item(ObjectBuilder::new().required("user_ids"))
        .item(ObjectBuilder::new().required("audience"));
    let schema = AllOfBuilder::new().description(description).item(fields).item(one_of).build();
    components.schemas.insert("PublishRequest".to_owned(), RefOr::T(Schema::AllOf(schema)));
}
