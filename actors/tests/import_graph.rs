//! The modules of the actor crate import each other without a circle.
//!
//! Why it matters: a message is defined beside the actor that sends it (as
//! actix's chat example puts `Connect` and `Disconnect` in the server's
//! file), and an actor that answers reaches its sender through a
//! `Recipient`, not the sender's type. Then every import points one way,
//! along the path of an event (producer → Emitter → Persister, Registry →
//! Session), and a reader can take the modules in that order. A circle is
//! how a message ends up in the wrong file; this test names it.
//!
//! An edge is a `crate::module` path in code (comments and doc comments
//! do not count: a doc link is a pointer for the reader, not a dependency).
//! A folder (`store/`, `demo/`) counts as one module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which module imports which: module name → the modules it names.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in source_files(&src) {
        let text = std::fs::read_to_string(&file).expect("read a source file");
        let edges = graph.entry(module.clone()).or_default();
        for line in text.lines().map(str::trim_start) {
            if line.starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let name: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    edges.insert(name);
                }
            }
        }
    }
    graph
}

/// Every `.rs` file under `src`, with the module it belongs to.
fn source_files(src: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(src).expect("read src") {
        let path = entry.expect("a directory entry").path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            files.extend(all_rs(&path).into_iter().map(|file| (stem.clone(), file)));
        } else if path.extension().is_some_and(|e| e == "rs") && stem != "lib" {
            files.push((stem, path));
        }
    }
    files
}

fn all_rs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read a module folder") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(all_rs(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// A circle through `start`, if any: the modules along it.
fn circle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let here = path.last().unwrap().clone();
        for next in graph.get(&here).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    walk(graph, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn no_module_imports_itself_through_others() {
    let graph = import_graph();
    assert!(graph.contains_key("emitter") && graph.contains_key("session"));
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|module| circle_from(&graph, module))
        .map(|circle| circle.join(" → "))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles (move the message to its sender, answer through a Recipient):\n{}",
        circles.join("\n")
    );
}

#[test]
fn a_circle_is_found() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    assert_eq!(
        circle_from(&graph, "a").map(|c| c.join(" ")),
        Some("a b c a".to_owned())
    );
    graph.get_mut("c").unwrap().clear();
    assert_eq!(circle_from(&graph, "a"), None);
}
