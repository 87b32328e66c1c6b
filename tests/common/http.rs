//! HTTP to a broker: posting events (plain, keyed, raw), any request with
//! a token, reading stored events and `/admin/stats`, and polling a figure
//! until it shows. The free functions take a URL, for brokers the suite
//! reaches without a [`Broker`] (a cluster node's producer task).

use super::{Broker, STEP};
use serde_json::Value;
use std::time::{Duration, Instant};

impl Broker {
    /// POSTs a JSON value to `/api/events`: (status, body as JSON).
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        self.post_raw(body.to_string()).await
    }

    /// POSTs raw text as `application/json` to `/api/events`.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        post_url(&self.http, &self.url("/api/events"), body).await
    }

    /// POSTs a JSON value to `/api/events` with an `Idempotency-Key`:
    /// (status, body as JSON, whether the answer says `Idempotent-Replayed: true`).
    pub async fn post_keyed(&self, key: &str, body: &Value) -> (u16, Value, bool) {
        post_keyed_url(&self.http, &self.url("/api/events"), key, body).await
    }

    /// Every stored event of `execution`, through GET
    /// /api/executions/{id}/events, page by page (none: an empty list).
    pub async fn stored(&self, execution: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let (status, page) = self
                .get_json(&format!(
                    "/api/executions/{execution}/events?afterSeq={after}&limit=1000"
                ))
                .await;
            if status == 404 {
                return events;
            }
            assert_eq!(status, 200, "stored events of {execution}: {page}");
            events.extend(page["events"].as_array().cloned().unwrap_or_default());
            match page["nextAfterSeq"].as_u64() {
                Some(next) => after = next,
                None => return events,
            }
        }
    }

    /// POSTs events that must be accepted; returns the 202 body.
    pub async fn post_ok(&self, body: &Value) -> Value {
        let (status, answer) = self.post(body).await;
        assert_eq!(status, 202, "POST {body} answered {answer}");
        answer
    }

    /// POSTs one event that must be accepted; returns its seq.
    pub async fn post_event(&self, event: &Value) -> u64 {
        let answer = self.post_ok(event).await;
        assert_eq!(answer["accepted"], 1, "{answer}");
        let accepted = &answer["events"][0];
        assert_eq!(accepted["executionId"], event["executionId"], "{answer}");
        accepted["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq in {answer}"))
    }

    /// Any request, with a bearer token and a JSON body if given: (status,
    /// body as JSON, or a string if it is not JSON). An event stream's body is
    /// not read (`Null`): its headers are the answer, and dropping the
    /// response closes it.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        request_url(&self.http, method, &self.url(path), bearer, body).await
    }

    /// GETs `path`: (status, content type, body).
    pub async fn get(&self, path: &str) -> (u16, String, String) {
        let response = send(self.http.get(self.url(path)), &format!("GET {path}")).await;
        let status = response.status().as_u16();
        let content_type = content_type(&response).to_owned();
        let text = response.text().await.expect("response body");
        (status, content_type, text)
    }

    /// GETs `path` and reads its body as JSON (a string if it is not JSON).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let (status, _, text) = self.get(path).await;
        (status, parse_or_string(&text))
    }

    /// `/admin/stats`.
    pub async fn stats(&self) -> Value {
        self.get_object("/admin/stats").await
    }

    /// GETs `path`, which must answer 200 with a JSON object.
    pub async fn get_object(&self, path: &str) -> Value {
        let (status, answer) = self.get_json(path).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert!(answer.is_object(), "{path} is not a JSON object: {answer}");
        answer
    }

    /// Polls `/admin/stats` until `ready` holds (at most [`STEP`]); returns those stats.
    pub async fn wait_for_stats(&self, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        self.wait_for("/admin/stats", what, ready).await
    }

    /// Polls `path` (a JSON object, `/health` or `/admin/stats`) until
    /// `ready` holds (at most [`STEP`]); returns that answer.
    pub async fn wait_for(&self, path: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let answer = self.get_object(path).await;
            if ready(&answer) {
                return answer;
            }
            if Instant::now() > deadline {
                panic!("{path} never showed {what}; last: {answer}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// POSTs `body` as `application/json` to `url` (another broker's too), as
/// [`Broker::post_raw`]: (status, body as JSON, or a string if it is not JSON).
pub async fn post_url(
    http: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    let response = send(request, &format!("POST {url}")).await;
    let status = response.status().as_u16();
    let text = response.text().await.expect("response body");
    (status, parse_or_string(&text))
}

/// POSTs `body` to the events URL `url` under an `Idempotency-Key`, as [`Broker::post_keyed`].
pub async fn post_keyed_url(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
) -> (u16, Value, bool) {
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_string());
    let response = send(request, "POST /api/events").await;
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = response.text().await.expect("response body");
    (status, parse_or_string(&text), replayed)
}

/// Any request to `url` (another broker's too), as [`Broker::request`].
pub async fn request_url(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
        .unwrap_or_else(|e| panic!("method {method}: {e}"));
    let mut request = http.request(method.clone(), url);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = send(request, &format!("{method} {url}")).await;
    let status = response.status().as_u16();
    if content_type(&response).starts_with("text/event-stream") {
        return (status, Value::Null);
    }
    let text = tokio::time::timeout(STEP, response.text())
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: the body timed out"))
        .unwrap_or_default();
    (status, parse_or_string(&text))
}

/// Sends `request` (`what`, for failure messages), which must be answered within [`STEP`].
async fn send(request: reqwest::RequestBuilder, what: &str) -> reqwest::Response {
    tokio::time::timeout(STEP, request.send())
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The answer's `Content-Type`, empty when it has none.
fn content_type(response: &reqwest::Response) -> &str {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Reads a body as JSON, or as a string when it is not JSON.
fn parse_or_string(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}
