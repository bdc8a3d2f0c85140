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
//! A refusal is for a reason the input has. (The checks live in
//! `src/proxy/normalize/invariants.rs`, shared with the unit tests.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use mintproxy::proxy::normalize::{normalize, Ambiguous};

#[path = "../../src/proxy/normalize/invariants.rs"]
mod invariants;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = if text.starts_with('/') {
        text.into_owned()
    } else {
        assert_eq!(normalize(&text), Err(Ambiguous::NotAbsolute), "{text:?}");
        format!("/{text}")
    };
    invariants::check(&path);
});
