//! The WebSocket frames of `docs/protocol.md` as serde types, and the one table that turns every
//! refusal into its wire code and close code.
//!
//! Client frames are parsed in two steps: first into [`RawFrame`], a flat struct of optional,
//! borrowed fields (so `body` and `t` stay the exact bytes the sender wrote), then into a typed
//! [`ClientFrame`] that names what is missing.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// Every error code of the contract, with its close code where it ends the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl ErrorCode {
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
            Self::StoreUnavailable => 1011,
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
        }
    }
}

/// Close codes that are not tied to one error.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const PROTOCOL: u16 = 4400;
    pub const KICKED: u16 = 4403;
    pub const ROOM_DELETED: u16 = 4410;
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

/// The limits a client is told in `welcome`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub messages_per_10s: u32,
    pub bytes_per_10s: u64,
    pub max_members: usize,
}

/// Any client frame with every field optional; borrowed where possible so the relayed values are
/// the sender's own bytes.
#[derive(Debug, Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    auth: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pubkey: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    admin_password: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    session: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    txn: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    body: Option<&'a RawValue>,
    #[serde(default, borrow)]
    to: Option<Cow<'a, str>>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    seq: Option<serde_json::Number>,
    #[serde(default, borrow, deserialize_with = "present")]
    t: Option<&'a RawValue>,
}

/// Keeps a present `null` as a value: `{"t":null}` must come back as `null`, and a `body` of
/// `null` is a body like any other.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Debug)]
pub struct JoinFrame<'a> {
    pub name: Cow<'a, str>,
    pub auth: Cow<'a, str>,
    pub pubkey: Option<Cow<'a, str>>,
    pub admin_password: Option<Cow<'a, str>>,
    pub session: Option<Cow<'a, str>>,
}

#[derive(Debug)]
pub enum ClientFrame<'a> {
    Join(JoinFrame<'a>),
    Send {
        txn: Cow<'a, str>,
        body: &'a RawValue,
    },
    Dm {
        to: Cow<'a, str>,
        txn: Cow<'a, str>,
        body: &'a RawValue,
    },
    Typing {
        active: bool,
    },
    Read {
        seq: u64,
    },
    /// `None` when the seq is a number but not a positive integer: `no_such_message`, not
    /// `bad_request`.
    Unsend {
        seq: Option<u64>,
    },
    Kick {
        name: Cow<'a, str>,
    },
    DeleteRoom,
    Members,
    Ping {
        t: Option<&'a RawValue>,
    },
}

/// Why a client frame was refused; `txn` is echoed in the error when the frame carried one.
#[derive(Debug)]
pub struct FrameError<'a> {
    pub txn: Option<Cow<'a, str>>,
}

/// The longest `txn`, in characters.
pub const MAX_TXN_CHARS: usize = 64;
/// The deepest nesting of a `body`.
pub const MAX_BODY_DEPTH: usize = 64;

impl<'a> ClientFrame<'a> {
    pub fn parse(text: &'a str) -> Result<Self, FrameError<'a>> {
        let raw: RawFrame<'a> = serde_json::from_str(text).map_err(|_| FrameError { txn: None })?;
        let txn = raw.txn.clone();
        Self::from_raw(raw).ok_or(FrameError { txn })
    }

    fn from_raw(raw: RawFrame<'a>) -> Option<Self> {
        let txn = || {
            raw.txn
                .clone()
                .filter(|t| t.chars().count() <= MAX_TXN_CHARS)
        };
        let body = || raw.body.filter(|b| depth_within(b.get(), MAX_BODY_DEPTH));
        Some(match raw.kind.as_ref() {
            "join" => Self::Join(JoinFrame {
                name: raw.name?,
                auth: raw.auth?,
                pubkey: raw.pubkey,
                admin_password: raw.admin_password,
                session: raw.session,
            }),
            "send" => Self::Send {
                txn: txn()?,
                body: body()?,
            },
            "dm" => Self::Dm {
                to: raw.to.clone()?,
                txn: txn()?,
                body: body()?,
            },
            "typing" => Self::Typing {
                active: raw.active?,
            },
            "read" => Self::Read {
                seq: raw.seq?.as_u64()?,
            },
            "unsend" => Self::Unsend {
                seq: raw.seq?.as_u64().filter(|&s| s > 0),
            },
            "kick" => Self::Kick { name: raw.name? },
            "delete_room" => Self::DeleteRoom,
            "members" => Self::Members,
            "ping" => Self::Ping { t: raw.t },
            _ => return None,
        })
    }
}

/// True when the JSON text nests no deeper than `max` arrays and objects. Brackets inside strings
/// do not count.
fn depth_within(json: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// A member as the wire shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView<'a> {
    pub name: &'a str,
    pub admin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<&'a str>,
}

/// Server frames. Each is serialised once and the bytes are shared by every recipient.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Welcome {
        room_id: &'a str,
        you: MemberView<'a>,
        members: &'a [MemberView<'a>],
        session: &'a str,
        limits: Limits,
    },
    Message {
        seq: u64,
        ts: i64,
        from: &'a str,
        txn: &'a str,
        body: &'a RawValue,
    },
    Dm {
        seq: u64,
        ts: i64,
        from: &'a str,
        to: &'a str,
        txn: &'a str,
        body: &'a RawValue,
    },
    Bot {
        event: BotEvent,
        #[serde(skip_serializing_if = "Option::is_none")]
        member: Option<MemberView<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        members: usize,
        text: &'a str,
        ts: i64,
    },
    Typing {
        from: &'a str,
        active: bool,
    },
    Read {
        from: &'a str,
        seq: u64,
    },
    Unsent {
        seq: u64,
        by: &'a str,
    },
    Members {
        members: &'a [MemberView<'a>],
    },
    Kicked {
        by: &'a str,
    },
    RoomDeleted,
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        t: Option<&'a RawValue>,
    },
    Error {
        code: &'static str,
        message: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        txn: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BotEvent {
    Welcome,
    Join,
    Leave,
    Kick,
}

impl ServerFrame<'_> {
    /// The frame as the text every recipient gets.
    pub fn encode(&self) -> bytestring::ByteString {
        // unwrap: these types hold only strings, numbers, booleans and already-valid JSON, which
        // serde_json always serialises.
        #[allow(clippy::unwrap_used)]
        serde_json::to_string(self).unwrap().into()
    }

    pub fn error(
        code: ErrorCode,
        txn: Option<&str>,
        retry_after_ms: Option<u64>,
    ) -> ServerFrame<'_> {
        ServerFrame::Error {
            code: code.as_str(),
            message: code.message(),
            txn,
            retry_after_ms,
        }
    }
}

/// Milliseconds since the Unix epoch, the protocol's `ts`.
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_body_bytes_exactly() {
        let text = r#"{"type":"send","txn":"1","body":{ "b":[1.0e3, "\u00e9"],"a" : null }}"#;
        match ClientFrame::parse(text).unwrap() {
            ClientFrame::Send { body, .. } => {
                assert_eq!(body.get(), r#"{ "b":[1.0e3, "\u00e9"],"a" : null }"#)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_null_t_is_kept_and_a_missing_t_is_none() {
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"ping","t":null}"#).unwrap(),
            ClientFrame::Ping { t: Some(t) } if t.get() == "null"
        ));
        assert!(matches!(
            ClientFrame::parse(r#"{"type":"ping"}"#).unwrap(),
            ClientFrame::Ping { t: None }
        ));
    }

    #[test]
    fn refuses_missing_fields_wrong_types_and_unknown_types() {
        for bad in [
            r#"{"type":"send","txn":"1"}"#,
            r#"{"type":"send","body":1}"#,
            r#"{"type":"send","txn":5,"body":1}"#,
            r#"{"type":"typing","active":"yes"}"#,
            r#"{"type":"read","seq":-1}"#,
            r#"{"type":"nope"}"#,
            r#"{"txn":"1"}"#,
            r#"[1,2]"#,
            "not json",
        ] {
            assert!(ClientFrame::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_error_keeps_the_txn_of_the_frame() {
        let err = ClientFrame::parse(r#"{"type":"send","txn":"abc"}"#).unwrap_err();
        assert_eq!(err.txn.as_deref(), Some("abc"));
    }

    #[test]
    fn a_txn_over_64_characters_is_refused() {
        let long = format!(r#"{{"type":"send","txn":"{}","body":1}}"#, "é".repeat(65));
        assert!(ClientFrame::parse(&long).is_err());
        let ok = format!(r#"{{"type":"send","txn":"{}","body":1}}"#, "é".repeat(64));
        assert!(ClientFrame::parse(&ok).is_ok());
    }

    #[test]
    fn unsend_of_a_non_positive_seq_is_not_a_bad_request() {
        for seq in ["0", "-3", "1.5"] {
            let text = format!(r#"{{"type":"unsend","seq":{seq}}}"#);
            assert!(matches!(
                ClientFrame::parse(&text).unwrap(),
                ClientFrame::Unsend { seq: None }
            ));
        }
    }

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        let deep = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(depth_within(&deep, 64));
        let deeper = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(!depth_within(&deeper, 64));
        assert!(depth_within(&format!("\"{}\"", "[".repeat(100)), 64));
        assert!(depth_within(r#"["\"[[[["]"#, 1));
    }

    #[test]
    fn error_frames_carry_code_message_and_txn() {
        let text = ServerFrame::error(ErrorCode::RateLimited, Some("t1"), Some(250)).encode();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "rate_limited");
        assert_eq!(v["txn"], "t1");
        assert_eq!(v["retry_after_ms"], 250);
    }
}
