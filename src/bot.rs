//! The bot: the server's own voice. It runs as its own task with a typed inbox, so the hub only
//! drops an event in and goes on; the bot words the notice, serialises it once and hands it to
//! the room. Events arrive in the order the hub saw them, so a `join` is never announced after
//! the same member's `leave`.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{
    hub::{Audience, ConnId, Room},
    protocol::{now_ms, BotEvent, MemberView, ServerFrame},
};

enum Event {
    Joined {
        room: Arc<Room>,
        conn: ConnId,
        name: String,
        admin: bool,
        pubkey: Option<String>,
        count: usize,
        audience: Audience,
    },
    Left {
        room: Arc<Room>,
        name: String,
        count: usize,
        audience: Audience,
    },
    Kicked {
        room: Arc<Room>,
        name: String,
        by: String,
        count: usize,
        audience: Audience,
    },
}

/// The hub's handle on the bot's inbox.
#[derive(Clone)]
pub struct Bot {
    /// Unbounded so the hub never waits on the bot while it holds a room lock; each event is a
    /// few words, and the task drains them as fast as the rooms take frames.
    tx: mpsc::UnboundedSender<Event>,
}

fn members_phrase(count: usize) -> String {
    match count {
        1 => "1 member here".to_owned(),
        n => format!("{n} members here"),
    }
}

impl Bot {
    /// Starts the bot's task on the current runtime; it ends when every handle is dropped.
    pub fn spawn() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                announce(event);
            }
        });
        Self { tx }
    }

    pub fn joined(
        &self,
        room: Arc<Room>,
        conn: ConnId,
        member: &MemberView<'_>,
        count: usize,
        audience: Audience,
    ) {
        let _ = self.tx.send(Event::Joined {
            room,
            conn,
            name: member.name.to_owned(),
            admin: member.admin,
            pubkey: member.pubkey.map(str::to_owned),
            count,
            audience,
        });
    }

    pub fn left(&self, room: Arc<Room>, name: &str, count: usize, audience: Audience) {
        let _ = self.tx.send(Event::Left {
            room,
            name: name.to_owned(),
            count,
            audience,
        });
    }

    pub fn kicked(&self, room: Arc<Room>, name: &str, by: &str, count: usize, audience: Audience) {
        let _ = self.tx.send(Event::Kicked {
            room,
            name: name.to_owned(),
            by: by.to_owned(),
            count,
            audience,
        });
    }
}

fn announce(event: Event) {
    let ts = now_ms();
    match event {
        Event::Joined {
            room,
            conn,
            name,
            admin,
            pubkey,
            count,
            audience,
        } => {
            let greeting = format!(
                "Welcome, {name}. {}. Nothing said here is stored: messages vanish when you leave.",
                members_phrase(count)
            );
            let welcome = ServerFrame::Bot {
                event: BotEvent::Welcome,
                member: None,
                name: None,
                members: count,
                text: &greeting,
                ts,
            };
            room.send_to(conn, &welcome.encode());
            let text = format!("{name} joined. {}.", members_phrase(count));
            let join = ServerFrame::Bot {
                event: BotEvent::Join,
                member: Some(MemberView {
                    name: &name,
                    admin,
                    pubkey: pubkey.as_deref(),
                }),
                name: None,
                members: count,
                text: &text,
                ts,
            };
            room.announce(&join.encode(), &audience);
        }
        Event::Left {
            room,
            name,
            count,
            audience,
        } => {
            let text = format!("{name} left. {}.", members_phrase(count));
            let frame = ServerFrame::Bot {
                event: BotEvent::Leave,
                member: None,
                name: Some(&name),
                members: count,
                text: &text,
                ts,
            };
            room.announce(&frame.encode(), &audience);
        }
        Event::Kicked {
            room,
            name,
            by,
            count,
            audience,
        } => {
            let text = format!("{name} was removed by {by}. {}.", members_phrase(count));
            let frame = ServerFrame::Bot {
                event: BotEvent::Kick,
                member: None,
                name: Some(&name),
                members: count,
                text: &text,
                ts,
            };
            room.announce(&frame.encode(), &audience);
        }
    }
}
