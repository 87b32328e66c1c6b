//! Server-Sent Events and AG-UI views of executions and conversations.

use actix_web::web;

/// Registers the SSE routes.
pub fn configure(_cfg: &mut web::ServiceConfig) {}
