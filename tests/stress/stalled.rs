//! Stalled readers against the per-address connection limit (issue #16).
//!
//! A client that stops reading is cut with `slow-consumer`, but its socket
//! is held by the HTTP server's connection, which waits for the client's
//! receive window to open before anything else: the broker must close that
//! socket itself, within `close_timeout`, and count the connection against
//! `max_connections_per_ip` until it has. Otherwise a client that never
//! reads keeps its sockets, and its slots are handed out again meanwhile.
//!
//! The helpers here are shared with `tests/stalled_readers.rs`, which
//! includes this file as a module; `tests/stress.rs` calls
//! [`stalled_readers_against_the_per_ip_limit`].

use crate::common::{seqs, tcp_state, thinking, Broker, Client, Frame, STEP, TCP_ESTABLISHED};
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The receive buffer of a stalled reader: small, so the broker's writes stall soon.
pub const STALLED_RECV_BUFFER: u32 = 4096;

/// How long after its close timeout the broker may take to close a cut socket.
pub const CLOSE_SLACK: Duration = Duration::from_secs(3);

/// An SSE client that read its response head and nothing after it.
pub struct StalledSse {
    tcp: TcpStream,
}

impl StalledSse {
    /// The kernel's TCP state of its socket.
    pub fn tcp_state(&self) -> u8 {
        tcp_state(self.tcp.as_raw_fd())
    }
}

/// Opens `GET /api/executions/{execution}/stream` on a socket with a tiny
/// receive buffer and reads the response head only; the HTTP status if it
/// is not 200 (503 past a connection limit).
pub async fn open_stalled_sse(broker: &Broker, execution: &str) -> Result<StalledSse, u16> {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .set_recv_buffer_size(STALLED_RECV_BUFFER)
        .expect("SO_RCVBUF");
    let address = ([127, 0, 0, 1], broker.port).into();
    let mut tcp = tokio::time::timeout(STEP, socket.connect(address))
        .await
        .expect("TCP connect timed out")
        .expect("TCP connect");
    let request = format!(
        "GET /api/executions/{execution}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("send the request");
    // Byte by byte up to the blank line: nothing of the body is read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(STEP, tcp.read(&mut byte))
            .await
            .expect("the response head timed out")
            .expect("read the response head");
        assert_eq!(read, 1, "the connection ended in the head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    if status == 200 {
        Ok(StalledSse { tcp })
    } else {
        Err(status)
    }
}

/// A WebSocket client subscribed to `execution` that will never read or write again.
pub async fn open_stalled_websocket(broker: &Broker, execution: &str) -> Client {
    let mut client = broker.connect_small_buffer(STALLED_RECV_BUFFER).await;
    client.subscribe_execution(execution).await;
    client.mute();
    client
}

/// Posts 30 KB events to `execution` until `slow-consumer` drops reach
/// `cuts`; returns the last seq posted.
pub async fn post_until_cut(broker: &Broker, execution: &str, cuts: u64) -> u64 {
    let blob = "x".repeat(30_000);
    let started = Instant::now();
    let mut posted = 0u64;
    loop {
        let mut last = 0;
        for _ in 0..4 {
            let mut e = thinking(execution, posted);
            e["metadata"] = json!({"n": posted, "blob": blob});
            posted += 1;
            last = broker.post_event(&e).await;
        }
        let stats = broker.stats().await;
        if stats["drops"]["slow-consumer"].as_u64() >= Some(cuts) {
            return last;
        }
        assert!(
            started.elapsed() < 4 * STEP,
            "{posted} events of 30 KB and {cuts} stalled readers are still not all cut: {stats}"
        );
    }
}

/// Polls (bounded by `within`) until `closed` holds; panics with `what` and
/// the last `states` otherwise.
pub async fn wait_until_closed(what: &str, within: Duration, states: impl Fn() -> Vec<u8>) {
    let deadline = Instant::now() + within;
    loop {
        let now = states();
        if now.iter().all(|s| *s != TCP_ESTABLISHED) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still ESTABLISHED after {within:?} (TCP states {now:?}; 1 is ESTABLISHED)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a client whose socket the broker reset: whatever reached it, then
/// the end; never a hang, and never the close frame (it was behind
/// everything the client did not read, and was discarded with it).
pub async fn read_to_the_end(client: &mut Client) {
    loop {
        match client.recv().await {
            Frame::Json(message) => assert_eq!(message["type"], "event", "{message}"),
            Frame::Ended(_) => return,
            other => panic!("a reset reader gets events then the end, not {other:?}"),
        }
    }
}

/// A subscriber that reads everything until an event with `metadata.end`;
/// its seqs.
pub fn good_subscriber(mut client: Client) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        let mut got: Vec<Value> = Vec::new();
        loop {
            let e = client.next_event_body().await;
            let end = e["metadata"]["end"] == true;
            got.push(e);
            if end {
                client.ping().await;
                return seqs(&got);
            }
        }
    })
}

/// Rounds of stalled readers (two WebSocket, one SSE) beside two good
/// subscribers, under `max_connections_per_ip` = 5: each round the limit
/// is full while the stalled sockets are open, every one of them is cut
/// and its socket closed within the close timeout, the slots come back,
/// and the good subscribers get every seq in order.
pub async fn stalled_readers_against_the_per_ip_limit(rounds: usize) {
    const EXECUTION: &str = "exec-stalled-stress";
    const GOOD: usize = 2;
    const STALLED_WS: usize = 2;
    const STALLED_SSE: usize = 1;
    const CLOSE_TIMEOUT: Duration = Duration::from_millis(300);
    let started = Instant::now();
    let broker = Broker::builder()
        .setting("MAX_CONNECTIONS_PER_IP", GOOD + STALLED_WS + STALLED_SSE)
        // Room for the good readers to fall a few events behind under load.
        .setting("SESSION_QUEUE_BYTES", 262_144)
        .setting("CLOSE_TIMEOUT_MS", CLOSE_TIMEOUT.as_millis())
        .start()
        .await;
    let mut good = Vec::new();
    for _ in 0..GOOD {
        let mut client = broker.connect().await;
        client.subscribe_execution(EXECUTION).await;
        good.push(good_subscriber(client));
    }
    let mut cuts = 0;
    for round in 0..rounds {
        let mut stalled_ws = Vec::new();
        for _ in 0..STALLED_WS {
            stalled_ws.push(open_stalled_websocket(&broker, EXECUTION).await);
        }
        let mut stalled_sse = Vec::new();
        for _ in 0..STALLED_SSE {
            let sse = open_stalled_sse(&broker, EXECUTION).await;
            stalled_sse.push(sse.unwrap_or_else(|s| panic!("round {round}: SSE refused: {s}")));
        }
        let refused = broker.try_connect(None).await.err();
        assert_eq!(refused, Some(503), "round {round}: the limit is full");

        cuts += (STALLED_WS + STALLED_SSE) as u64;
        post_until_cut(&broker, EXECUTION, cuts).await;
        wait_until_closed(
            &format!("round {round}: the cut sockets"),
            CLOSE_TIMEOUT + CLOSE_SLACK,
            || {
                let ws = stalled_ws.iter().map(Client::tcp_state);
                ws.chain(stalled_sse.iter().map(StalledSse::tcp_state))
                    .collect()
            },
        )
        .await;
        broker
            .wait_for_stats("the cut connections gone", |s| {
                s["connections"] == GOOD as u64 && s["closingConnections"] == 0
            })
            .await;
        for client in &mut stalled_ws {
            read_to_the_end(client).await;
        }
    }

    let mut end = thinking(EXECUTION, 0);
    end["metadata"] = json!({"end": true});
    let last = broker.post_event(&end).await;
    for reader in good {
        let got = tokio::time::timeout(STEP, reader)
            .await
            .expect("a good subscriber never saw the end")
            .expect("a good subscriber failed");
        assert_eq!(
            got,
            (1..=last).collect::<Vec<_>>(),
            "a good subscriber missed or repeated events"
        );
    }
    let stats = broker.stats().await;
    assert_eq!(stats["drops"]["slow-consumer"], cuts, "{stats}");
    assert_eq!(stats["forcedCloses"]["slow-consumer"], cuts, "{stats}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{rounds} rounds took {:?}",
        started.elapsed()
    );
}
