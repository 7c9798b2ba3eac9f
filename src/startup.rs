//! Builds the application from a [`Config`]: the store, the hub, the HTTP server on a listener
//! (port 0 works, and [`Application::port`] tells which one it got), and the drain on shutdown.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener},
    sync::Arc,
    time::Duration,
};

use actix_http::{header::HeaderMap, HttpService};
use actix_server::Server;
use actix_service::{fn_factory, fn_service, map_config};
use actix_web::{dev::AppConfig, middleware::DefaultHeaders, web, App, HttpRequest};

use crate::{
    config::Config,
    credentials::{
        Credentials, EmbeddedStore, Hasher, MongoStore, Pepper, RoomRecord, RoomStore, StoreError,
    },
    domain::RoomId,
    hub::{Hub, QueueLimits, Room},
    protocol::Limits,
    ratelimit::Limiters,
    routes::{self, OriginPolicy},
    telemetry::{self, Metrics},
};

/// A strict policy: only this origin's own files, no inline script, never framed. `blob:` lets
/// the web client show media it decrypted itself.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// Sent with every response, including the WebSocket upgrade's refusals.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind or serve: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("invalid argon2 settings: {0}")]
    Hash(#[from] crate::credentials::HashError),
}

/// What every handler and session shares. Cloning copies a few `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub hub: Arc<Hub>,
    pub credentials: Credentials,
    pub limiters: Arc<Limiters>,
    pub metrics: Metrics,
    pub origins: Arc<OriginPolicy>,
}

/// A room's record, and the live room when someone is in it.
pub struct Found {
    pub live: Option<Arc<Room>>,
    pub record: RoomRecord,
}

impl AppState {
    /// A room's record: the live room's copy when someone is in it (no store round trip, and it
    /// works during a store outage), else the store's.
    pub async fn find_room(&self, room_id: &RoomId) -> Result<Option<Found>, StoreError> {
        if let Some(room) = self.hub.live(room_id) {
            let record = room.record.clone();
            return Ok(Some(Found {
                live: Some(room),
                record,
            }));
        }
        Ok(self
            .credentials
            .fetch(room_id)
            .await?
            .map(|record| Found { live: None, record }))
    }

    /// Deletes a room's record, then tears the live room down: members get `room_deleted` and
    /// close 4410. A record already gone still tears the live room down.
    pub async fn delete_room(&self, room_id: &RoomId) -> Result<(), StoreError> {
        self.credentials.delete(room_id).await?;
        self.hub.delete(room_id);
        Ok(())
    }

    /// The address rate limits count against: the peer, or the proxy's word for it when the
    /// proxy is trusted (the first `for=` of `Forwarded`, else the first `X-Forwarded-For`).
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> IpAddr {
        self.config
            .trust_proxy
            .then(|| forwarded_for(headers))
            .flatten()
            .or_else(|| peer.map(|a| a.ip()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// [`Self::client_ip`] of a request the app serves.
    pub fn request_ip(&self, req: &HttpRequest) -> IpAddr {
        self.client_ip(req.headers(), req.peer_addr())
    }

    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            bytes: self.config.outbound_queue_bytes,
            frames: self.config.outbound_queue_frames,
        }
    }
}

/// The accept queue's length. A join storm opens hundreds of connections at once; with std's
/// 128, the overflow waits a second for the client's SYN to be sent again (500 joins at once:
/// 450 joins/s, p99 1.05 s).
const LISTEN_BACKLOG: i32 = 1024;

/// Binds like `TcpListener::bind`, with room for bursts of connections.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// The client a trusted proxy names: `Forwarded: for=…` (RFC 7239) first, then
/// `X-Forwarded-For`, the first address of either (the client; the rest are proxies).
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let from_forwarded = headers
        .get_all("forwarded")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([';', ',']))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            name.trim().eq_ignore_ascii_case("for").then_some(value)
        });
    let value = from_forwarded.or_else(|| {
        headers
            .get("x-forwarded-for")?
            .to_str()
            .ok()?
            .split(',')
            .next()
    })?;
    parse_address(value.trim().trim_matches('"'))
}

/// An address as proxies write it: bare, with a port, or bracketed IPv6 with or without one.
fn parse_address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .split(']')
                .next()?
                .parse::<IpAddr>()
                .ok()
        })
}

async fn open_store(config: &Config) -> Result<Arc<dyn RoomStore>, StartError> {
    // An empty MONGODB_URI (as compose files and shells often leave it) means "not set".
    let Some(uri) = config.mongodb_uri.as_deref().filter(|u| !u.is_empty()) else {
        log::info!("store: embedded, in {}", config.data_dir.display());
        return Ok(Arc::new(EmbeddedStore::open(&config.data_dir)?));
    };
    let store = MongoStore::connect(uri, &config.mongodb_db).await?;
    log::info!("store: MongoDB, database {}", config.mongodb_db);
    if let Err(e) = store.ensure_indexes().await {
        // Start anyway: /healthz says the store is down, and the indexes are made once it is up.
        log::error!("MongoDB is not reachable yet ({e}); retrying the indexes every 10 s");
        let retry = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if retry.ensure_indexes().await.is_ok() {
                    log::info!("MongoDB reachable; indexes ensured");
                    break;
                }
            }
        });
    }
    Ok(Arc::new(store))
}

pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
}

impl Application {
    /// Binds `config.bind` and builds everything. Must run inside a Tokio runtime.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let listener = listen(config.bind)?;
        Self::build_with_listener(config, listener).await
    }

    pub async fn build_with_listener(
        config: Config,
        listener: TcpListener,
    ) -> Result<Self, StartError> {
        let port = listener.local_addr()?.port();
        let cpus = Config::cpus();
        let metrics = Metrics::new();
        let store = open_store(&config).await?;
        let pepper = Pepper::load_or_create(config.pepper.as_deref(), &config.data_dir)?;
        let threads = if config.hash_threads == 0 {
            cpus
        } else {
            config.hash_threads
        };
        let hasher = Hasher::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            threads,
        )?;
        let credentials =
            Credentials::new(store, hasher, pepper, metrics.clone(), config.room_ttl());
        let limits = Limits {
            max_frame_bytes: config.max_frame_bytes,
            messages_per_10s: config.messages_per_10s,
            bytes_per_10s: config.bytes_per_10s,
            max_members: config.max_members,
        };
        let state = AppState {
            hub: Arc::new(Hub::new(metrics.clone(), limits)),
            credentials,
            limiters: Arc::new(Limiters::new(&config)),
            metrics,
            origins: Arc::new(OriginPolicy::new(
                config.public_url.as_deref(),
                &config.allowed_origins,
            )),
            config: Arc::new(config),
        };
        spawn_housekeeping(&state);

        let data = web::Data::new(state.clone());
        let static_dir = state.config.static_dir.clone();
        let workers = if state.config.workers == 0 {
            cpus
        } else {
            state.config.workers
        };
        let app_state = state.clone();
        let server = Server::build()
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(state.config.shutdown_grace_secs)
            .listen("ephemera", listener, move || {
                let data = data.clone();
                let static_dir = static_dir.clone();
                let app = App::new()
                    .wrap(
                        SECURITY_HEADERS
                            .iter()
                            .fold(DefaultHeaders::new(), |h, &pair| h.add(pair)),
                    )
                    .wrap(telemetry::access_log())
                    .app_data(data)
                    .configure(|cfg| routes::configure(cfg, &static_dir));
                let state = app_state.clone();
                HttpService::build()
                    // Chat frames are small and latency matters more than packet count.
                    .tcp_nodelay(true)
                    // WebSocket upgrades leave the app: the socket becomes the session's.
                    .upgrade(fn_factory(move || {
                        let state = state.clone();
                        async move {
                            Ok::<_, ()>(fn_service(move |(req, framed)| {
                                routes::serve_websocket(state.clone(), req, framed)
                            }))
                        }
                    }))
                    .finish(map_config(app, |()| AppConfig::default()))
                    .tcp()
            })?
            .run();
        log::info!("listening on port {port}");
        Ok(Self {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then closes every member with 1001 and drains for at
    /// most the configured grace period.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let handle = self.server.handle();
        let mut server = self.server;
        tokio::select! {
            result = &mut server => return result,
            () = shutdown => {}
        }
        log::info!("draining");
        self.state.hub.shutdown();
        // Give the close frames a moment to leave before the workers stop.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_, result) = tokio::join!(handle.stop(true), server);
        result
    }
}

/// Forgets idle rate-limit entries every minute and purges expired rooms every hour.
fn spawn_housekeeping(state: &AppState) {
    let limiters = Arc::downgrade(&state.limiters);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match limiters.upgrade() {
                Some(l) => l.prune(),
                None => break,
            }
        }
    });
    let store = Arc::downgrade(state.credentials.store());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let Some(store) = store.upgrade() else { break };
            match store.purge_expired().await {
                Ok(0) => {}
                Ok(n) => log::info!("purged {n} expired rooms"),
                Err(e) => log::warn!("purging expired rooms: {e}"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use actix_http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    #[test]
    fn the_first_forwarded_client_counts() {
        let ip = |pairs| forwarded_for(&headers(pairs)).map(|ip| ip.to_string());
        assert_eq!(
            ip(&[("forwarded", "for=1.2.3.4, for=5.6.7.8")]).as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(
            ip(&[("forwarded", "proto=https;for=\"[2001:db8::1]:4711\"")]).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            ip(&[("x-forwarded-for", "9.9.9.9:80, 10.0.0.1")]).as_deref(),
            Some("9.9.9.9")
        );
        assert_eq!(
            ip(&[("forwarded", "for=1.1.1.1"), ("x-forwarded-for", "2.2.2.2")]).as_deref(),
            Some("1.1.1.1")
        );
        assert_eq!(ip(&[("forwarded", "for=unknown")]), None);
        assert_eq!(ip(&[]), None);
    }
}
