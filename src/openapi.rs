//! `GET /api/openapi.json`: the HTTP API as an OpenAPI 3.1 document.
//!
//! Built from the route table ([`routes::ROUTES`]), so a route cannot be
//! served without being documented: each line of the table gives the path,
//! method, summary and who may call it, and [`details`] adds what is known of
//! a route beyond that (query parameters traced from the handlers' own query
//! structs, bodies, answers). A route without details still gets its path
//! parameters, security and error answers. Event schemas are shared with the
//! AsyncAPI document ([`asyncapi::schemas`]).

use crate::routes::{self, Access, RouteSpec, ROUTES};
use crate::{analytics, asyncapi, monitor, schema, sse};
use agent_events_actors::event::EventType;
use agent_events_actors::store::analytics::{Analytics, AnalyticsQuery};
use agent_events_actors::store::{ExecutionStats, ExecutionStatus, ExecutionSummary, ScoreSummary};
use chrono::DateTime;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The content type of Server-Sent Events.
const SSE: &str = "text/event-stream";

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for spec in ROUTES {
        let method = spec.method.as_str().to_ascii_lowercase();
        let item = paths.entry(spec.path).or_insert_with(|| json!({}));
        item[method] = operation(spec);
    }
    for (path, content_type) in monitor::asset_paths() {
        let mut answer = text_answer("the file", content_type);
        answer.insert(
            "304".into(),
            json!({"description": "the browser's copy (If-None-Match) is current"}),
        );
        paths.insert(
            path.into(),
            json!({
                "get": {"summary": format!("The monitor's {path}"), "tags": ["monitor"],
                        "security": [{}], "responses": answer},
                "head": {"summary": format!("Headers of {path}"), "tags": ["monitor"],
                         "security": [{}], "responses": answer},
            }),
        );
    }
    let mut schemas = asyncapi::schemas();
    schemas.extend(http_schemas());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "agent-events HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Publish agent events, read stored executions, stream them as \
                Server-Sent Events, and watch the broker. The WebSocket protocol is an AsyncAPI \
                document at /api/ws. Every error answers `{\"error\":{\"code\",\"message\"}}` \
                with a stable code.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "http://localhost:3001", "description": "the broker (WS_PORT)"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A JWT whose role (subscriber, producer, admin) allows the route. \
                        Required only when the broker has auth on."},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token",
                    "description": "The same JWT as ?token=, for EventSource and pages; may end up \
                        in access logs, so prefer the header."},
            },
            "responses": error_responses(),
        },
        "x-error-codes": asyncapi::error_codes(),
    })
}

/// The operation of one table line: its summary and security, then its details.
fn operation(spec: &RouteSpec) -> Value {
    let mut op = json!({
        "operationId": operation_id(spec),
        "summary": spec.summary,
        "tags": [tag(spec.path)],
        "security": security(spec.access),
        "responses": {},
    });
    if let Some(role) = role(spec.access) {
        // Which role, since OpenAPI's bearer scheme cannot say (tests/api_spec.rs probes it).
        op["x-required-role"] = json!(role);
    }
    let mut parameters: Vec<Value> = path_parameters(spec.path)
        .map(|name| {
            json!({"name": name, "in": "path", "required": true,
                   "schema": {"$ref": "#/components/schemas/Id"}})
        })
        .collect();
    let details = details(spec);
    if let Some(query) = &details.query {
        parameters.extend(query_parameters(query));
    }
    parameters.extend(details.headers);
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(body) = details.body {
        op["requestBody"] = body;
    }
    let responses = op["responses"].as_object_mut().expect("an object");
    responses.extend(details.responses);
    if responses.is_empty() {
        responses.insert("200".into(), json!({"description": "OK"}));
    }
    // Errors every route of its kind can answer.
    let mut errors = vec!["500"];
    if spec.path.contains('{') || details.query.is_some() || spec.method == "POST" {
        errors.push("400");
    }
    if matches!(
        spec.access,
        Access::Subscriber | Access::Producer | Access::Admin
    ) {
        errors.extend(["401", "403"]);
    }
    if spec.path.starts_with("/api/") && spec.access != Access::Public {
        errors.push("503");
    }
    for status in errors {
        responses
            .entry(status)
            .or_insert_with(|| json!({"$ref": format!("#/components/responses/{status}")}));
    }
    op
}

/// `GET /api/executions/{id}/events` → `getApiExecutionsIdEvents`.
fn operation_id(spec: &RouteSpec) -> String {
    let mut id = spec.method.as_str().to_ascii_lowercase();
    for word in spec.path.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            id.push(first.to_ascii_uppercase());
            id.push_str(chars.as_str());
        }
    }
    if spec.path == "/" {
        id.push_str("Root");
    }
    id
}

/// Groups operations by the first word of their path.
fn tag(path: &str) -> &'static str {
    match path {
        "/" | "/ws" => "websocket",
        "/api/ws" | "/api/openapi.json" => "reference",
        "/health" | "/admin/stats" | "/metrics" => "operations",
        "/api/events" => "ingest",
        "/analytics" => "monitor",
        p if p.ends_with("/stream") || p.ends_with("/ag-ui") => "streams",
        _ => "query",
    }
}

/// The names inside `{…}` in a path pattern.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// OpenAPI `security` for an access level: `{}` means "no token needed".
fn security(access: Access) -> Value {
    match access {
        Access::Public => json!([{}]),
        // A WebSocket may authenticate later with its `auth` message.
        Access::Session => json!([{}, {"bearer": []}, {"queryToken": []}]),
        Access::Subscriber | Access::Producer | Access::Admin => {
            json!([{"bearer": []}, {"queryToken": []}])
        }
    }
}

/// The role a token needs for an access level, if any.
fn role(access: Access) -> Option<&'static str> {
    match access {
        Access::Public | Access::Session => None,
        Access::Subscriber => Some("subscriber"),
        Access::Producer => Some("producer"),
        Access::Admin => Some("admin"),
    }
}

/// What a table line does not say about a route.
#[derive(Default)]
struct Details {
    /// The schema of its query struct, traced from serde.
    query: Option<Value>,
    /// Header parameters.
    headers: Vec<Value>,
    /// `requestBody`.
    body: Option<Value>,
    /// Its own answers, by status.
    responses: Map<String, Value>,
}

/// The query parameters of a route, from its query struct.
fn query_of<T: DeserializeOwned>() -> Option<Value> {
    Some(schema::schema_of::<T>())
}

/// One query parameter a property of a query struct.
fn query_parameters(query: &Value) -> Vec<Value> {
    let required: Vec<&Value> = query["required"].as_array().into_iter().flatten().collect();
    query["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, schema)| {
            let mut parameter = json!({
                "name": name,
                "in": "query",
                "required": required.contains(&&Value::String(name.clone())),
                "schema": if schema.as_object().is_some_and(|o| o.is_empty()) {
                    json!({"type": "string"})
                } else {
                    schema.clone()
                },
            });
            if let Some(description) = query_description(name) {
                parameter["description"] = json!(description);
            }
            parameter
        })
        .collect()
}

/// Words for a query parameter, by name (the same name means the same thing everywhere).
fn query_description(name: &str) -> Option<&'static str> {
    Some(match name {
        "token" => "the JWT, for clients that cannot set Authorization (see securitySchemes)",
        "types" => "comma-separated event types",
        "fromSeq" => "start after this seq (replay), as a reconnecting client would",
        "afterSeq" => "events with seq greater than this; nextAfterSeq of the previous page",
        "limit" => "page size, 1 to 1000 (default 100)",
        "cursor" => "nextCursor of the previous page",
        "status" => "running, success, failed or partial",
        "from" => "RFC 3339; start of the window (default: an hour before `to`)",
        "to" => "RFC 3339; end of the window, exclusive (default: now)",
        "bucketSecs" => "width of the events-per-second buckets (default: about 60 buckets)",
        _ => return None,
    })
}

/// `200` with a JSON body of `schema`.
fn json_answer(description: &str, schema: Value) -> Map<String, Value> {
    answer(description, "application/json", schema)
}

/// `200` with a body of text: a page, Prometheus text, a stream of
/// Server-Sent Events.
fn text_answer(description: &str, content_type: &str) -> Map<String, Value> {
    answer(description, content_type, json!({"type": "string"}))
}

fn answer(description: &str, content_type: &str, schema: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(
        "200".into(),
        json!({"description": description, "content": {content_type: {"schema": schema}}}),
    );
    map
}

/// What is known of each route beyond its table line.
fn details(spec: &RouteSpec) -> Details {
    match (spec.method.as_str(), spec.path) {
        ("GET", "/") => websocket_details(true),
        ("GET", "/ws") => websocket_details(false),
        ("POST", "/api/events") => ingest_details(),
        ("GET", "/api/executions") => Details {
            query: query_of::<routes::ExecutionsParams>(),
            responses: json_answer(
                "a page of executions",
                json!({"type": "object", "required": ["executions", "nextCursor"], "properties": {
                    "executions": {"type": "array", "items": schema_ref("ExecutionSummary")},
                    "nextCursor": {"type": ["string", "null"]},
                }}),
            ),
            ..Details::default()
        },
        ("GET", "/api/executions/{id}/events") => Details {
            query: query_of::<routes::EventsParams>(),
            responses: json_answer(
                "a page of stored events in seq order",
                json!({"type": "object", "required": ["executionId", "events", "nextAfterSeq"],
                "properties": {
                    "executionId": schema_ref("Id"),
                    "events": {"type": "array", "items": schema_ref("AgentEvent")},
                    "nextAfterSeq": {"type": ["integer", "null"]},
                }}),
            ),
            ..Details::default()
        },
        ("GET", "/api/executions/{id}/stats") => {
            let mut responses = json_answer("statistics", schema_ref("ExecutionStats"));
            responses.insert("404".into(), json!({"$ref": "#/components/responses/404"}));
            Details {
                responses,
                ..Details::default()
            }
        }
        ("GET", "/api/executions/{id}/stream") => stream_details(
            query_of::<sse::StreamParams>(),
            "events: id = seq, event = type, data = the event",
        ),
        ("GET", "/api/conversations/{id}/stream") => stream_details(
            query_of::<sse::StreamParams>(),
            "events of every execution: id = executionId:seq",
        ),
        ("GET", "/api/executions/{id}/ag-ui") => stream_details(
            query_of::<sse::AgUiParams>(),
            "AG-UI events (docs/ag-ui.md)",
        ),
        ("GET", "/api/analytics") => Details {
            query: query_of::<analytics::Params>(),
            responses: json_answer("figures of the window", schema_ref("Analytics")),
            ..Details::default()
        },
        ("GET", "/api/ws") => Details {
            responses: json_answer(
                "the AsyncAPI 3.0 document",
                json!({"type": "object", "required": ["asyncapi"]}),
            ),
            ..Details::default()
        },
        ("GET", "/api/openapi.json") => Details {
            responses: json_answer(
                "this document",
                json!({"type": "object", "required": ["openapi"]}),
            ),
            ..Details::default()
        },
        ("GET", "/health") => Details {
            responses: json_answer("serving", schema_ref("Health")),
            ..Details::default()
        },
        ("GET", "/admin/stats") => Details {
            responses: json_answer(
                "the broker's counters (the same figures as /metrics)",
                json!({"type": "object"}),
            ),
            ..Details::default()
        },
        ("GET", "/metrics") => Details {
            responses: text_answer("Prometheus text exposition", "text/plain"),
            ..Details::default()
        },
        ("GET", "/analytics") => Details {
            responses: text_answer("the page", "text/html"),
            ..Details::default()
        },
        _ => Details::default(),
    }
}

/// `GET /` and `/ws`: the upgrade (and, at `/`, the monitor page for a browser).
fn websocket_details(with_monitor: bool) -> Details {
    let mut responses = if with_monitor {
        text_answer("the monitor page, for a browser", "text/html")
    } else {
        Map::new()
    };
    responses.insert(
        "101".into(),
        json!({"description": "Switching Protocols: the WebSocket of /api/ws (AsyncAPI)"}),
    );
    responses.insert("403".into(), json!({"$ref": "#/components/responses/403"}));
    Details {
        responses,
        ..Details::default()
    }
}

/// `POST /api/events`: the batch, the `Idempotency-Key`, and every answer.
fn ingest_details() -> Details {
    let mut responses = Map::new();
    responses.insert(
        "202".into(),
        json!({"description": "stored (durable) and published",
                       "content": {"application/json": {"schema": schema_ref("Accepted")}}}),
    );
    responses["202"]["headers"] = json!({"Idempotent-Replayed": {
        "description": "`true` on the answer to a retry: the first attempt's receipt; \
                        nothing was stored or delivered again",
        "schema": {"type": "string", "enum": ["true"]},
    }});
    for status in ["413", "422", "429"] {
        responses.insert(
            status.into(),
            json!({"$ref": format!("#/components/responses/{status}")}),
        );
    }
    let idempotency_key = json!({
        "name": "Idempotency-Key", "in": "header", "required": false,
        "schema": {"type": "string", "minLength": 1,
                   "maxLength": agent_events_actors::idempotency::MAX_KEY_LEN,
                   "pattern": "^[!-~]+$"},
        "description": "names the batch: a retry with the same key and the same events \
                        within idempotency_window_secs gets the first 202 again, and \
                        nothing is stored or delivered twice; the same key with other \
                        events is 422 idempotency-key-reused; a malformed key is 400 \
                        bad-request (docs/reference.md, Idempotent publish)",
    });
    Details {
        headers: vec![idempotency_key],
        body: Some(json!({
            "required": true,
            "content": {"application/json": {"schema": {"oneOf": [
                schema_ref("NewEvent"),
                {"type": "array", "items": schema_ref("NewEvent"), "minItems": 1},
            ]}}},
        })),
        responses,
        ..Details::default()
    }
}

/// An SSE route: its query, `Last-Event-ID`, and the stream it answers.
fn stream_details(query: Option<Value>, what: &str) -> Details {
    let last_event_id = json!({
        "name": "Last-Event-ID", "in": "header", "required": false,
        "schema": {"type": "string"},
        "description": "resume after this SSE id (sent by EventSource when it reconnects); wins over fromSeq",
    });
    Details {
        query,
        headers: vec![last_event_id],
        responses: text_answer(what, SSE),
        ..Details::default()
    }
}

/// A reference to a schema of `components`.
fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The error answers, all in the one error shape.
fn error_responses() -> Value {
    let mut responses = Map::new();
    for (status, description) in [
        ("400", "a bad request, body or event (bad-json, bad-request, invalid-event, …)"),
        ("401", "no valid token (unauthorized, token-expired)"),
        ("403", "the token or Origin does not allow this (forbidden, origin-not-allowed)"),
        ("404", "no such execution (not-found)"),
        ("413", "body or batch too large (payload-too-large)"),
        ("429", "too many events from this producer (rate-limited)"),
        (
            "422",
            "the Idempotency-Key already names a different batch (idempotency-key-reused)",
        ),
        ("500", "a failure inside the broker (internal)"),
        ("503", "retry later (store-unavailable, redis-unavailable, shutting-down, too-many-connections)"),
    ] {
        responses.insert(
            status.into(),
            json!({"description": description, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(responses)
}

/// Schemas of the HTTP bodies (the event schemas come from the AsyncAPI side).
fn http_schemas() -> Map<String, Value> {
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"$ref": "#/components/schemas/ErrorCode"},
                    "message": {"type": "string"},
                    "field": {"type": "string", "description": "the field of the event at fault"},
                    "rule": {"type": "string", "description": "the rule it broke (required, range, …)"},
                    "index": {"type": "integer", "minimum": 0,
                              "description": "which event of a batch is at fault"},
                },
            }},
        }),
    );
    let mut new_events = Vec::new();
    for event_type in EventType::ALL {
        let name = format!("New{}", asyncapi::event_schema_name(event_type));
        let mut schema = schema::event_schema(event_type, false);
        schema["description"] = json!(format!(
            "A `{event_type}` event as a producer sends it: no seq; timestamp optional."
        ));
        new_events.push(json!({"$ref": format!("#/components/schemas/{name}")}));
        schemas.insert(name, schema);
    }
    schemas.insert("NewEvent".into(), json!({"oneOf": new_events}));
    schemas.insert(
        "Accepted".into(),
        json!({
            "type": "object",
            "required": ["accepted", "events"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 1},
                "events": {"type": "array", "items": {
                    "type": "object",
                    "required": ["executionId", "seq"],
                    "properties": {
                        "executionId": {"$ref": "#/components/schemas/Id"},
                        "seq": {"type": ["integer", "null"], "minimum": 1},
                        "coalesced": {"type": "boolean",
                            "description": "an agent-thinking merged into a burst: no seq of its own"},
                    },
                }},
                "provisional": {"type": "boolean",
                    "description": "cluster fallback: journaled here, seqs provisional until Redis answers"},
            },
        }),
    );
    let (full, minimal) = summaries();
    schemas.insert(
        "ExecutionSummary".into(),
        schema::infer(&to_value(&full), &to_value(&minimal)),
    );
    schemas.insert("ExecutionStats".into(), stats_schema());
    schemas.insert("Analytics".into(), analytics_schema());
    schemas.insert(
        "Health".into(),
        json!({
            "type": "object",
            "required": ["status", "uptimeSecs", "store", "redis"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "uptimeSecs": {"type": "integer", "minimum": 0},
                "store": {"type": "object", "required": ["backend", "state", "backlog"]},
                "redis": {"type": "object", "required": ["state"]},
            },
        }),
    );
    schemas
}

/// An execution summary with every optional field set, and one with none.
fn summaries() -> (ExecutionSummary, ExecutionSummary) {
    let at = DateTime::from_timestamp_millis(0).expect("a valid time");
    let full = ExecutionSummary {
        execution_id: "e".into(),
        conversation_id: Some("c".into()),
        status: ExecutionStatus::Running,
        started_at: at,
        ended_at: Some(at),
        event_count: 1,
        last_seq: 1,
    };
    let minimal = ExecutionSummary {
        conversation_id: None,
        ended_at: None,
        ..full.clone()
    };
    (full, minimal)
}

/// `GET /api/executions/{id}/stats`, from samples of [`ExecutionStats`].
fn stats_schema() -> Value {
    let (summary_full, summary_minimal) = summaries();
    let score = ScoreSummary {
        count: 1,
        min: 1.0,
        avg: 1.0,
        max: 1.0,
    };
    let sample = |summary: ExecutionSummary, duration_ms: Option<i64>| {
        to_value(&ExecutionStats {
            summary,
            duration_ms,
            by_type: BTreeMap::new(),
            by_agent: BTreeMap::new(),
            by_department: BTreeMap::new(),
            tool_calls: 0,
            tool_failures: 0,
            quality_by_department: BTreeMap::from([("d".to_owned(), score.clone())]),
            reviews: BTreeMap::new(),
        })
    };
    let mut schema = schema::infer(
        &sample(summary_full, Some(1)),
        &sample(summary_minimal, None),
    );
    // Maps keyed by names, not fixed properties.
    let counts = json!({"type": "object", "additionalProperties": {"type": "integer"}});
    for key in ["byType", "byAgent", "byDepartment", "reviews"] {
        schema["properties"][key] = counts.clone();
    }
    let score_schema = schema["properties"]["qualityByDepartment"]["properties"]["d"].clone();
    schema["properties"]["qualityByDepartment"] =
        json!({"type": "object", "additionalProperties": score_schema});
    schema
}

/// `GET /api/analytics`: the top level from samples of [`Analytics`].
fn analytics_schema() -> Value {
    let at = DateTime::from_timestamp_millis(0).expect("a valid time");
    let query = |filter: Option<&str>| AnalyticsQuery {
        from: at,
        to: at + chrono::TimeDelta::seconds(60),
        conversation_id: filter.map(str::to_owned),
        department: filter.map(str::to_owned),
        bucket_secs: 60,
    };
    let full = to_value(&Analytics::empty(&query(Some("x"))));
    let minimal = to_value(&Analytics::empty(&query(None)));
    let mut schema = schema::infer(&full, &minimal);
    schema["description"] =
        json!("Figures of the window; agent_events_actors::store::analytics says what each means.");
    schema
}

fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_events_actors::protocol::ErrorCode;
    use std::collections::BTreeSet;

    /// Every route of the table and every asset is in the document, and the
    /// document has no path the broker does not serve.
    #[test]
    fn documents_exactly_the_registered_routes() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.to_owned()))
            .collect();
        for (path, _) in monitor::asset_paths() {
            served.insert(("get".into(), path.into()));
            served.insert(("head".into(), path.into()));
        }
        let documented: BTreeSet<(String, String)> = paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        assert_eq!(served, documented);
        for path in [
            "/api/events",
            "/api/executions/{id}/events",
            "/api/openapi.json",
            "/api/ws",
            "/client.js",
            "/metrics",
        ] {
            assert!(paths.contains_key(path), "{path}");
        }
    }

    /// The route table and the served app agree: every documented operation
    /// reaches a handler (no route-level 404 or 405 from actix).
    #[actix_web::test]
    async fn every_documented_operation_is_served() {
        use actix_web::test::{call_service, init_service, TestRequest};
        let app = init_service(actix_web::App::new().configure(routes::configure)).await;
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                let uri = path.replace("{id}", "exec-1");
                let method =
                    actix_web::http::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let req = TestRequest::default()
                    .method(method.clone())
                    .uri(&uri)
                    .to_request();
                let status = call_service(&app, req).await.status().as_u16();
                // Without the broker's app data a handler answers 500; a route
                // actix does not know answers 404 (or 405 for a wrong method).
                assert!(
                    status != 404 && status != 405,
                    "{method} {uri} answered {status}"
                );
            }
        }
        // And a route that is not in the table is not served.
        let req = TestRequest::get().uri("/api/nothing-here").to_request();
        assert_eq!(call_service(&app, req).await.status().as_u16(), 404);
    }

    #[test]
    fn every_error_code_and_event_type_is_documented() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let codes = schemas["ErrorCode"]["enum"].as_array().unwrap();
        for code in ErrorCode::ALL {
            assert!(codes.contains(&json!(code.as_str())), "{code:?}");
        }
        assert_eq!(
            doc["x-error-codes"].as_array().unwrap().len(),
            ErrorCode::ALL.len()
        );
        for event_type in EventType::ALL {
            let name = format!("New{}", asyncapi::event_schema_name(event_type));
            assert_eq!(
                schemas[&name]["properties"]["type"]["const"],
                event_type.as_str()
            );
            assert!(schemas[&name]["properties"].get("seq").is_none());
        }
        let error = &schemas["Error"]["properties"]["error"];
        assert_eq!(error["required"], json!(["code", "message"]));
    }

    #[test]
    fn query_parameters_come_from_the_handlers_query_structs() {
        let doc = document();
        let names = |path: &str| -> BTreeSet<String> {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            names("/api/executions/{id}/events"),
            ["afterSeq", "agentId", "department", "limit", "types"]
                .map(String::from)
                .into()
        );
        assert!(names("/api/executions/{id}/stream").contains("token"));
        assert!(names("/api/analytics").contains("bucketSecs"));
        let admin = &doc["paths"]["/admin/stats"]["get"];
        assert_eq!(
            admin["security"],
            json!([{"bearer": []}, {"queryToken": []}])
        );
        assert_eq!(doc["paths"]["/health"]["get"]["security"], json!([{}]));
    }

    #[test]
    fn inferred_schemas_mark_what_may_be_null() {
        let doc = document();
        let summary = &doc["components"]["schemas"]["ExecutionSummary"];
        assert_eq!(
            summary["properties"]["endedAt"]["type"],
            json!(["string", "null"])
        );
        let required = summary["required"].as_array().unwrap();
        assert!(required.contains(&json!("executionId")));
        assert!(!required.contains(&json!("endedAt")));
        let stats = &doc["components"]["schemas"]["ExecutionStats"];
        assert_eq!(
            stats["properties"]["durationMs"]["type"],
            json!(["integer", "null"])
        );
    }
}
