//! Files in end-to-end encrypted chunks: what a chunk's plaintext holds, and the assembly of a
//! file from its chunks, bounded against peers that announce absurd sizes or never finish.

use std::{collections::HashMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::events::Event;

/// Raw bytes of one file chunk, as the contract sizes them.
pub const FILE_CHUNK: usize = 128 * 1024;
/// The largest file a client assembles, against a peer announcing absurd sizes.
const MAX_FILE_BYTES: u64 = 1 << 30;
/// Files still arriving that a client holds at most, from all members and from one.
const MAX_PARTIAL_FILES: usize = 16;
const MAX_PARTIAL_FILES_PER_SENDER: usize = 4;
/// Bytes of files still arriving that a client holds at most.
const MAX_PARTIAL_BYTES: u64 = 1 << 30;
/// A file none of whose chunks came for this long is given up, so that files left unfinished
/// do not keep the places of the next ones.
const PARTIAL_FILE_IDLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunk {
    pub id: String,
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub index: u32,
    pub total: u32,
    pub data: String,
}

struct Partial {
    name: String,
    mime: String,
    size: u64,
    parts: Vec<Option<Vec<u8>>>,
    got: u32,
    /// Bytes received so far.
    bytes: u64,
    /// When its last chunk came.
    last: std::time::Instant,
}

/// Files still arriving, by sender and file ID.
#[derive(Default)]
pub struct Assembly {
    files: HashMap<(String, String), Partial>,
}

impl Assembly {
    /// Adds a chunk to its file; the whole file once every chunk is there.
    pub fn add(
        &mut self,
        room: String,
        seq: u64,
        ts: i64,
        from: String,
        to: Option<String>,
        chunk: FileChunk,
    ) -> Option<Event> {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&chunk.data)
            .ok()?;
        if chunk.total == 0
            || chunk.index >= chunk.total
            || chunk.size > MAX_FILE_BYTES
            || u64::from(chunk.total) > MAX_FILE_BYTES / FILE_CHUNK as u64 + 1
        {
            return None;
        }
        // Matched by sender and id, so no other member can add to the file; the first chunk sets its
        // name, type, size and count, and memory for files still arriving is bounded.
        let key = (from.clone(), chunk.id.clone());
        if !self.files.contains_key(&key) {
            self.files
                .retain(|_, partial| partial.last.elapsed() < PARTIAL_FILE_IDLE);
            let from_sender = self.files.keys().filter(|(f, _)| *f == from).count();
            if from_sender >= MAX_PARTIAL_FILES_PER_SENDER || self.files.len() >= MAX_PARTIAL_FILES
            {
                return None;
            }
            self.files.insert(
                key.clone(),
                Partial {
                    name: chunk.name.clone(),
                    mime: chunk.mime.clone(),
                    size: chunk.size,
                    parts: vec![None; chunk.total as usize],
                    got: 0,
                    bytes: 0,
                    last: std::time::Instant::now(),
                },
            );
        }
        let held: u64 = self.files.values().map(|p| p.bytes).sum();
        let partial = self.files.get_mut(&key)?;
        let len = data.len() as u64;
        if partial.parts.len() != chunk.total as usize || partial.size != chunk.size {
            return None;
        }
        if data.len() > FILE_CHUNK
            || partial.bytes + len > partial.size
            || held + len > MAX_PARTIAL_BYTES
        {
            self.files.remove(&key);
            return None;
        }
        let slot = partial.parts.get_mut(chunk.index as usize)?;
        if slot.is_none() {
            *slot = Some(data);
            partial.got += 1;
            partial.bytes += len;
            partial.last = std::time::Instant::now();
        }
        if (partial.got as usize) < partial.parts.len() {
            return None;
        }
        let done = self.files.remove(&key)?;
        if done.bytes != done.size {
            return None;
        }
        let data = done.parts.into_iter().flatten().flatten().collect();
        Some(Event::File {
            room,
            seq,
            ts,
            from,
            to,
            name: done.name,
            mime: done.mime,
            data,
        })
    }
}
