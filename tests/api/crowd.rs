//! A crowd: a room of more members than `--crowd-size` (3 here, 100 by default). Its members
//! hear one summary a second instead of a notice per person, and its member list comes in
//! pages; a small room is as it always was.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

async fn crowd_app() -> TestApp {
    spawn_app_with(|c| c.crowd_size = 3).await
}

fn names(list: &serde_json::Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_crowd_hears_one_summary_a_second_instead_of_a_notice_per_person() {
    let app = crowd_app().await;
    let room = app.room().await;
    let (mut carol, _) = app.join(&room, "carol").await;
    let (_alice, _) = app.join(&room, "alice").await;
    let (_bob, _) = app.join(&room, "bob").await;
    // Up to the crowd size, a notice per person, as always.
    assert_eq!(
        carol.recv_type("bot").await["text"],
        "alice joined. 2 members here."
    );
    assert_eq!(
        carol.recv_type("bot").await["text"],
        "bob joined. 3 members here."
    );

    // Past it, the newcomers are counted in one summary.
    let started = Instant::now();
    let mut crowd = Vec::new();
    for name in ["fay", "dave", "erin"] {
        let (ws, welcome) = app.join(&room, name).await;
        crowd.push(ws);
        // The first page, by name, and the count.
        assert_eq!(names(&welcome["members"]), ["alice", "bob", "carol"]);
        assert!(welcome["member_count"].as_u64().unwrap() >= 4, "{welcome}");
    }
    let summary = carol.recv().await;
    assert_eq!(summary["type"], "bot", "{summary}");
    assert_eq!(
        summary["event"], "summary",
        "no notice per person in a crowd: {summary}"
    );
    assert_eq!(
        (summary["joined"].as_u64(), summary["left"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(summary["members"], 6);
    assert_eq!(summary["text"], "3 joined. 6 members here.");
    assert!(summary.get("member").is_none() && summary.get("name").is_none());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // Leaves too: two go at once, and one summary says so.
    crowd.pop().unwrap().close().await;
    crowd.pop().unwrap().close().await;
    let summary = carol.recv_type("bot").await;
    assert_eq!(summary["event"], "summary");
    assert_eq!(
        (summary["joined"].as_u64(), summary["left"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(summary["text"], "2 left. 4 members here.");
    // A kick is still told by name.
    let (mut admin, _) = app.join_admin(&room, "ann").await;
    admin
        .send_json(&json!({ "type": "kick", "name": "fay" }))
        .await;
    let told = carol.recv_type("bot").await;
    let told = if told["event"] == "summary" {
        carol.recv_type("bot").await
    } else {
        told
    };
    assert_eq!(told["event"], "kick", "{told}");
    assert_eq!(told["name"], "fay");
}

#[tokio::test]
async fn a_crowds_member_list_comes_in_pages_and_a_name_finds_its_page() {
    let app = crowd_app().await;
    let room = app.room().await;
    let mut held = Vec::new();
    for name in ["Fay", "dave", "erin", "alice", "bob", "carol", "gus"] {
        held.push(app.join(&room, name).await.0);
    }
    let mut asker = held.pop().unwrap();
    asker.send_json(&json!({ "type": "members" })).await;
    let first = asker.recv_type("members").await;
    assert_eq!(names(&first["members"]), ["alice", "bob", "carol"]);
    assert_eq!(
        (
            first["page"].as_u64(),
            first["pages"].as_u64(),
            first["total"].as_u64()
        ),
        (Some(0), Some(3), Some(7))
    );
    asker
        .send_json(&json!({ "type": "members", "page": 1 }))
        .await;
    // Name order is the names' keys' order: "Fay" sorts as "fay".
    assert_eq!(
        names(&asker.recv_type("members").await["members"]),
        ["dave", "erin", "Fay"]
    );
    asker
        .send_json(&json!({ "type": "members", "name": "GUS" }))
        .await;
    let page = asker.recv_type("members").await;
    assert_eq!(
        (names(&page["members"]), page["page"].as_u64()),
        (vec!["gus"], Some(2))
    );
    asker
        .send_json(&json!({ "type": "members", "page": 9 }))
        .await;
    let past = asker.recv_type("members").await;
    assert_eq!(
        (
            past["members"].as_array().unwrap().len(),
            past["page"].as_u64()
        ),
        (0, Some(9))
    );
    asker
        .send_json(&json!({ "type": "members", "name": "nobody" }))
        .await;
    assert_eq!(asker.recv_type("error").await["code"], "no_such_member");
    asker
        .send_json(&json!({ "type": "members", "page": "one" }))
        .await;
    assert_eq!(asker.recv_type("error").await["code"], "bad_request");
    asker
        .send_json(&json!({ "type": "members", "page": -1 }))
        .await;
    assert_eq!(asker.recv_type("error").await["code"], "bad_request");
    // On any other frame `page` is an unknown field, ignored like any other.
    asker
        .send_json(&json!({ "type": "send", "txn": "p", "body": "x", "page": "x" }))
        .await;
    assert_eq!(asker.recv_type("message").await["txn"], "p");
}

#[tokio::test]
async fn a_small_room_still_gets_its_whole_list_in_one_page() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (_b, _) = app.join(&room, "bo").await;
    let (mut a, welcome) = app.join(&room, "al").await;
    assert_eq!(names(&welcome["members"]), ["al", "bo"]);
    assert_eq!(welcome["member_count"], 2);
    a.send_json(&json!({ "type": "members" })).await;
    let list = a.recv_type("members").await;
    assert_eq!(
        (
            list["page"].as_u64(),
            list["pages"].as_u64(),
            list["total"].as_u64()
        ),
        (Some(0), Some(1), Some(2))
    );
}

/// A DM carries its sender's key: in a crowd the recipient may not hold the sender's page.
#[tokio::test]
async fn a_dm_carries_its_senders_public_key() {
    let app = crowd_app().await;
    let room = app.room().await;
    let key = ephemera_protocol::crypto::DmKeys::generate().public_b64();
    let (mut sender, _) = app
        .join_with(&room, json!({ "name": "zed", "pubkey": key }))
        .await;
    let (mut to, _) = app.join(&room, "amy").await;
    sender
        .send_json(&json!({ "type": "dm", "to": "amy", "txn": "1", "body": "x" }))
        .await;
    let dm = to.recv_type("dm").await;
    assert_eq!(dm["pubkey"], key.as_str());
    assert_eq!(sender.recv_type("dm").await["pubkey"], key.as_str());
}
