//! The lobby: the rooms their creators chose to list, kept in memory, so that `GET /api/rooms`
//! reads neither the store nor any unlisted room. It is filled from the store once at start-up
//! and kept by the creates, deletes and joins of this server.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dashmap::DashMap;
use time::OffsetDateTime;

use crate::{credentials::ListedRoom, domain::RoomId, hub::Hub};

/// How long a sorted lobby is reused: sorting reads every listed room's member count, and a
/// crowd asking at once should pay for it once. Counts shown are at most this old.
const SNAPSHOT_FOR: Duration = Duration::from_secs(1);

/// A listed room as the lobby holds it.
#[derive(Debug, Clone)]
struct Listing {
    title: Option<String>,
    expires_at: OffsetDateTime,
}

/// A listed room as the lobby shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub room_id: String,
    pub title: Option<String>,
    pub members: usize,
}

/// One page of the lobby, most members first.
pub struct Page {
    pub rooms: Vec<Entry>,
    pub total: usize,
    /// The offset of the next page, if there is one.
    pub next: Option<usize>,
}

#[derive(Default)]
pub struct Lobby {
    /// Every listed room, by ID (a shard lock for one insert, removal or read). Bounded by the
    /// store's listed rooms: rooms are created through the per-address creation allowance.
    rooms: DashMap<RoomId, Listing>,
    /// Until the store has been read once, the lobby shows only the listed rooms that are live.
    loaded: std::sync::atomic::AtomicBool,
    /// The sorted page source, rebuilt at most once a second; locked only to swap or clone the
    /// `Arc`, never while sorting.
    snapshot: Mutex<Option<(Instant, Arc<Vec<Entry>>)>>,
}

impl Lobby {
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills the lobby from the store's listed rooms.
    pub fn load(&self, listed: Vec<ListedRoom>) {
        for room in listed {
            if let Ok(id) = RoomId::parse(&room.room_id) {
                self.rooms.insert(
                    id,
                    Listing {
                        title: room.title,
                        expires_at: room.expires_at,
                    },
                );
            }
        }
        self.loaded
            .store(true, std::sync::atomic::Ordering::Release);
        self.changed();
    }

    pub fn add(&self, id: RoomId, title: Option<String>, expires_at: OffsetDateTime) {
        self.rooms.insert(id, Listing { title, expires_at });
        self.changed();
    }

    /// Whether a room is listed (its ID is public).
    pub fn contains(&self, id: &RoomId) -> bool {
        self.rooms.contains_key(id)
    }

    /// Takes a room off the list; whether it was on it.
    pub fn remove(&self, id: &RoomId) -> bool {
        let listed = self.rooms.remove(id).is_some();
        if listed {
            self.changed();
        }
        listed
    }

    /// A listed room's expiry moved forward after a join.
    pub fn extend(&self, id: &RoomId, expires_at: OffsetDateTime) {
        if let Some(mut listing) = self.rooms.get_mut(id) {
            listing.expires_at = listing.expires_at.max(expires_at);
        }
    }

    /// Forgets expired rooms.
    pub fn prune(&self) {
        let now = OffsetDateTime::now_utc();
        self.rooms.retain(|_, listing| listing.expires_at > now);
    }

    fn changed(&self) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// `limit` rooms from `offset`, most members first, ties by room ID.
    pub fn page(&self, hub: &Hub, offset: usize, limit: usize) -> Page {
        let all = self.sorted(hub);
        let rooms: Vec<Entry> = all.iter().skip(offset).take(limit).cloned().collect();
        let end = offset.saturating_add(rooms.len());
        Page {
            total: all.len(),
            next: (end < all.len()).then_some(end),
            rooms,
        }
    }

    fn sorted(&self, hub: &Hub) -> Arc<Vec<Entry>> {
        let mut snapshot = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, entries)) = snapshot.as_ref() {
            if at.elapsed() < SNAPSHOT_FOR {
                return entries.clone();
            }
        }
        let mut entries: Vec<Entry> = if self.loaded.load(std::sync::atomic::Ordering::Acquire) {
            let now = OffsetDateTime::now_utc();
            self.rooms
                .iter()
                .filter(|r| r.expires_at > now)
                .map(|r| Entry {
                    room_id: r.key().as_ref().to_owned(),
                    title: r.title.clone(),
                    members: hub.member_count(r.key()),
                })
                .collect()
        } else {
            hub.listed()
                .into_iter()
                .map(|(room, members)| Entry {
                    room_id: room.id.as_ref().to_owned(),
                    title: room.record.title.clone(),
                    members,
                })
                .collect()
        };
        entries.sort_by(|a, b| {
            b.members
                .cmp(&a.members)
                .then_with(|| a.room_id.cmp(&b.room_id))
        });
        let entries = Arc::new(entries);
        *snapshot = Some((Instant::now(), entries.clone()));
        entries
    }
}
