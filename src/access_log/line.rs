//! One access line, byte for byte in the shapes `tracing-subscriber` gives every other log
//! line (text, coloured text on a terminal, or flattened JSON), so log readers see one
//! format. Written by hand, with no `core::fmt` on the common path: tracing's generic
//! formatter, which walks the fields through `dyn Debug`, and even `write!` cost more than
//! all the rest of a request's logging (bench/results-footprint.md).

use std::cell::Cell;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;

/// The access line's `target`, as in `RUST_LOG=info,mintproxy::access=off`.
pub const TARGET: &str = "mintproxy::access";

/// How lines look: `--log-format`, with colours when text goes to a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// `2026-11-29T23:26:34.574846Z  INFO mintproxy::access: method=GET path="/" ...`
    #[default]
    Text,
    /// The same with tracing-subscriber's ANSI colours.
    Ansi,
    /// One JSON object per line, the fields at the top level.
    Json,
}

/// What one access line says.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// When the request ended.
    pub at: SystemTime,
    /// The client's method.
    pub method: &'a Method,
    /// The path, without the query (which may carry secrets).
    pub path: &'a str,
    /// The status the client got.
    pub status: u16,
    /// From the request's arrival to its response headers.
    pub duration: Duration,
    /// The route's name.
    pub route: &'a str,
}

/// The fixed parts of a text line, around its timestamp and before each value.
struct Style {
    before_time: &'static str,
    after_time: &'static str,
    method: &'static str,
    path: &'static str,
    status: &'static str,
    duration: &'static str,
    route: &'static str,
}

const PLAIN: Style = Style {
    before_time: "",
    after_time: "  INFO mintproxy::access:",
    method: " method=",
    path: " path=",
    status: " status=",
    duration: " duration_ms=",
    route: " route=",
};

/// A field name as tracing-subscriber colours it: italic, with a dimmed `=`.
macro_rules! italic {
    ($name:literal) => {
        concat!(" \x1b[3m", $name, "\x1b[0m\x1b[2m=\x1b[0m")
    };
}

/// tracing-subscriber's colours: dimmed timestamp, target and colon, green INFO.
const COLOURED: Style = Style {
    before_time: "\x1b[2m",
    after_time: "\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2mmintproxy::access\x1b[0m\x1b[2m:\x1b[0m",
    method: italic!("method"),
    path: italic!("path"),
    status: italic!("status"),
    duration: italic!("duration_ms"),
    route: italic!("route"),
};

impl Line<'_> {
    /// Appends the line, newline included, to `out`.
    pub fn write(&self, shape: Shape, out: &mut Vec<u8>) {
        match shape {
            Shape::Text => self.write_text(&PLAIN, out),
            Shape::Ansi => self.write_text(&COLOURED, out),
            Shape::Json => self.write_json(out),
        }
    }

    fn write_text(&self, style: &Style, out: &mut Vec<u8>) {
        let push = |out: &mut Vec<u8>, text: &str| out.extend_from_slice(text.as_bytes());
        push(out, style.before_time);
        push_timestamp(out, self.at);
        push(out, style.after_time);
        push(out, style.method);
        push(out, self.method.as_str());
        push(out, style.path);
        push_quoted(out, self.path, Quote::Debug);
        push(out, style.status);
        push_digits(out, self.status.into(), 1);
        push(out, style.duration);
        push_millis(out, self.duration);
        push(out, style.route);
        push_quoted(out, self.route, Quote::Debug);
        out.push(b'\n');
    }

    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"timestamp":""#);
        push_timestamp(out, self.at);
        out.extend_from_slice(br#"","level":"INFO","method":""#);
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.extend_from_slice(br#"","path":"#);
        push_quoted(out, self.path, Quote::Json);
        out.extend_from_slice(br#","status":"#);
        push_digits(out, self.status.into(), 1);
        out.extend_from_slice(br#","duration_ms":"#);
        push_millis(out, self.duration);
        out.extend_from_slice(br#","route":"#);
        push_quoted(out, self.route, Quote::Json);
        out.extend_from_slice(br#","target":"mintproxy::access"}"#);
        out.push(b'\n');
    }
}

/// How a string value is quoted: as Rust's `Debug` does (tracing's text lines) or as JSON.
#[derive(Clone, Copy)]
enum Quote {
    Debug,
    Json,
}

/// `text` in double quotes, escaped as `quote` says. Both leave printable ASCII other than
/// `"` and `\` as it is, which is what paths and route names are made of.
fn push_quoted(out: &mut Vec<u8>, text: &str, quote: Quote) {
    if text
        .bytes()
        .all(|b| matches!(b, b' '..=b'~') && b != b'"' && b != b'\\')
    {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing to a Vec cannot fail.
    let _ = match quote {
        Quote::Debug => write!(out, "{text:?}"),
        Quote::Json => serde_json::to_writer(&mut *out, text).map_err(std::io::Error::from),
    };
}

/// `n` in decimal, with leading zeros to at least `width` digits.
fn push_digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while n > 0 || digits.len() - start < width {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[start..]);
}

/// Milliseconds with three decimals (microseconds, rounded): `0.037`, `1500.000`.
fn push_millis(out: &mut Vec<u8>, duration: Duration) {
    // In u64: u128 arithmetic (`as_nanos`) costs a library call.
    let micros = duration
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from((duration.subsec_nanos() + 500) / 1000));
    push_digits(out, micros / 1000, 1);
    out.push(b'.');
    push_digits(out, micros % 1000, 3);
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it:
/// `2026-11-29T23:26:34.574846Z`.
fn push_timestamp(out: &mut Vec<u8>, at: SystemTime) {
    thread_local! {
        /// The last second written on this thread, up to its `.`: the lines of one second
        /// share it, and working out a date costs more than the rest of the line.
        static LAST_SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
    }
    let since_epoch = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let date_time = LAST_SECOND.with(|last| match last.get() {
        (second, text) if second == seconds => text,
        _ => {
            let text = date_time(seconds);
            last.set((seconds, text));
            text
        }
    });
    out.extend_from_slice(&date_time);
    push_digits(out, since_epoch.subsec_micros().into(), 6);
    out.push(b'Z');
}

/// 9999-12-31T23:59:59Z, the last second with a four-digit year.
const LAST_FOUR_DIGIT_SECOND: u64 = 253_402_300_799;

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch (at most [`LAST_FOUR_DIGIT_SECOND`]).
fn date_time(seconds: u64) -> [u8; 20] {
    let seconds = seconds.min(LAST_FOUR_DIGIT_SECOND);
    let days = i64::try_from(seconds / 86_400).expect("at most 9999-12-31");
    let (year, month, day) = crate::rfc3339::civil_from_days(days);
    let (year, month, day) = (year.unsigned_abs(), u64::from(month), u64::from(day));
    let second_of_day = seconds % 86_400;
    let mut text = Vec::with_capacity(20);
    for (value, width, after) in [
        (year, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (second_of_day / 3600, 2, b':'),
        (second_of_day / 60 % 60, 2, b':'),
        (second_of_day % 60, 2, b'.'),
    ] {
        push_digits(&mut text, value, width);
        text.push(after);
    }
    text.try_into().expect("20 bytes with a four-digit year")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(path: &str) -> Line<'_> {
        Line {
            // 2026-11-29T23:26:34.574846Z
            at: UNIX_EPOCH + Duration::new(1_795_994_794, 574_846_123),
            method: &Method::GET,
            path,
            status: 200,
            duration: Duration::from_nanos(37_126),
            route: "/",
        }
    }

    fn written(line: &Line<'_>, shape: Shape) -> String {
        let mut out = Vec::new();
        line.write(shape, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_is_tracings_shape_with_three_decimals() {
        assert_eq!(
            written(&line("/v2/users"), Shape::Text),
            "2026-11-29T23:26:34.574846Z  INFO mintproxy::access: method=GET path=\"/v2/users\" \
             status=200 duration_ms=0.037 route=\"/\"\n"
        );
    }

    #[test]
    fn coloured_text_is_tracings_shape() {
        assert_eq!(
            written(&line("/p"), Shape::Ansi),
            "\x1b[2m2026-11-29T23:26:34.574846Z\x1b[0m \x1b[32m INFO\x1b[0m \
             \x1b[2mmintproxy::access\x1b[0m\x1b[2m:\x1b[0m \
             \x1b[3mmethod\x1b[0m\x1b[2m=\x1b[0mGET \x1b[3mpath\x1b[0m\x1b[2m=\x1b[0m\"/p\" \
             \x1b[3mstatus\x1b[0m\x1b[2m=\x1b[0m200 \x1b[3mduration_ms\x1b[0m\x1b[2m=\x1b[0m0.037 \
             \x1b[3mroute\x1b[0m\x1b[2m=\x1b[0m\"/\"\n"
        );
    }

    #[test]
    fn json_is_one_flat_object() {
        let text = written(&line("/a\"b\\c"), Shape::Json);
        assert_eq!(
            text,
            "{\"timestamp\":\"2026-11-29T23:26:34.574846Z\",\"level\":\"INFO\",\"method\":\"GET\",\
             \"path\":\"/a\\\"b\\\\c\",\"status\":200,\"duration_ms\":0.037,\"route\":\"/\",\
             \"target\":\"mintproxy::access\"}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["path"], "/a\"b\\c");
    }

    #[test]
    fn text_escapes_as_debug_does() {
        for path in ["/a\"b\x1b[31m", "/caf\u{e9}", "/tab\there", "/back\\slash"] {
            let text = written(&line(path), Shape::Text);
            assert!(text.contains(&format!(" path={path:?} ")), "{text}");
        }
    }

    #[test]
    fn json_escapes_as_serde_does() {
        for path in ["/a\"b\x1b[31m", "/caf\u{e9}", "/tab\there", "/back\\slash"] {
            let text = written(&line(path), Shape::Json);
            let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed["path"], path);
        }
    }

    #[test]
    fn numbers_get_their_digits() {
        assert_eq!(pushed(|out| push_digits(out, 0, 1)), "0");
        assert_eq!(pushed(|out| push_digits(out, 7, 3)), "007");
        assert_eq!(pushed(|out| push_digits(out, 12345, 2)), "12345");
        assert_eq!(pushed(|out| push_digits(out, u64::MAX, 1)), u64::MAX.to_string());
    }

    fn pushed(push: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        push(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn durations_round_to_microseconds() {
        let shown = |nanos| pushed(|out| push_millis(out, Duration::from_nanos(nanos)));
        assert_eq!(shown(0), "0.000");
        assert_eq!(shown(499), "0.000");
        assert_eq!(shown(500), "0.001");
        assert_eq!(shown(37_126), "0.037");
        assert_eq!(shown(1_234_567_890), "1234.568");
    }

    #[test]
    fn dates_follow_the_calendar() {
        let at = |seconds| pushed(|out| push_timestamp(out, UNIX_EPOCH + Duration::from_secs(seconds)));
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59.000000Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00.000000Z");
        assert_eq!(at(u64::MAX / 2), "9999-12-31T23:59:59.000000Z", "a broken clock");
        let same_second = UNIX_EPOCH + Duration::new(1_709_251_199, 999_999_000);
        assert_eq!(
            pushed(|out| push_timestamp(out, same_second)),
            "2024-02-29T23:59:59.999999Z"
        );
    }
}
