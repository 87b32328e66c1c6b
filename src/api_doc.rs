//! `GET /api/ws`: the protocol, machine-readable (the seed's protocol
//! documentation endpoint). Built from the Rust types — event types and error
//! codes come from their enums — so it cannot drift from what the broker does.

use agent_events_actors::event::EventType;
use agent_events_actors::protocol::ErrorCode;
use serde_json::{json, Value};

/// The protocol description.
pub fn protocol() -> Value {
    let event_types: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
    let error_codes: Vec<Value> = ErrorCode::ALL
        .iter()
        .map(|code| {
            json!({
                "code": code.as_str(),
                "advice": code.advice(),
                "closeCode": closes(*code).then(|| code.close_code()),
            })
        })
        .collect();
    json!({
        "name": "agent-events",
        "version": env!("CARGO_PKG_VERSION"),
        "websocket": {
            "paths": ["/", "/ws"],
            "frames": "one JSON text message per frame",
            "clientMessages": {
                "subscribe": {
                    "example": {"type": "subscribe", "executionId": "exec-123"},
                    "fields": {
                        "executionId | conversationId": "exactly one; 1..128 of A-Z a-z 0-9 . _ : -",
                        "fromSeq": "executions only: replay every event with seq > fromSeq, then go live",
                        "types": "only these event types",
                        "agentId": "only events of this agent",
                        "department": "only events of this department",
                    },
                },
                "unsubscribe": {"example": {"type": "unsubscribe", "executionId": "exec-123"}},
                "ping": {"example": {"type": "ping"}, "answer": {"type": "pong"}},
                "auth": {
                    "example": {"type": "auth", "token": "<jwt>"},
                    "answer": {"type": "authenticated", "expiresAt": "…"},
                    "when": "with auth on: first, or a fresh token before the current one expires",
                },
            },
            "serverMessages": {
                "connected": {"type": "connected", "clientId": "…"},
                "subscribed": {"type": "subscribed", "executionId": "exec-123", "replayed": 0},
                "event": {"type": "event", "executionId": "exec-123", "event": {"type": "…", "seq": 1, "timestamp": "…"}},
                "unsubscribed": {"type": "unsubscribed", "executionId": "exec-123"},
                "pong": {"type": "pong"},
                "error": {"type": "error", "code": "…", "message": "…"},
            },
            "closeCodes": {
                "1001": "broker shutting down: reconnect and resume with fromSeq",
                "1009": "frame larger than max_frame_bytes",
                "4000-4499": "reconnect with backoff and resume with fromSeq (4002: refresh the token first)",
                "4500-4999": "do not reconnect without changing the request",
            },
        },
        "eventTypes": event_types,
        "errorCodes": error_codes,
        "http": {
            "POST /api/events": "one event or an array; 202 {accepted, events:[{executionId, seq}]} once stored",
            "GET /api/executions": "recent executions, newest first; conversationId, status, limit, cursor",
            "GET /api/executions/{id}/events": "stored events in seq order; afterSeq, types, agentId, department, limit",
            "GET /api/executions/{id}/stats": "statistics of one execution",
            "GET /api/analytics": "figures over a time window (executions, events per second, tools, agents, quality, reviews); from, to, conversationId, department, bucketSecs",
            "GET /api/executions/{id}/stream": "Server-Sent Events: id = seq, event = type; resume with Last-Event-ID or fromSeq",
            "GET /api/conversations/{id}/stream": "Server-Sent Events of every execution of a conversation; id = executionId:seq",
            "GET /api/executions/{id}/ag-ui": "the execution as AG-UI events over SSE (docs/ag-ui.md)",
            "GET /api/ws": "this document",
            "GET /health": "liveness and the state of the store",
            "GET /admin/stats": "connections, subscriptions, events in and out, buffers, drops",
            "GET /metrics": "the same figures for Prometheus",
            "GET /admin/notifications/rules": "notification rules, from the rules file and the admin API",
            "POST /admin/notifications/rules": "adds (201) or replaces (200) a rule: {id, url, types, when} or {id, url, runningLongerThanSecs}",
            "DELETE /admin/notifications/rules/{id}": "removes an admin-API rule (204)",
            "GET /admin/notifications/dead-letters": "deliveries that used every attempt; limit",
            "POST /admin/notifications/dead-letters/{key}/retry": "a dead letter back to pending (202)",
            "DELETE /admin/notifications/dead-letters/{key}": "a dead letter discarded (204)",
        },
    })
}

/// Codes that end the connection they are sent on.
fn closes(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::SlowConsumer | ErrorCode::HeartbeatTimeout | ErrorCode::ShuttingDown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_every_error_code() {
        let readme = include_str!("../README.md");
        for code in ErrorCode::ALL {
            assert!(
                readme.contains(&format!("| `{}` |", code.as_str())),
                "README.md lacks {code:?}"
            );
        }
    }

    #[test]
    fn lists_every_type_and_code() {
        let doc = protocol();
        assert_eq!(doc["eventTypes"].as_array().unwrap().len(), 11);
        let codes = doc["errorCodes"].as_array().unwrap();
        assert_eq!(codes.len(), ErrorCode::ALL.len());
        let slow = codes.iter().find(|c| c["code"] == "slow-consumer").unwrap();
        assert_eq!(slow["closeCode"], 4000);
    }
}
