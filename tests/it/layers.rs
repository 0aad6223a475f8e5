//! The layers hold: no cycle between the top-level modules of any crate of the workspace.
//!
//! Cargo refuses cycles between crates; inside a crate only this test does. It reads each
//! crate's sources and takes an edge `a -> b` wherever module `a` names `crate::b` (or, from a
//! top-level file, `super::b`), test code left out, then looks for strongly connected groups.
//! Written here rather than run with `cargo modules dependencies --acyclic`: that tool builds
//! rust-analyzer's crates (many minutes on CI's 2 cores) to answer what these `use` paths
//! already say; the code base names modules by path (no glob re-exports across modules), which
//! is what makes reading them enough.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The crates whose modules are checked, as folders holding `lib.rs`.
const CRATES: [&str; 4] = [
    "src",
    "crates/stac-client/src",
    "crates/stac-upload/src",
    "emulator/src",
];

#[test]
fn no_crate_has_a_cycle_between_its_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut report = String::new();
    let mut cycles = Vec::new();
    for krate in CRATES {
        let graph = module_graph(&root.join(krate));
        assert!(
            graph.len() >= 2,
            "{krate}: read no modules; is the path right?"
        );
        for (from, to) in &graph {
            report.push_str(&format!("{krate}: {from} -> {}\n", joined(to)));
        }
        for group in strongly_connected(&graph) {
            cycles.push(format!("{krate}: {}", joined(&group)));
        }
    }
    println!("{report}");
    assert!(
        cycles.is_empty(),
        "modules that import each other (break the cycle: move the shared type down, or pass \
         a value up instead of importing):\n{}\n\nthe edges:\n{report}",
        cycles.join("\n")
    );
}

/// The graph's own check: a cycle planted in a copy is found.
#[test]
fn a_planted_cycle_is_found() {
    let mut graph = BTreeMap::new();
    graph.insert("a".to_owned(), BTreeSet::from(["b".to_owned()]));
    graph.insert("b".to_owned(), BTreeSet::from(["c".to_owned()]));
    graph.insert("c".to_owned(), BTreeSet::from(["a".to_owned()]));
    graph.insert("d".to_owned(), BTreeSet::from(["a".to_owned()]));
    let found = strongly_connected(&graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0], BTreeSet::from(["a", "b", "c"].map(String::from)));
    let text = "use crate::config::JobSpec;\nfn f() { super::state::x(); }\n#[cfg(test)]\nmod tests { use crate::cli; }";
    assert_eq!(
        references(text, true),
        BTreeSet::from(["config".to_owned(), "state".to_owned()])
    );
}

type Graph = BTreeMap<String, BTreeSet<String>>;

/// `module -> the other top-level modules it names`, for the crate whose sources are in `src`.
fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).expect("under src");
        let mut parts = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        let first = parts.next().expect("a file name");
        let top = first.trim_end_matches(".rs").to_owned();
        if matches!(top.as_str(), "lib" | "main")
            || first == "tests.rs"
            || rel.ends_with("tests.rs")
        {
            continue;
        }
        // `super::x` names a sibling of the top-level module only from the module's own file.
        let top_level_file = rel.components().count() == 1
            || rel.ends_with("mod.rs") && rel.components().count() == 2;
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        let edges = graph.entry(top.clone()).or_default();
        // A name that is not a module (a function or type at the crate's root) is no edge.
        let is_module =
            |m: &str| src.join(format!("{m}.rs")).exists() || src.join(m).join("mod.rs").exists();
        for m in references(&text, top_level_file) {
            if m != top && is_module(&m) {
                edges.insert(m);
            }
        }
    }
    graph
}

/// The modules `text` names as `crate::m` (and `super::m` when `sibling_super`), up to its
/// first `#[cfg(test)]` (test modules sit at the end of a file here).
fn references(text: &str, sibling_super: bool) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if sibling_super {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            // Not the tail of a longer path (`stac_crate::`, `a::super::`).
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let name: String = code[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() && name != "super" {
                found.insert(name);
            }
        }
    }
    found
}

/// Every `.rs` file below `dir`, in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("a readable source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Tarjan's algorithm: the groups of two or more modules that reach each other.
fn strongly_connected(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        groups: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                group.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                s.groups.push(group);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.groups
}

fn joined(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}
