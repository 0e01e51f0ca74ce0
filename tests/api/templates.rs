//! Templates per type: stored by operators, rendered at publish in each
//! recipient's locale, refused with the field at fault.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, into_json, spawn_app};

async fn put_template(app: &TestApp, kind: &str, token: &str, body: Value) -> (StatusCode, Value) {
    into_json(app.request(Method::PUT, &format!("/v1/templates/{kind}"), token).json(&body).send().await.unwrap()).await
}

#[tokio::test]
async fn templates_round_trip_for_operators_only() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    let template = json!({"title": "Order {{ data.order_id }} shipped", "body": "It left {{ data.city }}.", "email_subject": "Shipped: {{ data.order_id }}"});
    let (status, _) = put_template(&app, "order.shipped", &app.publisher_token(), template.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "publishing is not administering");
    let (status, saved) = put_template(&app, "order.shipped", &admin, template.clone()).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["type"], "order.shipped");
    assert_eq!(saved["title"], template["title"]);
    assert_eq!(saved["locale"], Value::Null);
    let (status, read) = app.get_json("/v1/templates/order.shipped", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, saved);

    let (status, body) = put_template(&app, "order.shipped", &admin, json!({"title": "Broken {{ data.x", "body": ""})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "title");
    let (status, body) = put_template(&app, "order.shipped", &admin, json!({"title": "t", "locale": "en_US"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "locale");
    let (_, read) = app.get_json("/v1/templates/order.shipped", &admin).await;
    assert_eq!(read, saved, "refused changes change nothing");

    let deleted = app.request(Method::DELETE, "/v1/templates/order.shipped", &admin).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let (status, _) = app.get_json("/v1/templates/order.shipped", &admin).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_publish_without_title_and_body_is_rendered_in_each_recipients_locale() {
    let app = spawn_app().await;
    let admin = app.admin_token();
    put_template(&app, "order.shipped", &admin, json!({"title": "Order {{ data.order_id }} shipped", "body": "From {{ data.city }}"})).await;
    put_template(&app, "order.shipped", &admin, json!({"title": "Commande {{ data.order_id }} expédiée", "body": "Depuis {{ data.city }}", "locale": "fr"})).await;
    crate::outbox::put_contact(&app, "bob", &json!({"locale": "fr-CA"})).await;
    crate::outbox::put_contact(&app, "carol", &json!({"locale": "de"})).await;

    let response = app.publish_raw(&json!({"user_ids": ["alice", "bob", "carol"], "type": "order.shipped", "data": {"order_id": 42, "city": "<Lyon>"}})).await;
    let (status, published) = into_json(response).await;
    assert_eq!(status, StatusCode::CREATED, "{published}");
    let titles: Vec<&str> = published["created"].as_array().unwrap().iter().map(|n| n["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Order 42 shipped", "Commande 42 expédiée", "Order 42 shipped"], "fr-CA falls back to fr, de to the default");
    assert_eq!(published["created"][1]["body"], "Depuis <Lyon>", "title and body are text, not HTML: nothing is escaped");

    // What is stored is what was rendered.
    let (_, page) = app.get_json("/v1/notifications", &app.token("bob")).await;
    assert_eq!(page["items"][0]["title"], "Commande 42 expédiée");

    // The batch endpoint renders its items the same way.
    let batch = json!({"items": [{"user_id": "bob", "type": "order.shipped", "data": {"order_id": 7, "city": "Paris"}}]});
    let (status, answer) = app.post_json("/v1/notifications/batch", &app.publisher_token(), Some(batch)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["results"][0]["created"][0]["title"], "Commande 7 expédiée");
}

#[tokio::test]
async fn a_template_that_does_not_render_with_the_data_is_refused_naming_the_field() {
    let app = spawn_app().await;
    put_template(&app, "order.shipped", &app.admin_token(), json!({"title": "Order {{ data.order.id }}", "body": ""})).await;
    let (status, body) = into_json(app.publish_raw(&json!({"user_id": "alice", "type": "order.shipped", "data": {"order": {}}})).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    assert_eq!(body["error"]["field"], "data.order.id");

    let (status, body) = into_json(app.publish_raw(&json!({"user_id": "alice", "type": "no.template"})).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "title", "without a template the title is required");

    let (_, page) = app.get_json("/v1/notifications", &app.token("alice")).await;
    assert_eq!(page["items"], json!([]), "a refused publish stores nothing");

    // Title and body given: the template is not used.
    let (status, body) = into_json(app.publish_raw(&json!({"user_id": "alice", "type": "order.shipped", "title": "Given"})).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["created"][0]["title"], "Given");
}
