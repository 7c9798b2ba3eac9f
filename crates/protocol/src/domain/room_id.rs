use std::fmt;

use super::{encode_b64url, Invalid};

/// A room's public identifier: `^[A-Za-z0-9_-]{3,64}$`.
///
/// `Debug` does not print the value: the plaintext ID of an unlisted room must never reach a log
/// line, and a stray `{:?}` is the easiest way for it to get there.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RoomId(String);

impl RoomId {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let ok = (3..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(Invalid::RoomId)
        }
    }

    /// A random 16-character ID (12 random bytes): too many to guess. It never starts with `-`,
    /// which a command line would take for a flag (`ephemera-cli join -x…`).
    pub fn random() -> Self {
        loop {
            let id = encode_b64url(&rand::random::<[u8; 12]>());
            if !id.starts_with('-') {
                return Self(id);
            }
        }
    }
}

impl AsRef<str> for RoomId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomId(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_valid_and_never_read_as_flags() {
        for _ in 0..2000 {
            let id = RoomId::random();
            assert!(RoomId::parse(id.as_ref()).is_ok());
            assert!(!id.as_ref().starts_with('-'));
        }
    }

    #[test]
    fn accepts_the_allowed_alphabet_and_lengths() {
        for ok in ["abc", "team-42", "A_b-9", &"x".repeat(64)] {
            assert!(RoomId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_short_long_and_foreign_characters() {
        for bad in [
            "",
            "ab",
            &"x".repeat(65),
            "has space",
            "dot.dot",
            "slash/",
            "é-room",
            "room%20",
        ] {
            assert_eq!(RoomId::parse(bad), Err(Invalid::RoomId), "{bad}");
        }
    }

    #[test]
    fn random_ids_are_16_valid_characters_and_differ() {
        let a = RoomId::random();
        let b = RoomId::random();
        assert_eq!(a.as_ref().len(), 16);
        assert!(RoomId::parse(a.as_ref()).is_ok());
        assert_ne!(a, b);
    }

    #[test]
    fn debug_does_not_reveal_the_id() {
        let id = RoomId::parse("secret-room").unwrap();
        assert!(!format!("{id:?}").contains("secret"));
    }
}
