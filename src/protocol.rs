//! The wire contract as the server uses it: the shared types of `ephemera-protocol`, plus what
//! only the server needs: a [`Refusal`] (an error code with its wait and close), the shared
//! bytes of an encoded frame, and the clock of `ts`.

use bytestring::ByteString;
pub use ephemera_protocol::{
    close, BotEvent, ClientFrame, ErrorCode, JoinFrame, Limits, MemberView,
};
use serde_json::value::RawValue;

/// A server frame as the server writes it: bodies are the sender's own bytes, and pages of the
/// member list the room's own encoding of them.
pub type ServerFrame<'a> = ephemera_protocol::ServerFrame<'a, &'a RawValue, &'a RawValue>;

/// A server frame as the bytes every recipient's queue shares.
pub trait Wire {
    fn wire(&self) -> ByteString;
}

impl Wire for ServerFrame<'_> {
    fn wire(&self) -> ByteString {
        self.encode().into()
    }
}

/// A refusal as the client will hear it: its code, how long to wait when it is `rate_limited`,
/// and the close code when it is not the error's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub retry_after: Option<std::time::Duration>,
    pub close: Option<u16>,
}

impl Refusal {
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        Self {
            code: ErrorCode::RateLimited,
            retry_after: Some(wait),
            close: None,
        }
    }

    /// The server cannot take the work now (its hashing is full, or this address's share of
    /// it): `rate_limited`, but closed with 1013, which clients answer by trying again after
    /// their backoff, where 4429 ends the visit.
    pub fn busy() -> Self {
        Self {
            close: Some(close::TRY_AGAIN_LATER),
            ..Self::rate_limited(std::time::Duration::from_secs(1))
        }
    }

    pub fn close_code(&self) -> u16 {
        self.close.unwrap_or(self.code.close_code())
    }
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Self {
        Self {
            code,
            retry_after: None,
            close: None,
        }
    }
}

/// Milliseconds since the Unix epoch, the protocol's `ts`.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}
