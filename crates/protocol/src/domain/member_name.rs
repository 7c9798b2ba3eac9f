use std::fmt;

use unicode_general_category::{get_general_category, GeneralCategory};
use unicode_security::{
    confusable_detection::skeleton,
    general_security_profile::{GeneralSecurityProfile as _, IdentifierType},
};

use super::Invalid;

/// A member's display name: trimmed, 1 to 32 characters, nothing invisible (controls, format
/// characters, default-ignorable code points such as U+034F or the variation selectors, blank
/// fillers such as U+3164), and never `bot`, the server's own voice. Two names clash when they
/// look alike: `alice`, `ALICE` and `аlice` with a Cyrillic `а` are one name in a room.
///
/// `Debug` hides the value: names are things members say and must not reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberName {
    name: String,
    /// The confusable skeleton (Unicode TS #39) of the lower-case form, lower-cased again; two
    /// names clash when these are equal.
    key: String,
}

/// Code points that render as nothing, or as blank space, in a name; those that are
/// default-ignorable are found by their identifier type.
fn invisible(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::Unassigned
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
    ) || c.identifier_type() == Some(IdentifierType::Default_Ignorable)
        // Fillers and blanks that are not default-ignorable: Hangul fillers, the Braille blank,
        // the Khmer inherent vowels, the Mongolian vowel separator.
        || matches!(c, '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{2800}'
            | '\u{17B4}' | '\u{17B5}' | '\u{180E}')
}

/// The form two names are compared in.
fn clash_key(name: &str) -> String {
    skeleton(&name.to_lowercase())
        .collect::<String>()
        .to_lowercase()
}

impl MemberName {
    pub const MAX_CHARS: usize = 32;

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let name = text.trim();
        let count = name.chars().count();
        if count == 0 || count > Self::MAX_CHARS {
            return Err(Invalid::Name);
        }
        let key = clash_key(name);
        if name.chars().any(invisible) || key == clash_key("bot") {
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
    fn refuses_invisible_and_blank_code_points() {
        for bad in [
            "alice\u{34F}",
            "alice\u{FE0F}",
            "\u{3164}",
            "a\u{3164}",
            "al\u{115F}ice",
            "\u{2800}",
            "a\u{E0041}",
            "a\u{2028}b",
            "a\u{E000}",
        ] {
            assert_eq!(MemberName::parse(bad), Err(Invalid::Name), "{bad:?}");
        }
        assert!(MemberName::parse("Zoë 🦊").is_ok());
        assert!(MemberName::parse("李小龍").is_ok());
    }

    #[test]
    fn look_alike_names_clash() {
        let key = |s: &str| MemberName::parse(s).unwrap().key().to_owned();
        assert_eq!(key("alice"), key("ALICE"));
        assert_eq!(key("alice"), key("\u{430}lice"));
        assert_eq!(key("paypal"), key("\u{440}\u{430}y\u{440}\u{430}l"));
        assert_eq!(key("rn"), key("m"));
        assert_ne!(key("alice"), key("alicia"));
        assert_eq!(MemberName::parse("B\u{43E}t"), Err(Invalid::Name));
    }

    #[test]
    fn clash_key_is_the_unicode_lower_case() {
        let a = MemberName::parse("ÉLODIE").unwrap();
        let b = MemberName::parse("élodie").unwrap();
        assert_eq!(a.key(), b.key());
        assert_ne!(a.as_ref(), b.as_ref());
    }
}
