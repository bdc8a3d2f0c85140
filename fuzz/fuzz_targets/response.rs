//! Upstream responses: the HTTP/1.1 client's head parser and body decoder
//! (`mintproxy::proxy::decode_all`, src/proxy/http1/codec.rs) on arbitrary bytes.
//!
//! The first input byte picks the read size (1 to 64 bytes at a time), the second the
//! request method (GET or HEAD); the rest is what the upstream sent before closing.
//!
//! Invariants:
//! - no panic, whatever the bytes;
//! - the outcome does not depend on how the bytes were split into reads: the same status,
//!   fields, body and trailers read 1 MiB at a time and in small pieces, or an error both
//!   ways;
//! - the fields the client would get hold none of the connection's own (unless the status is
//!   101, for a tunnel), and at most one `Content-Length`, a plain length.

#![no_main]

use http::{Method, StatusCode};
use libfuzzer_sys::fuzz_target;
use mintproxy::proxy::decode_all;

#[path = "shared/hop_by_hop.rs"]
mod hop_by_hop;
use hop_by_hop::HOP_BY_HOP;

fuzz_target!(|data: &[u8]| {
    let [piece, method, response @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece % 64) + 1;
    let method = if method & 1 == 0 { Method::GET } else { Method::HEAD };
    let whole = decode_all(response, &method, 1 << 20);
    let split = decode_all(response, &method, piece);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "the response depends on the read size");
            if a.status != StatusCode::SWITCHING_PROTOCOLS {
                for name in HOP_BY_HOP.iter().chain(&["te"]) {
                    assert!(!a.headers.contains_key(*name), "{name} passed: {:?}", a.headers);
                }
            }
            let lengths: Vec<_> = a.headers.get_all("content-length").iter().collect();
            assert!(lengths.len() <= 1, "{lengths:?}");
            assert!(
                lengths.iter().all(|l| !l.is_empty() && l.as_bytes().iter().all(u8::is_ascii_digit)),
                "{lengths:?}"
            );
        }
        (Err(_), Err(_)) => {}
        _ => panic!("read whole: {whole:?}; read {piece} bytes at a time: {split:?}"),
    }
});
