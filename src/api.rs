//! What every HTTP handler shares: the error every refusal leaves as
//! (`{"error":{"code":…,"message":…}}` with a stable [`ErrorCode`], plus
//! `field`, `rule` and `index` when one event of a batch is at fault), query
//! parsing, paging, and the admission of a new connection (the per-address
//! limit, and the socket the broker may have to reset).

use crate::server::Broker;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use agent_events_actors::auth::AuthError;
use agent_events_actors::emitter::IngestError;
use agent_events_actors::event::{EventType, ValidationError};
use agent_events_actors::limits::{ConnectionPermit, Refusal};
use agent_events_actors::protocol::ErrorCode;
use agent_events_actors::send_queue::Connection;
use agent_events_actors::socket::ConnectionSocket;
use agent_events_actors::store::StoreError;
use serde_json::json;
use std::fmt;
use std::net::IpAddr;

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

    /// The same error, naming event `index` of the posted batch.
    pub(crate) fn at_index(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }

    pub(crate) fn invalid_event(index: usize, validation: ValidationError) -> Self {
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

pub(crate) type ApiResult = Result<HttpResponse, ApiError>;

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
fn admit(req: &HttpRequest, broker: &Broker) -> Result<ConnectionPermit, ApiError> {
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

/// Most events or executions one page returns.
pub(crate) const MAX_PAGE: usize = 1000;
/// A page's size when the query does not say.
pub(crate) const DEFAULT_PAGE: usize = 100;

pub(crate) fn page_size(limit: Option<usize>) -> Result<usize, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use agent_events_actors::event::EventType;

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
