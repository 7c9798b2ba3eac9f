//! The operator's audit trail (`--audit-log`): one JSON line per security event, with keyed
//! tags for rooms and members and a cut address, and nothing anyone said. The search for
//! canaries in it runs with the no-storage tests (`no_storage.rs`).

use std::{path::Path, time::Duration};

use serde_json::{json, Value};

use crate::helpers::*;

/// The trail's lines so far, once `ready` holds for them (the writer is a thread of its own).
async fn lines_when(path: &Path, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if ready(&lines) || std::time::Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn events<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

/// Every event the issue names, each with what an operator needs and no more: a room's keyed
/// hash (its ID only when listed), a member's tag that follows one name inside one room, the
/// address cut to its /24, and a refusal's code.
#[tokio::test]
async fn the_audit_trail_records_who_got_in_and_nothing_said() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let trail = path.to_str().unwrap().to_owned();
    let app = spawn_app_with(move |c| {
        c.audit_log = Some(trail);
        c.messages_per_10s = 3;
    })
    .await;
    let room = app.room().await;
    let listed = app
        .room_with(json!({ "listed": true, "title": "public" }))
        .await;
    let (mut ann, _) = app.join_admin(&room, "ann").await;
    let (_bo, welcome) = app.join(&room, "bo").await;
    let (_ann_elsewhere, _) = app.join(&listed, "ann").await;
    let mut wrong = app.connect(&room.id).await;
    wrong
        .send_json(&json!({ "type": "join", "name": "eve", "auth": random_auth() }))
        .await;
    wrong.refused("invalid_credentials", 4401).await;

    // bo comes back on a new socket while the old one is open: the old one is replaced.
    let mut again = app.connect(&room.id).await;
    again
        .send_json(&json!({ "type": "join", "name": "bo", "auth": room.auth, "session": welcome["session"] }))
        .await;
    assert_eq!(again.recv_type("welcome").await["type"], "welcome");

    // Three messages in 10 s: the fourth is refused, and the socket rests until a token is back.
    for i in 0..4 {
        ann.send_json(&json!({ "type": "send", "txn": format!("t{i}"), "body": { "ct": "SAID" } }))
            .await;
    }
    assert_eq!(ann.recv_type("error").await["code"], "rate_limited");
    ann.send_json(&json!({ "type": "kick", "name": "bo" }))
        .await;
    assert_eq!(again.closed().await.0, 4403);
    let response = app.delete_room(&room.id, "not the password").await;
    assert_eq!(response.status(), 403);
    let response = app.delete_room(&room.id, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 204);

    let lines = lines_when(&path, |l| !events(l, "room_deleted").is_empty()).await;
    let text = std::fs::read_to_string(&path).unwrap();
    for said in [
        "SAID",
        "\"t0\"",
        &room.id,
        &room.auth,
        ADMIN_PASSWORD,
        "not the password",
    ] {
        assert!(!text.contains(said), "{said:?} in the trail:\n{text}");
    }
    for name in ["\"ann\"", "\"bo\"", "\"eve\""] {
        assert!(!text.contains(name), "{name} in the trail:\n{text}");
    }

    let created = events(&lines, "room_created");
    assert_eq!(created.len(), 2, "{text}");
    assert!(
        created[0].get("room_id").is_none(),
        "an unlisted room's ID: {text}"
    );
    assert_eq!(
        created[1]["room_id"], listed.id,
        "a listed room's ID is public"
    );
    let tag = created[0]["room"].as_str().unwrap();
    assert_eq!(tag.len(), 64);
    for line in &lines {
        assert_eq!(line["address"], "127.0.0.0/24", "{line}");
        assert!(line["ts"].as_str().unwrap().ends_with('Z'), "{line}");
    }

    let accepted = events(&lines, "join_accepted");
    assert_eq!(
        accepted.len(),
        4,
        "ann, bo, ann in the listed room, bo again: {text}"
    );
    let (ann_here, bo_here, ann_there, bo_again) =
        (&accepted[0], &accepted[1], &accepted[2], &accepted[3]);
    assert_eq!(ann_here["room"], tag);
    assert_ne!(ann_here["member"], bo_here["member"]);
    assert_eq!(
        bo_here["member"], bo_again["member"],
        "one person inside one room"
    );
    assert_ne!(
        ann_here["member"], ann_there["member"],
        "and not across rooms"
    );
    let refused = events(&lines, "join_refused");
    assert_eq!(refused.len(), 1, "{text}");
    assert_eq!(refused[0]["code"], "invalid_credentials");
    assert_eq!(refused[0]["room"], tag);
    let replaced = events(&lines, "session_replaced");
    assert_eq!(replaced.len(), 1, "{text}");
    assert_eq!(replaced[0]["member"], bo_here["member"]);

    let limited = events(&lines, "rate_limited");
    assert!(!limited.is_empty(), "{text}");
    assert_eq!(limited[0]["limited"], "messages");
    assert_eq!(limited[0]["member"], ann_here["member"]);
    let kick = events(&lines, "kick");
    assert_eq!(kick.len(), 1, "{text}");
    assert_eq!(kick[0]["member"], bo_here["member"]);
    assert_eq!(kick[0]["by_member"], ann_here["member"]);
    let refused_delete = events(&lines, "delete_refused");
    assert_eq!(refused_delete[0]["code"], "invalid_credentials");
    let deleted = events(&lines, "room_deleted");
    assert_eq!(deleted.len(), 1, "{text}");
    assert_eq!(deleted[0]["by"], "http");
    assert_eq!(deleted[0]["room"], tag);
}

/// The admin's `delete_room` frame is recorded as the admin's doing; a refused creation past
/// the address's allowance is a rate limit; `--audit-address hash` keeps the whole address out.
#[tokio::test]
async fn an_admin_deletion_and_a_refused_creation_are_recorded_with_a_hashed_address() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let trail = path.to_str().unwrap().to_owned();
    let app = spawn_app_with(move |c| {
        c.audit_log = Some(trail);
        c.audit_address = ephemera::audit::AddressForm::Hash;
        c.creates_per_ip = 1;
    })
    .await;
    let room = app.room().await;
    let response = app
        .post_room(&json!({ "auth": random_auth(), "admin_password": ADMIN_PASSWORD }))
        .await;
    assert_eq!(response.status(), 429);
    let (mut ann, _) = app.join_admin(&room, "ann").await;
    ann.send_json(&json!({ "type": "delete_room" })).await;
    assert_eq!(ann.closed().await.0, 4410);

    let lines = lines_when(&path, |l| !events(l, "room_deleted").is_empty()).await;
    let limited = events(&lines, "rate_limited");
    assert_eq!(limited[0]["limited"], "creates", "{lines:?}");
    let deleted = events(&lines, "room_deleted");
    assert_eq!(deleted[0]["by"], "admin");
    assert_eq!(
        deleted[0]["member"],
        events(&lines, "join_accepted")[0]["member"]
    );
    let address = lines[0]["address"].as_str().unwrap();
    assert_eq!(address.len(), 16, "{address}");
    assert!(!address.contains("127."), "{address}");
    assert!(lines.iter().all(|l| l["address"] == address));
}

/// SIGHUP reopens the file, so that logrotate can move it away: what comes after the signal is
/// in a new file at the same path.
#[tokio::test]
async fn the_audit_log_reopens_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let server = BinaryServer::start(dir.path(), &["--audit-log", path.to_str().unwrap()]);
    let app = server.client();
    app.room().await;
    lines_when(&path, |l| l.len() == 1).await;
    let rotated = dir.path().join("audit.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    server.signal("HUP");
    // The reopen goes through the writer's queue: a line written after it lands in the new
    // file. Poll, since the signal is handled on its own time.
    let deadline = std::time::Instant::now() + WAIT;
    while !path.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.room().await;
    let fresh = lines_when(&path, |l| l.len() == 1).await;
    assert_eq!(
        fresh.len(),
        1,
        "the line after the signal is in the new file"
    );
    assert_eq!(fresh[0]["event"], "room_created");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
}
