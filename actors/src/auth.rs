//! Who may do what: JWTs signed with an HMAC secret or checked with an RSA/EC
//! public key, and the grants they carry.
//!
//! Agent events carry user prompts and tool inputs and outputs, so a token
//! says exactly which executions and conversations its holder may watch
//! (exact IDs, or prefixes written `team-a:*`), and which roles it has:
//! `subscriber` (watch), `producer` (POST events), `admin` (everything,
//! including `/admin/*`, `/metrics` and the query API). Expiry is enforced
//! at every check, and an open connection is closed when its token expires
//! unless the client sent a fresh one first.
//!
//! Tokens never reach a log or an error message: errors say what is wrong
//! with a token, never what it was.

use crate::protocol::{ErrorCode, Target};
use jsonwebtoken::{decode, errors::ErrorKind, Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Watch the executions and conversations the token names.
    Subscriber,
    /// Post events (to the executions the token names, if it names any).
    Producer,
    /// Everything.
    Admin,
}

/// The claims of a token, as the broker reads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token is for (logged, as the producer's identity).
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// What the holder may do.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Executions it may watch (or produce to): exact IDs or `prefix*`.
    #[serde(default)]
    pub executions: Vec<String>,
    /// Conversations it may watch: exact IDs or `prefix*`.
    #[serde(default)]
    pub conversations: Vec<String>,
}

/// Why a token or a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// `unauthorized`, `token-expired` or `forbidden`.
    pub code: ErrorCode,
    /// Words for a person; never the token.
    pub message: String,
}

impl AuthError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AuthError {
            code,
            message: message.into(),
        }
    }

    /// No token where one is required.
    pub fn missing() -> Self {
        AuthError::new(
            ErrorCode::Unauthorized,
            "a token is required: Authorization: Bearer <jwt>, ?token=, or {\"type\":\"auth\",\"token\":…}",
        )
    }
}

/// A verified token: its claims, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    claims: Claims,
}

impl Grant {
    /// The token's subject.
    pub fn subject(&self) -> &str {
        &self.claims.sub
    }

    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.claims.exp)
    }

    /// How long until it expires (zero if it has).
    pub fn remaining(&self) -> Duration {
        self.expires_at()
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    }

    /// Whether it has `role` (admin has every role).
    pub fn has(&self, role: Role) -> bool {
        self.claims
            .roles
            .iter()
            .any(|r| *r == role || *r == Role::Admin)
    }

    /// Whether it may watch `target`.
    pub fn may_watch(&self, target: &Target) -> bool {
        if self.has(Role::Admin) {
            return true;
        }
        let patterns = match target {
            Target::Execution(_) => &self.claims.executions,
            Target::Conversation(_) => &self.claims.conversations,
        };
        self.has(Role::Subscriber) && matches_any(patterns, target.id())
    }

    /// Whether it may post events to `execution_id`.
    pub fn may_produce(&self, execution_id: &str) -> bool {
        self.has(Role::Admin)
            || self.has(Role::Producer)
                && (self.claims.executions.is_empty()
                    || matches_any(&self.claims.executions, execution_id))
    }

    /// Checks `role`, as a forbidden error naming it.
    pub fn require(&self, role: Role) -> Result<(), AuthError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(AuthError::new(
                ErrorCode::Forbidden,
                format!("this needs a token with the `{}` role", role_name(role)),
            ))
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Subscriber => "subscriber",
        Role::Producer => "producer",
        Role::Admin => "admin",
    }
}

/// `pattern` is an exact ID, or a prefix followed by `*` (`*` alone: any).
fn matches_any(patterns: &[String], id: &str) -> bool {
    patterns
        .iter()
        .any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => pattern == id,
        })
}

/// Checks tokens against the configured key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

impl Verifier {
    /// Tokens signed with the HMAC `secret` (HS256).
    pub fn hmac(secret: &[u8]) -> Self {
        Verifier::with_key(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// Tokens signed by the holder of the private half of `pem` (RS256 or ES256).
    pub fn public_key(pem: &[u8], algorithm: Algorithm) -> Result<Self, String> {
        let key = match algorithm {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => {
                DecodingKey::from_rsa_pem(pem)
            }
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
            other => {
                return Err(format!(
                    "algorithm {other:?} needs an HMAC secret, not a public key"
                ))
            }
        }
        .map_err(|e| format!("the public key cannot be read: {e}"))?;
        Ok(Verifier::with_key(key, algorithm))
    }

    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        // Expiry is exact: a token past its `exp` is refused at once.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier { key, validation }
    }

    /// Verifies `token`: signature, expiry, claims.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        match decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) => Ok(Grant {
                claims: data.claims,
            }),
            Err(err) => Err(match err.kind() {
                ErrorKind::ExpiredSignature => {
                    AuthError::new(ErrorCode::TokenExpired, "the token has expired")
                }
                ErrorKind::InvalidSignature => AuthError::new(
                    ErrorCode::Unauthorized,
                    "the token's signature is not valid",
                ),
                _ => AuthError::new(
                    ErrorCode::Unauthorized,
                    "the token cannot be read as a JWT with sub and exp",
                ),
            }),
        }
    }
}

/// Signs `claims` with the HMAC `secret` (HS256): for `agent-events token` and tests.
pub fn sign_hmac(claims: &Claims, secret: &[u8]) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, &key)
        .expect("HMAC signing never fails")
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn claims(roles: Vec<Role>, executions: &[&str], conversations: &[&str], ttl: i64) -> Claims {
        Claims {
            sub: "tester".into(),
            exp: (now_secs() as i64 + ttl) as u64,
            roles,
            executions: executions.iter().map(|s| s.to_string()).collect(),
            conversations: conversations.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_subscriber_sees_only_what_its_token_names() {
        let verifier = Verifier::hmac(SECRET);
        let token = sign_hmac(
            &claims(
                vec![Role::Subscriber],
                &["exec-a", "team:*"],
                &["conv-1"],
                60,
            ),
            SECRET,
        );
        let grant = verifier.verify(&token).unwrap();
        assert!(grant.may_watch(&Target::Execution("exec-a".into())));
        assert!(grant.may_watch(&Target::Execution("team:42".into())));
        assert!(!grant.may_watch(&Target::Execution("exec-b".into())));
        assert!(grant.may_watch(&Target::Conversation("conv-1".into())));
        assert!(!grant.may_watch(&Target::Conversation("conv-2".into())));
        assert!(!grant.may_produce("exec-a"));
        assert_eq!(
            grant.require(Role::Admin).unwrap_err().code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn admins_may_do_everything_and_producers_only_produce() {
        let verifier = Verifier::hmac(SECRET);
        let admin = verifier
            .verify(&sign_hmac(&claims(vec![Role::Admin], &[], &[], 60), SECRET))
            .unwrap();
        assert!(admin.may_watch(&Target::Execution("anything".into())));
        assert!(admin.may_produce("anything"));
        let producer = verifier
            .verify(&sign_hmac(
                &claims(vec![Role::Producer], &["p-*"], &[], 60),
                SECRET,
            ))
            .unwrap();
        assert!(producer.may_produce("p-1"));
        assert!(!producer.may_produce("q-1"));
        assert!(!producer.may_watch(&Target::Execution("p-1".into())));
    }

    #[test]
    fn bad_signatures_and_expired_tokens_are_refused_without_echoing_them() {
        let verifier = Verifier::hmac(SECRET);
        let forged = sign_hmac(&claims(vec![Role::Admin], &[], &[], 60), b"other-secret");
        let err = verifier.verify(&forged).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthorized);
        assert!(!err.message.contains(&forged));
        let expired = sign_hmac(&claims(vec![Role::Admin], &[], &[], -10), SECRET);
        assert_eq!(
            verifier.verify(&expired).unwrap_err().code,
            ErrorCode::TokenExpired
        );
        assert_eq!(
            verifier.verify("not-a-jwt").unwrap_err().code,
            ErrorCode::Unauthorized
        );
    }
}
