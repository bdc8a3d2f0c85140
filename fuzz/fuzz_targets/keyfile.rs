//! ZITADEL key file parser: `SigningKey::from_json` on arbitrary bytes, for both kinds.
//!
//! Invariants: never panics; an error message never quotes the `key` field back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mintproxy::token::{KeyKind, SigningKey};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    for kind in [KeyKind::ServiceAccount, KeyKind::Application] {
        match SigningKey::from_json(data, kind) {
            Ok(key) => {
                assert_eq!(key.kind, kind);
                assert!(!key.key_id.trim().is_empty());
                assert!(!key.subject.trim().is_empty());
                // Debug is redacted; it must not print the PEM.
                let debug = format!("{key:?}");
                assert!(!debug.contains("PRIVATE KEY"), "Debug shows the key: {debug}");
            }
            Err(problem) => {
                let message = problem.to_string();
                assert!(!message.is_empty());
                assert_no_key_in(data, &message);
            }
        }
    }
});

/// The key's value must not appear in the message, unless it is also in the `type` value
/// (which the message may quote) or is a short string that the fixed text happens to contain.
fn assert_no_key_in(data: &[u8], message: &str) {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(Value::String(key)) = fields.get("key") else {
        return;
    };
    if key.chars().count() < 12 {
        return;
    }
    if let Some(Value::String(kind)) = fields.get("type") {
        if kind.contains(key.as_str()) {
            return;
        }
    }
    assert!(
        !message.contains(key.as_str()),
        "error message quotes the key: {message}"
    );
}
