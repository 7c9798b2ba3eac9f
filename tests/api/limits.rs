//! What one address, one socket or one member can make the server hold or do: sockets per
//! address, bytes queued server-wide, the size of what it asks for, and argon2 runs.

use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// Connects from `client` as a trusted proxy names it; the socket, or the close code of a
/// socket turned away at once.
async fn connect_as(app: &TestApp, room: &Room, client: &str) -> Result<Ws, u16> {
    let url = format!("{}/ws/{}", app.ws_base, room.id);
    let mut ws = Ws::connect_with(&url, &[("X-Forwarded-For", client)])
        .await
        .unwrap();
    // A socket turned away hears its close at once; one let in waits for its join.
    match tokio::time::timeout(Duration::from_millis(300), ws.inner.next()).await {
        Err(_) => Ok(ws),
        Ok(Some(Ok(Message::Close(Some(close))))) => Err(u16::from(close.code)),
        Ok(other) => panic!("{other:?}"),
    }
}

/// One address may hold so many sockets, and so many of them waiting to join; the next is
/// closed with 1013 at once, and other addresses are not affected.
#[tokio::test]
async fn one_address_holds_at_most_its_share_of_sockets() {
    let app = spawn_app_with(|c| {
        c.max_connections_per_address = 5;
        c.max_joining_per_address = 3;
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let room = app.room().await;
    let me = "198.51.100.20";
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(connect_as(&app, &room, me).await.expect("within the share"));
    }
    assert_eq!(
        connect_as(&app, &room, me).await.err(),
        Some(1013),
        "a fourth waiting"
    );
    // Joined sockets no longer count as waiting, but still count as held.
    for (i, ws) in waiting.iter_mut().enumerate() {
        ws.send_json(&json!({ "type": "join", "name": format!("m{i}"), "auth": room.auth }))
            .await;
        ws.recv_type("welcome").await;
    }
    let _fourth = connect_as(&app, &room, me)
        .await
        .expect("a fourth, once three joined");
    let _fifth = connect_as(&app, &room, me).await.expect("a fifth");
    assert_eq!(
        connect_as(&app, &room, me).await.err(),
        Some(1013),
        "a sixth held"
    );
    // The same /64 is the same address; another address is someone else.
    let v6 = "2001:db8:5:5::1";
    let _v6 = connect_as(&app, &room, v6).await.expect("another address");
    assert!(connect_as(&app, &room, "198.51.100.21").await.is_ok());
    // A freed place can be taken again.
    drop(waiting.pop());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match connect_as(&app, &room, me).await {
            Ok(_) => break,
            Err(code) => {
                assert_eq!(code, 1013);
                assert!(
                    std::time::Instant::now() < deadline,
                    "the place stayed taken"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A `members` request costs its answer's size against the byte allowance: in a large room the
/// answer is thousands of times the request.
#[tokio::test]
async fn a_members_request_is_charged_the_size_of_its_answer() {
    let app = spawn_app_with(|c| c.bytes_per_10s = 20_000).await;
    let room = app.room().await;
    let mut crowd = Vec::new();
    for i in 0..40 {
        let name = format!("{i:02}-{}", "x".repeat(28));
        crowd.push(app.join(&room, &name).await.0);
    }
    let (mut asker, _) = app.join(&room, "asker").await;
    // Each answer is about 2.3 KB: the 20 KB allowance pays for eight or nine of them, and the
    // next ask is refused (without the charge, twenty asks of 18 bytes would all be answered).
    let mut answers_before_refusal = 0;
    loop {
        asker.send_json(&json!({ "type": "members" })).await;
        let frame = loop {
            let frame = asker.recv().await;
            if frame["type"] == "members" || frame["type"] == "error" {
                break frame;
            }
        };
        if frame["type"] == "error" {
            assert_eq!(frame["code"], "rate_limited", "{frame}");
            break;
        }
        answers_before_refusal += 1;
        assert!(answers_before_refusal <= 10, "never refused");
    }
    assert!(
        answers_before_refusal >= 5,
        "{answers_before_refusal} answers"
    );
}

/// Past the server-wide budget of queued bytes, the members furthest behind are cut off with
/// 1013 even though each is within its own limit; members who keep up lose nothing.
#[tokio::test]
async fn past_the_server_wide_budget_the_members_furthest_behind_are_cut_off() {
    let app = spawn_app_with(|c| {
        c.outbound_queue_bytes = 64 * 1024 * 1024;
        c.outbound_queue_frames = 100_000;
        c.outbound_budget_bytes = 2 * 1024 * 1024;
    })
    .await;
    let room = app.room().await;
    let (mut sender, _) = app.join(&room, "sender").await;
    let mut sleepers = Vec::new();
    for i in 0..3 {
        let mut raw = app.raw(&room.id).await;
        raw.join(&room, &format!("sleeper{i}")).await;
        sleepers.push(raw);
    }
    let body = "y".repeat(200 * 1024);
    for i in 0..40 {
        sender
            .send_json(&json!({ "type": "send", "txn": format!("{i}"), "body": body }))
            .await;
        // The sender keeps up: it reads its own echo.
        let echo = sender.recv_type("message").await;
        assert_eq!(echo["txn"], format!("{i}"));
    }
    assert!(
        app.state.metrics.slow_readers.get() >= 1,
        "nobody was cut off; {} bytes queued",
        app.state.metrics.queued_bytes.get()
    );
    // Each sleeper holds at most a message past the pressure line.
    assert!(app.state.metrics.queued_bytes.get() <= 6 * 1024 * 1024);
}

/// Thirty wrong keys sent at once from one address: the allowance (ten a minute) is taken before
/// each argon2 run, so ten are checked and answered 4401 and the rest 4429 at once.
#[tokio::test]
async fn a_burst_of_wrong_keys_is_refused_past_the_allowance_before_argon2() {
    let app = spawn_app_with(|c| c.join_failures_per_room = 100).await;
    let room = app.room().await;
    let mut sockets = Vec::new();
    for _ in 0..30 {
        sockets.push(app.connect(&room.id).await);
    }
    let runs = || {
        app.state
            .metrics
            .argon2_runs
            .with_label_values(&["verify"])
            .get()
    };
    let before = runs();
    let attempts = sockets.into_iter().map(|mut ws| async move {
        ws.send_json(&json!({ "type": "join", "name": "guess", "auth": random_auth() }))
            .await;
        ws.closed().await.0
    });
    let mut codes = futures_util::future::join_all(attempts).await;
    codes.sort_unstable();
    assert_eq!(
        codes.iter().filter(|&&c| c == 4401).count(),
        10,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|&&c| c == 4429).count(),
        20,
        "{codes:?}"
    );
    assert_eq!(runs() - before, 10);
}

/// A delete of a room that does not exist probes room IDs: it counts as a failure.
#[tokio::test]
async fn deletes_of_unknown_rooms_count_as_failures() {
    let app = spawn_app_with(|c| c.join_failures_per_ip = 3).await;
    for i in 0..3 {
        let response = app
            .delete_room(&format!("no-such-room-{i}"), ADMIN_PASSWORD)
            .await;
        assert_eq!(response.status(), 404);
    }
    let response = app.delete_room("no-such-room-x", ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
}

/// One member that keeps its socket full (here with no allowance to run out of) does not hold
/// the worker thread its socket is served on: the other members and HTTP go on meanwhile.
#[tokio::test]
async fn a_member_that_keeps_its_socket_full_does_not_starve_the_others() {
    use tokio::io::AsyncWriteExt as _;
    let app = spawn_app_with(|c| {
        c.workers = 1;
        c.messages_per_10s = 0;
        c.bytes_per_10s = 0;
        c.outbound_queue_frames = 1_000_000;
        c.outbound_queue_bytes = 1 << 30;
    })
    .await;
    let room = app.room().await;
    let (mut alice, _) = app.join(&room, "alice").await;
    let (mut bob, _) = app.join(&room, "bob").await;
    alice.recv_type("bot").await;
    let mut raw = app.raw(&room.id).await;
    raw.join(&room, "flooder").await;
    let frames = text_frame(&json!({ "type": "members" }).to_string()).repeat(256);
    let flood = tokio::spawn(async move {
        let until = std::time::Instant::now() + Duration::from_secs(4);
        while std::time::Instant::now() < until {
            if raw.stream.write_all(&frames).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..10 {
        let health = tokio::time::timeout(WAIT, app.get("/healthz"))
            .await
            .expect("the server answers HTTP meanwhile");
        assert_eq!(health.status(), 200);
        alice
            .send_json(&json!({ "type": "send", "txn": format!("{i}"), "body": i }))
            .await;
        assert_eq!(bob.recv_type("message").await["body"], i);
    }
    flood.abort();
}

/// When the hashing threads and their queue are full, a join that needs argon2 is not made to
/// wait behind everyone: it hears `rate_limited` and 1013, which clients answer by coming back
/// after their backoff (4429 would end the visit), and it costs no failed-attempt token.
#[tokio::test]
async fn with_the_hashing_full_a_cold_join_is_told_to_come_back_later() {
    let first = spawn_app().await;
    let mut rooms = Vec::new();
    for _ in 0..8 {
        rooms.push(first.room().await);
    }
    let kept = first.stop_keeping_data().await;
    let data_dir = kept.path().to_owned();
    // A restarted server has no accepted-proof digests: every room is cold. One thread, no
    // queue, and argon2 at its production cost, so that runs overlap.
    let app = spawn_app_with(|c| {
        c.data_dir = data_dir;
        c.hash_threads = 1;
        c.hash_queue = 0;
        c.hashes_per_address = 100;
        c.join_failures_per_ip = 1;
        c.argon2_memory_kib = 19_456;
        c.argon2_iterations = 2;
    })
    .await;
    let joins = rooms.iter().map(|room| {
        let app = &app;
        async move {
            let mut ws = app.connect(&room.id).await;
            ws.send_json(&json!({ "type": "join", "name": "m", "auth": room.auth }))
                .await;
            let (code, frames) = ws.closed_or_welcome().await;
            (code, frames)
        }
    });
    let outcomes = futures_util::future::join_all(joins).await;
    let welcomed = outcomes.iter().filter(|(code, _)| *code == 0).count();
    let busy: Vec<_> = outcomes.iter().filter(|(code, _)| *code != 0).collect();
    assert!(welcomed >= 1, "{outcomes:?}");
    assert!(!busy.is_empty(), "{outcomes:?}");
    for (code, frames) in busy {
        assert_eq!(*code, 1013, "{frames:?}");
        assert_eq!(frames[0]["code"], "rate_limited", "{frames:?}");
        assert_eq!(frames[0]["retry_after_ms"], 1000, "{frames:?}");
    }
    // Being turned away cost nothing: a failed-join allowance of one is still there to use.
    let mut wrong = app.connect(&rooms[0].id).await;
    wrong
        .send_json(&json!({ "type": "join", "name": "x", "auth": random_auth() }))
        .await;
    wrong.refused("invalid_credentials", 4401).await;
}

/// The server raises its open-file limit to the hard limit at start, says so, and derives its
/// connection cap from it (less 200 for everything else) unless one is set.
#[tokio::test]
async fn the_connection_cap_follows_the_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    let server = BinaryServer::start(dir.path(), &[]);
    let log = server.stderr();
    let expected = format!(
        "soft limit {hard} (was {}); connection cap {} (derived)",
        rlimit::Resource::NOFILE.get().unwrap().0,
        hard - 200
    );
    assert!(log.contains(&expected), "{expected:?} not in {log}");
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &["--max-connections", "7"]);
    assert!(
        server.stderr().contains("connection cap 7 (set)"),
        "{}",
        server.stderr()
    );
}

/// Under a low open-file limit the member past the derived cap hears 1013 (try again later),
/// rather than the server running out of descriptors and failing to accept anyone.
#[tokio::test]
async fn past_a_cap_derived_from_the_file_limit_a_socket_hears_1013() {
    let dir = tempfile::tempdir().unwrap();
    let server =
        BinaryServer::start_with_file_limit(dir.path(), &["--max-joining-per-address", "0"], 260);
    assert!(
        server.stderr().contains("connection cap 60 (derived)"),
        "{}",
        server.stderr()
    );
    let url = format!("ws://{}/ws/some-room", server.base);
    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(Ws::connect(&url, None).await.unwrap());
    }
    let mut one_more = Ws::connect(&url, None).await.unwrap();
    match tokio::time::timeout(WAIT, one_more.inner.next()).await {
        Ok(Some(Ok(Message::Close(Some(close))))) => assert_eq!(u16::from(close.code), 1013),
        other => panic!("{other:?}"),
    }
    // The server still answers HTTP.
    let health = server.client().get("/healthz").await;
    assert_eq!(health.status(), 200);
}
