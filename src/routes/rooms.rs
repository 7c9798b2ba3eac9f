use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;

use super::ApiError;
use crate::{
    credentials::Secret,
    credentials::{CreateError, NewRoom},
    domain::{AdminPassword, Auth, RoomId, Title},
    startup::AppState,
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
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

pub async fn create(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state
        .limiters
        .create(state.request_ip(&req))
        .map_err(ApiError::RateLimited)?;
    let request: CreateRequest = serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest)?;
    let room_id = match request.room_id {
        None => RoomId::random(),
        Some(text) => RoomId::parse(&text).map_err(|_| ApiError::InvalidRoomId)?,
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
    let new = NewRoom {
        room_id: room_id.clone(),
        auth,
        admin_password,
        listed: request.listed.unwrap_or(false),
        title,
    };
    let record = state.credentials.create(new).await.map_err(|e| match e {
        CreateError::Exists => ApiError::RoomExists,
        CreateError::Unavailable(e) => {
            log::warn!("create: store unavailable: {e}");
            ApiError::StoreUnavailable
        }
        CreateError::Hash(e) => {
            log::error!("create: {e}");
            ApiError::Internal
        }
    })?;
    // A live room can outlast its record only when the record expired; the new room is a
    // different room, so the old one's members must not stay in it.
    state.hub.delete(&room_id);
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
    })))
}

/// `GET /api/rooms`: listed rooms with live member counts, most members first. While the store
/// is down, the live listed rooms are all that can be shown.
pub async fn list(state: web::Data<AppState>) -> HttpResponse {
    let mut rooms: Vec<(String, Option<String>, usize)> = match state.credentials.listed().await {
        Ok(listed) => listed
            .into_iter()
            .map(|r| {
                let members = RoomId::parse(&r.room_id).map_or(0, |id| state.hub.member_count(&id));
                (r.room_id, r.title, members)
            })
            .collect(),
        Err(e) => {
            log::warn!("list: store unavailable, showing live rooms only: {e}");
            state
                .hub
                .listed()
                .into_iter()
                .map(|(room, members)| {
                    (
                        room.id.as_ref().to_owned(),
                        room.record.title.clone(),
                        members,
                    )
                })
                .collect()
        }
    };
    rooms.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let rooms: Vec<_> = rooms
        .into_iter()
        .map(|(room_id, title, members)| json!({ "room_id": room_id, "title": title, "members": members }))
        .collect();
    HttpResponse::Ok().json(json!({ "rooms": rooms }))
}

#[derive(Deserialize)]
struct DeleteRequest {
    admin_password: String,
}

/// `DELETE /api/rooms/{room_id}`: 404 before any password check (existence is not secret);
/// a wrong password counts against the client's failed-attempt allowance.
pub async fn delete(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let ip = state.request_ip(&req);
    let room_path = path.into_inner();
    state
        .limiters
        .check_join(ip, &room_path)
        .map_err(ApiError::RateLimited)?;
    let request: DeleteRequest = serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest)?;
    let room_id = RoomId::parse(&room_path).map_err(|_| ApiError::RoomNotFound)?;
    let found = state
        .find_room(&room_id)
        .await
        .map_err(|_| ApiError::StoreUnavailable)?
        .ok_or(ApiError::RoomNotFound)?;
    let proven = match AdminPassword::parse(&request.admin_password) {
        Err(_) => false,
        Ok(password) => {
            state
                .credentials
                .prove(&found.record, Secret::Admin, password.as_bytes())
                .await
        }
    };
    if !proven {
        state.limiters.join_failed(ip, &room_path);
        return Err(ApiError::InvalidCredentials);
    }
    state.delete_room(&room_id).await.map_err(|e| {
        log::warn!("delete: store unavailable: {e}");
        ApiError::StoreUnavailable
    })?;
    log::info!(
        "room {} deleted",
        crate::telemetry::room_tag(&found.record.id_hash)
    );
    Ok(HttpResponse::NoContent().finish())
}
