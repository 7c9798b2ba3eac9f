//! Nothing a member says, nor its name, nor an unlisted room's ID, reaches a database, a file or
//! a log line. A room is used hard with a unique canary in every field a member controls; then
//! every store file, every MongoDB document and every line the server logged is searched for it.
//!
//! The server runs as its own process, at the most verbose log level, so that the log searched
//! is this server's and nothing else's.

use std::path::Path;

use futures_util::TryStreamExt;
use serde_json::json;

use crate::helpers::*;

struct Canary {
    word: String,
    room_id: String,
    names: [String; 3],
}

impl Canary {
    fn new() -> Self {
        let word = format!("canary{}", rand::random::<u64>());
        Self {
            room_id: format!("room-{word}"),
            names: [
                format!("Ann-{word}"),
                format!("Bo-{word}"),
                format!("Cy-{word}"),
            ],
            word,
        }
    }

    fn needles(&self) -> Vec<String> {
        let mut needles = vec![self.word.clone(), self.room_id.clone()];
        needles.extend(self.names.iter().cloned());
        needles
    }

    /// Says and does everything a member can, with the canary in every field it controls.
    async fn chat(&self, app: &Client) {
        let room = app.room_with(json!({ "room_id": self.room_id })).await;
        let w = &self.word;
        let (mut ann, _) = app.join_admin(&room, &self.names[0]).await;
        let (mut bo, _) = app.join(&room, &self.names[1]).await;
        let (mut cy, _) = app.join(&room, &self.names[2]).await;
        ann.send_json(&json!({ "type": "send", "txn": format!("txn-{w}"), "body": {"text": format!("hello {w}")} })).await;
        let seq = ann.recv_type("message").await["seq"].clone();
        bo.send_json(&json!({ "type": "dm", "to": self.names[2], "txn": w, "body": {"ct": w} }))
            .await;
        bo.send_json(&json!({ "type": "dm", "to": format!("ghost-{w}"), "txn": w, "body": w }))
            .await;
        bo.send_json(&json!({ "type": "typing", "active": true }))
            .await;
        cy.send_json(&json!({ "type": "read", "seq": seq })).await;
        cy.send_json(&json!({ "type": "ping", "t": w })).await;
        cy.send_text(&format!("not json {w}")).await;
        cy.send_json(&json!({ "type": w })).await;
        ann.send_json(&json!({ "type": "unsend", "seq": seq }))
            .await;
        ann.send_json(&json!({ "type": "kick", "name": format!("nobody-{w}") }))
            .await;
        cy.recv_type("pong").await;
        // A refused join with the canary name, a wrong key, and one with a taken name.
        let mut taken = app.connect(&room.id).await;
        taken
            .send_json(&json!({ "type": "join", "name": self.names[1], "auth": room.auth }))
            .await;
        taken.refused("name_taken", 4409).await;
        let mut wrong = app.connect(&room.id).await;
        wrong
            .send_json(&json!({ "type": "join", "name": w, "auth": random_auth() }))
            .await;
        wrong.refused("invalid_credentials", 4401).await;
        ann.send_json(&json!({ "type": "kick", "name": self.names[2] }))
            .await;
        cy.closed().await;
        bo.close().await;
        ann.recv_type("bot").await;
        assert_eq!(
            app.delete_room(&room.id, ADMIN_PASSWORD).await.status(),
            204
        );
        ann.closed().await;
    }

    fn assert_absent(&self, haystack: &[u8], place: &str) {
        for needle in self.needles() {
            assert!(
                !haystack
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes()),
                "{needle:?} found in {place}: {}",
                String::from_utf8_lossy(haystack)
                    .lines()
                    .filter(|l| l.contains(needle.as_str()))
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
    }

    /// The 8-hex-digit tag the server's log lines give the canary's room.
    fn room_tag(&self) -> String {
        let id = ephemera::domain::RoomId::parse(&self.room_id).unwrap();
        let hash = ephemera::credentials::Pepper::new(PEPPER.as_bytes()).room_hash(&id);
        ephemera::telemetry::room_tag(&hash).to_owned()
    }

    /// Searches the server's log, and checks that it holds the lines about the canary's room
    /// (so that what was searched is a log of this run).
    async fn assert_absent_from_log(&self, server: &BinaryServer, lines: &[&str]) {
        let tag = self.room_tag();
        let lines: Vec<String> = lines.iter().map(|l| format!("room {tag} {l}")).collect();
        // The server wrote them before it answered; the pipe may still hold them.
        let deadline = std::time::Instant::now() + WAIT;
        let log = loop {
            let log = server.stderr();
            if lines.iter().all(|l| log.contains(l)) || std::time::Instant::now() > deadline {
                break log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        self.assert_absent(log.as_bytes(), "the log");
        for line in lines {
            assert!(log.contains(&line), "no \"{line}\" in the log:\n{log}");
        }
    }

    /// Searches every file under `dir`; returns how many there were.
    fn assert_absent_from_files(&self, dir: &Path) -> usize {
        let files = walk(dir);
        for entry in &files {
            let bytes = std::fs::read(entry).unwrap();
            self.assert_absent(&bytes, &entry.display().to_string());
        }
        files.len()
    }
}

const PEPPER: &str = "no-storage pepper";

/// The server binary at trace level, with a configured pepper (so that the tag of a room in its
/// log lines can be worked out here).
fn server(data_dir: &Path, extra: &[&str]) -> BinaryServer {
    let mut flags = vec!["--pepper", PEPPER];
    flags.extend_from_slice(extra);
    BinaryServer::start_logging(data_dir, &flags, "trace")
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn nothing_said_reaches_the_embedded_store_files_or_the_logs() {
    let canary = Canary::new();
    let data_dir = tempfile::tempdir().unwrap();
    // The audit trail is on, in the data directory, so the search of its files covers it.
    let trail = data_dir.path().join("audit.log");
    let server = server(data_dir.path(), &["--audit-log", trail.to_str().unwrap()]);
    let app = server.client();
    canary.chat(&app).await;
    // A second, listed room, so the store holds something beside the deleted one.
    app.room_with(json!({ "listed": true, "title": "public" }))
        .await;
    let deadline = std::time::Instant::now() + WAIT;
    while !std::fs::read_to_string(&trail)
        .unwrap_or_default()
        .contains("room_deleted")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the trail holds the deletion"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let trail_text = std::fs::read_to_string(&trail).unwrap();
    for event in ["room_created", "join_accepted", "join_refused", "kick"] {
        assert!(
            trail_text.contains(event),
            "{event} in the trail:\n{trail_text}"
        );
    }
    assert!(
        canary.assert_absent_from_files(data_dir.path()) > 0,
        "the store wrote no file"
    );
    canary
        .assert_absent_from_log(&server, &["created", "deleted"])
        .await;
}

#[tokio::test]
async fn nothing_said_reaches_mongodb_or_the_logs() {
    let canary = Canary::new();
    let mongo = MongoServer::start();
    let data_dir = tempfile::tempdir().unwrap();
    let server = server(
        data_dir.path(),
        &["--mongodb-uri", &mongo.uri, "--mongodb-db", "no_storage"],
    );
    let app = server.client();
    canary.chat(&app).await;
    // Keep one room, so the search below has a document to look through.
    app.room_with(json!({ "room_id": format!("kept{}", rand::random::<u32>()) }))
        .await;

    let client = mongodb::Client::with_uri_str(&mongo.uri).await.unwrap();
    let mut documents = 0;
    for db_name in client.list_database_names().await.unwrap() {
        let db = client.database(&db_name);
        for collection in db.list_collection_names().await.unwrap() {
            let docs: Vec<mongodb::bson::Document> = db
                .collection::<mongodb::bson::Document>(&collection)
                .find(mongodb::bson::doc! {})
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            for doc in docs {
                documents += 1;
                let text = mongodb::bson::Bson::Document(doc)
                    .into_relaxed_extjson()
                    .to_string();
                canary.assert_absent(text.as_bytes(), &format!("{db_name}.{collection}"));
            }
        }
    }
    assert!(documents > 0);
    canary
        .assert_absent_from_log(&server, &["created", "deleted"])
        .await;
    // With MongoDB and a configured pepper, nothing at all is written beside it.
    assert_eq!(canary.assert_absent_from_files(data_dir.path()), 0);
}
