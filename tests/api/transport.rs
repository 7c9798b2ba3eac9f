//! The WebSocket transport under clients that do not play along: closes that must arrive while
//! the client is still sending, frames whose header lies about their size, and floods of control
//! frames.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

/// How many times each close is tried: before the linger, a sender lost the close in most of
/// them.
const TRIALS: usize = 12;

/// A client busy sending, as a browser uploading a file is: it writes frame after frame and looks
/// at what came in only between batches, and, as a browser does, it gives up on the connection
/// (1006) the moment a write fails, whatever it had not read yet. `trigger` runs beside it. The
/// code it saw: the server's close code, or 1006 if its writes were reset first.
async fn code_seen_by_a_busy_sender(
    raw: Raw,
    frame: Vec<u8>,
    trigger: impl std::future::Future<Output = ()> + Send + 'static,
) -> u16 {
    use tokio::io::AsyncWriteExt as _;
    let trigger = tokio::spawn(trigger);
    let Raw {
        mut stream,
        mut pending,
    } = raw;
    let deadline = Instant::now() + WAIT;
    let mut chunk = vec![0u8; 64 * 1024];
    let code = 'sending: loop {
        if Instant::now() > deadline {
            break 0;
        }
        for _ in 0..64 {
            if stream.write_all(&frame).await.is_err() {
                break 'sending 1006;
            }
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => break 1006,
            Ok(n) => {
                pending.extend_from_slice(&chunk[..n]);
                if let (Some(code), _) = frames_in(&pending) {
                    break code;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break 1006,
        }
    };
    trigger.await.unwrap();
    code
}

#[tokio::test]
async fn the_4400_after_bad_frames_reaches_a_client_that_keeps_sending() {
    let app = spawn_app().await;
    let room = app.room().await;
    let mut codes = Vec::new();
    for trial in 0..TRIALS {
        let mut raw = app.raw(&room.id).await;
        raw.join(&room, &format!("noisy{trial}")).await;
        let binary = raw_frame(0x82, 512, &[7; 512]);
        codes.push(code_seen_by_a_busy_sender(raw, binary, async {}).await);
    }
    assert!(codes.iter().all(|&c| c == 4400), "{codes:?}");
}

/// The members below stream frames that need no answer, with no allowance to run out of: what
/// matters is that they are still sending when the server closes them.
fn unmetered(c: &mut ephemera::Config) {
    c.messages_per_10s = 0;
    c.bytes_per_10s = 0;
    c.outbound_queue_frames = 1_000_000;
    c.outbound_queue_bytes = 1 << 30;
}

fn typing() -> Vec<u8> {
    text_frame(&json!({ "type": "typing", "active": true }).to_string())
}

#[tokio::test]
async fn the_4410_of_a_deletion_reaches_a_member_who_is_typing() {
    let app = spawn_app_with(unmetered).await;
    let mut codes = Vec::new();
    for _ in 0..TRIALS {
        let room = app.room().await;
        let mut raw = app.raw(&room.id).await;
        raw.join(&room, "typist").await;
        let (http, url) = (
            app.http.clone(),
            format!("{}/api/rooms/{}", app.base, room.id),
        );
        let delete = async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let response = http
                .delete(url)
                .json(&json!({ "admin_password": ADMIN_PASSWORD }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 204);
        };
        codes.push(code_seen_by_a_busy_sender(raw, typing(), delete).await);
    }
    assert!(codes.iter().all(|&c| c == 4410), "{codes:?}");
}

#[tokio::test]
async fn the_4403_of_a_kick_reaches_a_member_who_is_typing() {
    let app = spawn_app_with(unmetered).await;
    let room = app.room().await;
    let (admin, _) = app.join_admin(&room, "admin").await;
    let admin = std::sync::Arc::new(tokio::sync::Mutex::new(admin));
    let mut codes = Vec::new();
    for trial in 0..TRIALS {
        let name = format!("typist{trial}");
        let mut raw = app.raw(&room.id).await;
        raw.join(&room, &name).await;
        let admin = admin.clone();
        let kick = async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            admin
                .lock()
                .await
                .send_json(&json!({ "type": "kick", "name": name }))
                .await;
        };
        codes.push(code_seen_by_a_busy_sender(raw, typing(), kick).await);
    }
    assert!(codes.iter().all(|&c| c == 4403), "{codes:?}");
}

/// Sends `head`, then streams zeros after it (up to 64 MiB, until the server stops taking them),
/// while reading everything the server sends; returns the close code (`None` for a reset or an
/// end without one), the text frames before it, and how long the close took to arrive.
async fn stream_after(raw: Raw, head: &[u8]) -> (Option<u16>, Vec<String>, Duration) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Raw {
        mut stream,
        mut pending,
    } = raw;
    let started = Instant::now();
    let (mut read, mut write) = stream.split();
    write.write_all(head).await.unwrap();
    let writer = async {
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..1024 {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let (code, texts) = frames_in(&pending);
            if code.is_some() {
                return (code, texts, started.elapsed());
            }
            match tokio::time::timeout(Duration::from_secs(20), read.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&chunk[..n]),
                _ => return (None, texts, started.elapsed()),
            }
        }
    };
    let (result, ()) = tokio::join!(reader, writer);
    result
}

/// A frame whose header declares 2^40 bytes, streamed into before any join: the server closes
/// with 4413 as soon as the header is read, long before the join timeout, instead of buffering
/// what follows.
#[tokio::test]
async fn a_header_declaring_a_terabyte_is_refused_before_its_payload() {
    let app = spawn_app_with(|c| c.join_timeout_secs = 30).await;
    let room = app.room().await;
    let raw = app.raw(&room.id).await;
    let (code, texts, took) = stream_after(raw, &raw_frame(0x81, 1 << 40, &[])).await;
    assert_eq!(code, Some(4413), "{texts:?} after {took:?}");
    assert!(texts[0].contains("frame_too_large"), "{texts:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// The same for a fragmented message: the header of the fragment that would take the message
/// past the limit is enough.
#[tokio::test]
async fn a_fragment_that_would_pass_the_limit_is_refused_from_its_header() {
    let app = spawn_app_with(|c| c.join_timeout_secs = 30).await;
    let room = app.room().await;
    let mut raw = app.raw(&room.id).await;
    raw.join(&room, "fragments").await;
    let limit = app.state.config.max_frame_bytes;
    let mut head = raw_frame(0x01, 200 * 1024, &vec![b'a'; 200 * 1024]);
    head.extend(raw_frame(0x00, (limit - 100 * 1024) as u64, &[]));
    let (code, texts, took) = stream_after(raw, &head).await;
    assert_eq!(code, Some(4413), "{texts:?} after {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A member that sends pings and never reads: its pongs do not pile up (one waits at a time,
/// answering the latest ping), and its pings are paced by its allowance like any frame.
#[tokio::test]
async fn a_ping_flood_from_a_member_that_never_reads_is_answered_by_few_pongs() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (mut alice, _) = app.join(&room, "alice").await;
    let mut raw = app.raw(&room.id).await;
    raw.join(&room, "pinger").await;
    alice.recv_type("bot").await;
    let pings: Vec<u8> = (0..20_000).flat_map(|_| raw_frame(0x89, 0, &[])).collect();
    raw.send(&pings).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Now read, for a second, what piled up and what follows.
    let mut pongs = 0;
    let reading = async {
        while let Some(frame) = raw.next_frame().await {
            if let ServerFrame::Pong(_) = frame {
                pongs += 1;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), reading).await;
    // The allowance is 100 frames and 10 a second more: about 120 pings were read in two
    // seconds, and the rest wait in the socket.
    assert!(pongs <= 200, "{pongs} pongs for 20,000 pings");
    // The room is none the worse.
    alice
        .send_json(&json!({ "type": "send", "txn": "1", "body": "still here" }))
        .await;
    assert_eq!(alice.recv_type("message").await["body"], "still here");
}

/// A `send` split into three fragments, with a ping between two of them and the message split
/// inside a multi-byte character: the server answers the ping at once (RFC 6455 §5.4 lets control
/// frames interleave) and relays the message whole.
#[tokio::test]
async fn a_fragmented_send_with_a_ping_between_is_relayed_whole() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (mut alice, _) = app.join(&room, "alice").await;
    let mut raw = app.raw(&room.id).await;
    raw.join(&room, "fragments").await;
    alice.recv_type("bot").await;
    let send =
        json!({ "type": "send", "txn": "f1", "body": "déjà vu, in three parts" }).to_string();
    let bytes = send.as_bytes();
    // Split inside the two bytes of "é": only the whole message must be UTF-8.
    let cut = send.find('é').unwrap() + 1;
    let (first, rest) = bytes.split_at(cut);
    let (second, third) = rest.split_at(5);
    let mut stream = raw_frame(0x01, first.len() as u64, first);
    stream.extend(raw_frame(0x00, second.len() as u64, second));
    stream.extend(raw_frame(0x89, 4, b"tick"));
    raw.send(&stream).await.unwrap();
    loop {
        match raw.next_frame().await {
            Some(ServerFrame::Pong(payload)) => {
                assert_eq!(payload, b"tick");
                break;
            }
            Some(ServerFrame::Text(text)) => {
                assert!(
                    !text.contains("\"message\""),
                    "relayed before its end: {text}"
                );
            }
            other => panic!("no pong: {other:?}"),
        }
    }
    raw.send(&raw_frame(0x80, third.len() as u64, third))
        .await
        .unwrap();
    let message = alice.recv_type("message").await;
    assert_eq!(message["body"], "déjà vu, in three parts");
    assert_eq!(message["from"], "fragments");
}
