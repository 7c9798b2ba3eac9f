//! The HTTP half of the protocol: create, delete and list rooms.

use serde::Deserialize;
use serde_json::json;

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
}

impl ApiError {
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Refused { code, .. } => Some(code),
            Self::Unreachable(_) => None,
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
}

#[derive(Debug, Clone, Deserialize)]
pub struct ListedRoom {
    pub room_id: String,
    pub title: Option<String>,
    pub members: usize,
}

/// Percent-encodes all but the unreserved characters, as `encodeURIComponent` does, so the web
/// client reads the key back exactly.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A server, by its base URL (`http://127.0.0.1:8080`).
#[derive(Clone)]
pub struct Api {
    base: String,
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
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// The WebSocket URL of a room.
    pub fn ws_url(&self, room_id: &str) -> String {
        let ws = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            self.base.clone()
        };
        format!("{ws}/ws/{room_id}")
    }

    /// The link to share: the key rides in the fragment, which browsers never send.
    pub fn share_link(&self, room_id: &str, room_key: &str) -> String {
        format!("{}/r/{room_id}#key={}", self.base, percent_encode(room_key))
    }

    pub async fn create(
        &self,
        room_id: Option<&str>,
        auth: &str,
        admin_password: &str,
        listed: bool,
        title: Option<&str>,
    ) -> Result<CreatedRoom, ApiError> {
        let response = self
            .http
            .post(format!("{}/api/rooms", self.base))
            .json(&json!({ "room_id": room_id, "auth": auth, "admin_password": admin_password, "listed": listed, "title": title }))
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
            .delete(format!("{}/api/rooms/{room_id}", self.base))
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
        let response = self
            .http
            .get(format!("{}/api/rooms", self.base))
            .send()
            .await?;
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
        let api = Api::new("https://chat.example/");
        assert_eq!(
            api.share_link("team-42", "correct horse+ü"),
            "https://chat.example/r/team-42#key=correct%20horse%2B%C3%BC"
        );
        assert_eq!(api.ws_url("team-42"), "wss://chat.example/ws/team-42");
    }
}
