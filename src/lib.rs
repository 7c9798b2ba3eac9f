//! Ephemera: an ephemeral, no-storage room chat server. Members relay end-to-end encrypted
//! envelopes through it; only hashed room credentials persist.
//!
//! # Layout
//!
//! Data flows one way: a socket's bytes become frames ([`protocol`]), frames are checked into
//! domain values ([`domain`]), and the session ([`session`]) acts on the live rooms ([`hub`]),
//! which fan frames out to each member's outbound queue. Credentials ([`credentials`]) are the
//! only thing that touches a store.
//!
//! - [`config`]: typed settings from flags and environment.
//! - [`startup`]: wires the store, hub, transport and HTTP server; tests start the server here.
//! - [`state`]: what every handler and session shares.
//! - [`shutdown`]: the SIGTERM / Ctrl-C signal.
//! - [`address`]: the client's address behind trusted proxies, and the key per-address limits
//!   count it under.
//! - [`domain`]: `RoomId`, `MemberName`, `Auth`, … parsed at the edge.
//! - [`protocol`]: the wire frames and the error-code table.
//! - [`socket`]: one WebSocket's transport: upgrade, origin policy, frame reader, outbound
//!   queue and writer, lingering close.
//! - [`session`]: a socket's join and chat loop.
//! - [`access`]: proving a room's secrets, and deleting a room.
//! - [`hub`]: live rooms: membership, fan-out, `seq`, teardown.
//! - [`bot`]: the server's own voice: the words of its notices, which rooms queue in order.
//! - [`lobby`]: the listed rooms, in memory, for `GET /api/rooms`.
//! - [`credentials`]: keyed room-ID hashes, argon2id on a bounded pool, the stores.
//! - [`routes`]: HTTP handlers: rooms, health, metrics, web client.
//! - [`ratelimit`]: token buckets, failed-attempt allowances, socket places.
//! - [`telemetry`]: Prometheus metrics, logging and the redacting access log.
//!
//! docs/architecture.md tells the same with the flows of a join and a message.

pub mod access;
pub mod address;
pub mod audit;
pub mod bot;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod descriptors;
pub mod hub;
pub mod lobby;
pub mod protocol;
pub mod ratelimit;
pub mod routes;
pub mod session;
pub mod shutdown;
pub mod socket;
pub mod startup;
pub mod state;
pub mod telemetry;

pub use config::Config;
/// The domain types live in the protocol crate, which the clients share.
pub use ephemera_protocol::domain;
pub use startup::Application;
