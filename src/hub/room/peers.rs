//! A room's side of cluster mode: the events of the other nodes (and this node's own, which
//! come back from Redis like everyone's) applied to the room here, and the other nodes' members
//! kept beside this node's, so that lists, counts, names and DMs cover the whole room.

use std::sync::Arc;

use super::{Member, Remote, Room, RoomState, Sent, Slot};
use crate::{
    bot,
    cluster::{Event, Peer},
    domain::{MemberName, PublicKey, SessionToken},
    hub::{ConnId, MemberId},
    protocol::{ErrorCode, ServerFrame, Wire},
};

/// The two parties of a DM, as the event that carries it names them.
pub struct DmParties {
    pub from: MemberId,
    pub from_name: String,
    pub pubkey: Option<String>,
    pub to: MemberId,
    pub to_name: String,
}

impl Peer<'_> {
    fn remote(&self, node: u64) -> Option<Remote> {
        Some(Remote {
            id: MemberId(self.member),
            node,
            name: MemberName::parse(&self.name).ok()?,
            admin: self.admin,
            pubkey: match &self.pubkey {
                Some(key) => Some(PublicKey::parse(key).ok()?),
                None => None,
            },
        })
    }
}

impl Member {
    /// This member as the other nodes are told of it.
    fn peer(&self) -> Peer<'_> {
        Peer {
            member: self.id.0,
            name: self.name.as_ref().into(),
            admin: self.admin,
            pubkey: self.pubkey.as_ref().map(|k| k.as_ref().into()),
        }
    }
}

impl Room {
    /// The member on `conn` as the other nodes are told of it.
    pub fn peer(&self, conn: ConnId) -> Option<Peer<'static>> {
        let state = self.lock();
        let me = state.member(conn)?.peer();
        Some(Peer {
            name: me.name.into_owned().into(),
            pubkey: me.pubkey.map(|k| k.into_owned().into()),
            ..me
        })
    }

    /// Who a DM from `conn` to `to` goes between, wherever the recipient is.
    pub fn dm_parties(&self, conn: ConnId, to: &str) -> Result<DmParties, ErrorCode> {
        let state = self.lock();
        let me = state.member(conn).ok_or(ErrorCode::Forbidden)?;
        let (to, to_name) = match state.slot(to).ok_or(ErrorCode::NoSuchMember)? {
            Slot::Local(i) => (state.members[i].id, state.members[i].name.as_ref()),
            Slot::Remote(i) => (state.remote[i].id, state.remote[i].name.as_ref()),
        };
        Ok(DmParties {
            from: me.id,
            from_name: me.name.as_ref().to_owned(),
            pubkey: me.pubkey.as_ref().map(|k| k.as_ref().to_owned()),
            to,
            to_name: to_name.to_owned(),
        })
    }

    /// An event of this room from the cluster: delivered to the members here as it would have
    /// been on one node, `seq` as the cluster assigned it. `me` is this node: its own presence
    /// events come back too, and change nothing.
    /// Returns the bytes of `message` and `dm` frames it queued.
    pub fn apply(self: &Arc<Self>, seq: u64, event: &Event<'_>, me: u64) -> usize {
        let mut state = self.lock();
        match event {
            Event::Message {
                member,
                from,
                txn,
                body,
                ts,
            } => {
                state.record_seq(
                    seq,
                    Sent {
                        author: MemberId(*member),
                        dm_to: None,
                    },
                );
                let frame = ServerFrame::Message {
                    seq,
                    ts: *ts,
                    from: from.clone(),
                    txn: txn.clone(),
                    body,
                }
                .wire();
                return state.deliver(&frame, None) * frame.len();
            }
            Event::Dm {
                member,
                from,
                to_member,
                to,
                txn,
                body,
                pubkey,
                ts,
            } => {
                let (author, target) = (MemberId(*member), MemberId(*to_member));
                state.record_seq(
                    seq,
                    Sent {
                        author,
                        dm_to: Some(target),
                    },
                );
                let frame = ServerFrame::Dm {
                    seq,
                    ts: *ts,
                    from: from.clone(),
                    to: to.clone(),
                    txn: txn.clone(),
                    body,
                    pubkey: pubkey.clone(),
                }
                .wire();
                return [Some(author), (author != target).then_some(target)]
                    .into_iter()
                    .flatten()
                    .filter_map(|id| state.by_id(id))
                    .filter(|party| party.outbox.push(&frame).is_ok())
                    .count()
                    * frame.len();
            }
            Event::Typing {
                member,
                from,
                active,
            } => {
                let frame = ServerFrame::Typing {
                    from: from.clone(),
                    active: *active,
                }
                .wire();
                let sender = state.conn_of(MemberId(*member));
                state.deliver(&frame, sender);
            }
            Event::Read { member, from, seq } => {
                let frame = ServerFrame::Read {
                    from: from.clone(),
                    seq: *seq,
                }
                .wire();
                let sender = state.conn_of(MemberId(*member));
                state.deliver(&frame, sender);
            }
            Event::Unsent { seq, by, author } => {
                Self::take_back(&mut state, *seq, by, MemberId(*author));
            }
            Event::Joined { node, .. }
            | Event::Left { node, .. }
            | Event::Roster { node, .. }
            | Event::Locked { node, .. }
            | Event::Promoted { node, .. }
                if *node == me => {}
            Event::Joined { node, peer, moved } => {
                self.peer_joined(&mut state, *node, peer, *moved);
            }
            Event::Left {
                member,
                name,
                kicked_by,
                ..
            } => self.peer_left(&mut state, MemberId(*member), name, kicked_by.as_deref()),
            Event::Hello { node } if *node != me => {
                self.tell_others(&Self::roster(&state, me));
            }
            Event::Hello { .. } => {}
            Event::Roster { node, members } => self.take_roster(&mut state, *node, members),
            Event::Locked { locked, by, .. } => self.lock_here(&mut state, *locked, by),
            Event::Promote { node, name, by } => {
                if *node == me {
                    if let Some(Slot::Local(index)) = state.slot(name) {
                        self.promote_local(&mut state, index, by);
                    }
                }
            }
            Event::Promoted { name, by, .. } => {
                if let Some(Slot::Remote(index)) = state.slot(name) {
                    if !std::mem::replace(&mut state.remote[index].admin, true) {
                        let key = state.remote[index].name.clone();
                        state.roster_changed(key.key());
                        let view = state.remote[index].view();
                        let notice = bot::made_admin(view, by, state.count());
                        self.announce(&mut state, &notice, None);
                    }
                }
            }
            Event::Kick { node, name, by } => {
                if *node == me {
                    if let Some(Slot::Local(index)) = state.slot(name) {
                        self.remove_kicked(&mut state, index, by);
                    }
                }
            }
        }
        0
    }

    /// This node's members, for the others.
    fn roster(state: &RoomState, me: u64) -> Event<'_> {
        let members = state.members.iter().map(Member::peer).collect();
        Event::Roster { node: me, members }
    }

    /// Tells the other nodes who is here (after an outage, when they may have dropped them or
    /// missed their comings and goings), and asks for theirs.
    pub fn announce_roster(&self, me: u64) {
        let state = self.lock();
        self.tell_others(&Self::roster(&state, me));
        self.tell_others(&Event::Hello { node: me });
    }

    /// The names of the members here and their tokens, to claim again after an outage.
    pub fn local_claims(&self) -> Vec<(MemberName, SessionToken)> {
        self.lock()
            .members
            .iter()
            .map(|m| (m.name.clone(), m.token.clone()))
            .collect()
    }

    /// A node's whole list: who it no longer has left (the members here hear it), who is new is
    /// added quietly, and the members here get the first page again, since their list was
    /// incomplete.
    fn take_roster(self: &Arc<Self>, state: &mut RoomState, node: u64, members: &[Peer<'_>]) {
        let listed: std::collections::HashSet<&str> =
            members.iter().map(|p| p.name.as_ref()).collect();
        for index in (0..state.remote.len()).rev() {
            let remote = &state.remote[index];
            if remote.node == node && !listed.contains(remote.name.as_ref()) {
                let was_crowd = self.crowd(state.count());
                let gone = state.remove_remote(index);
                self.announce_left(state, gone.name.as_ref(), was_crowd);
            }
        }
        let added = members
            .iter()
            .filter_map(|peer| peer.remote(node))
            .filter(|remote| !state.by_name.contains_key(remote.name.key()))
            .collect::<Vec<_>>();
        if !added.is_empty() {
            for remote in added {
                state.insert_remote(remote);
            }
            let frame = state.page_frame(0, self.presence.page_size());
            state.deliver(&frame, None);
        }
    }

    /// The other nodes that hold members of this room.
    pub fn remote_nodes(&self) -> Vec<u64> {
        let mut nodes: Vec<u64> = self.lock().remote.iter().map(|r| r.node).collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// `node` is gone (its heartbeat lapsed): its members leave, as each would have; their
    /// names, to free in the cluster. From the end, so that each removal moves a member already
    /// looked at.
    pub fn drop_node(self: &Arc<Self>, node: u64) -> Vec<MemberName> {
        let mut state = self.lock();
        let mut gone = Vec::new();
        for index in (0..state.remote.len()).rev() {
            if state.remote[index].node == node {
                let was_crowd = self.crowd(state.count());
                let member = state.remove_remote(index);
                self.announce_left(&mut state, member.name.as_ref(), was_crowd);
                gone.push(member.name);
            }
        }
        gone
    }

    /// Another node's member joined (or came back): the members here hear it as they would a
    /// join here.
    fn peer_joined(
        self: &Arc<Self>,
        state: &mut RoomState,
        node: u64,
        peer: &Peer<'_>,
        moved: bool,
    ) {
        let Some(remote) = peer.remote(node) else {
            return;
        };
        let here = state.by_name.get(remote.name.key()).copied();
        if let (Some(Slot::Local(_)), false) = (here, moved) {
            // Only a member showing its token takes a name held here (a Redis restarted empty
            // may have lost the claim for a moment).
            return;
        }
        if let Some(Slot::Local(index)) = here {
            // The member came back through another node with its token: this socket is the
            // old one. Nobody else hears of it, as with a reconnect to the same node.
            let moved = state.remove(index);
            let _ = moved
                .outbox
                .push(&ServerFrame::error(ErrorCode::SessionReplaced, None, None).wire());
            moved
                .outbox
                .close(ErrorCode::SessionReplaced.close_code(), "session replaced");
            state.insert_remote(remote);
            self.close_if_empty(state);
            return;
        }
        let fresh = !state.by_name.contains_key(remote.name.key());
        let view = remote.view().into_owned();
        if !state.insert_remote(remote) || !fresh {
            return;
        }
        let count = state.count();
        if self.crowd(count) {
            state.joined += 1;
            self.summarise(state);
        } else {
            let notice = bot::joined(view, count);
            self.announce(state, &notice, None);
        }
    }

    /// Another node's member left, or was kicked there.
    fn peer_left(
        self: &Arc<Self>,
        state: &mut RoomState,
        member: MemberId,
        name: &str,
        kicked_by: Option<&str>,
    ) {
        let Some(Slot::Remote(index)) = state.slot(name) else {
            return;
        };
        if state.remote[index].id != member {
            return;
        }
        let was_crowd = self.crowd(state.count());
        let gone = state.remove_remote(index);
        match kicked_by {
            Some(by) => {
                let notice = bot::kicked(gone.name.as_ref(), by, state.count());
                self.announce(state, &notice, None);
            }
            None => self.announce_left(state, gone.name.as_ref(), was_crowd),
        }
    }
}
