//! The plaintext inside an envelope, every kind of it (docs/protocol.md, "Plaintext kinds"):
//! messages (with replies and disappearing ones), file chunks, reactions and edits.

use serde::{Deserialize, Deserializer, Serialize};

use super::files::FileChunk;

/// The longest `ttl` a message may ask for, in seconds.
pub const MAX_TTL_SECS: u64 = 86_400;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plain {
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileChunk>,
    /// The `seq` a `text` answers.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub reply_to: Option<u64>,
    /// Seconds after its `ts` when every client removes the message.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<u64>,
    /// The `seq` a `react` or an `edit` is about.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub target: Option<u64>,
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub emoji: Option<String>,
    /// A `react` adds (`true`) or takes back (`false`).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub on: Option<bool>,
}

/// A field of the wrong type reads as absent: what it belongs to is then ignored, as the
/// contract asks of what a client does not understand, instead of the whole message reading as
/// undecryptable.
fn lenient<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// What a plaintext asks of the room, checked: anything else reads as nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    Text {
        text: String,
        reply_to: Option<u64>,
        ttl: Option<u64>,
    },
    File {
        chunk: FileChunk,
        ttl: Option<u64>,
    },
    React {
        target: u64,
        emoji: String,
        on: bool,
    },
    Edit {
        target: u64,
        text: String,
    },
}

impl Plain {
    /// The plaintext's meaning, or `None` for a kind this client does not know or fields that
    /// do not fit it.
    pub fn said(self) -> Option<Said> {
        let ttl = self.ttl.filter(|t| (1..=MAX_TTL_SECS).contains(t));
        match self.kind.as_str() {
            "text" => Some(Said::Text {
                text: self.text?,
                reply_to: self.reply_to,
                ttl,
            }),
            "file" => Some(Said::File {
                chunk: self.file?,
                ttl,
            }),
            "react" => {
                let emoji = self.emoji?;
                let units = emoji.encode_utf16().count();
                (1..=16).contains(&units).then_some(())?;
                Some(Said::React {
                    target: self.target?,
                    emoji,
                    on: self.on?,
                })
            }
            "edit" => Some(Said::Edit {
                target: self.target?,
                text: self.text?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(json: serde_json::Value) -> Plain {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn each_kind_reads_as_what_it_says_and_nothing_else() {
        assert_eq!(
            plain(serde_json::json!({ "from": "a", "kind": "text", "text": "hi", "reply_to": 4, "ttl": 30 })).said(),
            Some(Said::Text { text: "hi".into(), reply_to: Some(4), ttl: Some(30) })
        );
        assert_eq!(
            plain(serde_json::json!({ "from": "a", "kind": "text", "text": "hi", "ttl": 999_999 }))
                .said(),
            Some(Said::Text {
                text: "hi".into(),
                reply_to: None,
                ttl: None
            })
        );
        assert_eq!(
            plain(serde_json::json!({ "from": "a", "kind": "react", "target": 3, "emoji": "👍", "on": true })).said(),
            Some(Said::React { target: 3, emoji: "👍".into(), on: true })
        );
        assert_eq!(
            plain(serde_json::json!({ "from": "a", "kind": "react", "target": 3, "emoji": "x".repeat(17), "on": true })).said(),
            None
        );
        assert_eq!(
            plain(
                serde_json::json!({ "from": "a", "kind": "edit", "target": 3, "text": "better" })
            )
            .said(),
            Some(Said::Edit {
                target: 3,
                text: "better".into()
            })
        );
        assert_eq!(
            plain(serde_json::json!({ "from": "a", "kind": "poll" })).said(),
            None
        );
    }
}
