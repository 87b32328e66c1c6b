//! Many executions at once, for the partitioned stream: a subscriber per
//! execution on every node, batches that mix executions (so one publish
//! spans partitions), and the check that every subscriber got every seq of
//! its execution once, in order.
//!
//! Included with `#[path]` next to `cluster_support`, whose nodes and
//! subscribers it uses.

#![allow(dead_code)] // each test file uses a different part

use crate::cluster_support::{assert_sequence, Node, Sub};
use crate::common::thinking;
use serde_json::Value;

/// What each execution was given: its name and its `(seq, event)`s in order.
pub struct Posted {
    /// `exec-{tag}-{i}`, one per execution.
    pub executions: Vec<String>,
    /// Per execution, in seq order.
    pub expected: Vec<Vec<(u64, Value)>>,
    /// Rounds posted so far (the seq of each execution's latest event).
    rounds: u64,
}

impl Posted {
    /// `count` executions named after `tag`, nothing posted yet.
    pub fn new(tag: &str, count: usize) -> Posted {
        Posted {
            executions: (0..count).map(|i| format!("exec-{tag}-{i}")).collect(),
            expected: vec![Vec::new(); count],
            rounds: 0,
        }
    }

    /// The same executions, expecting only what is posted from now on (for
    /// subscribers that join now, without replay).
    pub fn continued(&self) -> Posted {
        Posted {
            executions: self.executions.clone(),
            expected: vec![Vec::new(); self.executions.len()],
            rounds: self.rounds,
        }
    }

    /// Adds what `later` (from [`Posted::continued`]) posted after this.
    pub fn append(&mut self, later: Posted) {
        for (expected, more) in self.expected.iter_mut().zip(later.expected) {
            expected.extend(more);
        }
        self.rounds = later.rounds;
    }

    /// Events posted in all.
    pub fn total(&self) -> usize {
        self.expected.iter().map(Vec::len).sum()
    }

    /// Posts `rounds` rounds; each round is one batch holding the next event
    /// of every execution, posted to the nodes in turn. Every seq must be
    /// the execution's next, whichever node took the batch.
    pub async fn post_rounds(&mut self, nodes: &[Node], rounds: u64) {
        for _ in 0..rounds {
            self.rounds += 1;
            let round = self.rounds;
            let batch: Vec<Value> = self
                .executions
                .iter()
                .map(|execution| thinking(execution, round))
                .collect();
            let node = &nodes[round as usize % nodes.len()];
            let (status, answer) = node.post(&Value::Array(batch.clone())).await;
            assert_eq!(status, 202, "{}: {answer}", node.name);
            assert_eq!(answer["accepted"], batch.len(), "{answer}");
            for (i, event) in batch.into_iter().enumerate() {
                let got = &answer["events"][i];
                assert_eq!(got["executionId"], self.executions[i].as_str(), "{answer}");
                assert_eq!(got["seq"], round, "the next seq of its execution: {answer}");
                self.expected[i].push((round, event));
            }
        }
    }
}

/// A subscriber to every execution on every node: `[node][execution]`.
pub async fn watch_everywhere(nodes: &[Node], posted: &Posted) -> Vec<Vec<Sub>> {
    let mut all = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut subs = Vec::with_capacity(posted.executions.len());
        for execution in &posted.executions {
            let (sub, replayed) = node.subscriber(execution, None).await;
            assert_eq!(replayed, 0, "{}: nothing to replay yet", node.name);
            subs.push(sub);
        }
        all.push(subs);
    }
    all
}

/// Every subscriber got exactly its execution's events, once and in order,
/// and nothing after them.
pub async fn assert_delivered_everywhere(nodes: &[Node], subs: &mut [Vec<Sub>], posted: &Posted) {
    for (node, subs) in nodes.iter().zip(subs.iter_mut()) {
        for ((execution, expected), sub) in posted
            .executions
            .iter()
            .zip(&posted.expected)
            .zip(subs.iter_mut())
        {
            let last = expected.last().expect("something was posted").0;
            let delivered = sub.events_through(last).await;
            // `events_through` pings after the last: nothing came twice.
            assert_sequence(&format!("{} {execution}", node.name), &delivered, expected);
        }
    }
}

/// No node needed a repair: no duplicate dropped, no gap, no reset.
pub async fn assert_no_repairs(nodes: &[Node]) {
    for node in nodes {
        let stats = node.stats().await;
        for counter in [
            "duplicate-dropped",
            "gap-filled",
            "gap-unfilled",
            "stream-reset",
            "unreadable-entry",
            "publish-failed",
        ] {
            assert_eq!(stats["cluster"][counter], 0, "{}: {stats}", node.name);
        }
    }
}
