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
pub use store::{Lifetime, ListedRoom, RoomOptions, RoomRecord, RoomStore, StoreError};
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

    /// How a member's name appears in the cluster's Redis: keyed, per room, so that the claim
    /// on a name is unique without the name (or a hash anyone could compute) being there.
    pub fn name_tag(&self, room_hash: &str, name_key: &str) -> String {
        let mut domain = b"ephemera/cluster-name\0".to_vec();
        domain.extend_from_slice(room_hash.as_bytes());
        domain.push(0);
        hex(&self.mac(&domain, name_key.as_bytes()))
    }

    /// How a member appears in the audit trail: a keyed hash of its name's key per room, so
    /// that an operator can follow one person inside one room and not across rooms. 64 bits:
    /// enough to tell the members of a room apart.
    pub fn audit_member(&self, room_hash: &str, name_key: &str) -> String {
        let mut domain = b"ephemera/audit-member\0".to_vec();
        domain.extend_from_slice(room_hash.as_bytes());
        domain.push(0);
        hex(&self.mac(&domain, name_key.as_bytes())[..8])
    }

    /// How a client's address appears in the audit trail under `--audit-address hash`.
    pub fn audit_address(&self, ip: std::net::IpAddr) -> String {
        let bytes = match ip {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        hex(&self.mac(b"ephemera/audit-address\0", &bytes)[..8])
    }

    /// How a member's `session` token appears in its claim on its name: a keyed digest, so that
    /// a member reconnecting through another node can show it holds the token without the
    /// token being in Redis.
    pub fn session_tag(&self, token: &str) -> String {
        hex(&self.mac(b"ephemera/cluster-session\0", token.as_bytes()))
    }

    /// A keyed digest of a secret that argon2 has already accepted, kept in memory so the next
    /// member presenting the same proof costs an HMAC, not an argon2 run. It is bound to the
    /// stored hash it was checked against (whose salt is fresh at every creation), so a check of
    /// an old key that finishes after its room was deleted and created anew proves nothing about
    /// the new room.
    pub fn verifier(&self, room_hash: &str, phc: &str, secret: &[u8]) -> [u8; 32] {
        let mut domain = b"ephemera/verifier\0".to_vec();
        domain.extend_from_slice(room_hash.as_bytes());
        domain.push(0);
        domain.extend_from_slice(phc.as_bytes());
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

    /// A check of a room's old key that began before the room was deleted and created anew, and
    /// ends after, must not let that key into the new room: its digest is bound to the old
    /// record's hash.
    #[tokio::test]
    async fn a_key_checked_against_an_old_record_proves_nothing_for_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let hasher = Hasher::new(1024, 1, 1, 1, 8).unwrap();
        let metrics = crate::telemetry::Metrics::new();
        let ttl = std::time::Duration::from_secs(3600);
        let credentials = Credentials::new(store, hasher, Pepper::new(b"p"), metrics, ttl);
        let id = RoomId::parse("team-42").unwrap();
        let key =
            |byte| crate::domain::Auth::parse(&crate::domain::encode_b64url(&[byte; 32])).unwrap();
        let room = |auth| NewRoom {
            room_id: id.clone(),
            auth,
            admin_password: crate::domain::AdminPassword::parse("admin password").unwrap(),
            listed: false,
            title: None,
            options: RoomOptions::default(),
            lasts: None,
        };
        let old = credentials.create(room(key(1))).await.unwrap();
        credentials.delete(&id).await.unwrap();
        let new = credentials.create(room(key(2))).await.unwrap();
        // The slow check of the old key ends now, against the record it read.
        assert!(credentials
            .verify(&old, Secret::Auth, key(1).as_bytes())
            .await
            .unwrap());
        assert!(!credentials.knows(&new, Secret::Auth, key(1).as_bytes()));
        assert!(!credentials
            .verify(&new, Secret::Auth, key(1).as_bytes())
            .await
            .unwrap());
        assert!(credentials
            .verify(&new, Secret::Auth, key(2).as_bytes())
            .await
            .unwrap());
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
const VERIFIER_CAPACITY: u64 = 100_000;

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

/// The stored hash a secret is checked against.
fn phc(record: &RoomRecord, which: Secret) -> &str {
    match which {
        Secret::Auth => &record.auth_hash,
        Secret::Admin => &record.admin_hash,
    }
}

/// What a creator asks for, already validated.
pub struct NewRoom {
    pub room_id: RoomId,
    pub auth: crate::domain::Auth,
    pub admin_password: crate::domain::AdminPassword,
    pub listed: bool,
    pub title: Option<crate::domain::Title>,
    pub options: RoomOptions,
    /// For a room of [`Lifetime::Fixed`]: how long it lasts from now.
    pub lasts: Option<std::time::Duration>,
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
            expires_at: now
                + new
                    .lasts
                    .filter(|_| new.options.lifetime == Lifetime::Fixed)
                    .unwrap_or(self.ttl),
            options: new.options,
        };
        match self.timed("insert", self.store.insert(&record)).await {
            Ok(()) => {
                // The creator just proved both secrets: the room's first joins need no argon2.
                self.verifiers.forget(&record.id_hash);
                self.remember(&record, Secret::Auth, new.auth.as_bytes());
                self.remember(&record, Secret::Admin, new.admin_password.as_bytes());
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

    /// Another node of the cluster deleted the room `id_hash`: what this node had accepted for
    /// it proves nothing any more.
    pub fn forget(&self, id_hash: &str) {
        self.verifiers.forget(id_hash);
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

    fn remember(&self, record: &RoomRecord, which: Secret, secret: &[u8]) {
        let id = &record.id_hash;
        let digest = self.pepper.verifier(id, phc(record, which), secret);
        self.verifiers.remember(id, which, digest);
    }

    /// Whether argon2 has accepted `secret` for this very record before: an HMAC, no argon2.
    pub fn knows(&self, record: &RoomRecord, which: Secret, secret: &[u8]) -> bool {
        let id = &record.id_hash;
        let digest = self.pepper.verifier(id, phc(record, which), secret);
        self.verifiers.knows(id, which, &digest)
    }

    /// The room's turn for slow checks (a store lookup, argon2): one at a time per room, so a
    /// crowd arriving at a cold room waits for the first check and then finds its digest,
    /// instead of each member paying for its own.
    pub async fn turn(&self, room_id: &RoomId) -> Turn {
        let id_hash = self.pepper.room_hash(room_id);
        let gate = self.verifiers.gate(&id_hash);
        let guard = gate.clone().lock_owned().await;
        Turn {
            verifiers: self.verifiers.clone(),
            id_hash,
            gate: Some((gate, guard)),
        }
    }

    /// Whether `secret` matches the record, by argon2; an accepted secret is remembered (see
    /// [`Self::knows`]). `Busy` when the hashing queue is full: the caller answers
    /// `rate_limited` instead of waiting.
    pub async fn verify(
        &self,
        record: &RoomRecord,
        which: Secret,
        secret: &[u8],
    ) -> Result<bool, HashError> {
        self.metrics
            .argon2_runs
            .with_label_values(&["verify"])
            .inc();
        match self
            .hasher
            .verify(secret.to_vec(), phc(record, which).to_owned())
            .await
        {
            Ok(true) => {
                self.remember(record, which, secret);
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(HashError::Busy) => Err(HashError::Busy),
            Err(e) => {
                // An internal failure counts as a mismatch, so it can never let anyone in.
                log::error!("argon2 verification failed: {e}");
                Ok(false)
            }
        }
    }
}

/// A room's turn for slow checks; the next waiter goes when it is dropped.
pub struct Turn {
    verifiers: Arc<Verifiers>,
    id_hash: String,
    gate: Option<(
        Arc<tokio::sync::Mutex<()>>,
        tokio::sync::OwnedMutexGuard<()>,
    )>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some((gate, guard)) = self.gate.take() {
            drop(guard);
            self.verifiers.release(&self.id_hash, gate);
        }
    }
}

#[cfg(test)]
impl Turn {
    /// A turn that holds nothing, for tests of what a proof is used for.
    pub fn unheld() -> Self {
        Self {
            verifiers: Arc::new(Verifiers::new(1)),
            id_hash: String::new(),
            gate: None,
        }
    }
}
