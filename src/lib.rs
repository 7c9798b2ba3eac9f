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
//! - [`address`]: the client's address behind trusted proxies, and the key per-address limits
//!   count it under.
//! - [`startup`]: builds the store, hub and HTTP server; tests start the server from here.
//! - [`shutdown`]: the SIGTERM / Ctrl-C signal.
//! - [`domain`]: `RoomId`, `MemberName`, `Auth`, … parsed at the edge.
//! - [`protocol`]: the wire frames and the error-code table.
//! - [`hub`]: live rooms, fan-out, `seq`, teardown; each member's outbound queue.
//! - [`socket`]: a WebSocket's reading half: frames checked on their header, and the linger
//!   after the server's own closes.
//! - [`lobby`]: the listed rooms, in memory, for `GET /api/rooms`.
//! - [`session`]: one socket's loop.
//! - [`bot`]: the server's own voice: the words of its notices, which the hub queues in order.
//! - [`credentials`]: keyed room-ID hashes, argon2id on a bounded pool, the stores.
//! - [`routes`]: HTTP handlers: rooms, health, metrics, WebSocket upgrade, web client.
//! - [`ratelimit`]: token buckets.
//! - [`telemetry`]: Prometheus metrics, logging and the redacting access log.

pub mod address;
pub mod bot;
pub mod config;
pub mod credentials;
pub mod domain;
pub mod hub;
pub mod lobby;
pub mod protocol;
pub mod ratelimit;
pub mod routes;
pub mod session;
pub mod shutdown;
pub mod socket;
pub mod startup;
pub mod telemetry;

pub use config::Config;
pub use startup::Application;
