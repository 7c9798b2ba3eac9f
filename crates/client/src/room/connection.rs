//! A room's socket: connecting and joining, the writer task, and the reconnect state machine
//! (backoff on a lost socket, a server going away or too busy; an end on a final close).

use std::{borrow::Cow, sync::atomic::Ordering, sync::Arc, time::Duration};

use ephemera_protocol::{close, ClientFrame, JoinFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::{net::TcpStream, sync::mpsc};
use tokio_tungstenite::{
    connect_async_with_config,
    tungstenite::{protocol::WebSocketConfig, Message},
    MaybeTlsStream, WebSocketStream,
};

use super::{
    dispatch,
    events::{Ended, Event, JoinError},
    Echo, Inner,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The longest a reconnect waits between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Socket buffers sized for chat. tungstenite's default read buffer is 128 KiB, and it zeroes
/// the unused part before every read: in the load generator that was a third of its CPU.
pub fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
}

/// Opens a socket and joins; on `welcome`, the state takes the member list and the new token.
pub(super) async fn connect(inner: &Inner) -> Result<Socket, JoinError> {
    // Nagle off, as browsers have it: a frame goes out when it is sent.
    let url = inner.api.ws_url(&inner.room_id);
    let (mut socket, _) = connect_async_with_config(url, Some(socket_config()), true)
        .await
        .map_err(|e| JoinError::Connect(e.to_string()))?;
    let join = {
        let state = inner.state();
        let join = ClientFrame::<Value>::Join(JoinFrame {
            name: Cow::Borrowed(&state.name),
            auth: Cow::Borrowed(&inner.auth),
            pubkey: Some(inner.dm.public_b64().into()),
            admin_password: inner.admin_password.as_deref().map(Cow::Borrowed),
            session: state.session.as_deref().map(Cow::Borrowed),
        });
        super::to_text(&join)
    };
    socket
        .send(join)
        .await
        .map_err(|e| JoinError::Connect(e.to_string()))?;
    let mut error: Option<(String, String)> = None;
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                match serde_json::from_str::<ServerFrame<'_, Value>>(&text) {
                    Ok(ServerFrame::Welcome {
                        you,
                        members,
                        member_count,
                        session,
                        ..
                    }) => {
                        let mut state = inner.state();
                        state.name = you.name.into_owned();
                        state.admin = you.admin;
                        state.members = members.iter().cloned().map(Into::into).collect();
                        state.member_count = member_count.max(state.members.len());
                        // A crowd's first page is a full one: its length is the page size.
                        state.page_size =
                            (member_count > state.members.len()).then_some(state.members.len());
                        state.session = Some(session.into_owned());
                        return Ok(socket);
                    }
                    Ok(ServerFrame::Error { code, message, .. }) => {
                        error = Some((code.into_owned(), message.into_owned()));
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

/// A joined socket, split: frames to send go through `State::out` to a writer task, which is
/// in place before this returns, so a send right after a join cannot find the room unconnected.
pub(super) struct Attached {
    stream: futures_util::stream::SplitStream<Socket>,
    writer: tokio::task::JoinHandle<()>,
}

/// The writer's channel is unbounded: only this client's own sends feed it, each waiting for
/// its echo (files one chunk at a time), so what waits in it is what the user sent.
pub(super) fn attach(inner: &Inner, socket: Socket) -> Attached {
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

/// Reads the room until it ends, reconnecting with the `session` token when the socket is lost
/// or the server asks to come back later (1001, 1013); a final close ends the room.
pub(super) async fn run(inner: Arc<Inner>, mut attached: Attached) {
    loop {
        let Attached { mut stream, writer } = attached;
        let mut closed_with = None;
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Text(text)) => dispatch::handle(&inner, &text),
                Ok(Message::Close(frame)) => {
                    closed_with = Some(frame.map_or(1005, |f| u16::from(f.code)));
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
        let reason = match (ended, closed_with) {
            (Some(reason), _) => Some(reason),
            _ if inner.leaving.load(Ordering::Acquire) => Some(Ended::Left),
            (None, Some(code)) if close::is_final(code) => {
                Some(Ended::Closed { code, error: None })
            }
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
                Err(JoinError::Refused { code, close, .. }) if close::is_final(close) => {
                    inner.emit(Event::Ended {
                        room: inner.room_id.clone(),
                        reason: Ended::Closed {
                            code: close,
                            error: Some(code),
                        },
                    });
                    return;
                }
                // A server going down (1001) or too busy (1013) is tried again, like no server.
                Err(_) => delay = (delay * 2).min(MAX_BACKOFF),
            }
        };
        inner.emit(Event::Reconnected {
            room: inner.room_id.clone(),
        });
    }
}
