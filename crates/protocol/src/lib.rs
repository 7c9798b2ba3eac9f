//! The Ephemera wire contract (`docs/protocol.md`) as Rust types, shared by the server and the
//! clients so that the two cannot drift apart:
//!
//! - [`frames`]: the WebSocket frames, both ways, as serde types.
//! - [`codes`]: the error codes and close codes, in one table.
//! - [`domain`]: the values a frame carries, each checked by its `parse` (room IDs, names,
//!   proofs, keys, tokens).
//! - `crypto` (feature `crypto`, clients only): the end-to-end derivations and envelopes, with
//!   the contract's test vectors.

pub mod codes;
#[cfg(feature = "crypto")]
pub mod crypto;
pub mod domain;
pub mod frames;

pub use codes::{close, ErrorCode};
pub use frames::{
    BotEvent, ClientFrame, FrameError, JoinFrame, Limits, MemberView, RoomLifetime, RoomOptions,
    ServerFrame,
};
