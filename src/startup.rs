//! Builds the application from a [`Config`]: the store, the hub, the HTTP server on a listener
//! (port 0 works, and [`Application::port`] tells which one it got), and the drain on shutdown.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, TcpListener},
    sync::Arc,
    time::Duration,
};

use actix_web::{dev::Server, middleware::DefaultHeaders, web, App, HttpRequest, HttpServer};

use crate::{
    bot::Bot,
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
    /// proxy is trusted.
    pub fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        let forwarded = self
            .config
            .trust_proxy
            .then(|| {
                req.connection_info()
                    .realip_remote_addr()
                    .map(str::to_owned)
            })
            .flatten()
            .and_then(|a| {
                a.parse::<IpAddr>()
                    .ok()
                    .or_else(|| a.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
            });
        forwarded
            .or_else(|| req.peer_addr().map(|a| a.ip()))
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            bytes: self.config.outbound_queue_bytes,
            frames: self.config.outbound_queue_frames,
        }
    }
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
        let listener = TcpListener::bind(config.bind)?;
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
            hub: Arc::new(Hub::new(Bot::spawn(), metrics.clone(), limits)),
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
        let server = HttpServer::new(move || {
            App::new()
                .wrap(
                    DefaultHeaders::new()
                        .add(("Content-Security-Policy", CSP))
                        .add(("X-Content-Type-Options", "nosniff"))
                        .add(("Referrer-Policy", "no-referrer"))
                        .add(("X-Frame-Options", "DENY"))
                        .add(("Cross-Origin-Opener-Policy", "same-origin")),
                )
                .wrap(telemetry::access_log())
                .app_data(data.clone())
                .configure(|cfg| routes::configure(cfg, &static_dir))
        })
        .workers(workers)
        // Chat frames are small and latency matters more than packet count.
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(state.config.shutdown_grace_secs)
        .listen(listener)?
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
