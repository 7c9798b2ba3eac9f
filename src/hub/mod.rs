//! The live rooms: who is in them, fan-out, `seq` numbers and teardown. A room exists here only
//! while it has members (or a join is entering it); an emptied or deleted room leaves no task and
//! no memory behind.
//!
//! Locks: the map of live rooms is a [`DashMap`] whose shard locks are held only to look a room
//! up, insert or remove it; each [`Room`] has one mutex over its members and `seq` state, held
//! for one operation and never across an `.await`. The order is room, then map (a room that
//! empties takes itself out of the map while it holds its own lock), so nothing here locks a room
//! while it holds a map guard.

mod room;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use std::time::Duration;

use dashmap::DashMap;

pub use room::{ConnId, Departure, MemberId, Presence, Relayed, Room, SEQ_MEMORY};

use crate::{
    cluster::Cluster,
    credentials::{Lifetime, RoomRecord, Turn},
    domain::{MemberName, PublicKey, RoomId, SessionToken},
    protocol::{ErrorCode, Limits},
    socket::Outbox,
    telemetry::Metrics,
};

/// What a socket asks for when it joins a room whose credentials it has proven.
pub struct Entry {
    pub conn: ConnId,
    pub name: MemberName,
    pub admin: bool,
    pub pubkey: Option<PublicKey>,
    pub session: Option<SessionToken>,
    pub outbox: Outbox,
    /// In cluster mode: the cluster gave this name to this join, so another node's member
    /// listed under it here is one that node has let go (or that died with its node).
    pub claimed: bool,
    /// In cluster mode: the member comes back from another node with its `session` token, so
    /// its join is as quiet as a reconnect to the same node.
    pub moved: bool,
    /// The `session` token the member gets in its `welcome`: made before the join, since in
    /// cluster mode its claim on its name carries it.
    pub token: SessionToken,
    /// Set by the join when it took a live socket's place (a resume while the old socket was
    /// still open): the audit trail records it.
    pub replaced: std::sync::atomic::AtomicBool,
}

/// Why the hub refused a proven join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The room left the hub while the join was being checked, or the live room holds other
    /// credentials than the ones proven: prove again.
    Gone,
    Code(ErrorCode),
}

/// Credentials proven against a room's record (see [`crate::access::prove`]).
pub enum Proven {
    /// The live room, whose record has accepted these secrets before: no turn was needed, and a
    /// join may enter this room only, never make a new one live.
    Live(Arc<Room>),
    /// The stored record, proven inside the room's turn, which is still held: a join makes the
    /// room live from it before letting go, so that no delete can come between.
    Stored { record: Box<RoomRecord>, turn: Turn },
}

impl Proven {
    pub fn record(&self) -> &RoomRecord {
        match self {
            Self::Live(room) => &room.record,
            Self::Stored { record, .. } => record,
        }
    }

    /// The room's turn, when the proof still holds it.
    pub fn into_turn(self) -> Option<Turn> {
        match self {
            Self::Live(_) => None,
            Self::Stored { turn, .. } => Some(turn),
        }
    }
}

/// The map of live rooms, shared by the hub and by every live room, which takes itself out of
/// it when it empties.
struct Registry {
    rooms: DashMap<RoomId, Arc<Room>>,
    /// `ephemera_rooms_live`.
    live: prometheus::IntGauge,
    /// In cluster mode: told when a room goes live here and when it leaves, to follow its
    /// channel.
    cluster: Option<Arc<Cluster>>,
    /// Told of a room that vanishes when empty ([`Lifetime::UntilEmpty`]) and just left the
    /// hub: whoever holds the store deletes its record after a grace for reconnects.
    emptied: Option<tokio::sync::mpsc::UnboundedSender<(RoomId, RoomRecord)>>,
}

impl Registry {
    /// Takes `room` out of the map, if the room there is still this one.
    fn forget(&self, room: &Room) {
        if self
            .rooms
            .remove_if(&room.id, |_, live| std::ptr::eq(Arc::as_ptr(live), room))
            .is_some()
        {
            self.live.dec();
            if let Some(cluster) = &self.cluster {
                cluster.release(room);
            }
            if room.record.options.lifetime == Lifetime::UntilEmpty {
                if let Some(emptied) = &self.emptied {
                    let _ = emptied.send((room.id.clone(), room.record.clone()));
                }
            }
        }
    }
}

pub struct Hub {
    registry: Arc<Registry>,
    next_conn: AtomicU64,
    limits: Limits,
    presence: Presence,
}

impl Hub {
    pub fn new(metrics: Metrics, limits: Limits, presence: Presence) -> Self {
        Self {
            registry: Arc::new(Registry {
                rooms: DashMap::new(),
                live: metrics.rooms_live,
                cluster: None,
                emptied: None,
            }),
            next_conn: AtomicU64::new(1),
            limits,
            presence,
        }
    }

    /// The hub of a node of a cluster: its rooms follow their channels.
    pub fn clustered(mut self, cluster: Arc<Cluster>) -> Self {
        if let Some(registry) = Arc::get_mut(&mut self.registry) {
            registry.cluster = Some(cluster);
        }
        self
    }

    /// The rooms that vanish when empty are sent to `emptied` as they leave the hub.
    pub fn on_emptied(
        mut self,
        emptied: tokio::sync::mpsc::UnboundedSender<(RoomId, RoomRecord)>,
    ) -> Self {
        if let Some(registry) = Arc::get_mut(&mut self.registry) {
            registry.emptied = Some(emptied);
        }
        self
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    pub fn live(&self, id: &RoomId) -> Option<Arc<Room>> {
        self.registry.rooms.get(id).map(|r| r.clone())
    }

    /// Enters a proven room: the live one, or (with the room's turn) a room made live from the
    /// proven record. A room made live for a join it then refuses leaves again at once; a room
    /// that emptied between the lookup and the join is made live anew.
    pub fn admit(&self, id: &RoomId, proven: &Proven, entry: &Entry) -> Result<Arc<Room>, Refused> {
        let record = match proven {
            Proven::Live(room) => {
                room.join(entry)?;
                return Ok(room.clone());
            }
            Proven::Stored { record, .. } => record,
        };
        loop {
            let room = self.open(id, record).ok_or(Refused::Gone)?;
            match room.join(entry) {
                Ok(_) => return Ok(room),
                // Emptied and taken out of the map since `open`: the next `open` makes it anew.
                Err(Refused::Gone) => continue,
                Err(refused) => {
                    room.close_if_empty(&mut room.lock());
                    return Err(refused);
                }
            }
        }
    }

    /// The live room, or a new one for this record; `None` when the live room holds other
    /// credentials (a newer creation of the room ID than the record).
    fn open(&self, id: &RoomId, record: &RoomRecord) -> Option<Arc<Room>> {
        let room = self
            .registry
            .rooms
            .entry(id.clone())
            .or_insert_with(|| {
                self.registry.live.inc();
                let room = Arc::new(Room::new(
                    id.clone(),
                    record.clone(),
                    self.limits,
                    self.presence,
                    Arc::downgrade(&self.registry),
                ));
                if let Some(cluster) = &self.registry.cluster {
                    cluster.register(&room);
                }
                if room.record.options.lifetime == Lifetime::Fixed {
                    end_at_expiry(&room);
                }
                room
            })
            .clone();
        room.record.same_credentials(record).then_some(room)
    }

    /// Live listed rooms with their member counts.
    pub fn listed(&self) -> Vec<(Arc<Room>, usize)> {
        self.snapshot()
            .into_iter()
            .filter(|r| r.record.listed)
            .map(|r| {
                let count = r.member_count();
                (r, count)
            })
            .collect()
    }

    /// The live rooms, copied out so that no map lock is held while a room is locked.
    fn snapshot(&self) -> Vec<Arc<Room>> {
        self.registry.rooms.iter().map(|r| r.clone()).collect()
    }

    pub fn member_count(&self, id: &RoomId) -> usize {
        self.live(id).map_or(0, |r| r.member_count())
    }

    /// The server is draining: every member is closed with 1001.
    pub fn shutdown(&self) {
        for room in self.snapshot() {
            room.going_away();
        }
    }

    /// Tears a room down: every member gets `room_deleted` and close 4410 at once.
    pub fn delete(&self, id: &RoomId) {
        if let Some(room) = self.live(id) {
            room.delete();
        }
    }
}

/// A room of fixed lifetime ends at its expiry, whoever is in it (its record is past its expiry
/// by then: no one gets back in).
fn end_at_expiry(room: &Arc<Room>) {
    let left = room.record.expires_at - time::OffsetDateTime::now_utc();
    let wait = Duration::try_from(left).unwrap_or_default();
    let weak = Arc::downgrade(room);
    let timer = tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        if let Some(room) = weak.upgrade() {
            room.expire();
        }
    });
    room.hold_timer(timer.abort_handle());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        credentials::RoomRecord,
        socket::{Outbox, QueueLimits},
    };

    fn record(id_hash: &str, auth_hash: &str) -> RoomRecord {
        let now = time::OffsetDateTime::now_utc();
        RoomRecord {
            id_hash: id_hash.into(),
            auth_hash: auth_hash.into(),
            admin_hash: "admin".into(),
            listed: false,
            room_id: None,
            title: None,
            created_at: now,
            expires_at: now,
            options: Default::default(),
        }
    }

    fn hub(max_members: usize) -> Hub {
        hub_with(max_members, 0)
    }

    fn hub_with(max_members: usize, crowd: usize) -> Hub {
        let limits = Limits {
            max_frame_bytes: 1024,
            messages_per_10s: 0,
            bytes_per_10s: 0,
            max_members,
        };
        Hub::new(
            Metrics::new(),
            limits,
            Presence {
                leave_grace: std::time::Duration::ZERO,
                crowd,
            },
        )
    }

    fn entry(hub: &Hub, name: &str, admin: bool) -> (Entry, Outbox) {
        let limits = Arc::new(QueueLimits {
            bytes: 1 << 20,
            frames: 1024,
            budget: 0,
            queued: prometheus::IntGauge::new("q", "q").unwrap(),
            overflows: prometheus::IntCounter::new("o", "o").unwrap(),
        });
        let (outbox, _drain) = Outbox::new(limits);
        let entry = Entry {
            conn: hub.next_conn(),
            name: MemberName::parse(name).unwrap(),
            admin,
            pubkey: None,
            session: None,
            outbox: outbox.clone(),
            claimed: false,
            moved: false,
            token: SessionToken::random(),
            replaced: Default::default(),
        };
        (entry, outbox)
    }

    /// A join proven against a live room that emptied meanwhile is sent back to prove again:
    /// without the room's turn it may not make the room live anew.
    #[tokio::test]
    async fn a_join_into_a_live_room_that_left_the_hub_is_sent_back() {
        let hub = hub(0);
        let id = RoomId::parse("room-1").unwrap();
        let room = hub.open(&id, &record("h", "a")).unwrap();
        let (alice, _) = entry(&hub, "alice", false);
        room.join(&alice).unwrap();
        let proven = Proven::Live(room.clone());
        room.leave(alice.conn, Departure::Now);
        assert!(hub.live(&id).is_none());
        let (bob, _) = entry(&hub, "bob", false);
        assert_eq!(hub.admit(&id, &proven, &bob).err(), Some(Refused::Gone));
        assert!(hub.live(&id).is_none());
    }

    /// A join proven against the stored record, inside the turn, makes the room live again when
    /// it emptied between the proof and the join.
    #[tokio::test]
    async fn a_join_with_the_turn_makes_an_emptied_room_live_again() {
        let hub = hub(0);
        let id = RoomId::parse("room-1").unwrap();
        let first = hub.open(&id, &record("h", "a")).unwrap();
        let (alice, _) = entry(&hub, "alice", false);
        first.join(&alice).unwrap();
        first.leave(alice.conn, Departure::Now);
        let proven = Proven::Stored {
            record: Box::new(record("h", "a")),
            turn: Turn::unheld(),
        };
        let (bob, _) = entry(&hub, "bob", false);
        let room = hub.admit(&id, &proven, &bob).unwrap();
        assert!(!Arc::ptr_eq(&first, &room));
        assert!(Arc::ptr_eq(&room, &hub.live(&id).unwrap()));
        assert_eq!(room.member_count(), 1);
    }

    /// A live room holds the record it was opened with: a proof against another creation of its
    /// ID does not enter it.
    #[tokio::test]
    async fn a_record_that_is_not_the_live_rooms_does_not_open_it() {
        let hub = hub(1);
        let id = RoomId::parse("room-1").unwrap();
        let room = hub.open(&id, &record("h", "a")).unwrap();
        assert!(hub.open(&id, &record("h", "b")).is_none());
        assert!(Arc::ptr_eq(
            &room,
            &hub.open(&id, &record("h", "a")).unwrap()
        ));
        let stale = Proven::Stored {
            record: Box::new(record("h", "b")),
            turn: Turn::unheld(),
        };
        let (alice, _) = entry(&hub, "alice", false);
        assert_eq!(hub.admit(&id, &stale, &alice).err(), Some(Refused::Gone));
        let proven = Proven::Stored {
            record: Box::new(record("h", "a")),
            turn: Turn::unheld(),
        };
        hub.admit(&id, &proven, &alice).unwrap();
        let (bob, _) = entry(&hub, "bob", false);
        assert_eq!(
            hub.admit(&id, &proven, &bob).err(),
            Some(Refused::Code(ErrorCode::RoomFull))
        );
        room.leave(alice.conn, Departure::Now);
        assert!(hub.live(&id).is_none());
    }

    /// A page of the member list is encoded once per change of that page: members who join
    /// or leave after a full page's last name leave it as it is, and every `welcome` and
    /// `members` answer splices the same encoding.
    #[tokio::test]
    async fn a_page_is_encoded_again_only_when_it_changes() {
        let hub = hub_with(0, 2);
        let room = hub
            .open(&RoomId::parse("room-1").unwrap(), &record("h", "a"))
            .unwrap();
        let join = |name: &str| {
            let (e, outbox) = entry(&hub, name, false);
            room.join(&e).unwrap();
            (e, outbox)
        };
        let first = || room.lock().page_json(0, 2);
        join("bob");
        let (dan, _) = join("dan");
        let full = first();
        assert!(Arc::ptr_eq(&full, &first()));
        let (eve, _) = join("Eve");
        assert!(Arc::ptr_eq(&full, &first()), "a join after the page");
        room.leave(eve.conn, Departure::Now);
        assert!(Arc::ptr_eq(&full, &first()), "a leave after the page");
        join("ann");
        let changed = first();
        assert!(!Arc::ptr_eq(&full, &changed), "a join on the page");
        let names = |page: &serde_json::Value| -> Vec<String> {
            page.as_array()
                .unwrap()
                .iter()
                .map(|m| m["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names(&serde_json::from_str(changed.get()).unwrap()),
            ["ann", "bob"]
        );
        let answer: serde_json::Value =
            serde_json::from_str(&room.members_answer(Some(1), None).unwrap()).unwrap();
        assert_eq!(names(&answer["members"]), ["dan"]);
        assert_eq!(
            [&answer["page"], &answer["pages"], &answer["total"]],
            [1, 2, 3]
        );
        room.leave(dan.conn, Departure::Now);
        assert!(Arc::ptr_eq(&changed, &first()));
        let past: serde_json::Value =
            serde_json::from_str(&room.members_answer(Some(u64::MAX), None).unwrap()).unwrap();
        assert_eq!(past["members"], serde_json::json!([]));
    }

    /// Members leave from anywhere in the list, and every index stays right: whoever is left
    /// is still found by name and by socket.
    #[tokio::test]
    async fn the_indexes_follow_members_that_leave_from_the_middle() {
        let hub = hub(0);
        let room = hub
            .open(&RoomId::parse("room-1").unwrap(), &record("h", "a"))
            .unwrap();
        let entries: Vec<_> = ["ann", "bo", "cy", "di", "ed"]
            .iter()
            .map(|name| entry(&hub, name, false))
            .collect();
        for (e, _) in &entries {
            room.join(e).unwrap();
        }
        room.leave(entries[1].0.conn, Departure::Now);
        room.leave(entries[0].0.conn, Departure::Now);
        assert_eq!(
            room.kick(entries[2].0.conn, "ed"),
            Err(ErrorCode::Forbidden)
        );
        let page = room.members_answer(None, None).unwrap();
        let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&page).unwrap()
            ["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["cy", "di", "ed"]);
        for (e, _) in &entries[2..] {
            assert!(room
                .send(
                    e.conn,
                    "t",
                    &serde_json::value::RawValue::from_string("1".into()).unwrap()
                )
                .is_some());
        }
        assert!(room
            .send(
                entries[0].0.conn,
                "t",
                &serde_json::value::RawValue::from_string("1".into()).unwrap()
            )
            .is_none());
        assert_eq!(
            room.members_answer(None, Some("bo")),
            Err(ErrorCode::NoSuchMember)
        );
    }

    /// A full room refuses a newcomer; a kick makes room, closes the target and says so.
    #[tokio::test]
    async fn a_full_room_refuses_and_a_kick_makes_room() {
        let hub = hub(2);
        let room = hub
            .open(&RoomId::parse("room-1").unwrap(), &record("h", "a"))
            .unwrap();
        let (admin, _) = entry(&hub, "admin", true);
        room.join(&admin).unwrap();
        let (bob, bob_outbox) = entry(&hub, "bob", false);
        room.join(&bob).unwrap();
        let (carol, _) = entry(&hub, "carol", false);
        assert_eq!(room.join(&carol), Err(Refused::Code(ErrorCode::RoomFull)));
        assert_eq!(room.kick(bob.conn, "admin"), Err(ErrorCode::Forbidden));
        assert_eq!(
            room.kick(admin.conn, "nobody"),
            Err(ErrorCode::NoSuchMember)
        );
        room.kick(admin.conn, "BOB").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), bob_outbox.closed())
            .await
            .unwrap();
        assert!(room.join(&carol).is_ok());
    }
}
