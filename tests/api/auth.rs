//! Authentication: one 401 for every bad token, 403 for a missing scope,
//! and the stream's three ways to carry a token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{EventStream, SECRET, into_json, spawn_app, spawn_app_with};

fn signed(claims: serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn in_an_hour() -> u64 {
    (SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(3600)).as_secs()
}

#[tokio::test]
async fn every_bad_token_gets_the_same_401_with_a_bearer_challenge() {
    let app = spawn_app().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let tokens = [
        None,
        Some("not-a-jwt".to_owned()),
        Some(signed(json!({"sub": "alice", "exp": in_an_hour()}), b"some-other-secret-entirely")),
        Some(signed(json!({"sub": "alice", "exp": now - 10}), SECRET)),
        Some(signed(json!({"sub": "alice"}), SECRET)),
        Some(signed(json!({"exp": in_an_hour()}), SECRET)),
        Some(signed(json!({"sub": "", "exp": in_an_hour()}), SECRET)),
    ];
    for token in tokens {
        for path in ["/v1/notifications", "/v1/stream"] {
            let mut request = app.http.get(format!("{}{path}", app.base));
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let (status, body) = into_json(response).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?} on {path}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
}

#[tokio::test]
async fn publishing_needs_the_publish_scope() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(format!("{}/v1/notifications", app.base))
        .bearer_auth(app.token("alice"))
        .json(&json!({"user_id": "bob", "type": "t", "title": "spoof"}))
        .send()
        .await
        .unwrap();
    let (status, body) = into_json(response).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");
}

#[tokio::test]
async fn the_stream_takes_its_token_from_the_query_or_the_cookie() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let by_query = app.http.get(format!("{}/v1/stream?access_token={token}", app.base)).send().await.unwrap();
    assert_eq!(by_query.status(), StatusCode::OK);
    let (_, count) = EventStream::new(by_query).until_unread_count().await;
    assert_eq!(count, 0);

    let by_cookie = app
        .http
        .get(format!("{}/v1/stream", app.base))
        .header("cookie", format!("theme=dark; tidings_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), StatusCode::OK);

    let rest_by_query = app.http.get(format!("{}/v1/notifications?access_token={token}", app.base)).send().await.unwrap();
    assert_eq!(rest_by_query.status(), StatusCode::UNAUTHORIZED, "only the stream accepts a query token");
}

#[tokio::test]
async fn an_audience_when_configured_is_required() {
    let app = spawn_app_with(|settings| settings.jwt_audience = Some("tidings".into())).await;
    let with_aud = signed(json!({"sub": "alice", "exp": in_an_hour(), "aud": "tidings"}), SECRET);
    let other_aud = signed(json!({"sub": "alice", "exp": in_an_hour(), "aud": "elsewhere"}), SECRET);
    let (status, _) = app.get_json("/v1/notifications", &with_aud).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get_json("/v1/notifications", &other_aud).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tokens_signed_by_an_identity_provider_verify_with_its_rs256_or_es256_public_key() {
    use jsonwebtoken::Algorithm;
    use tidings::auth::keys::KeySource;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (algorithm, name) in [(Algorithm::ES256, "es256"), (Algorithm::RS256, "rs256")] {
        let public = std::fs::read(fixtures.join(format!("{name}-public.pem"))).unwrap();
        let private = std::fs::read(fixtures.join(format!("{name}-private.pem"))).unwrap();
        let app = spawn_app_with(|settings| settings.keys = KeySource::PublicKey { algorithm, pem: public }).await;
        let key = match algorithm {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&private).unwrap(),
            _ => EncodingKey::from_rsa_pem(&private).unwrap(),
        };
        let token = jsonwebtoken::encode(&Header::new(algorithm), &json!({"sub": "alice", "exp": in_an_hour()}), &key).unwrap();
        let (status, _) = app.get_json("/v1/notifications", &token).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        let hs256 = signed(json!({"sub": "alice", "exp": in_an_hour()}), SECRET);
        let (status, _) = app.get_json("/v1/notifications", &hs256).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{name}: an HS256 token is not accepted in public-key mode");
    }
}

/// A token may be valid for longer than any clock can count: the stream
/// must still open, deliver and keep running, not crash the connection.
#[tokio::test]
async fn a_stream_whose_token_expires_beyond_any_practical_time_opens_and_streams() {
    let app = spawn_app().await;
    for exp in [u64::MAX, 18_446_744_070_000_000_000, u64::from(u32::MAX) * 1_000_000] {
        let token = signed(json!({"sub": "alice", "exp": exp}), SECRET);
        let response = app.http.get(format!("{}/v1/stream", app.base)).bearer_auth(&token).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "exp {exp}");
        let mut stream = EventStream::new(response);
        stream.until_unread_count().await;
        let published = app.notify("alice", &format!("for exp {exp}")).await;
        assert_eq!(crate::helpers::data(&stream.next_named("notification").await), published, "exp {exp}");
    }
}

#[tokio::test]
async fn a_token_is_refused_before_its_not_before_time() {
    let app = spawn_app().await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let early = signed(json!({"sub": "alice", "exp": in_an_hour(), "nbf": now + 600}), SECRET);
    for path in ["/v1/notifications", "/v1/stream"] {
        let response = app.http.get(format!("{}{path}", app.base)).bearer_auth(&early).send().await.unwrap();
        let (status, body) = into_json(response).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let ripe = signed(json!({"sub": "alice", "exp": in_an_hour(), "nbf": now - 10}), SECRET);
    let (status, _) = app.get_json("/v1/notifications", &ripe).await;
    assert_eq!(status, StatusCode::OK, "a token past its nbf is accepted");
}
