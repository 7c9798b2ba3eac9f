//! Typed settings from flags and environment variables. Every default runs on a fresh machine
//! with no other service and is a limit a public deployment can live with.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use ipnet::IpNet;

use crate::address::ProxyHeader;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "ephemera",
    version,
    about = "Ephemeral, end-to-end encrypted room chat server"
)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "EPHEMERA_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Directory of the embedded store and of the generated pepper file.
    #[arg(long, env = "EPHEMERA_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// MongoDB connection string; when set, room credentials live in MongoDB instead of the
    /// embedded store.
    #[arg(long, env = "MONGODB_URI", hide_env_values = true)]
    pub mongodb_uri: Option<String>,

    /// Redis (or Valkey) URL of the cluster: nodes given the same one share their rooms, through
    /// pub/sub only. Needs `MONGODB_URI` (the embedded store is one node's) and the same
    /// `EPHEMERA_PEPPER` on every node. Unset: one node, no Redis.
    #[arg(long, env = "EPHEMERA_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// The audit trail: one JSON line per security event (rooms created and deleted, joins
    /// accepted and refused, kicks, rate limits, sessions replaced), never anything said, to
    /// this file (reopened on SIGHUP) or `-` for stdout. Unset: no trail.
    #[arg(long, env = "EPHEMERA_AUDIT_LOG")]
    pub audit_log: Option<String>,

    /// How the audit trail shows a client's address: `truncate` (its /24 or /48) or `hash` (a
    /// keyed hash of the whole address).
    #[arg(long, env = "EPHEMERA_AUDIT_ADDRESS", value_enum, default_value_t = crate::audit::AddressForm::Truncate)]
    pub audit_address: crate::audit::AddressForm,

    /// MongoDB database name.
    #[arg(long, env = "EPHEMERA_MONGODB_DB", default_value = "ephemera")]
    pub mongodb_db: String,

    /// Secret key of the room-ID HMAC. When unset, a random one is generated once and kept in
    /// `DATA_DIR/pepper`; set it explicitly when the data directory is not private to the server.
    #[arg(long, env = "EPHEMERA_PEPPER", hide_env_values = true)]
    pub pepper: Option<String>,

    /// Directory of the web client.
    #[arg(long, env = "EPHEMERA_STATIC_DIR", default_value = "static")]
    pub static_dir: PathBuf,

    /// The public URL behind a reverse proxy (e.g. https://chat.example.org); its origin is
    /// accepted on WebSocket upgrades.
    #[arg(long, env = "EPHEMERA_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Extra origins allowed to open WebSockets, comma-separated.
    #[arg(long, env = "EPHEMERA_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Reverse proxies (addresses or CIDR blocks, comma-separated) whose `--proxy-header` names
    /// the client; from any other peer the header is ignored. Empty: the peer is the client.
    #[arg(long, env = "EPHEMERA_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,

    /// The header trusted proxies name the client in.
    #[arg(long, env = "EPHEMERA_PROXY_HEADER", value_enum, default_value_t = ProxyHeader::XForwardedFor)]
    pub proxy_header: ProxyHeader,

    /// Serve `/metrics` on this address only, instead of on `--bind`.
    #[arg(long, env = "EPHEMERA_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// HTTP worker threads (0 = one per CPU).
    #[arg(long, env = "EPHEMERA_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// argon2id memory cost in KiB (OWASP minimum: 19456).
    #[arg(long, env = "EPHEMERA_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// argon2id passes (OWASP minimum: 2).
    #[arg(long, env = "EPHEMERA_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// argon2id lanes.
    #[arg(long, env = "EPHEMERA_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Threads dedicated to argon2, so at most this many runs at once (0 = one per CPU).
    #[arg(long, env = "EPHEMERA_HASH_THREADS", default_value_t = 0)]
    pub hash_threads: usize,

    /// Days a room lives after its last successful join.
    #[arg(long, env = "EPHEMERA_ROOM_TTL_DAYS", default_value_t = 30)]
    pub room_ttl_days: u32,

    /// Largest text frame in bytes; a larger one closes the socket with 4413.
    #[arg(long, env = "EPHEMERA_MAX_FRAME_BYTES", default_value_t = 256 * 1024)]
    pub max_frame_bytes: usize,

    /// Most members in one room (0 = unlimited).
    #[arg(long, env = "EPHEMERA_MAX_MEMBERS", default_value_t = 1000)]
    pub max_members: usize,

    /// Most WebSocket connections the server holds at once; one more is closed with 1013 right
    /// after the upgrade (0 = unlimited). By default, the open-file limit (raised to its hard
    /// limit at start) less 200 descriptors kept for everything else.
    #[arg(long, env = "EPHEMERA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// WebSocket connections one client address (an IPv4 address or an IPv6 /64) may hold at
    /// once; one more is closed with 1013 (0 = unlimited).
    #[arg(
        long,
        env = "EPHEMERA_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_connections_per_address: usize,

    /// Of those, how many may be waiting to join at once (0 = unlimited).
    #[arg(long, env = "EPHEMERA_MAX_JOINING_PER_ADDRESS", default_value_t = 32)]
    pub max_joining_per_address: usize,

    /// Frames one connection may send per 10 seconds (0 = unlimited).
    #[arg(long, env = "EPHEMERA_MESSAGES_PER_10S", default_value_t = 100)]
    pub messages_per_10s: u32,

    /// Bytes of text frames one connection may send per 10 seconds (0 = unlimited). The default
    /// lets a file flow at about 1.2 MB/s of raw bytes.
    #[arg(long, env = "EPHEMERA_BYTES_PER_10S", default_value_t = 16 * 1024 * 1024)]
    pub bytes_per_10s: u64,

    /// Failed joins (wrong key, unknown room) one IP may make per minute.
    #[arg(long, env = "EPHEMERA_JOIN_FAILURES_PER_IP", default_value_t = 10)]
    pub join_failures_per_ip: u32,

    /// Failed joins into one room ID per minute, from all IPs together.
    #[arg(long, env = "EPHEMERA_JOIN_FAILURES_PER_ROOM", default_value_t = 30)]
    pub join_failures_per_room: u32,

    /// Room creations one IP may make per hour.
    #[arg(long, env = "EPHEMERA_CREATES_PER_IP", default_value_t = 30)]
    pub creates_per_ip: u32,

    /// Bytes queued for one member before it counts as too slow and is closed with 1013.
    #[arg(long, env = "EPHEMERA_OUTBOUND_QUEUE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub outbound_queue_bytes: usize,

    /// Frames queued for one member before it counts as too slow and is closed with 1013.
    #[arg(long, env = "EPHEMERA_OUTBOUND_QUEUE_FRAMES", default_value_t = 4096)]
    pub outbound_queue_frames: usize,

    /// Bytes queued for all members together (each recipient's copy counted) past which the
    /// members furthest behind are closed with 1013 (0 = unlimited).
    #[arg(long, env = "EPHEMERA_OUTBOUND_BUDGET_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub outbound_budget_bytes: usize,

    /// argon2 runs waiting for a hashing thread, at most; past it a join, delete or create is
    /// answered `rate_limited` at once instead of waiting longer.
    #[arg(long, env = "EPHEMERA_HASH_QUEUE", default_value_t = 64)]
    pub hash_queue: usize,

    /// argon2 runs one client address may have waiting or running at once (a creation takes
    /// two).
    #[arg(long, env = "EPHEMERA_HASHES_PER_ADDRESS", default_value_t = 4)]
    pub hashes_per_address: usize,

    /// Lobby requests (`GET /api/rooms`) one client address may make per minute (0 = unlimited).
    #[arg(long, env = "EPHEMERA_LOBBY_PER_MINUTE", default_value_t = 60)]
    pub lobby_per_minute: u32,

    /// Seconds a new socket has to send `join`.
    #[arg(long, env = "EPHEMERA_JOIN_TIMEOUT_SECS", default_value_t = 10)]
    pub join_timeout_secs: u64,

    /// Seconds between WebSocket pings.
    #[arg(long, env = "EPHEMERA_PING_INTERVAL_SECS", default_value_t = 20)]
    pub ping_interval_secs: u64,

    /// Seconds of silence after which a socket is dropped.
    #[arg(long, env = "EPHEMERA_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Seconds a member whose socket was lost (or closed with anything but 1000) stays in its
    /// room, so that a reconnect with its `session` token is quiet; 0 announces leaves at once.
    /// At most 300: a lost member holds its name and its place in the room meanwhile.
    #[arg(long, env = "EPHEMERA_LEAVE_GRACE_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub leave_grace_secs: u64,

    /// How long a room that vanishes when empty (`"lifetime": "empty"`) waits, empty, before
    /// its record is deleted: a member who lost its connection has this long to come back.
    #[arg(long, env = "EPHEMERA_EMPTY_ROOM_GRACE_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub empty_room_grace_secs: u64,

    /// A room of more members than this is a crowd: instead of a notice per join and leave, its
    /// members hear one summary a second ("12 joined, 3 left"), and member lists (in `welcome`
    /// and `members`) go out in pages of this many (0: never a crowd, lists whole).
    #[arg(long, env = "EPHEMERA_CROWD_SIZE", default_value_t = 100)]
    pub crowd_size: usize,

    /// Seconds to drain on SIGTERM or Ctrl-C.
    #[arg(long, env = "EPHEMERA_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

/// A proxy's address or network: `10.0.0.0/8`, `2001:db8::/32`, or a bare `192.0.2.7`.
fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or a CIDR block"))
}

impl Config {
    /// Defaults, as if no flag or variable were given: the base of tests and tools.
    pub fn defaults() -> Self {
        // unwrap: every argument has a default, so parsing an empty command line cannot fail.
        #[allow(clippy::unwrap_used)]
        Self::try_parse_from(["ephemera"]).unwrap()
    }

    pub fn room_ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.room_ttl_days) * 86_400)
    }

    pub fn cpus() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}
