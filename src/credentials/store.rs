use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What persists of a room. No field holds anything a member said; `room_id` and `title` are
/// set only for rooms their creator chose to list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    /// HMAC-SHA256 of the room ID under the pepper, lower-case hex.
    pub id_hash: String,
    /// argon2id PHC string of the `auth` proof.
    pub auth_hash: String,
    /// argon2id PHC string of the admin password.
    pub admin_hash: String,
    pub listed: bool,
    pub room_id: Option<String>,
    pub title: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl RoomRecord {
    /// Whether both are the same creation of a room: hashes are salted afresh at every creation.
    pub fn same_credentials(&self, other: &Self) -> bool {
        self.id_hash == other.id_hash
            && self.auth_hash == other.auth_hash
            && self.admin_hash == other.admin_hash
    }
}

/// A listed room as the lobby shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRoom {
    pub room_id: String,
    pub title: Option<String>,
    pub expires_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a room with that ID hash exists")]
    Exists,
    #[error("the store cannot be reached: {0}")]
    Unavailable(String),
}

/// Where room credentials persist. Both backends pass one conformance suite
/// (`tests/api/store.rs`).
#[async_trait::async_trait]
pub trait RoomStore: Send + Sync {
    /// Adds a room; `Exists` when its ID hash is taken by a room that has not expired.
    async fn insert(&self, room: &RoomRecord) -> Result<(), StoreError>;

    /// The room with this ID hash, unless it is missing or expired.
    async fn get(&self, id_hash: &str) -> Result<Option<RoomRecord>, StoreError>;

    /// Removes a room; whether it was there.
    async fn delete(&self, id_hash: &str) -> Result<bool, StoreError>;

    /// Pushes a room's expiry forward (after a successful join).
    async fn extend(&self, id_hash: &str, expires_at: OffsetDateTime) -> Result<(), StoreError>;

    /// Every listed room that has not expired: read once, at start-up, to fill the lobby.
    async fn listed(&self) -> Result<Vec<ListedRoom>, StoreError>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Forgets rooms past their expiry; a no-op where the database does it itself.
    async fn purge_expired(&self) -> Result<u64, StoreError>;
}
