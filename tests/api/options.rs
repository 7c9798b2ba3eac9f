//! Room options chosen at creation: lifetime (fixed, or until empty), a member cap, and whether
//! unsend is allowed; kept in the record on both stores, shown in `welcome`, enforced.

use std::time::Duration;

use ephemera::credentials::{EmbeddedStore, RoomStore};
use serde_json::{json, Value};

use crate::helpers::*;

async fn create(app: &Client, options: Value) -> (Room, Value) {
    let auth = random_auth();
    let mut body = json!({ "auth": auth, "admin_password": ADMIN_PASSWORD });
    for (k, v) in options.as_object().unwrap() {
        body[k] = v.clone();
    }
    let response = app.post_room(&body).await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let created: Value = response.json().await.unwrap();
    let room = Room {
        id: created["room_id"].as_str().unwrap().to_owned(),
        auth,
    };
    (room, created)
}

/// A two-member room without unsend, read back from the store on the first join: the cap and
/// the rule hold, and `welcome` says so.
async fn a_private_room_keeps_its_options(app: &Client) {
    let (room, created) = create(app, json!({ "max_members": 2, "unsend": false })).await;
    assert_eq!(
        created["options"],
        json!({ "lifetime": "rolling", "max_members": 2, "unsend": false })
    );
    let (mut clinic, welcome) = app.join(&room, "clinic").await;
    assert_eq!(welcome["options"], created["options"]);
    assert_eq!(welcome["limits"]["max_members"], 2);
    let (_patient, _) = app.join(&room, "patient").await;
    let mut third = app.connect(&room.id).await;
    third
        .send_json(&json!({ "type": "join", "name": "third", "auth": room.auth }))
        .await;
    third.refused("room_full", 4503).await;

    clinic
        .send_json(&json!({ "type": "send", "txn": "t", "body": { "ct": "x" } }))
        .await;
    let seq = clinic.recv_type("message").await["seq"].clone();
    clinic
        .send_json(&json!({ "type": "unsend", "seq": seq }))
        .await;
    assert_eq!(clinic.recv_type("error").await["code"], "forbidden");
}

#[tokio::test]
async fn a_private_room_keeps_its_options_in_the_embedded_store() {
    let app = spawn_app().await;
    a_private_room_keeps_its_options(&app).await;
}

#[tokio::test]
async fn a_private_room_keeps_its_options_in_mongodb() {
    let mongo = MongoServer::start();
    let uri = mongo.uri.clone();
    let app = spawn_app_with(move |c| {
        c.mongodb_uri = Some(uri);
        c.mongodb_db = "options".into();
    })
    .await;
    a_private_room_keeps_its_options(&app).await;
}

/// Options outside the contract are refused before any work.
#[tokio::test]
async fn options_outside_the_contract_are_invalid_options() {
    let app = spawn_app_with(|c| c.max_members = 50).await;
    for options in [
        json!({ "lifetime": "2h" }),
        json!({ "lifetime": 3600 }),
        json!({ "max_members": 1 }),
        json!({ "max_members": 51 }),
        json!({ "unsend": "no" }),
    ] {
        let mut body = json!({ "auth": random_auth(), "admin_password": ADMIN_PASSWORD });
        for (k, v) in options.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = app.post_room(&body).await;
        assert_eq!(response.status(), 400, "{options}");
        let error: Value = response.json().await.unwrap();
        let code = error["error"]["code"].as_str().unwrap();
        assert!(
            code == "invalid_options" || code == "bad_request",
            "{options}: {error}"
        );
    }
    let (_, created) = create(&app, json!({ "max_members": 50 })).await;
    assert_eq!(created["options"]["max_members"], 50);
}

/// A room of fixed lifetime ends then, whoever is in it, and joins do not push it back.
#[tokio::test]
async fn a_room_of_fixed_lifetime_ends_on_time() {
    let first = spawn_app().await;
    let (room, created) = create(&first, json!({ "lifetime": "1h" })).await;
    assert_eq!(created["options"]["lifetime"], "fixed");
    let created_at = time::OffsetDateTime::parse(
        created["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires_at = time::OffsetDateTime::parse(
        created["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires_at - created_at, time::Duration::hours(1));
    let ends_at = created["options"]["ends_at"].as_i64().unwrap();
    assert_eq!(
        i128::from(ends_at),
        expires_at.unix_timestamp_nanos() / 1_000_000
    );

    // An hour is long for a test: the record is moved to end two seconds from now.
    let kept = first.stop_keeping_data().await;
    {
        // The stopped server may still be letting go of the store file.
        let mut tries = 0;
        let store = loop {
            match EmbeddedStore::open(kept.path()) {
                Ok(store) => break store,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        let id = ephemera::domain::RoomId::parse(&room.id).unwrap();
        let hash = ephemera::credentials::Pepper::new(b"test pepper").room_hash(&id);
        let mut record = store.get(&hash).await.unwrap().unwrap();
        record.expires_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
        store.delete(&hash).await.unwrap();
        store.insert(&record).await.unwrap();
    }
    let data_dir = kept.path().to_owned();
    let app = spawn_app_with(|c| c.data_dir = data_dir).await;
    let (mut ann, welcome) = app.join(&room, "ann").await;
    assert_eq!(welcome["options"]["lifetime"], "fixed");
    let (code, frames) = ann.closed().await;
    assert_eq!(code, 4410, "{frames:?}");
    let ended = frames.iter().find(|f| f["type"] == "room_deleted").unwrap();
    assert_eq!(ended["reason"], "expired");
    let mut late = app.connect(&room.id).await;
    late.send_json(&json!({ "type": "join", "name": "bo", "auth": room.auth }))
        .await;
    late.refused("room_not_found", 4404).await;
}

/// A room that vanishes when empty: gone once its last member has left and the grace has
/// passed; a member who comes back within the grace keeps it.
async fn a_room_that_vanishes_when_empty_leaves_nothing(app: &Client) {
    let (room, created) = create(app, json!({ "lifetime": "empty" })).await;
    assert_eq!(created["options"]["lifetime"], "empty");

    let (ann, _) = app.join(&room, "ann").await;
    ann.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ann, _) = app.join(&room, "ann").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ann.close().await;

    // Past the grace (a probe sooner would make the room live again, and start it over).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut again = app.connect(&room.id).await;
    again
        .send_json(&json!({ "type": "join", "name": "ann", "auth": room.auth }))
        .await;
    again.refused("room_not_found", 4404).await;
    let response = app.delete_room(&room.id, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 404, "its record is gone");
}

#[tokio::test]
async fn a_room_that_vanishes_when_empty_leaves_nothing_in_the_embedded_store() {
    let app = spawn_app_with(|c| {
        c.empty_room_grace_secs = 1;
        c.leave_grace_secs = 0;
    })
    .await;
    a_room_that_vanishes_when_empty_leaves_nothing(&app).await;
}

#[tokio::test]
async fn a_room_that_vanishes_when_empty_leaves_nothing_in_mongodb() {
    let mongo = MongoServer::start();
    let uri = mongo.uri.clone();
    let app = spawn_app_with(move |c| {
        c.mongodb_uri = Some(uri);
        c.mongodb_db = "vanish".into();
        c.empty_room_grace_secs = 1;
        c.leave_grace_secs = 0;
    })
    .await;
    a_room_that_vanishes_when_empty_leaves_nothing(&app).await;
}

/// On MongoDB too a room of fixed lifetime ends on time (its record moved to end in two
/// seconds through the store, as the embedded test does).
#[tokio::test]
async fn a_room_of_fixed_lifetime_ends_on_time_in_mongodb() {
    let mongo = MongoServer::start();
    let uri = mongo.uri.clone();
    let app = spawn_app_with(move |c| {
        c.mongodb_uri = Some(uri);
        c.mongodb_db = "fixed".into();
    })
    .await;
    let (room, _) = create(&app, json!({ "lifetime": "1d" })).await;
    let store = ephemera::credentials::MongoStore::connect(&mongo.uri, "fixed")
        .await
        .unwrap();
    let id = ephemera::domain::RoomId::parse(&room.id).unwrap();
    let hash = ephemera::credentials::Pepper::new(b"test pepper").room_hash(&id);
    let mut record = store.get(&hash).await.unwrap().unwrap();
    assert_eq!(
        record.options.lifetime,
        ephemera::credentials::Lifetime::Fixed
    );
    record.expires_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    store.delete(&hash).await.unwrap();
    store.insert(&record).await.unwrap();
    let (mut ann, welcome) = app.join(&room, "ann").await;
    assert_eq!(welcome["options"]["lifetime"], "fixed");
    let (code, frames) = ann.closed().await;
    assert_eq!(code, 4410, "{frames:?}");
    assert!(
        frames.iter().any(|f| f["reason"] == "expired"),
        "{frames:?}"
    );
}

/// An admin locks the room: nobody new gets in (an admin does, and a member coming back with
/// its token); an admin makes another member an admin, who can then do what admins do.
#[tokio::test]
async fn an_admin_locks_the_room_and_hands_over() {
    let app = spawn_app().await;
    let room = app.room().await;
    let (mut ann, _) = app.join_admin(&room, "ann").await;
    let (mut bo, bo_welcome) = app.join(&room, "bo").await;
    ann.recv_type("bot").await;

    bo.send_json(&json!({ "type": "lock" })).await;
    assert_eq!(bo.recv_type("error").await["code"], "forbidden");
    ann.send_json(&json!({ "type": "lock" })).await;
    for ws in [&mut ann, &mut bo] {
        let notice = ws.recv_type("bot").await;
        assert_eq!(notice["event"], "lock", "{notice}");
        assert_eq!(notice["name"], "ann");
    }
    let mut cy = app.connect(&room.id).await;
    cy.send_json(&json!({ "type": "join", "name": "cy", "auth": room.auth }))
        .await;
    cy.refused("room_locked", 4423).await;
    let (_admin, welcome) = app
        .join_with(
            &room,
            json!({ "name": "dee", "admin_password": ADMIN_PASSWORD }),
        )
        .await;
    assert_eq!(welcome["locked"], true);
    // bo comes back on a new socket: a member coming back is not new.
    let mut back = app.connect(&room.id).await;
    back.send_json(&json!({ "type": "join", "name": "bo", "auth": room.auth, "session": bo_welcome["session"] }))
        .await;
    let again = back.recv_type("welcome").await;
    assert_eq!(again["locked"], true);

    ann.send_json(&json!({ "type": "make_admin", "name": "bo" }))
        .await;
    let made = back.recv_type("bot").await;
    let made = if made["event"] == "admin" {
        made
    } else {
        back.recv_type("bot").await
    };
    assert_eq!(made["event"], "admin", "{made}");
    assert_eq!(made["member"]["name"], "bo");
    assert_eq!(made["member"]["admin"], true);
    back.send_json(&json!({ "type": "unlock" })).await;
    let unlocked = loop {
        let notice = ann.recv_type("bot").await;
        if notice["event"] == "unlock" {
            break notice;
        }
    };
    assert_eq!(unlocked["name"], "bo");
    let (_cy, welcome) = app.join(&room, "cy").await;
    assert_eq!(welcome["locked"], false);
}
