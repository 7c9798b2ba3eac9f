use subtle::ConstantTimeEq;

use super::{decode_fixed, encode_b64url, Invalid};

/// A reconnect token from `welcome`: 32 random bytes. Only the latest one of a member is valid,
/// and it lives in memory only.
#[derive(Clone)]
pub struct SessionToken([u8; 32]);

impl SessionToken {
    pub fn random() -> Self {
        Self(rand::random())
    }

    pub fn parse(text: &str) -> Result<Self, Invalid> {
        decode_fixed::<32>(text)
            .map(Self)
            .ok_or(Invalid::SessionToken)
    }

    pub fn encode(&self) -> String {
        encode_b64url(&self.0)
    }
}

/// Compared in constant time: the token is a bearer secret.
impl PartialEq for SessionToken {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_its_encoding() {
        let t = SessionToken::random();
        assert!(SessionToken::parse(&t.encode()).unwrap() == t);
        assert!(SessionToken::parse("short").is_err());
    }
}
