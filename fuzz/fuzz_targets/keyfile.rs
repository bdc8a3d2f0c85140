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
                assert_no_key_in(data, kind, &message);
            }
        }
    }
});

/// The message must not depend on the key's value: if the key's text appears in it, it
/// must also appear in the message for the same file with another key (the key happens to
/// spell part of the fixed text, or of the `type` that the message may quote).
fn assert_no_key_in(data: &[u8], kind: KeyKind, message: &str) {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(Value::String(key)) = fields.get("key").cloned() else {
        return;
    };
    if key.chars().count() < 8 || !message.contains(key.as_str()) {
        return;
    }
    fields.insert("key".to_owned(), Value::String("not a key".to_owned()));
    let other = serde_json::to_vec(&Value::Object(fields)).expect("re-serialise");
    let other = match SigningKey::from_json(&other, kind) {
        Ok(_) => String::new(),
        Err(problem) => problem.to_string(),
    };
    assert!(
        other.contains(key.as_str()),
        "error message quotes the key: {message}"
    );
}
