//! Server-Sent Events and AG-UI views of executions and conversations
//! (docs/protocol.md 3): the HTTP side of the SseStream actor
//! ([`agent_events_actors::sse_stream`]), which does the streaming.
//!
//! - `GET /api/executions/{id}/stream`: live from now on, or from a position
//!   with `?fromSeq=` or `Last-Event-ID` (the header wins: EventSource
//!   reconnects to the same URL, so the header is the newer position);
//!   filters `types` (comma-separated), `agentId`, `department`.
//! - `GET /api/conversations/{id}/stream`: every execution of a conversation,
//!   live; IDs are `<executionId>:<seq>`. `Last-Event-ID` resumes the
//!   execution it names exactly; the conversation's other executions go on
//!   live from the reconnection (see docs/sse.md for why).
//! - `GET /api/executions/{id}/ag-ui`: the execution as AG-UI events, from its
//!   first event unless `fromSeq` or `Last-Event-ID` say otherwise, because
//!   an AG-UI client needs the run from `RUN_STARTED`.
//!
//! When authentication is on, a stream needs a token with the `subscriber`
//! role that may watch its execution or conversation; `EventSource` cannot
//! set headers, so `?token=` is accepted beside `Authorization: Bearer`.
//!
//! Refusals happen before the stream starts, as JSON errors in the shape of
//! every HTTP error: `{"error":{"code":…,"message":…}}`.

use crate::api::{parse_types, query, ApiError};
use crate::server::Broker;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use agent_events_actors::auth::Role;
use agent_events_actors::event::validate_id;
use agent_events_actors::filter::Filter;
use agent_events_actors::protocol::{ErrorCode, Target};
use agent_events_actors::sse_stream::{
    parse_last_event_id, Resume, SseFormat, SseRequest, SseStream,
};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::sync::Arc;

type SseResult = Result<HttpResponse, ApiError>;

/// Query of the `/stream` routes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StreamParams {
    from_seq: Option<u64>,
    types: Option<String>,
    agent_id: Option<String>,
    department: Option<String>,
    /// Read by the security guard, not here.
    #[serde(rename = "token")]
    _token: Option<IgnoredAny>,
}

/// Query of the `/ag-ui` route: no filters, since AG-UI needs every event of the run.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AgUiParams {
    from_seq: Option<u64>,
    /// Read by the security guard, not here.
    #[serde(rename = "token")]
    _token: Option<IgnoredAny>,
}

/// `GET /api/executions/{id}/stream`.
pub(crate) async fn execution_stream(
    req: HttpRequest,
    path: web::Path<String>,
    broker: web::Data<Broker>,
) -> SseResult {
    let target = target(Target::Execution, "executionId", &path)?;
    authorize(&req, &broker, &target)?;
    let params: StreamParams = query(&req)?;
    let resume = resume_at(&req, &target, SseFormat::Events, params.from_seq)?;
    let filter = filter(&params)?;
    stream(&req, &broker, target, filter, resume, SseFormat::Events).await
}

/// `GET /api/conversations/{id}/stream`.
pub(crate) async fn conversation_stream(
    req: HttpRequest,
    path: web::Path<String>,
    broker: web::Data<Broker>,
) -> SseResult {
    let target = target(Target::Conversation, "conversationId", &path)?;
    authorize(&req, &broker, &target)?;
    let params: StreamParams = query(&req)?;
    if params.from_seq.is_some() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "fromSeq works with execution streams only (seq is per execution); a conversation resumes with Last-Event-ID",
        ));
    }
    let resume = resume_at(&req, &target, SseFormat::Events, None)?;
    let filter = filter(&params)?;
    stream(&req, &broker, target, filter, resume, SseFormat::Events).await
}

/// `GET /api/executions/{id}/ag-ui`.
pub(crate) async fn ag_ui_stream(
    req: HttpRequest,
    path: web::Path<String>,
    broker: web::Data<Broker>,
) -> SseResult {
    let target = target(Target::Execution, "executionId", &path)?;
    authorize(&req, &broker, &target)?;
    let params: AgUiParams = query(&req)?;
    let from_start = Some(params.from_seq.unwrap_or(0));
    let resume = resume_at(&req, &target, SseFormat::AgUi, from_start)?;
    stream(
        &req,
        &broker,
        target,
        Filter::default(),
        resume,
        SseFormat::AgUi,
    )
    .await
}

/// Opens the stream: 200 `text/event-stream` once it is in force, or the refusal.
async fn stream(
    req: &HttpRequest,
    broker: &Broker,
    target: Target,
    filter: Filter,
    resume: Option<Resume>,
    format: SseFormat,
) -> SseResult {
    let connection = crate::api::connection(req, broker)?;
    let request = SseRequest {
        target,
        filter,
        resume,
        format,
        connection,
    };
    let body = SseStream::open(broker.session_deps.clone(), request)
        .await
        .map_err(|gap| ApiError::new(ErrorCode::ReplayUnavailable, gap.reason))?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        // Tells nginx-style proxies not to buffer: each event should leave at once.
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body))
}

fn target(make: fn(Arc<str>) -> Target, field: &str, id: &str) -> Result<Target, ApiError> {
    validate_id(field, id).map_err(|e| ApiError::new(ErrorCode::InvalidId, e.to_string()))?;
    Ok(make(id.into()))
}

/// With authentication on: a subscriber's token that may watch `target`.
fn authorize(req: &HttpRequest, broker: &Broker, target: &Target) -> Result<(), ApiError> {
    let grant = broker
        .guard
        .require(req, Role::Subscriber)
        .map_err(ApiError::from)?;
    match grant {
        Some(grant) if !grant.may_watch(target) => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this token may not watch {} `{}`",
                target.field(),
                target.id()
            ),
        )),
        _ => Ok(()), // allowed, or authentication is off
    }
}

/// Where to resume: `Last-Event-ID` if sent, else `fromSeq`, else live only.
fn resume_at(
    req: &HttpRequest,
    target: &Target,
    format: SseFormat,
    from_seq: Option<u64>,
) -> Result<Option<Resume>, ApiError> {
    let bad = |message: String| ApiError::new(ErrorCode::BadRequest, message);
    let last_event_id = match req.headers().get("last-event-id") {
        Some(value) => value
            .to_str()
            .map_err(|_| bad("Last-Event-ID is not ASCII text".into()))?
            .trim(),
        None => "",
    };
    // EventSource sends no header before its first event ID; an empty one means the same.
    if !last_event_id.is_empty() {
        return parse_last_event_id(target, format, last_event_id)
            .map(Some)
            .map_err(bad);
    }
    Ok(from_seq.map(|seq| Resume {
        execution_id: target.id().into(),
        seq,
        parts_seen: None,
    }))
}

fn filter(params: &StreamParams) -> Result<Filter, ApiError> {
    let types = parse_types(params.types.as_deref())?;
    Ok(Filter::new(
        types,
        params.agent_id.clone(),
        params.department.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn the_header_wins_over_from_seq() {
        let target = Target::Execution("e".into());
        let req = TestRequest::default()
            .insert_header(("Last-Event-ID", "9"))
            .to_http_request();
        let resume = resume_at(&req, &target, SseFormat::Events, Some(2)).unwrap();
        assert_eq!(resume.map(|r| r.seq), Some(9));
        let req = TestRequest::default().to_http_request();
        let resume = resume_at(&req, &target, SseFormat::Events, Some(2)).unwrap();
        assert_eq!(resume.map(|r| r.seq), Some(2));
        let req = TestRequest::default()
            .insert_header(("Last-Event-ID", "nine"))
            .to_http_request();
        let refused = resume_at(&req, &target, SseFormat::Events, None).unwrap_err();
        assert_eq!(refused.code, ErrorCode::BadRequest);
    }

    #[test]
    fn types_are_parsed_or_refused() {
        let params = |types: &str| StreamParams {
            from_seq: None,
            types: Some(types.into()),
            agent_id: None,
            department: None,
            _token: None,
        };
        assert!(filter(&params("tool-call, tool-result")).is_ok());
        assert_eq!(
            filter(&params("tool-call,nope")).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }
}
