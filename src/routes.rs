//! The route table ([`ROUTES`], every route the broker serves, documented
//! or not served at all: docs/protocol.md 3), the WebSocket upgrade at `/`
//! and `/ws`, and the small read-only handlers. `POST /api/events` is in
//! `ingest.rs`; what handlers share (errors, query parsing, admission) in
//! `api.rs`.

use crate::api::{connection, page_size, parse_types, query, ApiError, ApiResult};
use crate::ingest;
use crate::server::Broker;
use crate::{analytics, asyncapi, monitor, notifications, openapi, sse};
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError, Route};
use agent_events_actors::auth::Role;
use agent_events_actors::event::format_timestamp;
use agent_events_actors::protocol::ErrorCode;
use agent_events_actors::redis_subscriber::ClusterView;
use agent_events_actors::session;
use agent_events_actors::store::{EventQuery, ExecutionQuery, ExecutionStatus};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

/// Who may call a route when authentication is on: the role its handler
/// asks the guard for. Documentation (OpenAPI `security`), checked against
/// the running broker by tests/api_spec.rs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, token or not.
    Public,
    /// A WebSocket: a token at the upgrade is optional, else the `auth` message.
    Session,
    /// A token with the `subscriber` role that may watch the execution or conversation.
    Subscriber,
    /// A token with the `producer` role.
    Producer,
    /// A token with the `admin` role.
    Admin,
}

/// One HTTP route: method, path pattern, who may call it, a summary, and the handler.
pub struct RouteSpec {
    /// The method it answers.
    pub method: Method,
    /// The path pattern, `{name}` for a path parameter.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// Builds the route (the method is added by [`configure`]).
    handler: fn() -> Route,
}

/// Shorthand for a line of [`ROUTES`].
const fn route(
    method: Method,
    path: &'static str,
    access: Access,
    summary: &'static str,
    handler: fn() -> Route,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
        summary,
        handler,
    }
}

/// Every route, one line each, but the monitor's asset files
/// ([`monitor::asset_paths`]). Why a table: [`configure`] registers exactly
/// these and `GET /api/openapi.json` is built from them, so a route cannot be
/// served without showing up in the API reference (tests/api_spec.rs checks
/// each line's `Access` against the running broker). Register routes here only.
#[rustfmt::skip]
pub static ROUTES: &[RouteSpec] = &[
    route(Method::GET, "/", Access::Session, "The WebSocket (an upgrade), or the monitor page for a browser", || web::to(root)),
    route(Method::GET, "/ws", Access::Session, "The WebSocket (see the AsyncAPI document at /api/ws)", || web::to(websocket)),
    route(Method::POST, "/api/events", Access::Producer, "Publish one event or an array of events", || web::to(ingest::ingest)),
    route(Method::GET, "/api/executions", Access::Admin, "Recent executions, newest first", || web::to(list_executions)),
    route(Method::GET, "/api/executions/{id}/events", Access::Admin, "Stored events of an execution in seq order", || web::to(execution_events)),
    route(Method::GET, "/api/executions/{id}/stats", Access::Admin, "Statistics of one execution", || web::to(execution_stats)),
    route(Method::GET, "/api/executions/{id}/stream", Access::Subscriber, "An execution's events as Server-Sent Events", || web::to(sse::execution_stream)),
    route(Method::GET, "/api/conversations/{id}/stream", Access::Subscriber, "A conversation's events as Server-Sent Events", || web::to(sse::conversation_stream)),
    route(Method::GET, "/api/executions/{id}/ag-ui", Access::Subscriber, "An execution as AG-UI events over Server-Sent Events", || web::to(sse::ag_ui_stream)),
    route(Method::GET, "/api/analytics", Access::Admin, "Figures over a time window", || web::to(analytics::analytics)),
    route(Method::GET, "/api/ws", Access::Public, "The WebSocket protocol as an AsyncAPI 3.0 document", || web::to(asyncapi_doc)),
    route(Method::GET, "/api/openapi.json", Access::Public, "The HTTP API as an OpenAPI 3.1 document", || web::to(openapi_doc)),
    route(Method::GET, "/health", Access::Public, "Liveness and the state of the store and Redis", || web::to(health)),
    route(Method::GET, "/admin/stats", Access::Admin, "Connections, subscriptions, events in and out, drops", || web::to(admin_stats)),
    route(Method::GET, "/metrics", Access::Admin, "The same figures as Prometheus text", || web::to(metrics)),
    route(Method::GET, "/analytics", Access::Public, "The analytics page (its data comes from /api/analytics)", || web::to(monitor::analytics_page)),
    route(Method::GET, "/admin/notifications/rules", Access::Admin, "Notification rules, from the rules file and the admin API", || web::to(notifications::list_rules)),
    route(Method::POST, "/admin/notifications/rules", Access::Admin, "Adds (201) or replaces (200) a notification rule", || web::to(notifications::put_rule)),
    route(Method::DELETE, "/admin/notifications/rules/{id}", Access::Admin, "Removes a rule added through the admin API (204)", || web::to(notifications::delete_rule)),
    route(Method::GET, "/admin/notifications/dead-letters", Access::Admin, "Deliveries that used every attempt", || web::to(notifications::dead_letters)),
    route(Method::POST, "/admin/notifications/dead-letters/{key}/retry", Access::Admin, "Puts a dead letter back to pending (202)", || web::to(notifications::retry_dead_letter)),
    route(Method::DELETE, "/admin/notifications/dead-letters/{key}", Access::Admin, "Discards a dead letter (204)", || web::to(notifications::discard_dead_letter)),
];

/// Registers every route; a GET route answers HEAD too (`monitor::get_or_head`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    for spec in ROUTES {
        let route = (spec.handler)();
        let route = if spec.method == Method::GET {
            route.guard(monitor::get_or_head())
        } else {
            route.method(spec.method.clone())
        };
        cfg.route(spec.path, route);
    }
    cfg.configure(monitor::configure);
}

/// `/`: the original WebSocket endpoint; a plain browser visit gets the monitor.
async fn root(
    req: HttpRequest,
    body: web::Payload,
    broker: web::Data<Broker>,
) -> actix_web::Result<HttpResponse> {
    if is_websocket_upgrade(&req) {
        return websocket(req, body, broker).await;
    }
    Ok(monitor::index())
}

/// The upgrade: Origin first (cross-site WebSocket hijacking), then the
/// token if the upgrade carries one (a bad one is refused before upgrading).
async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    broker: web::Data<Broker>,
) -> actix_web::Result<HttpResponse> {
    if !broker.guard.origin_allowed(&req) {
        let err = ApiError::new(
            ErrorCode::OriginNotAllowed,
            "this Origin may not open a WebSocket here",
        );
        return Ok(err.error_response());
    }
    let grant = match broker.guard.upgrade_grant(&req) {
        Ok(grant) => grant,
        Err(err) => return Ok(ApiError::from(err).error_response()),
    };
    let connection = match connection(&req, &broker) {
        Ok(connection) => connection,
        Err(err) => return Ok(err.error_response()),
    };
    session::upgrade(&req, body, broker.session_deps.clone(), grant, connection)
}

fn is_websocket_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Query of `GET /api/executions/{id}/events`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EventsParams {
    after_seq: Option<u64>,
    types: Option<String>,
    agent_id: Option<String>,
    department: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/executions/{id}/events`: stored events in seq order, a page at a time.
async fn execution_events(
    req: HttpRequest,
    path: web::Path<String>,
    broker: web::Data<Broker>,
) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    let params: EventsParams = query(&req)?;
    let limit = page_size(params.limit)?;
    let execution_id = path.into_inner();
    let query = EventQuery {
        execution_id: execution_id.clone(),
        after_seq: params.after_seq.unwrap_or(0),
        before_seq: None,
        types: parse_types(params.types.as_deref())?,
        agent_id: params.agent_id,
        department: params.department,
        limit,
    };
    let events = broker.store.events(query).await.map_err(ApiError::store)?;
    // A full page may have more behind it: the cursor is the last seq seen.
    let next_after_seq = events
        .last()
        .filter(|_| events.len() == limit)
        .and_then(|e| e.seq);
    Ok(HttpResponse::Ok().json(json!({
        "executionId": execution_id,
        "events": events,
        "nextAfterSeq": next_after_seq,
    })))
}

/// `GET /api/executions/{id}/stats`.
async fn execution_stats(
    req: HttpRequest,
    path: web::Path<String>,
    broker: web::Data<Broker>,
) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    let execution_id = path.into_inner();
    match broker
        .store
        .execution_stats(&execution_id)
        .await
        .map_err(ApiError::store)?
    {
        Some(stats) => Ok(HttpResponse::Ok().json(stats)),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no stored event for execution `{execution_id}`"),
        )),
    }
}

/// Query of `GET /api/executions`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ExecutionsParams {
    conversation_id: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /api/executions`: newest first, a page at a time.
async fn list_executions(req: HttpRequest, broker: web::Data<Broker>) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    let params: ExecutionsParams = query(&req)?;
    let limit = page_size(params.limit)?;
    let status = params
        .status
        .map(|s| {
            ExecutionStatus::parse(&s).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    "status must be running, success, failed or partial",
                )
            })
        })
        .transpose()?;
    let query = ExecutionQuery {
        conversation_id: params.conversation_id,
        status,
        before: params.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    let executions = broker
        .store
        .executions(query)
        .await
        .map_err(ApiError::store)?;
    let next_cursor = executions
        .last()
        .filter(|_| executions.len() == limit)
        .map(|e| encode_cursor(e.started_at, &e.execution_id));
    Ok(HttpResponse::Ok().json(json!({"executions": executions, "nextCursor": next_cursor})))
}

/// A position in the executions list: `<started_at in ms>_<execution id>`.
fn encode_cursor(started_at: DateTime<Utc>, execution_id: &str) -> String {
    format!("{}_{execution_id}", started_at.timestamp_millis())
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, String), ApiError> {
    let bad = || ApiError::new(ErrorCode::BadRequest, "cursor is not one this API returned");
    let (millis, id) = cursor.split_once('_').ok_or_else(bad)?;
    let millis: i64 = millis.parse().map_err(|_| bad())?;
    let at = DateTime::from_timestamp_millis(millis).ok_or_else(bad)?;
    Ok((at, id.to_owned()))
}

/// `GET /api/ws`: the WebSocket protocol as AsyncAPI.
async fn asyncapi_doc() -> HttpResponse {
    HttpResponse::Ok().json(asyncapi::document())
}

/// `GET /api/openapi.json`: the HTTP API as OpenAPI.
async fn openapi_doc() -> HttpResponse {
    HttpResponse::Ok().json(openapi::document())
}

/// `GET /health`: 200 while serving (`ok` or `degraded`, with why).
async fn health(broker: web::Data<Broker>) -> HttpResponse {
    let failing = broker.backlog.failing();
    let store = json!({
        "backend": broker.store.name(),
        "state": if failing.is_some() { "failing" } else { "ok" },
        "error": failing,
        "backlog": broker.backlog.len(),
    });
    let redis_failing = broker.cluster.as_ref().and_then(|c| c.health.failing());
    let redis = match &broker.cluster {
        None => json!({"state": "disabled"}),
        Some(cluster) => json!({
            "state": if redis_failing.is_some() { "failing" } else { "ok" },
            "error": redis_failing,
            "nodeId": cluster.node_id,
        }),
    };
    let degraded = failing.is_some() || redis_failing.is_some();
    HttpResponse::Ok().json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "uptimeSecs": broker.started_at.elapsed().as_secs(),
        "store": store,
        "redis": redis,
    }))
}

/// `GET /admin/stats`: connections, subscriptions, events in and out, drops.
async fn admin_stats(req: HttpRequest, broker: web::Data<Broker>) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    let mut stats = broker.metrics.snapshot();
    stats["storeBacklog"] = json!(broker.backlog.len());
    stats["uptimeSecs"] = json!(broker.started_at.elapsed().as_secs());
    stats["now"] = json!(format_timestamp(Utc::now()));
    if let Some(cluster) = &broker.cluster {
        let nodes = cluster
            .subscriber
            .send(ClusterView)
            .await
            .unwrap_or_default();
        stats["node"] = json!(cluster.node_id);
        stats["clusterNodes"] = json!(nodes);
    }
    Ok(HttpResponse::Ok().json(stats))
}

/// `GET /metrics`: the same figures as Prometheus text.
async fn metrics(req: HttpRequest, broker: web::Data<Broker>) -> ApiResult {
    broker.guard.require(&req, Role::Admin)?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(broker.metrics.prometheus_text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_with_underscores_in_ids() {
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let cursor = encode_cursor(at, "exec_1:a");
        assert_eq!(decode_cursor(&cursor).unwrap(), (at, "exec_1:a".to_owned()));
        assert!(decode_cursor("nonsense").is_err());
    }
}
