//! What every HTTP handler and every session shares, built once by [`crate::startup`]. Cloning
//! copies a few `Arc`s; sessions hold one shared copy behind an `Arc` of their own.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::{
    cluster::Cluster, config::Config, credentials::Credentials, hub::Hub, lobby::Lobby,
    ratelimit::Limiters, socket::Transport, telemetry::Metrics,
};

#[derive(Clone)]
pub struct AppState {
    /// The settings the server started with; read only.
    pub config: Arc<Config>,
    /// The live rooms, in memory only (see [`crate::hub`] for its locks).
    pub hub: Arc<Hub>,
    /// The room records in the store, argon2 on its bounded pool, the accepted-proof cache and
    /// each room's turn for slow checks.
    pub credentials: Credentials,
    /// Allowances per address and per room: creations, failed attempts, argon2 runs, lobby
    /// reads, and the count of open sockets.
    pub limiters: Arc<Limiters>,
    pub metrics: Metrics,
    /// The operator's audit trail (a no-op unless `--audit-log` is set).
    pub audit: Arc<crate::audit::Audit>,
    /// The other nodes, through Redis, when `--redis-url` is set.
    pub cluster: Option<Arc<Cluster>>,
    /// The listed rooms, for `GET /api/rooms`, in memory.
    pub lobby: Arc<Lobby>,
    /// The WebSocket transport's share: origin and proxy policies, queue limits, lingering
    /// sockets and the tracker of every socket's task.
    pub transport: Arc<Transport>,
    /// Cancelled when the server starts draining: sockets still joining close with 1001
    /// (members are closed through the hub).
    pub stopping: CancellationToken,
}
