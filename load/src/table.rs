//! `table`: the comparisons in JSONL result files as one Markdown table,
//! the form PERFORMANCE.md shows them in.

use crate::report::{value, METRICS};
use serde_json::Value;
use std::fmt::Write as _;

/// The table of every `comparison` and `error` line in `text`.
pub fn markdown(text: &str) -> String {
    let mut out = String::from(
        "| scenario | metric | broker | baseline | broker/baseline | goal | peak RSS broker / baseline | correct broker / baseline |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match v["kind"].as_str() {
            Some("comparison") => comparison(&v, &mut out),
            Some("error") => {
                let error = v["error"].as_str().unwrap_or("?");
                let first_line = error.lines().next().unwrap_or("?");
                let _ = writeln!(
                    out,
                    "| {} | — | {} could not run: {} | | | | | |",
                    v["label"].as_str().unwrap_or("?"),
                    v["target"].as_str().unwrap_or("?"),
                    first_line.replace('|', "/")
                );
            }
            _ => {}
        }
    }
    out
}

fn comparison(v: &Value, out: &mut String) {
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    let row = |key: &str| rows.iter().find(|r| r["metric"] == key);
    let peak = row("peakRssBytes")
        .map(|r| {
            format!(
                "{} / {}",
                value(r["broker"].as_f64(), "B"),
                value(r["baseline"].as_f64(), "B")
            )
        })
        .unwrap_or_else(|| "? / ?".into());
    let yes = |x: &Value| match x.as_bool() {
        Some(true) => "yes",
        Some(false) => "**NO**",
        None => "not run",
    };
    let correct = format!(
        "{} / {}",
        yes(&v["correct"]["broker"]),
        yes(&v["correct"]["baseline"])
    );
    let goal = match (
        &v["goal"]["text"],
        v["goal"]["value"].as_f64(),
        v["goal"]["met"].as_bool(),
    ) {
        (Value::String(text), Some(value), Some(met)) => {
            format!(
                "{text}: {value:.2} {}",
                if met { "met" } else { "**not met**" }
            )
        }
        (Value::String(text), _, _) => format!("{text}: cannot tell"),
        _ => String::new(),
    };
    let headline: Vec<&str> = v["headline"]
        .as_array()
        .map(|h| h.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (i, key) in headline.iter().enumerate() {
        let (words, unit) = METRICS
            .iter()
            .find(|m| m.0 == *key)
            .map(|m| (m.1, m.2))
            .unwrap_or((key, ""));
        let (b, base, ratio) = match row(key) {
            Some(r) => (
                r["broker"].as_f64(),
                r["baseline"].as_f64(),
                r["ratio"].as_f64(),
            ),
            None => (None, None, None),
        };
        let first = i == 0;
        let _ = writeln!(
            out,
            "| {} | {words} | {} | {} | {} | {} | {} | {} |",
            if first {
                v["label"].as_str().unwrap_or("?")
            } else {
                ""
            },
            value(b, unit),
            value(base, unit),
            ratio
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "?".into()),
            if first { goal.as_str() } else { "" },
            if first { peak.as_str() } else { "" },
            if first { correct.as_str() } else { "" },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_and_errors_become_rows() {
        let text = r#"not json
{"kind":"run","label":"fanout"}
{"kind":"comparison","label":"fanout","headline":["deliveriesPerSec","p99Ms"],"rows":[{"metric":"deliveriesPerSec","broker":80000.0,"baseline":100000.0,"ratio":0.8},{"metric":"p99Ms","broker":2.0,"baseline":1.0,"ratio":2.0},{"metric":"peakRssBytes","broker":2097152.0,"baseline":1048576.0,"ratio":2.0}],"correct":{"broker":true,"baseline":false},"goal":{"text":"deliveries/s >= 0.8x baseline","value":0.8,"met":true}}
{"kind":"error","label":"idle","target":"broker","error":"too many files | x\nmore"}
"#;
        let table = markdown(text);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[2].contains("| fanout | deliveries/s | 80,000 | 100,000 | 0.80x | deliveries/s >= 0.8x baseline: 0.80 met | 2.0 MiB / 1.0 MiB | yes / **NO** |"), "{}", lines[2]);
        assert!(lines[3].starts_with("|  | latency p99 | 2.00 ms | 1.00 ms | 2.00x |"));
        assert!(lines[4].contains("broker could not run: too many files / x"));
    }
}
