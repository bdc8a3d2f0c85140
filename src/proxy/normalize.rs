//! Path normalization before the path rules: `/%61dmin`, `/admin;x` and `/x/..;/admin` must
//! not slip past `--deny-path /admin`, so the rules see, and the upstream gets, one canonical
//! spelling, and a path that has none is refused.
//!
//! The canonical form ([`normalize`]):
//! - escapes of unreserved characters are decoded (RFC 3986 §6.2.2.2), every other escape
//!   kept with upper-case hex digits (§6.2.2.1);
//! - a literal byte that may not stand in a path (space, `"`, `<`, `>`, `[`, `]`, `^`, `` ` ``,
//!   `{`, `|`, `}`, `?`, `#`, non-ASCII) is percent-encoded, so the result is always a valid
//!   RFC 3986 `path-absolute` and a server that decodes everything reads the same bytes as
//!   from the original;
//! - repeated slashes become one: many upstreams (nginx's `merge_slashes`, Spring, Go's
//!   `ServeMux` redirect) read `//admin` as `/admin`, which a prefix check would miss, and
//!   refusing `//` would break clients that join URLs carelessly;
//! - dot segments are removed (§5.2.4), also those spelled with escapes (`%2e%2E`); `..`
//!   above the root is refused rather than clamped.
//!
//! Refused, because servers disagree on what they mean: an encoded `/` or `\` (Go's
//! `URL.Path` has a separator where `%2F` was, other servers keep it inside a segment), a
//! `\` (some servers read it as `/`), a `;` (Java servers strip `;params` from segments),
//! NUL and other control characters, and malformed escapes.
//!
//! Pass the path only (`Uri::path`): a `?` or `#` in the input is taken as data and
//! encoded.

use std::fmt::Write as _;

/// Why a path has no unambiguous normal form. Its `Display` is a short reason that never
/// includes the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguous {
    /// The path does not start with `/` (`*`, an empty path, a relative reference).
    #[error("a path that does not start with `/`")]
    NotAbsolute,
    /// `%2F`: some upstreams decode it into a separator, others keep it inside a segment.
    #[error("an encoded `/`")]
    EncodedSlash,
    /// `\` or `%5C`: some upstreams read it as `/`.
    #[error("a backslash")]
    Backslash,
    /// `;` or `%3B`: Java servers strip `;params` from a segment before routing.
    #[error("a `;` path parameter")]
    PathParameter,
    /// NUL, literal or `%00`: C-based upstreams end the path there.
    #[error("NUL")]
    Nul,
    /// A control character other than NUL (`%01`-`%1F`, `%7F`), literal or encoded.
    #[error("a control character")]
    Control,
    /// `%` not followed by two hex digits.
    #[error("a malformed escape")]
    MalformedEscape,
    /// More `..` segments than there are segments above them.
    #[error("`..` above the root")]
    AboveRoot,
}

/// The normal form of `path`, the path component of a request target (no query), which
/// the path rules check and the upstream gets. See the module documentation for the form;
/// `normalize` of the result gives the result again.
///
/// `/%61dmin/users` gives `/admin/users`, `/x/%2e%2e/admin` gives `/admin`,
/// `/caf%c3%a9` gives `/caf%C3%A9`, `/a//b/` gives `/a/b/`; `/admin;x` and `/a%2Fb` are
/// refused.
pub fn normalize(path: &str) -> Result<String, Ambiguous> {
    let rest = path.strip_prefix('/').ok_or(Ambiguous::NotAbsolute)?;
    let mut out = String::with_capacity(path.len());
    // Whether the result ends with `/`: after an empty, `.` or `..` last segment.
    let mut trailing_slash = false;
    // Decoding never makes a `/` (`%2F` is refused), so the literal ones are the separators,
    // and in `out` every `/` starts a kept segment.
    for raw in rest.split('/') {
        let start = out.len();
        out.push('/');
        decode_segment(raw, &mut out)?;
        trailing_slash = true;
        match &out[start + 1..] {
            "" | "." => out.truncate(start),
            ".." => {
                out.truncate(start);
                let parent = out.rfind('/').ok_or(Ambiguous::AboveRoot)?;
                out.truncate(parent);
            }
            _ => trailing_slash = false,
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Appends `raw` (one segment, no `/`) to `out` in normal form: unreserved characters
/// decoded, other escapes upper-cased, bytes that may not stand in a path encoded.
fn decode_segment(raw: &str, out: &mut String) -> Result<(), Ambiguous> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = bytes.get(i + 1).copied().and_then(hex_value);
            let low = bytes.get(i + 2).copied().and_then(hex_value);
            let (Some(high), Some(low)) = (high, low) else {
                return Err(Ambiguous::MalformedEscape);
            };
            let byte = (high << 4) | low;
            match byte {
                b'/' => return Err(Ambiguous::EncodedSlash),
                _ if is_unreserved(byte) => out.push(char::from(byte)),
                _ => {
                    refuse_special(byte)?;
                    push_escape(out, byte);
                }
            }
            i += 3;
        } else {
            let byte = bytes[i];
            refuse_special(byte)?;
            if is_pchar(byte) {
                out.push(char::from(byte));
            } else {
                push_escape(out, byte);
            }
            i += 1;
        }
    }
    Ok(())
}

/// Refuses the bytes that are ambiguous in a path however they are written.
fn refuse_special(byte: u8) -> Result<(), Ambiguous> {
    match byte {
        b'\\' => Err(Ambiguous::Backslash),
        b';' => Err(Ambiguous::PathParameter),
        0 => Err(Ambiguous::Nul),
        _ if byte.is_ascii_control() => Err(Ambiguous::Control),
        _ => Ok(()),
    }
}

/// `%XX` with upper-case hex digits.
fn push_escape(out: &mut String, byte: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "%{byte:02X}");
}

/// The value of one hex digit, either case.
fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).and_then(|v| u8::try_from(v).ok())
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 §3.3 `pchar` without pct-encoded and without `;` (refused before this):
/// unreserved / sub-delims / ":" / "@".
fn is_pchar(byte: u8) -> bool {
    is_unreserved(byte)
        || matches!(
            byte,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        )
}

#[cfg(test)]
mod invariants;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case with a normal form, and that form.
    const NORMAL: &[(&str, &str)] = &[
        ("/%61dmin/users", "/admin/users"),
        ("/a/./b/../c", "/a/c"),
        ("/x/%2e%2e/admin", "/admin"),
        ("/x/.%2E/admin", "/admin"),
        ("/x/%2E./admin", "/admin"),
        ("/x/%2e/admin", "/x/admin"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/%7euser", "/~user"),
        ("/%41%5a%30%39%2D%5F%7E", "/AZ09-_~"),
        ("/a//b", "/a/b"),
        ("//a///b//", "/a/b/"),
        ("//", "/"),
        ("/", "/"),
        ("/a/", "/a/"),
        ("/a", "/a"),
        ("/a/..", "/"),
        ("/a/../", "/"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/.", "/"),
        ("/./", "/"),
        ("/a//..", "/"),
        ("/...", "/..."),
        ("/..a/a..", "/..a/a.."),
        ("/a%20b", "/a%20b"),
        ("/a%3fb%23c%25d", "/a%3Fb%23c%25d"),
        ("/a b", "/a%20b"),
        ("/café", "/caf%C3%A9"),
        ("/{x}|^`[]\"<>?#", "/%7Bx%7D%7C%5E%60%5B%5D%22%3C%3E%3F%23"),
        ("/!$&'()*+,=:@", "/!$&'()*+,=:@"),
        ("/management/v1/users/123", "/management/v1/users/123"),
    ];

    #[test]
    fn normal_forms() {
        for &(path, expected) in NORMAL {
            assert_eq!(normalize(path).as_deref(), Ok(expected), "{path:?}");
        }
    }

    /// Found by the fuzz target: literal non-ASCII and other bytes that may not stand in a
    /// path are encoded, as the reference does it too.
    #[test]
    fn literal_bytes_outside_a_path_keep_the_invariants() {
        for path in [
            "/%2A\u{FFFD}\u{FFFD}/~us\u{FFFD}",
            "/caf\u{e9} au lait",
            "/a\"b<c>{d}|^`",
        ] {
            super::invariants::check(path);
        }
    }

    #[test]
    fn normal_forms_are_their_own_normal_form() {
        for &(path, _) in NORMAL {
            let once = normalize(path).unwrap();
            assert_eq!(normalize(&once), Ok(once.clone()), "{path:?}");
        }
    }

    #[test]
    fn refusals() {
        use Ambiguous::*;
        let cases: &[(&str, Ambiguous)] = &[
            // The bypasses from "Harden the request path".
            ("/admin;x/users", PathParameter),
            ("/x/..;/admin", PathParameter),
            ("/admin%3bx", PathParameter),
            ("/admin%3B", PathParameter),
            ("/%2e%2e/admin", AboveRoot),
            ("/..", AboveRoot),
            ("/a/../..", AboveRoot),
            ("/a/../../b", AboveRoot),
            ("/a%2fb", EncodedSlash),
            ("/a%2Fb", EncodedSlash),
            ("/a%5Cb", Backslash),
            ("/a%5cb", Backslash),
            ("/a\\b", Backslash),
            ("/%00", Nul),
            ("/a\0", Nul),
            ("/%01", Control),
            ("/%1f", Control),
            ("/%7F", Control),
            ("/a\tb", Control),
            ("/a\x7f", Control),
            ("/%", MalformedEscape),
            ("/%4", MalformedEscape),
            ("/%zz", MalformedEscape),
            ("/%4z", MalformedEscape),
            ("/%z4", MalformedEscape),
            ("/a%/b", MalformedEscape),
            ("/%%41", MalformedEscape),
            ("/%+1", MalformedEscape),
            ("", NotAbsolute),
            ("*", NotAbsolute),
            ("admin", NotAbsolute),
            ("%2Fadmin", NotAbsolute),
        ];
        for &(path, reason) in cases {
            assert_eq!(normalize(path), Err(reason), "{path:?}");
        }
    }

    #[test]
    fn reasons_read_as_the_issue_names_them() {
        assert_eq!(Ambiguous::EncodedSlash.to_string(), "an encoded `/`");
        assert_eq!(Ambiguous::PathParameter.to_string(), "a `;` path parameter");
        assert_eq!(Ambiguous::Nul.to_string(), "NUL");
        assert_eq!(Ambiguous::MalformedEscape.to_string(), "a malformed escape");
        assert_eq!(Ambiguous::AboveRoot.to_string(), "`..` above the root");
        assert_eq!(Ambiguous::Backslash.to_string(), "a backslash");
        assert_eq!(Ambiguous::Control.to_string(), "a control character");
    }

    /// Inputs over the alphabet that reaches every branch: every path of up to 5 characters
    /// after the `/`, then 200,000 pseudo-random ones of 6 to 12.
    #[test]
    fn generated_paths_keep_the_invariants() {
        const ALPHABET: &[u8] = b"/.%2eEfF5c;a\\0~";
        let mut path = Vec::new();
        let mut checked = 0u32;
        for len in 0..=5u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                path.clear();
                path.push(b'/');
                for _ in 0..len {
                    path.push(ALPHABET[n % ALPHABET.len()]);
                    n /= ALPHABET.len();
                }
                super::invariants::check(std::str::from_utf8(&path).unwrap());
                checked += 1;
            }
        }
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            // Knuth's MMIX LCG; the high bits are the random ones.
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(state >> 33).unwrap()
        };
        for _ in 0..200_000 {
            path.clear();
            path.push(b'/');
            let len = 6 + next() % 7;
            for _ in 0..len {
                path.push(ALPHABET[next() % ALPHABET.len()]);
            }
            super::invariants::check(std::str::from_utf8(&path).unwrap());
            checked += 1;
        }
        assert!(checked > 1_000_000);
    }
}
