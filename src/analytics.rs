//! `GET /api/analytics`: figures over a time window, computed by the store
//! (`agent_events_actors::store::analytics` says what each figure means).
//!
//! Parameters, all optional: `from` and `to` (RFC 3339; the window is
//! `[from, to)`, by default the last hour up to now), `conversationId`,
//! `department`, `bucketSecs` (width of the events-per-second buckets; by
//! default about 60 buckets). Like the other query routes it needs the admin
//! role when auth is on.

use crate::api::{query, ApiError};
use crate::server::Broker;
use actix_web::{web, HttpRequest, HttpResponse};
use agent_events_actors::auth::Role;
use agent_events_actors::event::validate_id;
use agent_events_actors::protocol::ErrorCode;
use agent_events_actors::store::analytics::{default_bucket_secs, AnalyticsQuery, MAX_BUCKETS};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;

/// The window when the query names neither end: the last hour.
const DEFAULT_WINDOW: TimeDelta = TimeDelta::hours(1);

/// Query of `GET /api/analytics`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Params {
    from: Option<String>,
    to: Option<String>,
    conversation_id: Option<String>,
    department: Option<String>,
    /// Text, so that a bad value is refused with its name rather than serde's words.
    bucket_secs: Option<String>,
    /// The page passes its token this way; the guard reads it.
    #[allow(dead_code)]
    token: Option<String>,
}

/// `GET /api/analytics`.
pub(crate) async fn analytics(
    req: HttpRequest,
    broker: web::Data<Broker>,
) -> Result<HttpResponse, ApiError> {
    broker.guard.require(&req, Role::Admin)?;
    let params: Params = query(&req)?;
    let query = analytics_query(params, Utc::now())?;
    let figures = broker
        .store
        .analytics(query)
        .await
        .map_err(ApiError::store)?;
    Ok(HttpResponse::Ok().json(figures))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

/// The store query the parameters ask for, `now` filling in a missing end.
fn analytics_query(params: Params, now: DateTime<Utc>) -> Result<AnalyticsQuery, ApiError> {
    let from = params
        .from
        .as_deref()
        .map(|t| time("from", t))
        .transpose()?;
    let to = params.to.as_deref().map(|t| time("to", t)).transpose()?;
    let (from, to) = match (from, to) {
        (Some(from), Some(to)) => (from, to),
        (Some(from), None) => (from, now.max(from + TimeDelta::seconds(1))),
        (None, Some(to)) => (to - DEFAULT_WINDOW, to),
        (None, None) => (now - DEFAULT_WINDOW, now),
    };
    if from >= to {
        return Err(bad("from must be before to"));
    }
    for (field, id) in [
        ("conversationId", &params.conversation_id),
        ("department", &params.department),
    ] {
        if let Some(id) = id {
            validate_id(field, id).map_err(|e| bad(e.to_string()))?;
        }
    }
    let bucket_secs = match params.bucket_secs.as_deref() {
        None => default_bucket_secs(from, to),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|secs| *secs >= 1)
            .ok_or_else(|| {
                bad(format!(
                    "bucketSecs must be a whole number, at least 1 (got `{text}`)"
                ))
            })?,
    };
    let query = AnalyticsQuery {
        from,
        to,
        conversation_id: params.conversation_id,
        department: params.department,
        bucket_secs,
    };
    // Caps the series, which the answer lists bucket by bucket.
    if query.bucket_count() > MAX_BUCKETS {
        let span = (to - from).num_seconds().max(1) as u64;
        return Err(bad(format!(
            "bucketSecs {bucket_secs} makes {} buckets; at most {MAX_BUCKETS}: use at least {}",
            query.bucket_count(),
            span.div_ceil(MAX_BUCKETS)
        )));
    }
    Ok(query)
}

fn time(field: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| {
            bad(format!(
                "{field} must be RFC 3339, e.g. 2025-10-01T12:00:00Z (got `{text}`)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(from: Option<&str>, to: Option<&str>, bucket_secs: Option<&str>) -> Params {
        Params {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            conversation_id: None,
            department: None,
            bucket_secs: bucket_secs.map(str::to_owned),
            token: None,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn missing_ends_default_to_the_last_hour() {
        let now = at("2025-10-01T12:00:00Z");
        let query = analytics_query(params(None, None, None), now).unwrap();
        assert_eq!((query.from, query.to), (at("2025-10-01T11:00:00Z"), now));
        assert_eq!(query.bucket_secs, 60);
        let query = analytics_query(params(None, Some("2025-10-01T08:00:00Z"), None), now).unwrap();
        assert_eq!(query.from, at("2025-10-01T07:00:00Z"));
        let query = analytics_query(params(Some("2025-10-01T11:30:00Z"), None, None), now).unwrap();
        assert_eq!((query.to, query.bucket_secs), (now, 30));
    }

    #[test]
    fn bad_windows_and_buckets_are_refused() {
        let now = at("2025-10-01T12:00:00Z");
        let refused = |p: Params| analytics_query(p, now).unwrap_err().to_string();
        let from = Some("2025-10-01T12:00:00Z");
        assert!(refused(params(from, from, None)).contains("from must be before to"));
        assert!(refused(params(Some("noon"), None, None)).contains("from must be RFC 3339"));
        assert!(refused(params(None, None, Some("0"))).contains("at least 1"));
        let too_many = refused(params(None, None, Some("1")));
        assert!(
            too_many.contains("3600 buckets") && too_many.contains("at least 3"),
            "{too_many}"
        );
        let mut bad_id = params(None, None, None);
        bad_id.department = Some("a b".into());
        assert!(refused(bad_id).contains("department"));
    }
}
