//! What the client does with each frame the server sends, matched on the typed frame.

use ephemera_protocol::{crypto, BotEvent, ClientFrame, ErrorCode, ServerFrame};
use serde_json::Value;

use super::{
    events::{Ended, Event, Member},
    plain::{Plain, Said},
    Echo, Inner,
};

/// Handles one text frame of the joined socket; frames it cannot read are ignored, as the
/// contract asks of frame types a client does not know.
pub(super) fn handle(inner: &Inner, text: &str) {
    let Ok(frame) = serde_json::from_str::<ServerFrame<'_, Value>>(text) else {
        return;
    };
    let room = || inner.room_id.clone();
    match frame {
        ServerFrame::Message {
            seq,
            ts,
            from,
            txn,
            body,
        } => relayed(inner, seq, ts, from.into_owned(), None, &txn, &body),
        ServerFrame::Dm {
            seq,
            ts,
            from,
            to,
            txn,
            body,
            pubkey,
        } => {
            // In a crowd the sender may be on no page this client holds, or hold a name whose
            // earlier owner's key this client still has (a crowd's leaves are not named): the
            // sender's key comes along, and it is the one to use.
            if let Some(pubkey) = pubkey {
                let mut state = inner.state();
                if from != state.name {
                    match state.members.iter_mut().find(|m| m.name == from) {
                        Some(known) if known.pubkey.as_deref() != Some(pubkey.as_ref()) => {
                            known.pubkey = Some(pubkey.into_owned());
                        }
                        Some(_) => {}
                        None => state.members.push(Member {
                            name: from.to_string(),
                            admin: false,
                            pubkey: Some(pubkey.into_owned()),
                        }),
                    }
                }
            }
            relayed(
                inner,
                seq,
                ts,
                from.into_owned(),
                Some(to.into_owned()),
                &txn,
                &body,
            )
        }
        ServerFrame::Bot {
            event,
            member,
            name,
            text,
            members,
            ..
        } => {
            {
                let mut state = inner.state();
                state.member_count = members;
                // A crowd that shrank back to one page: its leaves were counted, not named, so
                // the list this client holds is asked for again, whole.
                let small_again = match state.page_size {
                    Some(size) => members <= size,
                    None => members < state.members.len(),
                };
                if event == BotEvent::Summary && small_again {
                    state.page_size = None;
                    if let Some(out) = &state.out {
                        let ask: ClientFrame<'_, Value> = ClientFrame::Members {
                            page: None,
                            name: None,
                        };
                        let _ = out.send(super::to_text(&ask));
                    }
                }
                match (event, member, name) {
                    (BotEvent::Join | BotEvent::Admin, Some(member), _) => {
                        if event == BotEvent::Admin && member.name == state.name {
                            state.admin = true;
                        }
                        state.members.retain(|m| m.name != member.name);
                        state.members.push(member.into());
                    }
                    (BotEvent::Leave | BotEvent::Kick, _, Some(name)) => {
                        state.members.retain(|m| m.name != name);
                        state.dm_keys.remove(name.as_ref());
                        state.forget_author(&name);
                    }
                    _ => {}
                }
            }
            inner.emit(Event::Bot {
                room: room(),
                event: event.as_str().to_owned(),
                text: text.into_owned(),
            });
        }
        ServerFrame::Members {
            members,
            page,
            pages,
            total,
        } => {
            {
                let mut state = inner.state();
                state.member_count = total.max(members.len());
                if page >= pages {
                    // Past the last page (the room shrank meanwhile): nothing to learn.
                } else if pages == 1 {
                    state.members = members.iter().cloned().map(Into::into).collect();
                    state.page_size = None;
                } else {
                    // A page of a crowd's list: what this client holds is a cache of pages.
                    if page + 1 < pages {
                        state.page_size = Some(members.len());
                    }
                    for member in members.iter().cloned().map(Member::from) {
                        state.members.retain(|m| m.name != member.name);
                        state.members.push(member);
                    }
                }
            }
            inner.members_changed.notify_waiters();
        }
        ServerFrame::Typing { from, active } => inner.emit(Event::Typing {
            room: room(),
            from: from.into_owned(),
            active,
        }),
        ServerFrame::Read { from, seq } => inner.emit(Event::Read {
            room: room(),
            from: from.into_owned(),
            seq,
        }),
        ServerFrame::Unsent { seq, by } => inner.emit(Event::Unsent {
            room: room(),
            seq,
            by: by.into_owned(),
        }),
        ServerFrame::Kicked { by } => {
            inner.state().ended = Some(Ended::Kicked {
                by: by.into_owned(),
            })
        }
        ServerFrame::RoomDeleted { reason } => {
            inner.state().ended = Some(match reason.as_deref() {
                Some("expired") => Ended::Expired,
                _ => Ended::Deleted,
            })
        }
        ServerFrame::Error {
            code,
            message,
            txn,
            retry_after_ms,
        } => {
            let waiter = txn.and_then(|t| inner.state().pending.remove(t.as_ref()));
            match waiter {
                Some(waiter) if ErrorCode::parse(&code) == Some(ErrorCode::RateLimited) => {
                    let _ = waiter.send(Echo::RateLimited(retry_after_ms.unwrap_or(1000)));
                }
                Some(waiter) => {
                    let _ = waiter.send(Echo::Failed(code.into_owned()));
                }
                None => {
                    // The answer to a look-up of someone who is not there.
                    if ErrorCode::parse(&code) == Some(ErrorCode::NoSuchMember) {
                        inner.state().misses += 1;
                        inner.members_changed.notify_waiters();
                    }
                    inner.emit(Event::Notice {
                        room: room(),
                        code: code.into_owned(),
                        message: message.into_owned(),
                    })
                }
            }
        }
        ServerFrame::Welcome { .. } | ServerFrame::Pong { .. } => {}
    }
}

/// A `message` or `dm`: resolves the sender's wait for its echo, then opens the envelope with
/// the room key or the pair's DM key. A plaintext whose `from` is not the sender's name is
/// someone else's words replayed: it reads as undecryptable.
fn relayed(
    inner: &Inner,
    seq: u64,
    ts: i64,
    from: String,
    to: Option<String>,
    txn: &str,
    body: &Value,
) {
    let room = inner.room_id.clone();
    let mut state = inner.state();
    if let Some(waiter) = state.pending.remove(txn) {
        let _ = waiter.send(Echo::Done(seq));
    }
    let key = match &to {
        None => Some(inner.enc),
        Some(to) => {
            let other = if from == state.name { to } else { &from };
            let other = other.clone();
            inner.dm_key(&mut state, &other)
        }
    };
    let said = key
        .and_then(|key| crypto::open::<Plain>(&key, &inner.room_id, body).ok())
        .filter(|p| p.from == from)
        .map(Plain::said);
    let event =
        match said {
            None => Some(Event::Undecryptable { room, seq, from }),
            // A kind this client does not know: nothing to show.
            Some(None) => None,
            Some(Some(said)) => {
                // The conversation: the room, or the DM with the other party.
                let conversation = to.as_ref().map(|to| {
                    if *to == state.name {
                        from.clone()
                    } else {
                        to.clone()
                    }
                });
                let conversation = conversation.as_deref();
                state.remember(seq, &from, conversation);
                match said {
                    Said::Text {
                        text,
                        reply_to,
                        ttl,
                    } => Some(Event::Message {
                        room,
                        seq,
                        ts,
                        from,
                        to,
                        text,
                        reply_to,
                        ttl,
                    }),
                    Said::File { chunk, .. } => state.files.add(room, seq, ts, from, to, chunk),
                    Said::React { target, emoji, on } => state
                        .is_in(target, conversation)
                        .then_some(Event::Reaction {
                            room,
                            seq,
                            from,
                            to,
                            target,
                            emoji,
                            on,
                        }),
                    Said::Edit { target, text } => state
                        .is_by(target, &from, conversation)
                        .then_some(Event::Edit {
                            room,
                            seq,
                            from,
                            to,
                            target,
                            text,
                        }),
                }
            }
        };
    drop(state);
    if let Some(event) = event {
        inner.emit(event);
    }
}
