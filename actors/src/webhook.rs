//! One webhook attempt: the signed HTTP POST of a notification, and the
//! signature a receiver checks.
//!
//! The signature is `sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`
//! in `X-Agent-Events-Signature`, with the same `<timestamp>` (Unix seconds)
//! in `X-Agent-Events-Timestamp`. Signing the timestamp with the body lets a
//! receiver refuse an old request replayed by someone who recorded it.

use crate::store::outbox::Notification;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt::Write as _;
use std::time::Duration;

/// Header holding the signature.
pub const SIGNATURE_HEADER: &str = "X-Agent-Events-Signature";
/// Header holding the signed timestamp, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Agent-Events-Timestamp";
/// Header holding `executionId:seq:ruleId`, the same on every attempt.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Header naming the rule that fired.
pub const RULE_HEADER: &str = "X-Agent-Events-Rule";

/// Most of a receiver's error answer kept in the delivery's `lastError`.
const ERROR_BODY_CHARS: usize = 200;

/// `sha256=<hex>`: the HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 2 * digest.len());
    out.push_str("sha256=");
    for byte in digest {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// POSTs `notification` once. `Ok` for a 2xx answer; otherwise why not (a status
/// with the start of the receiver's answer, a timeout, a refused connection).
pub async fn post(
    client: reqwest::Client,
    notification: Notification,
    secret: Option<std::sync::Arc<[u8]>>,
    timeout: Duration,
) -> Result<(), String> {
    let timestamp = chrono::Utc::now().timestamp();
    let mut request = client
        .post(&notification.url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(IDEMPOTENCY_HEADER, &notification.key)
        .header(RULE_HEADER, &notification.rule_id)
        .header(TIMESTAMP_HEADER, timestamp.to_string());
    if let Some(secret) = &secret {
        request = request.header(
            SIGNATURE_HEADER,
            sign(secret, timestamp, &notification.body),
        );
    }
    let response = request
        .body(notification.body)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // The start of the answer helps whoever reads the dead letter; a body
    // that never ends must not hold the attempt, hence the same timeout.
    let text = tokio::time::timeout(timeout, response.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let text: String = text.chars().take(ERROR_BODY_CHARS).collect();
    Err(format!("HTTP {}: {}", status.as_u16(), text.trim()))
}

/// A transport error in a few words, with its cause (reqwest's own text
/// leaves the cause out).
fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".into();
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: Python's
        // hmac.new(b"secret", b'1700000000.{"type":"tool-result","success":false}', sha256).
        assert_eq!(
            sign(
                b"secret",
                1_700_000_000,
                r#"{"type":"tool-result","success":false}"#
            ),
            "sha256=6e3982456ef9b8c0bcd420bbff17848a7792eb7abe36ba9c15e89792f555f7cf"
        );
        // The timestamp is signed too: an old request cannot be replayed as new.
        assert_ne!(sign(b"k", 1, "b"), sign(b"k", 2, "b"));
    }
}
