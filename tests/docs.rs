//! The documentation a newcomer reads first stays true: the README stays short, its two
//! commands are the ones CI runs, and every relative link (and `#anchor`) in the README
//! and `docs/` leads somewhere.

use std::path::{Path, PathBuf};

/// The README's size limit: what a newcomer needs, the reference lives in `docs/`.
const README_LIMIT: usize = 14_000;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The README and every page in `docs/`.
fn pages() -> Vec<PathBuf> {
    let mut pages: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    for page in [
        "configuration",
        "security",
        "operating",
        "performance",
        "architecture",
    ] {
        let path = root().join(format!("docs/{page}.md"));
        assert!(pages.contains(&path), "{} is missing", path.display());
    }
    pages.insert(0, root().join("README.md"));
    pages
}

/// `text` without its fenced code blocks, whose brackets are code, not links.
fn prose(text: &str) -> String {
    let mut fenced = false;
    let mut kept = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    kept
}

/// Every `[text](target)` target in `text`.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].to_owned());
        }
    }
    targets
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces
/// as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown page's headings.
fn anchors(text: &str) -> Vec<String> {
    prose(text)
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| slug(heading.trim_start_matches('#')))
        .collect()
}

#[test]
fn the_readme_stays_short() {
    let size = read(&root().join("README.md")).len();
    assert!(
        size < README_LIMIT,
        "README.md is {size} bytes; keep it under {README_LIMIT} and move reference text to docs/"
    );
}

/// The README's first code block holds the two commands a newcomer runs first; CI runs
/// both (the demo with `--once`, so it ends), so they keep working.
#[test]
fn the_readmes_two_commands_are_what_ci_runs() {
    let readme = read(&root().join("README.md"));
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a sh code block");
    let commands: Vec<&str> = block
        .lines()
        .map(|line| line.split('#').next().unwrap().trim())
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(commands.len(), 2, "two commands: {commands:?}");
    let (demo, test) = (commands[0], commands[1]);
    assert!(
        demo.ends_with("-- demo"),
        "the first command runs the demo: {demo}"
    );
    assert!(
        test.starts_with("cargo test"),
        "the second runs the tests: {test}"
    );
    let ci = read(&root().join(".ci/run"));
    let ci_lines: Vec<&str> = ci.lines().map(str::trim).collect();
    for expected in [test.to_owned(), format!("{demo} --once")] {
        assert!(
            ci_lines.contains(&expected.as_str()),
            ".ci/run does not run `{expected}`"
        );
    }
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut checked = 0;
    for page in pages() {
        let text = read(&page);
        let dir = page.parent().unwrap();
        for target in link_targets(&prose(&text)) {
            if target.starts_with("https://") || target.starts_with("http://") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            let at = format!("{}: ({target})", page.strip_prefix(root()).unwrap().display());
            assert!(linked.exists(), "{at}: {} does not exist", linked.display());
            if let Some(anchor) = anchor {
                let headings = anchors(&read(&linked));
                assert!(
                    headings.iter().any(|h| h == anchor),
                    "{at}: no heading #{anchor} in {headings:?}"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "only {checked} links found: is the link reader broken?"
    );
}

#[test]
fn slugs_are_githubs() {
    assert_eq!(
        slug(" Quick start against ZITADEL"),
        "quick-start-against-zitadel"
    );
    assert_eq!(
        slug("Architecture: how it works, embedding"),
        "architecture-how-it-works-embedding"
    );
    assert_eq!(link_targets("a [b](c.md#d) e [f](g)"), ["c.md#d", "g"]);
}
