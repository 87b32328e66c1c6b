//! Notifications on the HTTP side: the rules file, the Notifier's settings,
//! and the admin API (`/admin/notifications/…`, admin role).
//!
//! - `GET /admin/notifications/rules`: every rule, with `source` `file` or `api`.
//! - `POST /admin/notifications/rules`: adds a rule (201), or replaces the
//!   API rule with its ID (200); kept in the store, so it survives a restart.
//! - `DELETE /admin/notifications/rules/{id}`: removes an API rule (204).
//! - `GET /admin/notifications/dead-letters?limit=N`: the dead letters.
//! - `POST /admin/notifications/dead-letters/{key}/retry`: back to pending (202).
//! - `DELETE /admin/notifications/dead-letters/{key}`: discarded (204).

use crate::api::{query, ApiError};
use crate::config::Config;
use crate::server::Broker;
use actix_web::{web, HttpRequest, HttpResponse};
use agent_events_actors::auth::Role;
use agent_events_actors::notifier::{
    DeadLetters, DeleteRule, DiscardDeadLetter, ListRules, Notifier, NotifierConfig, NotifyError,
    PutRule, RetryDeadLetter, RuleSource, RuleView,
};
use agent_events_actors::notify_rule::{Rule, RuleSpec};
use agent_events_actors::protocol::ErrorCode;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The Notifier's settings from the broker's.
pub fn notifier_config(config: &Config) -> NotifierConfig {
    NotifierConfig {
        timeout: Duration::from_millis(config.notify_timeout_ms),
        max_attempts: config.notify_max_attempts,
        backoff_base: Duration::from_millis(config.notify_backoff_base_ms),
        backoff_max: Duration::from_millis(config.notify_backoff_max_ms),
        concurrency: config.notify_concurrency,
        poll: Duration::from_millis(config.notify_poll_ms),
        keep: Duration::from_secs(config.notify_keep_secs),
        secret: Some(config.notify_secret.expose())
            .filter(|s| !s.is_empty())
            .map(|s| Arc::from(s.as_bytes())),
    }
}

/// The rules of `notify_rules_file`, checked; none when it is unset.
///
/// The file is JSON (`{"rules": [...]}` or a bare array) or, when its name
/// ends in `.toml`, TOML with one `[[rules]]` table per rule.
pub fn load_rules_file(config: &Config) -> Result<Vec<Rule>, String> {
    let path = &config.notify_rules_file;
    if path.as_os_str().is_empty() {
        return Ok(Vec::new());
    }
    let named = |why: String| format!("notify_rules_file {}: {why}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| named(e.to_string()))?;
    let specs = parse_rules(path, &text).map_err(named)?;
    let mut ids = HashSet::new();
    specs
        .into_iter()
        .map(|spec| {
            if !ids.insert(spec.id.clone()) {
                return Err(named(format!("rule `{}` appears twice", spec.id)));
            }
            Rule::parse(spec).map_err(|e| named(e.0))
        })
        .collect()
}

/// The file's rules as written.
fn parse_rules(path: &Path, text: &str) -> Result<Vec<RuleSpec>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RulesFile {
        rules: Vec<RuleSpec>,
    }
    if path.extension().is_some_and(|e| e == "toml") {
        let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        return Ok(file.rules);
    }
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(text).map_err(|e| e.to_string());
    }
    let file: RulesFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(file.rules)
}

impl From<NotifyError> for ApiError {
    fn from(err: NotifyError) -> Self {
        let code = match &err {
            NotifyError::InvalidRule(_) | NotifyError::ReadOnly(_) => ErrorCode::BadRequest,
            NotifyError::NotFound(_) => ErrorCode::NotFound,
            NotifyError::Store(_) => ErrorCode::StoreUnavailable,
        };
        ApiError::new(code, err.to_string())
    }
}

fn stopping<E>(_: E) -> ApiError {
    ApiError::new(ErrorCode::ShuttingDown, "the broker is stopping")
}

type ApiResult = Result<HttpResponse, ApiError>;

/// `GET /admin/notifications/rules`.
pub(crate) async fn list_rules(req: HttpRequest, broker: web::Data<Broker>) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    let rules = broker.notifier.send(ListRules).await.map_err(stopping)?;
    Ok(HttpResponse::Ok().json(json!({ "rules": rules })))
}

/// `POST /admin/notifications/rules`: the rule as JSON.
pub(crate) async fn put_rule(
    req: HttpRequest,
    body: web::Bytes,
    broker: web::Data<Broker>,
) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    let spec: RuleSpec = serde_json::from_slice(&body).map_err(|e| {
        let code = match e.classify() {
            serde_json::error::Category::Data => ErrorCode::BadRequest,
            _ => ErrorCode::BadJson,
        };
        ApiError::new(code, format!("rule: {e}"))
    })?;
    let view = RuleView {
        spec: spec.clone(),
        source: RuleSource::Api,
    };
    let replaced = ask(&broker, PutRule(spec)).await?;
    let mut response = if replaced {
        HttpResponse::Ok()
    } else {
        HttpResponse::Created()
    };
    Ok(response.json(json!({ "rule": view })))
}

/// Asks the Notifier; its refusal is the answer.
async fn ask<M, T>(broker: &Broker, msg: M) -> Result<T, ApiError>
where
    M: actix::Message<Result = Result<T, NotifyError>> + Send + 'static,
    T: Send + 'static,
    Notifier: actix::Handler<M>,
{
    Ok(broker.notifier.send(msg).await.map_err(stopping)??)
}

/// `DELETE /admin/notifications/rules/{id}`.
pub(crate) async fn delete_rule(
    req: HttpRequest,
    path: web::Path<String>,
    broker: web::Data<Broker>,
) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    ask(&broker, DeleteRule(path.into_inner())).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Query of `GET /admin/notifications/dead-letters`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLettersParams {
    limit: Option<usize>,
}

/// Most dead letters one answer lists.
const MAX_DEAD_LETTERS: usize = 1000;

/// `GET /admin/notifications/dead-letters`: oldest first.
pub(crate) async fn dead_letters(req: HttpRequest, broker: web::Data<Broker>) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    let params: DeadLettersParams = query(&req)?;
    let limit = params.limit.unwrap_or(100).min(MAX_DEAD_LETTERS);
    let dead = ask(&broker, DeadLetters { limit }).await?;
    Ok(HttpResponse::Ok().json(json!({ "deadLetters": dead })))
}

/// `POST /admin/notifications/dead-letters/{key}/retry`.
pub(crate) async fn retry_dead_letter(
    req: HttpRequest,
    path: web::Path<String>,
    broker: web::Data<Broker>,
) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    let key = path.into_inner();
    ask(&broker, RetryDeadLetter(key.clone())).await?;
    Ok(HttpResponse::Accepted().json(json!({ "key": key, "state": "pending" })))
}

/// `DELETE /admin/notifications/dead-letters/{key}`.
pub(crate) async fn discard_dead_letter(
    req: HttpRequest,
    path: web::Path<String>,
    broker: web::Data<Broker>,
) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    ask(&broker, DiscardDeadLetter(path.into_inner())).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_files_read_as_json_object_json_array_or_toml() {
        let json_object =
            r#"{"rules": [{"id": "a", "url": "http://h", "types": ["tool-result"]}]}"#;
        let json_array = r#"[{"id": "a", "url": "http://h", "types": ["tool-result"]}]"#;
        let toml = "[[rules]]\nid = \"a\"\nurl = \"http://h\"\ntypes = [\"tool-result\"]\n";
        for (name, text) in [
            ("r.json", json_object),
            ("r.json", json_array),
            ("r.toml", toml),
        ] {
            let specs = parse_rules(Path::new(name), text).unwrap();
            assert_eq!(specs.len(), 1, "{name}");
            assert_eq!(specs[0].id, "a");
            assert_eq!(specs[0].types, vec!["tool-result".to_owned()]);
        }
        assert!(parse_rules(Path::new("r.json"), r#"{"rulez": []}"#).is_err());
    }
}
