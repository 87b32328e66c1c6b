//! The replay seam under churn: clients resubscribe in bursts (subscribe,
//! unsubscribe, subscribe again, sometimes with a round trip between so
//! that the first history read is in flight) while producers post flat out.
//! Every subscription must replay from its `fromSeq` and go live with every
//! seq once, in order.

use super::load::Dice;
use crate::common::{seqs, Broker, BusyProducers, Client};
use serde_json::{json, Value};
use std::sync::Arc;

/// How a round subscribes.
#[derive(Debug, Clone, Copy)]
enum Burst {
    /// One subscribe.
    Plain,
    /// Subscribe, unsubscribe, subscribe, back to back.
    Churn,
    /// As `Churn`, with a ping's round trip after the first subscribe: by
    /// then the Session has registered and its history read is running.
    ChurnDuringRead,
}

/// `clients` clients each run `rounds` resubscribe rounds against two
/// producers posting to one execution without pause.
pub async fn resubscribe_bursts(broker: &Arc<Broker>, clients: usize, rounds: usize) {
    const EXECUTION: &str = "stress-seam";
    let producers = BusyProducers::start(broker, EXECUTION, 2);
    producers
        .progress()
        .wait_for(|seq| *seq >= 500)
        .await
        .expect("producers run");
    let mut runs = Vec::new();
    for c in 0..clients {
        let broker = broker.clone();
        let progress = producers.progress();
        runs.push(tokio::spawn(async move {
            let mut client = broker.connect().await;
            let mut dice = Dice::new(c as u64 + 1);
            for round in 0..rounds {
                let burst = match dice.below(3) {
                    0 => Burst::Plain,
                    1 => Burst::Churn,
                    _ => Burst::ChurnDuringRead,
                };
                let head = *progress.borrow();
                let from = head.saturating_sub(dice.below(400));
                let context = format!("client {c} round {round} ({burst:?}, fromSeq {from})");
                one_round(
                    &mut client,
                    EXECUTION,
                    burst,
                    from,
                    progress.clone(),
                    &context,
                )
                .await;
            }
        }));
    }
    for run in runs {
        run.await.expect("a client failed its round");
    }
    producers.stop_after(0).await;
}

async fn one_round(
    client: &mut Client,
    execution: &str,
    burst: Burst,
    from: u64,
    mut progress: tokio::sync::watch::Receiver<u64>,
    context: &str,
) {
    let subscribe = json!({"type": "subscribe", "executionId": execution, "fromSeq": from});
    let unsubscribe = json!({"type": "unsubscribe", "executionId": execution});
    client.send_json(&subscribe).await;
    if matches!(burst, Burst::ChurnDuringRead) {
        client.send_json(&json!({"type": "ping"})).await;
        client.skip_to("pong", context).await;
    }
    if !matches!(burst, Burst::Plain) {
        client.send_json(&unsubscribe).await;
        client.send_json(&subscribe).await;
        client.skip_to("unsubscribed", context).await;
    }
    let subscribed = next_of_type(client, "subscribed", context).await;
    let replayed = subscribed["replayed"].as_u64().unwrap_or_default();
    let target = *progress.borrow() + 5;
    progress
        .wait_for(|seq| *seq >= target)
        .await
        .expect("producers run");
    let mut got: Vec<Value> = Vec::new();
    while got.last().and_then(|e| e["seq"].as_u64()) < Some(target) {
        got.push(client.next_event_body().await);
    }
    let got = seqs(&got);
    let want: Vec<u64> = (from + 1..=*got.last().unwrap_or(&from)).collect();
    assert!(
        got == want && got.first() == Some(&(from + 1)),
        "{context}: replayed {replayed}, then {}",
        describe(&got, from)
    );
    client.send_json(&unsubscribe).await;
    client.skip_to("unsubscribed", context).await;
}

/// The next message, which must be of type `kind`.
async fn next_of_type(client: &mut Client, kind: &str, context: &str) -> Value {
    let message = client.next_json().await;
    assert_eq!(message["type"], kind, "{context}: {message}");
    message
}

/// The first place where `got` leaves `from + 1, from + 2, …`, with its surroundings.
fn describe(got: &[u64], from: u64) -> String {
    let first_wrong = (from + 1..)
        .zip(got)
        .position(|(want, got)| want != *got)
        .unwrap_or(got.len());
    let around = &got[first_wrong.saturating_sub(3)..(first_wrong + 3).min(got.len())];
    match got.get(first_wrong) {
        Some(seq) => format!(
            "at index {first_wrong} expected {}, got {seq} (around: {around:?})",
            from + 1 + first_wrong as u64
        ),
        None => format!("{} events, all in order", got.len()),
    }
}
