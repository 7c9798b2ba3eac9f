//! The live rooms: who is in them, fan-out, `seq` numbers and teardown. A room exists here only
//! while it has members (or a join is entering it); an emptied or deleted room leaves no task and
//! no memory behind.

mod outbox;
mod room;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytestring::ByteString;
use dashmap::DashMap;

pub use outbox::{Drain, Outbox, PushError, QueueLimits};
pub use room::{ConnId, MemberId, Relayed, Room, SEQ_MEMORY};

use crate::{
    bot,
    credentials::RoomRecord,
    domain::{MemberName, PublicKey, RoomId, SessionToken},
    protocol::{close, ErrorCode, Limits, ServerFrame},
    telemetry::Metrics,
};
use room::{Member, RoomState};

/// How long the bot's join, leave and kick notices may wait in the members' queues. A crowd
/// arriving costs every member a notice per newcomer, and one write per notice was most of the
/// server's and the clients' work in a ramp; held this long, the notices of a burst go out
/// together, with the member's next frame or at the end of the hold. People do not notice 50 ms
/// on a presence notice, and a queue never reorders: a newcomer's join notice still comes before
/// anything the newcomer says.
const NOTICE_HOLD: Duration = Duration::from_millis(50);

/// What a socket asks for when it joins a room whose credentials it has already proven.
pub struct Entry {
    pub conn: ConnId,
    pub name: MemberName,
    pub admin: bool,
    pub pubkey: Option<PublicKey>,
    pub session: Option<SessionToken>,
    pub outbox: Outbox,
}

/// Why the hub refused a proven join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The room left the hub while the join was being checked: look it up again.
    Gone,
    Code(ErrorCode),
}

pub struct Hub {
    rooms: DashMap<RoomId, Arc<Room>>,
    next_id: AtomicU64,
    metrics: Metrics,
    limits: Limits,
}

impl Hub {
    pub fn new(metrics: Metrics, limits: Limits) -> Self {
        Self {
            rooms: DashMap::new(),
            next_id: AtomicU64::new(1),
            metrics,
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub fn live(&self, id: &RoomId) -> Option<Arc<Room>> {
        self.rooms.get(id).map(|r| r.clone())
    }

    /// The live room, or a new one for this record; `None` when the live room holds other
    /// credentials (a newer creation of the room ID than the record).
    pub fn open(&self, id: &RoomId, record: RoomRecord) -> Option<Arc<Room>> {
        let room = self
            .rooms
            .entry(id.clone())
            .or_insert_with(|| {
                self.metrics.rooms_live.inc();
                Arc::new(Room::new(id.clone(), record.clone()))
            })
            .clone();
        room.record.same_credentials(&record).then_some(room)
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

    /// The live rooms, copied out so that no map lock is held while a room is locked (the
    /// lock order is room, then map).
    fn snapshot(&self) -> Vec<Arc<Room>> {
        self.rooms.iter().map(|r| r.clone()).collect()
    }

    pub fn member_count(&self, id: &RoomId) -> usize {
        self.live(id).map_or(0, |r| r.member_count())
    }

    /// Adds a member, or quietly moves a member to a new socket when `session` matches its
    /// latest token. The `welcome` is queued before the lock is released, so it precedes every
    /// room frame the newcomer gets.
    pub fn join(&self, room: &Arc<Room>, entry: Entry) -> Result<MemberId, Refused> {
        let mut state = room.lock();
        if state.closed {
            return Err(Refused::Gone);
        }
        let token = SessionToken::random();
        let existing = state
            .members
            .iter()
            .position(|m| m.name.key() == entry.name.key());
        let (index, fresh) = match existing {
            Some(i) => {
                let resumes = entry
                    .session
                    .as_ref()
                    .is_some_and(|s| *s == state.members[i].token);
                if !resumes {
                    return Err(Refused::Code(ErrorCode::NameTaken));
                }
                let old = &mut state.members[i];
                let replaced = std::mem::replace(&mut old.outbox, entry.outbox.clone());
                let _ = replaced
                    .push(&ServerFrame::error(ErrorCode::SessionReplaced, None, None).encode());
                replaced.close(ErrorCode::SessionReplaced.close_code(), "session replaced");
                old.conn = entry.conn;
                old.name = entry.name;
                old.admin = entry.admin;
                old.pubkey = entry.pubkey;
                old.token = token.clone();
                state.roster_changed();
                (i, false)
            }
            None => {
                let max = self.limits.max_members;
                if max > 0 && state.members.len() >= max {
                    return Err(Refused::Code(ErrorCode::RoomFull));
                }
                state.members.push(Member {
                    id: MemberId(self.next_id.fetch_add(1, Ordering::Relaxed)),
                    conn: entry.conn,
                    name: entry.name,
                    admin: entry.admin,
                    pubkey: entry.pubkey,
                    token: token.clone(),
                    outbox: entry.outbox,
                });
                state.roster_changed();
                (state.members.len() - 1, true)
            }
        };
        let views = state.views();
        let me = &state.members[index];
        let (id, conn) = (me.id, me.conn);
        let welcome = ServerFrame::Welcome {
            room_id: room.id.as_ref(),
            you: me.view(),
            members: &views,
            session: &token.encode(),
            limits: self.limits,
        }
        .encode();
        let _ = me.outbox.push(&welcome);
        if fresh {
            let count = state.members.len();
            let _ = me.outbox.push(&bot::greeting(me.name.as_ref(), count));
            let notice = bot::joined(me.view(), count);
            drop(views);
            announce(room, &mut state, &notice, Some(conn));
        }
        Ok(id)
    }

    /// A socket has closed: its member leaves (unless it was already removed, by a kick, a
    /// delete or a reconnect), and an emptied room leaves the hub.
    pub fn leave(&self, room: &Arc<Room>, conn: ConnId) {
        let mut state = room.lock();
        let Some(index) = state.members.iter().position(|m| m.conn == conn) else {
            return;
        };
        let gone = state.members.remove(index);
        state.roster_changed();
        let notice = bot::left(gone.name.as_ref(), state.members.len());
        announce(room, &mut state, &notice, None);
        if state.members.is_empty() {
            state.closed = true;
            self.forget(room);
        }
    }

    /// Undoes [`Hub::open`] for a join the room then refused: a room left empty leaves the hub.
    pub fn release(&self, room: &Arc<Room>) {
        let mut state = room.lock();
        if state.members.is_empty() && !state.closed {
            state.closed = true;
            self.forget(room);
        }
    }

    fn forget(&self, room: &Arc<Room>) {
        if self
            .rooms
            .remove_if(&room.id, |_, live| Arc::ptr_eq(live, room))
            .is_some()
        {
            self.metrics.rooms_live.dec();
        }
    }

    /// `kick`: admins only. The target gets `kicked` and close 4403; the others hear it from
    /// the bot, with no separate `leave`.
    pub fn kick(&self, room: &Arc<Room>, by: ConnId, target: &str) -> Result<(), ErrorCode> {
        let mut state = room.lock();
        let admin = state.member(by).ok_or(ErrorCode::Forbidden)?;
        if !admin.admin {
            return Err(ErrorCode::Forbidden);
        }
        let by_name = admin.name.as_ref().to_owned();
        let key = MemberName::parse(target).map_err(|_| ErrorCode::NoSuchMember)?;
        let index = state
            .members
            .iter()
            .position(|m| m.name.key() == key.key())
            .ok_or(ErrorCode::NoSuchMember)?;
        let gone = state.members.remove(index);
        state.roster_changed();
        let _ = gone
            .outbox
            .push(&ServerFrame::Kicked { by: &by_name }.encode());
        gone.outbox.close(close::KICKED, "kicked");
        let notice = bot::kicked(gone.name.as_ref(), &by_name, state.members.len());
        announce(room, &mut state, &notice, None);
        if state.members.is_empty() {
            state.closed = true;
            self.forget(room);
        }
        Ok(())
    }

    /// The server is draining: every member is closed with 1001.
    pub fn shutdown(&self) {
        for room in self.snapshot() {
            for member in room.lock().members.iter() {
                member
                    .outbox
                    .close(close::GOING_AWAY, "server shutting down");
            }
        }
    }

    /// Tears a room down: every member gets `room_deleted` and close 4410 at once.
    pub fn delete(&self, id: &RoomId) {
        if let Some(room) = self.live(id) {
            let mut state = room.lock();
            state.closed = true;
            let frame = ServerFrame::RoomDeleted.encode();
            for member in state.members.drain(..) {
                let _ = member.outbox.push(&frame);
                member.outbox.close(close::ROOM_DELETED, "room deleted");
            }
            state.roster_changed();
            self.forget(&room);
        }
    }
}

/// Queues a bot notice for every member present but `except`, held for [`NOTICE_HOLD`]: the
/// first notice of a burst starts the timer that flushes them all.
fn announce(room: &Arc<Room>, state: &mut RoomState, notice: &ByteString, except: Option<ConnId>) {
    state.deliver_held(notice, except);
    if !std::mem::replace(&mut state.notices_due, true) {
        let room = room.clone();
        tokio::spawn(async move {
            tokio::time::sleep(NOTICE_HOLD).await;
            room.flush_notices();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::QueueLimits;

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
        }
    }

    fn hub(max_members: usize) -> Hub {
        let limits = Limits {
            max_frame_bytes: 1024,
            messages_per_10s: 0,
            bytes_per_10s: 0,
            max_members,
        };
        Hub::new(Metrics::new(), limits)
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
        };
        (entry, outbox)
    }

    /// A join that raced with the room emptying is told to look the room up again.
    #[tokio::test]
    async fn a_join_into_a_room_that_left_the_hub_is_sent_back() {
        let hub = hub(0);
        let id = RoomId::parse("room-1").unwrap();
        let room = hub.open(&id, record("h", "a")).unwrap();
        let (alice, _) = entry(&hub, "alice", false);
        let conn = alice.conn;
        hub.join(&room, alice).unwrap();
        hub.leave(&room, conn);
        assert!(hub.live(&id).is_none());
        let (bob, _) = entry(&hub, "bob", false);
        assert_eq!(hub.join(&room, bob), Err(Refused::Gone));
    }

    /// A live room holds the record it was opened with; another creation of its ID is not it.
    #[tokio::test]
    async fn a_record_that_is_not_the_live_rooms_does_not_open_it() {
        let hub = hub(0);
        let id = RoomId::parse("room-1").unwrap();
        let room = hub.open(&id, record("h", "a")).unwrap();
        assert!(hub.open(&id, record("h", "b")).is_none());
        assert!(Arc::ptr_eq(
            &room,
            &hub.open(&id, record("h", "a")).unwrap()
        ));
        hub.release(&room);
        assert!(hub.live(&id).is_none());
    }

    /// The `members` answer is made once per change of the list and shared until the next.
    #[tokio::test]
    async fn the_members_answer_is_shared_until_the_list_changes() {
        let hub = hub(0);
        let room = hub
            .open(&RoomId::parse("room-1").unwrap(), record("h", "a"))
            .unwrap();
        let (alice, _) = entry(&hub, "alice", true);
        hub.join(&room, alice).unwrap();
        let first = room.members_answer();
        assert_eq!(first.as_ptr(), room.members_answer().as_ptr());
        let (bob, _) = entry(&hub, "bob", false);
        let bob_conn = bob.conn;
        hub.join(&room, bob).unwrap();
        let second = room.members_answer();
        assert_ne!(first.as_ptr(), second.as_ptr());
        assert!(second.contains("bob"));
        hub.leave(&room, bob_conn);
        assert!(!room.members_answer().contains("bob"));
    }

    /// A full room refuses a newcomer; a kick makes room, closes the target and says so.
    #[tokio::test]
    async fn a_full_room_refuses_and_a_kick_makes_room() {
        let hub = hub(2);
        let room = hub
            .open(&RoomId::parse("room-1").unwrap(), record("h", "a"))
            .unwrap();
        let (admin, _) = entry(&hub, "admin", true);
        let admin_conn = admin.conn;
        hub.join(&room, admin).unwrap();
        let (bob, bob_outbox) = entry(&hub, "bob", false);
        hub.join(&room, bob).unwrap();
        let (carol, _) = entry(&hub, "carol", false);
        assert_eq!(
            hub.join(&room, carol),
            Err(Refused::Code(ErrorCode::RoomFull))
        );
        assert_eq!(
            hub.kick(&room, admin_conn, "nobody"),
            Err(ErrorCode::NoSuchMember)
        );
        hub.kick(&room, admin_conn, "BOB").unwrap();
        tokio::time::timeout(Duration::from_secs(1), bob_outbox.closed())
            .await
            .unwrap();
        let (carol, _) = entry(&hub, "carol", false);
        assert!(hub.join(&room, carol).is_ok());
    }
}
