//! HTTP handlers by resource, and the one place where their errors become the contract's JSON
//! error bodies and status codes.

mod health;
mod rooms;
mod web;

use std::time::Duration;

use actix_web::{guard, http::StatusCode, web as aweb, HttpResponse, ResponseError};
use serde_json::json;

use crate::socket;

/// A strict policy: only this origin's own files, no inline script, never framed. `blob:` lets
/// the web client show media it decrypted itself.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'";

/// Sent with every response, including the WebSocket upgrade's refusals.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// Sent too when the public URL is `https`: browsers then never reach the server over plain HTTP,
/// where a network attacker could serve them another web client.
const HSTS: (&str, &str) = ("strict-transport-security", "max-age=31536000");

/// The headers every response carries, the WebSocket upgrade's refusals included:
/// [`SECURITY_HEADERS`], and HSTS behind HTTPS.
pub fn response_headers(public_url: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let https =
        public_url.is_some_and(|url| url.trim().to_ascii_lowercase().starts_with("https://"));
    SECURITY_HEADERS
        .into_iter()
        .chain(https.then_some(HSTS))
        .collect()
}

/// Every error an `/api/` route can answer with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not what this endpoint takes")]
    BadRequest,
    #[error("the request body must be JSON, sent as application/json")]
    UnsupportedMediaType,
    #[error("this origin may not use the API here")]
    Forbidden,
    #[error("room IDs are 3 to 64 letters, digits, '-' or '_'")]
    InvalidRoomId,
    #[error("auth must be 32 bytes in unpadded base64url (43 characters)")]
    InvalidAuth,
    #[error("admin passwords are 8 to 128 characters")]
    InvalidAdminPassword,
    #[error("titles are at most 80 characters without control characters")]
    InvalidTitle,
    #[error(
        "lifetime is one of 1h, 1d, 7d, 30d or empty; max_members is 2 or more, and at most \
         the server's limit"
    )]
    InvalidOptions,
    #[error("a room with that ID exists")]
    RoomExists,
    #[error("no room with that ID exists")]
    RoomNotFound,
    #[error("wrong admin password")]
    InvalidCredentials,
    #[error("too many requests; try again later")]
    RateLimited(Duration),
    #[error("the credential store cannot be reached; try again later")]
    StoreUnavailable,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Forbidden => "forbidden",
            Self::InvalidRoomId => "invalid_room_id",
            Self::InvalidAuth => "invalid_auth",
            Self::InvalidAdminPassword => "invalid_admin_password",
            Self::InvalidTitle => "invalid_title",
            Self::InvalidOptions => "invalid_options",
            Self::RoomExists => "room_exists",
            Self::RoomNotFound => "room_not_found",
            Self::InvalidCredentials => "invalid_credentials",
            Self::RateLimited(_) => "rate_limited",
            Self::StoreUnavailable => "store_unavailable",
            Self::Internal => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest
            | Self::InvalidRoomId
            | Self::InvalidAuth
            | Self::InvalidAdminPassword
            | Self::InvalidTitle
            | Self::InvalidOptions => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RoomExists => StatusCode::CONFLICT,
            Self::RoomNotFound => StatusCode::NOT_FOUND,
            Self::InvalidCredentials => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Self::RateLimited(wait) = self {
            response.insert_header((
                "Retry-After",
                wait.as_secs_f64().ceil().max(1.0).to_string(),
            ));
        }
        response.json(json!({ "error": { "code": self.code(), "message": self.to_string() } }))
    }
}

/// A route for `GET` and `HEAD`: every resource that answers `GET` answers `HEAD` with the same
/// status and headers (actix-http leaves the body out).
fn get() -> actix_web::Route {
    aweb::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Registers every route; `/metrics` only when it is not served on an address of its own.
pub fn configure(cfg: &mut aweb::ServiceConfig, static_dir: &std::path::Path, metrics: bool) {
    cfg.service(
        aweb::resource("/api/rooms")
            .route(aweb::post().to(rooms::create))
            .route(get().to(rooms::list)),
    )
    .service(aweb::resource("/api/rooms/{room_id}").route(aweb::delete().to(rooms::delete)))
    .service(aweb::resource("/healthz").route(get().to(health::healthz)));
    if metrics {
        configure_metrics(cfg);
    }
    // Upgrades never reach the app: the HTTP service hands them to `socket::serve`. A WebSocket
    // handshake is a GET, so this resource alone answers HEAD with 405.
    cfg.service(aweb::resource("/ws/{room_id}").route(aweb::get().to(socket::without_upgrade)))
        .service(aweb::resource("/r/{room_id}").route(get().to(web::room_page)))
        .service(web::files(static_dir));
}

/// `/metrics` alone, for `--metrics-bind`.
pub fn configure_metrics(cfg: &mut aweb::ServiceConfig) {
    cfg.service(aweb::resource("/metrics").route(get().to(health::metrics)));
}
