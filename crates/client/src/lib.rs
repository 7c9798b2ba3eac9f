//! The client side of the protocol, shared by `ephemera-cli` and the tests: the HTTP API, a
//! joined room with its end-to-end encryption, and the crypto itself.

pub mod api;
pub mod download;
pub mod room;
pub mod terminal;

pub use api::{Api, ApiError, CreatedRoom, ListedRoom, RoomChoices};
/// The contract's end-to-end crypto, from the protocol crate the server shares.
pub use ephemera_protocol::crypto;
pub use room::{socket_config, Ended, Event, JoinError, Member, RoomClient, SendError};
