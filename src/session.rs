//! One socket's life: wait for `join`, prove it, then relay frames until the socket closes, the
//! member is removed, or the room goes. The session reads the socket; the writing half is the
//! member's [`Outbox`], which the hub and the session both feed, and which its
//! [`Drain`](crate::hub::Drain) writes out beside the session, in the same task.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_http::ws::{Codec, Frame, Item, ProtocolError};
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::codec::Decoder as _;

use crate::{
    credentials::Secret,
    domain::{AdminPassword, Auth, MemberName, PublicKey, RoomId, SessionToken},
    hub::{ConnId, Entry, Outbox, Refused, Room},
    protocol::{close, ClientFrame, ErrorCode, JoinFrame, ServerFrame},
    ratelimit::{retry_after_ms, Bucket},
    startup::AppState,
};

/// Bad frames in a row after which the socket is closed with 4400.
const MAX_BAD_FRAMES: u32 = 10;
/// How often a join re-checks when the room it proved left the hub meanwhile.
const JOIN_RETRIES: usize = 3;

/// What the reader makes of the next WebSocket frame.
enum Incoming {
    Text(ByteString),
    Binary,
    Ping(Bytes),
    Pong,
    Close,
    TooLarge,
    InvalidUtf8,
    Gone,
}

/// How much a read asks the socket for at least. The buffer exists only while bytes are in
/// flight: an idle member holds none.
const READ_CHUNK: usize = 4 * 1024;

/// Reads frames, joining continuations and enforcing the size limit on the whole message.
/// Partial frames and continuations live in `self`, so `next` is safe to cancel in a `select!`.
pub struct Inbound {
    io: OwnedReadHalf,
    buf: BytesMut,
    codec: Codec,
    max_bytes: usize,
    partial: Option<(bool, BytesMut)>,
}

impl Inbound {
    /// `early` holds whatever the client sent after its upgrade request, already read.
    pub fn new(io: OwnedReadHalf, early: BytesMut, max_bytes: usize) -> Self {
        Self {
            io,
            buf: early,
            codec: Codec::new().max_size(max_bytes),
            max_bytes,
            partial: None,
        }
    }

    fn append(&mut self, text: bool, bytes: &[u8], first: bool) -> Option<Incoming> {
        if first {
            self.partial = Some((text, BytesMut::new()));
        }
        let Some((_, buf)) = self.partial.as_mut() else {
            return Some(Incoming::Gone);
        };
        if buf.len() + bytes.len() > self.max_bytes {
            return Some(Incoming::TooLarge);
        }
        buf.extend_from_slice(bytes);
        None
    }

    /// The next frame off the wire; `None` at the end of the stream.
    async fn frame(&mut self) -> Option<Result<Frame, ProtocolError>> {
        loop {
            if !self.buf.is_empty() {
                match self.codec.decode(&mut self.buf) {
                    Ok(Some(frame)) => {
                        if self.buf.is_empty() {
                            self.buf = BytesMut::new();
                        }
                        return Some(Ok(frame));
                    }
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            if self.buf.capacity() == 0 {
                // Idle: wait without a buffer, and allocate one only once bytes have arrived.
                if self.io.readable().await.is_err() {
                    return None;
                }
            }
            self.buf.reserve(READ_CHUNK);
            match self.io.try_read_buf(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    } else if self.io.readable().await.is_err() {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
    }

    async fn next(&mut self) -> Incoming {
        loop {
            let frame = match self.frame().await {
                None => return Incoming::Gone,
                Some(Err(ProtocolError::Overflow)) => return Incoming::TooLarge,
                Some(Err(_)) => return Incoming::Gone,
                Some(Ok(frame)) => frame,
            };
            let done = match frame {
                Frame::Text(bytes) => Some(text(bytes)),
                Frame::Binary(_) => return Incoming::Binary,
                Frame::Ping(payload) => return Incoming::Ping(payload),
                Frame::Pong(_) => return Incoming::Pong,
                Frame::Close(_) => return Incoming::Close,
                Frame::Continuation(Item::FirstText(b)) => self.append(true, &b, true),
                Frame::Continuation(Item::FirstBinary(b)) => self.append(false, &b, true),
                Frame::Continuation(Item::Continue(b)) => self.append(true, &b, false),
                Frame::Continuation(Item::Last(b)) => match self.append(true, &b, false) {
                    Some(stop) => Some(stop),
                    None => Some(match self.partial.take() {
                        Some((true, buf)) => text(buf.freeze()),
                        Some((false, _)) => Incoming::Binary,
                        None => Incoming::Gone,
                    }),
                },
            };
            if let Some(incoming) = done {
                return incoming;
            }
        }
    }
}

/// A complete text message, if it is UTF-8.
fn text(bytes: Bytes) -> Incoming {
    match ByteString::try_from(bytes) {
        Ok(text) => Incoming::Text(text),
        Err(_) => Incoming::InvalidUtf8,
    }
}

/// Sends an `error` frame and closes the socket with the error's close code.
fn refuse(outbox: &Outbox, code: ErrorCode, retry_after_ms: Option<u64>) {
    let _ = outbox.push(&ServerFrame::error(code, None, retry_after_ms).encode());
    outbox.close(code.close_code(), code.as_str());
}

/// Ends the socket for a frame that cannot be answered with an error.
fn end(outbox: &Outbox, incoming: &Incoming) {
    match incoming {
        Incoming::TooLarge => refuse(outbox, ErrorCode::FrameTooLarge, None),
        Incoming::InvalidUtf8 => outbox.close(close::INVALID_PAYLOAD, "invalid UTF-8"),
        _ => outbox.close(close::NORMAL, "bye"),
    }
}

/// A refused join, as the socket will hear it.
struct Refusal {
    code: ErrorCode,
    retry_after: Option<Duration>,
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Self {
        Self {
            code,
            retry_after: None,
        }
    }
}

/// Counts the open connections while a session lives.
struct Connected(prometheus::IntGauge);

impl Connected {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Runs one socket from the upgrade to the close.
pub async fn run(
    state: AppState,
    room_path: String,
    ip: IpAddr,
    mut inbound: Inbound,
    outbox: Outbox,
) {
    // The sockets escape the HTTP server's own connection limit once upgraded; this is theirs.
    let cap = state.config.max_connections;
    if cap > 0 && state.metrics.connections.get() >= i64::try_from(cap).unwrap_or(i64::MAX) {
        outbox.close(close::TRY_AGAIN_LATER, "server busy");
        return;
    }
    let _connected = Connected::new(&state.metrics.connections);
    let conn = state.hub.next_conn();
    // Boxed: the join's futures (store lookups, argon2) are large and needed once; the chat loop
    // that follows, which a member holds for hours, should not carry their size.
    let joining = Box::pin(await_join(
        &state,
        &room_path,
        ip,
        conn,
        &mut inbound,
        &outbox,
    ));
    let Some(room) = joining.await else {
        return;
    };
    chat(&state, &room, conn, &mut inbound, &outbox).await;
    state.hub.leave(&room, conn);
}

async fn await_join(
    state: &AppState,
    room_path: &str,
    ip: IpAddr,
    conn: ConnId,
    inbound: &mut Inbound,
    outbox: &Outbox,
) -> Option<Arc<Room>> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(state.config.join_timeout_secs);
    loop {
        let incoming = tokio::select! {
            _ = outbox.closed() => return None,
            incoming = tokio::time::timeout_at(deadline, inbound.next()) => incoming,
        };
        let incoming = match incoming {
            Ok(incoming) => incoming,
            Err(_) => {
                refuse(outbox, ErrorCode::JoinTimeout, None);
                return None;
            }
        };
        match incoming {
            Incoming::Ping(payload) => outbox.pong(payload),
            Incoming::Pong => {}
            Incoming::Text(text) => {
                let Ok(ClientFrame::Join(join)) = ClientFrame::parse(&text) else {
                    refuse(outbox, ErrorCode::BadRequest, None);
                    return None;
                };
                return match admit(state, room_path, ip, conn, join, outbox).await {
                    Ok(room) => Some(room),
                    Err(refusal) => {
                        refuse(
                            outbox,
                            refusal.code,
                            refusal.retry_after.map(retry_after_ms),
                        );
                        None
                    }
                };
            }
            Incoming::Binary => {
                refuse(outbox, ErrorCode::BadRequest, None);
                return None;
            }
            other => {
                end(outbox, &other);
                return None;
            }
        }
    }
}

/// Checks a join frame and enters the room.
async fn admit(
    state: &AppState,
    room_path: &str,
    ip: IpAddr,
    conn: ConnId,
    join: JoinFrame<'_>,
    outbox: &Outbox,
) -> Result<Arc<Room>, Refusal> {
    let outcome = admit_inner(state, room_path, ip, conn, &join, outbox).await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(r) => r.code.as_str(),
    };
    state.metrics.joins.with_label_values(&[label]).inc();
    if let Err(Refusal {
        code: ErrorCode::InvalidCredentials | ErrorCode::RoomNotFound,
        ..
    }) = outcome
    {
        state.limiters.join_failed(ip, room_path);
    }
    outcome
}

async fn admit_inner(
    state: &AppState,
    room_path: &str,
    ip: IpAddr,
    conn: ConnId,
    join: &JoinFrame<'_>,
    outbox: &Outbox,
) -> Result<Arc<Room>, Refusal> {
    let name = MemberName::parse(&join.name).map_err(|_| ErrorCode::InvalidName)?;
    let pubkey = join
        .pubkey
        .as_deref()
        .map(PublicKey::parse)
        .transpose()
        .map_err(|_| ErrorCode::InvalidPubkey)?;
    let session = join
        .session
        .as_deref()
        .and_then(|s| SessionToken::parse(s).ok());
    state
        .limiters
        .check_join(ip, room_path)
        .map_err(|wait| Refusal {
            code: ErrorCode::RateLimited,
            retry_after: Some(wait),
        })?;
    for _ in 0..JOIN_RETRIES {
        let (room, admin) = prove(state, room_path, join).await?;
        let entry = Entry {
            conn,
            name: name.clone(),
            admin,
            pubkey: pubkey.clone(),
            session: session.clone(),
            outbox: outbox.clone(),
        };
        match state.hub.join(&room, entry) {
            Ok(_) => {
                if room.due_for_extension() {
                    state.credentials.extend(&room.record.id_hash);
                }
                return Ok(room);
            }
            Err(Refused::Gone) => continue,
            Err(Refused::Code(code)) => {
                state.hub.release(&room);
                return Err(code.into());
            }
        }
    }
    Err(ErrorCode::StoreUnavailable.into())
}

/// Proves the join's credentials against the room's record: the live room's cached record and
/// accepted-proof digests when the room is live, the store and argon2 otherwise. Returns the
/// live room and whether the joiner proved the admin password.
async fn prove(
    state: &AppState,
    room_path: &str,
    join: &JoinFrame<'_>,
) -> Result<(Arc<Room>, bool), ErrorCode> {
    let room_id = RoomId::parse(room_path).map_err(|_| ErrorCode::RoomNotFound)?;
    let found = state
        .find_room(&room_id)
        .await
        .map_err(|_| ErrorCode::StoreUnavailable)?
        .ok_or(ErrorCode::RoomNotFound)?;
    let auth = Auth::parse(&join.auth).map_err(|_| ErrorCode::InvalidCredentials)?;
    let credentials = &state.credentials;
    if !credentials
        .prove(&found.record, Secret::Auth, auth.as_bytes())
        .await
    {
        return Err(ErrorCode::InvalidCredentials);
    }
    let admin = match join.admin_password.as_deref() {
        None => false,
        Some(text) => {
            let password = AdminPassword::parse(text).map_err(|_| ErrorCode::InvalidCredentials)?;
            if !credentials
                .prove(&found.record, Secret::Admin, password.as_bytes())
                .await
            {
                return Err(ErrorCode::InvalidCredentials);
            }
            true
        }
    };
    let room = found
        .live
        .unwrap_or_else(|| state.hub.open(&room_id, found.record));
    Ok((room, admin))
}

/// The member's send allowance: frames and bytes per 10 seconds.
struct Allowance {
    frames: Bucket,
    bytes: Bucket,
}

impl Allowance {
    fn new(state: &AppState) -> Self {
        let window = Duration::from_secs(10);
        let now = Instant::now();
        Self {
            frames: Bucket::new(u64::from(state.config.messages_per_10s), window, now),
            bytes: Bucket::new(state.config.bytes_per_10s, window, now),
        }
    }

    /// Takes one frame of `len` bytes, or says how long to wait; nothing is taken on a refusal.
    fn take(&mut self, len: usize) -> Result<(), Duration> {
        let now = Instant::now();
        let (frames, bytes) = (self.frames, self.bytes);
        let result = self
            .frames
            .take(1.0, now)
            .and_then(|()| self.bytes.take(len as f64, now));
        if result.is_err() {
            (self.frames, self.bytes) = (frames, bytes);
        }
        result
    }
}

async fn chat(
    state: &AppState,
    room: &Arc<Room>,
    conn: ConnId,
    inbound: &mut Inbound,
    outbox: &Outbox,
) {
    let ping_every = Duration::from_secs(state.config.ping_interval_secs);
    let idle_after = Duration::from_secs(state.config.idle_timeout_secs);
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_seen = Instant::now();
    let mut bad = 0;
    let mut allowance = Allowance::new(state);
    loop {
        let incoming = tokio::select! {
            biased;
            _ = outbox.closed() => return,
            _ = heartbeat.tick() => {
                if last_seen.elapsed() >= idle_after {
                    outbox.close(close::GOING_AWAY, "idle timeout");
                    return;
                }
                outbox.ping();
                continue;
            }
            incoming = inbound.next() => incoming,
        };
        last_seen = Instant::now();
        let text = match incoming {
            Incoming::Text(text) => text,
            Incoming::Ping(payload) => {
                outbox.pong(payload);
                continue;
            }
            Incoming::Pong => continue,
            Incoming::Binary => {
                if bad_frame(&mut bad, None, outbox) {
                    return;
                }
                continue;
            }
            other => return end(outbox, &other),
        };
        let frame = match ClientFrame::parse(&text) {
            Ok(ClientFrame::Join(_)) => Err(None),
            Ok(frame) => Ok(frame),
            Err(e) => Err(e.txn),
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(txn) => {
                if bad_frame(&mut bad, txn.as_deref(), outbox) {
                    return;
                }
                continue;
            }
        };
        bad = 0;
        let txn = match &frame {
            ClientFrame::Send { txn, .. } | ClientFrame::Dm { txn, .. } => Some(txn.as_ref()),
            _ => None,
        };
        if let Err(wait) = allowance.take(text.len()) {
            let error = ServerFrame::error(ErrorCode::RateLimited, txn, Some(retry_after_ms(wait)));
            let _ = outbox.push(&error.encode());
            continue;
        }
        if let Err(code) = handle(state, room, conn, &frame, outbox).await {
            let _ = outbox.push(&ServerFrame::error(code, txn, None).encode());
        }
    }
}

/// Answers a bad frame with `bad_request`; the tenth in a row closes the socket with 4400.
/// Returns whether it did.
fn bad_frame(bad: &mut u32, txn: Option<&str>, outbox: &Outbox) -> bool {
    *bad += 1;
    if *bad >= MAX_BAD_FRAMES {
        refuse(outbox, ErrorCode::BadRequest, None);
        return true;
    }
    let _ = outbox.push(&ServerFrame::error(ErrorCode::BadRequest, txn, None).encode());
    false
}

/// Carries out one frame of a joined member.
async fn handle(
    state: &AppState,
    room: &Arc<Room>,
    conn: ConnId,
    frame: &ClientFrame<'_>,
    outbox: &Outbox,
) -> Result<(), ErrorCode> {
    match frame {
        ClientFrame::Send { txn, body } => {
            if let Some(relayed) = room.send(conn, txn, body) {
                state.metrics.messages_relayed.inc();
                state.metrics.bytes_relayed.inc_by(relayed.bytes as u64);
            }
        }
        ClientFrame::Dm { to, txn, body } => {
            let relayed = room.dm(conn, to, txn, body)?;
            state.metrics.messages_relayed.inc();
            state.metrics.bytes_relayed.inc_by(relayed.bytes as u64);
        }
        ClientFrame::Typing { active } => room.typing(conn, *active),
        ClientFrame::Read { seq } => room.read(conn, *seq),
        ClientFrame::Unsend { seq } => room.unsend(conn, *seq)?,
        ClientFrame::Kick { name } => state.hub.kick(room, conn, name)?,
        ClientFrame::DeleteRoom => {
            if !room.is_admin(conn) {
                return Err(ErrorCode::Forbidden);
            }
            state
                .delete_room(&room.id)
                .await
                .map_err(|_| ErrorCode::StoreUnavailable)?;
        }
        ClientFrame::Members => room.members(conn),
        ClientFrame::Ping { t } => {
            let _ = outbox.push(&ServerFrame::Pong { t: *t }.encode());
        }
        ClientFrame::Join(_) => return Err(ErrorCode::BadRequest),
    }
    Ok(())
}
