//! Metrics and logging. Every line here is operational: room IDs appear only as a short prefix of
//! their keyed hash, and nothing a member says or is called is ever formatted into a line.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The server's Prometheus metrics. Each server owns its registry, so several servers can live in
/// one process (the tests start many).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub rooms_live: IntGauge,
    pub connections: IntGauge,
    pub messages_relayed: IntCounter,
    pub bytes_relayed: IntCounter,
    pub joins: IntCounterVec,
    pub store_seconds: HistogramVec,
    pub slow_readers: IntCounter,
    /// Audit lines dropped because the writer was that far behind.
    pub audit_dropped: IntCounter,
    pub argon2_runs: IntCounterVec,
    pub queued_bytes: IntGauge,
    /// 1 while this node's Redis answers, in cluster mode; 0 while it serves its own members
    /// only.
    pub cluster_up: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        // unwrap: the names and labels below are constant and valid, and each is registered once.
        #[allow(clippy::unwrap_used)]
        let metrics = Self {
            rooms_live: IntGauge::new("ephemera_rooms_live", "Rooms with at least one member")
                .unwrap(),
            connections: IntGauge::new("ephemera_connections", "Open WebSocket connections")
                .unwrap(),
            messages_relayed: IntCounter::new(
                "ephemera_messages_relayed_total",
                "Room messages and direct messages relayed (each counted once)",
            )
            .unwrap(),
            bytes_relayed: IntCounter::new(
                "ephemera_bytes_relayed_total",
                "Bytes of message and dm frames queued to recipients",
            )
            .unwrap(),
            joins: IntCounterVec::new(
                Opts::new("ephemera_joins_total", "Join attempts by outcome"),
                &["outcome"],
            )
            .unwrap(),
            store_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "ephemera_store_seconds",
                    "Credential store operation latency",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["op"],
            )
            .unwrap(),
            slow_readers: IntCounter::new(
                "ephemera_slow_readers_total",
                "Members closed with 1013 because their outbound queue overflowed",
            )
            .unwrap(),
            audit_dropped: IntCounter::new(
                "ephemera_audit_dropped_total",
                "Audit trail lines dropped because its writer was behind",
            )
            .unwrap(),
            argon2_runs: IntCounterVec::new(
                Opts::new(
                    "ephemera_argon2_runs_total",
                    "argon2id computations by purpose",
                ),
                &["op"],
            )
            .unwrap(),
            queued_bytes: IntGauge::new(
                "ephemera_outbound_queued_bytes",
                "Bytes queued to members and not yet written (each recipient's copy counted)",
            )
            .unwrap(),
            cluster_up: IntGauge::new(
                "ephemera_cluster_up",
                "1 while the cluster's Redis answers (cluster mode only; 0 otherwise)",
            )
            .unwrap(),
            registry,
        };
        #[allow(clippy::unwrap_used)]
        {
            let r = &metrics.registry;
            r.register(Box::new(metrics.rooms_live.clone())).unwrap();
            r.register(Box::new(metrics.connections.clone())).unwrap();
            r.register(Box::new(metrics.messages_relayed.clone()))
                .unwrap();
            r.register(Box::new(metrics.bytes_relayed.clone())).unwrap();
            r.register(Box::new(metrics.joins.clone())).unwrap();
            r.register(Box::new(metrics.store_seconds.clone())).unwrap();
            r.register(Box::new(metrics.slow_readers.clone())).unwrap();
            r.register(Box::new(metrics.audit_dropped.clone())).unwrap();
            r.register(Box::new(metrics.argon2_runs.clone())).unwrap();
            r.register(Box::new(metrics.queued_bytes.clone())).unwrap();
            r.register(Box::new(metrics.cluster_up.clone())).unwrap();
        }
        metrics
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // A text encoder writing into a Vec only fails on invalid metric families, which the
        // constructor rules out; an empty page is the safe answer if it ever did.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            out.clear();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A short, non-reversible tag for a room in log lines: the first 8 hex digits of its keyed hash.
pub fn room_tag(id_hash: &str) -> &str {
    id_hash.get(..8).unwrap_or(id_hash)
}

/// Starts `env_logger` at `info` unless `RUST_LOG` says otherwise.
pub fn init_logging() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
}

/// The access log: method, route pattern, status, size and time. The pattern stands for the
/// path (`/ws/{room_id}`, never the ID itself), and no client address is written.
pub fn access_log() -> actix_web::middleware::Logger {
    actix_web::middleware::Logger::new("%{route}xi %s %b %Dms").custom_request_replace(
        "route",
        |req| {
            let pattern = req
                .match_pattern()
                .unwrap_or_else(|| "(unmatched)".to_owned());
            format!("{} {pattern}", req.method())
        },
    )
}

/// The access log's line for a request that asked for `Upgrade: websocket`: such requests leave
/// the app (see [`crate::socket::serve`]), so [`access_log`] never sees them. Same format, the route
/// pattern standing for the path.
pub fn upgrade_log(
    req: &actix_http::Request,
    status: actix_http::StatusCode,
    started: std::time::Instant,
) {
    let route = if req.path().starts_with("/ws/") {
        "/ws/{room_id}"
    } else {
        "(unmatched)"
    };
    log::info!(
        "{} {route} {} - {:.6}ms",
        req.method(),
        status.as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
}
