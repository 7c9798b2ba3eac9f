//! The process meets the faults of a real machine: killed with no warning in the middle of work.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;

/// `kill -9` during a burst of room creations, then a restart on the same data: the store opens,
/// and every room whose creation was answered 201 is there (a second creation of its ID is 409).
#[tokio::test]
async fn rooms_answered_201_survive_a_kill_9_in_a_burst_of_creations() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--creates-per-ip", "0", "--hashes-per-address", "100"];
    let server = BinaryServer::start(dir.path(), &flags);
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.base);
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    // Sixteen creators at a time, each creating room after room (a burst the hashing queue takes
    // without refusing any).
    let creations: Vec<_> = (0..16)
        .map(|creator| {
            let (http, base, answered) = (http.clone(), base.clone(), answered.clone());
            tokio::spawn(async move {
                for i in 0..25 {
                    let room_id = format!("burst-{creator}-{i}");
                    let sent = http
                        .post(format!("{base}/api/rooms"))
                        .json(&json!({ "room_id": room_id, "auth": random_auth(), "admin_password": ADMIN_PASSWORD }))
                        .send()
                        .await;
                    match sent {
                        Ok(response) if response.status() == 201 => {
                            answered.lock().unwrap().push(room_id)
                        }
                        Ok(response) => assert_eq!(response.status(), 201),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Kill it while the burst is under way.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while answered.lock().unwrap().len() < 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "no creations answered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.signal("KILL");
    for creation in creations {
        let _ = creation.await;
    }
    drop(server);
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() < 400, "the kill came after the burst");

    let server = BinaryServer::start(dir.path(), &flags);
    let base = format!("http://{}", server.base);
    for room_id in &answered {
        let again = http
            .post(format!("{base}/api/rooms"))
            .json(&json!({ "room_id": room_id, "auth": random_auth(), "admin_password": ADMIN_PASSWORD }))
            .send()
            .await
            .unwrap();
        let status = again.status();
        let body: Value = again.json().await.unwrap();
        assert_eq!(
            status, 409,
            "{room_id} was answered 201 and is gone: {body}"
        );
    }
    assert!(!server.stderr().contains("panicked"));
}
