//! Notification rules: what they say, how they are checked, and which events
//! they match. Pure functions, no I/O: the Notifier actor applies them.
//!
//! A rule is written (in `notify_rules_file` or through the admin API) as
//!
//! ```json
//! {"id": "low-quality", "url": "https://hooks.example.com/quality",
//!  "types": ["quality-check"], "when": ["qualityScore < 0.7"]}
//! ```
//!
//! and matches an event when the event's type is one of `types` (any type
//! when empty) and every condition of `when` holds. A condition is
//! `<field> <op> <JSON value>`: the field is a wire name of the event
//! (`qualityScore`, `status`, `metadata.model` for a nested one), the
//! operator one of `== != < <= > >=`, the value JSON (`0.7`, `false`,
//! `"failed"`; strings need their quotes). `< <= > >=` compare numbers only.
//! A condition on a field the event lacks never holds, `!=` included: a rule
//! about `status` says nothing of events without one.
//!
//! The other kind of rule watches time instead of events:
//! `{"id": "stuck", "url": …, "runningLongerThanSecs": 600}` fires once for
//! each execution with no `orchestration-complete` whose first event is
//! older than the limit.

use crate::event::EventType;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Longest rule ID; it is part of every idempotency key.
pub const MAX_RULE_ID_LEN: usize = 64;

/// A rule as written: the JSON of the API and of the rules file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleSpec {
    /// Names the rule in idempotency keys, headers and the admin API.
    pub id: String,
    /// Where the webhook is POSTed (`http://` or `https://`).
    pub url: String,
    /// Event types the rule is about; empty: any type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Conditions that must all hold, e.g. `qualityScore < 0.7`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<String>,
    /// Instead of matching events: fire for executions running longer than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_longer_than_secs: Option<u64>,
}

/// Why a rule cannot be used; the message names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError(pub String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuleError {}

/// A comparison of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => return None,
        })
    }

    fn orders(self) -> bool {
        !matches!(self, Op::Eq | Op::Ne)
    }
}

/// One condition: a field of the event, compared with a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    path: Vec<String>,
    op: Op,
    value: Value,
}

impl Condition {
    /// Reads `<field> <op> <JSON value>` (spaces around the operator optional).
    pub fn parse(text: &str) -> Result<Condition, RuleError> {
        let bad = |why: &str| RuleError(format!("condition `{text}`: {why}"));
        let at = text
            .find(['=', '!', '<', '>'])
            .ok_or_else(|| bad("no operator (== != < <= > >=)"))?;
        let field = text[..at].trim();
        let rest = &text[at..];
        let op_len = rest
            .bytes()
            .take_while(|b| matches!(b, b'=' | b'!' | b'<' | b'>'))
            .count();
        let op = Op::parse(&rest[..op_len]).ok_or_else(|| bad("unknown operator"))?;
        let path: Vec<String> = field.split('.').map(str::to_owned).collect();
        let valid_segment = |s: &String| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        };
        if !path.iter().all(valid_segment) {
            return Err(bad(
                "the field must be a name like qualityScore or metadata.model",
            ));
        }
        let value: Value = serde_json::from_str(rest[op_len..].trim())
            .map_err(|_| bad("the value must be JSON (strings in double quotes)"))?;
        if op.orders() && !value.is_number() {
            return Err(bad("< <= > >= compare numbers only"));
        }
        Ok(Condition { path, op, value })
    }

    /// Whether the condition holds for `event` (its wire JSON).
    pub fn holds(&self, event: &Value) -> bool {
        let Some(actual) = self
            .path
            .iter()
            .try_fold(event, |value, key| value.get(key.as_str()))
        else {
            return false;
        };
        match self.op {
            Op::Eq => same(actual, &self.value),
            Op::Ne => !same(actual, &self.value),
            order => match (actual.as_f64(), self.value.as_f64()) {
                (Some(a), Some(b)) => match order {
                    Op::Lt => a < b,
                    Op::Le => a <= b,
                    Op::Gt => a > b,
                    _ => a >= b,
                },
                _ => false,
            },
        }
    }
}

/// Equal as JSON, with `1` equal to `1.0`.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}

/// What makes a rule fire.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// An event of one of `types` (any, when empty) for which every condition holds.
    Event {
        /// The types; empty: any.
        types: Vec<EventType>,
        /// All must hold.
        conditions: Vec<Condition>,
    },
    /// An execution still running this long after its first event.
    RunningLongerThan(Duration),
}

/// A checked rule, ready to match.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// As written, for the API and the store.
    pub spec: RuleSpec,
    /// What makes it fire.
    pub trigger: Trigger,
}

impl Rule {
    /// Checks a rule as written; the error says what is wrong.
    pub fn parse(spec: RuleSpec) -> Result<Rule, RuleError> {
        check_id(&spec.id)?;
        check_url(&spec.url).map_err(|why| RuleError(format!("rule `{}`: {why}", spec.id)))?;
        let trigger = match spec.running_longer_than_secs {
            Some(_) if !spec.types.is_empty() || !spec.when.is_empty() => {
                return Err(RuleError(format!(
                    "rule `{}`: runningLongerThanSecs stands alone, without types or when",
                    spec.id
                )))
            }
            Some(0) => {
                return Err(RuleError(format!(
                    "rule `{}`: runningLongerThanSecs must be at least 1",
                    spec.id
                )))
            }
            Some(secs) => Trigger::RunningLongerThan(Duration::from_secs(secs)),
            None => event_trigger(&spec)?,
        };
        Ok(Rule { spec, trigger })
    }

    /// Whether an event of `event_type`, as wire JSON, makes this rule fire.
    pub fn matches(&self, event_type: EventType, event: &Value) -> bool {
        match &self.trigger {
            Trigger::Event { types, conditions } => {
                (types.is_empty() || types.contains(&event_type))
                    && conditions.iter().all(|c| c.holds(event))
            }
            Trigger::RunningLongerThan(_) => false,
        }
    }

    /// Whether the rule may fire for an event of this type (checked before
    /// the event is turned into JSON for the conditions).
    pub fn wants(&self, event_type: EventType) -> bool {
        match &self.trigger {
            Trigger::Event { types, .. } => types.is_empty() || types.contains(&event_type),
            Trigger::RunningLongerThan(_) => false,
        }
    }

    /// For a running-too-long rule, its limit.
    pub fn running_limit(&self) -> Option<Duration> {
        match self.trigger {
            Trigger::RunningLongerThan(limit) => Some(limit),
            Trigger::Event { .. } => None,
        }
    }
}

fn event_trigger(spec: &RuleSpec) -> Result<Trigger, RuleError> {
    if spec.types.is_empty() && spec.when.is_empty() {
        // A rule matching every event is almost always a mistake, and a costly one.
        return Err(RuleError(format!(
            "rule `{}`: name types, conditions (when) or runningLongerThanSecs",
            spec.id
        )));
    }
    let types = spec
        .types
        .iter()
        .map(|name| {
            EventType::parse(name).ok_or_else(|| {
                RuleError(format!("rule `{}`: `{name}` is not an event type", spec.id))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let conditions = spec
        .when
        .iter()
        .map(|text| {
            Condition::parse(text).map_err(|e| RuleError(format!("rule `{}`: {e}", spec.id)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Trigger::Event { types, conditions })
}

/// IDs travel in URLs and idempotency keys: a small charset, no `/`.
fn check_id(id: &str) -> Result<(), RuleError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_RULE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(RuleError(format!(
            "rule id `{id}`: 1 to {MAX_RULE_ID_LEN} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("url must start with http:// or https://")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || url.chars().any(char::is_whitespace) {
        return Err("url needs a host and no spaces".into());
    }
    Ok(())
}

/// The idempotency key of one notification: `executionId:seq:ruleId`
/// (`seq` 0 for a running-too-long notification, which has no event).
pub fn idempotency_key(execution_id: &str, seq: u64, rule_id: &str) -> String {
    format!("{execution_id}:{seq}:{rule_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: Value) -> RuleSpec {
        serde_json::from_value(value).unwrap()
    }

    fn rule(value: Value) -> Rule {
        Rule::parse(spec(value)).unwrap()
    }

    fn refused(value: Value) -> String {
        Rule::parse(spec(value)).unwrap_err().0
    }

    fn holds(condition: &str, event: Value) -> bool {
        Condition::parse(condition).unwrap().holds(&event)
    }

    #[test]
    fn a_number_below_a_threshold() {
        assert!(holds("qualityScore < 0.7", json!({"qualityScore": 0.5})));
        assert!(!holds("qualityScore < 0.7", json!({"qualityScore": 0.7})));
        assert!(holds("qualityScore <= 0.7", json!({"qualityScore": 0.7})));
        assert!(holds("qualityScore>0.7", json!({"qualityScore": 0.9})));
        assert!(holds("qualityScore >= 1", json!({"qualityScore": 1.0})));
        // A string is not a number, however it reads.
        assert!(!holds("qualityScore < 0.7", json!({"qualityScore": "0.1"})));
    }

    #[test]
    fn a_boolean_equals() {
        assert!(holds("success == false", json!({"success": false})));
        assert!(!holds("success == false", json!({"success": true})));
        assert!(holds("success != true", json!({"success": false})));
    }

    #[test]
    fn a_string_equals() {
        assert!(holds(r#"status == "failed""#, json!({"status": "failed"})));
        assert!(!holds(
            r#"status == "failed""#,
            json!({"status": "success"})
        ));
        assert!(holds(r#"status != "failed""#, json!({"status": "partial"})));
    }

    #[test]
    fn nested_fields_and_integers_equal_to_floats() {
        let event = json!({"metadata": {"model": "m1", "tokens": 3}});
        assert!(holds(r#"metadata.model == "m1""#, event.clone()));
        assert!(holds("metadata.tokens == 3.0", event.clone()));
        assert!(!holds("metadata.missing == 3", event));
    }

    #[test]
    fn a_missing_field_never_holds() {
        assert!(!holds("success == false", json!({})));
        assert!(!holds("success != false", json!({})));
        assert!(!holds("qualityScore < 1", json!({"qualityScore": null})));
    }

    #[test]
    fn bad_conditions_are_refused_with_the_reason() {
        let err = |text: &str| Condition::parse(text).unwrap_err().0;
        assert!(err("qualityScore").contains("no operator"));
        assert!(err("qualityScore =< 1").contains("unknown operator"));
        assert!(err("status == failed").contains("must be JSON"));
        assert!(err(r#"status < "b""#).contains("numbers only"));
        assert!(err(" == 1").contains("field"));
        assert!(err("a..b == 1").contains("field"));
    }

    #[test]
    fn types_and_conditions_must_all_hold() {
        let rule = rule(json!({
            "id": "low", "url": "http://127.0.0.1:9/h",
            "types": ["quality-check"], "when": ["qualityScore < 0.7", "passed == false"]
        }));
        let low = json!({"qualityScore": 0.5, "passed": false});
        assert!(rule.matches(EventType::QualityCheck, &low));
        assert!(!rule.matches(EventType::ToolResult, &low));
        assert!(!rule.matches(
            EventType::QualityCheck,
            &json!({"qualityScore": 0.5, "passed": true})
        ));
        assert!(rule.wants(EventType::QualityCheck));
        assert!(!rule.wants(EventType::AgentStart));
    }

    #[test]
    fn a_rule_without_types_matches_any_type() {
        let rule =
            rule(json!({"id": "f", "url": "https://h.example", "when": ["success == false"]}));
        assert!(rule.matches(EventType::ToolResult, &json!({"success": false})));
        assert!(rule.wants(EventType::AgentStart));
    }

    #[test]
    fn a_running_rule_matches_no_event_and_has_its_limit() {
        let rule = rule(json!({"id": "slow", "url": "http://h", "runningLongerThanSecs": 600}));
        assert_eq!(rule.running_limit(), Some(Duration::from_secs(600)));
        assert!(!rule.matches(EventType::AgentStart, &json!({})));
        assert!(!rule.wants(EventType::AgentStart));
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        assert!(
            refused(json!({"id": "a b", "url": "http://h", "types": ["agent-start"]}))
                .contains("rule id")
        );
        assert!(
            refused(json!({"id": "a", "url": "ftp://h", "types": ["agent-start"]}))
                .contains("http://")
        );
        assert!(
            refused(json!({"id": "a", "url": "http:///x", "types": ["agent-start"]}))
                .contains("host")
        );
        assert!(
            refused(json!({"id": "a", "url": "http://h", "types": ["nope"]}))
                .contains("`nope` is not an event type")
        );
        assert!(refused(json!({"id": "a", "url": "http://h"})).contains("name types"));
        assert!(
            refused(json!({"id": "a", "url": "http://h", "runningLongerThanSecs": 0}))
                .contains("at least 1")
        );
        assert!(refused(json!({
            "id": "a", "url": "http://h", "types": ["agent-start"], "runningLongerThanSecs": 5
        }))
        .contains("stands alone"));
        assert!(
            refused(json!({"id": "a", "url": "http://h", "when": ["x ~ 1"]})).contains("condition")
        );
        let unknown =
            serde_json::from_value::<RuleSpec>(json!({"id": "a", "url": "u", "whne": []}));
        assert!(unknown.is_err());
    }

    #[test]
    fn keys_name_execution_seq_and_rule() {
        assert_eq!(idempotency_key("exec-1", 7, "low"), "exec-1:7:low");
        assert_eq!(idempotency_key("exec-1", 0, "slow"), "exec-1:0:slow");
    }
}
