//! Inputs that fuzzing (`fuzz/`, see fuzz/README.md) found mishandled, kept as tests.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use mintproxy::proxy::headers::strip_hop_by_hop;

/// Fuzz target `headers`, input `b"Connection: \xde, X-Custom\nx-custom: v\n"`: a
/// `Connection` value holding a byte outside visible ASCII (obs-text, which `HeaderValue`
/// accepts) was skipped whole, so the headers it names crossed the proxy.
#[test]
fn a_connection_value_with_obs_text_still_removes_the_headers_it_names() {
    let mut map = HeaderMap::new();
    map.append(
        header::CONNECTION,
        HeaderValue::from_bytes(b"\xde, X-Custom ,").unwrap(),
    );
    map.append(HeaderName::from_static("x-custom"), HeaderValue::from_static("v"));
    map.append(header::ACCEPT, HeaderValue::from_static("application/json"));
    strip_hop_by_hop(&mut map);
    let names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
    assert_eq!(
        names,
        ["accept"],
        "x-custom is named in Connection, so it must not be forwarded"
    );
}

/// The same with the names in a `Connection` value of their own, next to the odd one.
#[test]
fn an_odd_connection_value_does_not_hide_the_others() {
    let mut map = HeaderMap::new();
    map.append(
        header::CONNECTION,
        HeaderValue::from_bytes(b"x-one, caf\xc3\xa9").unwrap(),
    );
    map.append(header::CONNECTION, HeaderValue::from_static("x-two"));
    map.append(HeaderName::from_static("x-one"), HeaderValue::from_static("1"));
    map.append(HeaderName::from_static("x-two"), HeaderValue::from_static("2"));
    strip_hop_by_hop(&mut map);
    assert!(map.is_empty(), "left: {map:?}");
}
