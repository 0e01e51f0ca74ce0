//! Every error code the core answers, in the contract's body, changing nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{into_json, spawn_app};

fn assert_error(status: StatusCode, body: &Value, expected_status: StatusCode, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "a human message: {body}");
}

#[tokio::test]
async fn invalid_publish_bodies_are_refused_with_the_field_at_fault_and_store_nothing() {
    let app = spawn_app().await;
    let valid = json!({"user_id": "alice", "type": "t", "title": "x"});
    let with = |patch: Value| {
        let mut body = valid.clone();
        for (key, value) in patch.as_object().unwrap() {
            if value.is_null() {
                body.as_object_mut().unwrap().remove(key);
            } else {
                body[key] = value.clone();
            }
        }
        body
    };
    let cases = [
        (with(json!({"user_id": null})), StatusCode::UNPROCESSABLE_ENTITY, Some("user_id")),
        (with(json!({"user_ids": ["a"]})), StatusCode::UNPROCESSABLE_ENTITY, Some("user_ids")),
        (with(json!({"user_id": null, "user_ids": []})), StatusCode::UNPROCESSABLE_ENTITY, Some("user_ids")),
        (
            with(json!({"user_id": null, "user_ids": (0..1001).map(|i| format!("u{i}")).collect::<Vec<_>>()})),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("user_ids"),
        ),
        (with(json!({"type": "Not Valid"})), StatusCode::UNPROCESSABLE_ENTITY, Some("type")),
        (with(json!({"type": "a".repeat(51)})), StatusCode::UNPROCESSABLE_ENTITY, Some("type")),
        (with(json!({"title": ""})), StatusCode::UNPROCESSABLE_ENTITY, Some("title")),
        (with(json!({"title": "t".repeat(256)})), StatusCode::UNPROCESSABLE_ENTITY, Some("title")),
        (with(json!({"body": "b".repeat(10_001)})), StatusCode::UNPROCESSABLE_ENTITY, Some("body")),
        (with(json!({"data": [1, 2]})), StatusCode::UNPROCESSABLE_ENTITY, Some("data")),
        (with(json!({"data": {"big": "x".repeat(17 * 1024)}})), StatusCode::UNPROCESSABLE_ENTITY, Some("data")),
        (with(json!({"action_url": "javascript:alert(1)"})), StatusCode::UNPROCESSABLE_ENTITY, Some("action_url")),
        (with(json!({"expires_at": "2001-01-01T00:00:00Z"})), StatusCode::UNPROCESSABLE_ENTITY, Some("expires_at")),
        (with(json!({"expires_at": "tomorrow"})), StatusCode::BAD_REQUEST, Some("expires_at")),
        // Without a title, the type's template renders it; without a template it is missing.
        (with(json!({"title": null})), StatusCode::UNPROCESSABLE_ENTITY, Some("title")),
        (with(json!({"surprise": true})), StatusCode::BAD_REQUEST, None),
        (with(json!({"title": 5})), StatusCode::BAD_REQUEST, Some("title")),
    ];
    for (body, status, field) in cases {
        let (actual_status, answer) = into_json(app.publish_raw(&body).await).await;
        assert_error(actual_status, &answer, status, "invalid_request");
        if let Some(field) = field {
            assert_eq!(answer["error"]["field"], field, "for {body}");
        }
    }
    let response = app
        .http
        .post(format!("{}/v1/notifications", app.base))
        .bearer_auth(app.publisher_token())
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, body) = into_json(response).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");

    let (_, count) = app.get_json("/v1/notifications/unread_count", &app.token("alice")).await;
    assert_eq!(count["count"], 0, "nothing was stored");
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/v1/notifications", app.base))
        .bearer_auth(app.publisher_token())
        .header("content-type", "application/json")
        .body(format!("{{\"user_id\":\"a\",\"type\":\"t\",\"title\":\"{}\"}}", "x".repeat(600 * 1024)))
        .send()
        .await
        .unwrap();
    let (status, body) = into_json(response).await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn bad_query_parameters_are_refused() {
    let app = spawn_app().await;
    let token = app.token("alice");
    for query in ["limit=0", "limit=101", "limit=ten", "status=maybe", "type=BAD", "cursor=abc"] {
        let (status, body) = app.get_json(&format!("/v1/notifications?{query}"), &token).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(body["error"]["field"], query.split('=').next().unwrap(), "the parameter at fault: {body}");
    }
    let many = (0..501).map(|i| format!("u{i}")).collect::<Vec<_>>().join(",");
    for path in [format!("/v1/presence?user_ids={many}"), "/v1/conversations/1/messages?before=x".into(), "/v1/stats/notifications?since=yesterday".into()] {
        let token = if path.contains("stats") { app.publisher_token() } else { token.clone() };
        let (status, body) = app.get_json(&path, &token).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(body["error"]["field"].is_string(), "{path}: {body}");
    }
    let (status, body) = app.post_json("/v1/notifications/read_all", &token, Some(json!({"kind": "x"}))).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn unknown_paths_and_ids_are_not_found_in_the_contract_body() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let (status, body) = app.get_json("/v1/nothing-here", &token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    for id in ["12345", "abc", "-1"] {
        let (status, body) = app.post_json(&format!("/v1/notifications/{id}/read"), &token, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let response = app.request(Method::PUT, "/v1/notifications", &token).send().await.unwrap();
    let (status, body) = into_json(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["error"]["code"], "invalid_request");
}

#[tokio::test]
async fn health_says_alive_and_readiness_says_the_database_answers() {
    let app = spawn_app().await;
    let response = app.http.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.http.get(format!("{}/readyz", app.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    app.state.db.close_by_ref().await.unwrap();
    let (status, body) = into_json(app.http.get(format!("{}/readyz", app.base)).send().await.unwrap()).await;
    assert_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let response = app.http.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "the process still lives");
}

/// Posts `raw` as the body of a publish, as a backend.
async fn publish_text(app: &crate::helpers::TestApp, raw: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .post(format!("{}/v1/notifications", app.base))
        .bearer_auth(app.publisher_token())
        .header("content-type", "application/json")
        .body(raw.to_owned())
        .send()
        .await
        .unwrap();
    into_json(response).await
}

#[tokio::test]
async fn a_missing_required_field_is_named_and_a_syntax_error_names_no_field() {
    let app = spawn_app().await;
    // A title may be left out for a type with a template; "t" has none.
    let (status, body) = publish_text(&app, r#"{"user_id": "alice", "type": "t"}"#).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(body["error"]["field"], "title", "{body}");
    let (status, body) = publish_text(&app, r#"{"user_id": "alice", "title": "x"}"#).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(body["error"]["field"], "type", "{body}");
    let (status, body) = publish_text(&app, r#"{"user_id": "alice", "type": "t", "title": "x", "surprise": 1}"#).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(body["error"]["field"], "surprise", "an unknown field is the field at fault: {body}");
    for broken in [r#"{"user_id": "alice", "type": "t", "title": "x",}"#, r#"{"user_id": "alice", "type": "t", "#, r#"{"user_id" "alice"}"#] {
        let (status, body) = publish_text(&app, broken).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
        let field = &body["error"]["field"];
        assert!(field.is_null() || field.as_str().is_some_and(|f| !f.is_empty() && !f.contains('?')), "no '?' as a field for {broken}: {body}");
    }
    // A nested missing field is named by its path.
    let (status, body) = app.post_json("/v1/conversations", &app.token("alice"), Some(json!({"title": "no members"}))).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(body["error"]["field"], "members", "{body}");
    let (_, count) = app.get_json("/v1/notifications/unread_count", &app.token("alice")).await;
    assert_eq!(count["count"], 0, "nothing was stored");
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_refused_and_stores_nothing() {
    let app = spawn_app().await;
    for raw in [r#"["alice", null, "t", "by position"]"#, r#"[null, ["alice"], "t", "by position", "body"]"#, "true", "42", r#""text""#, "null"] {
        let (status, body) = publish_text(&app, raw).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let alice = app.token("alice");
    let (status, body) = app.post_json("/v1/conversations", &alice, Some(json!([null, ["bob"]]))).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
    let (_, count) = app.get_json("/v1/notifications/unread_count", &alice).await;
    assert_eq!(count["count"], 0, "nothing was stored");
    let (_, conversations) = app.get_json("/v1/conversations", &alice).await;
    assert_eq!(conversations, json!([]), "no conversation was created");
}

#[tokio::test]
async fn control_characters_are_refused_in_notification_titles_and_types() {
    let app = spawn_app().await;
    for (field, value) in [("title", "nul\0here"), ("title", "bell\u{7}"), ("title", "line\nbreak"), ("title", "\u{9b}csi"), ("type", "t\0"), ("type", "t\n")] {
        let mut body = json!({"user_id": "alice", "type": "t", "title": "x"});
        body[field] = json!(value);
        let (status, answer) = into_json(app.publish_raw(&body).await).await;
        assert_error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        assert_eq!(answer["error"]["field"], field, "for {value:?}");
    }
    let (_, count) = app.get_json("/v1/notifications/unread_count", &app.token("alice")).await;
    assert_eq!(count["count"], 0, "nothing was stored");
}

#[tokio::test]
async fn an_action_url_must_be_http_or_a_path_on_this_origin() {
    let app = spawn_app().await;
    for bad in ["/\\evil.com", "//evil.com", "/\\/evil.com", "\\\\evil.com", "javascript:alert(1)", "data:text/html,x", "evil.com", " /x"] {
        let body = json!({"user_id": "alice", "type": "t", "title": "x", "action_url": bad});
        let (status, answer) = into_json(app.publish_raw(&body).await).await;
        assert_error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        assert_eq!(answer["error"]["field"], "action_url", "for {bad:?}");
    }
    let (_, count) = app.get_json("/v1/notifications/unread_count", &app.token("alice")).await;
    assert_eq!(count["count"], 0, "nothing was stored");
    for good in ["/invoices/42", "/", "/search?q=a\\b", "https://example.com/x", "http://example.com"] {
        let body = json!({"user_id": "alice", "type": "t", "title": "x", "action_url": good});
        let response = app.publish_raw(&body).await;
        assert_eq!(response.status(), StatusCode::CREATED, "for {good:?}");
    }
}

#[tokio::test]
async fn api_json_answers_are_never_cached() {
    let app = spawn_app().await;
    let alice = app.token("alice");
    let answers = [
        app.request(Method::GET, "/v1/notifications", &alice).send().await.unwrap(),
        app.request(Method::GET, "/v1/notifications/unread_count", &alice).send().await.unwrap(),
        app.request(Method::GET, "/v1/preferences", &alice).send().await.unwrap(),
        app.request(Method::GET, "/v1/conversations", &alice).send().await.unwrap(),
        app.publish_raw(&json!({"user_id": "alice", "type": "t", "title": "x"})).await,
        app.request(Method::GET, "/v1/notifications", "bad-token").send().await.unwrap(),
        app.request(Method::GET, "/v1/nothing-here", &alice).send().await.unwrap(),
        app.request(Method::POST, "/v1/notifications/12345/read", &alice).send().await.unwrap(),
    ];
    for answer in answers {
        let url = answer.url().clone();
        assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{url}");
        assert_eq!(answer.headers().get("cache-control").map(|v| v.to_str().unwrap()), Some("no-store"), "{url} ({})", answer.status());
    }
    let stream = app.http.get(format!("{}/v1/stream", app.base)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(stream.headers()["cache-control"], "no-cache", "the stream keeps the contract's header");
}

#[tokio::test]
async fn batch_items_follow_the_same_rules_as_single_bodies_each_failing_alone() {
    let app = spawn_app().await;
    let items = json!([
        {"user_id": "alice", "type": "t", "title": "fine"},
        ["alice", null, "t", "by position", "", null, null, null, null, false],
        {"user_id": "alice", "type": "t"},
        true,
        {"user_id": "alice", "type": "t", "title": "x", "surprise": 1},
        {"user_id": "alice", "type": "t", "title": "nul\u{0}"},
    ]);
    let (status, body) = app.post_json("/v1/notifications/batch", &app.publisher_token(), Some(json!({"items": items}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 6, "{body}");
    assert!(results[0]["created"].is_array(), "{body}");
    for (i, field) in [(1, None), (2, Some("title")), (3, None), (4, Some("surprise")), (5, Some("title"))] {
        let error = &results[i]["error"];
        assert_eq!(error["code"], "invalid_request", "item {i}: {body}");
        assert_eq!(error["field"].as_str(), field, "item {i}: {body}");
    }
    let (_, count) = app.get_json("/v1/notifications/unread_count", &app.token("alice")).await;
    assert_eq!(count["count"], 1, "only the valid item was stored");
}
