use actix_http::{body::MessageBody as _, ws::handshake};
use actix_web::{
    body::BodyStream,
    http::header::{HOST, ORIGIN},
    web, HttpRequest, HttpResponse,
};
use serde_json::json;

use crate::{hub::Outbox, session, startup::AppState};

/// Which browser origins may open a WebSocket: the server's own, the configured public URL's,
/// and an explicit allow-list. A request without `Origin` comes from a non-browser client and
/// is let through; the room key protects the room either way, this guards against other sites
/// driving a visitor's browser.
pub struct OriginPolicy {
    public: Option<String>,
    allowed: Vec<String>,
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl OriginPolicy {
    pub fn new(public_url: Option<&str>, allowed: &[String]) -> Self {
        // The origin of a URL is its scheme and authority: cut the path.
        let public = public_url.map(|url| {
            let url = normalise(url);
            match url.find("://") {
                Some(i) => match url[i + 3..].find('/') {
                    Some(j) => url[..i + 3 + j].to_owned(),
                    None => url,
                },
                None => url,
            }
        });
        Self {
            public,
            allowed: allowed
                .iter()
                .map(|o| normalise(o))
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    pub fn allows(&self, req: &HttpRequest) -> bool {
        let Some(origin) = req.headers().get(ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = normalise(origin);
        let scheme = if req.app_config().secure() {
            "https"
        } else {
            "http"
        };
        let own = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(|host| normalise(&format!("{scheme}://{host}")));
        own.as_deref() == Some(origin.as_str())
            || self.public.as_deref() == Some(origin.as_str())
            || self.allowed.contains(&origin)
    }
}

/// `GET /ws/{room_id}`: checks the origin, upgrades, and leaves the socket to its session task.
/// Every refusal after this point is an `error` frame and a close, never an HTTP status.
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    if !state.origins.allows(&req) {
        return Ok(HttpResponse::Forbidden().json(json!({
            "error": { "code": "forbidden", "message": "this origin may not open a WebSocket here" }
        })));
    }
    // actix-ws checks the handshake and parses incoming frames; the outgoing half is our own
    // queue (see `hub::outbox`), so its session handle and response body are not used.
    let (_, _, stream) = actix_ws::handle(&req, body)?;
    let (outbox, outbound) = Outbox::new(state.queue_limits(), state.metrics.slow_readers.clone());
    let response = handshake(req.head())?.message_body(BodyStream::new(outbound).boxed())?;
    let ip = state.client_ip(&req);
    actix_web::rt::spawn(session::run(
        state.get_ref().clone(),
        path.into_inner(),
        ip,
        stream,
        outbox,
    ));
    Ok(response.into())
}
