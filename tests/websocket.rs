//! Live delivery over WebSocket, through the real binary: the getting-started wscat
//! and browser flow works unchanged at `/` and `/ws`, every one of the 11
//! event types round-trips field for field, conversation subscriptions and
//! filters deliver exactly what they select, unsubscribe stops delivery, and
//! two clients of one execution see the same events in the same order.

mod common;

use common::{all_types, assert_delivered, event, json_eq, seqs, thinking, Broker, SEED_EVENT};
use serde_json::{json, Value};

/// The getting-started session: connect, subscribe with its exact message,
/// POST the protocol's example event, receive `{"type":"event","executionId":…,"event":{…}}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_flow_works_at_root_and_at_ws() {
    let broker = Broker::start().await;
    let mut at_root = broker.connect_path("/").await;
    let mut at_ws = broker.connect_path("/ws").await;
    for client in [&at_root, &at_ws] {
        let keys: Vec<_> = client.hello.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys.len(),
            2,
            "connected is {{type, clientId}}: {}",
            client.hello
        );
    }
    assert_ne!(at_root.client_id, at_ws.client_id, "client ids are unique");

    // The wscat line, spaces and all.
    for client in [&mut at_root, &mut at_ws] {
        client
            .send_text(r#"{"type": "subscribe", "executionId": "exec-123"}"#)
            .await;
        let answer = client.next_json().await;
        assert_eq!(
            answer,
            json!({"type": "subscribed", "executionId": "exec-123", "replayed": 0})
        );
    }

    let (status, answer) = broker.post_raw(SEED_EVENT).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer,
        json!({"accepted": 1, "events": [{"executionId": "exec-123", "seq": 1}]})
    );

    let posted: Value = serde_json::from_str(SEED_EVENT).unwrap();
    for client in [&mut at_root, &mut at_ws] {
        let message = client.next_json().await;
        let keys: Vec<_> = message.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys.len(),
            3,
            "the event message has type, executionId, event: {message}"
        );
        assert_eq!(message["type"], "event");
        assert_eq!(message["executionId"], "exec-123");
        assert_delivered(&posted, &message["event"], 1);
        client.ping().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_eleven_types_round_trip_field_for_field() {
    let broker = Broker::start().await;
    let mut client = broker.connect().await;
    client.subscribe_execution("exec-types").await;
    let posted = all_types("exec-types", "conv-types");
    for (i, event) in posted.iter().enumerate() {
        assert_eq!(broker.post_event(event).await, i as u64 + 1);
    }
    for (i, event) in posted.iter().enumerate() {
        let delivered = client.next_event_body().await;
        assert_delivered(event, &delivered, i as u64 + 1);
    }

    // Without a timestamp the broker stamps the event itself.
    let bare = event("agent-start", "exec-types", json!({"agentId": "writer-2"}));
    assert_eq!(broker.post_event(&bare).await, 12);
    let delivered = client.next_event_body().await;
    assert_delivered(&bare, &with_conversation(&bare, &delivered), 12);
}

/// The broker may remember an execution's conversation on later events; the
/// comparison tolerates exactly that one addition.
fn with_conversation(posted: &Value, delivered: &Value) -> Value {
    let mut delivered = delivered.clone();
    if posted.get("conversationId").is_none() {
        if let Some(conversation) = delivered.as_object_mut().unwrap().remove("conversationId") {
            assert_eq!(conversation, "conv-types", "{delivered}");
        }
    }
    delivered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_subscription_gets_every_execution_of_it_and_nothing_else() {
    let broker = Broker::start().await;
    let mut client = broker.connect().await;
    let answer = client.subscribe(json!({"conversationId": "conv-1"})).await;
    assert_eq!(
        answer,
        json!({"type":"subscribed","conversationId":"conv-1","replayed":0})
    );

    let in_conversation = |execution: &str, conversation: &str, n: u64| {
        let mut e = thinking(execution, n);
        e["conversationId"] = json!(conversation);
        e
    };
    // Interleaved: conv-2 events come before, between and after conv-1 ones.
    let plan = [
        ("exec-c2", "conv-2"),
        ("exec-c1a", "conv-1"),
        ("exec-c2", "conv-2"),
        ("exec-c1b", "conv-1"),
        ("exec-c1a", "conv-1"),
        ("exec-c2", "conv-2"),
        ("exec-c1b", "conv-1"),
        ("exec-c1a", "conv-1"),
    ];
    let mut expected = Vec::new();
    for (n, (execution, conversation)) in plan.iter().enumerate() {
        let e = in_conversation(execution, conversation, n as u64);
        let seq = broker.post_event(&e).await;
        if *conversation == "conv-1" {
            expected.push((e, seq));
        }
    }
    for (posted, seq) in &expected {
        let message = client.next_event().await;
        assert_eq!(message["executionId"], posted["executionId"], "{message}");
        assert_delivered(posted, &message["event"], *seq);
    }
    // Nothing of conv-2 was waiting behind them.
    client.ping().await;
    assert_eq!(
        expected.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        vec![1, 1, 2, 2, 3],
        "seq counts per execution"
    );
}

/// Three clients with one filter each, and a fourth with two; all also
/// subscribe, unfiltered, to a marker execution whose one event is posted
/// last: once it arrives, everything the filter let through has arrived too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_narrows_delivery() {
    let broker = Broker::start().await;
    let filters = [
        json!({"types": ["tool-call", "tool-result"]}),
        json!({"agentId": "agent-a"}),
        json!({"department": "story"}),
        json!({"types": ["agent-start"], "department": "story"}),
    ];
    let mut clients = Vec::new();
    for filter in &filters {
        let mut client = broker.connect().await;
        let mut request = filter.clone();
        request["executionId"] = json!("exec-f");
        client.subscribe(request).await;
        client.subscribe_execution("exec-f-done").await;
        clients.push(client);
    }

    let posted = [
        event(
            "agent-start",
            "exec-f",
            json!({"agentId": "agent-a", "department": "story"}),
        ),
        event(
            "agent-start",
            "exec-f",
            json!({"agentId": "agent-b", "department": "art"}),
        ),
        event(
            "tool-call",
            "exec-f",
            json!({"agentId": "agent-a", "toolName": "search"}),
        ),
        event(
            "tool-result",
            "exec-f",
            json!({"agentId": "agent-b", "toolName": "search"}),
        ),
        event(
            "agent-thinking",
            "exec-f",
            json!({"agentId": "agent-a", "thought": "hm"}),
        ),
        event("department-start", "exec-f", json!({"department": "story"})),
        event(
            "department-start",
            "exec-f",
            json!({"department": "art", "agentId": "agent-a"}),
        ),
        event("orchestration-start", "exec-f", json!({})),
        event(
            "agent-start",
            "exec-f",
            json!({"agentId": "agent-c", "department": "story"}),
        ),
    ];
    for (i, e) in posted.iter().enumerate() {
        assert_eq!(broker.post_event(e).await, i as u64 + 1);
    }
    broker.post_event(&thinking("exec-f-done", 0)).await;

    // seqs each filter lets through
    let expected: [&[u64]; 4] = [&[3, 4], &[1, 3, 5, 7], &[1, 6, 9], &[1, 9]];
    for ((client, filter), want) in clients.iter_mut().zip(&filters).zip(expected) {
        let mut got = Vec::new();
        loop {
            let message = client.next_event().await;
            if message["executionId"] == "exec-f-done" {
                break;
            }
            let delivered = &message["event"];
            let seq = delivered["seq"].as_u64().unwrap();
            assert_delivered(&posted[seq as usize - 1], delivered, seq);
            got.push(delivered.clone());
        }
        assert_eq!(seqs(&got), want, "filter {filter}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let broker = Broker::start().await;
    let mut client = broker.connect().await;
    client.subscribe_execution("exec-u1").await;
    client.subscribe_execution("exec-u2").await;

    broker.post_event(&thinking("exec-u1", 1)).await;
    assert_eq!(client.next_event().await["executionId"], "exec-u1");

    client
        .send_json(&json!({"type": "unsubscribe", "executionId": "exec-u1"}))
        .await;
    assert_eq!(
        client.next_json().await,
        json!({"type": "unsubscribed", "executionId": "exec-u1"})
    );
    // Idempotent: a second unsubscribe is answered the same way.
    client
        .send_json(&json!({"type": "unsubscribe", "executionId": "exec-u1"}))
        .await;
    assert_eq!(
        client.next_json().await,
        json!({"type": "unsubscribed", "executionId": "exec-u1"})
    );

    // One producer, in this order: if exec-u1's event were delivered, it
    // would arrive before exec-u2's.
    broker.post_event(&thinking("exec-u1", 2)).await;
    broker.post_event(&thinking("exec-u2", 1)).await;
    let message = client.next_event().await;
    assert_eq!(
        message["executionId"], "exec-u2",
        "only exec-u2 is subscribed: {message}"
    );
    client.ping().await;

    // The same for a conversation subscription.
    client.subscribe(json!({"conversationId": "conv-u"})).await;
    client
        .send_json(&json!({"type": "unsubscribe", "conversationId": "conv-u"}))
        .await;
    assert_eq!(
        client.next_json().await,
        json!({"type": "unsubscribed", "conversationId": "conv-u"})
    );
    let mut in_conversation = thinking("exec-u3", 1);
    in_conversation["conversationId"] = json!("conv-u");
    broker.post_event(&in_conversation).await;
    broker.post_event(&thinking("exec-u2", 2)).await;
    let message = client.next_event().await;
    assert_eq!(
        message["executionId"], "exec-u2",
        "conv-u is unsubscribed: {message}"
    );
    assert_eq!(message["event"]["seq"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_of_one_execution_see_the_same_order() {
    const PRODUCERS: u64 = 4;
    const EACH: u64 = 50;
    let broker = std::sync::Arc::new(Broker::start().await);
    let mut first = broker.connect().await;
    let mut second = broker.connect_path("/ws").await;
    first.subscribe_execution("exec-order").await;
    second.subscribe_execution("exec-order").await;

    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let broker = broker.clone();
        producers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..EACH {
                let mut e = thinking("exec-order", n);
                e["metadata"] = json!({"producer": producer, "n": n});
                seqs.push(broker.post_event(&e).await);
            }
            seqs
        }));
    }
    let mut accepted = Vec::new();
    for producer in producers {
        let seqs = producer.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one producer's seqs increase: {seqs:?}"
        );
        accepted.extend(seqs);
    }
    accepted.sort_unstable();
    let total = PRODUCERS * EACH;
    assert_eq!(
        accepted,
        (1..=total).collect::<Vec<_>>(),
        "seqs are 1..n, no gap, no repeat"
    );

    let seen_first = first.events(total as usize).await;
    let seen_second = second.events(total as usize).await;
    assert_eq!(seqs(&seen_first), (1..=total).collect::<Vec<_>>());
    assert!(
        seen_first
            .iter()
            .zip(&seen_second)
            .all(|(a, b)| json_eq(a, b)),
        "both clients received the same events in the same order"
    );
    // Each producer's events keep that producer's order.
    for producer in 0..PRODUCERS {
        let ns: Vec<_> = seen_first
            .iter()
            .filter(|e| e["metadata"]["producer"] == producer)
            .map(|e| e["metadata"]["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns, (0..EACH).collect::<Vec<_>>(), "producer {producer}");
    }
    first.ping().await;
    second.ping().await;
}
