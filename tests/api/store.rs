//! One conformance suite for the store trait, run against the embedded store and against
//! MongoDB (a real MongoDB-protocol server); and the server's behaviour while MongoDB is down.

use std::time::Duration;

use ephemera::credentials::{
    EmbeddedStore, Lifetime, MongoStore, RoomOptions, RoomRecord, RoomStore, StoreError,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::helpers::*;

/// Whole milliseconds, as MongoDB keeps dates.
fn now_ms() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap()
}

fn record(id_hash: &str, listed: bool, expires_in: time::Duration) -> RoomRecord {
    let now = now_ms();
    RoomRecord {
        id_hash: id_hash.to_owned(),
        auth_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
        admin_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$YWRtaW5hZG1pbmFkbWluYQ".into(),
        listed,
        room_id: listed.then(|| format!("room-{id_hash}")),
        title: listed.then(|| "A title".to_owned()),
        created_at: now,
        expires_at: now + expires_in,
        options: RoomOptions::default(),
    }
}

async fn conformance(store: &dyn RoomStore) {
    let day = time::Duration::days(1);
    store.ping().await.unwrap();

    // insert and get
    let a = record("aaaa", false, day);
    store.insert(&a).await.unwrap();
    assert_eq!(store.get("aaaa").await.unwrap(), Some(a.clone()));
    assert_eq!(store.get("missing").await.unwrap(), None);

    // the creator's options persist beside the hashes
    let mut chosen = record("opts", false, day);
    chosen.options = RoomOptions {
        lifetime: Lifetime::UntilEmpty,
        max_members: 2,
        unsend: false,
    };
    store.insert(&chosen).await.unwrap();
    assert_eq!(store.get("opts").await.unwrap(), Some(chosen));
    assert!(store.delete("opts").await.unwrap());

    // the ID hash is unique
    assert!(matches!(
        store.insert(&record("aaaa", true, day)).await,
        Err(StoreError::Exists)
    ));
    assert_eq!(store.get("aaaa").await.unwrap(), Some(a.clone()));

    // extend only moves forward
    let later = a.expires_at + day;
    store.extend("aaaa", later).await.unwrap();
    assert_eq!(store.get("aaaa").await.unwrap().unwrap().expires_at, later);
    store.extend("aaaa", a.expires_at).await.unwrap();
    assert_eq!(store.get("aaaa").await.unwrap().unwrap().expires_at, later);
    store.extend("missing", later).await.unwrap();
    assert_eq!(store.get("missing").await.unwrap(), None);

    // delete
    assert!(store.delete("aaaa").await.unwrap());
    assert!(!store.delete("aaaa").await.unwrap());
    assert_eq!(store.get("aaaa").await.unwrap(), None);

    // expired rooms are gone for every purpose, and their ID can be taken again
    let old = record("bbbb", true, -time::Duration::seconds(1));
    store.insert(&old).await.unwrap();
    assert_eq!(store.get("bbbb").await.unwrap(), None);
    assert!(store.listed().await.unwrap().is_empty());
    store.extend("bbbb", now_ms() + day).await.unwrap();
    assert_eq!(store.get("bbbb").await.unwrap(), None);
    let fresh = record("bbbb", false, day);
    store.insert(&fresh).await.unwrap();
    assert_eq!(store.get("bbbb").await.unwrap(), Some(fresh));
    let stale = record("cccc", false, -time::Duration::seconds(1));
    store.insert(&stale).await.unwrap();
    assert!(!store.delete("cccc").await.unwrap());
    store.purge_expired().await.unwrap();
    assert_eq!(store.get("cccc").await.unwrap(), None);

    // listed shows listed, unexpired rooms with their ID and title only
    store.insert(&record("dddd", true, day)).await.unwrap();
    store.insert(&record("eeee", false, day)).await.unwrap();
    let listed = store.listed().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].room_id, "room-dddd");
    assert_eq!(listed[0].title.as_deref(), Some("A title"));
}

#[tokio::test]
async fn the_embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    conformance(&store).await;
}

#[tokio::test]
async fn the_embedded_store_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = record("persist", true, time::Duration::days(1));
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.insert(&a).await.unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    assert_eq!(store.get("persist").await.unwrap(), Some(a));
}

#[tokio::test]
async fn the_mongodb_store_conforms() {
    let mongo = MongoServer::start();
    let store = MongoStore::connect(&mongo.uri, "conformance")
        .await
        .unwrap();
    store.ensure_indexes().await.unwrap();
    conformance(&store).await;
}

#[tokio::test]
async fn the_mongodb_store_makes_a_unique_a_ttl_and_a_lobby_index() {
    let mongo = MongoServer::start();
    let store = MongoStore::connect(&mongo.uri, "indexes").await.unwrap();
    store.ensure_indexes().await.unwrap();
    let client = mongodb::Client::with_uri_str(&mongo.uri).await.unwrap();
    let indexes: Vec<mongodb::IndexModel> = futures_util::TryStreamExt::try_collect(
        client
            .database("indexes")
            .collection::<mongodb::bson::Document>("rooms")
            .list_indexes()
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let unique = indexes
        .iter()
        .find(|i| i.keys.contains_key("id_hash"))
        .expect("an index on id_hash");
    assert_eq!(unique.options.as_ref().unwrap().unique, Some(true));
    let ttl = indexes
        .iter()
        .find(|i| i.keys.len() == 1 && i.keys.contains_key("expires_at"))
        .expect("an index on expires_at");
    assert_eq!(
        ttl.options.as_ref().unwrap().expire_after,
        Some(Duration::ZERO)
    );
    // The lobby's start-up read finds the listed rooms by an index, not by a scan.
    assert!(
        indexes
            .iter()
            .any(|i| i.keys.keys().next().map(String::as_str) == Some("listed")),
        "an index on listed"
    );
}

#[tokio::test]
async fn the_server_runs_on_mongodb_end_to_end() {
    let mongo = MongoServer::start();
    let uri = mongo.uri.clone();
    let app = spawn_app_with(|c| {
        c.mongodb_uri = Some(uri);
        c.mongodb_db = "end_to_end".into();
    })
    .await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let room = app
        .room_with(json!({ "listed": true, "title": "On Mongo" }))
        .await;
    let (mut a, _) = app.join(&room, "a").await;
    let (mut b, _) = app.join(&room, "b").await;
    a.recv_type("bot").await;
    a.send_json(&json!({ "type": "send", "txn": "1", "body": {"text": "hi"} }))
        .await;
    assert_eq!(b.recv_type("message").await["body"]["text"], "hi");
    let lobby: Value = app.get("/api/rooms").await.json().await.unwrap();
    assert_eq!(lobby["rooms"][0]["members"], 2);
    assert_eq!(
        app.delete_room(&room.id, ADMIN_PASSWORD).await.status(),
        204
    );
    assert_eq!(a.closed().await.0, 4410);
    let again = app
        .post_room(
            &json!({ "room_id": room.id, "auth": random_auth(), "admin_password": ADMIN_PASSWORD }),
        )
        .await;
    assert_eq!(again.status(), 201);
}

/// MongoDB goes away mid-chat: health, create, delete and joins that need the store say so,
/// and the members already in a room keep chatting (and a live room still admits people). When
/// it comes back, the server heals by itself, without a restart.
#[tokio::test]
async fn while_mongodb_is_down_live_rooms_keep_chatting_and_then_it_heals() {
    let mut mongo = MongoServer::start();
    let uri = mongo.uri.clone();
    let app = spawn_app_with(|c| {
        c.mongodb_uri = Some(uri);
        c.mongodb_db = "outage".into();
    })
    .await;
    let live = app.room().await;
    let cold = app.room().await;
    let (mut a, _) = app.join(&live, "a").await;
    let (mut b, _) = app.join(&live, "b").await;
    a.recv_type("bot").await;

    mongo.stop();

    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 503);
    assert_eq!(health.json::<Value>().await.unwrap()["store"], "down");

    let create = app
        .post_room(&json!({ "auth": random_auth(), "admin_password": ADMIN_PASSWORD }))
        .await;
    assert_eq!(create.status(), 503);
    assert_eq!(
        create.json::<Value>().await.unwrap()["error"]["code"],
        "store_unavailable"
    );

    let delete = app.delete_room(&cold.id, ADMIN_PASSWORD).await;
    assert_eq!(delete.status(), 503);
    assert_eq!(
        delete.json::<Value>().await.unwrap()["error"]["code"],
        "store_unavailable"
    );

    let mut joiner = app.connect(&cold.id).await;
    joiner
        .send_json(&json!({ "type": "join", "name": "c", "auth": cold.auth }))
        .await;
    joiner.refused("store_unavailable", 1011).await;

    a.send_json(&json!({ "type": "send", "txn": "1", "body": {"text": "still"} }))
        .await;
    assert_eq!(b.recv_type("message").await["body"]["text"], "still");
    let (_c, welcome) = app.join(&live, "c").await;
    assert_eq!(welcome["members"].as_array().unwrap().len(), 3);

    let lobby = app.get("/api/rooms").await;
    assert_eq!(lobby.status(), 200);

    // MongoDB comes back where it was (SecantusDB keeps its data in memory here, so it comes back
    // empty; what matters is that the server finds it again by itself).
    let _mongo = MongoServer::start_at(mongo.port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.get("/healthz").await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the store stayed down"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A room created now, and joined through the store (it is not live).
    let fresh = app.room().await;
    let (_d, _) = app.join(&fresh, "d").await;
    a.send_json(&json!({ "type": "send", "txn": "2", "body": {"text": "healed"} }))
        .await;
    assert_eq!(b.recv_type("message").await["body"]["text"], "healed");
}

#[tokio::test]
async fn a_successful_join_pushes_the_expiry_forward() {
    let app = spawn_app().await;
    let room = app.room().await;
    let id = ephemera::domain::RoomId::parse(&room.id).unwrap();
    let before = app
        .state
        .credentials
        .fetch(&id)
        .await
        .unwrap()
        .unwrap()
        .expires_at;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_a, _) = app.join(&room, "a").await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let after = app
            .state
            .credentials
            .fetch(&id)
            .await
            .unwrap()
            .unwrap()
            .expires_at;
        if after > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expiry did not move"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A crowd arriving at a room this server did not create (a restart emptied its memory) pays
/// for one argon2 verification, not one per member; a wrong proof still pays its own.
#[tokio::test]
async fn a_crowd_at_a_cold_room_costs_one_argon2_run() {
    let first = spawn_app().await;
    let room = first.room().await;
    let kept = first.stop_keeping_data().await;
    let data_dir = kept.path().to_owned();
    let app = spawn_app_with(|c| c.data_dir = data_dir).await;

    let joins = (0..12).map(|i| {
        let (app, room) = (&app, room.clone());
        async move { app.join(&room, &format!("m{i}")).await }
    });
    let members = futures_util::future::join_all(joins).await;
    assert_eq!(members.len(), 12);
    let runs = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("ephemera_argon2_runs_total{op=\"verify\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .map(|n| n.parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(runs(&app.get("/metrics").await.text().await.unwrap()), 1);

    let mut wrong = app.connect(&room.id).await;
    wrong
        .send_json(&serde_json::json!({ "type": "join", "name": "x", "auth": random_auth() }))
        .await;
    wrong.refused("invalid_credentials", 4401).await;
    assert_eq!(runs(&app.get("/metrics").await.text().await.unwrap()), 2);
}
