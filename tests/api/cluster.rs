//! Cluster mode: two nodes, one real Redis, one MongoDB-protocol store, real WebSocket clients.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_node, test_config, MongoServer, RedisServer};

/// The embedded store belongs to one node: a node told to join a cluster without MongoDB
/// refuses to start, and says why.
#[tokio::test]
async fn a_node_without_mongodb_refuses_cluster_mode() {
    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(data.path());
    config.redis_url = Some("redis://127.0.0.1:1".into());
    let error = ephemera::Application::build(config).await.err().unwrap();
    assert!(error.to_string().contains("MONGODB_URI"), "{error}");
}

/// Messages said on either node reach the members of both, once each, with one `seq` sequence
/// in one order; typing, read marks and an unsend cross too, and nothing said is kept in Redis.
#[tokio::test]
async fn two_nodes_share_a_room_in_one_order() {
    let mongo = MongoServer::start();
    let redis = RedisServer::start();
    let a = spawn_node(&mongo, &redis, "cluster_order").await;
    let b = spawn_node(&mongo, &redis, "cluster_order").await;
    let health: serde_json::Value = b.get("/healthz").await.json().await.unwrap();
    assert_eq!(health["cluster"], "ok", "{health}");

    let room = a.room().await;
    let (mut alice, _) = a.join(&room, "alice").await;
    let (mut bob, _) = b.join(&room, "bob").await;
    for i in 0..5 {
        alice
            .send_json(&json!({ "type": "send", "txn": format!("a{i}"), "body": { "canary": "CANARY-BODY-A" } }))
            .await;
        bob.send_json(&json!({ "type": "send", "txn": format!("b{i}"), "body": { "n": i } }))
            .await;
    }
    let mut seen = Vec::new();
    for ws in [&mut alice, &mut bob] {
        let mut order = Vec::new();
        while order.len() < 10 {
            let frame = ws.recv_type("message").await;
            order.push((
                frame["seq"].as_u64().unwrap(),
                frame["txn"].as_str().unwrap().to_owned(),
            ));
        }
        seen.push(order);
    }
    assert_eq!(seen[0], seen[1], "one order on both nodes");
    let seqs: Vec<u64> = seen[0].iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (seqs[0]..seqs[0] + 10).collect::<Vec<_>>(),
        "one seq sequence"
    );

    bob.send_json(&json!({ "type": "typing", "active": true }))
        .await;
    let typing = alice.recv_type("typing").await;
    assert_eq!(typing["from"], "bob");
    alice
        .send_json(&json!({ "type": "read", "seq": seqs[9] }))
        .await;
    assert_eq!(bob.recv_type("read").await["from"], "alice");

    // Alice (on A) takes back her first message: bob (on B) hears it; bob may not take back hers.
    let first_of_alice = seen[0].iter().find(|(_, t)| t == "a0").unwrap().0;
    bob.send_json(&json!({ "type": "unsend", "seq": first_of_alice }))
        .await;
    assert_eq!(bob.recv_type("error").await["code"], "forbidden");
    alice
        .send_json(&json!({ "type": "unsend", "seq": first_of_alice }))
        .await;
    for ws in [&mut alice, &mut bob] {
        let unsent = ws.recv_type("unsent").await;
        assert_eq!(unsent["seq"], first_of_alice);
        assert_eq!(unsent["by"], "alice");
    }

    tokio::time::sleep(Duration::from_millis(100)).await;
    let dump = redis.dump();
    assert!(!dump.contains("CANARY"), "{dump}");
    assert!(!dump.contains(&room.id), "{dump}");
    assert!(!dump.contains("alice"), "{dump}");
}

/// Without Redis a node goes on relaying between its own members, says so in `/healthz` and
/// the metrics, and refuses joins with `cluster_unavailable`; it heals by itself, even after an
/// outage longer than its connections' reconnect attempts.
#[tokio::test]
async fn a_redis_outage_keeps_each_node_serving_its_own_and_heals() {
    let mongo = MongoServer::start();
    let mut redis = RedisServer::start();
    let a = spawn_node(&mongo, &redis, "cluster_outage").await;
    let b = spawn_node(&mongo, &redis, "cluster_outage").await;
    let room = a.room().await;
    let (mut alice, _) = a.join(&room, "alice").await;
    let (mut carol, _) = a.join(&room, "carol").await;
    let (mut bob, _) = b.join(&room, "bob").await;
    redis.stop();
    let outage = std::time::Instant::now();
    let mut degraded = false;
    for _ in 0..50 {
        let health: serde_json::Value = a.get("/healthz").await.json().await.unwrap();
        if health["cluster"] == "down" {
            assert_eq!(health["status"], "degraded");
            degraded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(degraded, "healthz says the cluster is down");
    let metrics = a.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("ephemera_cluster_up 0"), "{metrics}");

    alice
        .send_json(&json!({ "type": "send", "txn": "t", "body": { "n": 1 } }))
        .await;
    let during = carol.recv_type("message").await;
    assert_eq!(during["txn"], "t");
    let mut dave = a.connect(&room.id).await;
    dave.send_json(&json!({ "type": "join", "auth": room.auth, "name": "dave" }))
        .await;
    dave.refused("cluster_unavailable", 1011).await;

    // Longer than the connection managers' reconnect attempts (6, backing off to 2 s).
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(outage.elapsed())).await;
    let _redis = RedisServer::start_at(redis.port);
    for node in [&a, &b] {
        let mut healed = false;
        for _ in 0..100 {
            let health: serde_json::Value = node.get("/healthz").await.json().await.unwrap();
            if health["cluster"] == "ok" {
                healed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(healed, "the node heals when Redis is back");
    }
    let (_dave, _) = a.join(&room, "dave").await;
    alice
        .send_json(&json!({ "type": "send", "txn": "after", "body": { "n": 2 } }))
        .await;
    let after = carol.recv_type("message").await;
    assert_eq!(after["txn"], "after");
    assert!(
        after["seq"].as_u64() > during["seq"].as_u64(),
        "a Redis that restarted empty does not make the numbers go back: {during} {after}"
    );
    assert_eq!(bob.recv_type("message").await["txn"], "after");
    bob.send_json(&json!({ "type": "send", "txn": "from b", "body": { "n": 3 } }))
        .await;
    for txn in ["t", "after", "from b"] {
        assert_eq!(alice.recv_type("message").await["txn"], txn);
    }
}
