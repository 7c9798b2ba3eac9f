use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// 200 while the credential store answers, 503 while it does not; live rooms keep chatting
/// either way.
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.credentials.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ok", "store": "ok" })),
        Err(e) => {
            log::warn!("health check: {e}");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "degraded", "store": "down" }))
        }
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
