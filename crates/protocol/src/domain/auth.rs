use super::{decode_fixed, Invalid};

/// The 32-byte proof a client derives from the room key. The server only ever hashes or compares
/// it; it is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth([u8; 32]);

impl Auth {
    /// Canonical unpadded base64url of exactly 32 bytes (43 characters).
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        decode_fixed::<32>(text).map(Self).ok_or(Invalid::Auth)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_contract_test_vector() {
        assert!(Auth::parse("QI2MuN_h4umuzgDv7fuYPzUPs2a7-rq_52HxKATzSZk").is_ok());
    }

    #[test]
    fn refuses_padding_wrong_lengths_other_alphabets_and_stray_bits() {
        for bad in [
            "",
            "QI2MuN_h4umuzgDv7fuYPzUPs2a7-rq_52HxKATzSZk=",
            "QI2MuN_h4umuzgDv7fuYPzUPs2a7-rq_52HxKATzSZ",
            "QI2MuN_h4umuzgDv7fuYPzUPs2a7-rq_52HxKATzSZkA",
            "QI2MuN/h4umuzgDv7fuYPzUPs2a7+rq/52HxKATzSZk",
            // The last character carries two bits that must be zero.
            "QI2MuN_h4umuzgDv7fuYPzUPs2a7-rq_52HxKATzSZl",
        ] {
            assert_eq!(Auth::parse(bad), Err(Invalid::Auth), "{bad}");
        }
    }
}
