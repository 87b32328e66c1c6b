//! HTTP routes (PROTOCOL.md 3) and the WebSocket upgrade at `/` and `/ws`.
//!
//! Every error leaves as `{"error":{"code":…,"message":…}}` with a stable
//! code from [`ErrorCode`], plus `field`, `rule` and `index` when one event of
//! a batch is at fault, so a producer can fix exactly that.

use crate::server::Broker;
use crate::{analytics, asyncapi, monitor, notifications, openapi, sse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError, Route};
use agent_events_actors::auth::{AuthError, Grant, Role};
use agent_events_actors::emitter::{Ingest, IngestError};
use agent_events_actors::event::{format_timestamp, AgentEvent, EventType, ValidationError};
use agent_events_actors::idempotency::IdempotencyKey;
use agent_events_actors::limits::{ConnectionPermit, Refusal};
use agent_events_actors::protocol::ErrorCode;
use agent_events_actors::redis_subscriber::ClusterView;
use agent_events_actors::send_queue::Connection;
use agent_events_actors::session;
use agent_events_actors::socket::ConnectionSocket;
use agent_events_actors::store::{EventQuery, ExecutionQuery, ExecutionStatus, StoreError};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

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
    route(Method::POST, "/api/events", Access::Producer, "Publish one event or an array of events", || web::to(ingest)),
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

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for spec in ROUTES {
        cfg.route(spec.path, (spec.handler)().method(spec.method.clone()));
    }
    cfg.configure(monitor::configure);
}

/// An HTTP error with its stable code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    /// The stable code (the ingest counts refusals by it).
    pub(crate) code: ErrorCode,
    message: String,
    validation: Option<ValidationError>,
    index: Option<usize>,
}

impl ApiError {
    /// An error of `code`, with the HTTP status that code maps to.
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let status = match code {
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ShuttingDown | ErrorCode::StoreUnavailable | ErrorCode::RedisUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden | ErrorCode::OriginNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            code,
            message: message.into(),
            validation: None,
            index: None,
        }
    }

    fn invalid_event(index: usize, validation: ValidationError) -> Self {
        let code = match validation.rule {
            agent_events_actors::event::Rule::TooLarge => ErrorCode::PayloadTooLarge,
            _ => ErrorCode::InvalidEvent,
        };
        ApiError {
            index: Some(index),
            message: format!("event {index}: {validation}"),
            validation: Some(validation),
            ..ApiError::new(code, "")
        }
    }

    /// `store-unavailable`: the store could not answer.
    pub(crate) fn store(err: StoreError) -> Self {
        ApiError::new(
            ErrorCode::StoreUnavailable,
            format!("the store cannot answer: {err}"),
        )
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        ApiError::new(err.code, err.message)
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        ApiError {
            index: err.index,
            validation: err.validation,
            ..ApiError::new(err.code, err.message)
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut error = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(validation) = &self.validation {
            error["field"] = json!(validation.field);
            error["rule"] = json!(validation.rule.as_str());
        }
        if let Some(index) = self.index {
            error["index"] = json!(index);
        }
        HttpResponse::build(self.status).json(json!({ "error": error }))
    }
}

type ApiResult = Result<HttpResponse, ApiError>;

/// `/`: the seed's WebSocket endpoint; a plain browser visit gets the monitor.
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

/// A slot for this request's connection (see [`admit`]) and its socket, as
/// the server recorded it on accepting it: what the response body holds
/// until the server lets go of the connection.
pub(crate) fn connection(req: &HttpRequest, broker: &Broker) -> Result<Connection, ApiError> {
    Ok(Connection {
        permit: Some(admit(req, broker)?),
        socket: req.conn_data::<ConnectionSocket>().copied(),
    })
}

/// A connection slot for this request's address, or 503 `too-many-connections`.
pub(crate) fn admit(req: &HttpRequest, broker: &Broker) -> Result<ConnectionPermit, ApiError> {
    let ip = req
        .peer_addr()
        .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    broker.connections.admit(ip).map_err(|refusal| {
        let message = match refusal {
            Refusal::Total(max) => format!("the broker holds its maximum of {max} connections"),
            Refusal::PerAddress(max) => format!("{max} connections are open from this address"),
        };
        ApiError::new(ErrorCode::TooManyConnections, message)
    })
}

/// The producer's events fit its rate (its token's subject, or its address).
fn check_producer_rate(
    req: &HttpRequest,
    broker: &Broker,
    grant: Option<&Grant>,
    events: usize,
) -> Result<(), ApiError> {
    let key = match grant {
        Some(grant) => format!("sub:{}", grant.subject()),
        None => format!(
            "ip:{}",
            req.peer_addr()
                .map_or_else(String::new, |a| a.ip().to_string())
        ),
    };
    if broker.producers.take(&key, events as f64) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "more than {} events a second from this producer; retry with backoff",
            broker.config.max_events_per_sec_per_producer
        ),
    ))
}

fn is_websocket_upgrade(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The request header naming a batch for idempotent retries.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The response header set (to `true`) on the answer to a retry: the
/// receipt is the first attempt's, nothing was sequenced again.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// The batch's `Idempotency-Key`, if the request has one; 400 `bad-request`
/// for one that breaks the syntax (`IdempotencyKey::new`) or is given twice.
fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "more than one Idempotency-Key header",
        ));
    }
    let text = value.to_str().map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "an Idempotency-Key is visible ASCII (`!` to `~`, no space)",
        )
    })?;
    IdempotencyKey::new(text)
        .map(Some)
        .map_err(|err| ApiError::new(ErrorCode::BadRequest, err.to_string()))
}

/// `POST /api/events`: one event or an array; 202 once stored.
async fn ingest(req: HttpRequest, body: web::Payload, broker: web::Data<Broker>) -> ApiResult {
    let grant = broker.guard.require(&req, Role::Producer)?;
    let key = idempotency_key(&req).inspect_err(|err| {
        broker
            .metrics
            .events_rejected
            .with_label_values(&[err.code.as_str()])
            .inc();
    })?;
    let bytes = read_body(
        body,
        broker.config.max_body_bytes,
        Duration::from_millis(broker.config.request_body_timeout_ms),
    )
    .await;
    let events = bytes
        .and_then(|bytes| parse_events(&bytes, &broker))
        .and_then(|events| {
            let forbidden = grant
                .as_ref()
                .and_then(|g| events.iter().position(|e| !g.may_produce(&e.execution_id)));
            match forbidden {
                Some(index) => Err(ApiError {
                    index: Some(index),
                    ..ApiError::new(
                        ErrorCode::Forbidden,
                        "the token may not produce to this execution",
                    )
                }),
                None => Ok(events),
            }
        })
        .and_then(|events| {
            check_producer_rate(&req, &broker, grant.as_ref(), events.len()).map(|()| events)
        })
        .inspect_err(|err| {
            // Refusals past this point are counted by the Emitter.
            broker
                .metrics
                .events_rejected
                .with_label_values(&[err.code.as_str()])
                .inc();
        })?;
    let batch = match key {
        Some(key) => Ingest::keyed(key, events.clone()),
        None => Ingest::new(events.clone()),
    };
    let receipt = broker
        .emitter
        .send(batch)
        .await
        .map_err(|_| ApiError::new(ErrorCode::ShuttingDown, "the broker is stopping"))??;
    let provisional = receipt.provisional;
    let replayed = receipt.replayed;
    let accepted = receipt.durable().await?;
    let listed: Vec<Value> = events
        .iter()
        .zip(&accepted)
        .map(|(event, a)| match a.seq {
            Some(seq) => json!({"executionId": event.execution_id, "seq": seq}),
            None => json!({"executionId": event.execution_id, "seq": null, "coalesced": true}),
        })
        .collect();
    let mut answer = json!({"accepted": accepted.len(), "events": listed});
    if provisional {
        // Cluster fallback: journaled here, seqs provisional until Redis answers.
        answer["provisional"] = json!(true);
    }
    let mut response = HttpResponse::Accepted();
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    Ok(response.json(answer))
}

/// Reads the body up to `limit` bytes, answering 413 past it without reading on.
/// Within `timeout`: the head timeout ends where the body begins, and a body
/// trickled a byte at a time must not hold the request forever.
async fn read_body(
    mut body: web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<web::BytesMut, ApiError> {
    let read = async {
        let mut bytes = web::BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(ErrorCode::BadRequest, format!("reading the body: {e}"))
            })?;
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("bodies are limited to {limit} bytes"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("the body did not arrive within {} ms", timeout.as_millis()),
            ))
        })
}

/// One event or an array of them; each checked for size, then every rule.
fn parse_events(bytes: &[u8], broker: &Broker) -> Result<Vec<AgentEvent>, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::new(ErrorCode::BadJson, "the body is not UTF-8"))?;
    let bad_json =
        |e: serde_json::Error| ApiError::new(ErrorCode::BadJson, format!("not JSON: {e}"));
    let max_batch = broker.config.max_batch_events;
    let raws: Vec<&RawValue> = if text.trim_start().starts_with('[') {
        bounded_array(text, max_batch)
            .map_err(bad_json)?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("more than {max_batch} events in one request"),
                )
            })?
    } else {
        vec![serde_json::from_str(text).map_err(bad_json)?]
    };
    if raws.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "no events in the array",
        ));
    }
    raws.iter()
        .enumerate()
        .map(|(index, raw)| parse_event(index, raw, broker.config.max_event_bytes))
        .collect()
}

/// The items of a JSON array, or `None` as soon as there are more than
/// `limit`. Why not parse it whole and count: a body of millions of tiny
/// items (`[0,0,0,…]`, within `max_body_bytes`) would be parsed in full
/// before being refused, on a worker thread that other clients share
/// (tests/hostile.rs measured seconds of stall).
fn bounded_array(text: &str, limit: usize) -> Result<Option<Vec<&RawValue>>, serde_json::Error> {
    use serde::de::{Deserializer as _, Error as _, SeqAccess, Visitor};
    use std::cell::Cell;

    struct Items<'a> {
        limit: usize,
        overflow: &'a Cell<bool>,
    }
    impl<'de> Visitor<'de> for Items<'_> {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an array of events")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<&'de RawValue>()? {
                if items.len() == self.limit {
                    self.overflow.set(true);
                    return Err(A::Error::custom("too many items"));
                }
                items.push(item);
            }
            Ok(items)
        }
    }
    let overflow = Cell::new(false);
    let mut input = serde_json::Deserializer::from_str(text);
    let items = input.deserialize_seq(Items {
        limit,
        overflow: &overflow,
    });
    match items {
        _ if overflow.get() => Ok(None),
        Ok(items) => input.end().map(|()| Some(items)),
        Err(err) => Err(err),
    }
}

fn parse_event(index: usize, raw: &RawValue, max_bytes: usize) -> Result<AgentEvent, ApiError> {
    if raw.get().len() > max_bytes {
        let too_large = ValidationError {
            field: String::new(),
            rule: agent_events_actors::event::Rule::TooLarge,
            message: format!("events are limited to {max_bytes} bytes"),
        };
        return Err(ApiError::invalid_event(index, too_large));
    }
    let value: Value = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::new(ErrorCode::BadJson, e.to_string()))?;
    AgentEvent::from_producer_json(value).map_err(|v| ApiError::invalid_event(index, v))
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

/// Most events or executions one page returns.
const MAX_PAGE: usize = 1000;
/// A page's size when the query does not say.
const DEFAULT_PAGE: usize = 100;

fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_PAGE) {
        0 => Err(ApiError::new(
            ErrorCode::BadRequest,
            "limit must be at least 1",
        )),
        n => Ok(n.min(MAX_PAGE)),
    }
}

/// `types=a,b` as event types; an unknown name is a `bad-request`.
pub(crate) fn parse_types(types: Option<&str>) -> Result<Option<Vec<EventType>>, ApiError> {
    let Some(types) = types else { return Ok(None) };
    types
        .split(',')
        .map(|name| {
            EventType::parse(name.trim()).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("types: `{name}` is not an event type"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The request's query string as `T`; a bad one is a `bad-request`.
pub(crate) fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))
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

    #[test]
    fn types_are_parsed_or_refused() {
        assert_eq!(
            parse_types(Some("tool-call, tool-result")).unwrap(),
            Some(vec![EventType::ToolCall, EventType::ToolResult])
        );
        assert_eq!(
            parse_types(Some("tool-call,nope")).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(page_size(Some(5000)).unwrap(), MAX_PAGE);
        assert!(page_size(Some(0)).is_err());
    }
}
