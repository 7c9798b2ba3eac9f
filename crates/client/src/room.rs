//! One joined room, for a client: the socket, the keys, reconnects, and what happens in the room
//! as typed [`Event`]s. Several rooms can feed one event channel.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot},
};
use tokio_tungstenite::{
    connect_async_with_config,
    tungstenite::{
        protocol::{CloseFrame, WebSocketConfig},
        Message,
    },
    MaybeTlsStream, WebSocketStream,
};

use super::{
    api::Api,
    crypto::{self, DmKeys, RoomSecrets},
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Raw bytes of one file chunk, as the contract sizes them.
pub const FILE_CHUNK: usize = 128 * 1024;
/// How long a send waits for its echo.
const ECHO_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest file a client assembles, against a peer announcing absurd sizes.
const MAX_FILE_BYTES: u64 = 1 << 30;
/// Files still arriving that a client holds at most, from all members and from one.
const MAX_PARTIAL_FILES: usize = 16;
const MAX_PARTIAL_FILES_PER_SENDER: usize = 4;
/// Bytes of files still arriving that a client holds at most.
const MAX_PARTIAL_BYTES: u64 = 1 << 30;
/// A file none of whose chunks came for this long is given up, so that files left unfinished
/// do not keep the places of the next ones.
const PARTIAL_FILE_IDLE: Duration = Duration::from_secs(60);

/// The plaintext inside an envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plain {
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileChunk>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileChunk {
    pub id: String,
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub index: u32,
    pub total: u32,
    pub data: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub admin: bool,
    #[serde(default)]
    pub pubkey: Option<String>,
}

/// Why a room ended for this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Kicked {
        by: String,
    },
    Deleted,
    /// The server refused or closed with this code (after an `error` naming it, if any).
    Closed {
        code: u16,
        error: Option<String>,
    },
    Left,
}

/// Something that happened in a room.
#[derive(Debug, Clone)]
pub enum Event {
    Message {
        room: String,
        seq: u64,
        ts: i64,
        from: String,
        to: Option<String>,
        text: String,
    },
    File {
        room: String,
        seq: u64,
        ts: i64,
        from: String,
        to: Option<String>,
        name: String,
        mime: String,
        data: Vec<u8>,
    },
    Undecryptable {
        room: String,
        seq: u64,
        from: String,
    },
    Bot {
        room: String,
        event: String,
        text: String,
    },
    Unsent {
        room: String,
        seq: u64,
        by: String,
    },
    Typing {
        room: String,
        from: String,
        active: bool,
    },
    Read {
        room: String,
        from: String,
        seq: u64,
    },
    Notice {
        room: String,
        code: String,
        message: String,
    },
    Reconnecting {
        room: String,
    },
    Reconnected {
        room: String,
    },
    Ended {
        room: String,
        reason: Ended,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{message}")]
    Refused {
        code: String,
        close: u16,
        message: String,
    },
    #[error("cannot connect: {0}")]
    Connect(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("not connected")]
    Disconnected,
    #[error("no member of that name (with a DM key) is in the room")]
    NoSuchMember,
    #[error("the server refused: {0}")]
    Refused(String),
}

enum Echo {
    Done(u64),
    RateLimited(u64),
    Failed(String),
}

struct Partial {
    name: String,
    mime: String,
    size: u64,
    parts: Vec<Option<Vec<u8>>>,
    got: u32,
    /// Bytes received so far.
    bytes: u64,
    /// When its last chunk came.
    last: std::time::Instant,
}

struct State {
    name: String,
    admin: bool,
    members: Vec<Member>,
    session: Option<String>,
    out: Option<mpsc::UnboundedSender<Message>>,
    pending: HashMap<String, oneshot::Sender<Echo>>,
    files: HashMap<(String, String), Partial>,
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
    events: mpsc::UnboundedSender<Event>,
    txn: AtomicU64,
    leaving: AtomicBool,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn dm_key(&self, state: &mut State, other: &str) -> Option<[u8; 32]> {
        let pubkey = state
            .members
            .iter()
            .find(|m| m.name == other)?
            .pubkey
            .clone()?;
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
                session: None,
                out: None,
                pending: HashMap::new(),
                files: HashMap::new(),
                dm_keys: HashMap::new(),
                ended: None,
            }),
            events,
            txn: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
        });
        let socket = connect(&inner).await?;
        let task = tokio::spawn(run(inner.clone(), attach(&inner, socket)));
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

    pub fn members(&self) -> Vec<Member> {
        self.inner.state().members.clone()
    }

    /// The room key's fingerprint, as the web client shows it.
    pub fn fingerprint(&self) -> String {
        crypto::fingerprint("ephemera/v1/fp/room", &self.inner.enc)
    }

    /// The DM key's fingerprint with `other`, as the web client shows it.
    pub fn dm_fingerprint(&self, other: &str) -> Option<String> {
        let mut state = self.inner.state();
        let key = self.inner.dm_key(&mut state, other)?;
        Some(crypto::fingerprint("ephemera/v1/fp/dm", &key))
    }

    async fn send_sealed(&self, to: Option<&str>, plain: Plain) -> Result<u64, SendError> {
        loop {
            let txn = format!("c{}", self.inner.txn.fetch_add(1, Ordering::Relaxed));
            let (tx, rx) = oneshot::channel();
            let frame = {
                let mut state = self.inner.state();
                let out = state.out.clone().ok_or(SendError::Disconnected)?;
                let (frame, key) = match to {
                    None => (json!({ "type": "send", "txn": txn }), self.inner.enc),
                    Some(name) => {
                        let key = self
                            .inner
                            .dm_key(&mut state, name)
                            .ok_or(SendError::NoSuchMember)?;
                        (json!({ "type": "dm", "to": name, "txn": txn }), key)
                    }
                };
                let mut frame = frame;
                frame["body"] = json!(crypto::seal(
                    &key,
                    &self.inner.room_id,
                    &plain,
                    crypto::random_iv()
                ));
                state.pending.insert(txn.clone(), tx);
                (out, frame)
            };
            let (out, frame) = frame;
            out.send(Message::text(frame.to_string()))
                .map_err(|_| SendError::Disconnected)?;
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

    /// Sends a text to the room (or privately to `to`); returns its `seq` once echoed.
    pub async fn send_text(&self, to: Option<&str>, text: &str) -> Result<u64, SendError> {
        let plain = Plain {
            from: self.name(),
            to: to.map(str::to_owned),
            kind: "text".into(),
            text: Some(text.to_owned()),
            file: None,
        };
        self.send_sealed(to, plain).await
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
                from: self.name(),
                to: to.map(str::to_owned),
                kind: "file".into(),
                text: None,
                file: Some(FileChunk {
                    id: id.clone(),
                    name: name.to_owned(),
                    mime: mime.to_owned(),
                    size: bytes.len() as u64,
                    index: index as u32,
                    total: total as u32,
                    data: crate::crypto::encode_b64url(chunk),
                }),
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

    fn send_frame(&self, frame: Value) -> Result<(), SendError> {
        self.push(Message::text(frame.to_string()))
    }

    pub fn unsend(&self, seq: u64) -> Result<(), SendError> {
        self.send_frame(json!({ "type": "unsend", "seq": seq }))
    }

    pub fn kick(&self, name: &str) -> Result<(), SendError> {
        self.send_frame(json!({ "type": "kick", "name": name }))
    }

    pub fn delete_room(&self) -> Result<(), SendError> {
        self.send_frame(json!({ "type": "delete_room" }))
    }

    /// Leaves the room with a normal close.
    pub fn leave(&self) {
        self.inner.leaving.store(true, Ordering::Release);
        let _ = self.push(Message::Close(Some(CloseFrame {
            code: 1000.into(),
            reason: "bye".into(),
        })));
    }
}

/// Socket buffers sized for chat. tungstenite's default read buffer is 128 KiB, and it zeroes
/// the unused part before every read: in the load generator that was a third of its CPU.
pub fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
}

/// Opens a socket and joins; on `welcome`, the state takes the member list and the new token.
async fn connect(inner: &Inner) -> Result<Socket, JoinError> {
    // Nagle off, as browsers have it: a frame goes out when it is sent.
    let url = inner.api.ws_url(&inner.room_id);
    let (mut socket, _) = connect_async_with_config(url, Some(socket_config()), true)
        .await
        .map_err(|e| JoinError::Connect(e.to_string()))?;
    let mut join = {
        let state = inner.state();
        let mut join = json!({ "type": "join", "name": state.name, "auth": inner.auth, "pubkey": inner.dm.public_b64() });
        if let Some(session) = &state.session {
            join["session"] = json!(session);
        }
        join
    };
    if let Some(password) = &inner.admin_password {
        join["admin_password"] = json!(password);
    }
    socket
        .send(Message::text(join.to_string()))
        .await
        .map_err(|e| JoinError::Connect(e.to_string()))?;
    let mut error: Option<(String, String)> = None;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                match frame["type"].as_str() {
                    Some("welcome") => {
                        let mut state = inner.state();
                        state.name = frame["you"]["name"].as_str().unwrap_or_default().to_owned();
                        state.admin = frame["you"]["admin"].as_bool().unwrap_or(false);
                        state.members =
                            serde_json::from_value(frame["members"].clone()).unwrap_or_default();
                        state.session = frame["session"].as_str().map(str::to_owned);
                        return Ok(socket);
                    }
                    Some("error") => {
                        error = Some((
                            frame["code"].as_str().unwrap_or("error").to_owned(),
                            frame["message"].as_str().unwrap_or("refused").to_owned(),
                        ));
                    }
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let close = frame.map_or(1005, |f| u16::from(f.code));
                let (code, message) =
                    error.unwrap_or_else(|| ("closed".into(), format!("closed with {close}")));
                return Err(JoinError::Refused {
                    code,
                    close,
                    message,
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(JoinError::Connect(e.to_string())),
            None => {
                return Err(JoinError::Connect(
                    "the server closed the connection".into(),
                ))
            }
        }
    }
}

/// Closes that end the visit rather than call for a reconnect.
fn is_final(code: u16) -> bool {
    (4000..5000).contains(&code) || code == 1000
}

/// A joined socket, split: frames to send go through `State::out` to a writer task, which is
/// in place before this returns, so a send right after a join cannot find the room unconnected.
struct Attached {
    stream: futures_util::stream::SplitStream<Socket>,
    writer: tokio::task::JoinHandle<()>,
}

fn attach(inner: &Inner, socket: Socket) -> Attached {
    let (mut sink, stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    inner.state().out = Some(out_tx);
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
    });
    Attached { stream, writer }
}

async fn run(inner: Arc<Inner>, mut attached: Attached) {
    loop {
        let Attached { mut stream, writer } = attached;
        let mut close = None;
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Text(text)) => handle(&inner, &text),
                Ok(Message::Close(frame)) => {
                    close = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        writer.abort();
        let ended = {
            let mut state = inner.state();
            state.out = None;
            for (_, waiter) in state.pending.drain() {
                let _ = waiter.send(Echo::Failed("disconnected".into()));
            }
            state.ended.take()
        };
        let reason = match (ended, close) {
            (Some(reason), _) => Some(reason),
            _ if inner.leaving.load(Ordering::Acquire) => Some(Ended::Left),
            (None, Some(code)) if is_final(code) => Some(Ended::Closed { code, error: None }),
            _ => None,
        };
        if let Some(reason) = reason {
            inner.emit(Event::Ended {
                room: inner.room_id.clone(),
                reason,
            });
            return;
        }
        inner.emit(Event::Reconnecting {
            room: inner.room_id.clone(),
        });
        let mut delay = Duration::from_millis(500);
        attached = loop {
            tokio::time::sleep(delay).await;
            match connect(&inner).await {
                Ok(socket) => break attach(&inner, socket),
                // A server going down (1001) or too busy (1013) is tried again, like no server.
                Err(JoinError::Refused { close, .. }) if !is_final(close) => {
                    delay = (delay * 2).min(Duration::from_secs(30))
                }
                Err(JoinError::Refused { code, close, .. }) => {
                    inner.emit(Event::Ended {
                        room: inner.room_id.clone(),
                        reason: Ended::Closed {
                            code: close,
                            error: Some(code),
                        },
                    });
                    return;
                }
                Err(JoinError::Connect(_)) => delay = (delay * 2).min(Duration::from_secs(30)),
            }
        };
        inner.emit(Event::Reconnected {
            room: inner.room_id.clone(),
        });
    }
}

fn handle(inner: &Inner, text: &str) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let room = inner.room_id.clone();
    let str_of = |key: &str| frame[key].as_str().unwrap_or_default().to_owned();
    match frame["type"].as_str().unwrap_or_default() {
        kind @ ("message" | "dm") => {
            let seq = frame["seq"].as_u64().unwrap_or_default();
            let from = str_of("from");
            let to = (kind == "dm").then(|| str_of("to"));
            let mut state = inner.state();
            if let Some(waiter) = frame["txn"].as_str().and_then(|t| state.pending.remove(t)) {
                let _ = waiter.send(Echo::Done(seq));
            }
            let key = match &to {
                None => Some(inner.enc),
                Some(to) => {
                    let other = if from == state.name {
                        to.clone()
                    } else {
                        from.clone()
                    };
                    inner.dm_key(&mut state, &other)
                }
            };
            let plain = key
                .and_then(|key| crypto::open::<Plain>(&key, &inner.room_id, &frame["body"]).ok())
                .filter(|p| p.from == from);
            let ts = frame["ts"].as_i64().unwrap_or_default();
            let event = match plain {
                Some(Plain {
                    text: Some(text),
                    file: None,
                    ..
                }) => Some(Event::Message {
                    room,
                    seq,
                    ts,
                    from,
                    to,
                    text,
                }),
                Some(Plain {
                    file: Some(chunk), ..
                }) => assemble(&mut state, room, seq, ts, from, to, chunk),
                _ => Some(Event::Undecryptable { room, seq, from }),
            };
            drop(state);
            if let Some(event) = event {
                inner.emit(event);
            }
        }
        "bot" => {
            let event = str_of("event");
            {
                let mut state = inner.state();
                match event.as_str() {
                    "join" => {
                        if let Ok(member) =
                            serde_json::from_value::<Member>(frame["member"].clone())
                        {
                            state.members.retain(|m| m.name != member.name);
                            state.members.push(member);
                        }
                    }
                    "leave" | "kick" => {
                        let name = str_of("name");
                        state.members.retain(|m| m.name != name);
                        state.dm_keys.remove(&name);
                    }
                    _ => {}
                }
            }
            inner.emit(Event::Bot {
                room,
                event,
                text: str_of("text"),
            });
        }
        "members" => {
            inner.state().members =
                serde_json::from_value(frame["members"].clone()).unwrap_or_default();
        }
        "typing" => inner.emit(Event::Typing {
            room,
            from: str_of("from"),
            active: frame["active"].as_bool().unwrap_or(false),
        }),
        "read" => inner.emit(Event::Read {
            room,
            from: str_of("from"),
            seq: frame["seq"].as_u64().unwrap_or_default(),
        }),
        "unsent" => inner.emit(Event::Unsent {
            room,
            seq: frame["seq"].as_u64().unwrap_or_default(),
            by: str_of("by"),
        }),
        "kicked" => inner.state().ended = Some(Ended::Kicked { by: str_of("by") }),
        "room_deleted" => inner.state().ended = Some(Ended::Deleted),
        "error" => {
            let code = str_of("code");
            let waiter = frame["txn"]
                .as_str()
                .and_then(|t| inner.state().pending.remove(t));
            match waiter {
                Some(waiter) if code == "rate_limited" => {
                    let _ = waiter.send(Echo::RateLimited(
                        frame["retry_after_ms"].as_u64().unwrap_or(1000),
                    ));
                }
                Some(waiter) => {
                    let _ = waiter.send(Echo::Failed(code));
                }
                None => inner.emit(Event::Notice {
                    room,
                    code,
                    message: str_of("message"),
                }),
            }
        }
        _ => {}
    }
}

/// Adds a chunk to its file; the whole file once every chunk is there.
fn assemble(
    state: &mut State,
    room: String,
    seq: u64,
    ts: i64,
    from: String,
    to: Option<String>,
    chunk: FileChunk,
) -> Option<Event> {
    use base64::Engine as _;
    let data = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&chunk.data)
        .ok()?;
    if chunk.total == 0
        || chunk.index >= chunk.total
        || chunk.size > MAX_FILE_BYTES
        || u64::from(chunk.total) > MAX_FILE_BYTES / FILE_CHUNK as u64 + 1
    {
        return None;
    }
    // Matched by sender and id, so no other member can add to the file; the first chunk sets its
    // name, type, size and count, and memory for files still arriving is bounded.
    let key = (from.clone(), chunk.id.clone());
    if !state.files.contains_key(&key) {
        state
            .files
            .retain(|_, partial| partial.last.elapsed() < PARTIAL_FILE_IDLE);
        let from_sender = state.files.keys().filter(|(f, _)| *f == from).count();
        if from_sender >= MAX_PARTIAL_FILES_PER_SENDER || state.files.len() >= MAX_PARTIAL_FILES {
            return None;
        }
        state.files.insert(
            key.clone(),
            Partial {
                name: chunk.name.clone(),
                mime: chunk.mime.clone(),
                size: chunk.size,
                parts: vec![None; chunk.total as usize],
                got: 0,
                bytes: 0,
                last: std::time::Instant::now(),
            },
        );
    }
    let held: u64 = state.files.values().map(|p| p.bytes).sum();
    let partial = state.files.get_mut(&key)?;
    let len = data.len() as u64;
    if partial.parts.len() != chunk.total as usize || partial.size != chunk.size {
        return None;
    }
    if data.len() > FILE_CHUNK
        || partial.bytes + len > partial.size
        || held + len > MAX_PARTIAL_BYTES
    {
        state.files.remove(&key);
        return None;
    }
    let slot = partial.parts.get_mut(chunk.index as usize)?;
    if slot.is_none() {
        *slot = Some(data);
        partial.got += 1;
        partial.bytes += len;
        partial.last = std::time::Instant::now();
    }
    if (partial.got as usize) < partial.parts.len() {
        return None;
    }
    let done = state.files.remove(&key)?;
    if done.bytes != done.size {
        return None;
    }
    let data = done.parts.into_iter().flatten().flatten().collect();
    Some(Event::File {
        room,
        seq,
        ts,
        from,
        to,
        name: done.name,
        mime: done.mime,
        data,
    })
}
