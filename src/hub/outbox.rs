//! A member's outbound queue, and the response body that drains it into the socket.
//!
//! The hub pushes each frame's shared bytes straight into the queue; the HTTP dispatcher pulls
//! them when the socket can take more, encoding everything waiting into one buffer (one write
//! for a burst). The queue counts what it holds: a member whose backlog passes the limit reads
//! too slowly to keep up, and is cut off with 1013 instead of growing the server's memory.
//!
//! This replaces `actix_ws::Session` for the writing half because a close must be able to jump
//! the queue: the session's channel would make a slow reader's 1013 wait behind its backlog.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use actix_http::ws::{CloseCode, CloseReason, Codec, Message};
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_util::{codec::Encoder as _, sync::CancellationToken};

use crate::protocol::close;

/// How much one poll of the body encodes before handing the bytes to the dispatcher.
const CHUNK_BYTES: usize = 64 * 1024;

enum Out {
    Text(ByteString),
    Ping,
    Pong(Bytes),
    Close(CloseReason),
}

/// The backlog a member may have before it counts as too slow.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub bytes: usize,
    pub frames: usize,
}

struct Shared {
    limits: QueueLimits,
    /// Counts members cut off for overflowing (`ephemera_slow_readers_total`).
    overflows: prometheus::IntCounter,
    queued_bytes: AtomicUsize,
    queued_frames: AtomicUsize,
    /// Set once a close is queued: nothing more is accepted.
    closing: AtomicBool,
    /// Set when the member overflowed: the body drops its backlog and sends only the close.
    cut: AtomicBool,
    /// Cancelled when the socket is closing, for whatever reason; the session's read loop waits
    /// on it so that a kick, a delete or an overflow ends the session at once.
    closed: CancellationToken,
}

/// The sending half, held by the hub's member entry and by the session. Cloning is cheap.
#[derive(Clone)]
pub struct Outbox {
    /// Unbounded on purpose: the bound is the byte and frame count in `shared`, checked before
    /// each push. The receiver is the [`OutboundBody`], owned by the HTTP dispatcher; when the
    /// connection drops, pushes fail silently and the session notices the closed read side.
    tx: mpsc::UnboundedSender<Out>,
    shared: Arc<Shared>,
}

/// Why a push did not queue the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The socket is already closing.
    Closing,
    /// This push overflowed the queue; the member is being cut off with 1013.
    Overflow,
}

impl Outbox {
    pub fn new(limits: QueueLimits, overflows: prometheus::IntCounter) -> (Self, OutboundBody) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            limits,
            overflows,
            queued_bytes: AtomicUsize::new(0),
            queued_frames: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            cut: AtomicBool::new(false),
            closed: CancellationToken::new(),
        });
        let body = OutboundBody {
            rx,
            shared: shared.clone(),
            codec: Codec::new(),
            buf: BytesMut::new(),
            done: false,
        };
        (Self { tx, shared }, body)
    }

    /// Queues a text frame; the bytes are shared, not copied.
    pub fn push(&self, frame: &ByteString) -> Result<(), PushError> {
        let s = &self.shared;
        if s.closing.load(Ordering::Acquire) {
            return Err(PushError::Closing);
        }
        let bytes = s.queued_bytes.fetch_add(frame.len(), Ordering::AcqRel) + frame.len();
        let frames = s.queued_frames.fetch_add(1, Ordering::AcqRel) + 1;
        if bytes > s.limits.bytes || frames > s.limits.frames {
            if !s.cut.swap(true, Ordering::AcqRel) {
                s.overflows.inc();
            }
            self.close(close::TRY_AGAIN_LATER, "too slow to keep up");
            return Err(PushError::Overflow);
        }
        // A send fails only when the connection is gone; the session sees that on its own.
        let _ = self.tx.send(Out::Text(frame.clone()));
        Ok(())
    }

    pub fn ping(&self) {
        let _ = self.tx.send(Out::Ping);
    }

    pub fn pong(&self, payload: Bytes) {
        let _ = self.tx.send(Out::Pong(payload));
    }

    /// Queues a close after whatever is queued (the first close wins) and tells the session.
    pub fn close(&self, code: u16, reason: &str) {
        if !self.shared.closing.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(Out::Close(CloseReason {
                code: CloseCode::from(code),
                description: Some(reason.to_owned()),
            }));
        }
        self.shared.closed.cancel();
    }

    /// Resolves once a close has been queued.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    pub fn is_closing(&self) -> bool {
        self.shared.closing.load(Ordering::Acquire)
    }

    /// Whether both handles feed the same socket.
    pub fn same(&self, other: &Outbox) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// The WebSocket response body: drains the member's queue into encoded frames.
pub struct OutboundBody {
    rx: mpsc::UnboundedReceiver<Out>,
    shared: Arc<Shared>,
    codec: Codec,
    buf: BytesMut,
    done: bool,
}

impl OutboundBody {
    fn encode(&mut self, message: Message) -> Result<(), actix_web::Error> {
        self.codec
            .encode(message, &mut self.buf)
            .map_err(actix_web::Error::from)
    }
}

impl Stream for OutboundBody {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        while !this.done && this.buf.len() < CHUNK_BYTES {
            let out = match this.rx.poll_recv(cx) {
                Poll::Ready(Some(out)) => out,
                Poll::Ready(None) => {
                    this.done = true;
                    break;
                }
                Poll::Pending => break,
            };
            let result = match out {
                Out::Text(text) => {
                    this.shared
                        .queued_bytes
                        .fetch_sub(text.len(), Ordering::AcqRel);
                    this.shared.queued_frames.fetch_sub(1, Ordering::AcqRel);
                    if this.shared.cut.load(Ordering::Acquire) {
                        continue;
                    }
                    this.encode(Message::Text(text))
                }
                Out::Ping => this.encode(Message::Ping(Bytes::new())),
                Out::Pong(payload) => this.encode(Message::Pong(payload)),
                Out::Close(reason) => {
                    this.done = true;
                    this.encode(Message::Close(Some(reason)))
                }
            };
            if let Err(e) = result {
                this.done = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
        if !this.buf.is_empty() {
            return Poll::Ready(Some(Ok(this.buf.split().freeze())));
        }
        if this.done {
            this.shared.closed.cancel();
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}
