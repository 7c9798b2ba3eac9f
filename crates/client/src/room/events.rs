//! What a joined room tells its user: typed [`Event`]s (which `ephemera-cli --json` prints as
//! they serialise), why a room ended, and why a join or a send failed.

use ephemera_protocol::{ErrorCode, MemberView};
use serde::{Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub name: String,
    pub admin: bool,
    pub pubkey: Option<String>,
}

impl From<MemberView<'_>> for Member {
    fn from(view: MemberView<'_>) -> Self {
        Self {
            name: view.name.into_owned(),
            admin: view.admin,
            pubkey: view.pubkey.map(|p| p.into_owned()),
        }
    }
}

/// Why a room ended for this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Kicked {
        by: String,
    },
    Deleted,
    /// The room's fixed lifetime ran out.
    Expired,
    /// The server refused or closed with this code (after an `error` naming it, if any).
    Closed {
        code: u16,
        error: Option<String>,
    },
    Left,
}

impl Ended {
    /// The contract's error code behind the end, when there is one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Closed {
                error: Some(error), ..
            } => ErrorCode::parse(error),
            _ => None,
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Kicked { by } => write!(f, "you were removed by {by}"),
            Self::Deleted => f.write_str("the room was deleted"),
            Self::Expired => f.write_str("the room's time is up"),
            Self::Left => f.write_str("you left"),
            Self::Closed { code, error } => write!(
                f,
                "the server closed the connection ({code}, {})",
                error.as_deref().unwrap_or("closed")
            ),
        }
    }
}

/// Serialised as the sentence a person reads.
impl Serialize for Ended {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Something that happened in a room. Serialised with a `type` and the room's ID, one JSON
/// object per event; a file's bytes are given as their count (`size`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Message {
        room: String,
        seq: u64,
        ts: i64,
        from: String,
        to: Option<String>,
        text: String,
        /// The `seq` this message answers.
        reply_to: Option<u64>,
        /// Seconds after `ts` when clients remove it.
        ttl: Option<u64>,
    },
    /// A member's reaction to a message, added (`on`) or taken back.
    Reaction {
        room: String,
        seq: u64,
        from: String,
        to: Option<String>,
        target: u64,
        emoji: String,
        on: bool,
    },
    /// New text for a message, from its own author (others' edits are dropped).
    Edit {
        room: String,
        seq: u64,
        from: String,
        to: Option<String>,
        target: u64,
        text: String,
    },
    File {
        room: String,
        seq: u64,
        ts: i64,
        from: String,
        to: Option<String>,
        name: String,
        mime: String,
        #[serde(rename = "size", serialize_with = "byte_count")]
        data: Vec<u8>,
    },
    Undecryptable {
        room: String,
        seq: u64,
        from: String,
    },
    Bot {
        room: String,
        event: String,
        text: String,
    },
    Unsent {
        room: String,
        seq: u64,
        by: String,
    },
    Typing {
        room: String,
        from: String,
        active: bool,
    },
    Read {
        room: String,
        from: String,
        seq: u64,
    },
    /// An `error` the server sent that answers no send of this client.
    #[serde(rename = "error")]
    Notice {
        room: String,
        code: String,
        message: String,
    },
    Reconnecting {
        room: String,
    },
    Reconnected {
        room: String,
    },
    Ended {
        room: String,
        reason: Ended,
    },
}

fn byte_count<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(data.len() as u64)
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{message}")]
    Refused {
        code: String,
        close: u16,
        message: String,
    },
    #[error("cannot connect: {0}")]
    Connect(String),
}

impl JoinError {
    /// The contract's error code of a refusal, when it is one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused { code, .. } => ErrorCode::parse(code),
            Self::Connect(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("not connected")]
    Disconnected,
    #[error("no member of that name (with a DM key) is in the room")]
    NoSuchMember,
    #[error("no message of that number is known here")]
    NoSuchMessage,
    #[error("the server refused: {0}")]
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_as_the_cli_prints_them() {
        let message = Event::Message {
            room: "r".into(),
            seq: 3,
            ts: 9,
            from: "ada".into(),
            to: None,
            text: "hi".into(),
            reply_to: Some(2),
            ttl: None,
        };
        assert_eq!(
            serde_json::to_value(&message).unwrap(),
            serde_json::json!({ "type": "message", "room": "r", "seq": 3, "ts": 9, "from": "ada", "to": null, "text": "hi", "reply_to": 2, "ttl": null })
        );
        let file = Event::File {
            room: "r".into(),
            seq: 4,
            ts: 9,
            from: "ada".into(),
            to: Some("bo".into()),
            name: "a.png".into(),
            mime: "image/png".into(),
            data: vec![0; 5],
        };
        assert_eq!(serde_json::to_value(&file).unwrap()["size"], 5);
        let notice = Event::Notice {
            room: "r".into(),
            code: "forbidden".into(),
            message: "no".into(),
        };
        assert_eq!(serde_json::to_value(&notice).unwrap()["type"], "error");
        let ended = Event::Ended {
            room: "r".into(),
            reason: Ended::Kicked { by: "ada".into() },
        };
        assert_eq!(
            serde_json::to_value(&ended).unwrap()["reason"],
            "you were removed by ada"
        );
    }
}
