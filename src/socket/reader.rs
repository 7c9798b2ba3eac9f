//! The reading half of a WebSocket, over the bare TCP stream the upgrade hands over: frames in,
//! with every limit checked before the bytes it limits are buffered, and the close handshake's
//! last step (RFC 6455 §7.1.1) once the server has closed.

use std::{sync::Arc, time::Duration};

use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::{net::tcp::OwnedReadHalf, sync::Semaphore};

use super::decoder::{Decoder, Message, Violation};

/// What the reader makes of the next WebSocket message.
#[derive(Debug)]
pub enum Incoming {
    Text(ByteString),
    /// A binary message of this length: nothing the protocol takes.
    Binary(usize),
    Ping(Bytes),
    Pong,
    /// The client's close frame, with its code when it has one.
    Close(Option<u16>),
    /// Over the size limit, found from a frame's header.
    TooLarge,
    InvalidUtf8,
    /// A frame RFC 6455 forbids (reserved bits, unknown opcode, unmasked, …).
    Malformed,
    /// The stream ended or failed.
    Gone,
}

/// How much a read asks the socket for at least. The buffer exists only while bytes are in
/// flight: an idle member holds none.
const READ_CHUNK: usize = 4 * 1024;
/// How much a read asks for at most, when a large frame is on its way.
const READ_MAX: usize = 64 * 1024;

/// Reads messages off the socket. Partial frames and fragments live in `self`, so `next` is
/// safe to cancel in a `select!`.
pub struct Inbound {
    io: OwnedReadHalf,
    buf: BytesMut,
    decoder: Decoder,
}

impl Inbound {
    /// `early` holds whatever the client sent after its upgrade request, already read;
    /// `max_bytes` bounds every message.
    pub fn new(io: OwnedReadHalf, early: BytesMut, max_bytes: usize) -> Self {
        Self {
            io,
            buf: early,
            decoder: Decoder::new(max_bytes),
        }
    }

    /// The next message, or why there is none.
    pub async fn next(&mut self) -> Incoming {
        // A client that keeps its socket full would otherwise be read without a pause, since a
        // read that finds bytes never waits: the worker thread would serve no other socket.
        // Each message takes a unit of the task's budget, so the runtime gets its turn.
        tokio::task::consume_budget().await;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(message)) => {
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                    return match message {
                        Message::Text(text) => Incoming::Text(text),
                        Message::Binary(len) => Incoming::Binary(len),
                        Message::Ping(payload) => Incoming::Ping(payload),
                        Message::Pong => Incoming::Pong,
                        Message::Close(code) => Incoming::Close(code),
                    };
                }
                Ok(None) => {}
                Err(Violation::TooLarge) => return Incoming::TooLarge,
                Err(Violation::InvalidUtf8) => return Incoming::InvalidUtf8,
                Err(Violation::Protocol(_)) => return Incoming::Malformed,
            }
            if !self.fill().await {
                return Incoming::Gone;
            }
        }
    }

    /// The read buffer's capacity, for the tests of the idle footprint.
    #[cfg(test)]
    pub(super) fn buffered(&self) -> usize {
        self.buf.capacity()
    }

    /// Sets the size bound for the messages to come: small until the join, whose frame is.
    pub fn set_limit(&mut self, max_bytes: usize) {
        self.decoder.set_limit(max_bytes);
    }

    /// Reads what the socket has, at least one byte; `false` at the end of the stream.
    async fn fill(&mut self) -> bool {
        // Frames that make no message (fragments) come here without passing `next`'s budget.
        tokio::task::consume_budget().await;
        loop {
            // Idle: wait without a buffer, and allocate one only once bytes have arrived.
            if self.buf.capacity() == 0 && self.io.readable().await.is_err() {
                return false;
            }
            let wanted = self.decoder.wanted(&self.buf).clamp(READ_CHUNK, READ_MAX);
            self.buf.reserve(wanted);
            match self.io.try_read_buf(&mut self.buf) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    } else if self.io.readable().await.is_err() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// The end of a close the server started: the close frame has been written and the sending
    /// side shut down; now read and discard until the client's own close, the end of its stream,
    /// or [`LINGER`]. Dropping a socket with unread input makes the kernel answer with a reset,
    /// and a client that is still sending then loses the close frame it had not read yet (it sees
    /// 1006 and reconnects, instead of learning that the room was deleted).
    pub async fn linger(mut self, permits: &Lingering) {
        let Ok(_permit) = permits.0.try_acquire() else {
            return;
        };
        let _ = tokio::time::timeout(LINGER, async {
            // Frames are skipped as they pass: a read at a time (and the start of a header) is
            // all a lingering socket holds, whatever it is sent.
            let mut skipping = self.decoder;
            skipping.forget_message();
            loop {
                match skipping.discard(&mut self.buf) {
                    Ok(false) => {}
                    Ok(true) | Err(_) => return,
                }
                if self.buf.is_empty() {
                    self.buf = BytesMut::new();
                }
                self.buf.reserve(READ_CHUNK);
                if self.io.readable().await.is_err() {
                    return;
                }
                match self.io.try_read_buf(&mut self.buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        })
        .await;
    }
}

/// How long a socket the server closed may take to close its side.
pub const LINGER: Duration = Duration::from_secs(2);

/// How many closed sockets may linger at once; past that, a socket is dropped at once, as before.
/// Each costs a file descriptor and at most one frame's buffer for [`LINGER`].
#[derive(Clone)]
pub struct Lingering(Arc<Semaphore>);

impl Lingering {
    pub fn new(max: usize) -> Self {
        Self(Arc::new(Semaphore::new(max)))
    }
}
