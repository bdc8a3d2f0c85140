//! The crate's top-level modules depend on one another without cycles, and the token code,
//! which embedders use on its own, on nothing of the proxy. Read from the source: the
//! top-level modules each file's non-test code names (`crate::x`, `crate::{x, y}`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Each top-level module of `src/` (a file or a folder; not `lib.rs` or `main.rs`) and the
/// other top-level modules its code names outside comments and its `#[cfg(test)]` part.
fn dependencies() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = Graph::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(fs::read_dir(&path).unwrap().map(|entry| entry.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.iter().next().unwrap().to_str().unwrap();
        let module = first.strip_suffix(".rs").unwrap_or(first).to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let named = graph.entry(module.clone()).or_default();
        for line in code.lines().filter(|line| !line.trim_start().starts_with("//")) {
            for used in named_modules(line) {
                if used != module {
                    named.insert(used);
                }
            }
        }
    }
    graph
}

/// The top-level modules `line` names after `crate::`.
fn named_modules(line: &str) -> Vec<String> {
    let ident = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        let rest = &line[at + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                names.extend(group.split(',').map(ident).filter(|name| !name.is_empty()));
            }
            None => names.push(ident(rest)),
        }
    }
    names
}

/// A cycle among `graph`'s modules, as the path that closes it.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut cycle = path[at..].to_vec();
            cycle.push(module.to_owned());
            return Some(cycle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(graph, next, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(graph, module, &mut Vec::new(), &mut done))
}

fn reachable(graph: &Graph, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut next = vec![from.to_owned()];
    while let Some(module) = next.pop() {
        for used in graph.get(&module).into_iter().flatten() {
            if seen.insert(used.clone()) {
                next.push(used.clone());
            }
        }
    }
    seen
}

#[test]
fn the_modules_depend_on_one_another_without_cycles() {
    let graph = dependencies();
    assert!(graph.len() > 10, "read too few modules: {graph:?}");
    assert!(
        graph["app"].contains("proxy"),
        "the reading misses dependencies: {graph:?}"
    );
    assert_eq!(cycle(&graph), None, "a cycle among the modules");
}

#[test]
fn the_token_code_depends_on_nothing_of_the_proxy() {
    let graph = dependencies();
    let used = reachable(&graph, "token");
    for outside in [
        "proxy",
        "server",
        "app",
        "config",
        "cli",
        "metrics",
        "admin",
        "access_log",
    ] {
        assert!(!used.contains(outside), "token reaches {outside}: {used:?}");
    }
}

#[test]
fn a_cycle_is_found() {
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(
        cycle(&graph),
        Some(["a", "b", "c", "a"].map(str::to_owned).to_vec())
    );
    assert_eq!(
        named_modules("use crate::{app, key_expiry};"),
        ["app", "key_expiry"]
    );
}
