//! The client side of the protocol, shared by `ephemera-cli` and the tests: the HTTP API, a
//! joined room with its end-to-end encryption, and the crypto itself.

pub mod api;
pub mod crypto;
pub mod download;
pub mod room;
pub mod terminal;

pub use api::{Api, ApiError, CreatedRoom, ListedRoom};
pub use room::{socket_config, Ended, Event, JoinError, Member, RoomClient, SendError};
