//! `agent-events token`: mints a token signed with the configured HMAC secret,
//! so a test or a first setup needs no other tool.

use crate::config::Config;
use agent_events_actors::auth::{now_secs, sign_hmac, Claims, Role};

/// The token the command-line words describe.
pub fn mint(config: &Config, words: &[String]) -> Result<String, String> {
    if config.auth_hmac_secret.is_empty() {
        return Err("auth_hmac_secret is not set (AGENT_EVENTS_AUTH_HMAC_SECRET)".into());
    }
    let mut claims = Claims {
        sub: "cli".into(),
        exp: 0,
        roles: Vec::new(),
        executions: Vec::new(),
        conversations: Vec::new(),
    };
    let mut ttl: u64 = 3600;
    let mut words = words.iter();
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--role" => claims.roles.push(parse_role(value)?),
            "--sub" => claims.sub = value.clone(),
            "--executions" => claims.executions = list(value),
            "--conversations" => claims.conversations = list(value),
            "--ttl" => {
                ttl = value
                    .parse()
                    .map_err(|_| "--ttl takes seconds".to_owned())?
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if claims.roles.is_empty() {
        return Err("--role is required".into());
    }
    claims.exp = now_secs() + ttl;
    Ok(sign_hmac(
        &claims,
        config.auth_hmac_secret.expose().as_bytes(),
    ))
}

fn parse_role(name: &str) -> Result<Role, String> {
    match name {
        "subscriber" => Ok(Role::Subscriber),
        "producer" => Ok(Role::Producer),
        "admin" => Ok(Role::Admin),
        other => Err(format!(
            "unknown role `{other}`: subscriber, producer or admin"
        )),
    }
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
