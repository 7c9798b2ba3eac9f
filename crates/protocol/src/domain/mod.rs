//! Wire input becomes these values at the edge, so that an invalid room ID, name or proof cannot
//! travel further into the server. Each type keeps its field private and offers `parse`.

mod admin_password;
mod auth;
mod member_name;
mod pubkey;
mod room_id;
mod session_token;
mod title;

pub use admin_password::AdminPassword;
pub use auth::Auth;
pub use member_name::MemberName;
pub use pubkey::PublicKey;
pub use room_id::RoomId;
pub use session_token::SessionToken;
pub use title::Title;

/// Why a value was refused. Each boundary maps these to its own error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("room IDs are 3 to 64 letters, digits, '-' or '_'")]
    RoomId,
    #[error(
        "names are 1 to 32 characters without control or formatting characters, and not 'bot'"
    )]
    Name,
    #[error("auth must be 32 bytes, base64url without padding")]
    Auth,
    #[error("admin passwords are 8 to 128 characters")]
    AdminPassword,
    #[error("titles are at most 80 characters without control characters")]
    Title,
    #[error("pubkey must be an uncompressed P-256 point, base64url without padding")]
    PublicKey,
    #[error("session tokens are 32 bytes, base64url without padding")]
    SessionToken,
}

/// Decodes canonical unpadded base64url into exactly `N` bytes. The strict engine refuses padding
/// and non-zero trailing bits, so each value has exactly one spelling.
fn decode_fixed<const N: usize>(text: &str) -> Option<[u8; N]> {
    use base64::Engine as _;
    if text.len() != (N * 4).div_ceil(3) {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()?;
    bytes.try_into().ok()
}

/// Unpadded base64url, the only encoding of binary values in the protocol.
pub fn encode_b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
