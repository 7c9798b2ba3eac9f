//! One WebSocket connection's transport, from the upgrade request to the last byte: the origin
//! policy, the handshake, the frame reader, the outbound queue and its writer, and the lingering
//! close. It is our own thin layer over actix-http's codec rather than actix-ws, because it holds
//! about 3 KB per idle member where actix-ws held seven times more (docs/performance.md).
//!
//! Everything above it sees four things: the [`Handler`] a server gives [`serve`], the
//! [`Opened`] socket the handler is run with, what [`Inbound::next`] reads ([`Incoming`]), and the
//! [`Outbox`] it and the hub write to. Swapping the transport back to actix-ws means rewriting
//! this folder, and nothing outside it.
//!
//! A socket's life, in order:
//! 1. [`upgrade::serve`]: the path names the room, the origin is checked, the 101 goes out, the
//!    HTTP buffers are dropped, and the socket takes its place among its address's.
//! 2. One task runs the handler beside the [`Drain`] that writes the outbox into the socket.
//! 3. A close the server started is followed by [`Inbound::linger`] (RFC 6455 §7.1.1).

mod decoder;
mod origin;
mod outbox;
mod reader;
#[cfg(test)]
mod tests;
mod upgrade;

use std::{future::Future, net::IpAddr, sync::Arc};

use tokio_util::task::TaskTracker;

pub use origin::OriginPolicy;
pub use outbox::{Drain, Outbox, PushError, QueueLimits};
pub use reader::{Inbound, Incoming, Lingering, LINGER};
pub use upgrade::{serve, without_upgrade};

use crate::{
    address::ProxyPolicy,
    domain::RoomId,
    ratelimit::{Place, Sockets},
};

/// What the transport needs from the server, built once at start and shared by every socket.
pub struct Transport {
    pub origins: Arc<OriginPolicy>,
    pub proxies: Arc<ProxyPolicy>,
    /// The server's and each address's count of open sockets.
    pub places: Arc<Sockets>,
    /// What every outbound queue is held to.
    pub queue_limits: Arc<QueueLimits>,
    /// Sockets the server closed, waiting for the client's side.
    pub lingering: Lingering,
    /// Every upgraded socket's task, so that a drain can wait for the last one.
    pub tracker: TaskTracker,
    /// The largest message, once the handler lifts the smaller bound it starts with.
    pub max_frame_bytes: usize,
    /// Sent with every refusal of an upgrade, as with every other response.
    pub headers: Vec<(&'static str, &'static str)>,
}

/// Who ended a socket. The server's own closes are followed by a linger (see
/// [`Inbound::linger`]); a client that closed or vanished has nothing more to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    ByClient,
    ByServer,
}

/// An upgraded socket, as its handler gets it.
pub struct Opened<'a> {
    /// The room the path names; `None` when the path cannot be a room ID (the join is refused
    /// as for a room that does not exist, and counted as a probe).
    pub room: Option<RoomId>,
    /// The client's address: the peer's, or the one a trusted proxy names.
    pub ip: IpAddr,
    /// The socket's place among the server's and its address's, held until the socket is gone.
    pub place: &'a mut Place,
    pub inbound: &'a mut Inbound,
    pub outbox: Outbox,
}

/// What runs on each upgraded socket: the server's session.
pub trait Handler: Clone + 'static {
    /// Runs the socket until it closes; says who closed it. The outbox's writer runs beside it.
    fn run<'a>(&'a self, socket: Opened<'a>) -> impl Future<Output = Ended> + 'a;
}
