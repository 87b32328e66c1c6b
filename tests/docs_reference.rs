//! docs/reference.md cannot drift from the broker: its settings table is
//! generated from `config/default.toml`, its error-code table must list
//! exactly `ErrorCode::ALL` with each code's advice and close code, and its
//! route table exactly the routes `GET /api/ws` describes.
//!
//! When a setting, code or route is added (or changed), this test fails and
//! says what to add. `UPDATE_DOCS=1 cargo test --test docs_reference`
//! rewrites the generated parts in place: the settings table entirely, and
//! the error-code table with each code's advice and close code, keeping the
//! hand-written "where" and "meaning" cells and marking a new code's with
//! `TODO`, which fails the test until someone writes them.

mod common;

use agent_events_actors::protocol::ErrorCode;
use common::Broker;
use std::collections::BTreeSet;
use std::fmt::Write as _;

const REFERENCE: &str = "docs/reference.md";
const DEFAULTS: &str = include_str!("../config/default.toml");
const TODO: &str = "TODO";

fn reference_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE)
}

fn read_reference() -> String {
    std::fs::read_to_string(reference_path()).expect("docs/reference.md exists")
}

/// The text between `<!-- BEGIN name -->` and `<!-- END name -->`, and where it lies.
fn section<'a>(doc: &'a str, name: &str) -> (usize, usize, &'a str) {
    let begin = format!("<!-- BEGIN {name}");
    let end = format!("<!-- END {name} -->");
    let start = doc
        .find(&begin)
        .unwrap_or_else(|| panic!("{REFERENCE} lacks the marker `{begin} …-->`"));
    let start = start + doc[start..].find("-->\n").expect("marker closes") + 4;
    let stop = doc[start..]
        .find(&end)
        .map(|i| start + i)
        .unwrap_or_else(|| panic!("{REFERENCE} lacks the marker `{end}`"));
    (start, stop, &doc[start..stop])
}

fn replace_section(doc: &str, name: &str, text: &str) -> String {
    let (start, stop, _) = section(doc, name);
    format!("{}{}{}", &doc[..start], text, &doc[stop..])
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// One setting of `config/default.toml`: its comment, variable and default.
struct Setting {
    key: String,
    variable: String,
    default: String,
    meaning: String,
}

/// The settings, grouped under the file's `── Section ──` headings.
fn settings() -> Vec<(String, Vec<Setting>)> {
    let mut groups: Vec<(String, Vec<Setting>)> = Vec::new();
    let mut comment: Vec<String> = Vec::new();
    for line in DEFAULTS.lines() {
        let line = line.trim();
        if let Some(heading) = line.strip_prefix("# ──") {
            let name = heading.trim_matches(|c: char| c == '─' || c.is_whitespace());
            groups.push((name.to_owned(), Vec::new()));
            comment.clear();
        } else if let Some(text) = line.strip_prefix('#') {
            comment.push(text.trim().to_owned());
        } else if line.is_empty() {
            comment.clear();
        } else {
            let (key, value) = line.split_once('=').expect("key = value");
            let key = key.trim().to_owned();
            let text = comment.join(" ");
            // The comment ends by naming the key's variable, `(WS_PORT)`:
            // src/config.rs's tests check it is the one the broker reads.
            let variable = text
                .rsplit_once('(')
                .and_then(|(_, rest)| rest.split_once(')'))
                .map(|(name, _)| name.to_owned())
                .filter(|name| {
                    !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                        && name.ends_with(&key.to_uppercase())
                })
                .unwrap_or_else(|| {
                    panic!("config/default.toml: the comment of {key} must end by naming its variable, `(VAR)`")
                });
            let named = format!("({variable})");
            let meaning = text.replace(&named, "").trim().to_owned();
            let value = value.trim();
            let default = match value {
                "\"\"" => "(empty)".to_owned(),
                v => format!("`{}`", v.trim_matches('"')),
            };
            let (_, group) = groups
                .last_mut()
                .expect("every key is under a `# ── Section ──` heading");
            group.push(Setting {
                key,
                variable,
                default,
                meaning,
            });
            comment.clear();
        }
    }
    groups
}

/// The settings section as it must read.
fn settings_markdown() -> String {
    let mut out = String::new();
    for (name, group) in settings() {
        writeln!(out, "\n### {name}\n").unwrap();
        writeln!(out, "| setting | variable | default | meaning |").unwrap();
        writeln!(out, "|---|---|---|---|").unwrap();
        for s in group {
            writeln!(
                out,
                "| `{}` | `{}` | {} | {} |",
                s.key,
                s.variable,
                s.default,
                cell(&s.meaning)
            )
            .unwrap();
        }
    }
    out.push('\n');
    out
}

/// A row of the error-code table: code, where, close code, meaning, advice.
struct CodeRow {
    code: String,
    cells: Vec<String>,
}

fn code_rows(table: &str) -> Vec<CodeRow> {
    table
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<String> = line
                .trim()
                .trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect();
            CodeRow {
                code: cells[0].trim_matches('`').to_owned(),
                cells,
            }
        })
        .collect()
}

/// The close-code cell a code must have (besides hand-written extras such as 1009).
fn close_cell(code: ErrorCode, written: Option<&str>) -> String {
    let close = code.close_code();
    // 4500 is the fallback of close_code(): codes that do not close have it.
    let required = (close != 4500).then(|| close.to_string());
    match (written, required) {
        (Some(w), Some(r)) if w.contains(&r) => w.to_owned(),
        (Some(w), None) if w != TODO && !w.contains("4500") => w.to_owned(),
        (_, Some(r)) => r,
        (_, None) => "—".to_owned(),
    }
}

/// The error-code table as it must read, keeping the hand-written cells.
fn codes_markdown(current: &str) -> String {
    let rows = code_rows(current);
    let mut out = String::from(
        "\n| code | where | close code | meaning | what to do (`advice` in `GET /api/ws`) |\n|---|---|---|---|---|\n",
    );
    for code in ErrorCode::ALL {
        let row = rows.iter().find(|r| r.code == code.as_str());
        let hand = |i: usize| {
            row.and_then(|r| r.cells.get(i).cloned())
                .unwrap_or_else(|| TODO.to_owned())
        };
        let close = close_cell(code, row.and_then(|r| r.cells.get(2)).map(String::as_str));
        writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            code.as_str(),
            hand(1),
            close,
            hand(3),
            cell(code.advice())
        )
        .unwrap();
    }
    out.push('\n');
    out
}

/// Lines of `want` missing from `have`, and lines of `have` not in `want`.
fn line_diff(have: &str, want: &str) -> String {
    let have_lines: BTreeSet<&str> = have.lines().collect();
    let want_lines: BTreeSet<&str> = want.lines().collect();
    let mut out = String::new();
    for line in want.lines().filter(|l| !have_lines.contains(l)) {
        writeln!(out, "  add:    {line}").unwrap();
    }
    for line in have.lines().filter(|l| !want_lines.contains(l)) {
        writeln!(out, "  remove: {line}").unwrap();
    }
    out
}

/// Compares a section with what it must be; rewrites it under UPDATE_DOCS=1.
fn check_section(name: &str, want: impl Fn(&str) -> String, what: &str) {
    let doc = read_reference();
    let (_, _, have) = section(&doc, name);
    let want = want(have);
    if have == want {
        return;
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(reference_path(), replace_section(&doc, name, &want)).unwrap();
        eprintln!("{REFERENCE}: rewrote the {name} section");
        return;
    }
    panic!(
        "{REFERENCE}: the {name} section does not match {what}.\n\
         Run `UPDATE_DOCS=1 cargo test --test docs_reference` to rewrite it, or edit by hand:\n{}",
        line_diff(have, &want)
    );
}

#[test]
fn every_setting_is_in_the_reference() {
    check_section("settings", |_| settings_markdown(), "config/default.toml");
}

#[test]
fn every_error_code_is_in_the_reference() {
    check_section("error-codes", codes_markdown, "ErrorCode::ALL");
    let doc = read_reference();
    let (_, _, table) = section(&doc, "error-codes");
    let rows = code_rows(table);
    let listed: Vec<&str> = rows.iter().map(|r| r.code.as_str()).collect();
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        listed, all,
        "{REFERENCE}: the error codes, in ErrorCode::ALL order"
    );
    for row in &rows {
        assert!(
            !row.cells.iter().any(|c| c.contains(TODO)),
            "{REFERENCE}: write the `where` and `meaning` cells of `{}` (they say TODO)",
            row.code
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_of_the_openapi_document_is_in_the_reference() {
    let broker = Broker::start().await;
    let (status, doc) = broker.get_json("/api/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    let owned: Vec<String> = doc["paths"]
        .as_object()
        .expect("/api/openapi.json has paths")
        .iter()
        .flat_map(|(path, operations)| {
            let methods: Vec<String> = operations
                .as_object()
                .map(|o| o.keys().map(|m| m.to_uppercase()).collect())
                .unwrap_or_default();
            methods.into_iter().map(move |m| format!("{m} {path}"))
        })
        // The pages' static files (scripts, styles, icon) are not routes to document one by one.
        .filter(|route| !route.starts_with("HEAD ") && !is_static_file(route))
        .collect();
    let routes: Vec<&String> = owned.iter().collect();
    let reference = read_reference();
    let (_, _, table) = section(&reference, "routes");
    let listed: BTreeSet<String> = table
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`').map(|(route, _)| route.to_owned()))
        .collect();
    let missing: Vec<&&String> = routes
        .iter()
        .filter(|r| !listed.contains(r.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{REFERENCE}: add a row `| `ROUTE` | what it does |` to the routes table for each of {missing:?} (GET /api/openapi.json lists them)"
    );
    let known: BTreeSet<&str> = routes.iter().map(|r| r.as_str()).collect();
    let stale: Vec<&String> = listed
        .iter()
        .filter(|r| !known.contains(r.as_str()))
        .collect();
    assert!(
        stale.is_empty(),
        "{REFERENCE}: the routes table lists {stale:?}, which GET /api/openapi.json does not describe"
    );
}

/// `GET /monitor.js` and the like: a file of the embedded pages.
fn is_static_file(route: &str) -> bool {
    [".js", ".css", ".svg", ".png"]
        .iter()
        .any(|ext| route.ends_with(ext))
}
