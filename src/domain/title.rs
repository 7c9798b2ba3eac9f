use super::Invalid;

/// A listed room's title, shown in the lobby: at most 80 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Title(String);

impl Title {
    pub const MAX_CHARS: usize = 80;

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let ok = text.chars().count() <= Self::MAX_CHARS && !text.chars().any(char::is_control);
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
}
