//! Config text parser: `RawConfig::parse` on arbitrary UTF-8 (no file reading, no validation
//! that touches the file system).
//!
//! Invariants: never panics; an error names the file, with `:line:column` inside the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mintproxy::config::raw::RawConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match RawConfig::parse(text, "fuzz.toml") {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(error) => {
            assert!(
                error.at.starts_with("fuzz.toml"),
                "error not at the file: {}",
                error.at
            );
            assert!(!error.reason.is_empty());
            let _ = error.to_string();
            check_location(text, &error.at["fuzz.toml".len()..]);
        }
    }
});

/// A location is empty or `:LINE:COLUMN`; the line exists in the text and the column is at
/// most one past its end (both counted as the parser does, columns in bytes).
fn check_location(text: &str, at: &str) {
    if at.is_empty() {
        return;
    }
    let parts: Vec<&str> = at.split(':').collect();
    assert!(parts.len() == 3 && parts[0].is_empty(), "odd location {at:?}");
    let line: usize = parts[1].parse().expect("line number");
    let column: usize = parts[2].parse().expect("column number");
    assert!(line >= 1 && column >= 1, "{at}");
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(
        line <= lines.len(),
        "line {line} past the end ({} lines)",
        lines.len()
    );
    assert!(
        column <= lines[line - 1].len() + 1,
        "column {column} past the end of line {line}"
    );
}
