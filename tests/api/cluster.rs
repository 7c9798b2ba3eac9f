//! Cluster mode: two nodes, one real Redis, one MongoDB-protocol store, real WebSocket clients.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_node, spawn_node_with, test_config, MongoServer, RedisServer, TestApp};

/// Two nodes on one store and one Redis, all started for the test.
async fn two_nodes(db: &str) -> (MongoServer, RedisServer, TestApp, TestApp) {
    let mongo = MongoServer::start();
    let redis = RedisServer::start();
    let a = spawn_node(&mongo, &redis, db).await;
    let b = spawn_node(&mongo, &redis, db).await;
    (mongo, redis, a, b)
}

/// A node as its own process, for what only a process shows (kill -9, SIGTERM); its data
/// directory goes with the returned guard.
fn binary_node(
    mongo: &MongoServer,
    redis: &RedisServer,
    db: &str,
) -> (tempfile::TempDir, crate::helpers::BinaryServer) {
    let dir = tempfile::tempdir().unwrap();
    let node = crate::helpers::BinaryServer::start(
        dir.path(),
        &[
            "--mongodb-uri",
            &mongo.uri,
            "--mongodb-db",
            db,
            "--redis-url",
            &redis.url,
            "--pepper",
            "test pepper",
        ],
    );
    (dir, node)
}

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
    let (_mongo, redis, a, b) = two_nodes("cluster_order").await;
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

    alice
        .send_json(
            &json!({ "type": "send", "txn": "CANARY-TXN", "body": { "ct": "CANARY-BODY-B" } }),
        )
        .await;
    assert_eq!(bob.recv_type("message").await["txn"], "CANARY-TXN");
    alice
        .send_json(&json!({ "type": "dm", "to": "bob", "txn": "CANARY-DM-TXN", "body": { "ct": "CANARY-DM" } }))
        .await;
    assert_eq!(bob.recv_type("dm").await["txn"], "CANARY-DM-TXN");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let dump = redis.dump();
    assert!(
        dump.contains("eph:names:"),
        "the dump holds the keys: {dump}"
    );
    assert!(!dump.contains("CANARY"), "{dump}");
    assert!(!dump.contains(&room.id), "{dump}");
    assert!(!dump.contains("alice"), "{dump}");

    // Each node counts the bytes it queued for its own members, whoever said them.
    for node in [&a, &b] {
        let metrics = node.get("/metrics").await.text().await.unwrap();
        let relayed: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("ephemera_bytes_relayed_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(relayed > 12 * 60, "{metrics}");
    }
}

/// Polls `node`'s `/healthz` until its cluster is `state` ("ok" or "down"); false if it never
/// is within 30 s.
async fn cluster_is(node: &TestApp, state: &str) -> bool {
    for _ in 0..300 {
        let health: serde_json::Value = node.get("/healthz").await.json().await.unwrap();
        if health["cluster"] == state {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A member who leaves while its node is cut off from a Redis that keeps its keys (a partition,
/// not a restart) does not keep its name from the other nodes once the partition heals, whether
/// the room stayed live on that node or not; and a node whose reconnection Redis refused
/// (`NOAUTH`, as a Redis still loading answers `LOADING`) still heals by itself.
#[tokio::test]
async fn names_let_go_during_a_partition_are_free_once_it_heals() {
    let (_mongo, redis, a, b) = two_nodes("cluster_partition").await;
    let (room, lone) = (a.room().await, a.room().await);
    let (ann, _) = a.join(&room, "ann").await;
    let (mut carol, _) = a.join(&room, "carol").await;
    let (mut bob, _) = b.join(&room, "bob").await;
    let (zed, _) = a.join(&lone, "zed").await;
    redis.partition();
    assert!(cluster_is(&a, "down").await, "the partition is seen");
    ann.close().await;
    zed.close().await;
    // Longer than the connection managers' reconnect attempts (6, backing off to 2 s), which a
    // command waits through: the releases fail rather than land late.
    tokio::time::sleep(Duration::from_secs(12)).await;
    redis.heal();
    for node in [&a, &b] {
        assert!(cluster_is(node, "ok").await, "the node heals");
    }
    // The node's claims and sweep follow its seeing Redis again: give them a moment.
    for (room, name) in [(&room, "ann"), (&lone, "zed")] {
        let mut last = (0, Vec::new());
        for _ in 0..30 {
            let mut again = b.connect(&room.id).await;
            again
                .send_json(&json!({ "type": "join", "auth": room.auth, "name": name }))
                .await;
            last = again.closed_or_welcome().await;
            if last.0 == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(
            last.0,
            0,
            "{name} is free again: {last:?}; {}",
            redis.dump()
        );
    }
    bob.send_json(&json!({ "type": "send", "txn": "healed", "body": { "n": 1 } }))
        .await;
    assert_eq!(carol.recv_type("message").await["txn"], "healed");
}

/// Without Redis a node goes on relaying between its own members, says so in `/healthz` and
/// the metrics, and refuses joins with `cluster_unavailable`; it heals by itself, even after an
/// outage longer than its connections' reconnect attempts.
#[tokio::test]
async fn a_redis_outage_keeps_each_node_serving_its_own_and_heals() {
    let (_mongo, mut redis, a, b) = two_nodes("cluster_outage").await;
    let room = a.room().await;
    let (mut alice, _) = a.join(&room, "alice").await;
    let (mut carol, _) = a.join(&room, "carol").await;
    let (mut bob, _) = b.join(&room, "bob").await;
    redis.stop();
    let outage = std::time::Instant::now();
    assert!(
        cluster_is(&a, "down").await,
        "healthz says the cluster is down"
    );
    let health: serde_json::Value = a.get("/healthz").await.json().await.unwrap();
    assert_eq!(health["status"], "degraded");
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
        assert!(
            cluster_is(node, "ok").await,
            "the node heals when Redis is back"
        );
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
    // Redis came back empty: the nodes told each other again who they hold, and no one was
    // taken for gone meanwhile.
    alice.send_json(&json!({ "type": "members" })).await;
    let list = alice.recv_type("members").await;
    assert_eq!(list["total"], 4, "{list}");
    let dump = redis.dump();
    assert!(
        dump.contains("eph:names"),
        "the names are claimed again: {dump}"
    );
}

/// Whether `ws`, just joined, knows `name`: from its `welcome`, or from the `members` list the
/// node sends when the other nodes' roster arrives after the welcome.
async fn knows(ws: &mut crate::helpers::Ws, welcome: &serde_json::Value, name: &str) -> bool {
    let listed =
        |list: &serde_json::Value| list.as_array().unwrap().iter().any(|m| m["name"] == name);
    listed(&welcome["members"]) || listed(&ws.recv_type("members").await["members"])
}

/// Presence covers every node: lists, counts and notices; a name taken on one node is taken on
/// the other; DMs reach their recipient on whichever node it is; an admin on one node kicks a
/// member on the other; `max_members` counts the whole room.
#[tokio::test]
async fn presence_dms_and_kicks_cover_both_nodes() {
    let mongo = MongoServer::start();
    let redis = RedisServer::start();
    let (uri, url) = (mongo.uri.clone(), redis.url.clone());
    let node = |max: usize| {
        let (uri, url) = (uri.clone(), url.clone());
        crate::helpers::spawn_app_with(move |c| {
            c.mongodb_uri = Some(uri);
            c.mongodb_db = "cluster_presence".into();
            c.redis_url = Some(url);
            c.max_members = max;
        })
    };
    let a = node(3).await;
    let b = node(3).await;
    let room = a.room().await;
    let key = ephemera_protocol::crypto::DmKeys::generate().public_b64();
    let (mut alice, _) = a
        .join_with(&room, json!({ "name": "alice", "pubkey": key }))
        .await;
    let (mut bob, welcome) = b.join(&room, "bob").await;
    assert!(knows(&mut bob, &welcome, "alice").await, "{welcome}");
    let notice = alice.recv_type("bot").await;
    assert_eq!(
        (notice["event"].as_str(), notice["members"].as_u64()),
        (Some("join"), Some(2)),
        "{notice}"
    );
    assert_eq!(notice["member"]["name"], "bob");
    alice.send_json(&json!({ "type": "members" })).await;
    let list = alice.recv_type("members").await;
    assert_eq!(list["total"], 2, "{list}");

    // A name taken on A is taken on B, whatever its spelling.
    let mut other = b.connect(&room.id).await;
    other
        .send_json(&json!({ "type": "join", "auth": room.auth, "name": "ALICE" }))
        .await;
    other.refused("name_taken", 4409).await;

    // A DM from A to B, and its echo; its seq is the room's.
    alice
        .send_json(&json!({ "type": "dm", "to": "bob", "txn": "d1", "body": { "ct": "x" } }))
        .await;
    let dm = bob.recv_type("dm").await;
    assert_eq!(
        (dm["from"].as_str(), dm["to"].as_str()),
        (Some("alice"), Some("bob"))
    );
    assert_eq!(dm["pubkey"], key.as_str());
    let echo = alice.recv_type("dm").await;
    assert_eq!(echo["seq"], dm["seq"]);
    bob.send_json(&json!({ "type": "send", "txn": "m", "body": { "n": 1 } }))
        .await;
    assert_eq!(
        alice.recv_type("message").await["seq"].as_u64(),
        dm["seq"].as_u64().map(|s| s + 1)
    );

    // The room holds 3: a third member on B fills it, a fourth on A is refused.
    let (mut admin, _) = b.join_admin(&room, "carol").await;
    let mut fourth = a.connect(&room.id).await;
    fourth
        .send_json(&json!({ "type": "join", "auth": room.auth, "name": "dave" }))
        .await;
    fourth.refused("room_full", 4503).await;

    // Carol (admin, on B) removes alice (on A).
    admin
        .send_json(&json!({ "type": "kick", "name": "alice" }))
        .await;
    let (code, frames) = alice.closed().await;
    assert_eq!(code, 4403, "{frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "kicked" && f["by"] == "carol"),
        "{frames:?}"
    );
    let told = bob.recv_type("bot").await;
    let told = if told["event"] == "join" {
        bob.recv_type("bot").await
    } else {
        told
    };
    assert_eq!(
        (told["event"].as_str(), told["name"].as_str()),
        (Some("kick"), Some("alice")),
        "{told}"
    );

    // Her name is free again, on either node.
    let (_alice_again, _) = b.join(&room, "alice").await;
}

/// A room deleted through node B closes its members on node A with 4410 at once, and A lets
/// no one back in, not even with a proof it had accepted before.
#[tokio::test]
async fn a_deletion_on_one_node_closes_the_room_on_every_node() {
    let (_mongo, redis, a, b) = two_nodes("cluster_delete").await;
    let room = a
        .room_with(json!({ "listed": true, "title": "Doomed" }))
        .await;
    let (mut alice, _) = a.join(&room, "alice").await;
    let (mut bob, _) = b.join(&room, "bob").await;
    let started = std::time::Instant::now();
    let response = b
        .delete_room(&room.id, crate::helpers::ADMIN_PASSWORD)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    for ws in [&mut alice, &mut bob] {
        let (code, frames) = ws.closed().await;
        assert_eq!(code, 4410, "{frames:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let mut again = a.connect(&room.id).await;
    again
        .send_json(&json!({ "type": "join", "auth": room.auth, "name": "alice" }))
        .await;
    again.refused("room_not_found", 4404).await;
    let listed: serde_json::Value = a.get("/api/rooms").await.json().await.unwrap();
    assert!(!listed.to_string().contains("Doomed"), "{listed}");
    assert!(
        !redis.dump().contains("eph:names"),
        "the room's keys are gone"
    );
}

/// A node that dies (kill -9): within its heartbeat's lifetime its members leave the others'
/// lists, with notices, and their names are free again.
#[tokio::test]
async fn a_node_that_dies_loses_its_members_within_seconds() {
    let mongo = MongoServer::start();
    let redis = RedisServer::start();
    let a = spawn_node(&mongo, &redis, "cluster_death").await;
    let (_dir, b) = binary_node(&mongo, &redis, "cluster_death");
    let room = a.room().await;
    let (mut alice, _) = a.join(&room, "alice").await;
    let (_bob, _) = b.client().join(&room, "bob").await;
    let joined = alice.recv_type("bot").await;
    assert_eq!(joined["event"], "join", "{joined}");
    b.signal("KILL");
    let killed = std::time::Instant::now();
    let mut told = false;
    loop {
        alice.send_json(&json!({ "type": "members" })).await;
        let total = loop {
            let frame = alice.recv().await;
            if frame["type"] == "bot" && frame["event"] == "leave" && frame["name"] == "bob" {
                told = true;
            }
            if frame["type"] == "members" {
                break frame["total"].as_u64();
            }
        };
        if total == Some(1) && told {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "bob is still listed, or no one was told, {:?} after his node died",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (_bob_again, _) = a.join(&room, "bob").await;
}

/// A member comes back through another node with its `session` token and takes its name back
/// quietly: the old socket, on a node still alive, gets `session_replaced`, and nobody hears a
/// leave or a join. A token is good once: the old one cannot take the name again.
#[tokio::test]
async fn a_member_moves_to_another_node_with_its_session_token() {
    let (_mongo, _redis, a, b) = two_nodes("cluster_move").await;
    let room = a.room().await;
    let (mut alice, _) = a.join(&room, "alice").await;
    let (mut old, welcome) = b.join(&room, "bob").await;
    let token = welcome["session"].as_str().unwrap().to_owned();
    assert_eq!(alice.recv_type("bot").await["event"], "join");

    let mut moved = a.connect(&room.id).await;
    moved
        .send_json(&json!({ "type": "join", "auth": room.auth, "name": "bob", "session": token }))
        .await;
    let again = moved.recv().await;
    assert_eq!(again["type"], "welcome", "{again}");
    assert_eq!(again["member_count"], 2, "{again}");
    old.refused("session_replaced", 4409).await;
    alice.silent_for(Duration::from_millis(500)).await;
    alice.send_json(&json!({ "type": "members" })).await;
    assert_eq!(alice.recv_type("members").await["total"], 2);
    moved
        .send_json(&json!({ "type": "send", "txn": "here", "body": { "n": 1 } }))
        .await;
    assert_eq!(alice.recv_type("message").await["from"], "bob");

    let mut stale = b.connect(&room.id).await;
    stale
        .send_json(&json!({ "type": "join", "auth": room.auth, "name": "bob", "session": token }))
        .await;
    stale.refused("name_taken", 4409).await;
}

/// A node that drains (SIGTERM) takes its heartbeat back: the other nodes drop its members at
/// once instead of when the heartbeat would have lapsed.
#[tokio::test]
async fn a_node_that_drains_lets_its_members_go_at_once() {
    let mongo = MongoServer::start();
    let redis = RedisServer::start();
    let a = spawn_node(&mongo, &redis, "cluster_drain").await;
    let (_dir, mut b) = binary_node(&mongo, &redis, "cluster_drain");
    let room = a.room().await;
    let (mut alice, _) = a.join(&room, "alice").await;
    let (_bob, _) = b.client().join(&room, "bob").await;
    assert_eq!(alice.recv_type("bot").await["event"], "join");
    b.signal("TERM");
    assert!(b.exited(Duration::from_secs(10)).await.is_some());
    let left = alice.recv_type("bot").await;
    assert_eq!(
        (left["event"].as_str(), left["name"].as_str()),
        (Some("leave"), Some("bob")),
        "{left}"
    );
}

/// The failed joins a room allows hold for the whole cluster: guesses spread over the nodes are
/// counted together, and the one past the limit is refused before any work.
#[tokio::test]
async fn failed_joins_into_a_room_are_counted_across_nodes() {
    let mongo = MongoServer::start();
    let redis = RedisServer::start();
    let (uri, url) = (mongo.uri.clone(), redis.url.clone());
    let node = || {
        let (uri, url) = (uri.clone(), url.clone());
        crate::helpers::spawn_app_with(move |c| {
            c.mongodb_uri = Some(uri);
            c.mongodb_db = "cluster_failures".into();
            c.redis_url = Some(url);
            c.join_failures_per_room = 3;
        })
    };
    let (a, b) = (node().await, node().await);
    let room = a.room().await;
    let guess = |app: &crate::helpers::TestApp| {
        let (client, id) = (app.client.clone(), room.id.clone());
        async move {
            let mut ws = client.connect(&id).await;
            ws.send_json(
                &json!({ "type": "join", "auth": crate::helpers::random_auth(), "name": "eve" }),
            )
            .await;
            ws.closed().await
        }
    };
    for app in [&a, &a, &b] {
        let (code, frames) = guess(app).await;
        assert_eq!(code, 4401, "{frames:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (code, frames) = guess(&b).await;
    assert_eq!(
        code, 4429,
        "the fourth guess, the first on B past the cluster's 3: {frames:?}"
    );
    let error = frames.iter().find(|f| f["type"] == "error").unwrap();
    assert_eq!(error["code"], "rate_limited");
    assert!(error["retry_after_ms"].as_u64().unwrap() > 0, "{error}");
}

/// A deletion said while Redis was away does not reach the other nodes: when Redis is back they
/// check their live rooms against the store, and close a deleted one with 4410.
#[tokio::test]
async fn a_deletion_missed_during_an_outage_is_caught_up_when_redis_returns() {
    let (_mongo, mut redis, a, b) = two_nodes("cluster_missed").await;
    let room = a.room().await;
    let (mut alice, _) = a.join(&room, "alice").await;
    let (mut bob, _) = b.join(&room, "bob").await;
    redis.stop();
    let response = b
        .delete_room(&room.id, crate::helpers::ADMIN_PASSWORD)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(bob.closed().await.0, 4410);
    assert!(cluster_is(&a, "down").await);
    let _redis = RedisServer::start_at(redis.port);
    let (code, frames) = alice.closed().await;
    assert_eq!(code, 4410, "{frames:?}");
}

/// The next bot notice of `event` that `ws` gets (others, such as join notices, pass by).
async fn notice(ws: &mut crate::helpers::Ws, event: &str) -> serde_json::Value {
    loop {
        let bot = ws.recv_type("bot").await;
        if bot["event"] == event {
            return bot;
        }
    }
}

/// A lock said on one node holds on every node, a node where the room is not live yet included
/// (the lock is in Redis, where every node's claims see it); an admin on one node makes a member
/// of the other an admin, who can then unlock the room from there.
#[tokio::test]
async fn a_lock_and_a_new_admin_cover_both_nodes() {
    let (_mongo, _redis, a, b) = two_nodes("cluster_lock").await;
    let room = a.room().await;
    let (mut ann, _) = a.join_admin(&room, "ann").await;
    ann.send_json(&json!({ "type": "lock" })).await;
    notice(&mut ann, "lock").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut early = b.connect(&room.id).await;
    early
        .send_json(&json!({ "type": "join", "name": "eve", "auth": room.auth }))
        .await;
    early.refused("room_locked", 4423).await;
    let (_dee, _) = b
        .join_with(
            &room,
            json!({ "name": "dee", "admin_password": crate::helpers::ADMIN_PASSWORD }),
        )
        .await;
    ann.send_json(&json!({ "type": "unlock" })).await;
    notice(&mut ann, "unlock").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut bo, _) = b.join(&room, "bo").await;
    ann.send_json(&json!({ "type": "lock" })).await;
    assert_eq!(notice(&mut bo, "lock").await["name"], "ann");
    let mut cy = b.connect(&room.id).await;
    cy.send_json(&json!({ "type": "join", "name": "cy", "auth": room.auth }))
        .await;
    cy.refused("room_locked", 4423).await;

    ann.send_json(&json!({ "type": "make_admin", "name": "bo" }))
        .await;
    for ws in [&mut ann, &mut bo] {
        let made = notice(ws, "admin").await;
        assert_eq!(made["member"]["name"], "bo");
        assert_eq!(made["member"]["admin"], true);
    }
    bo.send_json(&json!({ "type": "unlock" })).await;
    assert_eq!(notice(&mut ann, "unlock").await["name"], "bo");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_cy, welcome) = a.join(&room, "cy").await;
    assert_eq!(welcome["locked"], false);
}

/// A room that vanishes when empty stays while a member is in it on any node, and goes once the
/// last one, on whichever node, has left.
#[tokio::test]
async fn a_room_that_vanishes_when_empty_counts_every_node() {
    let mongo = MongoServer::start();
    let redis = RedisServer::start();
    let quick = |c: &mut ephemera::config::Config| {
        c.empty_room_grace_secs = 1;
        c.leave_grace_secs = 0;
    };
    let a = spawn_node_with(&mongo, &redis, "cluster_vanish", quick).await;
    let b = spawn_node_with(&mongo, &redis, "cluster_vanish", quick).await;
    let room = a.room_with(json!({ "lifetime": "empty" })).await;
    let (ann, _) = a.join(&room, "ann").await;
    let (bo, _) = b.join(&room, "bo").await;
    ann.close().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // bo is still in it on B: the room stayed, and A takes a join again.
    let (cy, _) = a.join(&room, "cy").await;
    cy.close().await;
    bo.close().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut late = b.connect(&room.id).await;
    late.send_json(&json!({ "type": "join", "name": "dee", "auth": room.auth }))
        .await;
    late.refused("room_not_found", 4404).await;
}
