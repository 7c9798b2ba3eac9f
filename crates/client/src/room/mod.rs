//! One joined room, for a client: the keys, what it sends, and what happens in the room as
//! typed [`Event`]s. Several rooms can feed one event channel.
//!
//! - [`events`]: what the room tells its user, and why things fail.
//! - `connection`: connecting, joining, the writer task, reconnects.
//! - `dispatch`: each server frame, matched on its type.
//! - `files`: the chunks of a file and their assembly.

mod connection;
mod dispatch;
pub mod events;
mod files;
mod plain;

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use ephemera_protocol::{
    crypto::{self, DmKeys, Envelope, RoomSecrets},
    ClientFrame,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{protocol::CloseFrame, Message};

pub use connection::socket_config;
pub use events::{Ended, Event, JoinError, Member, SendError};
pub use files::{FileChunk, FILE_CHUNK};
pub use plain::{Plain, Said};

use super::api::Api;
use files::Assembly;

/// How many messages' authors a room remembers, for edits (as many as the server remembers for
/// unsend).
const AUTHORS_KEPT: usize = 10_000;

/// How long a send waits for its echo.
const ECHO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a DM waits for the room to look up a member of a crowd.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What a send's wait for its echo ends with.
enum Echo {
    Done(u64),
    RateLimited(u64),
    Failed(String),
}

/// A client frame as the text a socket sends.
fn to_text<B: Serialize>(frame: &ClientFrame<'_, B>) -> Message {
    // unwrap: client frames hold strings, numbers and envelopes, which always serialise.
    #[allow(clippy::unwrap_used)]
    Message::text(serde_json::to_string(frame).unwrap())
}

/// A room's state, behind one mutex held for a frame's handling or a send's setup, never across
/// an `.await`.
struct State {
    name: String,
    admin: bool,
    /// Everyone in a small room; in a crowd, the pages this client asked for and the senders of
    /// the DMs it got (a crowd's comings and goings are counted, not named).
    members: Vec<Member>,
    /// How many members the room has, from the latest `welcome`, bot notice or `members` page.
    member_count: usize,
    /// In a crowd, how many members a page holds (learnt from a full page); `None` otherwise.
    page_size: Option<usize>,
    /// How many look-ups the room answered with `no_such_member`.
    misses: u64,
    session: Option<String>,
    /// The writer task's channel, while a socket is attached.
    out: Option<mpsc::UnboundedSender<Message>>,
    /// Sends waiting for their echo, by `txn`; each is answered or dropped at a disconnect.
    pending: HashMap<String, oneshot::Sender<Echo>>,
    /// Who sent the latest messages, by `seq`, so that an edit from anyone else is dropped;
    /// the oldest go past [`AUTHORS_KEPT`].
    authors: std::collections::BTreeMap<u64, Sent>,
    files: Assembly,
    dm_keys: HashMap<String, (String, [u8; 32])>,
    ended: Option<Ended>,
}

struct Inner {
    api: Api,
    room_id: String,
    enc: [u8; 32],
    auth: String,
    dm: DmKeys,
    admin_password: Option<String>,
    state: Mutex<State>,
    /// To the user of the room. Unbounded: a user that stops reading events stops reading its
    /// terminal too; each event is one frame's worth, and files arrive assembled once.
    events: mpsc::UnboundedSender<Event>,
    /// The next `txn`.
    txn: AtomicU64,
    /// Set by `leave`, so that the close that follows ends the room instead of a reconnect.
    leaving: AtomicBool,
    /// Woken by every `members` answer, for a DM to someone of a crowd not yet looked up.
    members_changed: tokio::sync::Notify,
}

/// Who sent a recent message, and in which conversation: the room (`None`) or a DM with the
/// named member.
struct Sent {
    from: String,
    conversation: Option<String>,
    /// Its author has left or was removed since: the name may now be someone else's.
    author_gone: bool,
}

impl State {
    /// The DM public key of the member `name`, as this client holds it.
    fn pubkey_of(&self, name: &str) -> Option<String> {
        self.members.iter().find(|m| m.name == name)?.pubkey.clone()
    }

    fn remember(&mut self, seq: u64, from: &str, conversation: Option<&str>) {
        let sent = Sent {
            from: from.to_owned(),
            conversation: conversation.map(str::to_owned),
            author_gone: false,
        };
        self.authors.insert(seq, sent);
        if self.authors.len() > AUTHORS_KEPT {
            self.authors.pop_first();
        }
    }

    /// Whether message `seq` is `from`'s, in `conversation`: an edit counts only then.
    fn is_by(&self, seq: u64, from: &str, conversation: Option<&str>) -> bool {
        self.authors.get(&seq).is_some_and(|s| {
            s.from == from && !s.author_gone && s.conversation.as_deref() == conversation
        })
    }

    /// Whether message `seq` was said in `conversation`: a reaction counts only there.
    fn is_in(&self, seq: u64, conversation: Option<&str>) -> bool {
        self.authors
            .get(&seq)
            .is_some_and(|s| s.conversation.as_deref() == conversation)
    }

    /// The conversation of a remembered message: where a reply, a reaction or an edit of it
    /// goes.
    fn conversation_of(&self, seq: u64) -> Option<Option<String>> {
        self.authors.get(&seq).map(|s| s.conversation.clone())
    }

    /// A member left or was removed: its name may come back as someone else, who must not be
    /// able to edit what the earlier holder of the name said.
    fn forget_author(&mut self, name: &str) {
        for sent in self.authors.values_mut().filter(|s| s.from == name) {
            sent.author_gone = true;
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn dm_key(&self, state: &mut State, other: &str) -> Option<[u8; 32]> {
        let pubkey = state.pubkey_of(other)?;
        if let Some((known, key)) = state.dm_keys.get(other) {
            if *known == pubkey {
                return Some(*key);
            }
        }
        let (_, key) = self
            .dm
            .dm_key(&pubkey, &self.room_id, &state.name, other)
            .ok()?;
        state.dm_keys.insert(other.to_owned(), (pubkey, key));
        Some(key)
    }
}

/// A room this client is in. Dropping it leaves the room.
pub struct RoomClient {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RoomClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RoomClient {
    /// Derives the keys (off the executor), connects and joins. Events go to `events`.
    pub async fn join(
        api: &Api,
        room_id: &str,
        room_key: &str,
        name: &str,
        admin_password: Option<&str>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<Self, JoinError> {
        let (id, key) = (room_id.to_owned(), room_key.to_owned());
        let secrets = tokio::task::spawn_blocking(move || RoomSecrets::derive(&id, &key))
            .await
            .map_err(|e| JoinError::Connect(e.to_string()))?;
        let inner = Arc::new(Inner {
            api: api.clone(),
            room_id: room_id.to_owned(),
            enc: secrets.enc,
            auth: secrets.auth_b64(),
            dm: DmKeys::generate(),
            admin_password: admin_password.map(str::to_owned),
            state: Mutex::new(State {
                name: name.to_owned(),
                admin: false,
                members: Vec::new(),
                member_count: 0,
                page_size: None,
                misses: 0,
                session: None,
                out: None,
                pending: HashMap::new(),
                files: Assembly::default(),
                authors: std::collections::BTreeMap::new(),
                dm_keys: HashMap::new(),
                ended: None,
            }),
            events,
            txn: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
            members_changed: tokio::sync::Notify::new(),
        });
        let socket = connection::connect(&inner).await?;
        let task = tokio::spawn(connection::run(
            inner.clone(),
            connection::attach(&inner, socket),
        ));
        Ok(Self { inner, task })
    }

    pub fn room_id(&self) -> &str {
        &self.inner.room_id
    }

    /// This member's name as the room spells it.
    pub fn name(&self) -> String {
        self.inner.state().name.clone()
    }

    pub fn is_admin(&self) -> bool {
        self.inner.state().admin
    }

    /// How many members the room has: in a crowd, more than [`RoomClient::members`] holds.
    pub fn member_count(&self) -> usize {
        self.inner.state().member_count
    }

    /// The member `name` as the room spells it, asking the room for the page of its list that
    /// holds it first when this client has not seen it (a DM to someone of a crowd); `None`
    /// when the room says there is nobody of that name, or does not answer in time.
    async fn look_up(&self, name: &str) -> Option<String> {
        let found = |state: &State| {
            let folded = name.to_lowercase();
            state
                .members
                .iter()
                .find(|m| m.name == name)
                .or_else(|| {
                    state
                        .members
                        .iter()
                        .find(|m| m.name.to_lowercase() == folded)
                })
                .map(|m| m.name.clone())
        };
        let deadline = tokio::time::Instant::now() + LOOKUP_TIMEOUT;
        let (changed, misses) = {
            let state = self.inner.state();
            if let Some(known) = found(&state) {
                return Some(known);
            }
            let out = state.out.clone()?;
            // Made before the question goes out, so the answer cannot slip past it.
            let changed = self.inner.members_changed.notified();
            let ask: ClientFrame<'_, Envelope> = ClientFrame::Members {
                page: None,
                name: Some(name.into()),
            };
            out.send(to_text(&ask)).ok()?;
            (changed, state.misses)
        };
        let mut changed = Box::pin(changed);
        loop {
            tokio::time::timeout_at(deadline, changed.as_mut())
                .await
                .ok()?;
            let state = self.inner.state();
            if let Some(known) = found(&state) {
                return Some(known);
            }
            if state.misses > misses {
                return None;
            }
            // Another member's page or look-up: wait on.
            changed.set(self.inner.members_changed.notified());
        }
    }

    pub fn members(&self) -> Vec<Member> {
        self.inner.state().members.clone()
    }

    /// The room key's fingerprint, as the web client shows it.
    pub fn fingerprint(&self) -> String {
        crypto::fingerprint("ephemera/v1/fp/room", &self.inner.enc)
    }

    /// The safety code of this member's DM key pair with `other`, the code the web client's
    /// "Verify" shows: both sides read the same digits when no one swapped a key between them.
    pub fn safety_code(&self, other: &str) -> Option<String> {
        let state = self.inner.state();
        let theirs = state.pubkey_of(other)?;
        let mine = self.inner.dm.public_b64();
        crypto::safety_code(&self.inner.room_id, (&state.name, &mine), (other, &theirs)).ok()
    }

    async fn send_sealed(&self, to: Option<&str>, plain: Plain) -> Result<u64, SendError> {
        let spelled = match to {
            Some(name) => Some(self.look_up(name).await.unwrap_or_else(|| name.to_owned())),
            None => None,
        };
        let to = spelled.as_deref();
        loop {
            let txn = format!("c{}", self.inner.txn.fetch_add(1, Ordering::Relaxed));
            let (tx, rx) = oneshot::channel();
            let (out, frame) = {
                let mut state = self.inner.state();
                let out = state.out.clone().ok_or(SendError::Disconnected)?;
                let key = match to {
                    None => self.inner.enc,
                    Some(name) => self
                        .inner
                        .dm_key(&mut state, name)
                        .ok_or(SendError::NoSuchMember)?,
                };
                let body: Envelope =
                    crypto::seal(&key, &self.inner.room_id, &plain, crypto::random_iv());
                let wire_txn = Cow::Borrowed(txn.as_str());
                let frame = match to {
                    None => to_text(&ClientFrame::Send {
                        txn: wire_txn,
                        body,
                    }),
                    Some(name) => to_text(&ClientFrame::Dm {
                        to: name.into(),
                        txn: wire_txn,
                        body,
                    }),
                };
                state.pending.insert(txn.clone(), tx);
                (out, frame)
            };
            out.send(frame).map_err(|_| SendError::Disconnected)?;
            match tokio::time::timeout(ECHO_TIMEOUT, rx).await {
                Ok(Ok(Echo::Done(seq))) => return Ok(seq),
                Ok(Ok(Echo::RateLimited(ms))) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await
                }
                Ok(Ok(Echo::Failed(code))) => return Err(SendError::Refused(code)),
                _ => {
                    self.inner.state().pending.remove(&txn);
                    return Err(SendError::Disconnected);
                }
            }
        }
    }

    /// A plaintext of `kind` from this member, to the room or to `to`.
    fn plain(&self, to: Option<&str>, kind: &str) -> Plain {
        Plain {
            from: self.name(),
            to: to.map(str::to_owned),
            kind: kind.into(),
            ..Plain::default()
        }
    }

    /// Sends a text to the room (or privately to `to`); returns its `seq` once echoed.
    pub async fn send_text(&self, to: Option<&str>, text: &str) -> Result<u64, SendError> {
        let plain = Plain {
            text: Some(text.to_owned()),
            ..self.plain(to, "text")
        };
        self.send_sealed(to, plain).await
    }

    /// The conversation message `seq` was said in, where anything about it must go: a reply
    /// to a direct message, or an edit of one, must never reach the whole room.
    fn conversation_of(&self, seq: u64) -> Result<Option<String>, SendError> {
        self.inner
            .state()
            .conversation_of(seq)
            .ok_or(SendError::NoSuchMessage)
    }

    /// Sends a text that answers message `reply_to`, in that message's conversation.
    pub async fn send_reply(&self, reply_to: u64, text: &str) -> Result<u64, SendError> {
        let to = self.conversation_of(reply_to)?;
        let plain = Plain {
            text: Some(text.to_owned()),
            reply_to: Some(reply_to),
            ..self.plain(to.as_deref(), "text")
        };
        self.send_sealed(to.as_deref(), plain).await
    }

    /// Adds (`on`) or takes back this member's `emoji` reaction to message `target`.
    pub async fn react(&self, target: u64, emoji: &str, on: bool) -> Result<u64, SendError> {
        let to = self.conversation_of(target)?;
        let plain = Plain {
            target: Some(target),
            emoji: Some(emoji.to_owned()),
            on: Some(on),
            ..self.plain(to.as_deref(), "react")
        };
        self.send_sealed(to.as_deref(), plain).await
    }

    /// New text for message `target`, which must be this member's own (others ignore it).
    pub async fn edit(&self, target: u64, text: &str) -> Result<u64, SendError> {
        let to = self.conversation_of(target)?;
        let plain = Plain {
            target: Some(target),
            text: Some(text.to_owned()),
            ..self.plain(to.as_deref(), "edit")
        };
        self.send_sealed(to.as_deref(), plain).await
    }

    /// Sends a file in chunks, one after the other's echo; returns every chunk's `seq`.
    pub async fn send_file(
        &self,
        to: Option<&str>,
        name: &str,
        mime: &str,
        bytes: &[u8],
    ) -> Result<Vec<u64>, SendError> {
        let id = crypto::random_key(16);
        let total = bytes.len().div_ceil(FILE_CHUNK).max(1);
        let mut seqs = Vec::with_capacity(total);
        for index in 0..total {
            let chunk = &bytes[(index * FILE_CHUNK).min(bytes.len())
                ..((index + 1) * FILE_CHUNK).min(bytes.len())];
            let plain = Plain {
                file: Some(FileChunk {
                    id: id.clone(),
                    name: name.to_owned(),
                    mime: mime.to_owned(),
                    size: bytes.len() as u64,
                    index: index as u32,
                    total: total as u32,
                    data: crypto::encode_b64url(chunk),
                }),
                ..self.plain(to, "file")
            };
            seqs.push(self.send_sealed(to, plain).await?);
        }
        Ok(seqs)
    }

    fn push(&self, message: Message) -> Result<(), SendError> {
        let out = self
            .inner
            .state()
            .out
            .clone()
            .ok_or(SendError::Disconnected)?;
        out.send(message).map_err(|_| SendError::Disconnected)
    }

    fn send_frame(&self, frame: ClientFrame<'_, ()>) -> Result<(), SendError> {
        self.push(to_text(&frame))
    }

    pub fn unsend(&self, seq: u64) -> Result<(), SendError> {
        self.send_frame(ClientFrame::Unsend { seq: Some(seq) })
    }

    pub fn kick(&self, name: &str) -> Result<(), SendError> {
        self.send_frame(ClientFrame::Kick { name: name.into() })
    }

    /// Locks the room (no new member joins) or unlocks it; admins only.
    pub fn set_locked(&self, locked: bool) -> Result<(), SendError> {
        self.send_frame(if locked {
            ClientFrame::Lock
        } else {
            ClientFrame::Unlock
        })
    }

    /// Makes `name` an admin; admins only.
    pub fn make_admin(&self, name: &str) -> Result<(), SendError> {
        self.send_frame(ClientFrame::MakeAdmin { name: name.into() })
    }

    pub fn delete_room(&self) -> Result<(), SendError> {
        self.send_frame(ClientFrame::DeleteRoom)
    }

    /// Leaves the room with a normal close.
    pub fn leave(&self) {
        self.inner.leaving.store(true, Ordering::Release);
        let _ = self.push(Message::Close(Some(CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        })));
    }

    /// Leaves, and waits (at most `limit`) until the server has answered the close: a process
    /// that exits right after leaving would otherwise drop the socket before its goodbye went
    /// out, and the server would hold the member for its leave grace.
    pub async fn leave_and_wait(mut self, limit: Duration) {
        self.leave();
        let _ = tokio::time::timeout(limit, &mut self.task).await;
    }
}
