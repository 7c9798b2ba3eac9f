use std::{path::Path, sync::Arc};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use super::store::{ListedRoom, RoomRecord, RoomStore, StoreError};

/// ID hash → the record as JSON.
const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");

/// The default store: one redb file under the data directory, so the server runs with no other
/// service and rooms survive a restart. redb is pure Rust, transactional and crash-safe.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// Calls on the blocking pool at once. Unbounded, a crowd arriving at rooms not yet live
    /// (every joiner looks its room up until the first one is in) started a thread per lookup:
    /// 80 or more threads in a ramp, and 11 MB of their memory held until they exited.
    permits: Arc<Semaphore>,
}

/// See [`EmbeddedStore::permits`]; redb reads run side by side, writes take turns inside redb.
const CONCURRENT_CALLS: usize = 8;

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("rooms.redb");
        private_file(data_dir, &path).map_err(failed)?;
        let db = Database::create(path).map_err(failed)?;
        let txn = db.begin_write().map_err(failed)?;
        txn.open_table(ROOMS).map_err(failed)?;
        txn.commit().map_err(failed)?;
        Ok(Self {
            db: Arc::new(db),
            permits: Arc::new(Semaphore::new(CONCURRENT_CALLS)),
        })
    }

    /// redb does file I/O and may fsync: run it on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let _permit = self.permits.acquire().await.map_err(failed)?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || job(&db))
            .await
            .map_err(failed)?
    }
}

/// Makes the data directory (0700 when it is new) and the store file, readable by the server's
/// user only: the file holds the room-ID hashes, and the pepper beside it is 0600 too. An
/// existing file made by an earlier version is narrowed to 0600.
#[cfg(unix)]
fn private_file(dir: &Path, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn private_file(dir: &Path, _path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

fn decode(bytes: &[u8]) -> Result<RoomRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(failed)
}

fn live(record: RoomRecord) -> Option<RoomRecord> {
    (record.expires_at > OffsetDateTime::now_utc()).then_some(record)
}

#[async_trait::async_trait]
impl RoomStore for EmbeddedStore {
    async fn insert(&self, room: &RoomRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(room).map_err(failed)?;
        let key = room.id_hash.clone();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(failed)?;
            {
                let mut table = txn.open_table(ROOMS).map_err(failed)?;
                let existing = table
                    .get(key.as_str())
                    .map_err(failed)?
                    .map(|v| decode(v.value()))
                    .transpose()?;
                if existing.and_then(live).is_some() {
                    return Err(StoreError::Exists);
                }
                table
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(failed)?;
            }
            txn.commit().map_err(failed)
        })
        .await
    }

    async fn get(&self, id_hash: &str) -> Result<Option<RoomRecord>, StoreError> {
        let key = id_hash.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(failed)?;
            let table = txn.open_table(ROOMS).map_err(failed)?;
            let record = table
                .get(key.as_str())
                .map_err(failed)?
                .map(|v| decode(v.value()))
                .transpose()?;
            Ok(record.and_then(live))
        })
        .await
    }

    async fn delete(&self, id_hash: &str) -> Result<bool, StoreError> {
        let key = id_hash.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(failed)?;
            let removed = {
                let mut table = txn.open_table(ROOMS).map_err(failed)?;
                let old = table.remove(key.as_str()).map_err(failed)?;
                old.map(|v| decode(v.value())).transpose()?
            };
            txn.commit().map_err(failed)?;
            Ok(removed.and_then(live).is_some())
        })
        .await
    }

    async fn extend(&self, id_hash: &str, expires_at: OffsetDateTime) -> Result<(), StoreError> {
        let key = id_hash.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(failed)?;
            {
                let mut table = txn.open_table(ROOMS).map_err(failed)?;
                let current = table
                    .get(key.as_str())
                    .map_err(failed)?
                    .map(|v| decode(v.value()))
                    .transpose()?;
                if let Some(mut record) = current.and_then(live) {
                    record.expires_at = record.expires_at.max(expires_at);
                    let bytes = serde_json::to_vec(&record).map_err(failed)?;
                    table
                        .insert(key.as_str(), bytes.as_slice())
                        .map_err(failed)?;
                }
            }
            txn.commit().map_err(failed)
        })
        .await
    }

    async fn listed(&self) -> Result<Vec<ListedRoom>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(failed)?;
            let table = txn.open_table(ROOMS).map_err(failed)?;
            let mut rooms = Vec::new();
            for entry in table.iter().map_err(failed)? {
                let (_, value) = entry.map_err(failed)?;
                if let Some(record) = live(decode(value.value())?) {
                    if let (true, Some(room_id)) = (record.listed, record.room_id) {
                        rooms.push(ListedRoom {
                            room_id,
                            title: record.title,
                            expires_at: record.expires_at,
                        });
                    }
                }
            }
            Ok(rooms)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| db.begin_read().map(drop).map_err(failed))
            .await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_write().map_err(failed)?;
            let removed = {
                let mut table = txn.open_table(ROOMS).map_err(failed)?;
                let now = OffsetDateTime::now_utc();
                let before = table.len().map_err(failed)?;
                table
                    .retain(|_, value| decode(value).map_or(true, |r| r.expires_at > now))
                    .map_err(failed)?;
                before - table.len().map_err(failed)?
            };
            txn.commit().map_err(failed)?;
            Ok(removed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_store_file_is_private_to_the_server() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        drop(EmbeddedStore::open(&data).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.join("rooms.redb")), 0o600);
        assert_eq!(mode(&data), 0o700);
        // A file an earlier version made world-readable is narrowed at the next start.
        let file = data.join("rooms.redb");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(EmbeddedStore::open(&data).unwrap());
        assert_eq!(mode(&file), 0o600);
    }

    /// A crowd of calls shares a few blocking threads instead of starting one each.
    #[tokio::test]
    async fn calls_on_the_blocking_pool_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let calls = (0..64).map(|_| {
            let (store, running, most) = (store.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                store
                    .blocking(move |_| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.unwrap().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(most <= CONCURRENT_CALLS, "{most} at once");
    }
}
