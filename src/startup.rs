//! Wires the application from a [`Config`]: the store, the hub, the transport, the HTTP server on
//! a listener (port 0 works, and [`Application::port`] tells which one it got), and the drain on
//! shutdown. Nothing here is called once the server runs, except the drain.

use std::{future::Future, net::SocketAddr, net::TcpListener, sync::Arc, time::Duration};

use actix_http::HttpService;
use actix_server::Server;
use actix_service::{fn_factory, fn_service, map_config};
use actix_web::{dev::AppConfig, middleware::DefaultHeaders, web, App};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    address::ProxyPolicy,
    audit::{self, Audit},
    cluster::Cluster,
    config::Config,
    credentials::{Credentials, EmbeddedStore, Hasher, MongoStore, Pepper, RoomStore, StoreError},
    descriptors,
    hub::{Hub, Presence},
    lobby::Lobby,
    protocol::Limits,
    ratelimit::Limiters,
    routes,
    session::Sessions,
    socket::{self, Lingering, OriginPolicy, QueueLimits, Transport},
    state::AppState,
    telemetry::{self, Metrics},
};

/// How long HTTP requests in flight may take to finish once the sockets have closed at shutdown,
/// in seconds: long enough for a create's argon2, and short enough that an idle keep-alive
/// connection does not hold the exit for the whole grace period.
const HTTP_DRAIN: u64 = 1;

/// How many closed sockets may wait for their client's close at once (see
/// [`socket::Inbound::linger`]): each holds a descriptor and one read's buffer for at most
/// two seconds, and past this a socket is dropped at once, as if it had not lingered.
const MAX_LINGERING: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind or serve: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("invalid argon2 settings: {0}")]
    Hash(#[from] crate::credentials::HashError),
    #[error(
        "cluster mode (--redis-url) needs MongoDB (MONGODB_URI): the embedded store belongs to \
         one node, and the nodes of a cluster must share their rooms' credentials"
    )]
    ClusterWithoutMongo,
    #[error("cannot reach the cluster's Redis: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot open the audit log: {0}")]
    Audit(std::io::Error),
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
    /// `/metrics` on an address of its own, and its port.
    metrics: Option<(u16, Server)>,
    state: AppState,
}

/// `/metrics` alone on its own listener, so that a public listener need not expose it.
fn serve_metrics(state: &AppState, listener: TcpListener) -> std::io::Result<(u16, Server)> {
    let port = listener.local_addr()?.port();
    let data = web::Data::new(state.clone());
    let headers = state.transport.headers.clone();
    let server = actix_web::HttpServer::new(move || {
        App::new()
            .wrap(
                headers
                    .iter()
                    .fold(DefaultHeaders::new(), |h, &pair| h.add(pair)),
            )
            .app_data(data.clone())
            .configure(routes::configure_metrics)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(HTTP_DRAIN)
    .listen(listener)?
    .run();
    log::info!("metrics on port {port}");
    Ok((port, server))
}

impl Application {
    /// Binds `config.bind` and builds everything. Must run inside a Tokio runtime.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let listener = listen(config.bind)?;
        Self::build_with_listener(config, listener).await
    }

    pub async fn build_with_listener(
        mut config: Config,
        listener: TcpListener,
    ) -> Result<Self, StartError> {
        let port = listener.local_addr()?.port();
        let files = descriptors::raise();
        let cap = descriptors::connection_cap(config.max_connections, files);
        match files {
            Some(files) => log::info!(
                "open files: soft limit {} (was {}); connection cap {cap}{}",
                files.now,
                files.before,
                if config.max_connections.is_some() {
                    " (set)"
                } else {
                    " (derived)"
                },
            ),
            None => log::info!("open files: limit unknown; connection cap {cap}"),
        }
        config.max_connections = Some(cap);
        if config.redis_url.is_some() && config.mongodb_uri.is_none() {
            return Err(StartError::ClusterWithoutMongo);
        }
        let cpus = Config::cpus();
        let metrics = Metrics::new();
        let store = open_store(&config).await?;
        let pepper = Pepper::load_or_create(config.pepper.as_deref(), &config.data_dir)?;
        let audit = match &config.audit_log {
            Some(target) => Audit::open(
                &audit::Target::parse(target),
                config.audit_address,
                pepper.clone(),
                metrics.audit_dropped.clone(),
            )
            .map_err(StartError::Audit)?,
            None => Audit::off(pepper.clone(), metrics.audit_dropped.clone()),
        };
        let audit = Arc::new(audit);
        if audit.is_on() {
            tokio::spawn(crate::shutdown::on_hangup({
                let audit = audit.clone();
                move || audit.reopen()
            }));
        }
        let cluster = match &config.redis_url {
            Some(url) => Some(Cluster::connect(url, pepper.clone(), &metrics).await?),
            None => None,
        };
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
            config.hash_queue,
        )?;
        let credentials =
            Credentials::new(store, hasher, pepper, metrics.clone(), config.room_ttl());
        let limits = Limits {
            max_frame_bytes: config.max_frame_bytes,
            messages_per_10s: config.messages_per_10s,
            bytes_per_10s: config.bytes_per_10s,
            max_members: config.max_members,
        };
        let queue_limits = Arc::new(QueueLimits {
            bytes: config.outbound_queue_bytes,
            frames: config.outbound_queue_frames,
            budget: config.outbound_budget_bytes,
            queued: metrics.queued_bytes.clone(),
            overflows: metrics.slow_readers.clone(),
        });
        let lobby = Arc::new(Lobby::new());
        fill_lobby(&lobby, &credentials).await;
        let limiters = Arc::new(Limiters::new(&config));
        let transport = Arc::new(Transport {
            origins: Arc::new(OriginPolicy::new(
                config.public_url.as_deref(),
                &config.allowed_origins,
            )),
            proxies: Arc::new(ProxyPolicy::new(
                config.trusted_proxies.clone(),
                config.proxy_header,
            )),
            places: limiters.sockets.clone(),
            queue_limits,
            lingering: Lingering::new(MAX_LINGERING),
            tracker: TaskTracker::new(),
            max_frame_bytes: config.max_frame_bytes,
            headers: routes::response_headers(config.public_url.as_deref()),
        });
        let mut hub = Hub::new(
            metrics.clone(),
            limits,
            Presence {
                leave_grace: Duration::from_secs(config.leave_grace_secs),
                crowd: config.crowd_size,
            },
        );
        if let Some(cluster) = &cluster {
            hub = hub.clustered(cluster.clone());
        }
        let (emptied, mut emptied_rooms) = tokio::sync::mpsc::unbounded_channel();
        hub = hub.on_emptied(emptied);
        let state = AppState {
            lobby,
            hub: Arc::new(hub),
            cluster,
            credentials,
            limiters,
            metrics,
            audit,
            transport,
            stopping: CancellationToken::new(),
            config: Arc::new(config),
        };
        spawn_housekeeping(&state);
        {
            // Ends with the drain, so that no task holds the state (and the store) after it.
            let state = state.clone();
            tokio::spawn(async move {
                let stopping = state.stopping.clone();
                // Each emptying of a room counts; only the latest one's grace may end it, so a
                // member who comes and goes again gets the whole grace after it.
                let emptied: Arc<dashmap::DashMap<String, u64>> = Arc::default();
                while let Some(Some((id, record))) =
                    stopping.run_until_cancelled(emptied_rooms.recv()).await
                {
                    let generation = {
                        let mut count = emptied.entry(record.id_hash.clone()).or_default();
                        *count += 1;
                        *count
                    };
                    let (state, emptied) = (state.clone(), emptied.clone());
                    tokio::spawn(async move {
                        let grace = Duration::from_secs(state.config.empty_room_grace_secs);
                        let stopping = state.stopping.clone();
                        let waited = stopping
                            .run_until_cancelled(tokio::time::sleep(grace))
                            .await
                            .is_some();
                        let latest = emptied
                            .remove_if(&record.id_hash, |_, count| *count == generation)
                            .is_some();
                        if waited && latest {
                            crate::access::vanish(&state, &id, &record).await;
                        }
                    });
                }
            });
        }
        if let Some(mut deletions) = state.cluster.as_ref().and_then(|c| c.deletions()) {
            let state = state.clone();
            tokio::spawn(async move {
                let stopping = state.stopping.clone();
                while let Some(Some(deleted)) = stopping.run_until_cancelled(deletions.recv()).await
                {
                    crate::access::deleted_elsewhere(&state, &deleted).await;
                }
            });
        }

        let data = web::Data::new(state.clone());
        let static_dir = state.config.static_dir.clone();
        let workers = if state.config.workers == 0 {
            cpus
        } else {
            state.config.workers
        };
        // One shared copy for every socket: a session holds a pointer, not a clone of the state
        // (a few hundred bytes per idle member).
        let sessions = Sessions(Arc::new(state.clone()));
        let transport = state.transport.clone();
        let metrics_apart = state.config.metrics_bind.is_some();
        let server = Server::build()
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(HTTP_DRAIN)
            .listen("ephemera", listener, move || {
                let data = data.clone();
                let static_dir = static_dir.clone();
                let app = App::new()
                    .wrap(
                        transport
                            .headers
                            .iter()
                            .fold(DefaultHeaders::new(), |h, &pair| h.add(pair)),
                    )
                    .wrap(telemetry::access_log())
                    .app_data(data)
                    .configure(|cfg| routes::configure(cfg, &static_dir, !metrics_apart));
                let (transport, sessions) = (transport.clone(), sessions.clone());
                HttpService::build()
                    // Chat frames are small and latency matters more than packet count.
                    .tcp_nodelay(true)
                    // WebSocket upgrades leave the app: the socket becomes a session's.
                    .upgrade(fn_factory(move || {
                        let (transport, sessions) = (transport.clone(), sessions.clone());
                        async move {
                            Ok::<_, ()>(fn_service(move |(req, framed)| {
                                socket::serve(transport.clone(), sessions.clone(), req, framed)
                            }))
                        }
                    }))
                    .finish(map_config(app, |()| AppConfig::default()))
                    .tcp()
            })?
            .run();
        log::info!("listening on port {port}");
        let metrics = match state.config.metrics_bind {
            Some(addr) => Some(serve_metrics(&state, listen(addr)?)?),
            None => None,
        };
        Ok(Self {
            port,
            server,
            metrics,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of `/metrics` when it is served apart (`--metrics-bind`).
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then closes every socket with 1001 and waits, for at
    /// most the configured grace period, until each has closed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let Self {
            server,
            metrics,
            state,
            ..
        } = self;
        let handles: Vec<_> = std::iter::once(server.handle())
            .chain(metrics.as_ref().map(|(_, m)| m.handle()))
            .collect();
        // A server's future carries out its handle's commands: it is polled until the end.
        let servers = futures_util::future::try_join(server, async move {
            match metrics {
                Some((_, metrics)) => metrics.await,
                None => Ok(()),
            }
        });
        tokio::pin!(servers);
        tokio::select! {
            result = &mut servers => return result.map(drop),
            () = shutdown => {}
        }
        log::info!("draining");
        let drain = async {
            // No new connections: a client reconnecting after its 1001 would only be upgraded
            // to hear 1001 again, and hold the drain.
            for handle in &handles {
                handle.pause().await;
            }
            state.stopping.cancel();
            state.hub.shutdown();
            if let Some(cluster) = &state.cluster {
                cluster.stop().await;
            }
            let sockets = &state.transport.tracker;
            sockets.close();
            // One grace period for everything: the sockets' closes, then HTTP requests in flight.
            let deadline =
                tokio::time::Instant::now() + Duration::from_secs(state.config.shutdown_grace_secs);
            if tokio::time::timeout_at(deadline, sockets.wait())
                .await
                .is_err()
            {
                log::warn!(
                    "{} sockets still open after the grace period",
                    sockets.len()
                );
            }
            // Then HTTP: the servers' own shutdown timeout (HTTP_DRAIN) bounds the requests in
            // flight, and idle keep-alive connections, which a graceful stop waits for too.
            for handle in &handles {
                handle.stop(true).await;
            }
        };
        let ((), result) = tokio::join!(drain, servers);
        result.map(drop)
    }
}

/// Fills the lobby from the store; while the store cannot be reached (MongoDB down at start-up),
/// tries again every 10 s in the background, and the lobby shows the live listed rooms meanwhile.
async fn fill_lobby(lobby: &Arc<Lobby>, credentials: &Credentials) {
    match credentials.listed().await {
        Ok(listed) => lobby.load(listed),
        Err(e) => {
            log::error!("cannot read the listed rooms yet ({e}); retrying every 10 s");
            let (lobby, credentials) = (Arc::downgrade(lobby), credentials.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    let Some(lobby) = lobby.upgrade() else { break };
                    if let Ok(listed) = credentials.listed().await {
                        lobby.load(listed);
                        log::info!("listed rooms read");
                        break;
                    }
                }
            });
        }
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
    let lobby = Arc::downgrade(&state.lobby);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let (Some(store), Some(lobby)) = (store.upgrade(), lobby.upgrade()) else {
                break;
            };
            lobby.prune();
            match store.purge_expired().await {
                Ok(0) => {}
                Ok(n) => log::info!("purged {n} expired rooms"),
                Err(e) => log::warn!("purging expired rooms: {e}"),
            }
        }
    });
}
