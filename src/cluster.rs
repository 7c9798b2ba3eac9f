//! Cluster mode: several nodes behind one address share their rooms through Redis, the engine
//! Centrifugo and Socket.IO's adapter use, rather than a mesh of our own. Only pub/sub carries
//! what members say (docs/cluster.md says what crosses Redis, and which keys it keeps).
//!
//! Each node subscribes to the channel of every room live on it. A message is published by a
//! Lua script that takes the room's next `seq` and publishes in one step, so publish order is
//! `seq` order, and every node (the sender's too) delivers it when it comes back from Redis:
//! members on every node see one sequence in one order. Without Redis, a node goes on serving
//! its own members with its own `seq` (reported as degraded) and refuses joins, which would
//! need the cluster's view, until Redis answers again. Keys hold counters and keyed hashes
//! only, each with a TTL.

use std::{
    borrow::Cow,
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

use crate::{
    credentials::Pepper,
    domain::{MemberName, RoomId, SessionToken},
    hub::{MemberId, Room},
    protocol::{ErrorCode, Refusal},
};

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

/// Claims a member's name in a room, across the cluster. A claim is `node:session` (`session`
/// the keyed digest of the holder's token). The answer: `mine` (a member of the caller's node
/// holds it: the room there decides), `moved` (another node's member, and the caller shows its
/// token: the name moves to the caller), `taken` (a member of a live node holds it), `full`
/// (`ARGV[4]` members already, 0 for no cap), `locked` (an admin locked the room, `KEYS[2]`, and
/// this is a new member who is no admin, `ARGV[8]`) or `new`. A name held by a node whose
/// heartbeat key is gone is free.
const CLAIM: &str = r"
local held = redis.call('HGET', KEYS[1], ARGV[1])
local owner, session
if held then
  owner, session = string.match(held, '^([^:]*):(.*)$')
end
if owner == ARGV[2] then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 'mine'
end
local answer = 'new'
if owner and redis.call('EXISTS', ARGV[6] .. owner) == 1 then
  if ARGV[7] == '' or session ~= ARGV[7] then
    return 'taken'
  end
  answer = 'moved'
end
if answer == 'new' and ARGV[8] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then
  return 'locked'
end
local max = tonumber(ARGV[4])
if not held and max > 0 and redis.call('HLEN', KEYS[1]) >= max then
  return 'full'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return answer
";

/// Counts a failed join, in a window that starts with the first failure (a script rather than
/// `EXPIRE NX`, which Redis 6 does not have).
const COUNT_FAILURE: &str = r"
local failed = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return failed
";

/// Raises a room's counter to at least `ARGV[1]`: after an outage a node that numbered on by
/// itself does not let the room's numbers go back.
const RAISE_SEQ: &str = r"
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if now < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 0
";

/// Lets a name go (`ARGV[3]` empty), or gives it the holder's new session digest, if the
/// caller's node still holds it.
const RELEASE: &str = r"
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and string.match(held, '^([^:]*)') == ARGV[2] then
  if ARGV[3] == '' then
    redis.call('HDEL', KEYS[1], ARGV[1])
  else
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
  end
end
return 0
";

/// Drops a claim if it is still exactly `ARGV[2]` (the sweep after an outage: a claim taken
/// again between reading and dropping stays).
const DROP_IF_SAME: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
";

/// How many members' claims go in one pipeline after an outage.
const CLAIMS_PER_PIPELINE: usize = 1000;

/// How long the claims on a room's names outlive the last claim or heartbeat that renewed them.
const NAMES_TTL_SECS: u64 = 3600;

/// A node's heartbeat key lives this long; renewed every second, so a node that died is seen
/// as gone (its names free, its members dropped) within this.
const NODE_TTL_SECS: u64 = 10;

/// How many events a room's channel may bring before the room goes live on this node (a
/// roster, a message or two while the first member's join is checked).
const PENDING_MAX: usize = 64;

/// How often, in heartbeats, a node renews the claims of the rooms live on it.
const RENEW_NAMES_EVERY: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl ClusterError {
    /// No answer in time: the command may have run all the same (a message published), so
    /// relaying it again on this node alone could deliver it twice.
    pub fn may_have_run(&self) -> bool {
        match self {
            Self::Redis(e) => e.is_timeout(),
        }
    }
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
        from: Cow<'a, str>,
        #[serde(borrow)]
        txn: Cow<'a, str>,
        #[serde(borrow)]
        body: &'a RawValue,
        ts: i64,
    },
    /// A direct message: every node remembers its `seq`; the nodes of its two parties deliver.
    Dm {
        member: u64,
        #[serde(borrow)]
        from: Cow<'a, str>,
        to_member: u64,
        #[serde(borrow)]
        to: Cow<'a, str>,
        #[serde(borrow)]
        txn: Cow<'a, str>,
        #[serde(borrow)]
        body: &'a RawValue,
        #[serde(borrow)]
        pubkey: Option<Cow<'a, str>>,
        ts: i64,
    },
    Typing {
        member: u64,
        #[serde(borrow)]
        from: Cow<'a, str>,
        active: bool,
    },
    Read {
        member: u64,
        #[serde(borrow)]
        from: Cow<'a, str>,
        seq: u64,
    },
    Unsent {
        seq: u64,
        #[serde(borrow)]
        by: Cow<'a, str>,
        /// The message's author, as the node that checked the unsend remembers it.
        author: u64,
    },
    /// A member joined (or came back) on `node`; `moved` when it showed its `session` token
    /// to take its name from another node.
    Joined {
        node: u64,
        #[serde(borrow)]
        peer: Peer<'a>,
        #[serde(default)]
        moved: bool,
    },
    /// A member on `node` left, or was kicked by `kicked_by`.
    Left {
        node: u64,
        member: u64,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow)]
        kicked_by: Option<Cow<'a, str>>,
    },
    /// The room went live on `node`: the others answer with their members.
    Hello { node: u64 },
    Roster {
        node: u64,
        #[serde(borrow)]
        members: Vec<Peer<'a>>,
    },
    /// An admin on `node` locked or unlocked the room.
    Locked {
        node: u64,
        locked: bool,
        #[serde(borrow)]
        by: Cow<'a, str>,
    },
    /// An admin on another node makes `name`, whose node is `node`, an admin.
    Promote {
        node: u64,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow)]
        by: Cow<'a, str>,
    },
    /// `name`, a member of `node`, is an admin now.
    Promoted {
        node: u64,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow)]
        by: Cow<'a, str>,
    },
    /// An admin on another node removes `name`, whose node is `node`.
    Kick {
        node: u64,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow)]
        by: Cow<'a, str>,
    },
}

/// A member as the nodes tell each other.
#[derive(Debug, Serialize, Deserialize)]
pub struct Peer<'a> {
    pub member: u64,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    pub admin: bool,
    #[serde(borrow)]
    pub pubkey: Option<Cow<'a, str>>,
}

/// What the cluster's control channel carries.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Control {
    /// A room was deleted (by `node`): every node tears it down and forgets its proofs.
    Deleted {
        node: u64,
        #[serde(flatten)]
        room: Deleted,
    },
}

/// A room another node deleted, or (`check`) one whose deletion this node may have missed.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deleted {
    pub tag: String,
    /// The room's ID when it is listed (and so public), for the lobby.
    pub listed: Option<String>,
    /// Back from an outage, when a deletion's news may have been lost: the room goes only if
    /// the store no longer has its record.
    #[serde(skip)]
    pub check: bool,
}

/// A node's answer to a claim on a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The name is this join's now.
    New,
    /// Another node's member held it, and this join showed its `session` token: it moves here.
    Moved,
    /// A member on this node holds it: the room decides (a resume, or `name_taken`).
    Mine,
    Taken,
    Full,
    /// The room is locked, and the join is a new member's who is no admin.
    Locked,
}

/// Work for Redis that must go out in the order it was asked for, from code that cannot wait.
enum Outgoing {
    /// An admin locked (or unlocked) the room: the claim script refuses new members meanwhile.
    Lock {
        tag: String,
        locked: bool,
    },
    Publish {
        channel: String,
        payload: String,
    },
    /// A failed join into the room `tag`, counted for the whole cluster.
    Failure {
        tag: String,
    },
    /// A claim goes (`session` empty) or takes a new session digest, if `node` still holds it.
    Release {
        tag: String,
        field: String,
        node: u64,
        session: String,
    },
}

enum Subscription {
    Subscribe(String, oneshot::Sender<Result<(), ClusterError>>),
    Unsubscribe(String),
    /// Back after an outage: every channel again, in one `SUBSCRIBE` (the subscriber may have
    /// been made anew, or have missed some), answered when done.
    Renew(oneshot::Sender<Result<(), ClusterError>>),
}

/// The node's two connections to Redis: one for commands, one that receives what is published.
#[derive(Clone)]
struct Connections {
    commands: ConnectionManager,
    subscriber: ConnectionManager,
}

impl Connections {
    async fn open(
        client: &redis::Client,
        pushes: mpsc::UnboundedSender<redis::PushInfo>,
    ) -> redis::RedisResult<Self> {
        let settings = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_max_delay(Duration::from_secs(2))
        };
        let commands = client
            .get_connection_manager_with_config(settings())
            .await?;
        let subscriber = client
            .get_connection_manager_with_config(
                settings()
                    .set_push_sender(pushes)
                    .set_automatic_resubscription(),
            )
            .await?;
        Ok(Self {
            commands,
            subscriber,
        })
    }
}

pub struct Cluster {
    /// This node, for the others: random at each start.
    node: u64,
    pepper: Pepper,
    client: redis::Client,
    /// Where the subscriber's pushes go, for a subscriber made anew.
    pushes: mpsc::UnboundedSender<redis::PushInfo>,
    connections: std::sync::RwLock<Connections>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    deletions: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Deleted>>>,
    deleted: mpsc::UnboundedSender<Deleted>,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    /// The rooms live on this node, by their tag (the room hash the store keys them by).
    rooms: DashMap<String, Weak<Room>>,
    /// What came for a room between this node's subscribing to it and the room's going live
    /// here (the other nodes' roster, above all), kept in order for the room; see
    /// [`Cluster::deliver`].
    pending: DashMap<String, Vec<String>>,
    registered: mpsc::UnboundedSender<String>,
    up: AtomicBool,
    /// Set when the node drains: its heartbeat stops.
    stopping: AtomicBool,
    /// Held while a heartbeat is sent, so that [`Cluster::stop`] takes the heartbeat back after
    /// the last one has landed rather than before it.
    beating: tokio::sync::Mutex<()>,
    /// Joins hold it shared from their claim until their member is in the room; a sweep holds it
    /// alone from reading the claims to dropping the stale ones, so that it never takes a
    /// claim just made for a member not yet in the room for a stale one.
    claims_gate: tokio::sync::RwLock<()>,
    /// Rooms where a release of this node's may not have reached Redis (it was down): a claim
    /// there may outlive its member and keep the name from the other nodes. Swept on heal.
    unswept: std::sync::Mutex<std::collections::HashSet<String>>,
    up_gauge: prometheus::IntGauge,
    /// The members here are counted as recipients of what other nodes' members say too.
    bytes_relayed: prometheus::IntCounter,
    publish: Script,
    claim: Script,
}

impl Cluster {
    /// Connects to Redis (failing if it does not answer now: a node should not start into an
    /// outage unnoticed) and starts the tasks that keep the subscriptions, deliver what comes
    /// in and watch the connection.
    pub async fn connect(
        url: &str,
        pepper: Pepper,
        metrics: &crate::telemetry::Metrics,
    ) -> Result<Arc<Self>, ClusterError> {
        let client = redis::Client::open(with_resp3(url))?;
        let (pushes, incoming) = mpsc::unbounded_channel();
        let connections = Connections::open(&client, pushes.clone()).await?;
        let (subscriptions, requests) = mpsc::unbounded_channel();
        let (outgoing, to_send) = mpsc::unbounded_channel();
        let (deleted, deletions) = mpsc::unbounded_channel();
        let (registered, registrations) = mpsc::unbounded_channel();
        let cluster = Arc::new(Self {
            node: rand::random::<u64>() >> 1,
            pepper,
            outgoing,
            deletions: std::sync::Mutex::new(Some(deletions)),
            deleted,
            client,
            pushes,
            connections: std::sync::RwLock::new(connections),
            subscriptions,
            rooms: DashMap::new(),
            pending: DashMap::new(),
            registered,
            up: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            beating: tokio::sync::Mutex::new(()),
            unswept: std::sync::Mutex::default(),
            claims_gate: tokio::sync::RwLock::new(()),
            up_gauge: metrics.cluster_up.clone(),
            bytes_relayed: metrics.bytes_relayed.clone(),
            publish: Script::new(PUBLISH_SEQUENCED),
            claim: Script::new(CLAIM),
        });
        let (done, subscribed) = oneshot::channel();
        let _ = cluster
            .subscriptions
            .send(Subscription::Subscribe(CONTROL.to_owned(), done));
        cluster.up_gauge.set(1);
        tokio::spawn(watch(Arc::downgrade(&cluster)));
        tokio::spawn(keep_subscriptions(Arc::downgrade(&cluster), requests));
        tokio::spawn(receive(Arc::downgrade(&cluster), incoming, registrations));
        tokio::spawn(send_out(Arc::downgrade(&cluster), to_send));
        subscribed.await.unwrap_or(Ok(()))?;
        // Alive before the first join: a claim checks its owner's heartbeat.
        redis::cmd("SET")
            .arg(format!("{NODE_PREFIX}{}", cluster.node))
            .arg(1)
            .arg("EX")
            .arg(NODE_TTL_SECS)
            .query_async::<()>(&mut cluster.commands())
            .await?;
        Ok(cluster)
    }

    fn commands(&self) -> ConnectionManager {
        self.connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .commands
            .clone()
    }

    fn subscriber(&self) -> ConnectionManager {
        self.connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .subscriber
            .clone()
    }

    /// Makes both connections anew. A connection manager reconnects after an I/O error only:
    /// one whose reconnection failed otherwise (Redis answered `NOAUTH` or `LOADING`) keeps
    /// that failure for good, and the node would stay cut off after Redis is back.
    async fn reconnect(&self) {
        let opened = tokio::time::timeout(
            RECONNECT_WITHIN,
            Connections::open(&self.client, self.pushes.clone()),
        )
        .await;
        if let Ok(Ok(connections)) = opened {
            *self.connections.write().unwrap_or_else(|e| e.into_inner()) = connections;
        }
    }

    pub fn node(&self) -> u64 {
        self.node
    }

    /// Takes the stream of rooms other nodes deleted; once, at start.
    pub fn deletions(&self) -> Option<mpsc::UnboundedReceiver<Deleted>> {
        self.deletions.lock().ok()?.take()
    }

    /// Publishes a room's event for every node, after whatever was posted before it.
    pub fn post(&self, tag: &str, event: &Event<'_>) {
        let _ = self.outgoing.send(Outgoing::Publish {
            channel: channel(tag),
            payload: format!("0 {}", encode(event)),
        });
    }

    /// Claims `name` in the room `tag` for a join on this node that will hold `token`, showing
    /// the token it came with (`session`, if any); `max` members at most (0: any).
    pub async fn claim(
        &self,
        tag: &str,
        name: &MemberName,
        token: &SessionToken,
        session: Option<&SessionToken>,
        max: usize,
        admin: bool,
    ) -> Result<Claim, ClusterError> {
        let answer = self
            .claim
            .key(names_key(tag))
            .key(lock_key(tag))
            .arg(self.pepper.name_tag(tag, name.key()))
            .arg(self.node)
            .arg(self.pepper.session_tag(&token.encode()))
            .arg(max)
            .arg(NAMES_TTL_SECS)
            .arg(NODE_PREFIX)
            .arg(session.map_or_else(String::new, |s| self.pepper.session_tag(&s.encode())))
            .arg(if admin { "1" } else { "0" })
            .invoke_async::<String>(&mut self.commands())
            .await;
        Ok(match self.checked(answer)?.as_str() {
            "mine" => Claim::Mine,
            "moved" => Claim::Moved,
            "taken" => Claim::Taken,
            "full" => Claim::Full,
            "locked" => Claim::Locked,
            _ => Claim::New,
        })
    }

    /// Refuses a join into the room `tag` when the whole cluster has seen `limit` failed joins
    /// into it in the current minute (0: no limit): each node's own allowance alone would let
    /// N nodes take N times the guesses. Without Redis, each node's own allowance holds.
    pub async fn check_failures(&self, tag: &str, limit: u32) -> Result<(), Refusal> {
        if limit == 0 || !self.is_up() {
            return Ok(());
        }
        let key = failures_key(tag);
        let answer = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async::<(Option<u64>, i64)>(&mut self.commands())
            .await;
        match self.checked(answer) {
            Ok((Some(failed), wait_ms)) if failed >= u64::from(limit) => {
                Err(Refusal::rate_limited(Duration::from_millis(
                    u64::try_from(wait_ms).unwrap_or(1000).max(1),
                )))
            }
            Ok(_) => Ok(()),
            Err(_) => Err(ErrorCode::ClusterUnavailable.into()),
        }
    }

    /// An admin here locked or unlocked the room `tag`: every node's claims see it, after what
    /// was posted before.
    pub fn set_lock(&self, tag: &str, locked: bool) {
        let _ = self.outgoing.send(Outgoing::Lock {
            tag: tag.to_owned(),
            locked,
        });
    }

    /// Counts a failed join into the room `tag` for the whole cluster.
    pub fn count_failure(&self, tag: &str) {
        let _ = self.outgoing.send(Outgoing::Failure {
            tag: tag.to_owned(),
        });
    }

    /// The member holding `name` here has a new token: its claim carries it.
    pub fn renew_claim(&self, tag: &str, name: &MemberName, token: &SessionToken) {
        let _ = self.outgoing.send(Outgoing::Release {
            tag: tag.to_owned(),
            field: self.pepper.name_tag(tag, name.key()),
            node: self.node,
            session: self.pepper.session_tag(&token.encode()),
        });
    }

    /// Lets `name` go in the room `tag`, after what was posted before.
    pub fn release_name(&self, tag: &str, name: &MemberName) {
        self.release_for(tag, name, self.node);
    }

    fn release_for(&self, tag: &str, name: &MemberName, node: u64) {
        let _ = self.outgoing.send(Outgoing::Release {
            tag: tag.to_owned(),
            field: self.pepper.name_tag(tag, name.key()),
            node,
            session: String::new(),
        });
    }

    fn live_rooms(&self) -> Vec<Arc<Room>> {
        self.rooms.iter().filter_map(|r| r.upgrade()).collect()
    }

    /// Finds the nodes whose members are listed here and whose heartbeat has lapsed, and
    /// drops their members (the others hear them leave) and their claims.
    async fn drop_dead_nodes(&self) -> redis::RedisResult<()> {
        let rooms = self.live_rooms();
        let mut nodes: Vec<u64> = rooms.iter().flat_map(|r| r.remote_nodes()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        if nodes.is_empty() {
            return Ok(());
        }
        let mut alive = redis::pipe();
        for node in &nodes {
            alive.exists(format!("{NODE_PREFIX}{node}"));
        }
        let answers: Vec<bool> = alive.query_async(&mut self.commands()).await?;
        for (node, _) in nodes.iter().zip(answers).filter(|(_, alive)| !alive) {
            log::warn!("cluster: a node stopped beating; its members leave");
            for room in &rooms {
                for name in room.drop_node(*node) {
                    self.release_for(&room.record.id_hash, &name, *node);
                }
            }
        }
        Ok(())
    }

    /// Back after an outage: the channels are subscribed again, this node's members claim their
    /// names again (with the tokens they hold now), the claims of members who left meanwhile go,
    /// and every node hears who is here and says who it has. A failure marks Redis down again,
    /// so that the next heartbeat that gets an answer starts this over.
    async fn rejoin(&self) {
        let (done, renewed) = oneshot::channel();
        let _ = self.subscriptions.send(Subscription::Renew(done));
        if renewed.await.unwrap_or(Ok(())).is_err() {
            return;
        }
        let unswept: Vec<String> = std::mem::take(&mut *self.lock_unswept())
            .into_iter()
            .collect();
        for (i, tag) in unswept.iter().enumerate() {
            if let Err(e) = self.sweep(tag).await {
                log::warn!("cluster: letting go of claims: {e}");
                self.lock_unswept().extend(unswept[i..].iter().cloned());
                return;
            }
        }
        for room in self.live_rooms() {
            if let Err(e) = self.claim_again(&room).await {
                return log::warn!("cluster: claiming again: {e}");
            }
            let tag = &room.record.id_hash;
            if let Err(e) = self.sweep(tag).await {
                return log::warn!("cluster: letting go of claims: {e}");
            }
            room.announce_roster(self.node);
            let _ = self.deleted.send(Deleted {
                tag: tag.clone(),
                listed: None,
                check: true,
            });
        }
    }

    /// Raises a room's counter to the numbers given here and claims the names of its members
    /// here again, with their current tokens: a pipeline per thousand members, not a round
    /// trip each.
    async fn claim_again(&self, room: &Room) -> Result<(), ClusterError> {
        let raise = Script::new(RAISE_SEQ);
        let release = Script::new(RELEASE);
        let tag = &room.record.id_hash;
        let mut pipe = redis::pipe();
        pipe.load_script(&raise)
            .ignore()
            .invoke_script(
                raise
                    .key(seq_key(tag))
                    .arg(room.next_seq().saturating_sub(1))
                    .arg(SEQ_TTL_SECS),
            )
            .ignore();
        let raised = pipe.query_async::<()>(&mut self.commands()).await;
        self.checked(raised)?;
        for chunk in room.local_claims().chunks(CLAIMS_PER_PIPELINE) {
            let mut pipe = redis::pipe();
            pipe.load_script(&self.claim)
                .ignore()
                .load_script(&release)
                .ignore();
            for (name, token) in chunk {
                let field = self.pepper.name_tag(tag, name.key());
                let session = self.pepper.session_tag(&token.encode());
                pipe.invoke_script(
                    self.claim
                        .key(names_key(tag))
                        .key(lock_key(tag))
                        .arg(&field)
                        .arg(self.node)
                        .arg(&session)
                        .arg(0)
                        .arg(NAMES_TTL_SECS)
                        .arg(NODE_PREFIX)
                        .arg(&session)
                        .arg("1"),
                )
                .invoke_script(
                    release
                        .key(names_key(tag))
                        .arg(&field)
                        .arg(self.node)
                        .arg(&session),
                )
                .ignore();
            }
            let answers = pipe.query_async::<Vec<String>>(&mut self.commands()).await;
            if self.checked(answers)?.iter().any(|a| a == "taken") {
                log::warn!("cluster: a name held here was taken elsewhere during an outage");
            }
        }
        Ok(())
    }

    /// Lets go of this node's claims in the room `tag` that no member here holds (they left
    /// while Redis could not hear the release). A claim taken again between reading and
    /// dropping (another value) stays.
    async fn sweep(&self, tag: &str) -> Result<(), ClusterError> {
        let _alone = self.claims_gate.write().await;
        let key = names_key(tag);
        let held = redis::cmd("HGETALL")
            .arg(&key)
            .query_async::<std::collections::HashMap<String, String>>(&mut self.commands())
            .await;
        let held = self.checked(held)?;
        let keep: std::collections::HashSet<String> = self
            .live_room(tag)
            .map(|room| room.local_claims())
            .unwrap_or_default()
            .iter()
            .map(|(name, _)| self.pepper.name_tag(tag, name.key()))
            .collect();
        let mine = format!("{}:", self.node);
        let stale = Script::new(DROP_IF_SAME);
        let mut pipe = redis::pipe();
        pipe.load_script(&stale).ignore();
        let mut any = false;
        for (field, value) in held {
            if value.starts_with(&mine) && !keep.contains(&field) {
                pipe.invoke_script(stale.key(&key).arg(field).arg(value))
                    .ignore();
                any = true;
            }
        }
        if any {
            let dropped = pipe.query_async::<()>(&mut self.commands()).await;
            self.checked(dropped)?;
        }
        Ok(())
    }

    /// Held by a join from its claim until its member is in the room; see
    /// [`Cluster::sweep`].
    pub async fn claiming(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.claims_gate.read().await
    }

    fn lock_unswept(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.unswept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A room was deleted here: every other node tears it down too, and its keys go.
    pub async fn deleted(&self, tag: &str, listed: Option<&RoomId>) -> Result<(), ClusterError> {
        let control = encode_control(&Control::Deleted {
            node: self.node,
            room: Deleted {
                tag: tag.to_owned(),
                listed: listed.map(|id| id.as_ref().to_owned()),
                check: false,
            },
        });
        let result = redis::pipe()
            .del(names_key(tag))
            .ignore()
            .del(seq_key(tag))
            .ignore()
            .del(lock_key(tag))
            .ignore()
            .publish(CONTROL, control)
            .ignore()
            .query_async::<()>(&mut self.commands())
            .await;
        self.checked(result)
    }

    /// Whether any node holds members of the room `tag` (their claims on their names).
    pub async fn has_members(&self, tag: &str) -> Result<bool, ClusterError> {
        let claims = redis::cmd("HLEN")
            .arg(names_key(tag))
            .query_async::<u64>(&mut self.commands())
            .await;
        Ok(self.checked(claims)? > 0)
    }

    /// The room live on this node under `tag`, if any.
    pub fn live_room(&self, tag: &str) -> Option<Arc<Room>> {
        self.rooms.get(tag).and_then(|r| r.upgrade())
    }

    /// The node is draining: its heartbeat goes now, so the other nodes drop its members (and
    /// free their names) within a second rather than when the heartbeat would have lapsed.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        // A heartbeat under way lands first; one stuck in an outage is not waited for long.
        let _beat = tokio::time::timeout(Duration::from_secs(2), self.beating.lock()).await;
        let result = redis::cmd("DEL")
            .arg(format!("{NODE_PREFIX}{}", self.node))
            .query_async::<()>(&mut self.commands())
            .await;
        if let Err(e) = result {
            log::warn!("cluster: the heartbeat could not be taken back: {e}");
        }
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

    /// A room went live on this node. What came for it since the subscription is handed to it
    /// by the task that delivers everything, so that it stays in order.
    pub fn register(&self, room: &Arc<Room>) {
        let tag = room.record.id_hash.clone();
        self.rooms.insert(tag.clone(), Arc::downgrade(room));
        let _ = self.registered.send(tag);
    }

    /// A join that subscribed to a room's channel did not make the room live here: the channel
    /// goes, unless the room is live here after all.
    pub fn unsubscribe_unless_live(&self, tag: &str) {
        let _ = self
            .subscriptions
            .send(Subscription::Unsubscribe(channel(tag)));
    }

    /// The room `tag` went live here: what was kept for it is applied, in order, and the nodes
    /// that hold it are asked who is in it (once per going live: an earlier copy of the room
    /// may have had the answers).
    fn replay(&self, tag: &str) {
        let events = self.pending.remove(tag).map(|(_, e)| e).unwrap_or_default();
        if let Some(room) = self.live_room(tag) {
            for text in events {
                self.apply(&room, &text);
            }
            self.post(tag, &Event::Hello { node: self.node });
            // The room may be locked: its copy here says so to whoever joins here.
            let (mut commands, key) = (self.commands(), lock_key(tag));
            let room = Arc::downgrade(&room);
            tokio::spawn(async move {
                let locked = redis::cmd("EXISTS")
                    .arg(key)
                    .query_async::<bool>(&mut commands)
                    .await;
                if let (Ok(true), Some(room)) = (locked, room.upgrade()) {
                    room.locked_elsewhere();
                }
            });
        }
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
            from: from.into(),
            txn: txn.into(),
            body,
            ts: crate::protocol::now_ms(),
        };
        self.publish_sequenced(room, &event).await
    }

    /// Publishes an event that takes the room's next `seq` (a message, a DM).
    pub async fn publish_sequenced(
        &self,
        room: &Room,
        event: &Event<'_>,
    ) -> Result<(), ClusterError> {
        let tag = &room.record.id_hash;
        let result = self
            .publish
            .key(seq_key(tag))
            .key(channel(tag))
            .arg(encode(event))
            .arg(SEQ_TTL_SECS)
            .arg(room.next_seq())
            .invoke_async::<u64>(&mut self.commands())
            .await;
        self.checked(result).map(drop)
    }

    /// Publishes what needs no `seq` (typing, read, unsend), for every node to deliver.
    pub async fn publish(&self, room: &Room, event: &Event<'_>) -> Result<(), ClusterError> {
        let payload = format!("0 {}", encode(event));
        let result = redis::cmd("PUBLISH")
            .arg(channel(&room.record.id_hash))
            .arg(payload)
            .query_async::<i64>(&mut self.commands())
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
        if message.get_channel_name() == CONTROL {
            match serde_json::from_slice::<Control>(message.get_payload_bytes()) {
                Ok(Control::Deleted { node, room }) if node != self.node => {
                    let _ = self.deleted.send(room);
                }
                Ok(_) => {}
                Err(_) => log::warn!("cluster: a control event that this version cannot read"),
            }
            return;
        }
        let Some(tag) = message.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
            return;
        };
        let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) else {
            return;
        };
        if let Some(mut kept) = self.pending.get_mut(tag) {
            if kept.len() < PENDING_MAX {
                kept.push(text.to_owned());
            }
            return;
        }
        // A room that is neither live nor awaited here (a push that came after its channel was
        // let go) is nobody's.
        if let Some(room) = self.live_room(tag) {
            self.apply(&room, text);
        }
    }

    fn apply(&self, room: &Arc<Room>, text: &str) {
        let Some((seq, event)) = text.split_once(' ') else {
            return;
        };
        let (Ok(seq), Ok(event)) = (seq.parse::<u64>(), serde_json::from_str::<Event>(event))
        else {
            log::warn!("cluster: an event on a room channel that this version cannot read");
            return;
        };
        let bytes = room.apply(seq, &event, self.node);
        self.bytes_relayed.inc_by(bytes as u64);
    }
}

/// Keeps the subscriber connection's channels in step with the rooms live here, one request at
/// a time, so that a room let go and made live again ends subscribed.
async fn keep_subscriptions(
    cluster: Weak<Cluster>,
    mut requests: mpsc::UnboundedReceiver<Subscription>,
) {
    let mut subscribed = std::collections::HashSet::new();
    while let Some(request) = requests.recv().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        match request {
            Subscription::Subscribe(channel, done) => {
                if subscribed.contains(&channel) {
                    let _ = done.send(Ok(()));
                    continue;
                }
                // What comes before the room is live here is kept for it from now on.
                if let Some(tag) = channel.strip_prefix(CHANNEL_PREFIX) {
                    if !cluster.rooms.contains_key(tag) {
                        cluster.pending.entry(tag.to_owned()).or_default();
                    }
                }
                let result = cluster.checked(cluster.subscriber().subscribe(&channel).await);
                if result.is_ok() {
                    subscribed.insert(channel);
                }
                let _ = done.send(result);
            }
            Subscription::Unsubscribe(channel) => {
                let tag = channel.strip_prefix(CHANNEL_PREFIX).unwrap_or_default();
                if !cluster.rooms.contains_key(tag)
                    && cluster
                        .checked(cluster.subscriber().unsubscribe(&channel).await)
                        .is_ok()
                {
                    subscribed.remove(&channel);
                    cluster.pending.remove(tag);
                }
            }
            Subscription::Renew(done) => {
                let channels: Vec<&String> = subscribed.iter().collect();
                let result = cluster.checked(cluster.subscriber().subscribe(channels).await);
                let _ = done.send(result);
            }
        }
    }
}

/// Delivers what Redis pushes, and hands a room that went live what was kept for it: one task
/// for both, so that a room gets its events in the order Redis published them.
async fn receive(
    cluster: Weak<Cluster>,
    mut incoming: mpsc::UnboundedReceiver<redis::PushInfo>,
    mut registrations: mpsc::UnboundedReceiver<String>,
) {
    loop {
        let push = tokio::select! {
            Some(tag) = registrations.recv() => {
                if let Some(cluster) = cluster.upgrade() {
                    cluster.replay(&tag);
                }
                continue;
            }
            push = incoming.recv() => match push {
                Some(push) => push,
                None => return,
            },
        };
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
async fn watch(cluster: Weak<Cluster>) {
    let mut tick = 0u32;
    let mut down_for = 0u32;
    let mut judge_after = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let beat_lock = cluster.beating.lock().await;
        if cluster.stopping.load(Ordering::Relaxed) {
            return;
        }
        tick = tick.wrapping_add(1);
        let mut beat = redis::pipe();
        beat.set_ex(format!("{NODE_PREFIX}{}", cluster.node), 1, NODE_TTL_SECS)
            .ignore();
        if tick.is_multiple_of(RENEW_NAMES_EVERY) {
            for room in cluster.rooms.iter() {
                beat.expire(names_key(room.key()), NAMES_TTL_SECS as i64)
                    .ignore()
                    .expire(lock_key(room.key()), NAMES_TTL_SECS as i64)
                    .ignore();
            }
        }
        let commands = beat.query_async::<()>(&mut cluster.commands()).await;
        drop(beat_lock);
        let pubsub = redis::cmd("PING")
            .query_async::<redis::Value>(&mut cluster.subscriber())
            .await;
        let up = commands.is_ok() && pubsub.is_ok();
        let was_up = cluster.is_up();
        cluster.set_up(up);
        down_for = if up { 0 } else { down_for + 1 };
        if down_for > 0 && down_for.is_multiple_of(RECONNECT_EVERY) {
            cluster.reconnect().await;
        }
        if up && !was_up {
            cluster.rejoin().await;
            // A Redis that restarted empty lost every heartbeat: give the other nodes a
            // heartbeat's lifetime to beat again before taking them for dead.
            judge_after = tokio::time::Instant::now() + Duration::from_secs(NODE_TTL_SECS);
        }
        if up && tokio::time::Instant::now() >= judge_after {
            if let Err(e) = cluster.drop_dead_nodes().await {
                log::warn!("cluster: {e}");
            }
        }
    }
}

/// After how many heartbeats without Redis, and then how often, the connections are made anew
/// (past the connection managers' own reconnect attempts, about 10 s).
const RECONNECT_EVERY: u32 = 15;

/// How long making the connections anew may take before the next heartbeat.
const RECONNECT_WITHIN: Duration = Duration::from_secs(3);

/// How many posted jobs go to Redis in one pipeline.
const BATCH_MAX: usize = 256;

/// Publishes and releases in the order they were posted, everything queued in one pipeline
/// (one round trip instead of one per job: a join storm posts a notice per join).
async fn send_out(cluster: Weak<Cluster>, mut work: mpsc::UnboundedReceiver<Outgoing>) {
    let release = Script::new(RELEASE);
    let count_failure = Script::new(COUNT_FAILURE);
    let mut batch = Vec::with_capacity(BATCH_MAX);
    while work.recv_many(&mut batch, BATCH_MAX).await > 0 {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let mut pipe = redis::pipe();
        if batch
            .iter()
            .any(|j| !matches!(j, Outgoing::Publish { .. } | Outgoing::Lock { .. }))
        {
            pipe.load_script(&release)
                .ignore()
                .load_script(&count_failure)
                .ignore();
        }
        let mut releasing = Vec::new();
        for job in batch.drain(..) {
            match job {
                Outgoing::Publish { channel, payload } => pipe.publish(channel, payload),
                Outgoing::Lock { tag, locked: true } => {
                    pipe.set_ex(lock_key(&tag), 1, NAMES_TTL_SECS)
                }
                Outgoing::Lock { tag, locked: false } => pipe.del(lock_key(&tag)),
                Outgoing::Failure { tag } => pipe.invoke_script(
                    count_failure
                        .key(failures_key(&tag))
                        .arg(FAILURE_WINDOW.as_secs()),
                ),
                Outgoing::Release {
                    tag,
                    field,
                    node,
                    session,
                } => {
                    pipe.invoke_script(
                        release
                            .key(names_key(&tag))
                            .arg(field)
                            .arg(node)
                            .arg(session),
                    );
                    releasing.push(tag);
                    &mut pipe
                }
            }
            .ignore();
        }
        let sent = pipe.query_async::<()>(&mut cluster.commands()).await;
        if let Err(e) = cluster.checked(sent) {
            log::warn!("cluster: {e}");
            cluster.lock_unswept().extend(releasing);
        }
    }
}

const CHANNEL_PREFIX: &str = "eph:room:";

/// The channel of what concerns every node (deletions).
const CONTROL: &str = "eph:control";

const NODE_PREFIX: &str = "eph:node:";

/// The window of the cluster's count of failed joins per room.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

fn failures_key(tag: &str) -> String {
    format!("eph:failed:{tag}")
}

fn names_key(tag: &str) -> String {
    format!("eph:names:{tag}")
}

fn lock_key(tag: &str) -> String {
    format!("eph:lock:{tag}")
}

fn encode_control(control: &Control) -> String {
    // unwrap: a control event holds strings and numbers.
    #[allow(clippy::unwrap_used)]
    serde_json::to_string(control).unwrap()
}

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
