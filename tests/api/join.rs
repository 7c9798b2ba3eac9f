//! Joining: `welcome`, the bot's notices, and every refusal with its error and close code.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

const ALICE_PUBKEY: &str =
    "BCkZ3Ha5Z8u1e4O0XudXdtC1aZjcJURwNRitr4tzqEbv-BDdyvU46KYcZ3FYekJazDGXsRrG9ghsCwyfVOm6F1I";

#[tokio::test]
async fn welcome_lists_the_members_and_limits_and_the_bot_tells_the_others() {
    let app = spawn_app().await;
    let room = app.room_with(json!({ "room_id": "team-42" })).await;
    let (mut alice, first) = app
        .join_with(
            &room,
            json!({ "name": "  alice ", "pubkey": ALICE_PUBKEY, "admin_password": ADMIN_PASSWORD }),
        )
        .await;
    assert_eq!(first["room_id"], "team-42");
    assert_eq!(
        first["you"],
        json!({ "name": "alice", "admin": true, "pubkey": ALICE_PUBKEY })
    );
    assert_eq!(
        first["members"],
        json!([{ "name": "alice", "admin": true, "pubkey": ALICE_PUBKEY }])
    );
    assert_eq!(first["session"].as_str().unwrap().len(), 43);
    assert_eq!(
        first["limits"],
        json!({ "max_frame_bytes": 262144, "messages_per_10s": 100, "bytes_per_10s": 16777216, "max_members": 1000 })
    );

    let mut bob = app.connect(&room.id).await;
    bob.send_json(&json!({ "type": "join", "name": "bob", "auth": room.auth }))
        .await;
    let welcome = bob.recv().await;
    assert_eq!(welcome["you"], json!({ "name": "bob", "admin": false }));
    assert_eq!(welcome["members"].as_array().unwrap().len(), 2);
    let greeting = bob.recv().await;
    assert_eq!(greeting["type"], "bot");
    assert_eq!(greeting["event"], "welcome");
    assert_eq!(greeting["members"], 2);
    assert!(greeting["text"].as_str().unwrap().contains("bob"));
    assert!(greeting["ts"].is_i64());

    let notice = alice.recv().await;
    assert_eq!(notice["type"], "bot");
    assert_eq!(notice["event"], "join");
    assert_eq!(notice["member"], json!({ "name": "bob", "admin": false }));
    assert_eq!(notice["members"], 2);
    assert!(notice["text"].as_str().unwrap().contains("bob"));

    bob.close().await;
    let leave = alice.recv().await;
    assert_eq!(leave["event"], "leave");
    assert_eq!(leave["name"], "bob");
    assert_eq!(leave["members"], 1);
}

async fn refused_join(app: &TestApp, room_id: &str, frame: Value, code: &str, close: u16) -> Value {
    let mut ws = app.connect(room_id).await;
    ws.send_json(&frame).await;
    ws.refused(code, close).await
}

#[tokio::test]
async fn a_first_frame_that_is_not_a_valid_join_is_4400() {
    let app = spawn_app().await;
    let room = app.room().await;
    for frame in [
        json!({ "type": "send", "txn": "1", "body": 1 }),
        json!({ "type": "join", "auth": room.auth }),
        json!({ "type": "join", "name": "x" }),
        json!({ "type": "join", "name": 5, "auth": room.auth }),
        json!({ "type": "join", "name": "x", "auth": room.auth, "pubkey": 5 }),
    ] {
        refused_join(&app, &room.id, frame, "bad_request", 4400).await;
    }
    let mut ws = app.connect(&room.id).await;
    ws.send_text("{not json").await;
    ws.refused("bad_request", 4400).await;
    let mut ws = app.connect(&room.id).await;
    futures_util::SinkExt::send(
        &mut ws.inner,
        tokio_tungstenite::tungstenite::Message::binary(vec![1, 2]),
    )
    .await
    .unwrap();
    ws.refused("bad_request", 4400).await;
}

#[tokio::test]
async fn wrong_or_malformed_credentials_are_4401() {
    let app = spawn_app().await;
    let room = app.room().await;
    for frame in [
        json!({ "type": "join", "name": "x", "auth": random_auth() }),
        json!({ "type": "join", "name": "x", "auth": "not-43-characters" }),
        json!({ "type": "join", "name": "x", "auth": room.auth, "admin_password": "wrong password" }),
        json!({ "type": "join", "name": "x", "auth": room.auth, "admin_password": "short" }),
    ] {
        refused_join(&app, &room.id, frame, "invalid_credentials", 4401).await;
    }
}

#[tokio::test]
async fn an_unknown_or_impossible_room_is_4404() {
    let app = spawn_app().await;
    for room_id in ["no-such-room", "x"] {
        refused_join(
            &app,
            room_id,
            json!({ "type": "join", "name": "x", "auth": random_auth() }),
            "room_not_found",
            4404,
        )
        .await;
    }
}

#[tokio::test]
async fn no_join_in_time_is_4408() {
    let app = spawn_app_with(|c| c.join_timeout_secs = 1).await;
    let mut ws = app.connect("any-room").await;
    ws.refused("join_timeout", 4408).await;
}

#[tokio::test]
async fn a_name_in_use_in_any_case_is_4409() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (_alice, _) = app.join(&room, "Élodie").await;
    refused_join(
        &app,
        &room.id,
        json!({ "type": "join", "name": " élodie", "auth": room.auth }),
        "name_taken",
        4409,
    )
    .await;
    refused_join(
        &app,
        &room.id,
        json!({ "type": "join", "name": "ÉLODIE", "auth": room.auth, "session": random_auth() }),
        "name_taken",
        4409,
    )
    .await;
}

#[tokio::test]
async fn a_frame_over_the_limit_is_4413_before_and_after_the_join() {
    let app = spawn_app_with(|c| c.max_frame_bytes = 1024).await;
    let room = app.room().await;
    let mut ws = app.connect(&room.id).await;
    ws.send_text(&"x".repeat(1025)).await;
    ws.refused("frame_too_large", 4413).await;

    let (mut ws, _) = app.join(&room, "a").await;
    let body = "y".repeat(1000);
    ws.send_json(&json!({ "type": "send", "txn": "1", "body": body }))
        .await;
    ws.refused("frame_too_large", 4413).await;
}

#[tokio::test]
async fn invalid_names_and_pubkeys_are_4422() {
    let app = spawn_app().await;
    let room = app.room().await;
    for name in [
        "",
        "   ",
        "bot",
        "BoT",
        "a\u{200b}b",
        "a\u{7}",
        &"n".repeat(33),
    ] {
        refused_join(
            &app,
            &room.id,
            json!({ "type": "join", "name": name, "auth": room.auth }),
            "invalid_name",
            4422,
        )
        .await;
    }
    let off_curve = format!("B{}", &ALICE_PUBKEY[1..ALICE_PUBKEY.len() - 2]) + "AA";
    for pubkey in ["", "abc", &off_curve] {
        refused_join(
            &app,
            &room.id,
            json!({ "type": "join", "name": "x", "auth": room.auth, "pubkey": pubkey }),
            "invalid_pubkey",
            4422,
        )
        .await;
    }
}

#[tokio::test]
async fn the_first_failure_beyond_the_limit_is_4429_with_retry_after() {
    let app = spawn_app_with(|c| c.join_failures_per_ip = 3).await;
    let room = app.room().await;
    for _ in 0..3 {
        refused_join(
            &app,
            &room.id,
            json!({ "type": "join", "name": "x", "auth": random_auth() }),
            "invalid_credentials",
            4401,
        )
        .await;
    }
    // Even the right key waits now: the limit is on the address, before any check.
    let error = refused_join(
        &app,
        &room.id,
        json!({ "type": "join", "name": "x", "auth": room.auth }),
        "rate_limited",
        4429,
    )
    .await;
    assert!(error["retry_after_ms"].as_u64().unwrap() > 0);
}

/// Sends a join with a wrong key through `headers`; the close code.
async fn failed_attempt(app: &TestApp, room: &Room, headers: &[(&'static str, &str)]) -> u16 {
    let url = format!("{}/ws/{}", app.ws_base, room.id);
    let mut ws = Ws::connect_with(&url, headers).await.unwrap();
    ws.send_json(&json!({ "type": "join", "name": "x", "auth": random_auth() }))
        .await;
    ws.closed().await.0
}

/// Behind a trusted proxy, failed joins count against the client the proxy names: the rightmost
/// `X-Forwarded-For` address that is not a trusted proxy. What the client writes into the header
/// itself (left of what its proxy appends, or a `Forwarded` header) names nobody, so forging a
/// fresh address per attempt buys nothing; from an untrusted peer the header is ignored.
#[tokio::test]
async fn behind_a_trusted_proxy_failures_count_per_forwarded_client() {
    for trusted in [true, false] {
        let app = spawn_app_with(|c| {
            c.join_failures_per_ip = 2;
            c.trusted_proxies = if trusted {
                vec!["127.0.0.1/32".parse().unwrap()]
            } else {
                vec![]
            };
        })
        .await;
        let room = app.room().await;
        for i in 0..3 {
            let forged = format!("10.9.9.{i}, 203.0.113.1");
            let forwarded = format!("for=198.51.100.{i}");
            let headers = [
                ("X-Forwarded-For", forged.as_str()),
                ("Forwarded", forwarded.as_str()),
            ];
            let code = failed_attempt(&app, &room, &headers).await;
            assert_eq!(code, if i < 2 { 4401 } else { 4429 }, "attempt {i}");
        }
        let other = failed_attempt(&app, &room, &[("X-Forwarded-For", "203.0.113.2")]).await;
        assert_eq!(
            other,
            if trusted { 4401 } else { 4429 },
            "trusted {trusted}"
        );
    }
}

/// An IPv6 client has a /64 to pick addresses from: every per-address limit counts the /64.
#[tokio::test]
async fn ipv6_clients_are_limited_per_64() {
    let app = spawn_app_with(|c| {
        c.join_failures_per_ip = 2;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let room = app.room().await;
    for (i, address) in ["2001:db8:7:7::1", "2001:db8:7:7::2", "2001:db8:7:7:ffff::3"]
        .iter()
        .enumerate()
    {
        let code = failed_attempt(&app, &room, &[("X-Forwarded-For", address)]).await;
        assert_eq!(code, if i < 2 { 4401 } else { 4429 }, "{address}");
    }
    let next_door = failed_attempt(&app, &room, &[("X-Forwarded-For", "2001:db8:7:8::1")]).await;
    assert_eq!(next_door, 4401);
}

#[tokio::test]
async fn failures_are_limited_per_room_too() {
    let app = spawn_app_with(|c| {
        c.join_failures_per_room = 2;
        c.join_failures_per_ip = 100;
    })
    .await;
    let room = app.room().await;
    for _ in 0..2 {
        refused_join(
            &app,
            &room.id,
            json!({ "type": "join", "name": "x", "auth": random_auth() }),
            "invalid_credentials",
            4401,
        )
        .await;
    }
    refused_join(
        &app,
        &room.id,
        json!({ "type": "join", "name": "x", "auth": random_auth() }),
        "rate_limited",
        4429,
    )
    .await;
    let other = app.room().await;
    app.join(&other, "fine").await;
}

#[tokio::test]
async fn a_full_room_is_4503() {
    let app = spawn_app_with(|c| c.max_members = 2).await;
    let room = app.room().await;
    let (_a, _) = app.join(&room, "a").await;
    let (_b, _) = app.join(&room, "b").await;
    refused_join(
        &app,
        &room.id,
        json!({ "type": "join", "name": "c", "auth": room.auth }),
        "room_full",
        4503,
    )
    .await;
}

/// A newcomer that speaks the moment it is in: the others hear that it joined before they hear
/// it, every time (the notice is queued with the join, under the room's lock).
#[tokio::test]
async fn a_newcomers_join_notice_comes_before_its_first_message() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (mut watcher, _) = app.join(&room, "watcher").await;
    let mut newcomers = Vec::new();
    for i in 0..20 {
        let mut ws = app.connect(&room.id).await;
        // Join and message in one go, without waiting for the welcome.
        ws.send_json(&json!({ "type": "join", "name": format!("n{i}"), "auth": room.auth }))
            .await;
        ws.send_json(&json!({ "type": "send", "txn": "1", "body": {"i": i} }))
            .await;
        newcomers.push(ws);
    }
    let mut announced = std::collections::HashSet::new();
    let mut heard = 0;
    while heard < 20 {
        let frame = watcher.recv().await;
        match frame["type"].as_str().unwrap() {
            "bot" => {
                assert_eq!(frame["event"], "join", "{frame}");
                announced.insert(frame["member"]["name"].as_str().unwrap().to_owned());
            }
            "message" => {
                let from = frame["from"].as_str().unwrap();
                assert!(
                    announced.contains(from),
                    "{from} spoke before its join notice"
                );
                heard += 1;
            }
            other => panic!("unexpected {other}: {frame}"),
        }
    }
}

#[tokio::test]
async fn reconnect_with_the_session_token_replaces_the_old_socket_quietly() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (mut watcher, _) = app.join(&room, "watcher").await;
    let (mut old, welcome) = app.join_admin(&room, "alice").await;
    watcher.recv_type("bot").await;
    let token = welcome["session"].as_str().unwrap().to_owned();

    let mut new = app.connect(&room.id).await;
    new.send_json(&json!({ "type": "join", "name": "alice", "auth": room.auth, "session": token }))
        .await;
    let rewelcome = new.recv().await;
    assert_eq!(rewelcome["type"], "welcome");
    assert_ne!(rewelcome["session"], welcome["session"]);
    // Admin status needs the admin password again.
    assert_eq!(rewelcome["you"]["admin"], false);
    assert_eq!(rewelcome["members"].as_array().unwrap().len(), 2);
    old.refused("session_replaced", 4409).await;
    // No leave, no join, no greeting: the watcher hears nothing.
    watcher.silent_for(Duration::from_millis(300)).await;
    new.silent_for(Duration::from_millis(100)).await;

    // The old token is spent.
    let mut again = app.connect(&room.id).await;
    again
        .send_json(&json!({ "type": "join", "name": "alice", "auth": room.auth, "session": token }))
        .await;
    again.refused("name_taken", 4409).await;

    // The member keeps its identity: it can unsend what it sent before the blip.
    new.send_json(&json!({ "type": "send", "txn": "t", "body": 1 }))
        .await;
    let seq = new.recv_type("message").await["seq"].clone();
    new.send_json(&json!({ "type": "unsend", "seq": seq }))
        .await;
    assert_eq!(new.recv_type("unsent").await["by"], "alice");
}

#[tokio::test]
async fn joins_into_a_live_room_skip_argon2_but_wrong_proofs_still_fail() {
    let app = spawn_app().await;
    let verified = || {
        app.state
            .metrics
            .argon2_runs
            .with_label_values(&["verify"])
            .get()
    };
    let room = app.room().await;
    let (_a, _) = app.join(&room, "a").await;
    let (_b, _) = app.join(&room, "b").await;
    assert_eq!(verified(), 0, "right proofs cost no argon2 run");
    refused_join(
        &app,
        &room.id,
        json!({ "type": "join", "name": "c", "auth": random_auth() }),
        "invalid_credentials",
        4401,
    )
    .await;
    assert_eq!(verified(), 1, "a wrong proof pays its argon2 run");
    let (_c, w) = app.join_admin(&room, "c").await;
    assert_eq!(w["you"]["admin"], true);
    assert_eq!(verified(), 1, "nor does the right admin password");
    refused_join(
        &app,
        &room.id,
        json!({ "type": "join", "name": "d", "auth": room.auth, "admin_password": "not the password" }),
        "invalid_credentials",
        4401,
    )
    .await;
    assert_eq!(verified(), 2);
}

/// How a hand-made client sends its `join` frame.
enum Delivery {
    /// In the same write as the upgrade request, before the 101 has come back.
    WithTheRequest,
    /// After the 101, one byte per write, so the frame arrives in many pieces.
    ByteByByte,
}

/// Upgrades over a bare TCP stream, sends a join for `name` as `delivery` says, and returns the
/// first frame the server sends back.
async fn raw_join(app: &TestApp, room: &Room, name: &str, delivery: Delivery) -> Value {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let join = text_frame(&json!({ "type": "join", "auth": room.auth, "name": name }).to_string());
    let early = match delivery {
        Delivery::WithTheRequest => &join[..],
        Delivery::ByteByByte => &[][..],
    };
    let mut raw = Raw::upgrade_sending(&app.addr(), &room.id, &[], early).await;
    if let Delivery::ByteByByte = delivery {
        for byte in &join {
            raw.stream.write_all(&[*byte]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut ws = tokio_tungstenite::WebSocketStream::from_partially_read(
        raw.stream,
        raw.pending,
        Role::Client,
        None,
    )
    .await;
    let first = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    serde_json::from_str(first.to_text().unwrap()).unwrap()
}

/// A client may send its `join` in the same packet as its upgrade request, before the 101: the
/// server must not lose the bytes it read along with the request.
#[tokio::test]
async fn a_join_sent_right_behind_the_upgrade_request_is_read() {
    let app = spawn_app().await;
    let room = app.room().await;
    let welcome = raw_join(&app, &room, "eager", Delivery::WithTheRequest).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["you"]["name"], "eager");
}

/// A frame that arrives a byte at a time is put together before it is read.
#[tokio::test]
async fn a_join_that_arrives_a_byte_at_a_time_is_read() {
    let app = spawn_app().await;
    let room = app.room().await;
    let welcome = raw_join(&app, &room, "patient", Delivery::ByteByByte).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["you"]["name"], "patient");
}

/// Names that look like another member's, or like nothing at all, are refused: invisible code
/// points (4422) and confusable spellings of a name in the room (4409).
#[tokio::test]
async fn look_alike_and_invisible_names_are_refused() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (_alice, _) = app.join(&room, "alice").await;
    for (name, code, close) in [
        ("alice\u{34f}", "invalid_name", 4422),
        ("alice\u{fe0f}", "invalid_name", 4422),
        ("\u{3164}", "invalid_name", 4422),
        ("\u{430}lice", "name_taken", 4409),
        ("ALICE", "name_taken", 4409),
    ] {
        refused_join(
            &app,
            &room.id,
            json!({ "type": "join", "name": name, "auth": room.auth }),
            code,
            close,
        )
        .await;
    }
}
