//! Teardown, slow readers, heartbeats and shutdown.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

#[tokio::test]
async fn five_members_are_closed_with_4410_within_a_second_of_a_delete() {
    let app = spawn_app().await;
    let room = app.room().await;
    let mut members = Vec::new();
    for i in 0..5 {
        members.push(app.join(&room, &format!("m{i}")).await.0);
    }
    let started = Instant::now();
    assert_eq!(
        app.delete_room(&room.id, ADMIN_PASSWORD).await.status(),
        204
    );
    let closes = futures_util::future::join_all(members.iter_mut().map(|ws| async {
        let (code, _) = ws.closed().await;
        (code, started.elapsed())
    }))
    .await;
    for (code, after) in closes {
        assert_eq!(code, 4410);
        assert!(after < Duration::from_secs(1), "closed after {after:?}");
    }
    assert_eq!(
        app.state
            .hub
            .member_count(&ephemera::domain::RoomId::parse(&room.id).unwrap()),
        0
    );
    assert!(app
        .state
        .hub
        .live(&ephemera::domain::RoomId::parse(&room.id).unwrap())
        .is_none());
}

#[tokio::test]
async fn an_emptied_room_leaves_the_hub() {
    let app = spawn_app().await;
    let room = app.room().await;
    let id = ephemera::domain::RoomId::parse(&room.id).unwrap();
    let (a, _) = app.join(&room, "a").await;
    assert!(app.state.hub.live(&id).is_some());
    a.close().await;
    let deadline = Instant::now() + WAIT;
    while app.state.hub.live(&id).is_some() {
        assert!(Instant::now() < deadline, "the room stayed live");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_slow_reader_is_closed_with_1013_while_the_others_keep_receiving() {
    let app = spawn_app_with(|c| {
        c.outbound_queue_bytes = 256 * 1024;
        c.messages_per_10s = 0;
        c.bytes_per_10s = 0;
    })
    .await;
    let room = app.room().await;
    let (mut sender, _) = app.join(&room, "sender").await;
    let (mut fast, _) = app.join(&room, "fast").await;
    sender.recv_type("bot").await;
    let (mut slow, _) = app.join(&room, "slow").await;
    sender.recv_type("bot").await;
    fast.recv_type("bot").await;

    // 400 frames of 60 KiB: 24 MB, far beyond what the socket buffers hold for a reader that
    // has stopped reading.
    const COUNT: usize = 400;
    let body = "p".repeat(60 * 1024);
    let reader = tokio::spawn(async move {
        let mut got = 0;
        let mut left = false;
        while got < COUNT || !left {
            let frame = fast.recv().await;
            match frame["type"].as_str().unwrap() {
                "message" => got += 1,
                "bot" if frame["event"] == "leave" && frame["name"] == "slow" => left = true,
                _ => {}
            }
        }
        got
    });
    // In lockstep: each message waits for its echo, so the sender and the fast reader are never
    // more than a frame behind, while the slow member's backlog grows by one frame each time.
    for i in 0..COUNT {
        sender
            .send_json(&json!({ "type": "send", "txn": i.to_string(), "body": body }))
            .await;
        sender.recv_type("message").await;
    }
    assert_eq!(reader.await.unwrap(), COUNT);

    // Now the slow member reads: some messages, then the close, and far fewer than were sent.
    let mut messages = 0;
    let code = loop {
        match tokio::time::timeout(WAIT, slow.inner.next()).await.unwrap() {
            Some(Ok(Message::Text(_))) => messages += 1,
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(code, 1013);
    assert!(messages < COUNT, "{messages}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("ephemera_slow_readers_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_server_pings_and_drops_a_silent_socket() {
    let app = spawn_app_with(|c| {
        c.ping_interval_secs = 1;
        c.idle_timeout_secs = 2;
    })
    .await;
    let room = app.room().await;
    let (mut watcher, _) = app.join(&room, "watcher").await;
    let (mut silent, _) = app.join(&room, "silent").await;
    watcher.recv_type("bot").await;
    // The watcher keeps reading (and so answers pings); the silent one reads nothing.
    let started = Instant::now();
    let leave = watcher.recv_type("bot").await;
    assert_eq!(leave["event"], "leave");
    assert_eq!(leave["name"], "silent");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // The watcher saw pings all along and is still there.
    let mut pinged = false;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_millis(1500), watcher.inner.next()).await
    {
        if matches!(message, Message::Ping(_)) {
            pinged = true;
            break;
        }
    }
    assert!(pinged);
    // The silent one was closed for its silence.
    assert_eq!(silent.closed().await.0, 1001);
}

#[tokio::test]
async fn shutdown_closes_every_member_with_1001() {
    let mut app = spawn_app().await;
    let room = app.room().await;
    let (mut a, _) = app.join(&room, "a").await;
    let (mut b, _) = app.join(&room, "b").await;
    let stopping = async { app.stop().await };
    let reading = async {
        let (code_a, _) = a.closed().await;
        let (code_b, _) = b.closed().await;
        (code_a, code_b)
    };
    let (_, codes) = tokio::join!(stopping, reading);
    assert_eq!(codes, (1001, 1001));
}

/// The real binary, stopped the way a container runtime stops it: every socket, joined or still
/// waiting to join, gets 1001, and the process exits well within its grace period.
#[tokio::test]
async fn sigterm_drains_the_binary_and_every_socket_gets_1001() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = BinaryServer::start(dir.path(), &["--shutdown-grace-secs", "5"]);
    let http = reqwest::Client::new();
    let auth = random_auth();
    let created = http
        .post(format!("http://{}/api/rooms", server.base))
        .json(&json!({ "auth": auth, "admin_password": ADMIN_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let room_id = created.json::<serde_json::Value>().await.unwrap()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!("ws://{}/ws/{room_id}", server.base);
    let mut member = Ws::connect(&url, None).await.unwrap();
    member
        .send_json(&json!({ "type": "join", "name": "a", "auth": auth }))
        .await;
    member.recv_type("welcome").await;
    let mut waiting = Ws::connect(&url, None).await.unwrap();

    let signalled = Instant::now();
    server.signal("TERM");
    assert_eq!(member.closed().await.0, 1001);
    assert_eq!(waiting.closed().await.0, 1001);
    let status = server
        .exited(Duration::from_secs(5))
        .await
        .unwrap_or_else(|| {
            panic!(
                "the server exits within its grace period: {}",
                server.stderr()
            )
        });
    assert!(status.success(), "{status}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
}

/// A member whose socket is lost (or closed with 1001, as a reloading page closes it) stays for
/// the leave grace: when it comes back with its `session` token meanwhile, the others hear
/// nothing at all, neither a leave nor a join.
#[tokio::test]
async fn a_member_back_within_the_leave_grace_is_never_announced() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let app = spawn_app_with(|c| c.leave_grace_secs = 3).await;
    let room = app.room().await;
    let (mut alice, _) = app.join(&room, "alice").await;
    for how in ["lost", "reload"] {
        let (bob, welcome) = app.join(&room, "bob").await;
        alice.recv_type("bot").await;
        let token = welcome["session"].as_str().unwrap().to_owned();
        match how {
            "lost" => drop(bob),
            _ => bob.close_with(CloseCode::Away).await,
        }
        alice.silent_for(Duration::from_millis(1000)).await;
        // Still a member: the name is not free to anyone without the token.
        let mut other = app.connect(&room.id).await;
        other
            .send_json(&json!({ "type": "join", "name": "bob", "auth": room.auth }))
            .await;
        other.refused("name_taken", 4409).await;
        let mut back = app.connect(&room.id).await;
        back.send_json(
            &json!({ "type": "join", "name": "bob", "auth": room.auth, "session": token }),
        )
        .await;
        assert_eq!(back.recv_type("welcome").await["you"]["name"], "bob");
        // Past the grace, and still nothing: the member came back.
        alice.silent_for(Duration::from_millis(3500)).await;
        back.close().await;
        let left = alice.recv_type("bot").await;
        assert_eq!(
            (left["event"].as_str(), left["name"].as_str()),
            (Some("leave"), Some("bob")),
            "{how}"
        );
    }
}

/// A lost member that does not come back is announced once the grace has passed; one that says
/// goodbye (1000) is announced at once.
#[tokio::test]
async fn a_lost_member_leaves_after_the_grace_and_a_goodbye_at_once() {
    let app = spawn_app_with(|c| c.leave_grace_secs = 2).await;
    let room = app.room().await;
    let (mut alice, _) = app.join(&room, "alice").await;
    let (bob, _) = app.join(&room, "bob").await;
    alice.recv_type("bot").await;
    let lost = Instant::now();
    drop(bob);
    let left = alice.recv_type("bot").await;
    let waited = lost.elapsed();
    assert_eq!(left["event"], "leave");
    assert!(
        waited >= Duration::from_millis(1900),
        "announced after {waited:?}"
    );

    let (carol, _) = app.join(&room, "carol").await;
    alice.recv_type("bot").await;
    let gone = Instant::now();
    carol.close().await;
    assert_eq!(alice.recv_type("bot").await["event"], "leave");
    assert!(gone.elapsed() < Duration::from_millis(1000));
}
