//! A cut slow consumer loses its socket, and its connection slot only with
//! it (issue #16): a client that never reads must neither keep sockets
//! open past the close timeout nor hold more of them than
//! `max_connections_per_ip` allows.

mod common;
#[path = "stress/stalled.rs"]
#[allow(dead_code)]
mod stalled;

use common::Broker;
use stalled::{
    open_stalled_sse, open_stalled_websocket, post_until_cut, read_to_the_end, wait_until_closed,
    StalledSse, CLOSE_SLACK,
};
use std::time::{Duration, Instant};

const LIMIT: usize = 3;
const CLOSE_TIMEOUT: Duration = Duration::from_millis(1000);

async fn broker() -> Broker {
    Broker::builder()
        .setting("MAX_CONNECTIONS_PER_IP", LIMIT)
        .setting("SESSION_QUEUE_BYTES", 65536)
        .setting("CLOSE_TIMEOUT_MS", CLOSE_TIMEOUT.as_millis())
        .start()
        .await
}

/// Just after the cut, a new connection is refused while every cut socket
/// is open. Under load the first reader may be cut a whole close timeout
/// before the last, and its socket reset already: then the newcomer may be
/// admitted, but only with one of the cut sockets closed (allowing for the
/// reset still on its way to the client).
async fn refused_while_the_cut_sockets_are_open(broker: &Broker, states: impl Fn() -> Vec<u8>) {
    if broker.try_connect(None).await.err() == Some(503) {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while states().iter().all(|s| *s == common::TCP_ESTABLISHED) {
        assert!(
            Instant::now() < deadline,
            "a connection past the limit was admitted while every cut socket is open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Tries a new WebSocket connection until one is admitted (bounded): the
/// slots of the cut readers come back.
async fn admitted_again(broker: &Broker, states: impl Fn() -> Vec<u8>) -> common::Client {
    let deadline = Instant::now() + CLOSE_TIMEOUT + CLOSE_SLACK;
    loop {
        match broker.try_connect(None).await {
            Ok(client) => return client,
            Err(503) => {}
            Err(status) => panic!("an upgrade past the limit gets 503, not {status}"),
        }
        assert!(
            Instant::now() < deadline,
            "no slot came back within {:?} of the cut; TCP states of the cut sockets {:?}",
            CLOSE_TIMEOUT + CLOSE_SLACK,
            states()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_websocket_reader_loses_its_socket_and_then_its_slot() {
    const EXECUTION: &str = "exec-stalled-ws";
    let broker = broker().await;
    let mut stalled = Vec::new();
    for _ in 0..LIMIT {
        stalled.push(open_stalled_websocket(&broker, EXECUTION).await);
    }
    assert_eq!(broker.try_connect(None).await.err(), Some(503));

    post_until_cut(&broker, EXECUTION, LIMIT as u64).await;
    // Cut, but their sockets are open: still no room.
    let states = || stalled.iter().map(common::Client::tcp_state).collect();
    refused_while_the_cut_sockets_are_open(&broker, states).await;

    // A slot comes back only once the broker has closed the sockets (the
    // reset may still be on its way to the client when the slot is free).
    let mut newcomer = admitted_again(&broker, states).await;
    wait_until_closed("the cut WebSocket sockets", Duration::from_secs(1), states).await;

    let stats = broker
        .wait_for_stats("one connection, none closing", |s| {
            s["connections"] == 1 && s["closingConnections"] == 0
        })
        .await;
    assert_eq!(stats["drops"]["slow-consumer"], LIMIT as u64, "{stats}");
    assert!(
        stats["drops"]["slow-consumer-frames"].as_u64() > Some(0),
        "{stats}"
    );
    assert_eq!(
        stats["forcedCloses"]["slow-consumer"], LIMIT as u64,
        "{stats}"
    );
    let (_, _, metrics) = broker.get("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "agent_events_forced_closes_total{{reason=\"slow-consumer\"}} {LIMIT}"
        )),
        "{metrics}"
    );

    // Reading at last, a cut reader gets what reached it, then the end.
    for client in &mut stalled {
        read_to_the_end(client).await;
    }
    newcomer.ping().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_sse_reader_loses_its_socket_and_then_its_slot() {
    const EXECUTION: &str = "exec-stalled-sse";
    let broker = broker().await;
    let mut stalled = Vec::new();
    for _ in 0..LIMIT {
        let sse = open_stalled_sse(&broker, EXECUTION).await;
        stalled.push(sse.unwrap_or_else(|status| panic!("SSE refused: {status}")));
    }
    assert_eq!(open_stalled_sse(&broker, EXECUTION).await.err(), Some(503));

    post_until_cut(&broker, EXECUTION, LIMIT as u64).await;
    let states = || stalled.iter().map(StalledSse::tcp_state).collect();
    refused_while_the_cut_sockets_are_open(&broker, states).await;

    let mut newcomer = admitted_again(&broker, states).await;
    wait_until_closed("the cut SSE sockets", Duration::from_secs(1), states).await;

    let stats = broker
        .wait_for_stats("one connection, none closing", |s| {
            s["connections"] == 1 && s["closingConnections"] == 0
        })
        .await;
    assert_eq!(stats["drops"]["slow-consumer"], LIMIT as u64, "{stats}");
    assert_eq!(
        stats["forcedCloses"]["slow-consumer"], LIMIT as u64,
        "{stats}"
    );
    newcomer.ping().await;
}

/// A reader that keeps up is never reset, even when the broker closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_client_is_closed_gracefully_not_reset() {
    let broker = broker().await;
    let mut client = broker.connect().await;
    client.subscribe_execution("exec-fine").await;
    client.send_binary(vec![1, 2, 3]).await;
    client.expect_error("binary-not-supported").await;
    client.close().await;
    let stats = broker
        .wait_for_stats("no connection", |s| s["connections"] == 0)
        .await;
    assert_eq!(stats["forcedCloses"]["client-close"], 0, "{stats}");
}
