//! The API reference against the running broker, auth on: every operation
//! of `GET /api/openapi.json` is served (no route-level 404 or 405), public
//! ones answer without a token, the others refuse one-less requests with
//! `unauthorized` and accept a token of the role the document names. The
//! documents' syntax is checked by the validators of tests/api-spec.

mod common;

use agent_events_actors::auth::{now_secs, sign_hmac, Claims, Role};
use common::Broker;
use serde_json::{json, Value};

const SECRET: &str = "api-spec-test-secret-0123456789abcdef";

fn token(role: Role) -> String {
    let claims = Claims {
        sub: "api-spec".into(),
        exp: now_secs() + 600,
        roles: vec![role],
        executions: vec!["exec-1".into()],
        conversations: vec!["conv-1".into()],
    };
    sign_hmac(&claims, SECRET.as_bytes())
}

/// A status that proves the route exists: actix's own 404 (unknown path)
/// and 405 have no error body of ours.
fn served(status: u16, body: &Value) -> bool {
    match status {
        405 => false,
        404 => body["error"]["code"] == "not-found",
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served_with_its_documented_access() {
    let broker = Broker::builder()
        .setting("AUTH_HMAC_SECRET", SECRET)
        .start()
        .await;
    let (status, doc) = broker.request("GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200, "/api/openapi.json is public");
    let (status, asyncapi) = broker.request("GET", "/api/ws", None, None).await;
    assert_eq!(
        (status, asyncapi["asyncapi"].as_str()),
        (200, Some("3.0.0"))
    );

    let mut probed = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("an item") {
            let id = if path.starts_with("/api/conversations/") {
                "conv-1"
            } else {
                "exec-1"
            };
            let uri = path.replace("{id}", id);
            let body = (method == "post")
                .then(|| json!({"type": "agent-start", "executionId": "exec-1", "agentId": "a"}));
            let public = operation["security"]
                .as_array()
                .expect("security")
                .contains(&json!({}));
            let (status, answer) = broker.request(method, &uri, None, body.clone()).await;
            if public {
                assert!(
                    served(status, &answer) && status != 401,
                    "{method} {uri} is documented public, answered {status} {answer}"
                );
            } else {
                assert_eq!(
                    (status, answer["error"]["code"].as_str()),
                    (401, Some("unauthorized")),
                    "{method} {uri} is documented as needing a token"
                );
                let role = match operation["x-required-role"].as_str() {
                    Some("admin") => Role::Admin,
                    Some("producer") => Role::Producer,
                    Some("subscriber") => Role::Subscriber,
                    other => panic!("{method} {path}: x-required-role {other:?}"),
                };
                let (status, answer) = broker.request(method, &uri, Some(&token(role)), body).await;
                assert!(
                    served(status, &answer) && status != 401 && status != 403,
                    "{method} {uri} with a {role:?} token answered {status} {answer}"
                );
                if role == Role::Admin {
                    let (status, _) = broker
                        .request(method, &uri, Some(&token(Role::Producer)), None)
                        .await;
                    assert_eq!(status, 403, "{method} {uri} is admin only");
                }
            }
            probed += 1;
        }
    }
    assert!(probed >= 16 + 2 * 15, "only {probed} operations probed");

    // The other way round: a path the document lacks is not served.
    let (status, _) = broker
        .request("GET", "/api/not-documented", None, None)
        .await;
    assert_eq!(status, 404);
}
