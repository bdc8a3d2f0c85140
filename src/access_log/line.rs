//! One access line, byte for byte in the shapes `tracing-subscriber` gives every other log
//! line (text, coloured text on a terminal, or flattened JSON), so log readers see one
//! format. Written by hand: tracing's generic formatter, which walks the fields through
//! `dyn Debug` (and for JSON builds a map per line), cost more than everything else the
//! access log does.

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

// tracing-subscriber's colours: dimmed timestamp, target and punctuation, green INFO,
// italic field names.
const DIM: &str = "\x1b[2m";
const GREEN: &str = "\x1b[32m";
const ITALIC: &str = "\x1b[3m";
const RESET: &str = "\x1b[0m";

impl Line<'_> {
    /// Appends the line, newline included, to `out`.
    pub fn write(&self, shape: Shape, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = match shape {
            Shape::Json => self.write_json(out),
            Shape::Text | Shape::Ansi => self.write_text(shape == Shape::Ansi, out),
        };
    }

    fn write_text(&self, ansi: bool, out: &mut Vec<u8>) -> std::io::Result<()> {
        let (dim, green, italic, reset) = if ansi {
            (DIM, GREEN, ITALIC, RESET)
        } else {
            ("", "", "", "")
        };
        let at = Timestamp(self.at);
        write!(
            out,
            "{dim}{at}{reset} {green} INFO{reset} {dim}{TARGET}{reset}{dim}:{reset} "
        )?;
        let eq = if ansi { "\x1b[0m\x1b[2m=\x1b[0m" } else { "=" };
        let field = |out: &mut Vec<u8>, name: &str| write!(out, "{italic}{name}{eq}");
        field(out, "method")?;
        write!(out, "{} ", self.method)?;
        field(out, "path")?;
        write!(out, "{:?} ", self.path)?;
        field(out, "status")?;
        write!(out, "{} ", self.status)?;
        field(out, "duration_ms")?;
        write!(out, "{} ", Millis(self.duration))?;
        field(out, "route")?;
        writeln!(out, "{:?}", self.route)
    }

    fn write_json(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        write!(
            out,
            r#"{{"timestamp":"{}","level":"INFO","method":"{}","path":"#,
            Timestamp(self.at),
            self.method
        )?;
        serde_json::to_writer(&mut *out, self.path)?;
        write!(
            out,
            r#","status":{},"duration_ms":{},"route":"#,
            self.status,
            Millis(self.duration)
        )?;
        serde_json::to_writer(&mut *out, self.route)?;
        writeln!(out, r#","target":"{TARGET}"}}"#)
    }
}

/// Milliseconds with three decimals (microseconds, rounded): `0.037`, `1500.000`.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = (self.0.as_nanos() + 500) / 1000;
        write!(f, "{}.{:03}", micros / 1000, micros % 1000)
    }
}

/// RFC 3339 in UTC with microseconds, as tracing-subscriber writes it:
/// `2026-11-29T23:26:34.574846Z`.
struct Timestamp(SystemTime);

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let since_epoch = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let seconds = since_epoch.as_secs();
        let (year, month, day) = civil_date(seconds / 86_400);
        let second_of_day = seconds % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60,
            since_epoch.subsec_micros()
        )
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
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
    fn text_escapes_quotes_and_control_characters() {
        let text = written(&line("/a\"b\x1b[31m"), Shape::Text);
        assert!(text.contains(r#"path="/a\"b\u{1b}[31m""#), "{text}");
    }

    #[test]
    fn durations_round_to_microseconds() {
        let shown = |nanos| Millis(Duration::from_nanos(nanos)).to_string();
        assert_eq!(shown(0), "0.000");
        assert_eq!(shown(499), "0.000");
        assert_eq!(shown(500), "0.001");
        assert_eq!(shown(37_126), "0.037");
        assert_eq!(shown(1_234_567_890), "1234.568");
    }

    #[test]
    fn dates_follow_the_calendar() {
        let at = |seconds| Timestamp(UNIX_EPOCH + Duration::from_secs(seconds)).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59.000000Z");
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00.000000Z");
    }
}
