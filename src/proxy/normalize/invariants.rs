//! What a normal form must be, checked from the outside: shared by the unit tests and the
//! `normalize` fuzz target (`fuzz/fuzz_targets/normalize.rs` includes this file), each of
//! which brings `normalize` and `Ambiguous` into the parent module's scope.

use super::{normalize, Ambiguous};

const EVERY_REASON: [Ambiguous; 8] = [
    Ambiguous::NotAbsolute,
    Ambiguous::EncodedSlash,
    Ambiguous::Backslash,
    Ambiguous::PathParameter,
    Ambiguous::Nul,
    Ambiguous::Control,
    Ambiguous::MalformedEscape,
    Ambiguous::AboveRoot,
];

/// The invariants of one path: a normal form is stable, well-formed, agrees with the
/// RFC's own algorithm, and means to a server that decodes everything what the original
/// meant, and has none of the reasons for a refusal; a refusal is for a reason the path has.
pub(crate) fn check(path: &str) {
    match normalize(path) {
        Ok(normal) => {
            for reason in EVERY_REASON {
                assert!(
                    !justified(path, reason),
                    "{path:?} has {reason:?} but gave {normal:?}"
                );
            }
            assert_eq!(normalize(&normal).as_ref(), Ok(&normal), "{path:?} -> {normal:?}");
            assert_well_formed(&normal);
            assert_eq!(normal, reference(path), "{path:?}");
            assert_eq!(
                fully_decoded(&normal),
                clean(&fully_decoded(path)),
                "{path:?} -> {normal:?} reads differently"
            );
        }
        Err(reason) => assert!(justified(path, reason), "{path:?} refused as {reason:?}"),
    }
}

fn assert_well_formed(normal: &str) {
    assert!(normal.starts_with('/'), "{normal:?}");
    for bad in ["//", "/./", "/../", ";", "\\"] {
        assert!(!normal.contains(bad), "{normal:?} has {bad:?}");
    }
    assert!(!normal.ends_with("/.") && !normal.ends_with("/.."), "{normal:?}");
    let bytes = normal.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == b'%' {
            let hex = &normal[i + 1..i + 3];
            assert!(
                hex.bytes()
                    .all(|d| d.is_ascii_digit() || (b'A'..=b'F').contains(&d)),
                "{normal:?}: %{hex}"
            );
            let value = u8::from_str_radix(hex, 16).unwrap();
            assert!(!is_unreserved(value), "{normal:?}: %{hex} is unreserved");
        } else {
            assert!(byte == b'/' || is_pchar(byte), "{normal:?}: {byte:#04x}");
        }
    }
}

/// RFC 3986 as written: decode unreserved escapes and upper-case the rest (§6.2.2),
/// encode literal bytes that may not stand in a path (§3.3), merge slashes, then §5.2.4's
/// loop. Only for paths `normalize` accepts.
fn reference(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = String::new();
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if byte == b'%' {
            let escaped = u8::from_str_radix(&path[at + 1..at + 3], 16).unwrap();
            if is_unreserved(escaped) {
                decoded.push(char::from(escaped));
            } else {
                decoded.push_str(&path[at..at + 3].to_ascii_uppercase());
            }
            at += 3;
        } else {
            if byte == b'/' || is_pchar(byte) {
                decoded.push(char::from(byte));
            } else {
                decoded.push_str(&format!("%{byte:02X}"));
            }
            at += 1;
        }
    }
    while decoded.contains("//") {
        decoded = decoded.replace("//", "/");
    }
    remove_dot_segments(&decoded)
}

/// RFC 3986 §5.2.4, step by step.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path.to_owned();
    let mut output = String::new();
    let pop = |output: &mut String| output.truncate(output.rfind('/').unwrap_or(0));
    while !input.is_empty() {
        if input.starts_with("../") {
            input.drain(..3);
        } else if input.starts_with("./") {
            input.drain(..2);
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".to_owned();
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            pop(&mut output);
        } else if input == "/.." {
            input = "/".to_owned();
            pop(&mut output);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let from = usize::from(input.starts_with('/'));
            let end = input[from..].find('/').map_or(input.len(), |i| i + from);
            output.extend(input.drain(..end));
        }
    }
    output
}

/// What a server that decodes every escape (Go's `URL.Path`) reads.
fn fully_decoded(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&path[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Merged slashes and resolved dot segments over decoded bytes; a trailing slash kept.
fn clean(path: &[u8]) -> Vec<u8> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for segment in path[1..].split(|&b| b == b'/') {
        trailing = true;
        match segment {
            b"" | b"." => {}
            b".." => {
                kept.pop();
            }
            _ => {
                kept.push(segment);
                trailing = false;
            }
        }
    }
    let mut out = Vec::new();
    for segment in kept {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    out
}

/// The path has what `reason` says.
fn justified(path: &str, reason: Ambiguous) -> bool {
    let lower = path.to_ascii_lowercase();
    let escapes: Vec<Option<u8>> = lower
        .match_indices('%')
        .map(|(at, _)| {
            lower
                .get(at + 1..at + 3)
                .filter(|hex| hex.bytes().all(|d| d.is_ascii_hexdigit()))
                .map(|hex| u8::from_str_radix(hex, 16).unwrap())
        })
        .collect();
    let has = |byte: u8| path.as_bytes().contains(&byte) || escapes.contains(&Some(byte));
    match reason {
        Ambiguous::NotAbsolute => !path.starts_with('/'),
        Ambiguous::EncodedSlash => lower.contains("%2f"),
        Ambiguous::Backslash => has(b'\\'),
        Ambiguous::PathParameter => has(b';'),
        Ambiguous::Nul => has(0),
        Ambiguous::Control => (1..0x20).chain([0x7f]).any(has),
        Ambiguous::MalformedEscape => escapes.contains(&None),
        Ambiguous::AboveRoot => {
            let decoded = lower.replace("%2e", ".");
            let mut depth = 0i32;
            decoded.split('/').skip(1).any(|segment| {
                match segment {
                    "" | "." => {}
                    ".." => depth -= 1,
                    _ => depth += 1,
                }
                depth < 0
            })
        }
    }
}

/// RFC 3986 §2.3, written out again here: the oracle does not borrow the code it checks.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §3.3 `pchar` without pct-encoded and without `;`.
fn is_pchar(byte: u8) -> bool {
    is_unreserved(byte)
        || matches!(
            byte,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}
