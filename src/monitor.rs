//! The live execution monitor: the page at `/` (for a browser, not a
//! WebSocket upgrade) and `/client.js`, embedded in the binary.

use actix_web::{web, HttpResponse};

/// Registers the monitor's asset routes.
pub fn configure(_cfg: &mut web::ServiceConfig) {}

/// The monitor page, for `GET /` without a WebSocket upgrade.
pub fn index() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(
        "agent-events broker\n\nWebSocket: ws://HOST/ (or /ws); send {\"type\":\"subscribe\",\"executionId\":\"…\"}\n\
         Protocol: GET /api/ws   Health: GET /health   Stats: GET /admin/stats\n",
    )
}
