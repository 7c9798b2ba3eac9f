use super::Invalid;

/// The room creator's admin password, 8 to 128 characters. Only its argon2id hash is stored.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminPassword(String);

impl AdminPassword {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        if (8..=128).contains(&text.chars().count()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(Invalid::AdminPassword)
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminPassword(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_characters_from_8_to_128() {
        assert!(AdminPassword::parse("12345678").is_ok());
        assert!(AdminPassword::parse(&"ü".repeat(128)).is_ok());
        assert_eq!(AdminPassword::parse("1234567"), Err(Invalid::AdminPassword));
        assert_eq!(
            AdminPassword::parse(&"x".repeat(129)),
            Err(Invalid::AdminPassword)
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let p = AdminPassword::parse("hunter2hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter"));
    }
}
