use std::fmt;

use unicode_general_category::{get_general_category, GeneralCategory};

use super::Invalid;

/// A member's display name: trimmed, 1 to 32 characters, no controls or invisible formatting
/// characters (which would let two names look alike), and never `bot`, the server's own voice.
///
/// `Debug` hides the value: names are things members say and must not reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberName {
    name: String,
    /// The Unicode lower-case form; two names clash when these are equal.
    key: String,
}

impl MemberName {
    pub const MAX_CHARS: usize = 32;

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let name = text.trim();
        let count = name.chars().count();
        if count == 0 || count > Self::MAX_CHARS {
            return Err(Invalid::Name);
        }
        let forbidden = name.chars().any(|c| {
            matches!(
                get_general_category(c),
                GeneralCategory::Control | GeneralCategory::Format
            )
        });
        let key = name.to_lowercase();
        if forbidden || key == "bot" {
            return Err(Invalid::Name);
        }
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// The form two names are compared in.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl AsRef<str> for MemberName {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemberName(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_unicode_white_space_first() {
        let name = MemberName::parse("\u{3000} alice\t\n").unwrap();
        assert_eq!(name.as_ref(), "alice");
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert!(MemberName::parse(&"é".repeat(32)).is_ok());
        assert!(MemberName::parse(&"é".repeat(33)).is_err());
        assert!(MemberName::parse("😀").is_ok());
    }

    #[test]
    fn refuses_empty_and_blank() {
        assert_eq!(MemberName::parse(""), Err(Invalid::Name));
        assert_eq!(MemberName::parse("   "), Err(Invalid::Name));
    }

    #[test]
    fn refuses_controls_and_format_characters() {
        for bad in [
            "a\u{0}b",
            "a\u{7}b",
            "a\u{200b}b",
            "a\u{202e}b",
            "a\u{feff}b",
            "a\nb",
        ] {
            assert_eq!(MemberName::parse(bad), Err(Invalid::Name), "{bad:?}");
        }
    }

    #[test]
    fn refuses_bot_in_any_case() {
        for bad in ["bot", "BOT", " Bot "] {
            assert_eq!(MemberName::parse(bad), Err(Invalid::Name));
        }
        assert!(MemberName::parse("bots").is_ok());
    }

    #[test]
    fn clash_key_is_the_unicode_lower_case() {
        let a = MemberName::parse("ÉLODIE").unwrap();
        let b = MemberName::parse("élodie").unwrap();
        assert_eq!(a.key(), b.key());
        assert_ne!(a.as_ref(), b.as_ref());
    }
}
