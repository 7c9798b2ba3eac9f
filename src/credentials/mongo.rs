use std::time::Duration;

use futures_util::TryStreamExt as _;
use mongodb::{
    bson::{doc, DateTime, Document},
    error::{ErrorKind, WriteFailure},
    options::{ClientOptions, IndexOptions},
    Client, Collection, IndexModel,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::store::{ListedRoom, RoomOptions, RoomRecord, RoomStore, StoreError};

/// How long an operation may wait for a reachable server before the store counts as down. Short,
/// so a join or a create during an outage is told so quickly instead of hanging.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// The `rooms` collection as MongoDB holds it; dates are BSON dates so the TTL index works.
#[derive(Debug, Serialize, Deserialize)]
struct RoomDoc {
    id_hash: String,
    auth_hash: String,
    admin_hash: String,
    listed: bool,
    room_id: Option<String>,
    title: Option<String>,
    created_at: DateTime,
    expires_at: DateTime,
    #[serde(default)]
    options: RoomOptions,
}

fn to_bson(t: OffsetDateTime) -> DateTime {
    DateTime::from_millis(i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
}

fn from_bson(t: DateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.timestamp_millis()) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl From<&RoomRecord> for RoomDoc {
    fn from(r: &RoomRecord) -> Self {
        Self {
            id_hash: r.id_hash.clone(),
            auth_hash: r.auth_hash.clone(),
            admin_hash: r.admin_hash.clone(),
            listed: r.listed,
            room_id: r.room_id.clone(),
            title: r.title.clone(),
            created_at: to_bson(r.created_at),
            expires_at: to_bson(r.expires_at),
            options: r.options,
        }
    }
}

impl From<RoomDoc> for RoomRecord {
    fn from(d: RoomDoc) -> Self {
        Self {
            id_hash: d.id_hash,
            auth_hash: d.auth_hash,
            admin_hash: d.admin_hash,
            listed: d.listed,
            room_id: d.room_id,
            title: d.title,
            created_at: from_bson(d.created_at),
            expires_at: from_bson(d.expires_at),
            options: d.options,
        }
    }
}

fn failed(e: mongodb::error::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Room credentials in MongoDB (`MONGODB_URI`): a unique index on the ID hash, and a TTL index on
/// `expires_at` so MongoDB forgets rooms nobody joined for the room lifetime.
#[derive(Clone)]
pub struct MongoStore {
    client: Client,
    rooms: Collection<RoomDoc>,
}

impl MongoStore {
    /// Connects lazily: a server that is down at start-up still starts, reports `store: down`, and
    /// recovers when MongoDB comes back. Indexes are made by [`MongoStore::ensure_indexes`].
    pub async fn connect(uri: &str, database: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(uri).await.map_err(failed)?;
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.connect_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.app_name = Some("ephemera".into());
        let client = Client::with_options(options).map_err(failed)?;
        let rooms = client.database(database).collection("rooms");
        Ok(Self { client, rooms })
    }

    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.ensure_index(
            doc! { "id_hash": 1 },
            IndexOptions::builder()
                .unique(true)
                .name("id_hash_unique".to_owned())
                .build(),
        )
        .await?;
        self.ensure_index(
            doc! { "expires_at": 1 },
            IndexOptions::builder()
                .expire_after(Duration::ZERO)
                .name("expires_at_ttl".to_owned())
                .build(),
        )
        .await?;
        // The lobby is read at start-up by `listed`.
        self.ensure_index(
            doc! { "listed": 1, "expires_at": 1 },
            IndexOptions::builder().name("listed".to_owned()).build(),
        )
        .await
    }

    async fn ensure_index(&self, keys: Document, options: IndexOptions) -> Result<(), StoreError> {
        let index = IndexModel::builder().keys(keys).options(options).build();
        self.rooms
            .create_index(index)
            .await
            .map(drop)
            .map_err(failed)
    }

    fn now() -> DateTime {
        to_bson(OffsetDateTime::now_utc())
    }
}

#[async_trait::async_trait]
impl RoomStore for MongoStore {
    async fn insert(&self, room: &RoomRecord) -> Result<(), StoreError> {
        // The TTL monitor runs once a minute: an expired record may linger and must not block a
        // new room with the same ID.
        self.rooms
            .delete_one(doc! { "id_hash": &room.id_hash, "expires_at": { "$lte": Self::now() } })
            .await
            .map_err(failed)?;
        match self.rooms.insert_one(RoomDoc::from(room)).await {
            Ok(_) => Ok(()),
            Err(e) => match *e.kind {
                ErrorKind::Write(WriteFailure::WriteError(ref w)) if w.code == 11000 => {
                    Err(StoreError::Exists)
                }
                _ => Err(failed(e)),
            },
        }
    }

    async fn get(&self, id_hash: &str) -> Result<Option<RoomRecord>, StoreError> {
        self.rooms
            .find_one(doc! { "id_hash": id_hash, "expires_at": { "$gt": Self::now() } })
            .await
            .map(|d| d.map(RoomRecord::from))
            .map_err(failed)
    }

    async fn delete(&self, id_hash: &str) -> Result<bool, StoreError> {
        let result = self
            .rooms
            .delete_one(doc! { "id_hash": id_hash, "expires_at": { "$gt": Self::now() } })
            .await
            .map_err(failed)?;
        Ok(result.deleted_count > 0)
    }

    async fn extend(&self, id_hash: &str, expires_at: OffsetDateTime) -> Result<(), StoreError> {
        self.rooms
            .update_one(
                doc! { "id_hash": id_hash, "expires_at": { "$gt": Self::now() } },
                doc! { "$max": { "expires_at": to_bson(expires_at) } },
            )
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn listed(&self) -> Result<Vec<ListedRoom>, StoreError> {
        let docs: Vec<RoomDoc> = self
            .rooms
            .find(doc! { "listed": true, "expires_at": { "$gt": Self::now() } })
            .await
            .map_err(failed)?
            .try_collect()
            .await
            .map_err(failed)?;
        Ok(docs
            .into_iter()
            .filter_map(|d| {
                Some(ListedRoom {
                    room_id: d.room_id?,
                    title: d.title,
                    expires_at: from_bson(d.expires_at),
                })
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
            .map_err(failed)
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
