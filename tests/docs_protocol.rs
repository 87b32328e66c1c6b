//! docs/protocol.md cannot drift from the broker: its event table must name
//! exactly the required and optional fields of each event schema that
//! `GET /api/ws` serves (traced from the event model), its message tables
//! exactly the messages each side may send and every field of each, and its
//! route table exactly the routes of `GET /api/openapi.json` (but the
//! monitor's own files, which reference.md lists).
//!
//! When the code gains a field, message or route, this test fails and says
//! what the contract lacks; the tables are short enough to edit by hand.

mod common;

use common::Broker;
use serde_json::Value;
use std::collections::BTreeSet;

const PROTOCOL: &str = include_str!("../docs/protocol.md");

/// The fields every event has, described once below the event table.
const COMMON_FIELDS: [&str; 6] = [
    "type",
    "executionId",
    "conversationId",
    "timestamp",
    "seq",
    "metadata",
];

/// The rows of the table between `<!-- BEGIN name …-->` and `<!-- END name -->`,
/// as cells, header and rule left out.
fn table(name: &str) -> Vec<Vec<String>> {
    let begin = format!("<!-- BEGIN {name}");
    let start = PROTOCOL
        .find(&begin)
        .unwrap_or_else(|| panic!("docs/protocol.md lacks `{begin} …-->`"));
    let end = PROTOCOL[start..]
        .find(&format!("<!-- END {name} -->"))
        .unwrap_or_else(|| panic!("docs/protocol.md lacks `<!-- END {name} -->`"));
    PROTOCOL[start..start + end]
        .lines()
        .filter(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The `code` spans of a cell, outside parentheses (which hold values, not names).
fn names(cell: &str) -> BTreeSet<String> {
    let mut outside = String::new();
    let mut depth = 0;
    for c in cell.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn strings<'a>(values: impl IntoIterator<Item = &'a Value>) -> BTreeSet<String> {
    values
        .into_iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_event_table_names_every_field_of_every_type() {
    let broker = Broker::start().await;
    let (_, asyncapi) = broker.get_json("/api/ws").await;
    let schemas = asyncapi["components"]["schemas"]
        .as_object()
        .expect("schemas");
    let mut documented = BTreeSet::new();
    for row in table("events") {
        let kind = names(&row[0]).into_iter().next().expect("a type");
        let schema = schemas
            .values()
            .find(|s| s["properties"]["type"]["const"] == kind.as_str())
            .unwrap_or_else(|| panic!("docs/protocol.md names `{kind}`, no such event type"));
        let common: BTreeSet<String> = COMMON_FIELDS.map(str::to_owned).into();
        let required: BTreeSet<String> = &strings(schema["required"].as_array().unwrap()) - &common;
        let all: BTreeSet<String> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let optional = &(&all - &common) - &required;
        assert_eq!(names(&row[1]), required, "`{kind}`: required fields");
        assert_eq!(names(&row[2]), optional, "`{kind}`: optional fields");
        documented.insert(kind);
    }
    let types = strings(
        asyncapi["components"]["schemas"]["EventType"]["enum"]
            .as_array()
            .unwrap(),
    );
    assert_eq!(documented, types, "every event type, once");
}

#[tokio::test]
async fn the_message_tables_name_every_message_and_field() {
    let broker = Broker::start().await;
    let (_, asyncapi) = broker.get_json("/api/ws").await;
    let messages = &asyncapi["components"]["messages"];
    for (side, operation) in [
        ("client-messages", "wsClientMessages"),
        ("server-messages", "wsServerMessages"),
    ] {
        let sent: BTreeSet<String> = asyncapi["operations"][operation]["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("operation {operation}"))
            .iter()
            .map(|r| {
                r["$ref"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let rows = table(side);
        let documented: BTreeSet<String> = rows
            .iter()
            .map(|row| names(&row[0]).into_iter().next().expect("a message"))
            .collect();
        assert_eq!(documented, sent, "{side}: every message, once");
        for row in rows {
            let name = names(&row[0]).into_iter().next().unwrap();
            let payload = &messages[&name]["payload"]["properties"];
            let mut fields: BTreeSet<String> =
                payload.as_object().unwrap().keys().cloned().collect();
            fields.remove("type");
            assert_eq!(names(&row[1]), fields, "{side}: the fields of `{name}`");
        }
    }
}

#[tokio::test]
async fn the_route_table_names_every_route_of_the_api() {
    let broker = Broker::start().await;
    let (_, openapi) = broker.get_json("/api/openapi.json").await;
    let mut served = BTreeSet::new();
    for (path, methods) in openapi["paths"].as_object().expect("paths") {
        // The monitor's scripts, styles and icon: files, not the API.
        let file = path
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains('.'))
            && path != "/api/openapi.json";
        for method in methods.as_object().unwrap().keys() {
            if !file && method != "head" {
                served.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let documented: BTreeSet<String> = table("routes")
        .iter()
        .map(|row| names(&row[0]).into_iter().next().expect("a route"))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "docs/protocol.md lacks {missing:?} and names {extra:?}, which is not served"
    );
}
