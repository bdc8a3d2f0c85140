//! Field hygiene beyond hop-by-hop: `drop_impostors` on a client's fields and
//! `clean_trailers` on trailers either way, each on a header map built from arbitrary bytes
//! (one `name: value` per line, as in the `headers` target). An upstream's
//! `Content-Length` fields are folded by the response parser (the `response` target).
//!
//! Invariants:
//! - no field survives `drop_impostors` whose name, `_` read as `-`, is one the proxy sets
//!   or strips, except under its own spelling; nor `forwarded` or `x-real-ip`; every other
//!   field is kept with the same values;
//! - no field survives `clean_trailers` whose name, `_` read as `-`, is a forwarding,
//!   framing, credential or hop-by-hop one; every other field is kept.

#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use mintproxy::proxy::headers::{clean_trailers, drop_impostors};

/// The names of `src/proxy/headers.rs`'s `CONTROLLED`, written out again so the target
/// checks the rule rather than repeating the code.
const CONTROLLED: [&str; 16] = [
    "host",
    "authorization",
    "proxy-authorization",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
];

#[path = "shared/hop_by_hop.rs"]
mod hop_by_hop;
use hop_by_hop::HOP_BY_HOP;

#[path = "shared/header_block.rs"]
mod shared;
use shared::header_block;

fuzz_target!(|data: &[u8]| {
    let original = header_block(data);
    let dashed = |name: &HeaderName| name.as_str().replace('_', "-");

    let mut client = original.clone();
    drop_impostors(&mut client);
    for name in original.keys() {
        let impostor = (name.as_str().contains('_') && CONTROLLED.contains(&dashed(name).as_str()))
            || name == "forwarded"
            || name == "x-real-ip";
        if impostor {
            assert!(!client.contains_key(name), "{name} passed for the proxy's field");
        } else {
            assert_same(&original, &client, name);
        }
    }

    let mut trailers = original.clone();
    clean_trailers(&mut trailers);
    for name in original.keys() {
        if CONTROLLED.contains(&dashed(name).as_str()) || HOP_BY_HOP.contains(&name.as_str()) {
            assert!(!trailers.contains_key(name), "trailer {name} passed");
        } else {
            assert_same(&original, &trailers, name);
        }
    }
});

fn assert_same(before: &HeaderMap, after: &HeaderMap, name: &HeaderName) {
    let before: Vec<&HeaderValue> = before.get_all(name).iter().collect();
    let after: Vec<&HeaderValue> = after.get_all(name).iter().collect();
    assert_eq!(before, after, "{name} changed");
}
