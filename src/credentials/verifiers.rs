use std::sync::Arc;

use dashmap::DashMap;
use moka::sync::Cache;
use subtle::ConstantTimeEq;

/// The two secrets a room has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    Auth,
    Admin,
}

/// Keyed digests (see [`super::Pepper::verifier`]) of secrets argon2 has accepted, by room ID
/// hash, in memory only. Every member of a room presents the same proof, so once argon2 has said
/// yes, the next member costs an HMAC instead of an argon2 run; a wrong proof still pays argon2.
/// Bounded per room: past the capacity, moka evicts the rooms least likely to be joined again
/// (the cost of an evicted room is one argon2 run at its next join).
pub struct Verifiers {
    digests: Cache<String, [Option<[u8; 32]>; 2]>,
    /// One verification per room at a time: a crowd arriving at a cold room waits for the first
    /// argon2 run and then finds its digest, instead of each member paying for its own. Held
    /// for one check (a store read, argon2) or, with a delete, for the store's delete; an entry
    /// lives while someone holds or waits for it.
    gates: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Verifiers {
    pub fn new(capacity: u64) -> Self {
        Self {
            digests: Cache::new(capacity),
            gates: DashMap::new(),
        }
    }

    pub fn knows(&self, id_hash: &str, which: Secret, digest: &[u8; 32]) -> bool {
        self.digests.get(id_hash).is_some_and(|slots| {
            slots[which as usize].is_some_and(|known| bool::from(known.ct_eq(digest)))
        })
    }

    pub fn remember(&self, id_hash: &str, which: Secret, digest: [u8; 32]) {
        self.digests.entry_by_ref(id_hash).and_upsert_with(|known| {
            let mut slots = known.map(|e| e.into_value()).unwrap_or_default();
            slots[which as usize] = Some(digest);
            slots
        });
    }

    pub fn forget(&self, id_hash: &str) {
        self.digests.invalidate(id_hash);
    }

    /// The gate of a room, held while its secrets are checked the slow way.
    pub fn gate(&self, id_hash: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.gates.entry(id_hash.to_owned()).or_default().clone()
    }

    /// Drops a room's gate once nobody else holds it.
    pub fn release(&self, id_hash: &str, gate: Arc<tokio::sync::Mutex<()>>) {
        drop(gate);
        self.gates
            .remove_if(id_hash, |_, g| Arc::strong_count(g) == 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_room_and_secret_and_stays_bounded() {
        let v = Verifiers::new(2);
        v.remember("a", Secret::Auth, [1; 32]);
        assert!(v.knows("a", Secret::Auth, &[1; 32]));
        assert!(!v.knows("a", Secret::Admin, &[1; 32]));
        assert!(!v.knows("a", Secret::Auth, &[2; 32]));
        v.remember("a", Secret::Admin, [5; 32]);
        assert!(v.knows("a", Secret::Auth, &[1; 32]) && v.knows("a", Secret::Admin, &[5; 32]));
        for room in 0..100 {
            v.remember(&format!("r{room}"), Secret::Auth, [3; 32]);
        }
        v.remember("c", Secret::Auth, [4; 32]);
        v.digests.run_pending_tasks();
        assert!(v.digests.entry_count() <= 2, "{}", v.digests.entry_count());
        v.forget("c");
        assert!(!v.knows("c", Secret::Auth, &[4; 32]));
    }

    #[test]
    fn gates_are_dropped_when_unused() {
        let v = Verifiers::new(10);
        let gate = v.gate("a");
        let again = v.gate("a");
        assert!(Arc::ptr_eq(&gate, &again));
        v.release("a", again);
        assert_eq!(v.gates.len(), 1);
        v.release("a", gate);
        assert_eq!(v.gates.len(), 0);
    }
}
