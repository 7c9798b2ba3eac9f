//! The clients' end-to-end encryption, exactly as `docs/protocol.md` derives it, so that a
//! terminal and a browser in one room read each other. The server never runs this code.

use aes_gcm::{
    aead::{Aead, KeyInit, Payload},
    Aes256Gcm, Nonce,
};
use hkdf::Hkdf;
use p256::{ecdh::diffie_hellman, elliptic_curve::sec1::ToEncodedPoint, PublicKey, SecretKey};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::domain::encode_b64url;

const PBKDF2_ROUNDS: u32 = 600_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("not an end-to-end envelope")]
    NotAnEnvelope,
    #[error("the message does not decrypt with this key")]
    Undecryptable,
    #[error("not a valid P-256 public key")]
    BadPublicKey,
}

fn hkdf(ikm: &[u8], info: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    // unwrap: 32 bytes is far below HKDF-SHA256's maximum output of 8160 bytes.
    #[allow(clippy::unwrap_used)]
    Hkdf::<Sha256>::new(None, ikm)
        .expand(info.as_bytes(), &mut out)
        .unwrap();
    out
}

/// What a room key yields: the proof sent to the server and the key that never leaves.
pub struct RoomSecrets {
    pub master: [u8; 32],
    pub auth: [u8; 32],
    pub enc: [u8; 32],
}

impl RoomSecrets {
    /// PBKDF2 with 600,000 rounds: slow on purpose, run it off any async executor.
    pub fn derive(room_id: &str, room_key: &str) -> Self {
        let mut master = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(
            room_key.as_bytes(),
            format!("ephemera/v1/room/{room_id}").as_bytes(),
            PBKDF2_ROUNDS,
            &mut master,
        );
        Self {
            auth: hkdf(&master, "ephemera/v1/auth"),
            enc: hkdf(&master, "ephemera/v1/enc"),
            master,
        }
    }

    pub fn auth_b64(&self) -> String {
        encode_b64url(&self.auth)
    }
}

/// `{"e2e":"v1","iv","ct"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub e2e: String,
    pub iv: String,
    pub ct: String,
}

fn decode(text: &str) -> Result<Vec<u8>, CryptoError> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| CryptoError::NotAnEnvelope)
}

/// Seals a value as UTF-8 JSON under `key` with additional data `room_id`.
pub fn seal<T: Serialize>(key: &[u8; 32], room_id: &str, value: &T, iv: [u8; 12]) -> Envelope {
    // unwrap: serialising our own plaintext types cannot fail, and AES-GCM encryption only
    // fails for inputs over 64 GiB.
    #[allow(clippy::unwrap_used)]
    let plaintext = serde_json::to_vec(value).unwrap();
    #[allow(clippy::unwrap_used)]
    let ct = Aes256Gcm::new(key.into())
        .encrypt(
            &Nonce::from(iv),
            Payload {
                msg: &plaintext,
                aad: room_id.as_bytes(),
            },
        )
        .unwrap();
    Envelope {
        e2e: "v1".into(),
        iv: encode_b64url(&iv),
        ct: encode_b64url(&ct),
    }
}

/// Opens an envelope (given as any JSON body) into `T`.
pub fn open<T: DeserializeOwned>(
    key: &[u8; 32],
    room_id: &str,
    body: &serde_json::Value,
) -> Result<T, CryptoError> {
    let envelope: Envelope =
        serde_json::from_value(body.clone()).map_err(|_| CryptoError::NotAnEnvelope)?;
    if envelope.e2e != "v1" {
        return Err(CryptoError::NotAnEnvelope);
    }
    let iv: [u8; 12] = decode(&envelope.iv)?
        .try_into()
        .map_err(|_| CryptoError::NotAnEnvelope)?;
    let plaintext = Aes256Gcm::new(key.into())
        .decrypt(
            &Nonce::from(iv),
            Payload {
                msg: &decode(&envelope.ct)?,
                aad: room_id.as_bytes(),
            },
        )
        .map_err(|_| CryptoError::Undecryptable)?;
    serde_json::from_slice(&plaintext).map_err(|_| CryptoError::Undecryptable)
}

/// A member's ECDH P-256 key pair for direct messages.
pub struct DmKeys {
    secret: SecretKey,
}

impl DmKeys {
    pub fn generate() -> Self {
        Self {
            secret: SecretKey::random(&mut rand::rngs::OsRng),
        }
    }

    pub fn from_scalar(bytes: &[u8; 32]) -> Option<Self> {
        SecretKey::from_bytes(bytes.into())
            .ok()
            .map(|secret| Self { secret })
    }

    /// The raw uncompressed point, base64url: the `pubkey` of `join`.
    pub fn public_b64(&self) -> String {
        encode_b64url(self.secret.public_key().to_encoded_point(false).as_bytes())
    }

    /// The ECDH shared secret and the pair's `dm_key` in `room_id` between `a` and `b`.
    pub fn dm_key(
        &self,
        their_pubkey: &str,
        room_id: &str,
        a: &str,
        b: &str,
    ) -> Result<([u8; 32], [u8; 32]), CryptoError> {
        let theirs = PublicKey::from_sec1_bytes(
            &decode(their_pubkey).map_err(|_| CryptoError::BadPublicKey)?,
        )
        .map_err(|_| CryptoError::BadPublicKey)?;
        let shared = diffie_hellman(self.secret.to_nonzero_scalar(), theirs.as_affine());
        let mut secret = [0u8; 32];
        secret.copy_from_slice(shared.raw_secret_bytes());
        // Rust's `str` ordering is by code point, as the contract sorts names.
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        let key = hkdf(
            &secret,
            &format!("ephemera/v1/dm/{room_id}/{first}/{second}"),
        );
        Ok((secret, key))
    }
}

/// A short fingerprint to compare out of band, the same the web client shows.
pub fn fingerprint(label: &str, key: &[u8]) -> String {
    let digest = Sha256::new()
        .chain_update(label.as_bytes())
        .chain_update(key)
        .finalize();
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("{} {} {}", &hex[..4], &hex[4..8], &hex[8..])
}

/// The safety code two members read to each other to check that their DM keys are each
/// other's: SHA-256 over the room and both members' names and public keys, so each side computes
/// it from what it was given. It is six groups of five digits (about 100 bits): a server that
/// swapped the public keys would have to find two keys of its own whose codes collide, some
/// 2^50 key generations, where the 48-bit `fingerprint` would take 2^24.
pub fn safety_code(room_id: &str, a: (&str, &str), b: (&str, &str)) -> Result<String, CryptoError> {
    let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
    let mut digest = Sha256::new()
        .chain_update(format!("ephemera/v1/safety/{room_id}").as_bytes())
        .chain_update([0]);
    for (name, pubkey) in [first, second] {
        let raw = decode(pubkey).map_err(|_| CryptoError::BadPublicKey)?;
        let (Ok(name_len), Ok(key_len)) = (u8::try_from(name.len()), u8::try_from(raw.len()))
        else {
            return Err(CryptoError::BadPublicKey);
        };
        digest = digest
            .chain_update([name_len])
            .chain_update(name.as_bytes())
            .chain_update([key_len])
            .chain_update(&raw);
    }
    let digest = digest.finalize();
    let groups: Vec<String> = digest[..30]
        .chunks(5)
        .map(|five| {
            let n = five.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect();
    Ok(groups.join(" "))
}

pub fn random_iv() -> [u8; 12] {
    rand::random()
}

/// A random room key from the base64url alphabet, like the web client proposes.
pub fn random_key(chars: usize) -> String {
    let mut key = encode_b64url(&(0..chars).map(|_| rand::random::<u8>()).collect::<Vec<_>>());
    key.truncate(chars);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn derivation_matches_the_contract_vectors() {
        for (room, key, master, auth, enc) in [
            (
                "team-42",
                "correct horse",
                "06f708ad03a0ad27d9dccb18ec02343b857ef206182c271972d1df654719d8d1",
                "QI2MuN_h4umuzgDv7fuYPzUPs2a7-rq_52HxKATzSZk",
                "515b6b9575f599f3b175b0dcda5c6adf051782b81f44e8ac0a82c9a85337b02d",
            ),
            (
                "Zq3xv9LmN0pQrS7t",
                "k9JvT2mQ8xR4wY6zB1nC5a",
                "bfef1c47b50d4ae3293540c7d1f8b6f36d2ce34697f1ac0e353d7f40573453c0",
                "czo1YZT6tOwsXQabE13Ve_8zLw5hZqr87Hj0xUDxq44",
                "4a4c53dc62bdf8b7c03cc2397b6f7939c7ed31618034e976e9576fc7f2c8650c",
            ),
        ] {
            let s = RoomSecrets::derive(room, key);
            assert_eq!(hex(&s.master), master);
            assert_eq!(s.auth_b64(), auth);
            assert_eq!(hex(&s.enc), enc);
        }
    }

    #[test]
    fn the_envelope_matches_the_contract_vector_and_opens() {
        let enc = RoomSecrets::derive("team-42", "correct horse").enc;
        let iv: [u8; 12] = std::array::from_fn(|i| i as u8);
        let plain: serde_json::Value =
            serde_json::from_str(r#"{"from":"alice","kind":"text","text":"hi"}"#).unwrap();
        let envelope = seal(&enc, "team-42", &plain, iv);
        assert_eq!(envelope.iv, "AAECAwQFBgcICQoL");
        assert_eq!(
            envelope.ct,
            "hcNq8QWyiXYg3tLp_Dg5V8vuOYUYaaNmUgmXrOMdl4dF19ggyc7DvussTXQ9GPimC2h-HpVgz_Vg-A"
        );
        let body = serde_json::to_value(&envelope).unwrap();
        let opened: serde_json::Value = open(&enc, "team-42", &body).unwrap();
        assert_eq!(opened, plain);
        assert_eq!(
            open::<serde_json::Value>(&enc, "other-room", &body),
            Err(CryptoError::Undecryptable)
        );
        assert_eq!(
            open::<serde_json::Value>(&enc, "team-42", &serde_json::json!({"text": "hi"})),
            Err(CryptoError::NotAnEnvelope)
        );
    }

    #[test]
    fn the_dm_key_matches_the_contract_vector() {
        let mut alice_scalar = [0u8; 32];
        alice_scalar[24..].copy_from_slice(&[0x11, 0x22, 0x10, 0xf4, 0x7d, 0xe9, 0x81, 0x15]);
        let alice = DmKeys::from_scalar(&alice_scalar).unwrap();
        assert_eq!(
            alice.public_b64(),
            "BCkZ3Ha5Z8u1e4O0XudXdtC1aZjcJURwNRitr4tzqEbv-BDdyvU46KYcZ3FYekJazDGXsRrG9ghsCwyfVOm6F1I"
        );
        let bob = "BLy5ei9_ep2rpo8OBY4a_ZNaLnIG40GMl49f7SuarDnezTyp-Tcv7rKuO-a8gil0u5aazGuhOoUFZkrQPR4-NPU";
        let (secret, key) = alice.dm_key(bob, "team-42", "bob", "alice").unwrap();
        assert_eq!(
            hex(&secret),
            "a2f8fe9b57581bbb78d34e77b3fa8b088039c228a1559ef435b60de380505488"
        );
        assert_eq!(
            hex(&key),
            "003564b11ce1bf34b72ec2f06e95f4cce851d03f7ed28d9e2d3dcb18d8ebad4d"
        );
    }

    #[test]
    fn both_sides_of_a_pair_get_the_same_dm_key() {
        let (a, b) = (DmKeys::generate(), DmKeys::generate());
        let ka = a.dm_key(&b.public_b64(), "r", "ann", "bo").unwrap().1;
        let kb = b.dm_key(&a.public_b64(), "r", "bo", "ann").unwrap().1;
        assert_eq!(ka, kb);
    }

    #[test]
    fn the_safety_code_matches_the_contract_vector_from_either_side() {
        let alice = "BCkZ3Ha5Z8u1e4O0XudXdtC1aZjcJURwNRitr4tzqEbv-BDdyvU46KYcZ3FYekJazDGXsRrG9ghsCwyfVOm6F1I";
        let bob = "BLy5ei9_ep2rpo8OBY4a_ZNaLnIG40GMl49f7SuarDnezTyp-Tcv7rKuO-a8gil0u5aazGuhOoUFZkrQPR4-NPU";
        let code = safety_code("team-42", ("alice", alice), ("bob", bob)).unwrap();
        assert_eq!(
            safety_code("team-42", ("bob", bob), ("alice", alice)).unwrap(),
            code
        );
        assert_eq!(code, "01381 76559 28245 28596 44131 17923");
        assert_ne!(
            safety_code("team-43", ("alice", alice), ("bob", bob)).unwrap(),
            code
        );
        assert!(safety_code("team-42", ("alice", "not a key!"), ("bob", bob)).is_err());
    }

    #[test]
    fn fingerprints_are_three_groups_of_four_hex_digits() {
        let fp = fingerprint("ephemera/v1/fp/room", &[1, 2, 3]);
        assert_eq!(fp.len(), 14);
        assert_eq!(fp.split(' ').count(), 3);
    }
}
