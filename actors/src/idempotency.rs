//! Idempotent publish: a producer that retries a batch whose answer it lost
//! (a timeout, a dropped connection, a 503) names the batch with an
//! [`IdempotencyKey`], and the broker answers every retry with the first
//! attempt's receipt instead of sequencing the batch again (the idea of
//! Kafka's idempotent producer and of Centrifugo's and Stripe's idempotency
//! keys).
//!
//! What is remembered, and where:
//! - Only an attempt that was accepted. A refused one (invalid, rate
//!   limited, a store that cannot take it) pins nothing: its retry is a new
//!   attempt.
//! - For the idempotency window (`idempotency_window_secs`, 24 h by default,
//!   like Stripe) after the first attempt.
//! - In the store, in the same `append` as the events ([`KeyRecord`]), so a
//!   202 means the key is stored too and a retry after a restart gets the
//!   same seqs; and in [`Keys`], the Emitter's cache, which answers the hot
//!   path and holds attempts whose events are not yet durable: a retry that
//!   arrives meanwhile waits for the first attempt's outcome and shares it.
//! - A retry must be the same request: the batch's [`fingerprint`] is kept
//!   with the key, and a different batch under a used key is refused with
//!   `idempotency-key-reused` (like Stripe), never answered with someone
//!   else's seqs.
//!
//! The Emitter only calls this module; it holds no idempotency logic itself.

use crate::event::AgentEvent;
use crate::protocol::Accepted;
pub use crate::store::KeyRecord;
use crate::store::StoreError;
use chrono::Utc;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest key accepted, in characters (Stripe allows 255; 128 is the
/// broker's ID limit and leaves room for a UUID with a prefix).
pub const MAX_KEY_LEN: usize = 128;

/// A producer's name for one batch: 1 to [`MAX_KEY_LEN`] visible ASCII
/// characters (`!` to `~`, no space). Visible ASCII only, so a key is the
/// same bytes in a header, a log line, a SQLite text and a Redis key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Arc<str>);

/// Why a string is no [`IdempotencyKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidKey(pub String);

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidKey {}

impl IdempotencyKey {
    /// The key `key`, if it keeps the syntax rule.
    pub fn new(key: impl AsRef<str>) -> Result<Self, InvalidKey> {
        let key = key.as_ref();
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(InvalidKey(format!(
                "an Idempotency-Key is 1 to {MAX_KEY_LEN} characters, this one has {}",
                key.len()
            )));
        }
        if let Some(bad) = key.bytes().position(|b| !b.is_ascii_graphic()) {
            return Err(InvalidKey(format!(
                "an Idempotency-Key is visible ASCII (`!` to `~`, no space); \
                 character {bad} is not"
            )));
        }
        Ok(IdempotencyKey(key.into()))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What makes two attempts "the same request": the SHA-256 of the batch as
/// the producer gave it (before the broker stamps timestamps and
/// conversations), hex. Hashing the parsed events rather than the body's
/// bytes lets a client re-serialize its retry (other whitespace or field
/// order) without being refused.
pub fn fingerprint(events: &[AgentEvent]) -> String {
    let value = serde_json::to_value(events).expect("an event always serializes");
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// JSON with every object's keys sorted: `metadata` keeps the producer's
/// key order (serde_json's `preserve_order` is on in this build), and a
/// retry that orders them otherwise is still the same batch.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The outcome of a first attempt's durability, which every retry that
/// came in meanwhile awaits too.
pub type Durability = Shared<BoxFuture<'static, Result<(), StoreError>>>;

/// Makes a first attempt's durability shareable with its retries.
pub fn share(durable: BoxFuture<'static, Result<(), StoreError>>) -> Durability {
    durable.shared()
}

/// The answer a retry gets: the first attempt's.
#[derive(Clone)]
pub struct Answer {
    /// What became of each event.
    pub accepted: Vec<Accepted>,
    /// Whether the seqs were provisional (cluster fallback).
    pub provisional: bool,
    /// The first attempt's durability while it is not settled.
    pub durable: Option<Durability>,
}

/// What the cache says of a keyed batch.
pub enum Lookup {
    /// Not known here (the store may know it).
    Miss,
    /// The same batch was accepted: answer this.
    Same(Answer),
    /// Another batch was accepted under this key.
    Different,
}

struct Entry {
    fingerprint: String,
    answer: Answer,
    /// Which remembering this is, so that a failed first attempt forgets
    /// only itself, never a later one under the same key.
    generation: u64,
    at: Instant,
}

/// The Emitter's cache of recent keys; see the module documentation.
///
/// Bounded by the window and by `max` entries: beyond it the oldest settled
/// keys leave (the store still has them, read on a miss). Keys whose first
/// attempt is not yet durable stay, because the store does not have them yet.
pub struct Keys {
    window: Duration,
    max: usize,
    entries: HashMap<IdempotencyKey, Entry>,
    /// Keys in the order they were remembered, for expiry and the bound.
    order: VecDeque<(IdempotencyKey, u64)>,
    generations: u64,
}

/// Keys the cache holds at most by default; a key costs about 200 bytes.
pub const DEFAULT_CACHE_MAX: usize = 100_000;

impl Keys {
    /// A cache remembering keys for `window`, at most `max` of them.
    pub fn new(window: Duration, max: usize) -> Self {
        Keys {
            window,
            max: max.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            generations: 0,
        }
    }

    /// How long a key is remembered.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What the cache knows of `key` for a batch with `fingerprint`.
    pub fn lookup(&self, key: &IdempotencyKey, fingerprint: &str) -> Lookup {
        match self.entries.get(key) {
            Some(entry) if entry.at.elapsed() >= self.window => Lookup::Miss,
            Some(entry) if entry.fingerprint == fingerprint => Lookup::Same(entry.answer.clone()),
            Some(_) => Lookup::Different,
            None => Lookup::Miss,
        }
    }

    /// What a stored record says of a batch with `fingerprint`, remembering
    /// it here; `Miss` when it is older than the window.
    pub fn restore(&mut self, record: KeyRecord, fingerprint: &str) -> Lookup {
        let age = (Utc::now() - record.created_at)
            .to_std()
            .unwrap_or_default();
        let Some(left) = self.window.checked_sub(age).filter(|d| !d.is_zero()) else {
            return Lookup::Miss;
        };
        let key = match IdempotencyKey::new(&record.key) {
            Ok(key) => key,
            Err(_) => return Lookup::Miss,
        };
        let answer = Answer {
            accepted: record.seqs.iter().map(|&seq| Accepted { seq }).collect(),
            provisional: false,
            durable: None,
        };
        // Counted from when the first attempt was accepted, not from now.
        let at = Instant::now()
            .checked_sub(self.window - left)
            .unwrap_or_else(Instant::now);
        self.insert(key, record.fingerprint, answer, at);
        self.lookup_restored(&record.key, fingerprint)
    }

    fn lookup_restored(&self, key: &str, fingerprint: &str) -> Lookup {
        let Ok(key) = IdempotencyKey::new(key) else {
            return Lookup::Miss;
        };
        self.lookup(&key, fingerprint)
    }

    /// Remembers an accepted first attempt; returns its generation, for
    /// [`Keys::forget`].
    pub fn remember(&mut self, key: IdempotencyKey, fingerprint: String, answer: Answer) -> u64 {
        self.insert(key, fingerprint, answer, Instant::now())
    }

    fn insert(
        &mut self,
        key: IdempotencyKey,
        fingerprint: String,
        answer: Answer,
        at: Instant,
    ) -> u64 {
        self.generations += 1;
        let generation = self.generations;
        self.order.push_back((key.clone(), generation));
        self.entries.insert(
            key,
            Entry {
                fingerprint,
                answer,
                generation,
                at,
            },
        );
        self.trim();
        generation
    }

    /// The first attempt failed after all (its events never became
    /// durable): its key is free again, unless it was remembered anew since.
    pub fn forget(&mut self, key: &IdempotencyKey, generation: u64) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.generation == generation)
        {
            self.entries.remove(key);
        }
    }

    /// The first attempt is durable: retries need not wait any more.
    pub fn settled(&mut self, key: &IdempotencyKey, generation: u64) {
        if let Some(entry) = self.entries.get_mut(key) {
            if entry.generation == generation {
                entry.answer.durable = None;
            }
        }
    }

    /// Drops keys past the window, and the oldest settled ones beyond `max`.
    pub fn trim(&mut self) {
        while let Some((key, generation)) = self.order.front() {
            let Some(entry) = self
                .entries
                .get(key)
                .filter(|e| e.generation == *generation)
            else {
                // Forgotten or remembered anew: only the newest position counts.
                self.order.pop_front();
                continue;
            };
            let expired = entry.at.elapsed() >= self.window;
            let over = self.entries.len() > self.max;
            // An unsettled key is not in the store yet: the cache is its only memory.
            if !(expired || over) || entry.answer.durable.is_some() {
                break;
            }
            let (key, _) = self.order.pop_front().expect("looked at it");
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_one_to_128_visible_ascii_characters() {
        assert!(IdempotencyKey::new("a").is_ok());
        assert!(IdempotencyKey::new("x".repeat(128)).is_ok());
        assert!(IdempotencyKey::new("b7c1e0a2-4c4f-4f7e-9a51-0f6f3c1d2e3f:~!").is_ok());
        for bad in ["", " a", "a b", "é", "tab\t", &"x".repeat(129)] {
            assert!(IdempotencyKey::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_fingerprint_ignores_key_order_but_not_values() {
        let event = |json: &str| {
            AgentEvent::from_producer_json(serde_json::from_str(json).unwrap()).expect("valid")
        };
        let a = event(
            r#"{"type":"agent-start","executionId":"e","agentId":"a","metadata":{"x":1,"y":{"p":1,"q":2}}}"#,
        );
        let b = event(
            r#"{"metadata":{"y":{"q":2,"p":1},"x":1},"agentId":"a","executionId":"e","type":"agent-start"}"#,
        );
        let c = event(
            r#"{"type":"agent-start","executionId":"e","agentId":"a","metadata":{"x":2,"y":{"p":1,"q":2}}}"#,
        );
        let one = fingerprint(std::slice::from_ref(&a));
        assert_eq!(one, fingerprint(&[b]));
        assert_ne!(one, fingerprint(&[c]));
        assert_ne!(one, fingerprint(&[a.clone(), a]));
    }

    fn answer(seq: u64) -> Answer {
        Answer {
            accepted: vec![Accepted { seq: Some(seq) }],
            provisional: false,
            durable: None,
        }
    }

    #[test]
    fn the_same_batch_gets_the_first_answer_another_batch_is_refused() {
        let mut keys = Keys::new(Duration::from_secs(60), 10);
        let key = IdempotencyKey::new("k").unwrap();
        assert!(matches!(keys.lookup(&key, "f1"), Lookup::Miss));
        keys.remember(key.clone(), "f1".into(), answer(7));
        match keys.lookup(&key, "f1") {
            Lookup::Same(a) => assert_eq!(a.accepted[0].seq, Some(7)),
            _ => panic!("the same batch"),
        }
        assert!(matches!(keys.lookup(&key, "f2"), Lookup::Different));
    }

    #[test]
    fn a_failed_first_attempt_frees_only_its_own_key() {
        let mut keys = Keys::new(Duration::from_secs(60), 10);
        let key = IdempotencyKey::new("k").unwrap();
        let first = keys.remember(key.clone(), "f".into(), answer(1));
        keys.forget(&key, first);
        assert!(matches!(keys.lookup(&key, "f"), Lookup::Miss));
        let second = keys.remember(key.clone(), "f".into(), answer(2));
        keys.forget(&key, first);
        assert!(matches!(keys.lookup(&key, "f"), Lookup::Same(_)));
        keys.forget(&key, second);
        assert!(matches!(keys.lookup(&key, "f"), Lookup::Miss));
    }

    #[test]
    fn the_cache_is_bounded_but_keeps_what_the_store_lacks() {
        let mut keys = Keys::new(Duration::from_secs(60), 2);
        for n in 0..4 {
            let key = IdempotencyKey::new(format!("k{n}")).unwrap();
            let mut a = answer(n);
            if n == 0 {
                a.durable = Some(share(futures_util::future::pending().boxed()));
            }
            keys.remember(key, "f".into(), a);
        }
        // k0 waits for its commit: nothing older than it may leave either.
        assert_eq!(keys.len(), 4);
        keys.settled(&IdempotencyKey::new("k0").unwrap(), 1);
        keys.trim();
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn a_stored_record_older_than_the_window_is_no_answer() {
        let mut keys = Keys::new(Duration::from_secs(60), 10);
        let record = KeyRecord {
            key: "k".into(),
            fingerprint: "f".into(),
            seqs: vec![Some(3), None],
            created_at: Utc::now() - chrono::TimeDelta::seconds(120),
        };
        assert!(matches!(keys.restore(record.clone(), "f"), Lookup::Miss));
        let fresh = KeyRecord {
            created_at: Utc::now(),
            ..record
        };
        match keys.restore(fresh, "f") {
            Lookup::Same(a) => assert_eq!(
                a.accepted,
                vec![Accepted { seq: Some(3) }, Accepted { seq: None }]
            ),
            _ => panic!("a fresh record answers"),
        }
    }
}
