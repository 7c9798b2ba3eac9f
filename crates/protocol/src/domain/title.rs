use unicode_general_category::{get_general_category, GeneralCategory};

use super::Invalid;

/// A listed room's title, shown in the lobby to everyone: at most 80 characters, no control
/// characters, no line or paragraph separators, and no format characters but the joiners that
/// emoji are made of: a bidi override (U+202E) would make the lobby read backwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

fn refused(c: char) -> bool {
    match get_general_category(c) {
        GeneralCategory::Control
        | GeneralCategory::LineSeparator
        | GeneralCategory::ParagraphSeparator => true,
        GeneralCategory::Format => c != '\u{200D}',
        _ => false,
    }
}

impl Title {
    pub const MAX_CHARS: usize = 80;

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let ok = text.chars().count() <= Self::MAX_CHARS && !text.chars().any(refused);
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(Invalid::Title)
        }
    }
}

impl AsRef<str> for Title {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_up_to_80_characters() {
        assert!(Title::parse("").is_ok());
        assert!(Title::parse(&"ß".repeat(80)).is_ok());
        assert_eq!(Title::parse(&"ß".repeat(81)), Err(Invalid::Title));
    }

    #[test]
    fn refuses_control_characters() {
        assert_eq!(Title::parse("a\nb"), Err(Invalid::Title));
    }

    #[test]
    fn refuses_bidi_overrides_and_invisible_format_characters() {
        for bad in [
            "a\u{202E}b",
            "a\u{2066}b",
            "a\u{200F}",
            "a\u{2028}b",
            "\u{FEFF}x",
        ] {
            assert_eq!(Title::parse(bad), Err(Invalid::Title), "{bad:?}");
        }
        assert!(Title::parse("Family 👨\u{200D}👩\u{200D}👧").is_ok());
    }
}
