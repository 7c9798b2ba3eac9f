//! Hostile input: never a panic, never a disturbance to other members.

use serde_json::json;

use crate::helpers::*;

/// Two hundred malformed frames, of many kinds, from twenty connections (each is closed after
/// ten in a row); the members of the room chat on undisturbed.
#[tokio::test]
async fn two_hundred_malformed_frames_leave_the_server_up_and_members_unaffected() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (mut alice, _) = app.join(&room, "alice").await;
    let (mut bob, _) = app.join(&room, "bob").await;
    alice.recv_type("bot").await;

    let deep = format!(r#"{{"type":"send","txn":"x","body":{}}}"#, "[".repeat(5000));
    let malformed: Vec<String> = vec![
        "".into(),
        "{".into(),
        "null".into(),
        "42".into(),
        r#""string""#.into(),
        r#"{"type":null}"#.into(),
        r#"{"type":"send","txn":"1","body":"#.into(),
        r#"{"type":"send","txn":{"a":1},"body":1}"#.into(),
        r#"{"type":"dm","to":["x"],"txn":"1","body":1}"#.into(),
        r#"{"type":"read","seq":1e400}"#.into(),
        r#"{"type":"read","seq":18446744073709551616}"#.into(),
        r#"{"type":"kick"}"#.into(),
        r#"{"type":"typing","active":"true"}"#.into(),
        r#"{"type":"send","type":"send","txn":"1","body":1}"#.into(),
        "\u{feff}{}".into(),
        deep,
        format!(r#"{{"type":"{}"}}"#, "t".repeat(10_000)),
        r#"{"type":"join","name":"alice","auth":"x"}"#.into(),
        r#"{"type":"send","txn":"1","body":1}"#.replace('}', ""),
        "\u{0}\u{1}\u{2}".into(),
    ];
    let mut sent = 0;
    for connection in 0..20 {
        let (mut ws, _) = app.join(&room, &format!("intruder{connection}")).await;
        for i in 0..10 {
            ws.send_text(&malformed[(connection + i) % malformed.len()])
                .await;
            sent += 1;
        }
        ws.refused("bad_request", 4400).await;
    }
    assert_eq!(sent, 200);

    alice
        .send_json(&json!({ "type": "send", "txn": "after", "body": {"text": "still here"} }))
        .await;
    let message = bob.recv_type("message").await;
    assert_eq!(message["body"]["text"], "still here");
    assert_eq!(app.get("/healthz").await.status(), 200);

    // A malformed first frame from a stranger is refused the same way.
    let mut stranger = app.connect(&room.id).await;
    stranger.send_text("\u{0}").await;
    stranger.refused("bad_request", 4400).await;
}

/// Past the server's connection limit a new socket is closed with 1013 (try again later) right
/// after the upgrade; the members already in are undisturbed, and a freed place can be taken.
#[tokio::test]
async fn past_the_connection_limit_a_socket_is_closed_with_1013() {
    let app = spawn_app_with(|c| c.max_connections = Some(2)).await;
    let room = app.room().await;
    let (mut alice, _) = app.join(&room, "alice").await;
    let (bob, _) = app.join(&room, "bob").await;
    alice.recv_type("bot").await;

    let mut third = app.connect(&room.id).await;
    let (code, frames) = third.closed().await;
    assert_eq!(code, 1013);
    assert!(frames.is_empty(), "{frames:?}");

    alice
        .send_json(&json!({ "type": "send", "txn": "1", "body": "still here" }))
        .await;
    assert_eq!(alice.recv_type("message").await["body"], "still here");

    bob.close().await;
    alice.recv_type("bot").await;
    // The place is free once bob's session has ended, a moment after the bot's notice.
    let deadline = std::time::Instant::now() + WAIT;
    while app.state.metrics.connections.get() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "bob's place stayed taken"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (_carol, welcome) = app.join(&room, "carol").await;
    assert_eq!(welcome["type"], "welcome");
}
