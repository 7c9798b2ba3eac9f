//! One live room: its members, its `seq` counter and the memory of who sent which `seq`.
//!
//! All of it sits behind one mutex. A broadcast takes it once, assigns the `seq`, serialises the
//! frame once and pushes the shared bytes to every member's queue, so every member sees the
//! room's frames in one order. No `.await` happens while it is held. Membership (join, leave,
//! kick, delete) and messages both live here; a room that empties takes itself out of the hub's
//! map ([`Room::close_if_empty`]) before it lets go of its lock.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    ops::Bound,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::{Duration, Instant},
};

use bytestring::ByteString;
use serde_json::value::RawValue;

use super::{Entry, Refused, Registry};
use crate::{
    bot,
    cluster::{Cluster, Event},
    credentials::{Lifetime, RoomRecord},
    domain::{MemberName, PublicKey, RoomId, SessionToken},
    protocol::{close, now_ms, ErrorCode, Limits, MemberView, ServerFrame, Wire},
    socket::Outbox,
};

/// How long the bot's join, leave and kick notices may wait in the members' queues. A crowd
/// arriving costs every member a notice per newcomer, and one write per notice was most of the
/// server's and the clients' work in a ramp; held this long, the notices of a burst go out
/// together, with the member's next frame or at the end of the hold. People do not notice 50 ms
/// on a presence notice, and a queue never reorders: a newcomer's join notice still comes before
/// anything the newcomer says.
const NOTICE_HOLD: Duration = Duration::from_millis(50);

/// How often a crowd hears who came and went: one `summary` a second instead of a notice per
/// person, which in a room of N filling up would be N² notices.
const SUMMARY_EVERY: Duration = Duration::from_secs(1);

/// How a room tells who is in it.
#[derive(Debug, Clone, Copy)]
pub struct Presence {
    /// How long a member whose socket was lost stays, waiting for its reconnect.
    pub leave_grace: Duration,
    /// A room of more members than this is a crowd: joins and leaves are summarised once a
    /// second, and member lists go out in pages of this many (0: never a crowd).
    pub crowd: usize,
}

impl Presence {
    fn page_size(self) -> usize {
        if self.crowd == 0 {
            usize::MAX
        } else {
            self.crowd
        }
    }
}

/// How many recent `seq` numbers a room remembers the sender of, for `unsend`.
pub const SEQ_MEMORY: usize = 10_000;

/// One socket's identity, unique for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A member's identity across reconnects: a socket replaced with the `session` token keeps it,
/// so the member can still unsend what it sent before the blip. Random, so that it is unique
/// across the nodes of a cluster too (which remember each other's senders).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberId(pub u64);

struct Member {
    pub id: MemberId,
    pub conn: ConnId,
    pub name: MemberName,
    pub admin: bool,
    pub pubkey: Option<PublicKey>,
    pub token: SessionToken,
    pub outbox: Outbox,
    /// Its socket was lost: it stays for the room's leave grace, in case it comes back with its
    /// `session` token; what is sent meanwhile does not reach it.
    pub away: bool,
}

impl Member {
    pub fn view(&self) -> MemberView<'_> {
        MemberView {
            name: self.name.as_ref().into(),
            admin: self.admin,
            pubkey: self.pubkey.as_ref().map(|k| k.as_ref().into()),
        }
    }
}

/// Who sent a remembered `seq`, never what was said.
#[derive(Clone, Copy)]
struct Sent {
    author: MemberId,
    /// The recipient, for a direct message.
    dm_to: Option<MemberId>,
}

pub(super) struct RoomState {
    /// The room's creator allowed `unsend` (its options).
    unsend_allowed: bool,
    /// An admin locked the room: no new member joins (an admin may). In memory: a room that
    /// empties is unlocked.
    locked: bool,
    /// In no order: a leaver's place is taken by the last member, so a crowd that empties at
    /// once costs no shifting.
    members: Vec<Member>,
    /// Where each socket's member is in `members`.
    by_conn: HashMap<ConnId, usize>,
    /// In cluster mode, the members other nodes hold, as they announced them.
    remote: Vec<Remote>,
    /// Where each member is, here or on another node, by name key in name order: name lookups,
    /// and the member list's pages, are walks of this map.
    by_name: BTreeMap<Box<str>, Slot>,
    next_seq: u64,
    /// `sent[i]` is `seq` number `first_seq + i`; `None` once unsent.
    sent: VecDeque<Option<Sent>>,
    first_seq: u64,
    /// Set when the room leaves the hub (emptied or deleted); a join that raced with that
    /// must look the room up again.
    closed: bool,
    /// Set while bot notices wait in members' queues for [`Room::flush_notices`].
    notices_due: bool,
    /// The member list's pages as JSON, each encoded once per change of that page and spliced
    /// into every `welcome` and `members` answer that carries it: a page of a crowd is about
    /// 16 KB, and neither an 18-byte request nor each newcomer of a storm must cost that much
    /// encoding.
    pages: Vec<Option<Page>>,
    /// In a crowd, the joins and leaves the next `summary` counts.
    joined: usize,
    left: usize,
    summary_due: bool,
}

mod peers;

/// A member another node of the cluster holds.
struct Remote {
    id: MemberId,
    node: u64,
    name: MemberName,
    admin: bool,
    pubkey: Option<PublicKey>,
}

impl Remote {
    fn view(&self) -> MemberView<'_> {
        MemberView {
            name: self.name.as_ref().into(),
            admin: self.admin,
            pubkey: self.pubkey.as_ref().map(|k| k.as_ref().into()),
        }
    }
}

/// Where a member is: `members[i]` here, or `remote[i]` on another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Local(usize),
    Remote(usize),
}

/// A page of the member list, encoded.
struct Page {
    members: Arc<RawValue>,
    /// The name key of the page's last member, when the page is full: a change of the list at
    /// a later key leaves such a page as it is.
    full_to: Option<Box<str>>,
}

/// `value` as JSON. It holds only strings, numbers and booleans, which serde_json always
/// serialises.
fn raw_json<T: serde::Serialize + ?Sized>(value: &T) -> Arc<RawValue> {
    #[allow(clippy::unwrap_used)]
    serde_json::value::to_raw_value(value).unwrap().into()
}

impl RoomState {
    fn member(&self, conn: ConnId) -> Option<&Member> {
        self.by_conn.get(&conn).map(|&i| &self.members[i])
    }

    /// Everyone in the room, on every node.
    fn count(&self) -> usize {
        self.members.len() + self.remote.len()
    }

    /// The name of the member on `by`, if it is an admin: what only admins may do asks this.
    fn admin_name(&self, by: ConnId) -> Result<String, ErrorCode> {
        match self.member(by) {
            Some(member) if member.admin => Ok(member.name.as_ref().to_owned()),
            _ => Err(ErrorCode::Forbidden),
        }
    }

    fn slot(&self, name: &str) -> Option<Slot> {
        let key = MemberName::parse(name).ok()?;
        self.by_name.get(key.key()).copied()
    }

    fn insert(&mut self, member: Member) -> usize {
        let index = self.members.len();
        let key: Box<str> = member.name.key().into();
        self.by_conn.insert(member.conn, index);
        self.by_name.insert(key.clone(), Slot::Local(index));
        self.members.push(member);
        self.roster_changed(&key);
        index
    }

    fn remove(&mut self, index: usize) -> Member {
        let gone = self.members.swap_remove(index);
        self.by_conn.remove(&gone.conn);
        self.by_name.remove(gone.name.key());
        if let Some(moved) = self.members.get(index) {
            self.by_conn.insert(moved.conn, index);
            if let Some(slot) = self.by_name.get_mut(moved.name.key()) {
                *slot = Slot::Local(index);
            }
        }
        self.roster_changed(gone.name.key());
        gone
    }

    /// A member another node announced; one that was there under the same name is replaced.
    /// `false` when the name is a member's here (the cluster's claim on names rules that out
    /// but for a member this node has not let go yet).
    fn insert_remote(&mut self, remote: Remote) -> bool {
        let key: Box<str> = remote.name.key().into();
        match self.by_name.get(&key).copied() {
            Some(Slot::Local(_)) => return false,
            Some(Slot::Remote(i)) => self.remote[i] = remote,
            None => {
                self.by_name
                    .insert(key.clone(), Slot::Remote(self.remote.len()));
                self.remote.push(remote);
            }
        }
        self.roster_changed(&key);
        true
    }

    fn remove_remote(&mut self, index: usize) -> Remote {
        let gone = self.remote.swap_remove(index);
        self.by_name.remove(gone.name.key());
        if let Some(moved) = self.remote.get(index) {
            if let Some(slot) = self.by_name.get_mut(moved.name.key()) {
                *slot = Slot::Remote(index);
            }
        }
        self.roster_changed(gone.name.key());
        gone
    }

    fn view(&self, slot: Slot) -> MemberView<'_> {
        match slot {
            Slot::Local(i) => self.members[i].view(),
            Slot::Remote(i) => self.remote[i].view(),
        }
    }

    fn by_id(&self, id: MemberId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Every change of `members` (who is in, their names, keys or admin status) calls this with
    /// the name key it concerns: the pages before that key, if full, are unchanged.
    fn roster_changed(&mut self, key: &str) {
        for slot in &mut self.pages {
            if slot
                .as_ref()
                .is_some_and(|p| p.full_to.as_deref().is_none_or(|last| last >= key))
            {
                *slot = None;
            }
        }
    }

    /// Page `page` of the member list as JSON, encoded now if it changed since it last was.
    pub(super) fn page_json(&mut self, page: usize, size: usize) -> Arc<RawValue> {
        if page >= self.count().div_ceil(size).max(1) {
            // Past the last page: empty, and no walk of the list (nor a cache slot) finds that.
            return raw_json::<[MemberView<'_>]>(&[]);
        }
        if self.pages.len() <= page {
            self.pages.resize_with(page + 1, || None);
        }
        if let Some(cached) = &self.pages[page] {
            return cached.members.clone();
        }
        let mut last = None;
        let views: Vec<MemberView<'_>> = self
            .by_name
            .iter()
            .skip(page * size)
            .take(size)
            .map(|(key, &slot)| {
                last = Some(key);
                self.view(slot)
            })
            .collect();
        let full_to = last.filter(|_| views.len() == size).cloned();
        let members = raw_json(views.as_slice());
        self.pages[page] = Some(Page {
            members: members.clone(),
            full_to,
        });
        members
    }

    fn page_frame(&mut self, page: usize, size: usize) -> ByteString {
        let total = self.count();
        let members = self.page_json(page, size);
        ServerFrame::Members {
            members: &members,
            page,
            pages: total.div_ceil(size).max(1),
            total,
        }
        .wire()
    }

    /// Pushes one frame to every member but `except`; returns how many got it.
    fn deliver(&self, frame: &ByteString, except: Option<ConnId>) -> usize {
        self.members
            .iter()
            .filter(|m| Some(m.conn) != except)
            .filter(|m| m.outbox.push(frame).is_ok())
            .count()
    }

    /// Queues one frame for every member but `except` without waking their writers; see
    /// [`Room::flush_notices`].
    fn deliver_held(&self, frame: &ByteString, except: Option<ConnId>) {
        for member in self.members.iter().filter(|m| Some(m.conn) != except) {
            let _ = member.outbox.push_held(frame);
        }
    }

    fn next_seq(&mut self, sent: Sent) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.sent.len() == SEQ_MEMORY {
            self.sent.pop_front();
            self.first_seq += 1;
        }
        self.sent.push_back(Some(sent));
        seq
    }

    /// A `seq` the cluster assigned: remembered in order, a gap (what this node missed while
    /// Redis was away) as forgotten; the node's own count goes on from it if Redis goes away.
    fn record_seq(&mut self, seq: u64, sent: Sent) {
        let end = self.first_seq + self.sent.len() as u64;
        if self.sent.is_empty()
            || seq < self.first_seq
            || seq.saturating_sub(end) >= SEQ_MEMORY as u64
        {
            self.sent.clear();
            self.first_seq = seq;
        } else if seq < end {
            return;
        }
        for _ in self.first_seq + self.sent.len() as u64..seq {
            self.sent.push_back(None);
        }
        self.sent.push_back(Some(sent));
        while self.sent.len() > SEQ_MEMORY {
            self.sent.pop_front();
            self.first_seq += 1;
        }
        self.next_seq = seq + 1;
    }

    fn conn_of(&self, id: MemberId) -> Option<ConnId> {
        self.by_id(id).map(|m| m.conn)
    }

    fn sent_slot(&mut self, seq: u64) -> Option<&mut Option<Sent>> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.sent.get_mut(index)
    }
}

/// How a member's socket ended, for [`Room::leave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// It said goodbye (a close with 1000) or broke the protocol: the others hear it at once.
    Now,
    /// It was lost, or closed in passing (1001 when a page reloads): the member stays for the
    /// leave grace, and the others hear nothing if it comes back with its `session` token.
    Lost,
}

/// Counts of what a relay delivered, for the metrics.
pub struct Relayed {
    pub recipients: usize,
    pub bytes: usize,
}

pub struct Room {
    pub id: RoomId,
    /// The credentials as they were when the room went live: joins into a live room need no
    /// store round trip, and keep working while the store is down.
    pub record: RoomRecord,
    limits: Limits,
    presence: Presence,
    /// The hub's map, which the room leaves when it empties.
    registry: Weak<Registry>,
    /// When the store's expiry was last pushed forward; see [`Room::due_for_extension`]. Held
    /// for a comparison, by joins only.
    extended: Mutex<Option<Instant>>,
    /// The timer that ends a room of fixed lifetime, stopped when this copy of the room goes:
    /// a room that goes live again and again must not leave a sleeping task each time.
    timer: Mutex<Option<tokio::task::AbortHandle>>,
    /// Members, `seq` and the unsend memory: held by one operation at a time (a relay, a join,
    /// a leave), never across an `.await`; a relay holds it while it pushes to every member's
    /// queue, so the room's frames reach everyone in one order. Taken before the hub's map.
    state: Mutex<RoomState>,
}

impl Drop for Room {
    fn drop(&mut self) {
        if let Some(timer) = self
            .timer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            timer.abort();
        }
    }
}

impl Room {
    pub(super) fn new(
        id: RoomId,
        record: RoomRecord,
        limits: Limits,
        presence: Presence,
        registry: Weak<Registry>,
    ) -> Self {
        let mut limits = limits;
        limits.max_members = record.member_cap(limits.max_members);
        let unsend_allowed = record.options.unsend;
        Self {
            id,
            record,
            limits,
            presence,
            registry,
            extended: Mutex::new(None),
            timer: Mutex::new(None),
            state: Mutex::new(RoomState {
                unsend_allowed,
                locked: false,
                members: Vec::new(),
                by_conn: HashMap::new(),
                remote: Vec::new(),
                by_name: BTreeMap::new(),
                next_seq: 1,
                sent: VecDeque::new(),
                first_seq: 1,
                closed: false,
                notices_due: false,
                pages: Vec::new(),
                joined: 0,
                left: 0,
                summary_due: false,
            }),
        }
    }

    /// Whether a room of `count` members is a crowd.
    fn crowd(&self, count: usize) -> bool {
        self.presence.crowd > 0 && count > self.presence.crowd
    }

    /// The cluster this node belongs to, if it does.
    fn cluster(&self) -> Option<Arc<Cluster>> {
        self.registry.upgrade().and_then(|r| r.cluster.clone())
    }

    /// Publishes an event of this room for the other nodes, in the order of the calls.
    fn tell_others(&self, event: &Event<'_>) {
        if let Some(cluster) = self.cluster() {
            cluster.post(&self.record.id_hash, event);
        }
    }

    /// A member here is gone: the other nodes drop it, and its name is free in the cluster.
    fn tell_others_gone(&self, id: MemberId, name: &MemberName, kicked_by: Option<&str>) {
        if let Some(cluster) = self.cluster() {
            cluster.post(
                &self.record.id_hash,
                &Event::Left {
                    node: cluster.node(),
                    member: id.0,
                    name: name.as_ref().into(),
                    kicked_by: kicked_by.map(Into::into),
                },
            );
            cluster.release_name(&self.record.id_hash, name);
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, RoomState> {
        // A panic while holding the lock would be a bug in this module; the state is still
        // consistent enough to keep relaying, so recover the guard rather than poisoning the room.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn member_count(&self) -> usize {
        self.lock().count()
    }

    /// Adds a member, or quietly moves a member to a new socket when `session` matches its
    /// latest token. The `welcome` is queued before the lock is released, so it precedes every
    /// room frame the newcomer gets.
    pub(super) fn join(self: &Arc<Self>, entry: &Entry) -> Result<MemberId, Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Gone);
        }
        let token = entry.token.clone();
        let existing = match state.by_name.get(entry.name.key()).copied() {
            Some(Slot::Remote(i)) if entry.claimed => {
                state.remove_remote(i);
                None
            }
            Some(Slot::Remote(_)) => return Err(Refused::Code(ErrorCode::NameTaken)),
            Some(Slot::Local(i)) => Some(i),
            None => None,
        };
        let (index, fresh) = match existing {
            Some(i) => {
                let resumes = entry
                    .session
                    .as_ref()
                    .is_some_and(|s| *s == state.members[i].token);
                if !resumes {
                    return Err(Refused::Code(ErrorCode::NameTaken));
                }
                let old_conn = state.members[i].conn;
                if !state.members[i].away {
                    entry
                        .replaced
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                state.by_conn.remove(&old_conn);
                state.by_conn.insert(entry.conn, i);
                let old = &mut state.members[i];
                let replaced = std::mem::replace(&mut old.outbox, entry.outbox.clone());
                let _ = replaced
                    .push(&ServerFrame::error(ErrorCode::SessionReplaced, None, None).wire());
                replaced.close(ErrorCode::SessionReplaced.close_code(), "session replaced");
                old.conn = entry.conn;
                old.name = entry.name.clone();
                // Admin status needs the admin password again: a session token alone (which a
                // reload keeps, and a thief could take) never makes an admin, and an admin made
                // by hand-over is one for this connection only.
                old.admin = entry.admin;
                old.pubkey = entry.pubkey.clone();
                old.token = token.clone();
                old.away = false;
                state.roster_changed(entry.name.key());
                (i, false)
            }
            None => {
                // A member moving in from another node with its token was inside already.
                if state.locked && !entry.admin && !entry.moved {
                    return Err(Refused::Code(ErrorCode::RoomLocked));
                }
                let max = self.limits.max_members;
                if max > 0 && state.count() >= max {
                    return Err(Refused::Code(ErrorCode::RoomFull));
                }
                let index = state.insert(Member {
                    id: MemberId(rand::random()),
                    conn: entry.conn,
                    name: entry.name.clone(),
                    admin: entry.admin,
                    pubkey: entry.pubkey.clone(),
                    token: token.clone(),
                    outbox: entry.outbox.clone(),
                    away: false,
                });
                (index, !entry.moved)
            }
        };
        let count = state.count();
        let first_page = state.page_json(0, self.presence.page_size());
        let me = &state.members[index];
        let (id, conn) = (me.id, me.conn);
        let welcome = ServerFrame::Welcome {
            room_id: self.id.as_ref().into(),
            you: me.view(),
            members: &first_page,
            member_count: count,
            session: token.encode().into(),
            limits: self.limits,
            options: self.record.options_view(),
            locked: state.locked,
        }
        .wire();
        let _ = me.outbox.push(&welcome);
        if fresh {
            let _ = me.outbox.push(&bot::greeting(me.name.as_ref(), count));
            if self.crowd(count) {
                state.joined += 1;
                self.summarise(&mut state);
            } else {
                let notice = bot::joined(me.view(), count);
                self.announce(&mut state, &notice, Some(conn));
            }
        }
        Ok(id)
    }

    /// A socket has closed: its member leaves (unless it was already removed, by a kick, a
    /// delete or a reconnect), and an emptied room leaves the hub. A lost socket's member leaves
    /// only after the leave grace, if it has not come back by then.
    pub fn leave(self: &Arc<Self>, conn: ConnId, departure: Departure) {
        let mut state = self.lock();
        let Some(&index) = state.by_conn.get(&conn) else {
            return;
        };
        if departure == Departure::Lost && !self.presence.leave_grace.is_zero() {
            if !std::mem::replace(&mut state.members[index].away, true) {
                let room = self.clone();
                let grace = self.presence.leave_grace;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    room.leave(conn, Departure::Now);
                });
            }
            return;
        }
        let was_crowd = self.crowd(state.count());
        let gone = state.remove(index);
        self.tell_others_gone(gone.id, &gone.name, None);
        self.announce_left(&mut state, gone.name.as_ref(), was_crowd);
        self.close_if_empty(&mut state);
    }

    /// Tells the members here that `name` left: in a crowd, counted into the next summary.
    fn announce_left(self: &Arc<Self>, state: &mut RoomState, name: &str, was_crowd: bool) {
        if was_crowd {
            state.left += 1;
            self.summarise(state);
        } else {
            let notice = bot::left(name, state.count());
            self.announce(state, &notice, None);
        }
    }

    /// `kick`: admins only. The target gets `kicked` and close 4403; the others hear it from
    /// the bot, with no separate `leave`.
    pub fn kick(self: &Arc<Self>, by: ConnId, target: &str) -> Result<(), ErrorCode> {
        let mut state = self.lock();
        let by_name = state.admin_name(by)?;
        match state.slot(target).ok_or(ErrorCode::NoSuchMember)? {
            Slot::Local(index) => self.remove_kicked(&mut state, index, &by_name),
            // The target's node carries it out, and tells every node.
            Slot::Remote(index) => {
                let target = &state.remote[index];
                self.tell_others(&Event::Kick {
                    node: target.node,
                    name: target.name.as_ref().into(),
                    by: by_name.as_str().into(),
                });
            }
        }
        Ok(())
    }

    /// `lock` and `unlock`: admins only. Every member (on every node) hears it from the bot.
    pub fn set_locked(self: &Arc<Self>, by: ConnId, locked: bool) -> Result<(), ErrorCode> {
        let mut state = self.lock();
        let by_name = state.admin_name(by)?;
        self.lock_here(&mut state, locked, &by_name);
        if let Some(cluster) = self.cluster() {
            cluster.set_lock(&self.record.id_hash, locked);
            self.tell_others(&Event::Locked {
                node: cluster.node(),
                locked,
                by: by_name.as_str().into(),
            });
        }
        Ok(())
    }

    /// The room was locked before it went live here (the cluster keeps the lock).
    pub fn locked_elsewhere(&self) {
        self.lock().locked = true;
    }

    pub(super) fn lock_here(self: &Arc<Self>, state: &mut RoomState, locked: bool, by: &str) {
        if std::mem::replace(&mut state.locked, locked) != locked {
            let notice = bot::locked(by, locked, state.count());
            self.announce(state, &notice, None);
        }
    }

    /// `make_admin`: admins only. The member becomes an admin for as long as it stays; every
    /// member (on every node) hears it from the bot.
    pub fn make_admin(self: &Arc<Self>, by: ConnId, target: &str) -> Result<(), ErrorCode> {
        let mut state = self.lock();
        let by_name = state.admin_name(by)?;
        match state.slot(target).ok_or(ErrorCode::NoSuchMember)? {
            Slot::Local(index) => self.promote_local(&mut state, index, &by_name),
            Slot::Remote(index) => {
                let target = &state.remote[index];
                self.tell_others(&Event::Promote {
                    node: target.node,
                    name: target.name.as_ref().into(),
                    by: by_name.as_str().into(),
                });
            }
        }
        Ok(())
    }

    /// Makes the member here at `index` an admin, and tells every node.
    pub(super) fn promote_local(self: &Arc<Self>, state: &mut RoomState, index: usize, by: &str) {
        if std::mem::replace(&mut state.members[index].admin, true) {
            return;
        }
        let name = state.members[index].name.clone();
        state.roster_changed(name.key());
        let notice = bot::made_admin(state.members[index].view(), by, state.count());
        self.announce(state, &notice, None);
        if let Some(cluster) = self.cluster() {
            self.tell_others(&Event::Promoted {
                node: cluster.node(),
                name: name.as_ref().into(),
                by: by.into(),
            });
        }
    }

    /// Removes a member here for a kick by `by`: it gets `kicked` and close 4403, the others
    /// (on every node) hear it from the bot.
    fn remove_kicked(self: &Arc<Self>, state: &mut RoomState, index: usize, by: &str) {
        let gone = state.remove(index);
        let _ = gone
            .outbox
            .push(&ServerFrame::Kicked { by: by.into() }.wire());
        gone.outbox.close(close::KICKED, "kicked");
        self.tell_others_gone(gone.id, &gone.name, Some(by));
        let notice = bot::kicked(gone.name.as_ref(), by, state.count());
        self.announce(state, &notice, None);
        self.close_if_empty(state);
    }

    /// The one way a room ends without a delete: once its last member is gone (or a join that
    /// made it live was refused), it is closed and leaves the hub's map, under its own lock, so
    /// a join that finds it afterwards is told to look again ([`Refused::Gone`]).
    pub(super) fn close_if_empty(&self, state: &mut RoomState) {
        if state.members.is_empty() && !std::mem::replace(&mut state.closed, true) {
            if let Some(registry) = self.registry.upgrade() {
                registry.forget(self);
            }
        }
    }

    /// Tears the room down: every member gets `room_deleted` and close 4410 at once.
    pub(super) fn delete(&self) {
        self.end(None);
    }

    pub(super) fn hold_timer(&self, timer: tokio::task::AbortHandle) {
        *self.timer.lock().unwrap_or_else(|e| e.into_inner()) = Some(timer);
    }

    /// The room's fixed lifetime ran out: torn down as a deletion is, and said so.
    pub fn expire(&self) {
        self.end(Some("expired"));
    }

    fn end(&self, reason: Option<&str>) {
        let mut state = self.lock();
        let frame = ServerFrame::RoomDeleted {
            reason: reason.map(Into::into),
        }
        .wire();
        for member in state.members.drain(..) {
            let _ = member.outbox.push(&frame);
            member.outbox.close(close::ROOM_DELETED, "room deleted");
        }
        state.by_conn.clear();
        state.by_name.clear();
        state.pages.clear();
        self.close_if_empty(&mut state);
    }

    /// The server is draining: every member is closed with 1001.
    pub(super) fn going_away(&self) {
        for member in self.lock().members.iter() {
            member
                .outbox
                .close(close::GOING_AWAY, "server shutting down");
        }
    }

    /// Queues a bot notice for every member present but `except`, held for [`NOTICE_HOLD`]: the
    /// first notice of a burst starts the timer that flushes them all.
    fn announce(
        self: &Arc<Self>,
        state: &mut RoomState,
        notice: &ByteString,
        except: Option<ConnId>,
    ) {
        state.deliver_held(notice, except);
        if !std::mem::replace(&mut state.notices_due, true) {
            let room = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(NOTICE_HOLD).await;
                room.flush_notices();
            });
        }
    }

    /// Counts a join or a leave in a crowd; the first of a second starts the timer of the
    /// `summary` that tells them all.
    fn summarise(self: &Arc<Self>, state: &mut RoomState) {
        if !std::mem::replace(&mut state.summary_due, true) {
            let room = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(SUMMARY_EVERY).await;
                room.send_summary();
            });
        }
    }

    /// One `summary` to every member present, once per change of a second.
    fn send_summary(&self) {
        let mut state = self.lock();
        state.summary_due = false;
        let (joined, left) = (
            std::mem::take(&mut state.joined),
            std::mem::take(&mut state.left),
        );
        if state.closed || joined + left == 0 {
            return;
        }
        let frame = bot::summary(joined, left, state.count());
        state.deliver(&frame, None);
    }

    /// Sends the held notices on their way: wakes every member's writer that has frames waiting.
    pub fn flush_notices(&self) {
        let mut state = self.lock();
        state.notices_due = false;
        for member in &state.members {
            member.outbox.flush();
        }
    }

    /// True at most once a minute: a busy room pushes its store expiry forward without a store
    /// write per join.
    pub fn due_for_extension(&self) -> bool {
        if self.record.options.lifetime == Lifetime::Fixed {
            return false;
        }
        let mut last = self.extended.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|t| t.elapsed().as_secs() >= 60);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    pub fn is_admin(&self, conn: ConnId) -> bool {
        self.lock().member(conn).is_some_and(|m| m.admin)
    }

    /// `send`: a `message` to every member, the sender included.
    pub fn send(&self, conn: ConnId, txn: &str, body: &RawValue) -> Option<Relayed> {
        let mut state = self.lock();
        let index = *state.by_conn.get(&conn)?;
        let author = state.members[index].id;
        let seq = state.next_seq(Sent {
            author,
            dm_to: None,
        });
        let sender = &state.members[index];
        let frame = ServerFrame::Message {
            seq,
            ts: now_ms(),
            from: sender.name.as_ref().into(),
            txn: txn.into(),
            body,
        }
        .wire();
        let recipients = state.deliver(&frame, None);
        Some(Relayed {
            recipients,
            bytes: recipients * frame.len(),
        })
    }

    /// `dm`: to one member and an echo to the sender.
    pub fn dm(
        &self,
        conn: ConnId,
        to: &str,
        txn: &str,
        body: &RawValue,
    ) -> Result<Relayed, ErrorCode> {
        let mut state = self.lock();
        let from = *state.by_conn.get(&conn).ok_or(ErrorCode::Forbidden)?;
        let Some(Slot::Local(to)) = state.slot(to) else {
            return Err(ErrorCode::NoSuchMember);
        };
        let (author, target) = (state.members[from].id, state.members[to].id);
        let seq = state.next_seq(Sent {
            author,
            dm_to: Some(target),
        });
        let (sender, recipient) = (&state.members[from], &state.members[to]);
        let frame = ServerFrame::Dm {
            seq,
            ts: now_ms(),
            from: sender.name.as_ref().into(),
            to: recipient.name.as_ref().into(),
            txn: txn.into(),
            body,
            pubkey: sender.pubkey.as_ref().map(|k| k.as_ref().into()),
        }
        .wire();
        let mut recipients = usize::from(recipient.outbox.push(&frame).is_ok());
        if author != target {
            recipients += usize::from(sender.outbox.push(&frame).is_ok());
        }
        Ok(Relayed {
            recipients,
            bytes: recipients * frame.len(),
        })
    }

    pub fn typing(&self, conn: ConnId, active: bool) {
        let state = self.lock();
        if let Some(me) = state.member(conn) {
            let frame = ServerFrame::Typing {
                from: me.name.as_ref().into(),
                active,
            }
            .wire();
            state.deliver(&frame, Some(conn));
        }
    }

    pub fn read(&self, conn: ConnId, seq: u64) {
        let state = self.lock();
        if let Some(me) = state.member(conn) {
            let frame = ServerFrame::Read {
                from: me.name.as_ref().into(),
                seq,
            }
            .wire();
            state.deliver(&frame, Some(conn));
        }
    }

    /// `unsend`: its author may take back anything it sent; an admin may take back room
    /// messages but not direct messages, which are private to their two parties.
    pub fn unsend(&self, conn: ConnId, seq: Option<u64>) -> Result<(), ErrorCode> {
        let mut state = self.lock();
        let (seq, by, author) = Self::may_unsend(&mut state, conn, seq)?;
        Self::take_back(&mut state, seq, &by, author);
        Ok(())
    }

    /// Whether the member on `conn` may unsend `seq`: the `seq`, and the member's name.
    /// Also the message's author, which the other nodes check their memory of `seq` against.
    pub fn check_unsend(
        &self,
        conn: ConnId,
        seq: Option<u64>,
    ) -> Result<(u64, String, MemberId), ErrorCode> {
        Self::may_unsend(&mut self.lock(), conn, seq)
    }

    fn may_unsend(
        state: &mut RoomState,
        conn: ConnId,
        seq: Option<u64>,
    ) -> Result<(u64, String, MemberId), ErrorCode> {
        let (me_id, me_admin, me_name) = state
            .member(conn)
            .map(|m| (m.id, m.admin, m.name.as_ref().to_owned()))
            .ok_or(ErrorCode::Forbidden)?;
        if !state.unsend_allowed {
            return Err(ErrorCode::Forbidden);
        }
        let seq = seq.ok_or(ErrorCode::NoSuchMessage)?;
        let sent = state
            .sent_slot(seq)
            .and_then(|slot| *slot)
            .ok_or(ErrorCode::NoSuchMessage)?;
        if sent.author == me_id || (me_admin && sent.dm_to.is_none()) {
            Ok((seq, me_name, sent.author))
        } else {
            Err(ErrorCode::Forbidden)
        }
    }

    /// Forgets `seq` and tells those who got it; nothing when it was already taken back, or
    /// when this room remembers another author for it (after an outage, two nodes may each have
    /// numbered messages of their own).
    fn take_back(state: &mut RoomState, seq: u64, by: &str, author: MemberId) {
        let Some(slot) = state.sent_slot(seq) else {
            return;
        };
        let Some(sent) = slot.take_if(|sent| sent.author == author) else {
            return;
        };
        let frame = ServerFrame::Unsent { seq, by: by.into() }.wire();
        match sent.dm_to {
            None => {
                state.deliver(&frame, None);
            }
            Some(to) => {
                for party in [Some(sent.author), (to != sent.author).then_some(to)]
                    .into_iter()
                    .flatten()
                    .filter_map(|id| state.by_id(id))
                {
                    let _ = party.outbox.push(&frame);
                }
            }
        }
    }

    /// The `seq` this room would give next, by what it has seen.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }

    /// Who the member on `conn` is, for an event that carries it to the other nodes.
    pub fn author(&self, conn: ConnId) -> Option<(MemberId, String)> {
        self.lock()
            .member(conn)
            .map(|m| (m.id, m.name.as_ref().to_owned()))
    }

    /// The `members` answer: page `page` (0 by default), or the page that holds `name`; the same
    /// shared bytes for every asker until the list changes.
    pub fn members_answer(
        &self,
        page: Option<u64>,
        name: Option<&str>,
    ) -> Result<ByteString, ErrorCode> {
        let mut state = self.lock();
        let size = self.presence.page_size();
        let page = match name {
            Some(name) => {
                let key = MemberName::parse(name).map_err(|_| ErrorCode::NoSuchMember)?;
                if !state.by_name.contains_key(key.key()) {
                    return Err(ErrorCode::NoSuchMember);
                }
                state
                    .by_name
                    .range::<str, _>((Bound::Unbounded, Bound::Excluded(key.key())))
                    .count()
                    / size
            }
            None => usize::try_from(page.unwrap_or(0)).unwrap_or(usize::MAX),
        };
        Ok(state.page_frame(page, size))
    }
}
