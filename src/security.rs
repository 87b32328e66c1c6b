//! The HTTP side of security: where a token is read from, which role each
//! route needs, which Origins may open a WebSocket or call the API, and the
//! protected mode that keeps an unauthenticated broker on loopback.
//!
//! Where a token may come from, in order: `Authorization: Bearer <jwt>`; the
//! `Sec-WebSocket-Protocol` header as `bearer.<jwt>` (browsers cannot set
//! headers on a WebSocket; offer `agent-events` beside it); `?token=<jwt>`
//! (for `EventSource`). A query string may end up in a proxy's access log:
//! prefer the first two. The broker itself never logs a token.

use crate::config::Config;
use actix_cors::Cors;
use actix_web::http::header;
use actix_web::HttpRequest;
use agent_events_actors::auth::{AuthError, Grant, Role, Verifier};
use jsonwebtoken::Algorithm;
use std::net::IpAddr;
use std::sync::Arc;

/// What the routes check: tokens (when auth is on) and Origins.
#[derive(Clone)]
pub struct Guard {
    verifier: Option<Arc<Verifier>>,
    origins: Vec<String>,
}

impl Guard {
    /// The guard the settings describe, or why they cannot work.
    pub fn from_config(config: &Config) -> Result<Guard, String> {
        let verifier = verifier(config)?.map(Arc::new);
        let guard = Guard {
            verifier,
            origins: config.allowed_origins(),
        };
        guard.check_protected_mode(&config.bind_addr)?;
        Ok(guard)
    }

    /// The token checker, for WebSocket sessions.
    pub fn verifier(&self) -> Option<Arc<Verifier>> {
        self.verifier.clone()
    }

    /// Protected mode: without auth, only loopback.
    fn check_protected_mode(&self, bind_addr: &str) -> Result<(), String> {
        let loopback = bind_addr == "localhost"
            || bind_addr.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if self.verifier.is_some() || loopback {
            return Ok(());
        }
        Err(format!(
            "refusing to listen on {bind_addr} without authentication: agent events carry prompts and \
             tool outputs. Set AGENT_EVENTS_AUTH_HMAC_SECRET (or auth_public_key_file and auth_algorithm), \
             or keep BIND_ADDR on 127.0.0.1. See docs/security.md."
        ))
    }

    /// The grant of the request's token if it has `role`; `None` when auth is off.
    pub fn require(&self, req: &HttpRequest, role: Role) -> Result<Option<Grant>, AuthError> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        let token = token_of(req).ok_or_else(AuthError::missing)?;
        let grant = verifier.verify(&token)?;
        grant.require(role)?;
        Ok(Some(grant))
    }

    /// The grant of a WebSocket upgrade's token, if it carried one; a bad one is refused now.
    pub fn upgrade_grant(&self, req: &HttpRequest) -> Result<Option<Grant>, AuthError> {
        match (&self.verifier, token_of(req)) {
            (Some(verifier), Some(token)) => verifier.verify(&token).map(Some),
            _ => Ok(None),
        }
    }

    /// Whether the request's Origin may proceed (no Origin: not a browser, allowed).
    pub fn origin_allowed(&self, req: &HttpRequest) -> bool {
        let Some(origin) = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
        else {
            return true;
        };
        self.allows_origin(origin, req.connection_info().host())
    }

    fn allows_origin(&self, origin: &str, host: &str) -> bool {
        if self
            .origins
            .iter()
            .any(|allowed| allowed == "*" || allowed == origin)
        {
            return true;
        }
        // Strict by default with auth on: the page must come from the broker itself.
        let same_origin = origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host);
        same_origin || (self.origins.is_empty() && self.verifier.is_none())
    }

    /// CORS for the HTTP API, from the same Origin policy.
    pub fn cors(&self) -> Cors {
        let guard = self.clone();
        Cors::default()
            .allowed_origin_fn(move |origin, head| {
                let host = head
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                origin
                    .to_str()
                    .is_ok_and(|origin| guard.allows_origin(origin, host))
            })
            .allowed_methods(["GET", "POST"])
            .allowed_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static("last-event-id"),
            ])
            .max_age(600)
    }
}

fn verifier(config: &Config) -> Result<Option<Verifier>, String> {
    if !config.auth_hmac_secret.is_empty() {
        if config.auth_hmac_secret.len() < 32 {
            return Err("auth_hmac_secret must be at least 32 characters".into());
        }
        return Ok(Some(Verifier::hmac(
            config.auth_hmac_secret.expose().as_bytes(),
        )));
    }
    if config.auth_public_key_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let algorithm: Algorithm = config.auth_algorithm.parse().map_err(|_| {
        format!(
            "auth_algorithm `{}` is not a JWT algorithm",
            config.auth_algorithm
        )
    })?;
    let pem = std::fs::read(&config.auth_public_key_file).map_err(|e| {
        format!(
            "auth_public_key_file {}: {e}",
            config.auth_public_key_file.display()
        )
    })?;
    Verifier::public_key(&pem, algorithm).map(Some)
}

/// The request's token, from the header, the subprotocol or the query.
fn token_of(req: &HttpRequest) -> Option<String> {
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let subprotocol = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("bearer."));
    let query = req
        .query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="));
    bearer.or(subprotocol).or(query).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(origins: &[&str], auth: bool) -> Guard {
        Guard {
            verifier: auth.then(|| Arc::new(Verifier::hmac(b"0123456789abcdef0123456789abcdef"))),
            origins: origins.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn origins_are_strict_with_auth_and_open_without() {
        assert!(guard(&[], false).allows_origin("https://evil.example", "broker:3001"));
        assert!(!guard(&[], true).allows_origin("https://evil.example", "broker:3001"));
        assert!(guard(&[], true).allows_origin("http://broker:3001", "broker:3001"));
        let listed = guard(&["https://app.example"], false);
        assert!(listed.allows_origin("https://app.example", "broker:3001"));
        assert!(!listed.allows_origin("https://evil.example", "broker:3001"));
    }

    #[test]
    fn protected_mode_keeps_an_open_broker_on_loopback() {
        assert!(guard(&[], false).check_protected_mode("127.0.0.1").is_ok());
        assert!(guard(&[], false).check_protected_mode("::1").is_ok());
        let err = guard(&[], false)
            .check_protected_mode("0.0.0.0")
            .unwrap_err();
        assert!(err.contains("AGENT_EVENTS_AUTH_HMAC_SECRET"), "{err}");
        assert!(guard(&[], true).check_protected_mode("0.0.0.0").is_ok());
    }
}
