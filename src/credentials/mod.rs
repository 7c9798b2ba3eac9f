//! Room credentials: the keyed hash that stands for a room ID on disk, argon2id hashing on a
//! bounded blocking pool, and the stores that keep the hashes.

mod embedded;
mod hashing;
mod mongo;
mod store;
mod verifiers;

use std::{path::Path, sync::Arc};

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use embedded::EmbeddedStore;
pub use hashing::{HashError, Hasher};
pub use mongo::MongoStore;
pub use store::{ListedRoom, RoomRecord, RoomStore, StoreError};
pub use verifiers::{Secret, Verifiers};

use crate::domain::RoomId;

/// The HMAC-SHA256 key under which room IDs (and accepted proofs, in memory) are hashed.
#[derive(Clone)]
pub struct Pepper(Arc<[u8]>);

impl Pepper {
    pub fn new(secret: &[u8]) -> Self {
        Self(secret.into())
    }

    /// The configured pepper, or the one kept in `data_dir/pepper`, made on first start.
    pub fn load_or_create(configured: Option<&str>, data_dir: &Path) -> std::io::Result<Self> {
        if let Some(secret) = configured.filter(|s| !s.is_empty()) {
            return Ok(Self::new(secret.as_bytes()));
        }
        let path = data_dir.join("pepper");
        match std::fs::read(&path) {
            Ok(secret) if !secret.is_empty() => return Ok(Self::new(&secret)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(data_dir)?;
        let secret = crate::domain::encode_b64url(&rand::random::<[u8; 32]>());
        write_private(&path, secret.as_bytes())?;
        log::warn!(
            "generated a room-ID pepper in {}; set EPHEMERA_PEPPER to keep it apart from the data",
            path.display()
        );
        Ok(Self::new(secret.as_bytes()))
    }

    fn mac(&self, domain: &[u8], value: &[u8]) -> [u8; 32] {
        // unwrap: HMAC accepts keys of any length.
        #[allow(clippy::unwrap_used)]
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).unwrap();
        mac.update(domain);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// The only form in which an unlisted room's ID reaches the store: lower-case hex.
    pub fn room_hash(&self, room_id: &RoomId) -> String {
        hex(&self.mac(b"ephemera/room-id\0", room_id.as_ref().as_bytes()))
    }

    /// A keyed digest of a secret that argon2 has already accepted, kept in memory while its room
    /// is live so the next member presenting the same proof costs an HMAC, not an argon2 run.
    pub fn verifier(&self, room_hash: &str, secret: &[u8]) -> [u8; 32] {
        let mut domain = b"ephemera/verifier\0".to_vec();
        domain.extend_from_slice(room_hash.as_bytes());
        domain.push(0);
        self.mac(&domain, secret)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_hash_depends_on_the_pepper_and_hides_the_id() {
        let id = RoomId::parse("team-42").unwrap();
        let a = Pepper::new(b"one").room_hash(&id);
        let b = Pepper::new(b"two").room_hash(&id);
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(!a.contains("team"));
    }

    #[test]
    fn the_generated_pepper_is_kept_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        let id = RoomId::parse("team-42").unwrap();
        let first = Pepper::load_or_create(None, dir.path())
            .unwrap()
            .room_hash(&id);
        let again = Pepper::load_or_create(None, dir.path())
            .unwrap()
            .room_hash(&id);
        assert_eq!(first, again);
    }
}

/// Everything that touches a room's credentials: the store (timed), the hasher and the pepper.
#[derive(Clone)]
pub struct Credentials {
    store: Arc<dyn RoomStore>,
    hasher: Hasher,
    pepper: Pepper,
    metrics: crate::telemetry::Metrics,
    ttl: std::time::Duration,
    verifiers: Arc<Verifiers>,
}

/// How many rooms' accepted-proof digests are kept in memory.
const VERIFIER_CAPACITY: usize = 100_000;

/// Why a room could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("room exists")]
    Exists,
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Hash(#[from] HashError),
}

/// What a creator asks for, already validated.
pub struct NewRoom {
    pub room_id: RoomId,
    pub auth: crate::domain::Auth,
    pub admin_password: crate::domain::AdminPassword,
    pub listed: bool,
    pub title: Option<crate::domain::Title>,
}

impl Credentials {
    pub fn new(
        store: Arc<dyn RoomStore>,
        hasher: Hasher,
        pepper: Pepper,
        metrics: crate::telemetry::Metrics,
        ttl: std::time::Duration,
    ) -> Self {
        Self {
            store,
            hasher,
            pepper,
            metrics,
            ttl,
            verifiers: Arc::new(Verifiers::new(VERIFIER_CAPACITY)),
        }
    }

    pub fn pepper(&self) -> &Pepper {
        &self.pepper
    }

    pub fn store(&self) -> &Arc<dyn RoomStore> {
        &self.store
    }

    async fn timed<T>(&self, op: &str, fut: impl std::future::Future<Output = T>) -> T {
        let timer = self
            .metrics
            .store_seconds
            .with_label_values(&[op])
            .start_timer();
        let out = fut.await;
        timer.observe_duration();
        out
    }

    fn expiry_from_now(&self) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + self.ttl
    }

    /// Hashes both secrets (in parallel, on the blocking pool) and stores the room.
    pub async fn create(&self, new: NewRoom) -> Result<RoomRecord, CreateError> {
        self.metrics
            .argon2_runs
            .with_label_values(&["hash"])
            .inc_by(2);
        let (auth_hash, admin_hash) = tokio::try_join!(
            self.hasher.hash(new.auth.as_bytes().to_vec()),
            self.hasher.hash(new.admin_password.as_bytes().to_vec()),
        )?;
        let now = time::OffsetDateTime::now_utc();
        let now = now
            .replace_nanosecond(now.millisecond() as u32 * 1_000_000)
            .unwrap_or(now);
        let record = RoomRecord {
            id_hash: self.pepper.room_hash(&new.room_id),
            auth_hash,
            admin_hash,
            listed: new.listed,
            room_id: new.listed.then(|| new.room_id.as_ref().to_owned()),
            title: new
                .title
                .filter(|_| new.listed)
                .map(|t| t.as_ref().to_owned()),
            created_at: now,
            expires_at: now + self.ttl,
        };
        match self.timed("insert", self.store.insert(&record)).await {
            Ok(()) => {
                // The creator just proved both secrets: the room's first joins need no argon2.
                self.verifiers.forget(&record.id_hash);
                let id = &record.id_hash;
                let auth = self.pepper.verifier(id, new.auth.as_bytes());
                let admin = self.pepper.verifier(id, new.admin_password.as_bytes());
                self.verifiers.remember(id, Secret::Auth, auth);
                self.verifiers.remember(id, Secret::Admin, admin);
                Ok(record)
            }
            Err(StoreError::Exists) => Err(CreateError::Exists),
            Err(StoreError::Unavailable(e)) => Err(CreateError::Unavailable(e)),
        }
    }

    pub async fn fetch(&self, room_id: &RoomId) -> Result<Option<RoomRecord>, StoreError> {
        self.timed("get", self.store.get(&self.pepper.room_hash(room_id)))
            .await
    }

    pub async fn delete(&self, room_id: &RoomId) -> Result<bool, StoreError> {
        let id_hash = self.pepper.room_hash(room_id);
        let deleted = self.timed("delete", self.store.delete(&id_hash)).await?;
        self.verifiers.forget(&id_hash);
        Ok(deleted)
    }

    pub async fn listed(&self) -> Result<Vec<ListedRoom>, StoreError> {
        self.timed("listed", self.store.listed()).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.store.ping()).await
    }

    /// Pushes a room's expiry forward in the background; a failure only delays it.
    pub fn extend(&self, id_hash: &str) {
        let this = self.clone();
        let id_hash = id_hash.to_owned();
        tokio::spawn(async move {
            let until = this.expiry_from_now();
            if let Err(e) = this
                .timed("extend", this.store.extend(&id_hash, until))
                .await
            {
                log::warn!(
                    "could not extend room {}: {e}",
                    crate::telemetry::room_tag(&id_hash)
                );
            }
        });
    }

    /// Whether `secret` is the room's auth proof or admin password: an HMAC when argon2 has
    /// accepted it before, otherwise argon2, one run per room at a time.
    pub async fn prove(&self, record: &RoomRecord, which: Secret, secret: &[u8]) -> bool {
        let id = &record.id_hash;
        let digest = self.pepper.verifier(id, secret);
        if self.verifiers.knows(id, which, &digest) {
            return true;
        }
        let gate = self.verifiers.gate(id);
        let proven = {
            let _turn = gate.lock().await;
            if self.verifiers.knows(id, which, &digest) {
                true
            } else {
                let phc = match which {
                    Secret::Auth => &record.auth_hash,
                    Secret::Admin => &record.admin_hash,
                };
                let ok = self.verify(secret, phc).await;
                if ok {
                    self.verifiers.remember(id, which, digest);
                }
                ok
            }
        };
        self.verifiers.release(id, gate);
        proven
    }

    /// Checks a secret against a stored argon2id hash. An internal failure counts as a mismatch
    /// (and is logged), so it can never let anyone in.
    async fn verify(&self, secret: &[u8], phc: &str) -> bool {
        self.metrics
            .argon2_runs
            .with_label_values(&["verify"])
            .inc();
        match self.hasher.verify(secret.to_vec(), phc.to_owned()).await {
            Ok(ok) => ok,
            Err(e) => {
                log::error!("argon2 verification failed: {e}");
                false
            }
        }
    }
}
