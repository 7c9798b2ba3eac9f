//! A member's outbound queue, and the writer that drains it into the socket.
//!
//! The hub pushes each frame's shared bytes into the queue; the writer takes everything waiting,
//! encodes it into one buffer and writes it with one call (one write for a burst). The queue
//! counts what it holds: a member whose backlog passes the limit reads too slowly to keep up, and
//! is cut off with 1013 instead of growing the server's memory. A close jumps the backlog of a
//! member cut off this way.
//!
//! An idle member holds no buffer: the queue allocates on the first frame and gives its memory
//! back once drained, and the writer's buffer lives only for one write.

use std::{
    collections::VecDeque,
    future::poll_fn,
    sync::{Arc, Mutex, MutexGuard},
    task::{Poll, Waker},
    time::Duration,
};

use actix_http::ws::{CloseCode, CloseReason, Codec, Message};
use actix_web::web::{Bytes, BytesMut};
use bytestring::ByteString;
use tokio::{io::AsyncWriteExt as _, net::tcp::OwnedWriteHalf, sync::Notify};
use tokio_util::codec::Encoder as _;

use crate::protocol::close;

/// How much one write takes from the queue at most.
const CHUNK_BYTES: usize = 64 * 1024;
/// How long a closing socket may take to accept its last bytes and the close frame: a member cut
/// off for reading too slowly gets this long to read them, then the connection is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(30);

enum Out {
    Text(ByteString),
    Ping,
    Pong(Bytes),
    Close(CloseReason),
}

/// Past the server-wide budget, a member whose backlog passes this much is cut off: members
/// who keep up hold next to nothing, so the budget's overflow is borne by those furthest behind.
const PRESSURE_BYTES: usize = 1024 * 1024;

/// What every member's queue is held to, shared by all of them.
pub struct QueueLimits {
    /// The backlog one member may have before it counts as too slow.
    pub bytes: usize,
    pub frames: usize,
    /// Bytes queued to all members together (each copy counted) before the server is under
    /// pressure (0 = unlimited).
    pub budget: usize,
    /// That total (`ephemera_outbound_queued_bytes`).
    pub queued: prometheus::IntGauge,
    /// Counts members cut off for overflowing (`ephemera_slow_readers_total`).
    pub overflows: prometheus::IntCounter,
}

impl QueueLimits {
    fn under_pressure(&self) -> bool {
        self.budget > 0 && self.queued.get() > i64::try_from(self.budget).unwrap_or(i64::MAX)
    }
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Out>,
    /// Payload bytes waiting, control frames' included, for the limit.
    bytes: usize,
    /// A ping of the server's own waits: another would say nothing more.
    ping_queued: bool,
    /// A pong waits: RFC 6455 §5.5.3 lets it answer only the latest ping, so a member that sends
    /// pings and never reads holds one, not millions.
    pong_queued: bool,
    /// Set once a close is queued or the socket failed: nothing more is accepted.
    closing: bool,
    /// The writer, when it waits for frames.
    waker: Option<Waker>,
}

struct Shared {
    limits: Arc<QueueLimits>,
    /// Held by a push (the room's lock is held around it, so a room's relay takes each member's
    /// queue in turn) and by the writer while it encodes a chunk of at most [`CHUNK_BYTES`];
    /// bounded by [`QueueLimits`].
    queue: Mutex<Queue>,
    /// Wakes the session when the socket starts closing, whatever the reason, so that a kick, a
    /// delete or an overflow ends the session at once.
    closing: Notify,
}

impl Shared {
    /// The queue, even if a thread panicked holding it: every update leaves it consistent.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts bytes into the queue and the server-wide total.
    fn add(&self, queue: &mut Queue, len: usize) {
        queue.bytes += len;
        self.limits.queued.add(len as i64);
    }

    /// Counts bytes out of both.
    fn sub(&self, queue: &mut Queue, len: usize) {
        queue.bytes -= len;
        self.limits.queued.sub(len as i64);
    }

    /// Empties the queue, counting its bytes out.
    fn clear(&self, queue: &mut Queue) {
        let bytes = queue.bytes;
        self.sub(queue, bytes);
        queue.frames = VecDeque::new();
        queue.ping_queued = false;
        queue.pong_queued = false;
    }

    fn is_closing(&self) -> bool {
        self.lock().closing
    }

    async fn closed(&self) {
        loop {
            let notified = self.closing.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closing() {
                return;
            }
            notified.await;
        }
    }
}

/// Wakes the writer if it waits, after letting go of the queue, so that it can take the lock at
/// once.
fn wake_writer(mut queue: MutexGuard<'_, Queue>) {
    let waker = queue.waker.take();
    drop(queue);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// The sending half, held by the hub's member entry and by the session. Cloning is cheap.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The receiving half: the connection's writer owns it.
pub struct Drain {
    shared: Arc<Shared>,
    codec: Codec,
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
    pub fn new(limits: Arc<QueueLimits>) -> (Self, Drain) {
        let shared = Arc::new(Shared {
            limits,
            queue: Mutex::new(Queue::default()),
            closing: Notify::new(),
        });
        let drain = Drain {
            shared: shared.clone(),
            codec: Codec::new(),
        };
        (Self { shared }, drain)
    }

    /// Queues a frame and, when `wake`, wakes the writer if it waits. The caller holds the lock.
    fn enqueue(&self, mut queue: MutexGuard<'_, Queue>, out: Out, wake: bool) {
        queue.frames.push_back(out);
        if wake {
            wake_writer(queue);
        }
    }

    /// Queues a text frame and wakes the writer; the bytes are shared, not copied.
    pub fn push(&self, frame: &ByteString) -> Result<(), PushError> {
        self.push_text(frame, true)
    }

    /// Queues a text frame without waking the writer: it goes out with the next frame that does,
    /// or at the next [`Outbox::flush`], in its place in the queue either way.
    pub fn push_held(&self, frame: &ByteString) -> Result<(), PushError> {
        self.push_text(frame, false)
    }

    /// Wakes the writer if frames wait for it.
    pub fn flush(&self) {
        let queue = self.shared.lock();
        if !queue.frames.is_empty() {
            wake_writer(queue);
        }
    }

    fn push_text(&self, frame: &ByteString, wake: bool) -> Result<(), PushError> {
        let queue = self.shared.lock();
        if queue.closing {
            return Err(PushError::Closing);
        }
        let queue = self.admit(queue, frame.len())?;
        self.enqueue(queue, Out::Text(frame.clone()), wake);
        Ok(())
    }

    /// Counts `len` more bytes and one more frame against the limits, or cuts the member off.
    fn admit<'a>(
        &self,
        mut queue: MutexGuard<'a, Queue>,
        len: usize,
    ) -> Result<MutexGuard<'a, Queue>, PushError> {
        let shared = &self.shared;
        let limits = &shared.limits;
        shared.add(&mut queue, len);
        let within = queue.bytes <= limits.bytes && queue.frames.len() < limits.frames;
        if within && (queue.bytes <= PRESSURE_BYTES || !limits.under_pressure()) {
            return Ok(queue);
        }
        // Cut off: the backlog goes, and the close goes out next.
        shared.clear(&mut queue);
        drop(queue);
        limits.overflows.inc();
        self.close(close::TRY_AGAIN_LATER, "too slow to keep up");
        Err(PushError::Overflow)
    }

    /// Queues the server's heartbeat ping, unless one is still waiting.
    pub fn ping(&self) {
        let queue = self.shared.lock();
        if queue.closing || queue.ping_queued {
            return;
        }
        if let Ok(mut queue) = self.admit(queue, 0) {
            queue.ping_queued = true;
            self.enqueue(queue, Out::Ping, true);
        }
    }

    /// Queues the answer to a client's ping; a pong still waiting answers this ping instead.
    pub fn pong(&self, payload: Bytes) {
        let mut queue = self.shared.lock();
        if queue.closing {
            return;
        }
        if queue.pong_queued {
            let new = payload.len();
            let waiting = queue.frames.iter_mut().rev().find_map(|out| match out {
                Out::Pong(waiting) => Some(waiting),
                _ => None,
            });
            if let Some(waiting) = waiting {
                let old = std::mem::replace(waiting, payload).len();
                self.shared.add(&mut queue, new);
                self.shared.sub(&mut queue, old);
            }
            return;
        }
        if let Ok(mut queue) = self.admit(queue, payload.len()) {
            queue.pong_queued = true;
            self.enqueue(queue, Out::Pong(payload), true);
        }
    }

    /// Queues a close after whatever is queued (the first close wins) and tells the session.
    pub fn close(&self, code: u16, reason: &str) {
        let mut queue = self.shared.lock();
        if !queue.closing {
            queue.closing = true;
            let reason = CloseReason {
                code: CloseCode::from(code),
                description: Some(reason.to_owned()),
            };
            self.enqueue(queue, Out::Close(reason), true);
        } else {
            drop(queue);
        }
        self.shared.closing.notify_waiters();
    }

    /// Resolves once the socket is closing.
    pub async fn closed(&self) {
        self.shared.closed().await
    }
}

impl Drain {
    /// Waits for frames and encodes what is queued (up to [`CHUNK_BYTES`]) into `buf`, under
    /// the queue's lock: no list of taken frames is built, and a push meanwhile only waits for
    /// a few copies. Returns `false` once the close frame has been encoded: nothing follows it.
    async fn fill(&mut self, buf: &mut BytesMut) -> bool {
        poll_fn(|cx| {
            let mut queue = self.shared.lock();
            if queue.frames.is_empty() {
                if !queue
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    queue.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            let mut more = true;
            while more && buf.len() < CHUNK_BYTES {
                let Some(out) = queue.frames.pop_front() else {
                    break;
                };
                let message = match out {
                    Out::Text(text) => {
                        self.shared.sub(&mut queue, text.len());
                        Message::Text(text)
                    }
                    Out::Ping => {
                        queue.ping_queued = false;
                        Message::Ping(Bytes::new())
                    }
                    Out::Pong(payload) => {
                        self.shared.sub(&mut queue, payload.len());
                        queue.pong_queued = false;
                        Message::Pong(payload)
                    }
                    Out::Close(reason) => {
                        more = false;
                        Message::Close(Some(reason))
                    }
                };
                // The server codec's encoder cannot fail for a message it built itself.
                let _ = self.codec.encode(message, buf);
            }
            if queue.frames.is_empty() {
                // Given back: an idle member holds no slots (the next push costs one allocation).
                queue.frames = VecDeque::new();
            }
            Poll::Ready(more)
        })
        .await
    }

    /// Marks the socket finished: nothing more is queued, and the session hears that it closes.
    fn finish(&self) {
        let mut queue = self.shared.lock();
        queue.closing = true;
        self.shared.clear(&mut queue);
        drop(queue);
        self.shared.closing.notify_waiters();
    }

    /// Writes the queue into the socket until the close frame has gone or the socket fails, then
    /// shuts the sending side down.
    pub async fn write_to(mut self, mut io: OwnedWriteHalf) {
        let mut deadline = None;
        loop {
            let mut buf = BytesMut::new();
            let more = self.fill(&mut buf).await;
            let write = io.write_all(&buf);
            tokio::pin!(write);
            let written = loop {
                // Once the close is queued, the socket has CLOSE_GRACE to take the rest.
                if deadline.is_none() && self.shared.is_closing() {
                    deadline = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                }
                match deadline {
                    Some(at) => {
                        break tokio::time::timeout_at(at, write.as_mut())
                            .await
                            .unwrap_or(Err(std::io::ErrorKind::TimedOut.into()))
                    }
                    // Either the write completes, or closing starts and the deadline applies.
                    None => tokio::select! {
                        result = write.as_mut() => break result,
                        () = self.shared.closed() => continue,
                    },
                }
            };
            if written.is_err() {
                break;
            }
            if !more {
                let _ = tokio::time::timeout(CLOSE_GRACE, io.shutdown()).await;
                break;
            }
        }
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(bytes: usize, frames: usize, budget: usize) -> Arc<QueueLimits> {
        Arc::new(QueueLimits {
            bytes,
            frames,
            budget,
            queued: prometheus::IntGauge::new("queued", "test").unwrap(),
            overflows: prometheus::IntCounter::new("overflows", "test").unwrap(),
        })
    }

    fn queue(outbox: &Outbox) -> (usize, usize, bool) {
        let q = outbox.shared.lock();
        (q.frames.len(), q.bytes, q.closing)
    }

    /// A member that sends pings and never reads holds one pong, the latest, however many.
    #[test]
    fn pongs_and_pings_wait_one_at_a_time() {
        let (outbox, _drain) = Outbox::new(limits(1024, 16, 0));
        for i in 0..100_000u32 {
            outbox.pong(Bytes::from(i.to_string()));
            outbox.ping();
        }
        let (frames, bytes, closing) = queue(&outbox);
        assert_eq!((frames, bytes, closing), (2, 5, false));
        let q = outbox.shared.lock();
        assert!(matches!(&q.frames[0], Out::Pong(p) if &p[..] == b"99999"));
    }

    /// Control frames count against the limits like text.
    #[test]
    fn control_frames_count_against_the_backlog() {
        let (outbox, _drain) = Outbox::new(limits(1024, 3, 0));
        outbox.push(&ByteString::from("a")).unwrap();
        outbox.push(&ByteString::from("b")).unwrap();
        outbox.pong(Bytes::from_static(b"p"));
        let (frames, bytes, _) = queue(&outbox);
        assert_eq!((frames, bytes), (3, 3));
        outbox.ping();
        assert!(queue(&outbox).2, "the fourth frame overflows");
    }

    /// Past the server-wide budget, the member furthest behind is cut off, one that keeps up
    /// is not, and the total is counted back down.
    #[test]
    fn past_the_budget_the_member_furthest_behind_is_cut_off() {
        let shared = limits(64 * 1024 * 1024, 100_000, 3 * 1024 * 1024);
        let (behind, _d1) = Outbox::new(shared.clone());
        let (keeping_up, _d2) = Outbox::new(shared.clone());
        let chunk = ByteString::from("z".repeat(256 * 1024));
        for _ in 0..12 {
            assert!(behind.push(&chunk).is_ok());
        }
        assert_eq!(shared.queued.get(), 3 * 1024 * 1024);
        assert!(keeping_up.push(&chunk).is_ok());
        assert_eq!(behind.push(&chunk), Err(PushError::Overflow));
        assert_eq!(shared.queued.get(), 256 * 1024);
        assert_eq!(shared.overflows.get(), 1);
    }
}
