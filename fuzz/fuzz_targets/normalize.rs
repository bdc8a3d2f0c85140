//! Path normalizer: `normalize` on arbitrary bytes read as a request path (lossy UTF-8; a
//! path that does not start with `/` must be refused as `NotAbsolute`, then gets one).
//!
//! Invariants of a normal form:
//! - `normalize` gives it back unchanged (idempotent);
//! - it starts with `/` and has no `//`, no `.` or `..` segment, no `;`, no `\`; every escape
//!   has upper-case hex and is not of an unreserved character; every other byte is a path
//!   character (`pchar` or `/`);
//! - a server that decodes every escape and resolves dot segments reads the same bytes from
//!   it as from the input;
//! - the input has none of the reasons for a refusal.
//!
//! A refusal is for a reason the input has, and its message is short.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mintproxy::proxy::normalize::{normalize, Ambiguous};

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

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = if text.starts_with('/') {
        text.into_owned()
    } else {
        assert_eq!(normalize(&text), Err(Ambiguous::NotAbsolute), "{text:?}");
        format!("/{text}")
    };
    match normalize(&path) {
        Ok(normal) => {
            for reason in EVERY_REASON {
                assert!(
                    !justified(&path, reason),
                    "{path:?} has {reason:?} but gave {normal:?}"
                );
            }
            assert_eq!(normalize(&normal).as_ref(), Ok(&normal), "{path:?} -> {normal:?}");
            assert_well_formed(&normal);
            assert_eq!(
                fully_decoded(&normal),
                clean(&fully_decoded(&path)),
                "{path:?} -> {normal:?} reads differently"
            );
        }
        Err(reason) => {
            assert!(justified(&path, reason), "{path:?} refused as {reason:?}");
            assert!(reason.to_string().len() <= 100);
        }
    }
});

fn assert_well_formed(normal: &str) {
    assert!(normal.starts_with('/'), "{normal:?}");
    for bad in ["//", "/./", "/../", ";", "\\"] {
        assert!(!normal.contains(bad), "{normal:?} has {bad:?}");
    }
    assert!(!normal.ends_with("/.") && !normal.ends_with("/.."), "{normal:?}");
    let bytes = normal.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == b'%' {
            let hex = normal.get(i + 1..i + 3).expect("two hex digits after %");
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

/// RFC 3986 §2.3.
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

/// What a server that decodes every escape (Go's `URL.Path`) reads. Only for paths whose
/// escapes are all well formed.
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
