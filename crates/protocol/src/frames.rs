//! The WebSocket frames of `docs/protocol.md` as serde types, both ways: the server parses
//! [`ClientFrame`]s and serialises [`ServerFrame`]s, a client does the opposite with the same
//! types.
//!
//! Client frames are parsed in two steps: first into `RawFrame`, a flat struct of optional,
//! borrowed fields (so `body` and `t` stay the exact bytes the sender wrote), then into a typed
//! [`ClientFrame`] that names what is missing. Bodies are a type parameter: the server relays
//! them as the sender's own bytes (`&RawValue`), a client reads them as values (serde buffers an
//! internally tagged frame, which a `RawValue` cannot pass through).

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::codes::ErrorCode;

/// The limits a client is told in `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_frame_bytes: usize,
    pub messages_per_10s: u32,
    pub bytes_per_10s: u64,
    pub max_members: usize,
}

/// How a room ends, as its creator chose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomLifetime {
    /// The server's room lifetime after the last join.
    #[default]
    Rolling,
    /// At `ends_at`, whoever is in it.
    Fixed,
    /// When its last member has left (after a grace for reconnects).
    Empty,
}

/// A room's options, in `welcome`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomOptions {
    pub lifetime: RoomLifetime,
    /// When a `fixed` room ends, in ms since the epoch (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<i64>,
    /// The creator's cap on members (0: the server's limit alone; `limits.max_members` is the
    /// one in force).
    pub max_members: usize,
    /// Whether `unsend` is allowed in this room.
    pub unsend: bool,
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
    /// Any JSON: only `members` reads it, and a `page` of any type on another frame is an
    /// unknown field there, ignored.
    #[serde(default, borrow)]
    page: Option<&'a RawValue>,
}

/// Keeps a present `null` as a value: `{"t":null}` must come back as `null`, and a `body` of
/// `null` is a body like any other.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Debug, Serialize)]
pub struct JoinFrame<'a> {
    pub name: Cow<'a, str>,
    pub auth: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<Cow<'a, str>>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame<'a, B = &'a RawValue> {
    Join(JoinFrame<'a>),
    Send {
        txn: Cow<'a, str>,
        body: B,
    },
    Dm {
        to: Cow<'a, str>,
        txn: Cow<'a, str>,
        body: B,
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
    /// Admins only: no new member may join (an admin may, and a member coming back with its
    /// `session` token) until `unlock`.
    Lock,
    Unlock,
    /// Admins only: `name` becomes an admin for as long as it stays (the admin password stays
    /// the creator's).
    MakeAdmin {
        name: Cow<'a, str>,
    },
    DeleteRoom,
    /// One page of the member list: page `page` (from 0), or the page that holds `name`.
    Members {
        #[serde(skip_serializing_if = "Option::is_none")]
        page: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<Cow<'a, str>>,
    },
    Ping {
        #[serde(skip_serializing_if = "Option::is_none")]
        t: Option<B>,
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
    /// Parses a frame as the server reads it, bodies kept as the sender's bytes.
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
            "lock" => Self::Lock,
            "unlock" => Self::Unlock,
            "make_admin" => Self::MakeAdmin { name: raw.name? },
            "delete_room" => Self::DeleteRoom,
            "members" => Self::Members {
                page: match raw.page {
                    Some(page) => Some(serde_json::from_str::<u64>(page.get()).ok()?),
                    None => None,
                },
                name: raw.name,
            },
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    pub admin: bool,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    pub pubkey: Option<Cow<'a, str>>,
}

impl MemberView<'_> {
    pub fn into_owned(self) -> MemberView<'static> {
        MemberView {
            name: Cow::Owned(self.name.into_owned()),
            admin: self.admin,
            pubkey: self.pubkey.map(|p| Cow::Owned(p.into_owned())),
        }
    }
}

/// Server frames. The server serialises each once and shares the bytes with every recipient.
///
/// `B` is a body as it travels, `L` a page of the member list: the server passes both as JSON
/// it already holds (a page is encoded once per change of it, and spliced into every `welcome`
/// and `members` answer), clients read them as values.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a, B = &'a RawValue, L = Cow<'a, [MemberView<'a>]>> {
    Welcome {
        #[serde(borrow)]
        room_id: Cow<'a, str>,
        #[serde(borrow)]
        you: MemberView<'a>,
        /// The first page of the member list, by name; all of it unless the room is a crowd.
        members: L,
        /// How many members the room has, the newcomer included.
        member_count: usize,
        #[serde(borrow)]
        session: Cow<'a, str>,
        limits: Limits,
        /// Absent from servers that predate room options: read as the defaults.
        #[serde(default)]
        options: RoomOptions,
        /// Whether an admin has locked the room (a member coming back may find it so).
        #[serde(default)]
        locked: bool,
    },
    Message {
        seq: u64,
        ts: i64,
        #[serde(borrow)]
        from: Cow<'a, str>,
        #[serde(borrow)]
        txn: Cow<'a, str>,
        body: B,
    },
    Dm {
        seq: u64,
        ts: i64,
        #[serde(borrow)]
        from: Cow<'a, str>,
        #[serde(borrow)]
        to: Cow<'a, str>,
        #[serde(borrow)]
        txn: Cow<'a, str>,
        body: B,
        /// The sender's DM public key: in a crowd the recipient may not have the sender on the
        /// page of the member list it holds.
        #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
        pubkey: Option<Cow<'a, str>>,
    },
    Bot {
        event: BotEvent,
        #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
        member: Option<MemberView<'a>>,
        #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
        name: Option<Cow<'a, str>>,
        /// On `summary`: how many joined and how many left since the last one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        joined: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        left: Option<usize>,
        members: usize,
        #[serde(borrow)]
        text: Cow<'a, str>,
        ts: i64,
    },
    Typing {
        #[serde(borrow)]
        from: Cow<'a, str>,
        active: bool,
    },
    Read {
        #[serde(borrow)]
        from: Cow<'a, str>,
        seq: u64,
    },
    Unsent {
        seq: u64,
        #[serde(borrow)]
        by: Cow<'a, str>,
    },
    /// Page `page` of `pages` of the member list by name, `total` members in all.
    Members {
        members: L,
        #[serde(default)]
        page: usize,
        #[serde(default = "one")]
        pages: usize,
        #[serde(default)]
        total: usize,
    },
    Kicked {
        #[serde(borrow)]
        by: Cow<'a, str>,
    },
    /// The room ended: deleted by its admin, or (`reason: "expired"`) its fixed lifetime ran
    /// out.
    RoomDeleted {
        #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
        reason: Option<Cow<'a, str>>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        t: Option<B>,
    },
    Error {
        /// A string rather than an [`ErrorCode`], so that a client reads codes a newer server
        /// adds; [`ErrorCode::parse`] names the known ones.
        #[serde(borrow)]
        code: Cow<'a, str>,
        #[serde(borrow)]
        message: Cow<'a, str>,
        #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
        txn: Option<Cow<'a, str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BotEvent {
    Welcome,
    Join,
    Leave,
    Kick,
    /// In a crowd: who came and went in the last second, counted instead of named.
    Summary,
    /// An admin locked the room (`name`: who): nobody new can join.
    Lock,
    Unlock,
    /// `member` became an admin (`name`: who made it one).
    Admin,
}

impl BotEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Welcome => "welcome",
            Self::Join => "join",
            Self::Leave => "leave",
            Self::Kick => "kick",
            Self::Summary => "summary",
            Self::Lock => "lock",
            Self::Unlock => "unlock",
            Self::Admin => "admin",
        }
    }
}

impl<B: Serialize, L: Serialize> ServerFrame<'_, B, L> {
    /// The frame as the text every recipient gets.
    pub fn encode(&self) -> String {
        // unwrap: these types hold only strings, numbers, booleans and already-valid JSON, which
        // serde_json always serialises.
        #[allow(clippy::unwrap_used)]
        serde_json::to_string(self).unwrap()
    }
}

impl<'a, B, L> ServerFrame<'a, B, L> {
    pub fn error(code: ErrorCode, txn: Option<&'a str>, retry_after_ms: Option<u64>) -> Self {
        ServerFrame::Error {
            code: Cow::Borrowed(code.as_str()),
            message: Cow::Borrowed(code.message()),
            txn: txn.map(Cow::Borrowed),
            retry_after_ms,
        }
    }
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

    /// What the server writes, a client reads back as the same frame.
    #[test]
    fn server_frames_read_back_typed() {
        let ada = MemberView {
            name: "ada".into(),
            admin: true,
            pubkey: None,
        };
        let welcome: ServerFrame<'_> = ServerFrame::Welcome {
            room_id: "room-1".into(),
            you: ada.clone(),
            members: std::slice::from_ref(&ada).into(),
            member_count: 1,
            session: "tok".into(),
            limits: Limits {
                max_frame_bytes: 1,
                messages_per_10s: 2,
                bytes_per_10s: 3,
                max_members: 4,
            },
            options: RoomOptions::default(),
            locked: false,
        };
        let welcome = welcome.encode();
        match serde_json::from_str::<ServerFrame<'_, serde_json::Value>>(&welcome).unwrap() {
            ServerFrame::Welcome {
                you,
                members,
                member_count,
                ..
            } => {
                assert_eq!(you, ada);
                assert_eq!(members.into_owned(), vec![ada]);
                assert_eq!(member_count, 1);
            }
            other => panic!("{other:?}"),
        }
        let body = RawValue::from_string(r#"{"v":1,"iv":"x","ct":"y"}"#.into()).unwrap();
        let message: ServerFrame<'_> = ServerFrame::Message {
            seq: 7,
            ts: 1,
            from: "bo \"quoted\"".into(),
            txn: "t".into(),
            body: &*body,
        };
        let message = message.encode();
        match serde_json::from_str::<ServerFrame<'_, serde_json::Value>>(&message).unwrap() {
            ServerFrame::Message {
                seq, from, body, ..
            } => {
                assert_eq!((seq, from.as_ref()), (7, "bo \"quoted\""));
                assert_eq!(body["ct"], "y");
            }
            other => panic!("{other:?}"),
        }
    }

    /// What a client writes, the server parses as the same frame.
    #[test]
    fn client_frames_written_typed_parse_back() {
        let join: ClientFrame<'_, serde_json::Value> = ClientFrame::Join(JoinFrame {
            name: "ada".into(),
            auth: "proof".into(),
            pubkey: None,
            admin_password: Some("pw".into()),
            session: None,
        });
        let join = serde_json::to_string(&join).unwrap();
        assert!(matches!(
            ClientFrame::parse(&join).unwrap(),
            ClientFrame::Join(JoinFrame { name, admin_password: Some(pw), pubkey: None, .. })
                if name == "ada" && pw == "pw"
        ));
        let send = serde_json::to_string(&ClientFrame::Send {
            txn: "c1".into(),
            body: serde_json::json!({ "v": 1 }),
        })
        .unwrap();
        assert!(matches!(
            ClientFrame::parse(&send).unwrap(),
            ClientFrame::Send { txn, body } if txn == "c1" && body.get() == r#"{"v":1}"#
        ));
        let unsend: ClientFrame<'_, serde_json::Value> = ClientFrame::Unsend { seq: Some(3) };
        let unsend = serde_json::to_string(&unsend).unwrap();
        assert!(matches!(
            ClientFrame::parse(&unsend).unwrap(),
            ClientFrame::Unsend { seq: Some(3) }
        ));
    }

    #[test]
    fn error_frames_carry_code_message_and_txn() {
        let error: ServerFrame<'_> =
            ServerFrame::error(ErrorCode::RateLimited, Some("t1"), Some(250));
        let text = error.encode();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "rate_limited");
        assert_eq!(v["txn"], "t1");
        assert_eq!(v["retry_after_ms"], 250);
    }
}
