//! Cluster mode: several nodes behind one address share their rooms through Redis, the engine
//! Centrifugo and Socket.IO's adapter use, rather than a mesh of our own. Only pub/sub carries
//! what members say; the one key a room has is its `seq` counter, with a TTL (docs/cluster.md).
//!
//! Each node subscribes to the channel of every room live on it. A message is published by a
//! Lua script that takes the room's next `seq` and publishes in one step, so publish order is
//! `seq` order, and every node (the sender's too) delivers it when it comes back from Redis:
//! members on every node see one sequence in one order. Without Redis, a node goes on serving
//! its own members with its own `seq` (reported as degraded) and refuses joins, which would
//! need the cluster's view, until Redis answers again.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Weak,
    },
    time::Duration,
};

use dashmap::DashMap;
use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Msg, PushKind, Script,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use crate::hub::{MemberId, Room};

/// How long a room's `seq` counter outlives the room's last message: a room quiet for longer
/// starts again at 1, as a room made live anew does on one node.
const SEQ_TTL_SECS: u64 = 7 * 24 * 3600;

/// How often a node checks that Redis answers.
const PING_EVERY: Duration = Duration::from_secs(1);

/// Takes the room's next `seq` and publishes `"{seq} {event}"` on its channel, atomically:
/// Redis runs scripts one at a time, so publish order is `seq` order. `ARGV[3]` is the next
/// `seq` the sending node expects: a Redis that restarted empty, or a node that counted on by
/// itself through an outage, does not make the room's numbers go back.
const PUBLISH_SEQUENCED: &str = r"
local seq = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[3])
if seq < floor then
  seq = floor
  redis.call('SET', KEYS[1], seq)
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], seq .. ' ' .. ARGV[1])
return seq
";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What crosses a room's channel. Names and bodies travel as the member gave them (bodies are
/// ciphertext); `member` is the sender's cluster-wide identity, for `unsend`. Externally tagged
/// (`{"message":{…}}`): an internally tagged enum buffers its fields, and a body could then not
/// be borrowed as the bytes it came in.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event<'a> {
    Message {
        member: u64,
        #[serde(borrow)]
        from: &'a str,
        #[serde(borrow)]
        txn: &'a str,
        #[serde(borrow)]
        body: &'a RawValue,
        ts: i64,
    },
    Typing {
        member: u64,
        #[serde(borrow)]
        from: &'a str,
        active: bool,
    },
    Read {
        member: u64,
        #[serde(borrow)]
        from: &'a str,
        seq: u64,
    },
    Unsent {
        seq: u64,
        #[serde(borrow)]
        by: &'a str,
    },
}

enum Subscription {
    Subscribe(String, oneshot::Sender<Result<(), ClusterError>>),
    Unsubscribe(String),
}

pub struct Cluster {
    commands: ConnectionManager,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    /// The rooms live on this node, by their tag (the room hash the store keys them by).
    rooms: DashMap<String, Weak<Room>>,
    up: AtomicBool,
    up_gauge: prometheus::IntGauge,
    publish: Script,
}

impl Cluster {
    /// Connects to Redis (failing if it does not answer now: a node should not start into an
    /// outage unnoticed) and starts the tasks that keep the subscriptions, deliver what comes
    /// in and watch the connection.
    pub async fn connect(
        url: &str,
        up_gauge: prometheus::IntGauge,
    ) -> Result<Arc<Self>, ClusterError> {
        let client = redis::Client::open(with_resp3(url))?;
        let settings = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_max_delay(Duration::from_secs(2))
        };
        let commands = client
            .get_connection_manager_with_config(settings())
            .await?;
        let (pushes, incoming) = mpsc::unbounded_channel();
        let subscriber = client
            .get_connection_manager_with_config(
                settings()
                    .set_push_sender(pushes)
                    .set_automatic_resubscription(),
            )
            .await?;
        let (subscriptions, requests) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            commands,
            subscriptions,
            rooms: DashMap::new(),
            up: AtomicBool::new(true),
            up_gauge,
            publish: Script::new(PUBLISH_SEQUENCED),
        });
        cluster.up_gauge.set(1);
        tokio::spawn(watch(Arc::downgrade(&cluster), subscriber.clone()));
        tokio::spawn(keep_subscriptions(
            Arc::downgrade(&cluster),
            subscriber,
            requests,
        ));
        tokio::spawn(receive(Arc::downgrade(&cluster), incoming));
        Ok(cluster)
    }

    /// Whether Redis answered the last time it was asked.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.up_gauge.set(i64::from(up));
            if up {
                log::info!("cluster: redis answers again");
            } else {
                log::warn!("cluster: redis does not answer; serving this node's members only");
            }
        }
    }

    /// Subscribes this node to a room's channel before a member joins it here, so that nothing
    /// said on another node after the join is missed.
    pub async fn subscribe(&self, tag: &str) -> Result<(), ClusterError> {
        let (done, result) = oneshot::channel();
        if self
            .subscriptions
            .send(Subscription::Subscribe(channel(tag), done))
            .is_err()
        {
            return Ok(());
        }
        result.await.unwrap_or(Ok(()))
    }

    /// A room went live on this node.
    pub fn register(&self, room: &Arc<Room>) {
        self.rooms
            .insert(room.record.id_hash.clone(), Arc::downgrade(room));
    }

    /// A room left this node's hub: its channel is let go unless the room is live again.
    pub fn release(&self, room: &Room) {
        let tag = &room.record.id_hash;
        let removed = self
            .rooms
            .remove_if(tag, |_, live| std::ptr::eq(live.as_ptr(), room))
            .is_some();
        if removed {
            let _ = self
                .subscriptions
                .send(Subscription::Unsubscribe(channel(tag)));
        }
    }

    /// Publishes a room message with the room's next `seq`; every node delivers it when it
    /// comes back. `Err` when Redis does not answer: the caller relays it on this node alone.
    pub async fn send(
        &self,
        room: &Room,
        member: MemberId,
        from: &str,
        txn: &str,
        body: &RawValue,
    ) -> Result<(), ClusterError> {
        let event = Event::Message {
            member: member.0,
            from,
            txn,
            body,
            ts: crate::protocol::now_ms(),
        };
        self.publish_sequenced(room, &event).await
    }

    async fn publish_sequenced(&self, room: &Room, event: &Event<'_>) -> Result<(), ClusterError> {
        let tag = &room.record.id_hash;
        let result = self
            .publish
            .key(seq_key(tag))
            .key(channel(tag))
            .arg(encode(event))
            .arg(SEQ_TTL_SECS)
            .arg(room.next_seq())
            .invoke_async::<u64>(&mut self.commands.clone())
            .await;
        self.checked(result).map(drop)
    }

    /// Publishes what needs no `seq` (typing, read, unsend), for every node to deliver.
    pub async fn publish(&self, room: &Room, event: &Event<'_>) -> Result<(), ClusterError> {
        let payload = format!("0 {}", encode(event));
        let result = redis::cmd("PUBLISH")
            .arg(channel(&room.record.id_hash))
            .arg(payload)
            .query_async::<i64>(&mut self.commands.clone())
            .await;
        self.checked(result).map(drop)
    }

    fn checked<T>(&self, result: redis::RedisResult<T>) -> Result<T, ClusterError> {
        if result.is_err() {
            self.set_up(false);
        }
        Ok(result?)
    }

    /// One message from a room's channel: to the room live here, if it still is.
    fn deliver(&self, message: &Msg) {
        let Some(tag) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
            return;
        };
        let Some(room) = self.rooms.get(tag).and_then(|r| r.upgrade()) else {
            return;
        };
        let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) else {
            return;
        };
        let Some((seq, event)) = text.split_once(' ') else {
            return;
        };
        let (Ok(seq), Ok(event)) = (seq.parse::<u64>(), serde_json::from_str::<Event>(event))
        else {
            log::warn!("cluster: an event on a room channel that this version cannot read");
            return;
        };
        room.apply(seq, &event);
    }
}

/// Keeps the subscriber connection's channels in step with the rooms live here, one request at
/// a time, so that a room let go and made live again ends subscribed.
async fn keep_subscriptions(
    cluster: Weak<Cluster>,
    mut subscriber: ConnectionManager,
    mut requests: mpsc::UnboundedReceiver<Subscription>,
) {
    while let Some(request) = requests.recv().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        match request {
            Subscription::Subscribe(channel, done) => {
                let result = subscriber.subscribe(&channel).await;
                let _ = done.send(cluster.checked(result));
            }
            Subscription::Unsubscribe(channel) => {
                let tag = channel.strip_prefix(CHANNEL_PREFIX).unwrap_or_default();
                if !cluster.rooms.contains_key(tag) {
                    let _ = cluster.checked(subscriber.unsubscribe(&channel).await);
                }
            }
        }
    }
}

async fn receive(cluster: Weak<Cluster>, mut incoming: mpsc::UnboundedReceiver<redis::PushInfo>) {
    while let Some(push) = incoming.recv().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        match push.kind {
            PushKind::Disconnection => cluster.set_up(false),
            PushKind::Message => {
                if let Some(message) = Msg::from_push_info(push) {
                    cluster.deliver(&message);
                }
            }
            _ => {}
        }
    }
}

/// Asks Redis every second, on both connections, whether it answers. A connection manager
/// reconnects when a command on it fails, and gives up after a few tries until the next one
/// fails: without these pings the subscriber, which sends nothing while its rooms stay the
/// same, would stay deaf after a long outage.
async fn watch(cluster: Weak<Cluster>, mut subscriber: ConnectionManager) {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let ping = redis::cmd("PING");
        let commands = ping
            .query_async::<String>(&mut cluster.commands.clone())
            .await;
        let pubsub = ping.query_async::<redis::Value>(&mut subscriber).await;
        cluster.set_up(commands.is_ok() && pubsub.is_ok());
    }
}

const CHANNEL_PREFIX: &str = "eph:room:";

fn channel(tag: &str) -> String {
    format!("{CHANNEL_PREFIX}{tag}")
}

fn seq_key(tag: &str) -> String {
    format!("eph:seq:{tag}")
}

fn encode(event: &Event<'_>) -> String {
    // unwrap: an event holds strings, numbers, booleans and already-valid JSON.
    #[allow(clippy::unwrap_used)]
    serde_json::to_string(event).unwrap()
}

/// Pub/sub messages arrive as RESP3 pushes on the subscriber's connection, which is what lets
/// the connection manager resubscribe by itself after a reconnect.
fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}
