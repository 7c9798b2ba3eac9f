use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// 200 while the credential store answers, 503 while it does not; live rooms keep chatting
/// either way.
/// 503 when the store is down (no join can be proven); 200 with `"status": "degraded"` when
/// only the cluster's Redis is: the node still serves its own members, and taking it out of
/// the load balancer would cut them off.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.credentials.ping().await;
    if let Err(e) = &store {
        log::warn!("health check: {e}");
    }
    let cluster = state
        .cluster
        .as_ref()
        .map(|c| if c.is_up() { "ok" } else { "down" });
    let degraded = store.is_err() || cluster == Some("down");
    let mut body = json!({
        "status": if degraded { "degraded" } else { "ok" },
        "store": if store.is_ok() { "ok" } else { "down" },
    });
    if let Some(cluster) = cluster {
        body["cluster"] = cluster.into();
    }
    if store.is_ok() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
