use std::time::Duration;

use actix_web::{http::header::CONTENT_TYPE, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::ApiError;
use crate::{
    access,
    address::AddressKey,
    audit::{self, Record, RoomRef},
    credentials::{CreateError, HashError, Lifetime, NewRoom, RoomOptions, Secret},
    domain::{AdminPassword, Auth, RoomId, Title},
    protocol::ErrorCode,
    ratelimit::Refused,
    state::AppState,
};

/// `POST /api/rooms`. `null` counts as omitted for the optional fields.
#[derive(Deserialize)]
struct CreateRequest {
    #[serde(default)]
    room_id: Option<String>,
    auth: String,
    admin_password: String,
    #[serde(default)]
    listed: Option<bool>,
    #[serde(default)]
    title: Option<String>,
    /// `1h`, `1d`, `7d`, `30d` (fixed, from creation) or `empty` (until the last member
    /// leaves); absent: the server's lifetime after the last join.
    #[serde(default)]
    lifetime: Option<String>,
    #[serde(default)]
    max_members: Option<u32>,
    #[serde(default)]
    unsend: Option<bool>,
}

/// The room's options as the request chose them, checked against the server's limits, and how
/// long a fixed lifetime lasts.
fn options(
    request: &CreateRequest,
    server_max: usize,
) -> Result<(RoomOptions, Option<Duration>), ApiError> {
    const HOUR: u64 = 3600;
    let (lifetime, lasts) = match request.lifetime.as_deref() {
        None => (Lifetime::Rolling, None),
        Some("empty") => (Lifetime::UntilEmpty, None),
        Some(fixed) => {
            let hours = match fixed {
                "1h" => 1,
                "1d" => 24,
                "7d" => 7 * 24,
                "30d" => 30 * 24,
                _ => return Err(ApiError::InvalidOptions),
            };
            (Lifetime::Fixed, Some(Duration::from_secs(hours * HOUR)))
        }
    };
    let max_members = request.max_members.unwrap_or(0);
    let above_server = server_max > 0 && max_members as usize > server_max;
    if request.max_members.is_some() && (max_members < 2 || above_server) {
        return Err(ApiError::InvalidOptions);
    }
    let options = RoomOptions {
        lifetime,
        max_members,
        unsend: request.unsend.unwrap_or(true),
    };
    Ok((options, lasts))
}

/// A refused attempt as HTTP says it: `429` either way, with the wait.
fn too_many(refused: Refused) -> ApiError {
    match refused {
        Refused::Failures(wait) => ApiError::RateLimited(wait),
        Refused::Busy => ApiError::RateLimited(Duration::from_secs(1)),
    }
}

/// Refuses a request a browser sends from a page of another origin (the WebSocket's rule).
fn same_origin(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if state.transport.origins.allows(req.headers()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

fn address_of(req: &HttpRequest, state: &AppState) -> AddressKey {
    AddressKey::of(state.transport.proxies.of_request(req))
}

/// The start of an audit line about a request from `req`'s client.
fn audit_line(req: &HttpRequest, state: &AppState, event: audit::Event) -> Record<'static> {
    Record::new(event).address(state.transport.proxies.of_request(req))
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub async fn create(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let address = address_of(&req, &state);
    if let Err(wait) = state.limiters.create(address) {
        let record = audit_line(&req, &state, audit::Event::RateLimited);
        state.audit.record(record.limited(audit::Limited::Creates));
        return Err(ApiError::RateLimited(wait));
    }
    same_origin(&req, &state)?;
    // A form or `text/plain` post needs no CORS preflight: without this, any web page could
    // create rooms from its visitors' addresses.
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let request: CreateRequest = serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest)?;
    let room_id = match &request.room_id {
        None => RoomId::random(),
        Some(text) => RoomId::parse(text).map_err(|_| ApiError::InvalidRoomId)?,
    };
    let auth = Auth::parse(&request.auth).map_err(|_| ApiError::InvalidAuth)?;
    let admin_password = AdminPassword::parse(&request.admin_password)
        .map_err(|_| ApiError::InvalidAdminPassword)?;
    let title = request
        .title
        .as_deref()
        .map(Title::parse)
        .transpose()
        .map_err(|_| ApiError::InvalidTitle)?;
    let (options, lasts) = options(&request, state.config.max_members)?;
    // Both secrets are hashed: two of the address's argon2 runs.
    let _hashing = state
        .limiters
        .hashing(address, 2)
        .ok_or(ApiError::RateLimited(Duration::from_secs(1)))?;
    let new = NewRoom {
        room_id: room_id.clone(),
        auth,
        admin_password,
        listed: request.listed.unwrap_or(false),
        title,
        options,
        lasts,
    };
    let record = state.credentials.create(new).await.map_err(|e| match e {
        CreateError::Exists => ApiError::RoomExists,
        CreateError::Unavailable(e) => {
            log::warn!("create: store unavailable: {e}");
            ApiError::StoreUnavailable
        }
        CreateError::Hash(HashError::Busy) => ApiError::RateLimited(Duration::from_secs(1)),
        CreateError::Hash(e) => {
            log::error!("create: {e}");
            ApiError::Internal
        }
    })?;
    // A live room can outlast its record only when the record expired; the new room is a
    // different room, so the old one's members must not stay in it.
    state.hub.delete(&room_id);
    if record.listed {
        state
            .lobby
            .add(room_id.clone(), record.title.clone(), record.expires_at);
    }
    state.audit.record(
        audit_line(&req, &state, audit::Event::RoomCreated).room(RoomRef {
            hash: &record.id_hash,
            listed_id: record.listed.then_some(&room_id),
        }),
    );
    log::info!(
        "room {} created ({})",
        crate::telemetry::room_tag(&record.id_hash),
        if record.listed { "listed" } else { "unlisted" }
    );
    Ok(HttpResponse::Created().json(json!({
        "room_id": room_id.as_ref(),
        "listed": record.listed,
        "title": record.title,
        "created_at": rfc3339(record.created_at),
        "expires_at": rfc3339(record.expires_at),
        "options": record.options_view(),
    })))
}

/// `GET /api/rooms?offset=&limit=`: one page of the listed rooms, most members first.
#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    offset: usize,
    #[serde(default)]
    limit: Option<usize>,
}

/// Rooms in a page unless the request says fewer, and at most.
const PAGE: usize = 50;
const MAX_PAGE: usize = 100;

/// `GET /api/rooms`: from the lobby in memory, never the store; rated per address.
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state
        .limiters
        .lobby(address_of(&req, &state))
        .map_err(ApiError::RateLimited)?;
    let query = web::Query::<ListQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::BadRequest)?;
    let limit = query.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let page = state.lobby.page(&state.hub, query.offset, limit);
    let rooms: Vec<_> = page
        .rooms
        .into_iter()
        .map(|r| json!({ "room_id": r.room_id, "title": r.title, "members": r.members }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "rooms": rooms,
        "total": page.total,
        "next_offset": page.next,
    })))
}

#[derive(Deserialize)]
struct DeleteRequest {
    admin_password: String,
}

/// `DELETE /api/rooms/{room_id}`: 404 before any password check (existence is not secret);
/// an unknown room and a wrong password both count against the failed-attempt allowances.
pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    same_origin(&req, &state)?;
    let address = address_of(&req, &state);
    let room_id = RoomId::parse(&path.into_inner()).ok();
    let mut attempt = state.limiters.attempt(address, room_id.clone());
    attempt.check().map_err(too_many)?;
    let request: DeleteRequest = serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest)?;
    let Some(room_id) = room_id else {
        attempt.charge().map_err(too_many)?;
        return Err(ApiError::RoomNotFound);
    };
    let password = AdminPassword::parse(&request.admin_password).ok();
    let secret = [(
        Secret::Admin,
        password.as_ref().map(AdminPassword::as_bytes),
    )];
    let room_hash = state.credentials.pepper().room_hash(&room_id);
    let listed_id = state.lobby.contains(&room_id).then_some(&room_id);
    let room = RoomRef {
        hash: &room_hash,
        listed_id,
    };
    let proven = access::prove(&state, &room_id, &secret, &mut attempt)
        .await
        .inspect_err(|refusal| {
            let record = audit_line(&req, &state, audit::Event::DeleteRefused);
            state.audit.record(record.room(room).code(refusal.code));
        })
        .map_err(|refusal| match refusal.code {
            ErrorCode::RoomNotFound => ApiError::RoomNotFound,
            ErrorCode::RateLimited => {
                ApiError::RateLimited(refusal.retry_after.unwrap_or_default())
            }
            ErrorCode::StoreUnavailable => ApiError::StoreUnavailable,
            _ => ApiError::InvalidCredentials,
        })?;
    let tag = crate::telemetry::room_tag(&proven.record().id_hash).to_owned();
    access::delete_room(&state, &room_id, proven.into_turn())
        .await
        .map_err(|e| {
            log::warn!("delete: store unavailable: {e}");
            ApiError::StoreUnavailable
        })?;
    let record = audit_line(&req, &state, audit::Event::RoomDeleted);
    state
        .audit
        .record(record.room(room).deleted_by(audit::DeletedBy::Http));
    log::info!("room {tag} deleted");
    Ok(HttpResponse::NoContent().finish())
}
