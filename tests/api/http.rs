//! The HTTP API rows of the contract.

use serde_json::{json, Value};

use crate::helpers::*;

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn create_returns_201_with_the_room_and_its_times() {
    let app = spawn_app().await;
    let response = app
        .post_room(&json!({
            "room_id": "team-42", "auth": random_auth(), "admin_password": ADMIN_PASSWORD,
            "listed": true, "title": "Team 42"
        }))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["room_id"], "team-42");
    assert_eq!(body["listed"], true);
    assert_eq!(body["title"], "Team 42");
    let created = time::OffsetDateTime::parse(
        body["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires - created, time::Duration::days(30));
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn create_without_room_id_makes_a_random_16_character_one() {
    let app = spawn_app().await;
    let response = app
        .post_room(&json!({ "auth": random_auth(), "admin_password": ADMIN_PASSWORD }))
        .await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let id = body["room_id"].as_str().unwrap();
    assert_eq!(id.len(), 16);
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_eq!(body["listed"], false);
    assert_eq!(body["title"], Value::Null);
}

#[tokio::test]
async fn create_refuses_bad_bodies_with_bad_request() {
    let app = spawn_app().await;
    for raw in [
        "not json",
        "[]",
        r#"{"admin_password":"admin password 1"}"#,
        r#"{"auth":"QI2MuN_h4umuzgDv7fuYPzUPs2a7-rq_52HxKATzSZk"}"#,
        r#"{"auth":5,"admin_password":"admin password 1"}"#,
        r#"{"room_id":7,"auth":"QI2MuN_h4umuzgDv7fuYPzUPs2a7-rq_52HxKATzSZk","admin_password":"admin password 1"}"#,
        r#"{"listed":"yes","auth":"QI2MuN_h4umuzgDv7fuYPzUPs2a7-rq_52HxKATzSZk","admin_password":"admin password 1"}"#,
    ] {
        let (status, code) = error_code(app.post_raw(raw).await).await;
        assert_eq!((status, code.as_str()), (400, "bad_request"), "{raw}");
    }
}

#[tokio::test]
async fn create_names_the_first_bad_field_in_contract_order() {
    let app = spawn_app().await;
    let good_auth = random_auth();
    let cases = [
        (
            json!({"room_id": "", "auth": "x", "admin_password": "x", "title": "\n"}),
            "invalid_room_id",
        ),
        (
            json!({"room_id": "a b", "auth": good_auth, "admin_password": ADMIN_PASSWORD}),
            "invalid_room_id",
        ),
        (
            json!({"room_id": "ok-id", "auth": "short", "admin_password": "x"}),
            "invalid_auth",
        ),
        (
            json!({"auth": format!("{good_auth}="), "admin_password": ADMIN_PASSWORD}),
            "invalid_auth",
        ),
        (
            json!({"auth": good_auth, "admin_password": "1234567", "title": "\n"}),
            "invalid_admin_password",
        ),
        (
            json!({"auth": good_auth, "admin_password": "x".repeat(129)}),
            "invalid_admin_password",
        ),
        (
            json!({"auth": good_auth, "admin_password": ADMIN_PASSWORD, "title": "t".repeat(81)}),
            "invalid_title",
        ),
    ];
    for (body, expected) in cases {
        let (status, code) = error_code(app.post_room(&body).await).await;
        assert_eq!((status, code.as_str()), (400, expected), "{body}");
    }
}

#[tokio::test]
async fn create_of_an_existing_id_is_409() {
    let app = spawn_app().await;
    let room = app.room_with(json!({ "room_id": "taken-room" })).await;
    let (status, code) = error_code(
        app.post_room(
            &json!({ "room_id": room.id, "auth": random_auth(), "admin_password": ADMIN_PASSWORD }),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "room_exists"));
}

#[tokio::test]
async fn creations_beyond_the_per_ip_limit_are_429_with_retry_after() {
    let app = spawn_app_with(|c| c.creates_per_ip = 2).await;
    app.room().await;
    app.room().await;
    let response = app
        .post_room(&json!({ "auth": random_auth(), "admin_password": ADMIN_PASSWORD }))
        .await;
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let (_, code) = error_code(response).await;
    assert_eq!(code, "rate_limited");
}

#[tokio::test]
async fn list_shows_listed_rooms_only_most_members_first() {
    let app = spawn_app().await;
    let quiet = app
        .room_with(json!({ "room_id": "quiet-room", "listed": true, "title": "Quiet" }))
        .await;
    let busy = app
        .room_with(json!({ "room_id": "busy-room", "listed": true }))
        .await;
    let hidden = app.room_with(json!({ "room_id": "hidden-room" })).await;
    let (_a, _) = app.join(&busy, "a").await;
    let (_b, _) = app.join(&busy, "b").await;
    let (_c, _) = app.join(&hidden, "c").await;
    let _ = quiet;
    let body: Value = app.get("/api/rooms").await.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "rooms": [
            { "room_id": "busy-room", "title": null, "members": 2 },
            { "room_id": "quiet-room", "title": "Quiet", "members": 0 },
        ], "total": 2, "next_offset": null })
    );
}

/// The lobby is kept in memory: listing reads no store and no unlisted room, comes in pages, and
/// is rated per address.
#[tokio::test]
async fn the_lobby_is_served_from_memory_in_pages_and_rated() {
    let app = spawn_app_with(|c| c.lobby_per_minute = 3).await;
    for i in 0..5 {
        app.room_with(json!({ "room_id": format!("listed-{i}"), "listed": true }))
            .await;
    }
    app.room_with(json!({ "room_id": "unlisted-0" })).await;
    let store_reads = || {
        app.state
            .metrics
            .store_seconds
            .with_label_values(&["listed"])
            .get_sample_count()
    };
    let before = store_reads();
    let first: Value = app.get("/api/rooms?limit=2").await.json().await.unwrap();
    let ids = |page: &Value| -> Vec<String> {
        page["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["room_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&first), ["listed-0", "listed-1"]);
    assert_eq!(first["total"], 5);
    assert_eq!(first["next_offset"], 2);
    let last: Value = app
        .get("/api/rooms?offset=4&limit=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&last), ["listed-4"]);
    assert_eq!(last["next_offset"], Value::Null);
    let (status, code) = error_code(app.get("/api/rooms?limit=many").await).await;
    assert_eq!((status, code.as_str()), (400, "bad_request"));
    assert_eq!(store_reads(), before, "the store was read");
    let limited = app.get("/api/rooms").await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn delete_unknown_room_is_404_before_any_password_check() {
    let app = spawn_app().await;
    let (status, code) = error_code(app.delete_room("no-such-room", "whatever it is").await).await;
    assert_eq!((status, code.as_str()), (404, "room_not_found"));
    let (status, code) = error_code(app.delete_room("bad id!", ADMIN_PASSWORD).await).await;
    assert_eq!((status, code.as_str()), (404, "room_not_found"));
}

#[tokio::test]
async fn delete_with_a_wrong_password_is_403_and_keeps_the_room() {
    let app = spawn_app().await;
    let room = app.room().await;
    for wrong in ["wrong password", "short"] {
        let (status, code) = error_code(app.delete_room(&room.id, wrong).await).await;
        assert_eq!((status, code.as_str()), (403, "invalid_credentials"));
    }
    app.join(&room, "still-here").await;
}

#[tokio::test]
async fn delete_is_204_and_closes_every_member_with_4410() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (mut a, _) = app.join(&room, "a").await;
    let (mut b, _) = app.join(&room, "b").await;
    let response = app.delete_room(&room.id, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 204);
    for ws in [&mut a, &mut b] {
        let (code, frames) = ws.closed().await;
        assert_eq!(code, 4410);
        assert!(
            frames.iter().any(|f| f["type"] == "room_deleted"),
            "{frames:?}"
        );
    }
    let (status, code) = error_code(app.delete_room(&room.id, ADMIN_PASSWORD).await).await;
    assert_eq!((status, code.as_str()), (404, "room_not_found"));
}

#[tokio::test]
async fn failed_deletes_beyond_the_limit_are_429() {
    let app = spawn_app_with(|c| c.join_failures_per_ip = 2).await;
    let room = app.room().await;
    for _ in 0..2 {
        assert_eq!(
            app.delete_room(&room.id, "wrong password").await.status(),
            403
        );
    }
    let response = app.delete_room(&room.id, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn healthz_says_ok_while_the_store_answers() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "status": "ok", "store": "ok" })
    );
}

#[tokio::test]
async fn metrics_expose_the_contract_series() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (mut a, _) = app.join(&room, "a").await;
    a.send_json(&json!({ "type": "send", "txn": "1", "body": {"text": "x"} }))
        .await;
    a.recv_type("message").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for series in [
        "ephemera_rooms_live 1",
        "ephemera_connections 1",
        "ephemera_messages_relayed_total 1",
        "ephemera_bytes_relayed_total",
        "ephemera_joins_total{outcome=\"ok\"} 1",
        "ephemera_store_seconds_bucket",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
}

#[tokio::test]
async fn room_links_serve_the_web_client_with_strict_headers() {
    let app = spawn_app().await;
    for path in ["/r/any-room-at-all", "/"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert!(response.text().await.unwrap().contains("<html"));
    }
}

/// Every resource that answers GET answers HEAD with the same status and headers and no body,
/// and the icon the pages name is served (a 404 on every page load was a console error).
#[tokio::test]
async fn head_is_answered_wherever_get_is() {
    let app = spawn_app().await;
    for (path, status) in [
        ("/r/any-room", 200),
        ("/", 200),
        ("/js/app.js", 200),
        ("/favicon.svg", 200),
        ("/api/rooms", 200),
        ("/healthz", 200),
        ("/metrics", 200),
    ] {
        let get = app.get(path).await;
        assert_eq!(get.status(), status, "GET {path}");
        let head = app
            .http
            .head(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), status, "HEAD {path}");
        assert_eq!(
            head.headers().get("content-type"),
            get.headers().get("content-type"),
            "HEAD {path}"
        );
        assert!(head.bytes().await.unwrap().is_empty(), "HEAD {path}");
    }
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains(r#"rel="icon" href="/favicon.svg""#));
    // The WebSocket endpoint is GET only: a handshake cannot be a HEAD.
    let head = app
        .http
        .head(format!("{}/ws/any-room", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 405);
}

#[tokio::test]
async fn websocket_upgrades_check_the_origin() {
    let app = spawn_app_with(|c| {
        c.allowed_origins = vec!["https://friend.example".into()];
        c.public_url = Some("https://chat.example.org/base".into());
    })
    .await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let url = format!("{}/ws/some-room", app.ws_base);
    for allowed in [
        None,
        Some(format!("http://127.0.0.1:{port}")),
        Some("https://friend.example".to_owned()),
        Some("https://chat.example.org".to_owned()),
    ] {
        assert!(
            Ws::connect(&url, allowed.as_deref()).await.is_ok(),
            "{allowed:?}"
        );
    }
    for refused in ["https://evil.example", "null", "http://127.0.0.1:1"] {
        match Ws::connect(&url, Some(refused)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{refused}")
            }
            Err(other) => panic!("{refused}: {other}"),
            Ok(_) => panic!("{refused} was let in"),
        }
    }
}

/// A page of another site can make its visitors' browsers send a form or `text/plain` post
/// without asking: creating needs `application/json`, and neither creating nor deleting is
/// allowed from a foreign origin.
#[tokio::test]
async fn creating_needs_json_and_no_foreign_origin_may_create_or_delete() {
    let app = spawn_app().await;
    let body = json!({ "auth": random_auth(), "admin_password": ADMIN_PASSWORD }).to_string();
    let plain = app
        .http
        .post(format!("{}/api/rooms", app.base))
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(plain).await,
        (415, "unsupported_media_type".into())
    );
    let foreign = app
        .http
        .post(format!("{}/api/rooms", app.base))
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(foreign).await, (403, "forbidden".into()));
    let own = app
        .http
        .post(format!("{}/api/rooms", app.base))
        .header("content-type", "application/json; charset=utf-8")
        .header("origin", app.base.clone())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 201);
    let room = app.room().await;
    let delete = app
        .http
        .delete(format!("{}/api/rooms/{}", app.base, room.id))
        .header("origin", "https://evil.example")
        .json(&json!({ "admin_password": ADMIN_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(delete).await, (403, "forbidden".into()));
}

/// Behind HTTPS the server says so for a year (HSTS); on plain HTTP it does not.
#[tokio::test]
async fn hsts_is_sent_when_the_public_url_is_https() {
    let behind_tls =
        spawn_app_with(|c| c.public_url = Some("https://chat.example.org".into())).await;
    let page = behind_tls.get("/").await;
    assert_eq!(
        page.headers()["strict-transport-security"],
        "max-age=31536000"
    );
    let plain = spawn_app().await;
    assert!(!plain
        .get("/")
        .await
        .headers()
        .contains_key("strict-transport-security"));
}

/// With `--metrics-bind`, `/metrics` is served there and not on the public listener.
#[tokio::test]
async fn metrics_can_be_served_on_an_address_of_their_own() {
    let app = spawn_app_with(|c| c.metrics_bind = Some("127.0.0.1:0".parse().unwrap())).await;
    assert_eq!(app.get("/metrics").await.status(), 404);
    let port = app.metrics_port.expect("a metrics port");
    let metrics = app
        .http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("ephemera_connections"));
}
