//! Which browser origins may open a WebSocket (and, through the same rule, call the room API):
//! the server's own, the configured public URL's, and an explicit allow-list. A request without
//! `Origin` comes from a non-browser client and is let through; the room key protects the room
//! either way, this guards against other sites driving a visitor's browser.
//!
//! Origins are compared as the `url` crate's [`Origin`] tuples (scheme, host, port), so default
//! ports, letter case, user info and internationalised host names compare as a browser would;
//! `null` and other opaque origins match nothing.

use actix_http::header::{HeaderMap, HOST, ORIGIN};
use url::{Origin, Url};

pub struct OriginPolicy {
    public: Option<Origin>,
    allowed: Vec<Origin>,
}

/// The origin of a URL, or `None` when it is not one a browser would send.
fn origin_of(url: &str) -> Option<Origin> {
    let origin = Url::parse(url.trim()).ok()?.origin();
    origin.is_tuple().then_some(origin)
}

impl OriginPolicy {
    pub fn new(public_url: Option<&str>, allowed: &[String]) -> Self {
        Self {
            public: public_url.and_then(origin_of),
            allowed: allowed.iter().filter_map(|o| origin_of(o)).collect(),
        }
    }

    /// The server's own origin is the host the request was made to, over either scheme: behind a
    /// proxy that terminates TLS the request arrives as `http` for an `https` page.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(ORIGIN) else {
            return true;
        };
        let Some(origin) = origin.to_str().ok().and_then(origin_of) else {
            return false;
        };
        let own = headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| {
                ["http", "https"]
                    .iter()
                    .filter_map(|scheme| origin_of(&format!("{scheme}://{host}")))
                    .any(|own| own == origin)
            });
        own || self.public.as_ref() == Some(&origin) || self.allowed.contains(&origin)
    }
}

#[cfg(test)]
mod tests {
    use actix_http::header::HeaderValue;

    use super::*;

    fn request(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn the_servers_own_origin_is_allowed_over_either_scheme_with_default_ports() {
        let policy = OriginPolicy::new(None, &[]);
        for origin in [
            "http://chat.example",
            "https://chat.example",
            "HTTPS://Chat.Example:443",
            "http://chat.example:80/",
        ] {
            assert!(
                policy.allows(&request("chat.example", Some(origin))),
                "{origin}"
            );
        }
        for origin in [
            "https://chat.example:8443",
            "https://chat.example.evil",
            "https://evil.example",
            "null",
            "chat.example",
        ] {
            assert!(
                !policy.allows(&request("chat.example", Some(origin))),
                "{origin}"
            );
        }
        assert!(policy.allows(&request("chat.example", None)));
    }

    #[test]
    fn the_public_url_and_the_allow_list_name_origins_whatever_their_path() {
        let policy = OriginPolicy::new(
            Some("https://user@Chat.Example:443/app/"),
            &["https://bücher.example".into(), "not a url".into()],
        );
        assert!(policy.allows(&request("10.0.0.5:8080", Some("https://chat.example"))));
        assert!(policy.allows(&request(
            "10.0.0.5:8080",
            Some("https://xn--bcher-kva.example")
        )));
        assert!(!policy.allows(&request("10.0.0.5:8080", Some("http://chat.example"))));
    }
}
