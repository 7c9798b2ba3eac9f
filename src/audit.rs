//! The operator's audit trail: one JSON line per security event (a room created or deleted, a
//! join accepted or refused, a kick, a rate limit, a session replaced), off unless
//! `--audit-log` names a file or `-` (stdout).
//!
//! It shows who got in, never what was said: a line holds the time, the event, the room's keyed
//! hash (its ID only when the room is listed, which is public), a keyed hash of the member's name
//! per room (so that an operator can follow one person inside one room and nowhere else), the
//! client's address cut to its /24 or /48 (or a keyed hash of it), and a refusal's code. The
//! types below take those and nothing else, so a message, a room key or a proof has no way in.
//!
//! Lines are written by a thread of their own through a bounded queue: a slow disk never holds a
//! member's task, and a flood of events costs a counted drop (`ephemera_audit_dropped_total`),
//! not memory. SIGHUP reopens the file, for logrotate.

use std::{
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
};

use serde::Serialize;

use crate::{
    credentials::Pepper,
    domain::{MemberName, RoomId},
    protocol::ErrorCode,
};

/// How many lines may wait for the writer before new ones are dropped (and counted).
const QUEUE_LINES: usize = 8192;

/// How an address appears in the trail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AddressForm {
    /// Its network: the /24 of an IPv4 address, the /48 of an IPv6 one.
    #[default]
    Truncate,
    /// A keyed hash of the whole address: one client can be followed, its address not read.
    Hash,
}

/// What happened.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    RoomCreated,
    RoomDeleted,
    JoinAccepted,
    JoinRefused,
    /// A `DELETE` with a wrong admin password (or for a room that does not exist).
    DeleteRefused,
    Kick,
    Lock,
    Unlock,
    /// An admin made another member an admin.
    AdminMade,
    RateLimited,
    SessionReplaced,
}

/// Who deleted a room.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletedBy {
    /// `DELETE /api/rooms/{id}` with the admin password.
    Http,
    /// The admin's `delete_room` frame.
    Admin,
    /// The room vanished when its last member had left (`"lifetime": "empty"`).
    Emptied,
}

/// What a rate limit held back (a join refused for its rate is a `join_refused` line).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limited {
    Creates,
    Messages,
}

/// One line, as written.
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    event: Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by_member: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<DeletedBy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limited: Option<Limited>,
}

/// The room an event concerns: its keyed hash, and its ID if it is listed.
#[derive(Clone, Copy)]
pub struct RoomRef<'a> {
    pub hash: &'a str,
    pub listed_id: Option<&'a RoomId>,
}

/// One event to record; built with [`Record::new`] and the `with_…` setters.
pub struct Record<'a> {
    event: Event,
    room: Option<RoomRef<'a>>,
    member: Option<&'a MemberName>,
    by_member: Option<&'a MemberName>,
    address: Option<IpAddr>,
    code: Option<ErrorCode>,
    by: Option<DeletedBy>,
    limited: Option<Limited>,
}

impl<'a> Record<'a> {
    pub fn new(event: Event) -> Self {
        Self {
            event,
            room: None,
            member: None,
            by_member: None,
            address: None,
            code: None,
            by: None,
            limited: None,
        }
    }

    pub fn room(mut self, room: RoomRef<'a>) -> Self {
        self.room = Some(room);
        self
    }

    pub fn member(mut self, name: &'a MemberName) -> Self {
        self.member = Some(name);
        self
    }

    /// The member who did it (an admin who kicked), beside the one it was done to.
    pub fn by_member(mut self, name: &'a MemberName) -> Self {
        self.by_member = Some(name);
        self
    }

    pub fn address(mut self, ip: IpAddr) -> Self {
        self.address = Some(ip);
        self
    }

    pub fn code(mut self, code: ErrorCode) -> Self {
        self.code = Some(code);
        self
    }

    pub fn deleted_by(mut self, by: DeletedBy) -> Self {
        self.by = Some(by);
        self
    }

    pub fn limited(mut self, what: Limited) -> Self {
        self.limited = Some(what);
        self
    }
}

enum Job {
    Line(String),
    Reopen,
}

/// Where the trail goes.
#[derive(Debug, Clone)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    pub fn parse(value: &str) -> Self {
        if value == "-" {
            Self::Stdout
        } else {
            Self::File(PathBuf::from(value))
        }
    }
}

/// The audit trail; a no-op when off.
pub struct Audit {
    queue: Option<SyncSender<Job>>,
    pepper: Pepper,
    addresses: AddressForm,
    dropped: prometheus::IntCounter,
}

impl Audit {
    pub fn off(pepper: Pepper, dropped: prometheus::IntCounter) -> Self {
        Self {
            queue: None,
            pepper,
            addresses: AddressForm::default(),
            dropped,
        }
    }

    /// Opens the trail (failing now if the file cannot be opened: an operator who asked for an
    /// audit trail should not get a server without one) and starts its writer.
    pub fn open(
        target: &Target,
        addresses: AddressForm,
        pepper: Pepper,
        dropped: prometheus::IntCounter,
    ) -> std::io::Result<Self> {
        let sink = Sink::open(target)?;
        let (queue, jobs) = sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("ephemera-audit".into())
            .spawn(move || write_lines(sink, jobs))?;
        Ok(Self {
            queue: Some(queue),
            pepper,
            addresses,
            dropped,
        })
    }

    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Writes one line, or counts it dropped when the writer is that far behind.
    pub fn record(&self, record: Record<'_>) {
        let Some(queue) = &self.queue else {
            return;
        };
        let room_hash = record.room.map(|r| r.hash);
        let tag = |name: &MemberName| room_hash.map(|h| self.pepper.audit_member(h, name.key()));
        let line = Line {
            ts: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            event: record.event,
            room: room_hash,
            room_id: record.room.and_then(|r| r.listed_id).map(AsRef::as_ref),
            member: record.member.and_then(tag),
            by_member: record.by_member.and_then(tag),
            address: record.address.map(|ip| self.address(ip)),
            code: record.code.map(ErrorCode::as_str),
            by: record.by,
            limited: record.limited,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        match queue.try_send(Job::Line(text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Reopens the file (after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(queue) = &self.queue {
            let _ = queue.try_send(Job::Reopen);
        }
    }

    fn address(&self, ip: IpAddr) -> String {
        match self.addresses {
            AddressForm::Truncate => match ip {
                IpAddr::V4(v4) => {
                    let [a, b, c, _] = v4.octets();
                    format!("{a}.{b}.{c}.0/24")
                }
                IpAddr::V6(v6) => {
                    let s = v6.segments();
                    let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0);
                    format!("{net}/48")
                }
            },
            AddressForm::Hash => self.pepper.audit_address(ip),
        }
    }
}

/// The open file, or stdout.
enum Sink {
    Stdout,
    File(PathBuf, std::io::BufWriter<std::fs::File>),
}

impl Sink {
    fn open(target: &Target) -> std::io::Result<Self> {
        Ok(match target {
            Target::Stdout => Self::Stdout,
            Target::File(path) => Self::File(path.clone(), Self::append(path)?),
        })
    }

    fn append(path: &Path) -> std::io::Result<std::io::BufWriter<std::fs::File>> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        Ok(std::io::BufWriter::new(options.open(path)?))
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Self::Stdout => std::io::stdout().lock().write_all(line.as_bytes()),
            Self::File(_, file) => file.write_all(line.as_bytes()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Stdout => std::io::stdout().lock().flush(),
            Self::File(_, file) => file.flush(),
        }
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        if let Self::File(path, file) = self {
            file.flush()?;
            *file = Self::append(path)?;
        }
        Ok(())
    }
}

/// The writer: everything queued goes out, then one flush, so a line is on disk as soon as the
/// queue is empty and a burst costs one write.
fn write_lines(mut sink: Sink, jobs: Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        let mut next = Some(job);
        while let Some(job) = next.take() {
            let done = match job {
                Job::Line(line) => sink.write(&line),
                Job::Reopen => sink.reopen(),
            };
            if let Err(e) = done {
                log::warn!("audit log: {e}");
            }
            next = jobs.try_recv().ok();
        }
        if let Err(e) = sink.flush() {
            log::warn!("audit log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(form: AddressForm) -> Audit {
        let mut audit = Audit::off(
            Pepper::new(b"audit test pepper"),
            prometheus::IntCounter::new("d", "d").unwrap(),
        );
        audit.addresses = form;
        audit
    }

    #[test]
    fn an_address_is_cut_to_its_network_or_hashed() {
        let cut = audit(AddressForm::Truncate);
        assert_eq!(
            cut.address("203.0.113.77".parse().unwrap()),
            "203.0.113.0/24"
        );
        assert_eq!(
            cut.address("2001:db8:abcd:1234::1".parse().unwrap()),
            "2001:db8:abcd::/48"
        );
        let hashed = audit(AddressForm::Hash);
        let one = hashed.address("203.0.113.77".parse().unwrap());
        assert_eq!(one.len(), 16);
        assert_eq!(one, hashed.address("203.0.113.77".parse().unwrap()));
        assert_ne!(one, hashed.address("203.0.113.78".parse().unwrap()));
    }
}
