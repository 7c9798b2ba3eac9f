//! A seeded, time-boxed fuzzer against the real server binary: 100,000 frames (random, mutated
//! from valid ones, fragmented, with bad opcodes, reserved bits, lying lengths), written at random
//! byte boundaries from several sockets at once, while two honest members chat. The server never
//! panics, the honest members lose nothing, and every close it sends is one of the contract's.
//!
//! `EPHEMERA_FUZZ_SEED` replays a run's frames (the seed is printed); timing is not replayed.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::*;

const FRAMES: usize = 100_000;
const TIME_BOX: Duration = Duration::from_secs(30);
const SOCKETS_AT_ONCE: usize = 8;
/// Closes the contract allows a stranger to be given.
const CONTRACT_CLOSES: [u16; 12] = [
    1000, 1007, 1013, 4400, 4401, 4404, 4408, 4409, 4413, 4422, 4429, 4503,
];

/// A frame a client might send: valid, mutated, or broken in a way RFC 6455 or the contract
/// forbids. Returns whole frames; the caller splits the stream at random.
fn hostile_frames(rng: &mut StdRng, room: &Room) -> Vec<Vec<u8>> {
    let valid = |rng: &mut StdRng| -> String {
        let name: String = (0..rng.gen_range(1..12))
            .map(|_| rng.gen_range(b'a'..=b'z') as char)
            .collect();
        match rng.gen_range(0..10) {
            0 => json!({ "type": "join", "name": name, "auth": room.auth }).to_string(),
            1 => json!({ "type": "join", "name": name, "auth": random_auth() }).to_string(),
            2 => json!({ "type": "send", "txn": name, "body": { "e2e": "v1", "ct": "x".repeat(rng.gen_range(0..400)) } }).to_string(),
            3 => json!({ "type": "dm", "to": name, "txn": "t", "body": [1, {"a": null}] }).to_string(),
            4 => json!({ "type": "typing", "active": rng.gen::<bool>() }).to_string(),
            5 => json!({ "type": "read", "seq": rng.gen::<u32>() }).to_string(),
            6 => json!({ "type": "unsend", "seq": rng.gen::<u16>() }).to_string(),
            7 => json!({ "type": "members" }).to_string(),
            8 => json!({ "type": "ping", "t": rng.gen::<f64>() }).to_string(),
            _ => json!({ "type": "kick", "name": name }).to_string(),
        }
    };
    let mutate = |rng: &mut StdRng, mut bytes: Vec<u8>| -> Vec<u8> {
        for _ in 0..rng.gen_range(1..4) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.gen_range(0..bytes.len());
            match rng.gen_range(0..4) {
                0 => bytes[at] = rng.gen(),
                1 => bytes.truncate(at),
                2 => bytes.insert(at, rng.gen()),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        bytes
    };
    let mut frames = Vec::new();
    for _ in 0..rng.gen_range(1..40) {
        let frame = match rng.gen_range(0..12) {
            0..=3 => text_frame(&valid(rng)),
            4 | 5 => {
                let text = valid(rng).into_bytes();
                let bytes = mutate(rng, text);
                raw_frame(0x81, bytes.len() as u64, &bytes)
            }
            6 => {
                let bytes: Vec<u8> = (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect();
                raw_frame(rng.gen::<u8>() | 0x80, bytes.len() as u64, &bytes)
            }
            7 => {
                // A text message in fragments, with a ping between two of them.
                let text = valid(rng).into_bytes();
                let cut = rng.gen_range(0..=text.len());
                let mut out = raw_frame(0x01, cut as u64, &text[..cut]);
                out.extend(raw_frame(0x89, 1, b"p"));
                out.extend(raw_frame(0x80, (text.len() - cut) as u64, &text[cut..]));
                out
            }
            8 => raw_frame(
                0x89,
                rng.gen_range(0..126),
                &[0; 200][..rng.gen_range(0..126)],
            ),
            9 => {
                // A length that lies: more declared than sent, or far more than any limit.
                let declared = if rng.gen() {
                    1 << 40
                } else {
                    rng.gen_range(0..1_000_000)
                };
                raw_frame(0x81, declared, b"{}")
            }
            10 => {
                // Unmasked.
                vec![0x81, 2, b'{', b'}']
            }
            _ => raw_frame(0x88, 2, &[0x03, 0xe8]),
        };
        frames.push(frame);
    }
    frames
}

/// One hostile socket: upgrades, writes `frames` split at random, reads everything; the close
/// code it was given, if any.
async fn hostile_socket(addr: &str, room_id: &str, bytes: Vec<u8>, seed: u64) -> Option<u16> {
    let mut raw = Raw::upgrade(addr, room_id, &[]).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut read, mut write) = raw.stream.split();
    let writer = async {
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + rng.gen_range(1..4096)).min(bytes.len());
            if write.write_all(&bytes[at..end]).await.is_err() {
                return;
            }
            at = end;
            if rng.gen_range(0..8) == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let reader = async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let (Some(code), _) = frames_in(&raw.pending) {
                return Some(code);
            }
            match read.read(&mut chunk).await {
                Ok(n) if n > 0 => raw.pending.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    };
    let both = async {
        let (code, ()) = tokio::join!(reader, writer);
        code
    };
    // A socket whose reads the server paces, or whose join it waits for, is given up on.
    tokio::time::timeout(Duration::from_secs(4), both)
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fuzzed_flood_never_panics_the_server_nor_disturbs_honest_members() {
    let seed = std::env::var("EPHEMERA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_e9e3_u64);
    eprintln!("fuzz seed {seed} (EPHEMERA_FUZZ_SEED replays it)");
    let data = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(data.path(), &["--join-timeout-secs", "3"]);
    let http = reqwest::Client::new();
    let auth = random_auth();
    let created: Value = http
        .post(format!("http://{}/api/rooms", server.base))
        .json(&json!({ "auth": auth, "admin_password": ADMIN_PASSWORD }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room = Room {
        id: created["room_id"].as_str().unwrap().to_owned(),
        auth,
    };

    // Two honest members: alice says something five times a second, bob reads everything.
    let join = |name: &'static str| {
        let (url, auth) = (
            format!("ws://{}/ws/{}", server.base, room.id),
            room.auth.clone(),
        );
        async move {
            let mut ws = Ws::connect(&url, None).await.unwrap();
            ws.send_json(&json!({ "type": "join", "name": name, "auth": auth }))
                .await;
            ws.recv_type("welcome").await;
            ws
        }
    };
    let mut alice = join("alice").await;
    let mut bob = join("bob").await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let honest = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut said = Vec::new();
            let mut echoed = Vec::new();
            let mut next = 0u32;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            let echo = |frame: Value, echoed: &mut Vec<String>| {
                assert_ne!(frame["type"], "error", "alice was refused: {frame}");
                if frame["type"] == "message" && frame["from"] == "alice" {
                    echoed.push(frame["txn"].as_str().unwrap().to_owned());
                }
            };
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let txn = format!("honest-{next}");
                        alice
                            .send_json(&json!({ "type": "send", "txn": txn, "body": { "n": next } }))
                            .await;
                        said.push(txn);
                        next += 1;
                    }
                    frame = alice.recv() => echo(frame, &mut echoed),
                }
            }
            // Everything she said came back to her, in order.
            while echoed.len() < said.len() {
                let frame = alice.recv().await;
                echo(frame, &mut echoed);
            }
            assert_eq!(echoed, said);
            said
        })
    };
    let listening = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut heard = Vec::new();
            let mut last_seq = 0;
            loop {
                let next = tokio::time::timeout(Duration::from_secs(2), bob.recv()).await;
                let Ok(frame) = next else {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                };
                if frame["type"] == "message" {
                    let seq = frame["seq"].as_u64().unwrap();
                    assert!(seq > last_seq, "seq went from {last_seq} to {seq}");
                    last_seq = seq;
                    if frame["from"] == "alice" {
                        heard.push(frame["txn"].as_str().unwrap().to_owned());
                    }
                }
            }
            heard
        })
    };

    // The flood.
    let sent = Arc::new(AtomicUsize::new(0));
    let closes = Arc::new(Mutex::new(BTreeSet::new()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..SOCKETS_AT_ONCE as u64 {
        let (sent, closes, room, addr) = (
            sent.clone(),
            closes.clone(),
            room.clone(),
            server.base.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ (worker << 32));
            let mut sockets = 0u64;
            while sent.load(Ordering::Relaxed) < FRAMES && started.elapsed() < TIME_BOX {
                let frames = hostile_frames(&mut rng, &room);
                sent.fetch_add(frames.len(), Ordering::Relaxed);
                let target = if rng.gen_range(0..10) == 0 {
                    "no-such-room"
                } else {
                    &room.id
                };
                let code = hostile_socket(&addr, target, frames.concat(), rng.gen()).await;
                if let Some(code) = code {
                    closes.lock().unwrap().insert(code);
                }
                sockets += 1;
            }
            sockets
        }));
    }
    let mut sockets = 0;
    for worker in workers {
        sockets += worker.await.unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "{sent} frames from {sockets} sockets in {:.1} s; closes seen {:?}",
        started.elapsed().as_secs_f64(),
        closes.lock().unwrap()
    );

    stop.store(true, Ordering::Relaxed);
    let said = honest.await.unwrap();
    let heard = listening.await.unwrap();
    assert_eq!(heard, said, "bob lost or reordered what alice said");
    assert!(said.len() >= 20, "alice said only {} things", said.len());

    let closes = closes.lock().unwrap().clone();
    assert!(
        closes.iter().all(|c| CONTRACT_CLOSES.contains(c)),
        "closes outside the contract: {closes:?}"
    );
    assert!(sent >= FRAMES || started.elapsed() >= TIME_BOX);
    let health = http
        .get(format!("http://{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "{stderr}");
}
