//! `POST /api/events`: the producer's way in over HTTP. The body is read
//! within `max_body_bytes` and `request_body_timeout_ms`, an array is never
//! parsed past `max_batch_events + 1` (an 8 MiB `[0,0,…]` used to stall a
//! worker), each event is checked against `max_event_bytes` and parsed
//! straight into the event model, and the answer is a 202 only once the
//! Emitter says the events are stored. An `Idempotency-Key` names the batch
//! so that a retry gets the first answer again.

use crate::api::{ApiError, ApiResult};
use crate::server::Broker;
use actix_web::{web, HttpRequest, HttpResponse};
use agent_events_actors::auth::{Grant, Role};
use agent_events_actors::emitter::Ingest;
use agent_events_actors::event::{AgentEvent, ProducerTextError, ValidationError};
use agent_events_actors::idempotency::IdempotencyKey;
use agent_events_actors::protocol::ErrorCode;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::value::RawValue;
use std::fmt;
use std::time::Duration;

/// The producer's events fit its rate (its token's subject, or its address).
pub(crate) fn check_producer_rate(
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

/// The request header naming a batch for idempotent retries.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The response header set (to `true`) on the answer to a retry: the
/// receipt is the first attempt's, nothing was sequenced again.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// The batch's `Idempotency-Key`, if the request has one; 400 `bad-request`
/// for one that breaks the syntax (`IdempotencyKey::new`) or is given twice.
pub(crate) fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
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

/// Counts a request refused before the Emitter saw it, by its code.
fn count_refused(broker: &Broker, err: &ApiError) {
    broker
        .metrics
        .events_rejected
        .with_label_values(&[err.code.as_str()])
        .inc();
}

/// `POST /api/events`: one event or an array; 202 once stored.
pub(crate) async fn ingest(
    req: HttpRequest,
    body: web::Payload,
    broker: web::Data<Broker>,
) -> ApiResult {
    let grant = broker.guard.require(&req, Role::Producer)?;
    let key = idempotency_key(&req).inspect_err(|err| count_refused(&broker, err))?;
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
                Some(index) => Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "the token may not produce to this execution",
                )
                .at_index(index)),
                None => Ok(events),
            }
        })
        .and_then(|events| {
            check_producer_rate(&req, &broker, grant.as_ref(), events.len()).map(|()| events)
        })
        // Refusals past this point are counted by the Emitter.
        .inspect_err(|err| count_refused(&broker, err))?;
    // The receipt names each event's execution; the events themselves move on.
    let execution_ids: Vec<String> = events.iter().map(|e| e.execution_id.clone()).collect();
    let batch = match key {
        Some(key) => Ingest::keyed(key, events),
        None => Ingest::new(events),
    };
    let receipt = broker
        .emitter
        .send(batch)
        .await
        .map_err(|_| ApiError::new(ErrorCode::ShuttingDown, "the broker is stopping"))??;
    let provisional = receipt.provisional;
    let replayed = receipt.replayed;
    let accepted = receipt.durable().await?;
    let answer = ReceiptBody {
        accepted: accepted.len(),
        events: execution_ids
            .iter()
            .zip(&accepted)
            .map(|(execution_id, a)| ReceiptItem {
                execution_id,
                seq: a.seq,
                coalesced: a.seq.is_none(),
            })
            .collect(),
        provisional,
    };
    let mut response = HttpResponse::Accepted();
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    Ok(response.json(answer))
}

/// The 202's body: `{"accepted":N,"events":[{"executionId":…,"seq":…},…]}`.
#[derive(Serialize)]
struct ReceiptBody<'a> {
    accepted: usize,
    events: Vec<ReceiptItem<'a>>,
    /// Cluster fallback: journaled here, seqs provisional until Redis answers.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    provisional: bool,
}

/// Where one event landed; `seq` is null for a coalesced thought.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReceiptItem<'a> {
    execution_id: &'a str,
    seq: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    coalesced: bool,
}

/// Reads the body up to `limit` bytes, answering 413 past it without reading on.
/// Within `timeout`: the head timeout ends where the body begins, and a body
/// trickled a byte at a time must not hold the request forever.
pub(crate) async fn read_body(
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
pub(crate) fn parse_events(bytes: &[u8], broker: &Broker) -> Result<Vec<AgentEvent>, ApiError> {
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
pub(crate) fn bounded_array(
    text: &str,
    limit: usize,
) -> Result<Option<Vec<&RawValue>>, serde_json::Error> {
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

pub(crate) fn parse_event(
    index: usize,
    raw: &RawValue,
    max_bytes: usize,
) -> Result<AgentEvent, ApiError> {
    if raw.get().len() > max_bytes {
        let too_large = ValidationError {
            field: String::new(),
            rule: agent_events_actors::event::Rule::TooLarge,
            message: format!("events are limited to {max_bytes} bytes"),
        };
        return Err(ApiError::invalid_event(index, too_large));
    }
    AgentEvent::from_producer_text(raw.get()).map_err(|err| match err {
        ProducerTextError::Json(e) => ApiError::new(ErrorCode::BadJson, e.to_string()),
        ProducerTextError::Invalid(v) => ApiError::invalid_event(index, v),
    })
}
