//! Upstream responses: the HTTP/1.1 client's head parser and body decoder
//! (`mintproxy::proxy::decode_all`, src/proxy/http1/codec.rs) on arbitrary bytes.
//!
//! The first input byte picks the read size (1 to 64 bytes at a time), the second the
//! request method (GET or HEAD); the rest is what the upstream sent before closing.
//!
//! Invariants:
//! - no panic, whatever the bytes;
//! - the outcome does not depend on how the bytes were split into reads: the same status,
//!   body and trailers read 1 MiB at a time and in small pieces, or an error both ways.

#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use mintproxy::proxy::decode_all;

fuzz_target!(|data: &[u8]| {
    let [piece, method, response @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece % 64) + 1;
    let method = if method & 1 == 0 { Method::GET } else { Method::HEAD };
    let whole = decode_all(response, &method, 1 << 20);
    let split = decode_all(response, &method, piece);
    match (&whole, &split) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the response depends on the read size"),
        (Err(_), Err(_)) => {}
        _ => panic!("read whole: {whole:?}; read {piece} bytes at a time: {split:?}"),
    }
});
