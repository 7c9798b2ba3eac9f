use std::path::Path;

use actix_files::{Files, NamedFile};
use actix_web::{web, HttpRequest, HttpResponse, Responder};

use crate::state::AppState;

/// `/r/{room_id}`: the web client, whether or not the room exists; the room key stays in the
/// fragment, which the browser never sends.
pub async fn room_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match NamedFile::open_async(state.config.static_dir.join("index.html")).await {
        Ok(file) => file.respond_to(&req).map_into_boxed_body(),
        Err(_) => HttpResponse::NotFound().finish(),
    }
}

/// The web client's files.
pub fn files(static_dir: &Path) -> Files {
    Files::new("/", static_dir).index_file("index.html")
}
