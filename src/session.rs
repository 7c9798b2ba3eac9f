//! A socket's session: wait for `join`, prove it, then relay frames until the socket closes, the
//! member is removed, or the room goes. It sees the socket only through the transport's
//! interface ([`Opened`]): it reads [`Incoming`] messages and writes to the member's [`Outbox`],
//! which the room feeds too.
//!
//! The join goes one way: the room ID was parsed at the upgrade, [`JoinRequest::parse`] checks
//! every field of the `join` frame, [`access::prove`] checks the secrets against the record, and
//! one [`Hub::admit`](crate::hub::Hub::admit) enters the room.

use std::{
    net::IpAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use crate::{
    access,
    address::AddressKey,
    audit::{self, Record, RoomRef},
    cluster::{Claim, Cluster, Event},
    credentials::Secret,
    domain::{AdminPassword, Auth, MemberName, PublicKey, RoomId, SessionToken},
    hub::{ConnId, Departure, Entry, MemberId, Proven, Refused, Room},
    protocol::{close, ClientFrame, ErrorCode, JoinFrame, Refusal, ServerFrame, Wire},
    ratelimit::{retry_after_ms, Bucket},
    socket::{Ended, Handler, Inbound, Incoming, Opened, Outbox},
    state::AppState,
};

/// Bad frames in a row after which the socket is closed with 4400.
const MAX_BAD_FRAMES: u32 = 10;
/// How often a join re-checks when the room it proved left the hub meanwhile.
const JOIN_RETRIES: usize = 3;

/// The largest frame before the join. A `join` is well under 1 KiB; a socket that has proven
/// nothing yet may not make the server hold a full-size frame.
const JOIN_FRAME_BYTES: usize = 4 * 1024;

/// Sends an `error` frame and closes the socket with the refusal's close code.
fn refuse(outbox: &Outbox, refusal: impl Into<Refusal>) {
    let refusal = refusal.into();
    let error = ServerFrame::error(refusal.code, None, refusal.retry_after.map(retry_after_ms));
    let _ = outbox.push(&error.wire());
    outbox.close(refusal.close_code(), refusal.code.as_str());
}

/// Ends the socket for a message that cannot be answered with an error.
fn end(outbox: &Outbox, incoming: &Incoming) -> Ended {
    match incoming {
        Incoming::TooLarge => refuse(outbox, ErrorCode::FrameTooLarge),
        Incoming::InvalidUtf8 => outbox.close(close::INVALID_PAYLOAD, "invalid UTF-8"),
        Incoming::Malformed => refuse(outbox, ErrorCode::BadRequest),
        Incoming::Close(_) | Incoming::Gone => {
            outbox.close(close::NORMAL, "bye");
            return Ended::ByClient;
        }
        Incoming::Text(_) | Incoming::Binary(_) | Incoming::Ping(_) | Incoming::Pong => {
            outbox.close(close::NORMAL, "bye")
        }
    }
    Ended::ByServer
}

/// How a member leaves when its socket ends with `incoming`: at once after a goodbye (a close
/// with 1000) or a protocol violation; after the leave grace when the socket was lost or closed
/// in passing (a browser closes with 1001 when the page reloads).
fn departure(incoming: &Incoming) -> Departure {
    match incoming {
        Incoming::Gone | Incoming::Close(None) => Departure::Lost,
        Incoming::Close(Some(code)) if *code != close::NORMAL => Departure::Lost,
        _ => Departure::Now,
    }
}

/// The server is draining: the socket closes with 1001.
fn shut_down(outbox: &Outbox) -> Ended {
    outbox.close(close::GOING_AWAY, "server shutting down");
    Ended::ByServer
}

/// Takes a frame's share of the allowance, waiting for it when it is used up: for the frames
/// that get no answer (pings, pongs, binary frames). The socket is not read meanwhile, so a flood
/// of them slows its sender down (its writes wait on TCP) instead of costing the server. `false`
/// when the socket closed while it waited.
async fn pace(allowance: &mut Allowance, len: usize, outbox: &Outbox) -> bool {
    loop {
        match allowance.take(len) {
            Ok(()) => return true,
            Err(wait) => {
                if !pause(wait, outbox).await {
                    return false;
                }
            }
        }
    }
}

/// Waits `wait` without reading the socket; `false` when it closed meanwhile.
async fn pause(wait: Duration, outbox: &Outbox) -> bool {
    tokio::select! {
        _ = outbox.closed() => false,
        _ = tokio::time::sleep(wait) => true,
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

/// The server's [`Handler`]: runs a session on every upgraded socket.
#[derive(Clone)]
pub struct Sessions(pub Arc<AppState>);

impl Handler for Sessions {
    fn run<'a>(&'a self, socket: Opened<'a>) -> impl std::future::Future<Output = Ended> + 'a {
        run(&self.0, socket)
    }
}

/// Runs one socket from the upgrade to the close; says who closed it.
async fn run(state: &AppState, socket: Opened<'_>) -> Ended {
    let Opened {
        room,
        ip,
        place,
        inbound,
        outbox,
    } = socket;
    let _connected = Connected::new(&state.metrics.connections);
    inbound.set_limit(JOIN_FRAME_BYTES.min(state.config.max_frame_bytes));
    let conn = state.hub.next_conn();
    let mut allowance = Allowance::new(state);
    // Boxed: the join's futures (store lookups, argon2) are large and needed once; the chat loop
    // that follows, which a member holds for hours, should not carry their size.
    let joining = Box::pin(await_join(
        state,
        room.as_ref(),
        ip,
        conn,
        inbound,
        &outbox,
        &mut allowance,
    ));
    let room = match joining.await {
        Ok(room) => room,
        Err(ended) => return ended,
    };
    place.joined();
    // The drain closes the members it finds in the hub; one that got in just after is closed
    // here, since the chat loop does not watch for the drain itself (one future fewer held by
    // every idle member).
    if state.stopping.is_cancelled() {
        room.leave(conn, Departure::Now);
        return shut_down(&outbox);
    }
    inbound.set_limit(state.config.max_frame_bytes);
    let member = Who { conn, ip };
    let (ended, departure) = chat(state, &room, member, inbound, &outbox, &mut allowance).await;
    room.leave(conn, departure);
    ended
}

async fn await_join(
    state: &AppState,
    room: Option<&RoomId>,
    ip: IpAddr,
    conn: ConnId,
    inbound: &mut Inbound,
    outbox: &Outbox,
    allowance: &mut Allowance,
) -> Result<Arc<Room>, Ended> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(state.config.join_timeout_secs);
    loop {
        let incoming = tokio::select! {
            _ = outbox.closed() => return Err(Ended::ByServer),
            _ = state.stopping.cancelled() => return Err(shut_down(outbox)),
            incoming = tokio::time::timeout_at(deadline, inbound.next()) => incoming,
        };
        let incoming = match incoming {
            Ok(incoming) => incoming,
            Err(_) => {
                refuse(outbox, ErrorCode::JoinTimeout);
                return Err(Ended::ByServer);
            }
        };
        match incoming {
            Incoming::Ping(payload) => {
                if !pace(allowance, payload.len(), outbox).await {
                    return Err(Ended::ByServer);
                }
                outbox.pong(payload);
            }
            Incoming::Pong => {
                if !pace(allowance, 0, outbox).await {
                    return Err(Ended::ByServer);
                }
            }
            Incoming::Text(text) => {
                let Ok(ClientFrame::Join(join)) = ClientFrame::parse(&text) else {
                    refuse(outbox, ErrorCode::BadRequest);
                    return Err(Ended::ByServer);
                };
                return match admit(state, room, ip, conn, &join, outbox).await {
                    Ok(room) => Ok(room),
                    Err(refusal) => {
                        refuse(outbox, refusal);
                        Err(Ended::ByServer)
                    }
                };
            }
            Incoming::Binary(_) => {
                refuse(outbox, ErrorCode::BadRequest);
                return Err(Ended::ByServer);
            }
            other => return Err(end(outbox, &other)),
        }
    }
}

/// A `join` frame's fields, each parsed; the secrets stay unchecked until [`access::prove`].
struct JoinRequest {
    name: MemberName,
    pubkey: Option<PublicKey>,
    session: Option<SessionToken>,
    /// `None` when malformed: checked like a wrong one, in its turn (after the room), since it
    /// cannot match.
    auth: Option<Auth>,
    /// Present when the joiner claims to be an admin; `None` inside when malformed.
    admin: Option<Option<AdminPassword>>,
}

impl JoinRequest {
    fn parse(join: &JoinFrame<'_>) -> Result<Self, ErrorCode> {
        Ok(Self {
            name: MemberName::parse(&join.name).map_err(|_| ErrorCode::InvalidName)?,
            pubkey: join
                .pubkey
                .as_deref()
                .map(PublicKey::parse)
                .transpose()
                .map_err(|_| ErrorCode::InvalidPubkey)?,
            // A token that cannot be one resumes nothing: the join is a fresh one.
            session: join
                .session
                .as_deref()
                .and_then(|s| SessionToken::parse(s).ok()),
            auth: Auth::parse(&join.auth).ok(),
            admin: join
                .admin_password
                .as_deref()
                .map(|text| AdminPassword::parse(text).ok()),
        })
    }

    /// The secrets to prove, in the contract's order.
    fn secrets(&self) -> Vec<(Secret, Option<&[u8]>)> {
        let mut secrets = vec![(Secret::Auth, self.auth.as_ref().map(|a| &a.as_bytes()[..]))];
        if let Some(admin) = &self.admin {
            secrets.push((Secret::Admin, admin.as_ref().map(AdminPassword::as_bytes)));
        }
        secrets
    }

    fn entry(&self, conn: ConnId, outbox: &Outbox) -> Entry {
        Entry {
            conn,
            name: self.name.clone(),
            admin: self.admin.is_some(),
            pubkey: self.pubkey.clone(),
            session: self.session.clone(),
            outbox: outbox.clone(),
            claimed: false,
            moved: false,
            token: SessionToken::random(),
            replaced: Default::default(),
        }
    }
}

/// Checks a join frame and enters the room; counts the outcome.
async fn admit(
    state: &AppState,
    room: Option<&RoomId>,
    ip: IpAddr,
    conn: ConnId,
    join: &JoinFrame<'_>,
    outbox: &Outbox,
) -> Result<Arc<Room>, Refusal> {
    let outcome: Result<(Arc<Room>, bool), Refusal> = async {
        let request = JoinRequest::parse(join)?;
        let mut attempt = state.limiters.attempt(AddressKey::of(ip), room.cloned());
        attempt.check()?;
        let Some(room_id) = room else {
            // No such room can exist; the probe still counts.
            attempt.charge()?;
            return Err(ErrorCode::RoomNotFound.into());
        };
        let secrets = request.secrets();
        let mut entry = request.entry(conn, outbox);
        let cluster_tag = state
            .cluster
            .as_ref()
            .map(|c| (c, state.credentials.pepper().room_hash(room_id)));
        if let Some((cluster, tag)) = &cluster_tag {
            let limit = state.config.join_failures_per_room;
            cluster.check_failures(tag, limit).await?;
        }
        for _ in 0..JOIN_RETRIES {
            let proven = match access::prove(state, room_id, &secrets, &mut attempt).await {
                Ok(proven) => proven,
                Err(refusal) => {
                    if let (Some((cluster, tag)), ErrorCode::InvalidCredentials) =
                        (&cluster_tag, refusal.code)
                    {
                        cluster.count_failure(tag);
                    }
                    return Err(refusal);
                }
            };
            let claiming = match &state.cluster {
                Some(cluster) => Some(cluster.claiming().await),
                None => None,
            };
            let claim = match &state.cluster {
                Some(cluster) => Some(enter_cluster(state, cluster, &proven, &mut entry).await?),
                None => None,
            };
            let admitted = state.hub.admit(room_id, &proven, &entry);
            drop(claiming);
            // Refused for good: the name this join claimed goes (a retry after `Gone` keeps it,
            // and a release queued behind it could undo the retry's claim).
            if let (Some(cluster), Err(Refused::Code(_))) = (&state.cluster, &admitted) {
                let tag = &proven.record().id_hash;
                if matches!(claim, Some(Claim::New | Claim::Moved)) {
                    cluster.release_name(tag, &entry.name);
                }
                cluster.unsubscribe_unless_live(tag);
            }
            match admitted {
                Ok(room) => {
                    if let Some(cluster) = &state.cluster {
                        // Another join's refusal may have let the channel go meanwhile.
                        let _ = cluster.subscribe(&room.record.id_hash).await;
                        // A resume here gave the member a new token: its claim carries it.
                        cluster.renew_claim(&room.record.id_hash, &entry.name, &entry.token);
                        tell_cluster_joined(cluster, &room, conn, entry.moved);
                    }
                    // The room is live: a delete may take the turn now.
                    drop(proven);
                    if room.due_for_extension() {
                        state.credentials.extend(&room.record.id_hash);
                        if room.record.listed {
                            let until = time::OffsetDateTime::now_utc() + state.config.room_ttl();
                            state.lobby.extend(room_id, until);
                        }
                    }
                    let replaced = entry.moved || entry.replaced.load(Ordering::Relaxed);
                    return Ok((room, replaced));
                }
                Err(Refused::Gone) => continue,
                Err(Refused::Code(code)) => return Err(code.into()),
            }
        }
        Err(ErrorCode::StoreUnavailable.into())
    }
    .await;
    let label = match &outcome {
        Ok(_) => "ok",
        Err(r) => r.code.as_str(),
    };
    state.metrics.joins.with_label_values(&[label]).inc();
    audit_join(state, room, ip, join, &outcome);
    outcome.map(|(room, _)| room)
}

/// The audit trail's line for a join: accepted (and a session replaced, if it took a live
/// socket's place) or refused with its code.
fn audit_join(
    state: &AppState,
    room_id: Option<&RoomId>,
    ip: IpAddr,
    join: &JoinFrame<'_>,
    outcome: &Result<(Arc<Room>, bool), Refusal>,
) {
    if !state.audit.is_on() {
        return;
    }
    let name = MemberName::parse(&join.name).ok();
    let hash = match outcome {
        Ok((room, _)) => room.record.id_hash.clone(),
        Err(_) => match room_id {
            Some(id) => state.credentials.pepper().room_hash(id),
            None => String::new(),
        },
    };
    let listed_id = match outcome {
        Ok((room, _)) if room.record.listed => Some(&room.id),
        _ => None,
    };
    let line = |event| {
        let mut record = Record::new(event).address(ip);
        if !hash.is_empty() {
            record = record.room(RoomRef {
                hash: &hash,
                listed_id,
            });
        }
        match &name {
            Some(name) => record.member(name),
            None => record,
        }
    };
    match outcome {
        Ok((_, replaced)) => {
            state.audit.record(line(audit::Event::JoinAccepted));
            if *replaced {
                state.audit.record(line(audit::Event::SessionReplaced));
            }
        }
        Err(refusal) => state
            .audit
            .record(line(audit::Event::JoinRefused).code(refusal.code)),
    }
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

/// A joined member's socket and address.
#[derive(Clone, Copy)]
struct Who {
    conn: ConnId,
    ip: IpAddr,
}

impl Who {
    /// The start of an audit line about this member in `room`; `name` holds its name.
    fn audit<'a>(
        &self,
        room: &'a Room,
        event: audit::Event,
        name: &'a Option<MemberName>,
    ) -> Record<'a> {
        let record = Record::new(event).address(self.ip).room(RoomRef {
            hash: &room.record.id_hash,
            listed_id: room.record.listed.then_some(&room.id),
        });
        match name {
            Some(name) => record.member(name),
            None => record,
        }
    }

    /// The member's name, for the audit trail.
    fn name(&self, room: &Room) -> Option<MemberName> {
        room.author(self.conn)
            .and_then(|(_, name)| MemberName::parse(&name).ok())
    }
}

async fn chat(
    state: &AppState,
    room: &Arc<Room>,
    member: Who,
    inbound: &mut Inbound,
    outbox: &Outbox,
    allowance: &mut Allowance,
) -> (Ended, Departure) {
    let ping_every = Duration::from_secs(state.config.ping_interval_secs);
    let idle_after = Duration::from_secs(state.config.idle_timeout_secs);
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let mut last_seen = Instant::now();
    let mut bad = 0;
    loop {
        let incoming = tokio::select! {
            biased;
            _ = outbox.closed() => return (Ended::ByServer, Departure::Lost),
            _ = heartbeat.tick() => {
                if last_seen.elapsed() >= idle_after {
                    outbox.close(close::GOING_AWAY, "idle timeout");
                    return (Ended::ByServer, Departure::Lost);
                }
                outbox.ping();
                continue;
            }
            incoming = inbound.next() => incoming,
        };
        let text = match incoming {
            Incoming::Text(text) => text,
            Incoming::Ping(payload) => {
                if !pace(allowance, payload.len(), outbox).await {
                    return (Ended::ByServer, Departure::Lost);
                }
                last_seen = Instant::now();
                outbox.pong(payload);
                continue;
            }
            Incoming::Pong => {
                if !pace(allowance, 0, outbox).await {
                    return (Ended::ByServer, Departure::Lost);
                }
                last_seen = Instant::now();
                continue;
            }
            Incoming::Binary(len) => {
                // Nothing the protocol takes, but it was read: it costs like any frame.
                if !pace(allowance, len, outbox).await {
                    return (Ended::ByServer, Departure::Lost);
                }
                last_seen = Instant::now();
                if bad_frame(&mut bad, None, outbox) {
                    return (Ended::ByServer, Departure::Now);
                }
                continue;
            }
            other => return (end(outbox, &other), departure(&other)),
        };
        last_seen = Instant::now();
        let frame = match ClientFrame::parse(&text) {
            Ok(ClientFrame::Join(_)) => Err(None),
            Ok(frame) => Ok(frame),
            Err(e) => Err(e.txn),
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(txn) => {
                if bad_frame(&mut bad, txn.as_deref(), outbox) {
                    return (Ended::ByServer, Departure::Now);
                }
                continue;
            }
        };
        bad = 0;
        let txn = match &frame {
            ClientFrame::Send { txn, .. } | ClientFrame::Dm { txn, .. } => Some(txn.as_ref()),
            _ => None,
        };
        // A `members` answer costs its size: a page of a crowd is hundreds of times the ask.
        let answer = match &frame {
            ClientFrame::Members { page, name } => {
                Some(room.members_answer(*page, name.as_deref()))
            }
            _ => None,
        };
        let answer_len = match &answer {
            Some(Ok(frame)) => frame.len(),
            _ => 0,
        };
        if let Err(wait) = allowance.take(text.len() + answer_len) {
            // One line per pause, not per frame: the socket is not read until it refills.
            if state.audit.is_on() {
                let name = member.name(room);
                let record = member.audit(room, audit::Event::RateLimited, &name);
                state.audit.record(record.limited(audit::Limited::Messages));
            }
            let error = ServerFrame::error(ErrorCode::RateLimited, txn, Some(retry_after_ms(wait)));
            let _ = outbox.push(&error.wire());
            // And the socket is not read until the allowance has refilled: a client that keeps
            // sending past it slows down itself, not the server.
            if !pause(wait, outbox).await {
                return (Ended::ByServer, Departure::Lost);
            }
            continue;
        }
        if let Some(answer) = answer {
            let _ = match answer {
                Ok(frame) => outbox.push(&frame),
                Err(code) => outbox.push(&ServerFrame::error(code, None, None).wire()),
            };
            continue;
        }
        if let Err(code) = handle(state, room, member, &frame, outbox).await {
            let _ = outbox.push(&ServerFrame::error(code, txn, None).wire());
        }
    }
}

/// Answers a bad frame with `bad_request`; the tenth in a row closes the socket with 4400.
/// Returns whether it did.
fn bad_frame(bad: &mut u32, txn: Option<&str>, outbox: &Outbox) -> bool {
    *bad += 1;
    if *bad >= MAX_BAD_FRAMES {
        refuse(outbox, ErrorCode::BadRequest);
        return true;
    }
    let _ = outbox.push(&ServerFrame::error(ErrorCode::BadRequest, txn, None).wire());
    false
}

/// Carries out one frame of a joined member.
async fn handle(
    state: &AppState,
    room: &Arc<Room>,
    member: Who,
    frame: &ClientFrame<'_>,
    outbox: &Outbox,
) -> Result<(), ErrorCode> {
    let conn = member.conn;
    if let Some(cluster) = state.cluster.as_ref().filter(|c| c.is_up()) {
        match clustered(state, cluster, room, conn, frame).await {
            Ok(done) if done => return Ok(()),
            Ok(_) => {}
            // Redis went away meanwhile: this node relays it to its own members.
            Err(Clustered::Down) => {}
            Err(Clustered::Refused(code)) => return Err(code),
        }
    }
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
        ClientFrame::Kick { name } => {
            let by = member.name(room);
            room.kick(conn, name)?;
            let kicked = MemberName::parse(name).ok();
            let mut record = member.audit(room, audit::Event::Kick, &kicked);
            if let Some(by) = &by {
                record = record.by_member(by);
            }
            state.audit.record(record);
        }
        ClientFrame::Lock | ClientFrame::Unlock => {
            let locked = matches!(frame, ClientFrame::Lock);
            room.set_locked(conn, locked)?;
            let by = member.name(room);
            let event = if locked {
                audit::Event::Lock
            } else {
                audit::Event::Unlock
            };
            state.audit.record(member.audit(room, event, &by));
        }
        ClientFrame::MakeAdmin { name } => {
            let by = member.name(room);
            room.make_admin(conn, name)?;
            let made = MemberName::parse(name).ok();
            let mut record = member.audit(room, audit::Event::AdminMade, &made);
            if let Some(by) = &by {
                record = record.by_member(by);
            }
            state.audit.record(record);
        }
        ClientFrame::DeleteRoom => {
            if !room.is_admin(conn) {
                return Err(ErrorCode::Forbidden);
            }
            let by = member.name(room);
            access::delete_room(state, &room.id, None)
                .await
                .map_err(|_| ErrorCode::StoreUnavailable)?;
            let record = member.audit(room, audit::Event::RoomDeleted, &by);
            state
                .audit
                .record(record.deleted_by(audit::DeletedBy::Admin));
        }
        // Answered before the allowance is taken, where its size is known.
        ClientFrame::Members { .. } => {}
        ClientFrame::Ping { t } => {
            let _ = outbox.push(&ServerFrame::Pong { t: *t }.wire());
        }
        ClientFrame::Join(_) => return Err(ErrorCode::BadRequest),
    }
    Ok(())
}

enum Clustered {
    Down,
    Refused(ErrorCode),
}

/// The frames every node of a cluster must see, published for all of them (this one too) to
/// deliver when they come back from Redis; `Ok(false)` for the frames that stay on this node.
async fn clustered(
    state: &AppState,
    cluster: &Cluster,
    room: &Room,
    conn: ConnId,
    frame: &ClientFrame<'_>,
) -> Result<bool, Clustered> {
    let Some(author) = room.author(conn) else {
        return Ok(false);
    };
    let published = match frame {
        ClientFrame::Send { txn, body } => {
            let sent = cluster.send(room, author.0, &author.1, txn, body).await;
            if sent.is_ok() {
                state.metrics.messages_relayed.inc();
            }
            sent
        }
        ClientFrame::Dm { to, txn, body } => {
            let parties = room.dm_parties(conn, to).map_err(Clustered::Refused)?;
            let event = Event::Dm {
                member: parties.from.0,
                from: parties.from_name.as_str().into(),
                to_member: parties.to.0,
                to: parties.to_name.as_str().into(),
                txn: txn.as_ref().into(),
                body,
                pubkey: parties.pubkey.as_deref().map(Into::into),
                ts: crate::protocol::now_ms(),
            };
            let sent = cluster.publish_sequenced(room, &event).await;
            if sent.is_ok() {
                state.metrics.messages_relayed.inc();
            }
            sent
        }
        ClientFrame::Unsend { seq } => {
            let (seq, by, author) = room.check_unsend(conn, *seq).map_err(Clustered::Refused)?;
            let event = Event::Unsent {
                seq,
                by: by.into(),
                author: author.0,
            };
            cluster.publish(room, &event).await
        }
        _ => match presence_event(frame, author.0, &author.1) {
            Some(event) => cluster.publish(room, &event).await,
            None => return Ok(false),
        },
    };
    match published {
        Ok(()) => Ok(true),
        Err(e) if e.may_have_run() => {
            log::warn!("cluster: no answer in time to a publish, which may have gone out: {e}");
            Ok(true)
        }
        Err(_) => Err(Clustered::Down),
    }
}

/// The events of a frame that carries no `seq` and no body.
fn presence_event<'a>(
    frame: &ClientFrame<'_>,
    member: MemberId,
    from: &'a str,
) -> Option<Event<'a>> {
    let member = member.0;
    match *frame {
        ClientFrame::Typing { active } => Some(Event::Typing {
            member,
            from: from.into(),
            active,
        }),
        ClientFrame::Read { seq } => Some(Event::Read {
            member,
            from: from.into(),
            seq,
        }),
        _ => None,
    }
}

/// What a join on a node of a cluster needs before the room here takes it: Redis (without it
/// this node does not know who is in the room on the others), the room's channel (so that
/// nothing said elsewhere after the join is missed), and the name, claimed across the cluster.
async fn enter_cluster(
    state: &AppState,
    cluster: &Cluster,
    proven: &Proven,
    entry: &mut Entry,
) -> Result<Claim, Refusal> {
    let unavailable = |_| Refusal::from(ErrorCode::ClusterUnavailable);
    if !cluster.is_up() {
        return Err(ErrorCode::ClusterUnavailable.into());
    }
    let tag = &proven.record().id_hash;
    cluster.subscribe(tag).await.map_err(unavailable)?;
    let claim = cluster
        .claim(
            tag,
            &entry.name,
            &entry.token,
            entry.session.as_ref(),
            proven.record().member_cap(state.hub.limits().max_members),
            entry.admin,
        )
        .await
        .map_err(unavailable)?;
    match claim {
        Claim::Taken => Err(ErrorCode::NameTaken.into()),
        Claim::Full => Err(ErrorCode::RoomFull.into()),
        Claim::Locked => Err(ErrorCode::RoomLocked.into()),
        Claim::New | Claim::Moved | Claim::Mine => {
            // A retry's claim answers `mine` for what the first one took.
            entry.claimed |= claim != Claim::Mine;
            entry.moved |= claim == Claim::Moved;
            Ok(claim)
        }
    }
}

/// The other nodes learn of a member who joined (or came back) here, in order with the rosters
/// and leaves this node publishes.
fn tell_cluster_joined(cluster: &Cluster, room: &Room, conn: ConnId, moved: bool) {
    if let Some(peer) = room.peer(conn) {
        let event = Event::Joined {
            node: cluster.node(),
            peer,
            moved,
        };
        cluster.post(&room.record.id_hash, &event);
    }
}
