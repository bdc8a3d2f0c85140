//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): reading a caller's
//! `traceparent`, writing the proxy's. Written here rather than taken from the
//! OpenTelemetry propagator so that the request path checks a caller's header without
//! building an OpenTelemetry context when export is off.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The `traceparent` field.
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` field.
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The version-00 length of a `traceparent` value, and the least any version may have.
const LENGTH: usize = 55;

/// A caller's span, as its `traceparent` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parent {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) flags: u8,
}

/// What a request's headers say about its caller's trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// No `traceparent`.
    Absent,
    /// One `traceparent` that parses.
    Valid(Parent),
    /// A `traceparent` that does not parse, or several: treated as absent, and not passed
    /// on as it is (the specification's "restart the trace").
    Malformed,
}

impl Incoming {
    /// Reads the `traceparent` of `headers`.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut fields = headers.get_all(&TRACEPARENT).iter();
        match (fields.next(), fields.next()) {
            (None, _) => Self::Absent,
            (Some(value), None) => parse(value.as_bytes()).map_or(Self::Malformed, Self::Valid),
            (Some(_), Some(_)) => Self::Malformed,
        }
    }
}

/// Parses a `traceparent` value: version 00 exactly as specified; a later version (not
/// `ff`) leniently, by its version-00 fields, as §3.2.4 asks ("If a higher version is
/// detected, the implementation SHOULD try to parse it"). Hex must be lowercase; all-zero
/// ids are invalid.
pub(crate) fn parse(value: &[u8]) -> Option<Parent> {
    if value.len() < LENGTH {
        return None;
    }
    let version = hex::<1>(&value[0..2])?[0];
    let fits = match version {
        0xff => false,
        0 => value.len() == LENGTH,
        _ => value.len() == LENGTH || value[LENGTH] == b'-',
    };
    if !fits || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex::<16>(&value[3..35]).filter(|id| *id != [0; 16])?;
    let span_id = hex::<8>(&value[36..52]).filter(|id| *id != [0; 8])?;
    let flags = hex::<1>(&value[53..55])?[0];
    Some(Parent {
        trace_id,
        span_id,
        flags,
    })
}

/// `2 * N` lowercase hex digits as `N` bytes.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(bytes)
}

/// A version-00 `traceparent` naming the span `span_id` of trace `trace_id`.
pub(crate) fn traceparent(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> HeaderValue {
    use std::fmt::Write;
    let mut text = String::with_capacity(LENGTH);
    text.push_str("00-");
    trace_id
        .iter()
        .for_each(|b| write!(text, "{b:02x}").expect("writing to a String"));
    text.push('-');
    span_id
        .iter()
        .for_each(|b| write!(text, "{b:02x}").expect("writing to a String"));
    write!(text, "-{flags:02x}").expect("writing to a String");
    HeaderValue::try_from(text).expect("hex and dashes are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specification_s_example_parses_and_prints_back() {
        let parent = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(parent.flags, 1);
        assert_eq!(parent.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(
            traceparent(parent.trace_id, parent.span_id, parent.flags),
            EXAMPLE
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        let cases = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ];
        for case in cases {
            assert_eq!(parse(case.as_bytes()), None, "{case:?}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_version_00_fields() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(parse(later.as_bytes()), parse(EXAMPLE.as_bytes()));
        assert!(parse(&later.as_bytes()[..LENGTH]).is_some());
    }

    #[test]
    fn two_traceparent_fields_are_malformed() {
        let mut headers = HeaderMap::new();
        assert_eq!(Incoming::of(&headers), Incoming::Absent);
        headers.append(TRACEPARENT.clone(), HeaderValue::from_static(EXAMPLE));
        assert!(matches!(Incoming::of(&headers), Incoming::Valid(_)));
        headers.append(TRACEPARENT.clone(), HeaderValue::from_static(EXAMPLE));
        assert_eq!(Incoming::of(&headers), Incoming::Malformed);
    }
}
