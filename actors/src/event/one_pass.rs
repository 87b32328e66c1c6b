//! A producer's event read from its JSON text in one pass, straight into
//! [`AgentEvent`]: no `serde_json::Value` tree in between, no key copied.
//!
//! Why a second reader: the general one (`AgentEvent::from_json`) builds a
//! `Value` of the whole event, moves the common fields out of it and hands
//! the rest to the type's struct, and it was the largest part of an
//! event's cost after SQLite (PERFORMANCE.md, "Profile findings: ingest").
//! The general reader stays the one that defines the rules and words the
//! errors: this one gives up (`None`) on anything it is not sure of, a
//! type-specific field before `type`, a duplicate key, a `seq`, a wrong
//! type, and the caller then reads the same text the general way. So the
//! two can only differ in speed; `tests` below checks that they agree.

use super::{parse_timestamp, read_kind, AgentEvent, EventKind, EventType};
use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// The event in `text`, unvalidated, when it reads in one pass; `None`
/// when the general reader must decide (see the module docs).
pub(super) fn read(text: &str) -> Option<AgentEvent> {
    let mut input = serde_json::Deserializer::from_str(text);
    let event = input.deserialize_map(EventVisitor).ok()?;
    input.end().ok()?;
    Some(event)
}

/// Gives up on the one-pass read; the message is never shown.
fn give_up<E: de::Error>() -> E {
    E::custom("not read in one pass")
}

/// The fields every event has, as far as they have been read.
#[derive(Default)]
struct Common {
    execution_id: Option<String>,
    conversation_id: Option<Option<String>>,
    timestamp: Option<Option<String>>,
    metadata: Option<Option<Map<String, Value>>>,
    seq: bool,
}

impl Common {
    /// Reads the value of `key` when it is a common field (`true`), leaving
    /// any other key's value unread (`false`).
    fn take<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<bool, A::Error> {
        fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
            match slot.replace(value) {
                Some(_) => Err(give_up()),
                None => Ok(()),
            }
        }
        match key {
            "executionId" => once(&mut self.execution_id, map.next_value()?)?,
            "conversationId" => once(&mut self.conversation_id, map.next_value()?)?,
            "timestamp" => once(&mut self.timestamp, map.next_value()?)?,
            "metadata" => once(&mut self.metadata, map.next_value()?)?,
            "seq" => {
                // Producers never set it: the general reader words that refusal.
                if map.next_value::<Option<IgnoredAny>>()?.is_some() || self.seq {
                    return Err(give_up());
                }
                self.seq = true;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn into_event<E: de::Error>(self, kind: EventKind) -> Result<AgentEvent, E> {
        let timestamp = match self.timestamp.flatten() {
            Some(text) => Some(parse_timestamp(&text).map_err(|_| give_up::<E>())?),
            None => None,
        };
        Ok(AgentEvent {
            execution_id: self.execution_id.ok_or_else(give_up)?,
            conversation_id: self.conversation_id.flatten(),
            timestamp,
            seq: None,
            metadata: self.metadata.flatten(),
            kind,
        })
    }
}

/// A key as the text holds it: borrowed unless it has escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Owned(key) => key,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(key))
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The event object: common fields until `type`, then the type's struct
/// from the rest of the object, with the common fields taken out of it.
struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = AgentEvent;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AgentEvent, A::Error> {
        let mut common = Common::default();
        loop {
            let key = map.next_key::<Key<'de>>()?.ok_or_else(give_up)?;
            if common.take(key.as_str(), &mut map)? {
                continue;
            }
            if key.as_str() != "type" {
                return Err(give_up());
            }
            let name = map.next_value::<Key<'de>>()?;
            let event_type = EventType::parse(name.as_str()).ok_or_else(give_up)?;
            let rest = Rest {
                map: &mut map,
                common: &mut common,
            };
            let kind = read_kind(event_type, de::value::MapAccessDeserializer::new(rest))?;
            return common.into_event(kind);
        }
    }
}

/// The type's own fields: the rest of the object, less the common fields.
struct Rest<'a, A> {
    map: &'a mut A,
    common: &'a mut Common,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Rest<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        while let Some(key) = self.map.next_key::<Key<'de>>()? {
            if self.common.take(key.as_str(), self.map)? {
                continue;
            }
            let key = match key {
                Key::Borrowed(key) => {
                    seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
                }
                Key::Owned(key) => seed.deserialize(de::value::StringDeserializer::new(key)),
            };
            return key.map(Some);
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::samples;
    use super::*;
    use serde_json::json;

    /// What the general reader makes of `text` (unvalidated, like `read`).
    fn general(text: &str) -> Result<AgentEvent, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        AgentEvent::from_json(value, false).map_err(|e| e.to_string())
    }

    /// `fields` as an object's text, in this order.
    fn object(fields: &[(&str, Value)]) -> String {
        let members: Vec<String> = fields
            .iter()
            .map(|(key, value)| format!("{}:{value}", json!(key)))
            .collect();
        format!("{{{}}}", members.join(","))
    }

    /// The sample's fields with the common ones around them: `type` first,
    /// then `executionId`, the type's fields, then the rest.
    fn typical(sample: &Value) -> Vec<(&str, Value)> {
        let map = sample.as_object().expect("an object");
        let mut fields = vec![
            ("type", map["type"].clone()),
            ("executionId", json!("exec-1")),
        ];
        for (key, value) in map.iter().filter(|(key, _)| *key != "type") {
            fields.push((key.as_str(), value.clone()));
        }
        fields.push(("conversationId", json!("conv-1")));
        fields.push(("timestamp", json!("2025-10-01T12:00:00.5+02:00")));
        fields.push(("metadata", json!({"model": "m", "n": [1, 2]})));
        fields
    }

    /// Whenever the one-pass reader answers, the general one answers the same.
    fn agrees(text: &str) -> bool {
        let one_pass = read(text);
        if let Some(event) = &one_pass {
            assert_eq!(Ok(event), general(text).as_ref(), "{text}");
        }
        one_pass.is_some()
    }

    #[test]
    fn the_usual_shape_reads_in_one_pass_as_the_general_reader_reads_it() {
        for sample in samples() {
            let fields = typical(&sample);
            assert!(agrees(&object(&fields)), "{}", object(&fields));
            // Common fields anywhere, even after the type's fields.
            let mut moved = fields.clone();
            let id = moved.remove(1);
            moved.push(id);
            assert!(agrees(&object(&moved)), "{}", object(&moved));
            // Nulls for the optional common fields, and an explicit null seq.
            let mut nulls = fields.clone();
            for (key, value) in nulls.iter_mut() {
                if ["conversationId", "timestamp", "metadata"].contains(key) {
                    *value = Value::Null;
                }
            }
            nulls.push(("seq", Value::Null));
            assert!(agrees(&object(&nulls)), "{}", object(&nulls));
        }
    }

    #[test]
    fn escaped_keys_and_values_read_in_one_pass() {
        let text = r#"{"type":"agent-thinking","execution\u0049d":"e\u002d1","agent\u0049d":"a","thought":"line\nnext"}"#;
        assert!(agrees(text));
        assert_eq!(read(text).expect("read").execution_id, "e-1");
    }

    #[test]
    fn what_it_is_unsure_of_goes_to_the_general_reader() {
        let unsure = [
            // A type's field before `type`.
            r#"{"agentId":"a","type":"agent-start","executionId":"e"}"#,
            // Duplicates, common or not.
            r#"{"type":"agent-start","executionId":"e","executionId":"f","agentId":"a"}"#,
            r#"{"type":"agent-start","executionId":"e","agentId":"a","agentId":"b"}"#,
            r#"{"type":"agent-start","type":"agent-start","executionId":"e","agentId":"a"}"#,
            // A seq, which producers may not set.
            r#"{"type":"agent-start","executionId":"e","agentId":"a","seq":3}"#,
            // Wrong types, missing or unknown fields, bad timestamps, not JSON.
            r#"{"type":"agent-start","executionId":5,"agentId":"a"}"#,
            r#"{"type":"agent-start","executionId":null,"agentId":"a"}"#,
            r#"{"type":"agent-start","agentId":"a"}"#,
            r#"{"type":"agent-start","executionId":"e"}"#,
            r#"{"type":"agent-start","executionId":"e","agentId":"a","colour":1}"#,
            r#"{"type":"agent-start","executionId":"e","agentId":"a","timestamp":"noon"}"#,
            r#"{"type":"agent-start","executionId":"e","agentId":"a","metadata":[1]}"#,
            r#"{"type":"nope","executionId":"e"}"#,
            r#"{"type":7,"executionId":"e"}"#,
            r#"{"executionId":"e"}"#,
            r#"[1]"#,
            r#"{"type":"agent-start","executionId":"e","agentId":"a"} trailing"#,
        ];
        for text in unsure {
            assert!(!agrees(text), "read in one pass: {text}");
        }
    }

    #[test]
    fn no_field_of_any_type_reads_differently() {
        // Every field of every sample missing, null, or of each JSON kind:
        // the one-pass reader either gives up or agrees.
        let kinds = [
            Value::Null,
            json!(true),
            json!(-3),
            json!(2.5),
            json!("text"),
            json!([1]),
            json!({"k": 1}),
        ];
        let mut read_in_one_pass = 0;
        for sample in samples() {
            let fields = typical(&sample);
            for position in 1..fields.len() {
                let mut without = fields.clone();
                without.remove(position);
                read_in_one_pass += usize::from(agrees(&object(&without)));
                for kind in &kinds {
                    let mut changed = fields.clone();
                    changed[position].1 = kind.clone();
                    read_in_one_pass += usize::from(agrees(&object(&changed)));
                }
            }
        }
        // Most variations are still events (optional fields, nulls).
        assert!(read_in_one_pass > 200, "{read_in_one_pass}");
    }
}
