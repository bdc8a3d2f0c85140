//! RFC 3339 timestamps (`2026-12-31T00:00:00Z`): read in ZITADEL key files'
//! `expirationDate`, written in kubectl's `ExecCredential` and in messages.
//!
//! Two functions do not justify a date crate: the civil-calendar arithmetic is Howard
//! Hinnant's `days_from_civil` and `civil_from_days`, exact for the proleptic Gregorian
//! calendar.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reads `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (`T` and `Z` in either case).
/// The fraction is dropped; a leap second (`:60`) counts as the next second's start.
/// `None` for anything else, including dates that do not exist (`2026-02-30`).
pub fn parse(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    let digits = |at: usize, len: usize| -> Option<u32> {
        let part = bytes.get(at..at + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, digit| n * 10 + u32::from(digit - b'0')))
    };
    let separator = |at: usize, expected: &[u8]| bytes.get(at).is_some_and(|b| expected.contains(b));
    if !(separator(4, b"-")
        && separator(7, b"-")
        && separator(10, b"Tt")
        && separator(13, b":")
        && separator(16, b":"))
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19;
    if separator(at, b".") {
        at += 1;
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return None;
        }
    }
    let offset_seconds: i64 = match bytes.get(at)? {
        b'Z' | b'z' if at + 1 == bytes.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == bytes.len() && separator(at + 3, b":") => {
            let (hours, minutes) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'+' {
                offset
            } else {
                -offset
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_seconds;
    Some(from_unix(seconds))
}

/// `time` in UTC to the second: `2026-12-31T00:00:00Z`.
pub fn format(time: SystemTime) -> String {
    let seconds = to_unix(time);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Seconds since the Unix epoch, negative before it (whole seconds, rounded down).
fn to_unix(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => {
            let before = before.duration();
            let whole = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
            if before.subsec_nanos() > 0 {
                -whole - 1
            } else {
                -whole
            }
        }
    }
}

fn from_unix(seconds: i64) -> SystemTime {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

fn is_leap(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = i64::from((month + 9) % 12); // March is 0
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` after 1970-01-01: (year, month, day). Also the access log's date.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).expect("1..=12"),
        u32::try_from(day).expect("1..=31"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(text: &str) -> Option<i64> {
        parse(text).map(to_unix)
    }

    #[test]
    fn reads_what_zitadel_and_go_write() {
        assert_eq!(unix("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix("2026-12-31T00:00:00Z"), Some(1_798_675_200));
        assert_eq!(unix("2000-02-29T12:34:56Z"), Some(951_827_696));
        // Go's RFC3339Nano, lower-case separators, offsets.
        assert_eq!(unix("2026-12-31T00:00:00.123456789Z"), Some(1_798_675_200));
        assert_eq!(unix("2026-12-31t00:00:00z"), Some(1_798_675_200));
        assert_eq!(unix("2026-12-31T02:00:00+02:00"), Some(1_798_675_200));
        assert_eq!(unix("2026-12-30T22:30:00-01:30"), Some(1_798_675_200));
        assert_eq!(unix("9999-12-31T23:59:59Z"), Some(253_402_300_799));
        assert_eq!(unix("1969-12-31T23:59:59Z"), Some(-1));
        assert_eq!(unix("2016-12-31T23:59:60Z"), Some(1_483_228_800));
    }

    #[test]
    fn refuses_what_is_not_rfc_3339() {
        for text in [
            "",
            "2026-12-31",
            "2026-12-31T00:00:00",
            "2026-12-31 00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-12-31T24:00:00Z",
            "2026-12-31T00:60:00Z",
            "2026-12-31T00:00:00.Z",
            "2026-12-31T00:00:00+0200",
            "2026-12-31T00:00:00+24:00",
            "2026-12-31T00:00:00Zjunk",
            "26-12-31T00:00:00Z",
            "2026-1a-31T00:00:00Z",
            "＋026-12-31T00:00:00Z",
            "tomorrow",
        ] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn writes_utc_to_the_second() {
        assert_eq!(format(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            format(UNIX_EPOCH + Duration::from_millis(1_798_675_200_999)),
            "2026-12-31T00:00:00Z"
        );
        assert_eq!(format(from_unix(951_827_696)), "2000-02-29T12:34:56Z");
        assert_eq!(format(from_unix(-1)), "1969-12-31T23:59:59Z");
        assert_eq!(format(from_unix(253_402_300_799)), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        let first = days_from_civil(1900, 1, 1);
        for days in first..first + 146_097 {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
            let text = format(from_unix(days * 86_400 + 3723));
            assert_eq!(parse(&text).map(to_unix), Some(days * 86_400 + 3723), "{text}");
        }
    }
}
