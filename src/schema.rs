//! JSON Schemas of the event model, read from its serde derives, for the
//! AsyncAPI and OpenAPI documents.
//!
//! Why read them from serde instead of writing them by hand or deriving
//! them with a schema crate: the event model depends on nothing but serde
//! (ARCHITECTURE.md), and a hand-written schema drifts the day someone adds a
//! field. Here a small tracing [`Deserializer`] asks each type's derived
//! `Deserialize` what it wants: the field names (as renamed on the wire),
//! their JSON types, which are optional, and the names of enum values. So a
//! new field, a renamed one or a new verdict shows up in `/api/ws` and
//! `/api/openapi.json` without anyone touching this file.
//!
//! What serde cannot tell (number ranges, the ID pattern) is added from
//! [`constraints`], whose rules mirror `AgentEvent::validate`.

use agent_events_actors::event::{self, EventType, MAX_ID_LEN};
use serde::de::value::{Error, StrDeserializer};
use serde::de::{
    DeserializeOwned, DeserializeSeed, Deserializer, Error as _, IntoDeserializer, MapAccess,
    SeqAccess, Visitor,
};
use serde_json::{json, Map, Value};

/// Marks a traced schema as the inside of an `Option`; removed before use.
const OPTIONAL: &str = "x-optional";

/// The JSON Schema of `T` as its derived `Deserialize` reads it.
///
/// Structs become objects with `properties`, `required` (every field that is
/// not an `Option`) and `additionalProperties: false` where the type denies
/// unknown fields (all event types do; the schema says so for every struct,
/// which is what the event types declare).
pub fn schema_of<T: DeserializeOwned>() -> Value {
    let mut schema = Value::Null;
    // The tracer feeds placeholder values, so the result itself is thrown away;
    // only an error (a type the tracer cannot feed) matters, and it is a bug.
    if let Err(err) = T::deserialize(Tracer { out: &mut schema }) {
        panic!("cannot trace {}: {err}", std::any::type_name::<T>());
    }
    strip_optional(&mut schema);
    schema
}

/// The fields of one event type (without the common fields and `type`).
pub fn fields_of(event_type: EventType) -> Value {
    // Exhaustive on purpose: a new event type does not compile until it is here.
    let mut schema = match event_type {
        EventType::OrchestrationStart => schema_of::<event::OrchestrationStart>(),
        EventType::OrchestrationComplete => schema_of::<event::OrchestrationComplete>(),
        EventType::DepartmentStart => schema_of::<event::DepartmentStart>(),
        EventType::DepartmentComplete => schema_of::<event::DepartmentComplete>(),
        EventType::AgentStart => schema_of::<event::AgentStart>(),
        EventType::AgentThinking => schema_of::<event::AgentThinking>(),
        EventType::AgentComplete => schema_of::<event::AgentComplete>(),
        EventType::ToolCall => schema_of::<event::ToolCall>(),
        EventType::ToolResult => schema_of::<event::ToolResult>(),
        EventType::QualityCheck => schema_of::<event::QualityCheck>(),
        EventType::ReviewStatus => schema_of::<event::ReviewStatus>(),
    };
    if let Some(properties) = schema["properties"].as_object_mut() {
        for (field, property) in properties.iter_mut() {
            if let (Some(extra), Some(property)) = (constraints(field), property.as_object_mut()) {
                property.extend(extra);
            }
        }
    }
    schema
}

/// The schema of an execution or conversation ID (docs/protocol.md 1).
pub fn id_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_ID_LEN,
        "pattern": "^[A-Za-z0-9._:-]+$",
    })
}

/// The schema of a whole event of `event_type` as the broker sends it:
/// the common fields, `type`, and the type's own fields in one flat object.
///
/// `seq` and `timestamp` are required in what the broker sends; a producer
/// sends neither `seq` (refused) nor, if it likes, `timestamp`.
pub fn event_schema(event_type: EventType, sent_by_broker: bool) -> Value {
    let fields = fields_of(event_type);
    let mut properties = Map::new();
    properties.insert(
        "type".into(),
        json!({"type": "string", "const": event_type.as_str()}),
    );
    properties.insert("executionId".into(), id_schema());
    properties.insert("conversationId".into(), id_schema());
    properties.insert(
        "timestamp".into(),
        json!({"type": "string", "format": "date-time",
               "description": "RFC 3339; the broker fills it in when the producer did not"}),
    );
    if sent_by_broker {
        properties.insert(
            "seq".into(),
            json!({"type": "integer", "minimum": 1,
                   "description": "position in the execution, assigned by the broker"}),
        );
    }
    properties.insert(
        "metadata".into(),
        json!({"type": "object", "description": "free-form data the type does not name"}),
    );
    if let Some(own) = fields["properties"].as_object() {
        properties.extend(own.clone());
    }
    let mut required = vec![json!("type"), json!("executionId")];
    if sent_by_broker {
        required.extend([json!("seq"), json!("timestamp")]);
    }
    if let Some(own) = fields["required"].as_array() {
        required.extend(own.iter().cloned());
    }
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// The schema of a type that only serializes (the store's answers), from
/// two samples of it: `full` with every optional field set, `minimal` with
/// none. A field absent or null in `minimal` is optional and may be null.
///
/// Why samples: those types derive `Serialize` only, and a sample built from
/// their public fields fails to compile when a field is added or renamed, so
/// the schema follows them anyway.
pub fn infer(full: &Value, minimal: &Value) -> Value {
    match full {
        Value::Object(object) => {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for (key, value) in object {
                let other = minimal.get(key).unwrap_or(&Value::Null);
                let mut property = infer(value, if other.is_null() { value } else { other });
                if other.is_null() {
                    if let Some(kind) = property.get("type").cloned() {
                        property["type"] = json!([kind, "null"]);
                    }
                } else {
                    required.push(Value::String(key.clone()));
                }
                properties.insert(key.clone(), property);
            }
            json!({"type": "object", "properties": properties, "required": required})
        }
        Value::Array(items) => match items.first() {
            Some(item) => json!({"type": "array", "items": infer(item, item)}),
            None => json!({"type": "array"}),
        },
        Value::String(_) => json!({"type": "string"}),
        Value::Number(n) if n.is_f64() => json!({"type": "number"}),
        Value::Number(_) => json!({"type": "integer"}),
        Value::Bool(_) => json!({"type": "boolean"}),
        Value::Null => json!({}),
    }
}

/// What `AgentEvent::validate` checks beyond serde, by field name.
fn constraints(field: &str) -> Option<Map<String, Value>> {
    let extra = match field {
        "qualityScore" | "threshold" => json!({"minimum": 0, "maximum": 100}),
        "relevance" => json!({"minimum": 0, "maximum": 1}),
        "executionTime" => json!({"minimum": 0, "description": "milliseconds"}),
        _ => return None,
    };
    extra.as_object().cloned()
}

/// Removes the `Option` marks, turning them into `required` lists.
fn strip_optional(schema: &mut Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    object.remove(OPTIONAL);
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        let required: Vec<Value> = properties
            .iter()
            .filter(|(_, p)| p.get(OPTIONAL).is_none())
            .map(|(name, _)| Value::String(name.clone()))
            .collect();
        for property in properties.values_mut() {
            strip_optional(property);
        }
        object.insert("required".into(), Value::Array(required));
    }
    if let Some(items) = object.get_mut("items") {
        strip_optional(items);
    }
}

/// A [`Deserializer`] that writes the schema of what is asked of it to `out`
/// and answers with a placeholder, so that the caller goes on asking.
struct Tracer<'a> {
    out: &'a mut Value,
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = Error;

    /// `serde_json::Value` and anything else untyped: any JSON.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        *self.out = json!({});
        visitor.visit_unit()
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        *self.out = json!({"type": "boolean"});
        visitor.visit_bool(false)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        *self.out = json!({"type": "integer", "minimum": 0});
        visitor.visit_u64(0)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        *self.out = json!({"type": "integer"});
        visitor.visit_i64(0)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        *self.out = json!({"type": "number"});
        visitor.visit_f64(0.0)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        *self.out = json!({"type": "string"});
        visitor.visit_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let answer = visitor.visit_some(Tracer {
            out: &mut *self.out,
        })?;
        if let Some(object) = self.out.as_object_mut() {
            object.insert(OPTIONAL.into(), Value::Bool(true));
        }
        Ok(answer)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut items = Value::Null;
        let answer = visitor.visit_seq(OneItem {
            out: &mut items,
            done: false,
        })?;
        *self.out = json!({"type": "array", "items": items});
        Ok(answer)
    }

    /// `serde_json::Map`: an object of anything (the tracer feeds it no entry).
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        *self.out = json!({"type": "object"});
        visitor.visit_map(Fields {
            names: &[],
            next: 0,
            properties: Map::new(),
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let mut access = Fields {
            names: fields,
            next: 0,
            properties: Map::new(),
        };
        let answer = visitor.visit_map(&mut access)?;
        *self.out = json!({
            "type": "object",
            "properties": access.properties,
            "additionalProperties": false,
        });
        Ok(answer)
    }

    /// Unit-variant enums (`status`, `complexity`): their wire names.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        *self.out = json!({"type": "string", "enum": variants});
        let first = variants
            .first()
            .ok_or_else(|| Error::custom("an enum without variants"))?;
        let variant: StrDeserializer<Error> = first.into_deserializer();
        visitor.visit_enum(variant)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u16 u32 u128 f32 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct identifier ignored_any
    }
}

/// The one item a traced sequence has.
struct OneItem<'a> {
    out: &'a mut Value,
    done: bool,
}

impl<'de> SeqAccess<'de> for OneItem<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        seed.deserialize(Tracer {
            out: &mut *self.out,
        })
        .map(Some)
    }
}

/// Every field of a traced struct, each traced in turn.
struct Fields {
    names: &'static [&'static str],
    next: usize,
    properties: Map<String, Value>,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(name) = self.names.get(self.next) else {
            return Ok(None);
        };
        let key: StrDeserializer<Error> = name.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let name = self.names[self.next];
        self.next += 1;
        let mut schema = Value::Null;
        let value = seed.deserialize(Tracer { out: &mut schema })?;
        self.properties.insert(name.to_owned(), schema);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_types_and_optionality_from_serde() {
        let tool_result = fields_of(EventType::ToolResult);
        assert_eq!(tool_result["properties"]["toolName"]["type"], "string");
        assert_eq!(tool_result["properties"]["success"]["type"], "boolean");
        assert_eq!(tool_result["properties"]["executionTime"]["minimum"], 0);
        assert_eq!(tool_result["properties"]["output"], json!({}));
        assert_eq!(tool_result["required"], json!(["agentId", "toolName"]));
        assert_eq!(tool_result["additionalProperties"], false);

        let review = fields_of(EventType::ReviewStatus);
        assert_eq!(
            review["properties"]["status"]["enum"],
            json!(["approved", "revision-requested", "rejected", "pending"])
        );
        let start = fields_of(EventType::OrchestrationStart);
        assert_eq!(
            start["properties"]["departments"]["items"]["type"],
            "string"
        );
        assert_eq!(start["required"], json!([]));
        let thinking = fields_of(EventType::AgentThinking);
        assert_eq!(thinking["properties"]["step"]["type"], "integer");
    }

    /// The traced `required` lists are what serde really demands: an event
    /// with only the required fields is accepted, one without any is refused.
    #[test]
    fn required_fields_are_exactly_what_the_parser_demands() {
        for event_type in EventType::ALL {
            let schema = event_schema(event_type, false);
            let mut minimal = Map::new();
            for field in schema["required"].as_array().unwrap() {
                let field = field.as_str().unwrap();
                let value = match field {
                    "type" => json!(event_type.as_str()),
                    _ => sample(&schema["properties"][field]),
                };
                minimal.insert(field.to_owned(), value);
            }
            let accepted = agent_events_actors::event::AgentEvent::from_producer_json(
                Value::Object(minimal.clone()),
            );
            assert!(accepted.is_ok(), "{event_type}: {minimal:?} {accepted:?}");
            for field in schema["required"].as_array().unwrap() {
                let mut lacking = minimal.clone();
                lacking.remove(field.as_str().unwrap());
                assert!(
                    agent_events_actors::event::AgentEvent::from_producer_json(Value::Object(
                        lacking
                    ))
                    .is_err(),
                    "{event_type} accepted without {field}"
                );
            }
        }
    }

    fn sample(schema: &Value) -> Value {
        if let Some(values) = schema["enum"].as_array() {
            return values[0].clone();
        }
        match schema["type"].as_str() {
            Some("string") => json!("x"),
            Some("number") | Some("integer") => json!(1),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            _ => json!({}),
        }
    }
}
