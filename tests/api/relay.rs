//! Frames after the join: relay, DMs, typing, read, unsend, kick, members, ping, bad frames.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// Three members: `admin` (an admin), `bob` and `carol`, each past the join notices.
async fn trio(app: &TestApp) -> (Room, Ws, Ws, Ws) {
    let room = app.room().await;
    let (mut admin, _) = app.join_admin(&room, "admin").await;
    let (mut bob, _) = app.join(&room, "bob").await;
    admin.recv_type("bot").await;
    let (carol, _) = app.join(&room, "carol").await;
    admin.recv_type("bot").await;
    bob.recv_type("bot").await;
    (room, admin, bob, carol)
}

#[tokio::test]
async fn send_relays_a_nested_unicode_body_byte_for_byte_to_everyone() {
    let app = spawn_app().await;
    let (_room, mut admin, mut bob, mut carol) = trio(&app).await;
    let body = r#"{ "e2e":"v1" , "nested": {"a":[1, 2.50, -0.0, 1e3, {"deep": ["ünï\u00e7ødé", "😀", "\ud83d\ude00"]}]}, "esc":"\"\\\/\n", "z":null }"#;
    let frame = format!(r#"{{"type":"send","txn":"tx-1","body":{body}}}"#);
    bob.send_text(&frame).await;
    let mut seqs = Vec::new();
    for ws in [&mut admin, &mut bob, &mut carol] {
        let raw = ws.recv_text().await;
        assert!(raw.contains(&format!(r#""body":{body}"#)), "{raw}");
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["from"], "bob");
        assert_eq!(v["txn"], "tx-1");
        assert!(v["ts"].as_i64().unwrap() > 1_700_000_000_000);
        seqs.push(v["seq"].as_u64().unwrap());
    }
    assert!(seqs.iter().all(|&s| s == seqs[0]));
    bob.send_json(&json!({ "type": "send", "txn": "tx-2", "body": {"text": "again"} }))
        .await;
    assert!(carol.recv_type("message").await["seq"].as_u64().unwrap() > seqs[0]);
}

#[tokio::test]
async fn a_plain_client_may_send_unencrypted_bodies() {
    let app = spawn_app().await;
    let (_room, _admin, mut bob, mut carol) = trio(&app).await;
    bob.send_json(&json!({ "type": "send", "txn": "1", "body": {"text": "hi"} }))
        .await;
    assert_eq!(
        carol.recv_type("message").await["body"],
        json!({"text": "hi"})
    );
}

#[tokio::test]
async fn dms_reach_only_their_target_and_the_sender() {
    let app = spawn_app().await;
    let (_room, mut admin, mut bob, mut carol) = trio(&app).await;
    bob.send_json(&json!({ "type": "dm", "to": "CAROL", "txn": "d1", "body": {"ct": "secret"} }))
        .await;
    for ws in [&mut bob, &mut carol] {
        let dm = ws.recv().await;
        assert_eq!(dm["type"], "dm");
        assert_eq!(dm["from"], "bob");
        assert_eq!(dm["to"], "carol");
        assert_eq!(dm["txn"], "d1");
        assert_eq!(dm["body"], json!({"ct": "secret"}));
        assert!(dm["seq"].as_u64().unwrap() >= 1);
    }
    admin.silent_for(Duration::from_millis(300)).await;

    bob.send_json(&json!({ "type": "dm", "to": "nobody", "txn": "d2", "body": 1 }))
        .await;
    let error = bob.recv().await;
    assert_eq!(error["code"], "no_such_member");
    assert_eq!(error["txn"], "d2");
}

#[tokio::test]
async fn dm_and_message_share_one_increasing_seq() {
    let app = spawn_app().await;
    let (_room, _admin, mut bob, mut carol) = trio(&app).await;
    bob.send_json(&json!({ "type": "send", "txn": "1", "body": 1 }))
        .await;
    let first = bob.recv_type("message").await["seq"].as_u64().unwrap();
    bob.send_json(&json!({ "type": "dm", "to": "carol", "txn": "2", "body": 1 }))
        .await;
    let second = bob.recv_type("dm").await["seq"].as_u64().unwrap();
    bob.send_json(&json!({ "type": "send", "txn": "3", "body": 1 }))
        .await;
    let third = bob.recv_type("message").await;
    assert_eq!(first, 1);
    assert_eq!(second, 2);
    assert_eq!(third["seq"], 3);
    let seen: Vec<_> = [carol.recv().await, carol.recv().await, carol.recv().await]
        .iter()
        .map(|f| (f["type"].clone(), f["seq"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!("message"), json!(1)),
            (json!("dm"), json!(2)),
            (json!("message"), json!(3))
        ]
    );
}

#[tokio::test]
async fn typing_and_read_go_to_the_others_only() {
    let app = spawn_app().await;
    let (_room, mut admin, mut bob, mut carol) = trio(&app).await;
    bob.send_json(&json!({ "type": "typing", "active": true }))
        .await;
    for ws in [&mut admin, &mut carol] {
        assert_eq!(
            ws.recv().await,
            json!({ "type": "typing", "from": "bob", "active": true })
        );
    }
    bob.send_json(&json!({ "type": "read", "seq": 7 })).await;
    for ws in [&mut admin, &mut carol] {
        assert_eq!(
            ws.recv().await,
            json!({ "type": "read", "from": "bob", "seq": 7 })
        );
    }
    bob.silent_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn unsend_is_for_the_author_or_an_admin() {
    let app = spawn_app().await;
    let (_room, mut admin, mut bob, mut carol) = trio(&app).await;
    bob.send_json(&json!({ "type": "send", "txn": "1", "body": 1 }))
        .await;
    let seq = bob.recv_type("message").await["seq"].as_u64().unwrap();
    admin.recv_type("message").await;
    carol.recv_type("message").await;

    carol
        .send_json(&json!({ "type": "unsend", "seq": seq }))
        .await;
    assert_eq!(carol.recv().await["code"], "forbidden");

    bob.send_json(&json!({ "type": "unsend", "seq": seq }))
        .await;
    for ws in [&mut admin, &mut bob, &mut carol] {
        assert_eq!(
            ws.recv().await,
            json!({ "type": "unsent", "seq": seq, "by": "bob" })
        );
    }
    bob.send_json(&json!({ "type": "unsend", "seq": seq }))
        .await;
    assert_eq!(bob.recv().await["code"], "no_such_message");

    carol
        .send_json(&json!({ "type": "send", "txn": "2", "body": 2 }))
        .await;
    let seq = admin.recv_type("message").await["seq"].as_u64().unwrap();
    admin
        .send_json(&json!({ "type": "unsend", "seq": seq }))
        .await;
    assert_eq!(carol.recv_type("unsent").await["by"], "admin");

    for bad in [json!(0), json!(-1), json!(1.5), json!(999_999)] {
        bob.send_json(&json!({ "type": "unsend", "seq": bad }))
            .await;
        assert_eq!(
            bob.recv_type("error").await["code"],
            "no_such_message",
            "{bad}"
        );
    }
    bob.send_json(&json!({ "type": "unsend", "seq": "1" }))
        .await;
    assert_eq!(bob.recv_type("error").await["code"], "bad_request");
}

#[tokio::test]
async fn a_dm_is_unsent_by_its_sender_only_and_only_its_parties_hear_it() {
    let app = spawn_app().await;
    let (_room, mut admin, mut bob, mut carol) = trio(&app).await;
    bob.send_json(&json!({ "type": "dm", "to": "carol", "txn": "d", "body": 1 }))
        .await;
    let seq = bob.recv_type("dm").await["seq"].as_u64().unwrap();
    carol.recv_type("dm").await;
    admin
        .send_json(&json!({ "type": "unsend", "seq": seq }))
        .await;
    assert_eq!(admin.recv().await["code"], "forbidden");
    carol
        .send_json(&json!({ "type": "unsend", "seq": seq }))
        .await;
    assert_eq!(carol.recv().await["code"], "forbidden");
    bob.send_json(&json!({ "type": "unsend", "seq": seq }))
        .await;
    for ws in [&mut bob, &mut carol] {
        assert_eq!(
            ws.recv().await,
            json!({ "type": "unsent", "seq": seq, "by": "bob" })
        );
    }
    admin.silent_for(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn kick_is_for_admins_and_closes_the_target_with_4403() {
    let app = spawn_app().await;
    let (_room, mut admin, mut bob, mut carol) = trio(&app).await;
    bob.send_json(&json!({ "type": "kick", "name": "carol" }))
        .await;
    assert_eq!(bob.recv().await["code"], "forbidden");
    admin
        .send_json(&json!({ "type": "kick", "name": "nobody" }))
        .await;
    assert_eq!(admin.recv().await["code"], "no_such_member");

    admin
        .send_json(&json!({ "type": "kick", "name": "Carol" }))
        .await;
    let (code, frames) = carol.closed().await;
    assert_eq!(code, 4403);
    assert!(
        frames.contains(&json!({ "type": "kicked", "by": "admin" })),
        "{frames:?}"
    );
    for ws in [&mut admin, &mut bob] {
        let notice = ws.recv().await;
        assert_eq!(notice["type"], "bot");
        assert_eq!(notice["event"], "kick");
        assert_eq!(notice["name"], "carol");
        assert_eq!(notice["members"], 2);
        // No separate leave follows.
        ws.silent_for(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn delete_room_frame_is_for_admins_and_removes_the_record() {
    let app = spawn_app().await;
    let (room, mut admin, mut bob, mut carol) = trio(&app).await;
    bob.send_json(&json!({ "type": "delete_room" })).await;
    assert_eq!(bob.recv().await["code"], "forbidden");
    admin.send_json(&json!({ "type": "delete_room" })).await;
    for ws in [&mut admin, &mut bob, &mut carol] {
        let (code, frames) = ws.closed().await;
        assert_eq!(code, 4410);
        assert!(frames.contains(&json!({ "type": "room_deleted" })));
    }
    let mut late = app.connect(&room.id).await;
    late.send_json(&json!({ "type": "join", "name": "late", "auth": room.auth }))
        .await;
    late.refused("room_not_found", 4404).await;
}

#[tokio::test]
async fn members_and_ping_answer_the_asker() {
    let app = spawn_app().await;
    let (_room, _admin, mut bob, mut carol) = trio(&app).await;
    bob.send_json(&json!({ "type": "members" })).await;
    let members = bob.recv().await;
    assert_eq!(
        members,
        json!({ "type": "members", "members": [
            { "name": "admin", "admin": true }, { "name": "bob", "admin": false }, { "name": "carol", "admin": false }
        ], "page": 0, "pages": 1, "total": 3 })
    );
    bob.send_text(r#"{"type":"ping","t":{ "n" : [1.50, "ü"] }}"#)
        .await;
    assert_eq!(
        bob.recv_text().await,
        r#"{"type":"pong","t":{ "n" : [1.50, "ü"] }}"#
    );
    bob.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(bob.recv_text().await, r#"{"type":"pong"}"#);
    bob.send_text(r#"{"type":"ping","t":null}"#).await;
    assert_eq!(bob.recv_text().await, r#"{"type":"pong","t":null}"#);
    carol.silent_for(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_ten_in_a_row_close_with_4400() {
    let app = spawn_app().await;
    let (_room, _admin, mut bob, mut carol) = trio(&app).await;
    let bad = [
        "{",
        "[]",
        r#"{"type":"nope"}"#,
        r#"{"type":"send","txn":"t9"}"#,
        r#"{"type":"typing","active":1}"#,
        r#"{"type":"join","name":"x","auth":"y"}"#,
    ];
    for frame in bad {
        bob.send_text(frame).await;
        assert_eq!(bob.recv().await["code"], "bad_request", "{frame}");
    }
    bob.send_text(r#"{"type":"send","txn":"t9"}"#).await;
    assert_eq!(bob.recv().await["txn"], "t9");
    // A good frame resets the count.
    bob.send_json(&json!({ "type": "members" })).await;
    bob.recv_type("members").await;
    let deep = format!(
        r#"{{"type":"send","txn":"1","body":{}{}}}"#,
        "[".repeat(65),
        "]".repeat(65)
    );
    for _ in 0..9 {
        bob.send_text(&deep).await;
        assert_eq!(bob.recv().await["code"], "bad_request");
    }
    bob.send_text("{").await;
    bob.refused("bad_request", 4400).await;
    assert_eq!(carol.recv_type("bot").await["event"], "leave");
}

#[tokio::test]
async fn a_body_64_levels_deep_is_relayed() {
    let app = spawn_app().await;
    let (_room, _admin, mut bob, _carol) = trio(&app).await;
    let body = format!("{}{}", "[".repeat(64), "]".repeat(64));
    bob.send_text(&format!(r#"{{"type":"send","txn":"1","body":{body}}}"#))
        .await;
    assert!(bob.recv_text().await.contains(&body));
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let app = spawn_app().await;
    let (_room, _admin, mut bob, _carol) = trio(&app).await;
    let frame = Frame::message(vec![b'"', 0xff, 0xfe, b'"'], OpCode::Data(Data::Text), true);
    bob.inner
        .send(tokio_tungstenite::tungstenite::Message::Frame(frame))
        .await
        .unwrap();
    let (code, _) = bob.closed().await;
    assert_eq!(code, 1007);
}

#[tokio::test]
async fn sends_beyond_the_allowance_are_rate_limited_with_the_txn() {
    let app = spawn_app_with(|c| c.messages_per_10s = 3).await;
    let (_room, _admin, mut bob, _carol) = trio(&app).await;
    for i in 0..3 {
        bob.send_json(&json!({ "type": "send", "txn": format!("ok{i}"), "body": i }))
            .await;
        bob.recv_type("message").await;
    }
    bob.send_json(&json!({ "type": "send", "txn": "over", "body": 4 }))
        .await;
    let error = bob.recv_type("error").await;
    assert_eq!(error["code"], "rate_limited");
    assert_eq!(error["txn"], "over");
    let wait = error["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 0 && wait <= 3400, "{wait}");
}

#[tokio::test]
async fn bytes_beyond_the_allowance_are_rate_limited() {
    let app = spawn_app_with(|c| c.bytes_per_10s = 10_000).await;
    let (_room, _admin, mut bob, _carol) = trio(&app).await;
    let body = "z".repeat(6_000);
    bob.send_json(&json!({ "type": "send", "txn": "a", "body": body }))
        .await;
    bob.recv_type("message").await;
    bob.send_json(&json!({ "type": "send", "txn": "b", "body": body }))
        .await;
    assert_eq!(bob.recv_type("error").await["code"], "rate_limited");
}
