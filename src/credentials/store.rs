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
    /// What the creator chose; a record written before there were options reads as the
    /// defaults, which are how every room behaved then.
    #[serde(default)]
    pub options: RoomOptions,
}

/// How a room ends, as its creator chose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifetime {
    /// The server's room lifetime after the last join (30 days by default).
    #[default]
    Rolling,
    /// At `expires_at`, whoever is in it: joins do not push it back.
    Fixed,
    /// When its last member has left (after a grace for reconnects); the server's room
    /// lifetime if nobody ever joins.
    UntilEmpty,
}

/// A room's options: chosen at creation, kept in its record beside its hashes, shown to members
/// in `welcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomOptions {
    pub lifetime: Lifetime,
    /// At most this many members (0: the server's limit alone).
    pub max_members: u32,
    /// Whether a member may take back what it said (and an admin what anyone said).
    pub unsend: bool,
}

impl Default for RoomOptions {
    fn default() -> Self {
        Self {
            lifetime: Lifetime::Rolling,
            max_members: 0,
            unsend: true,
        }
    }
}

impl RoomRecord {
    /// The options as `welcome` shows them.
    pub fn options_view(&self) -> ephemera_protocol::RoomOptions {
        let lifetime = match self.options.lifetime {
            Lifetime::Rolling => ephemera_protocol::RoomLifetime::Rolling,
            Lifetime::Fixed => ephemera_protocol::RoomLifetime::Fixed,
            Lifetime::UntilEmpty => ephemera_protocol::RoomLifetime::Empty,
        };
        let ends_at = (self.options.lifetime == Lifetime::Fixed).then(|| {
            i64::try_from(self.expires_at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
        });
        ephemera_protocol::RoomOptions {
            lifetime,
            ends_at,
            max_members: self.options.max_members as usize,
            unsend: self.options.unsend,
        }
    }

    /// The most members the room takes: its creator's cap, within the server's (0: none).
    pub fn member_cap(&self, server: usize) -> usize {
        match self.options.max_members as usize {
            0 => server,
            mine if server == 0 => mine,
            mine => mine.min(server),
        }
    }

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
