//! The WebSocket client of the tests: connects to a [`Broker`] over a real
//! socket (optionally with a small receive buffer, to stall the broker's
//! writes soon), reads the frames one by one with a timeout, and can be
//! muted to act as a stalled browser. What a suite asserts about the
//! protocol goes through here.

use super::{Broker, STEP};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

impl Broker {
    /// A client connected at `/`, past its `connected` message.
    pub async fn connect(&self) -> Client {
        self.connect_with("/", None).await
    }

    /// A client connected at `path` (`/` or `/ws`).
    pub async fn connect_path(&self, path: &str) -> Client {
        self.connect_with(path, None).await
    }

    /// A client whose socket receive buffer is `bytes`, so that a client
    /// that stops reading stalls the broker's writes soon.
    pub async fn connect_small_buffer(&self, bytes: u32) -> Client {
        self.connect_with("/", Some(bytes)).await
    }

    async fn connect_with(&self, path: &str, recv_buffer: Option<u32>) -> Client {
        match self.try_connect_with(path, recv_buffer).await {
            Ok(client) => client,
            Err(status) => panic!("upgrade at {path}: HTTP {status}"),
        }
    }

    /// A client at `/` whose socket receive buffer is `bytes` (when given),
    /// or the HTTP status that refused the upgrade (503 past a connection limit).
    pub async fn try_connect(&self, recv_buffer: Option<u32>) -> Result<Client, u16> {
        self.try_connect_with("/", recv_buffer).await
    }

    async fn try_connect_with(&self, path: &str, recv_buffer: Option<u32>) -> Result<Client, u16> {
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        if let Some(bytes) = recv_buffer {
            socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        }
        let address = ([127, 0, 0, 1], self.port).into();
        let tcp = tokio::time::timeout(STEP, socket.connect(address))
            .await
            .expect("TCP connect timed out")
            .unwrap_or_else(|e| panic!("TCP connect to {address}: {e}"));
        let muted = Arc::new(AtomicBool::new(false));
        let stream = TestStream {
            tcp,
            muted: muted.clone(),
        };
        let url = format!("ws://127.0.0.1:{}{path}", self.port);
        let handshake =
            tokio::time::timeout(STEP, tokio_tungstenite::client_async(&url, stream)).await;
        let (ws, response) = match handshake {
            Ok(Ok(connected)) => connected,
            Ok(Err(tokio_tungstenite::tungstenite::Error::Http(refused))) => {
                return Err(refused.status().as_u16())
            }
            Ok(Err(e)) => panic!("WebSocket handshake at {url}: {e}"),
            Err(_) => panic!("WebSocket handshake at {url} timed out"),
        };
        assert_eq!(response.status().as_u16(), 101, "upgrade at {url}");
        let mut client = Client {
            ws,
            muted,
            hello: Value::Null,
            client_id: String::new(),
        };
        let hello = client.next_json().await;
        assert_eq!(
            hello["type"], "connected",
            "first message at {url}: {hello}"
        );
        client.client_id = hello["clientId"]
            .as_str()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| panic!("connected without a clientId: {hello}"))
            .to_owned();
        client.hello = hello;
        Ok(client)
    }
}

/// A TCP stream whose writes can be muted: a muted client neither answers
/// pings nor replies to a close, exactly like a stalled browser, yet can
/// still read what the broker sent it.
pub struct TestStream {
    tcp: TcpStream,
    muted: Arc<AtomicBool>,
}

impl AsyncRead for TestStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for TestStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.muted.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.muted.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// One thing a client received (WebSocket pings and pongs are skipped).
#[derive(Debug)]
pub enum Frame {
    /// A text frame holding JSON.
    Json(Value),
    /// A text frame that is not JSON.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame: its code (if any) and reason.
    Close(Option<u16>, String),
    /// The connection ended without a close frame (or failed).
    Ended(String),
}

/// A WebSocket client of the broker.
pub struct Client {
    ws: WebSocketStream<TestStream>,
    muted: Arc<AtomicBool>,
    /// The `connected` message.
    pub hello: Value,
    /// Its `clientId`.
    pub client_id: String,
}

impl Client {
    /// Sends a JSON message.
    pub async fn send_json(&mut self, message: &Value) {
        self.send(Message::Text(message.to_string().into())).await;
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.send(Message::Text(text.into().into())).await;
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.send(Message::Binary(bytes.into())).await;
    }

    async fn send(&mut self, message: Message) {
        tokio::time::timeout(STEP, self.ws.send(message))
            .await
            .expect("WebSocket send timed out")
            .expect("WebSocket send");
    }

    /// The kernel's TCP state of this client's socket ([`TCP_ESTABLISHED`]
    /// …), read without reading the socket: how a client that never reads
    /// sees whether the broker has closed its end.
    pub fn tcp_state(&self) -> u8 {
        tcp_state(self.ws.get_ref().tcp.as_raw_fd())
    }

    /// From now on, write nothing: no pong, no close reply, no message.
    pub fn mute(&self) {
        self.muted.store(true, Ordering::Relaxed);
    }

    /// The next frame within `limit`, skipping pings and pongs; `None` on timeout.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            return Some(match next {
                None => Frame::Ended("stream ended".into()),
                Some(Err(e)) => Frame::Ended(e.to_string()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                    Ok(value) => Frame::Json(value),
                    Err(_) => Frame::Text(text.to_string()),
                },
                Some(Ok(Message::Binary(bytes))) => Frame::Binary(bytes.to_vec()),
                Some(Ok(Message::Close(frame))) => match frame {
                    Some(f) => Frame::Close(Some(u16::from(f.code)), f.reason.to_string()),
                    None => Frame::Close(None, String::new()),
                },
            });
        }
    }

    /// The next frame; fails the test after [`STEP`].
    pub async fn recv(&mut self) -> Frame {
        self.recv_within(STEP).await.unwrap_or_else(|| {
            panic!(
                "client {}: nothing received within {STEP:?}",
                self.client_id
            )
        })
    }

    /// Reads to the next message of type `kind`, passing over subscription
    /// answers and events (a resubscribe burst's first subscription may be
    /// answered or not); anything else fails the test, with `context`.
    pub async fn skip_to(&mut self, kind: &str, context: &str) {
        loop {
            let message = self.next_json().await;
            match message["type"].as_str() {
                Some(t) if t == kind => return,
                Some("subscribed") | Some("event") => {}
                _ => panic!("{context}: waiting for {kind}, got {message}"),
            }
        }
    }

    /// The next JSON message; fails on anything else.
    pub async fn next_json(&mut self) -> Value {
        match self.recv().await {
            Frame::Json(value) => value,
            other => panic!(
                "client {}: expected a JSON message, got {other:?}",
                self.client_id
            ),
        }
    }

    /// The next message, which must be of `kind` (`subscribed`, `pong`, …).
    pub async fn expect_type(&mut self, kind: &str) -> Value {
        let message = self.next_json().await;
        assert_eq!(
            message["type"], kind,
            "client {}: expected {kind}, got {message}",
            self.client_id
        );
        message
    }

    /// The next message, which must be an `error` with `code` and a message.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let message = self.next_json().await;
        assert_eq!(
            message["type"], "error",
            "expected error {code}, got {message}"
        );
        assert_eq!(
            message["code"], code,
            "expected error {code}, got {message}"
        );
        assert!(
            message["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error says what went wrong: {message}"
        );
        message
    }

    /// The next message, which must be an `event`; returns the whole message.
    pub async fn next_event(&mut self) -> Value {
        let message = self.expect_type("event").await;
        assert_eq!(
            message["executionId"], message["event"]["executionId"],
            "the message names the event's execution: {message}"
        );
        message
    }

    /// The `event` of the next `event` message.
    pub async fn next_event_body(&mut self) -> Value {
        self.next_event().await["event"].take()
    }

    /// The next `count` events of the next messages, which must all be events.
    pub async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(count);
        for _ in 0..count {
            events.push(self.next_event_body().await);
        }
        events
    }

    /// Sends `{"type":"subscribe", …fields}`; the answer must be `subscribed`, which is returned.
    pub async fn subscribe(&mut self, fields: Value) -> Value {
        let mut request = Map::new();
        request.insert("type".into(), "subscribe".into());
        request.extend(
            fields
                .as_object()
                .expect("subscribe fields are an object")
                .clone(),
        );
        self.send_json(&Value::Object(request)).await;
        let answer = self.expect_type("subscribed").await;
        for key in ["executionId", "conversationId"] {
            assert_eq!(
                answer.get(key),
                fields.get(key),
                "subscribed names its target: {answer}"
            );
        }
        answer
    }

    /// Subscribes to an execution without filters; it must replay nothing.
    pub async fn subscribe_execution(&mut self, execution_id: &str) {
        let answer = self.subscribe(json!({ "executionId": execution_id })).await;
        assert_eq!(answer["replayed"], 0, "{answer}");
    }

    /// Sends `{"type":"ping"}`; the very next message must be `pong`, which
    /// proves nothing else was waiting ahead of it.
    pub async fn ping(&mut self) {
        self.send_json(&json!({"type": "ping"})).await;
        let answer = self.next_json().await;
        assert_eq!(
            answer,
            json!({"type": "pong"}),
            "client {}: expected pong",
            self.client_id
        );
    }

    /// Reads until the connection closes: the JSON messages before the close, and its code.
    pub async fn until_close(&mut self) -> (Vec<Value>, Option<u16>) {
        let mut messages = Vec::new();
        loop {
            match self.recv().await {
                Frame::Json(value) => messages.push(value),
                Frame::Close(code, _) => return (messages, code),
                other => panic!(
                    "client {}: expected messages then a close frame, got {other:?} after {} messages (last: {:?})",
                    self.client_id,
                    messages.len(),
                    messages.last()
                ),
            }
        }
    }

    /// Sends a close frame and waits for the connection to end.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Some(frame) = self.recv_within(STEP).await {
            if matches!(frame, Frame::Close(..) | Frame::Ended(_)) {
                return;
            }
        }
    }
}

/// Linux's `TCP_ESTABLISHED` (`include/net/tcp_states.h`; libc does not export it).
pub const TCP_ESTABLISHED: u8 = 1;

/// The kernel's TCP state of socket `fd` ([`TCP_ESTABLISHED`] while open both ways).
pub fn tcp_state(fd: std::os::fd::RawFd) -> u8 {
    // SAFETY: `info` is a plain C struct the kernel fills, `len` its size.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let got = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        assert_eq!(got, 0, "TCP_INFO: {}", io::Error::last_os_error());
        info.tcpi_state
    }
}
