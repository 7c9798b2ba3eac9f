use super::{decode_fixed, Invalid};

/// A member's ECDH P-256 public key for direct messages: the raw 65-byte uncompressed point.
/// The server checks that it is a point on the curve, so clients never compute with garbage,
/// and relays the text as the member sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(String);

impl PublicKey {
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let bytes = decode_fixed::<65>(text).ok_or(Invalid::PublicKey)?;
        if bytes[0] != 0x04 {
            return Err(Invalid::PublicKey);
        }
        p256::PublicKey::from_sec1_bytes(&bytes).map_err(|_| Invalid::PublicKey)?;
        Ok(Self(text.to_owned()))
    }
}

impl AsRef<str> for PublicKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str =
        "BCkZ3Ha5Z8u1e4O0XudXdtC1aZjcJURwNRitr4tzqEbv-BDdyvU46KYcZ3FYekJazDGXsRrG9ghsCwyfVOm6F1I";

    #[test]
    fn accepts_the_contract_test_vector() {
        assert!(PublicKey::parse(ALICE).is_ok());
    }

    #[test]
    fn refuses_points_off_the_curve_compressed_points_and_junk() {
        let mut off_curve = ALICE.to_owned();
        off_curve.replace_range(10..11, if &ALICE[10..11] == "A" { "B" } else { "A" });
        let compressed = super::super::encode_b64url(&[2u8; 33]);
        for bad in [off_curve.as_str(), compressed.as_str(), "", "not base64!"] {
            assert_eq!(PublicKey::parse(bad), Err(Invalid::PublicKey), "{bad}");
        }
    }
}
