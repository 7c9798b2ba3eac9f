//! The HTTP half of the protocol: create, delete and list rooms.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::json;
use url::Url;

/// A server's answer that is not a success: its status and the contract's error code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message} ({code})")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot reach the server: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("not a server URL (http:// or https://): {0}")]
    BadUrl(String),
}

impl ApiError {
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            Self::Unreachable(_) | Self::BadUrl(_) => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreatedRoom {
    pub room_id: String,
    pub listed: bool,
    pub title: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    /// Absent from servers that predate room options.
    #[serde(default)]
    pub options: ephemera_protocol::RoomOptions,
}

/// What a creator may choose for a room; `None` leaves the server's default.
#[derive(Debug, Clone, Default)]
pub struct RoomChoices {
    /// `1h`, `1d`, `7d`, `30d` or `empty`.
    pub lifetime: Option<String>,
    pub max_members: Option<u32>,
    pub unsend: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ListedRoom {
    pub room_id: String,
    pub title: Option<String>,
    pub members: usize,
}

/// What a share link escapes in the key: all but RFC 3986's unreserved characters, so that the
/// web client's `decodeURIComponent` reads the key back exactly.
const KEY_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A server, by its base URL (`http://127.0.0.1:8080`).
#[derive(Clone)]
pub struct Api {
    /// The base URL, with a path that ends in `/` so that joins append to it.
    base: Url,
    http: reqwest::Client,
}

async fn refusal(response: reqwest::Response) -> ApiError {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        code: String,
        message: String,
    }
    let status = response.status().as_u16();
    match response.json::<Body>().await {
        Ok(b) => ApiError::Refused {
            status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => ApiError::Refused {
            status,
            code: "http_error".into(),
            message: format!("HTTP {status}"),
        },
    }
}

impl Api {
    /// A server by its base URL: `http://` or `https://`, with or without a path under which
    /// the server is reached.
    pub fn new(base: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::BadUrl(base.to_owned());
        let mut url = Url::parse(base.trim()).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(bad());
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        url.set_query(None);
        url.set_fragment(None);
        Ok(Self {
            base: url,
            http: reqwest::Client::new(),
        })
    }

    /// The base URL, without its trailing `/`.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `path` (relative, no leading `/`) under the base URL.
    fn url(&self, path: &str) -> Url {
        // unwrap: the base is an http(s) URL and `path` a relative path made here.
        #[allow(clippy::unwrap_used)]
        self.base.join(path).unwrap()
    }

    /// `/api/rooms/{room_id}` or `/ws/{room_id}`, with the room ID as one path segment.
    fn room_url(&self, prefix: &str, room_id: &str) -> Url {
        let mut url = self.url(prefix);
        // unwrap: an http(s) URL always has path segments.
        #[allow(clippy::unwrap_used)]
        url.path_segments_mut().unwrap().push(room_id);
        url
    }

    /// The WebSocket URL of a room.
    pub fn ws_url(&self, room_id: &str) -> String {
        let mut url = self.room_url("ws", room_id);
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        // unwrap: http(s) and ws(s) are both special schemes, between which a URL may change.
        #[allow(clippy::unwrap_used)]
        url.set_scheme(scheme).unwrap();
        url.into()
    }

    /// The link to share: the key rides in the fragment, which browsers never send.
    pub fn share_link(&self, room_id: &str, room_key: &str) -> String {
        let mut url = self.room_url("r", room_id);
        url.set_fragment(Some(&format!(
            "key={}",
            utf8_percent_encode(room_key, KEY_ESCAPED)
        )));
        url.into()
    }

    pub async fn create(
        &self,
        room_id: Option<&str>,
        auth: &str,
        admin_password: &str,
        listed: bool,
        title: Option<&str>,
    ) -> Result<CreatedRoom, ApiError> {
        let options = RoomChoices::default();
        self.create_with(room_id, auth, admin_password, listed, title, &options)
            .await
    }

    /// [`Api::create`] with the room's options (`docs/protocol.md`, Room options).
    pub async fn create_with(
        &self,
        room_id: Option<&str>,
        auth: &str,
        admin_password: &str,
        listed: bool,
        title: Option<&str>,
        options: &RoomChoices,
    ) -> Result<CreatedRoom, ApiError> {
        let mut body = json!({ "room_id": room_id, "auth": auth, "admin_password": admin_password, "listed": listed, "title": title });
        if let Some(lifetime) = &options.lifetime {
            body["lifetime"] = json!(lifetime);
        }
        if let Some(max) = options.max_members {
            body["max_members"] = json!(max);
        }
        if let Some(unsend) = options.unsend {
            body["unsend"] = json!(unsend);
        }
        let response = self
            .http
            .post(self.url("api/rooms"))
            .json(&body)
            .send()
            .await?;
        if response.status().is_success() {
            Ok(response.json().await?)
        } else {
            Err(refusal(response).await)
        }
    }

    pub async fn delete(&self, room_id: &str, admin_password: &str) -> Result<(), ApiError> {
        let response = self
            .http
            .delete(self.room_url("api/rooms", room_id))
            .json(&json!({ "admin_password": admin_password }))
            .send()
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(refusal(response).await)
        }
    }

    pub async fn list(&self) -> Result<Vec<ListedRoom>, ApiError> {
        #[derive(Deserialize)]
        struct Rooms {
            rooms: Vec<ListedRoom>,
        }
        let response = self.http.get(self.url("api/rooms")).send().await?;
        if response.status().is_success() {
            Ok(response.json::<Rooms>().await?.rooms)
        } else {
            Err(refusal(response).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_links_carry_the_key_percent_encoded_in_the_fragment() {
        let api = Api::new("https://chat.example/").unwrap();
        assert_eq!(
            api.share_link("team-42", "correct horse+ü"),
            "https://chat.example/r/team-42#key=correct%20horse%2B%C3%BC"
        );
        assert_eq!(api.ws_url("team-42"), "wss://chat.example/ws/team-42");
        assert_eq!(api.base(), "https://chat.example");
    }

    #[test]
    fn a_base_path_is_kept_and_room_ids_stay_one_segment() {
        let api = Api::new("http://127.0.0.1:8080/chat").unwrap();
        assert_eq!(api.ws_url("a/b"), "ws://127.0.0.1:8080/chat/ws/a%2Fb");
        assert_eq!(api.base(), "http://127.0.0.1:8080/chat");
        for bad in ["ftp://x", "127.0.0.1:8080", "not a url", "mailto:x@y"] {
            assert!(Api::new(bad).is_err(), "{bad}");
        }
    }
}
