//! Header sanitiser: `strip_hop_by_hop` on a header map built from arbitrary bytes.
//!
//! The input is read as a header block: one `name: value` per line (split at the first
//! `:`, surrounding blanks trimmed); lines that make no valid header are skipped.
//!
//! Invariants after stripping:
//! - no fixed hop-by-hop header remains (`connection`, `keep-alive`, `proxy-connection`,
//!   `proxy-authorization`, `proxy-authenticate`, `transfer-encoding`, `upgrade`; `trailer`
//!   is end to end and stays unless `Connection` names it);
//! - no header named in any original `Connection` value remains (names are the value's
//!   comma-separated elements, read as bytes), except `te`;
//! - `te` is absent or exactly one `trailers`, and only if the client asked for trailers;
//! - every other header is kept, with the same values in the same order.

#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mintproxy::proxy::headers::strip_hop_by_hop;

#[path = "shared/hop_by_hop.rs"]
mod hop_by_hop;
use hop_by_hop::HOP_BY_HOP;

#[path = "shared/header_block.rs"]
mod shared;
use shared::header_block;

fuzz_target!(|data: &[u8]| {
    let original = header_block(data);
    let mut map = original.clone();
    strip_hop_by_hop(&mut map);

    for name in HOP_BY_HOP {
        assert!(!map.contains_key(name), "hop-by-hop header {name} survived");
    }

    let named = connection_named(&original);
    // `te` is the exception: HTTP/1.1 senders list it in `Connection` (RFC 9110 §10.1.4),
    // and `te: trailers` survives anyway (checked below).
    for name in named.iter().filter(|n| *n != "te") {
        assert!(
            !map.contains_key(name),
            "header {name} named in Connection survived"
        );
    }

    let te: Vec<&HeaderValue> = map.get_all("te").iter().collect();
    match te.as_slice() {
        [] => {}
        [value] => {
            assert_eq!(*value, "trailers", "te kept as {value:?}");
            assert!(elements(&original, "te").any(|c| c.eq_ignore_ascii_case(b"trailers")));
        }
        more => panic!("{} te values kept", more.len()),
    }

    for name in original.keys() {
        let name = name.as_str();
        if HOP_BY_HOP.contains(&name) || named.iter().any(|n| n == name) || name == "te" {
            continue;
        }
        let before: Vec<&HeaderValue> = original.get_all(name).iter().collect();
        let after: Vec<&HeaderValue> = map.get_all(name).iter().collect();
        assert_eq!(before, after, "end-to-end header {name} changed");
    }
    for name in map.keys() {
        assert!(original.contains_key(name), "header {name} appeared from nowhere");
    }
});

/// The comma-separated elements of every value of `name`, trimmed, as bytes.
fn elements<'a>(map: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a [u8]> {
    map.get_all(name)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
}

/// Every header name that an original `Connection` value lists.
fn connection_named(map: &HeaderMap) -> Vec<HeaderName> {
    elements(map, "connection")
        .filter_map(|element| HeaderName::from_bytes(element).ok())
        .collect()
}
