//! The upgrade: `GET /ws/{room_id}` with `Upgrade: websocket` leaves the HTTP app here, with
//! its connection, and becomes a socket whose task runs the server's [`Handler`].

use std::{sync::Arc, time::Instant};

use actix_codec::{Framed, FramedParts};
use actix_http::{
    body::{BodySize, BoxBody, MessageBody as _},
    h1,
    header::{HeaderName, HeaderValue, CONTENT_TYPE},
    ws::handshake,
    ConnectionType, HttpMessage as _, Request, Response, StatusCode,
};
use actix_rt::net::TcpStream;
use actix_web::{web::BytesMut, HttpRequest, HttpResponse};
use futures_util::{future::join, SinkExt as _};
use serde_json::json;

use super::{Ended, Handler, Inbound, Opened, Outbox, Transport};
use crate::{address::AddressKey, domain::RoomId, protocol::close, ratelimit::Full, telemetry};

/// The connection after its upgrade request: the HTTP parser's state and buffers, and the socket.
pub type Upgraded = Framed<TcpStream, h1::Codec>;

/// Every request that asks for `Upgrade: websocket` comes here instead of the app, with its
/// connection. A good one gets its 101 and the socket becomes the handler's: the HTTP buffers are
/// dropped and the socket is read and written here, so an idle member costs about 3 KB in all
/// (docs/performance.md), less than the HTTP dispatcher's two 8 KiB buffers alone.
///
/// Every refusal before the upgrade is an HTTP status; every refusal after it is an `error` frame
/// and a close. The error type is the upgrade service's contract; nothing here returns one.
pub async fn serve<H: Handler>(
    transport: Arc<Transport>,
    handler: H,
    req: Request,
    mut framed: Upgraded,
) -> Result<(), actix_http::Error> {
    let started = Instant::now();
    let Some(room) = req
        .path()
        .strip_prefix("/ws/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .map(|id| RoomId::parse(id).ok())
    else {
        return refuse(
            &transport,
            &mut framed,
            &req,
            Response::not_found(),
            started,
        )
        .await;
    };
    if !transport.origins.allows(req.headers()) {
        let body = json!({
            "error": { "code": "forbidden", "message": "this origin may not open a WebSocket here" }
        });
        let mut res = Response::with_body(StatusCode::FORBIDDEN, body.to_string());
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return refuse(
            &transport,
            &mut framed,
            &req,
            res.map_into_boxed_body(),
            started,
        )
        .await;
    }
    let accepted = match handshake(req.head()) {
        Ok(mut accepted) => accepted.finish().drop_body(),
        Err(e) => return refuse(&transport, &mut framed, &req, e.into(), started).await,
    };
    let ip = transport.proxies.client(req.headers(), req.peer_addr());
    if framed
        .send(h1::Message::Item((accepted, BodySize::None)))
        .await
        .is_err()
    {
        return Ok(());
    }
    telemetry::upgrade_log(&req, StatusCode::SWITCHING_PROTOCOLS, started);
    drop(req);

    // The HTTP buffers go here, at the end of this statement, not when the connection ends.
    let FramedParts { io, read_buf, .. } = framed.into_parts();
    // Bytes the client sent right behind its request; usually none.
    let early = if read_buf.is_empty() {
        BytesMut::new()
    } else {
        BytesMut::from(&read_buf[..])
    };
    drop(read_buf);
    let (read, write) = io.into_split();
    let (outbox, drain) = Outbox::new(transport.queue_limits.clone());
    let mut inbound = Inbound::new(read, early, transport.max_frame_bytes);
    // The sockets escape the HTTP server's own connection limit once upgraded; these are theirs.
    // The place is held until the socket is gone, its close and linger included.
    let place = transport.places.open(AddressKey::of(ip));
    let tracker = transport.tracker.clone();
    // A task of its own, sized for the session alone: the HTTP dispatcher's task, which holds
    // this upgrade (several KiB of parser state), ends here.
    let socket = async move {
        let mut place = match place {
            Ok(place) => place,
            Err(full) => {
                // Turned away before anything was read: no session, and no linger, so that a
                // flood of such sockets cannot take the lingering places of others.
                let reason = match full {
                    Full::Server => "server busy",
                    Full::Address => "too many connections from this address",
                };
                outbox.close(close::TRY_AGAIN_LATER, reason);
                drain.write_to(write).await;
                return;
            }
        };
        let opened = Opened {
            room,
            ip,
            place: &mut place,
            inbound: &mut inbound,
            outbox,
        };
        let (ended, ()) = join(handler.run(opened), drain.write_to(write)).await;
        if ended == Ended::ByServer {
            inbound.linger(&transport.lingering).await;
        }
    };
    actix_rt::spawn(tracker.track_future(socket));
    Ok(())
}

/// Answers an upgrade request that will not be upgraded, and closes the connection.
async fn refuse(
    transport: &Transport,
    framed: &mut Upgraded,
    req: &Request,
    res: Response<BoxBody>,
    started: Instant,
) -> Result<(), actix_http::Error> {
    let status = res.status();
    let (mut res, body) = res.into_parts();
    res.head_mut().set_connection_type(ConnectionType::Close);
    for &(name, value) in &transport.headers {
        res.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let body = body.try_into_bytes().unwrap_or_default();
    let head = h1::Message::Item((res, BodySize::Sized(body.len() as u64)));
    let sent = async {
        framed.feed(head).await?;
        if !body.is_empty() {
            framed.feed(h1::Message::Chunk(Some(body))).await?;
        }
        // `send` flushes; Framed's `close` shuts the socket down without flushing its buffer.
        framed.send(h1::Message::Chunk(None)).await?;
        framed.close().await
    };
    // A client that has gone cannot be told; nothing else is to be done.
    let _ = sent.await;
    telemetry::upgrade_log(req, status, started);
    Ok(())
}

/// The route of `GET /ws/{room_id}` in the HTTP app, which only requests without
/// `Upgrade: websocket` reach (the others come to [`serve`]): the handshake's own answer, `400`.
pub async fn without_upgrade(req: HttpRequest) -> HttpResponse {
    match handshake(req.head()) {
        Err(e) => Response::from(e).into(),
        Ok(_) => HttpResponse::BadRequest().finish(),
    }
}
