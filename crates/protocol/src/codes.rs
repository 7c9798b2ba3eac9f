//! The contract's error codes and close codes, in one table: the server answers with it, the
//! clients read it, and `ephemera-cli` takes its exit codes from it.

use serde::{Deserialize, Serialize};

/// Every error code of the WebSocket contract, with its close code where it ends the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    RateLimited,
    Forbidden,
    NoSuchMember,
    NoSuchMessage,
    InvalidCredentials,
    RoomNotFound,
    JoinTimeout,
    NameTaken,
    SessionReplaced,
    FrameTooLarge,
    InvalidName,
    InvalidPubkey,
    RoomFull,
    StoreUnavailable,
    ClusterUnavailable,
    RoomLocked,
}

impl ErrorCode {
    /// Every code, in the contract's order.
    pub const ALL: [Self; 17] = [
        Self::BadRequest,
        Self::RateLimited,
        Self::Forbidden,
        Self::NoSuchMember,
        Self::NoSuchMessage,
        Self::InvalidCredentials,
        Self::RoomNotFound,
        Self::JoinTimeout,
        Self::NameTaken,
        Self::SessionReplaced,
        Self::FrameTooLarge,
        Self::InvalidName,
        Self::InvalidPubkey,
        Self::RoomFull,
        Self::StoreUnavailable,
        Self::ClusterUnavailable,
        Self::RoomLocked,
    ];

    /// The code a wire string names, if it is one of this contract's.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::RateLimited => "rate_limited",
            Self::Forbidden => "forbidden",
            Self::NoSuchMember => "no_such_member",
            Self::NoSuchMessage => "no_such_message",
            Self::InvalidCredentials => "invalid_credentials",
            Self::RoomNotFound => "room_not_found",
            Self::JoinTimeout => "join_timeout",
            Self::NameTaken => "name_taken",
            Self::SessionReplaced => "session_replaced",
            Self::FrameTooLarge => "frame_too_large",
            Self::InvalidName => "invalid_name",
            Self::InvalidPubkey => "invalid_pubkey",
            Self::RoomFull => "room_full",
            Self::StoreUnavailable => "store_unavailable",
            Self::ClusterUnavailable => "cluster_unavailable",
            Self::RoomLocked => "room_locked",
        }
    }

    /// The close code when this error refuses a join (or ends a socket).
    pub fn close_code(self) -> u16 {
        match self {
            Self::BadRequest => close::PROTOCOL,
            Self::InvalidCredentials => 4401,
            Self::RoomNotFound => 4404,
            Self::JoinTimeout => 4408,
            Self::NameTaken | Self::SessionReplaced => 4409,
            Self::FrameTooLarge => 4413,
            Self::InvalidName | Self::InvalidPubkey => 4422,
            Self::RateLimited => 4429,
            Self::RoomFull => 4503,
            Self::RoomLocked => 4423,
            Self::StoreUnavailable | Self::ClusterUnavailable => 1011,
            Self::Forbidden | Self::NoSuchMember | Self::NoSuchMessage => close::PROTOCOL,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::BadRequest => "malformed or unknown frame",
            Self::RateLimited => "too many requests; slow down",
            Self::Forbidden => "you are not allowed to do that",
            Self::NoSuchMember => "no member of that name is in the room",
            Self::NoSuchMessage => "no message with that seq is remembered",
            Self::InvalidCredentials => "wrong room key or admin password",
            Self::RoomNotFound => "no room with that ID exists",
            Self::JoinTimeout => "no join frame in time",
            Self::NameTaken => "that name is already in the room",
            Self::SessionReplaced => "this session was resumed on another connection",
            Self::FrameTooLarge => "frame too large",
            Self::InvalidName => {
                "names are 1 to 32 characters, without control characters, and not 'bot'"
            }
            Self::InvalidPubkey => "pubkey must be an uncompressed P-256 point, base64url",
            Self::RoomFull => "the room is full",
            Self::StoreUnavailable => "the credential store cannot be reached; try again later",
            Self::ClusterUnavailable => {
                "this node cannot reach the other nodes of the cluster; try again later"
            }
            Self::RoomLocked => "the room is locked: nobody new can join until an admin unlocks it",
        }
    }
}

/// Close codes that are not tied to one error.
pub mod close {
    /// Whether a close ends the visit: a client does not reconnect after it (the 4xxx codes,
    /// and 1000). The others (1001 going away, 1006 lost, 1011, 1013 try again later) call for
    /// a reconnect after a backoff.
    pub fn is_final(code: u16) -> bool {
        (4000..5000).contains(&code) || code == NORMAL
    }

    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const PROTOCOL: u16 = 4400;
    pub const KICKED: u16 = 4403;
    pub const ROOM_DELETED: u16 = 4410;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back_and_serialises_as_its_wire_string() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
        assert_eq!(ErrorCode::parse("nope"), None);
    }

    #[test]
    fn final_closes_are_the_contract_ones_and_normal() {
        assert!(close::is_final(1000) && close::is_final(4403) && close::is_final(4429));
        assert!(!close::is_final(1001) && !close::is_final(1013) && !close::is_final(1006));
    }
}
