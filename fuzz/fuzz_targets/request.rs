//! Client requests: the in-task HTTP/1.1 server's head parser and request reader
//! (`mintproxy::server::http1::decode_requests`) on arbitrary bytes.
//!
//! The first input byte picks the read size (1 to 64 bytes at a time); the rest is what the
//! client sent.
//!
//! Invariants:
//! - no panic, whatever the bytes;
//! - the requests taken, and whether the connection went to hyper, do not depend on how the
//!   bytes were split into reads.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mintproxy::server::http1::decode_requests;

fuzz_target!(|data: &[u8]| {
    let [piece, request @ ..] = data else {
        return;
    };
    let piece = usize::from(*piece % 64) + 1;
    let whole = decode_requests(request, 1 << 20);
    let split = decode_requests(request, piece);
    assert_eq!(whole, split, "read {piece} bytes at a time");
});
