//! ZITADEL keys expire (`expirationDate` in the key file), and ZITADEL then refuses them:
//! say so before it bites. `check` warns within [`WARN_WITHIN`] and fails past the date;
//! a running proxy warns at start and once a day while under it, and exports the date as
//! `mintproxy_credential_key_expiry_timestamp_seconds`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Credential};
use crate::metrics::Metrics;
use crate::rfc3339;
use crate::token::{KeyKind, SigningKey};

/// How early an expiry is warned about: time enough to create and roll out a new key.
pub const WARN_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often a running proxy reads its key files again (a rotated key has a new date).
const RECHECK_EVERY: Duration = Duration::from_secs(3600);

/// How often a running proxy repeats a warning about the same key.
const REMIND_EVERY: Duration = Duration::from_secs(24 * 3600);

/// How near a key is to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outlook {
    /// More than [`WARN_WITHIN`] left: this much.
    Fine(Duration),
    /// Expires within [`WARN_WITHIN`], after this long.
    Soon(Duration),
    /// Expired this long ago.
    Expired(Duration),
}

impl Outlook {
    /// The outlook at `now` of a key expiring at `expires_at`.
    pub fn at(expires_at: SystemTime, now: SystemTime) -> Self {
        match expires_at.duration_since(now) {
            Ok(left) if left.is_zero() => Self::Expired(Duration::ZERO),
            Ok(left) if left <= WARN_WITHIN => Self::Soon(left),
            Ok(left) => Self::Fine(left),
            Err(past) => Self::Expired(past.duration()),
        }
    }

    /// What a user should read about it: when, how far off, and what to do.
    fn advice(self, expires_at: SystemTime) -> String {
        let date = rfc3339::format(expires_at);
        match self {
            Self::Fine(left) => format!("key expires {date} (in {})", span(left)),
            Self::Soon(left) => format!(
                "key expires {date}, in {}: create a new key in ZITADEL and replace the \
                 file (no restart needed)",
                span(left)
            ),
            Self::Expired(ago) => format!(
                "key expired at {date}, {} ago: ZITADEL refuses it; create a new key in ZITADEL \
                 and replace the file",
                span(ago)
            ),
        }
    }
}

/// `3 days`, `5 hours`, `less than an hour`: how people count time to a deadline.
fn span(duration: Duration) -> String {
    match duration.as_secs() / 3600 {
        0 => "less than an hour".to_owned(),
        1 => "1 hour".to_owned(),
        hours @ 2..=47 => format!("{hours} hours"),
        hours => format!("{} days", hours / 24),
    }
}

/// The key file of a credential that signs with one.
fn key_file(credential: &Credential) -> Option<(&Path, KeyKind)> {
    match credential {
        Credential::JwtProfile { key_file, .. } => Some((key_file, KeyKind::ServiceAccount)),
        Credential::ClientKey { key_file, .. } => Some((key_file, KeyKind::Application)),
        Credential::ClientSecret { .. } | Credential::StaticToken { .. } => None,
    }
}

/// For `check`: a line under the credential about its key's expiry, if the key file names
/// one. Returns false when the key has expired.
pub fn report(credential: &Credential, now: SystemTime, report: &mut String) -> bool {
    let Some((path, kind)) = key_file(credential) else {
        return true;
    };
    // The configuration was validated, so the file parsed a moment ago.
    let Some(expires_at) = SigningKey::from_file(path, kind)
        .ok()
        .and_then(|key| key.expires_at)
    else {
        return true;
    };
    let outlook = Outlook::at(expires_at, now);
    let label = match outlook {
        Outlook::Fine(_) => "",
        Outlook::Soon(_) => "WARNING: ",
        Outlook::Expired(_) => "FAILED: ",
    };
    let _ = writeln!(report, "    {label}{}", outlook.advice(expires_at));
    !matches!(outlook, Outlook::Expired(_))
}

/// For a running proxy: reads each key's expiry now (before the proxy serves) and every
/// `RECHECK_EVERY` (an hour) until `stop`, sets the metric, and warns while a key is within
/// [`WARN_WITHIN`] of its end or past it: at start, then once a day, and at once when a
/// new key file brings a new date.
pub fn watch(config: &Config, metrics: Option<Arc<Metrics>>, stop: CancellationToken) {
    let keys: Vec<Watched> = config
        .credentials
        .iter()
        .filter_map(|(name, credential)| {
            let (path, kind) = key_file(credential)?;
            Some(Watched {
                credential: name.clone(),
                path: path.to_path_buf(),
                kind,
                warned: None,
            })
        })
        .collect();
    if keys.is_empty() {
        return;
    }
    let mut watcher = Watcher { keys, metrics };
    watcher.look();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RECHECK_EVERY) => watcher.look(),
            }
        }
    });
}

/// What [`watch`] keeps between looks: the keys, and where to report.
struct Watcher {
    keys: Vec<Watched>,
    metrics: Option<Arc<Metrics>>,
}

/// One credential's key file, and the last warning about it.
struct Watched {
    credential: String,
    path: PathBuf,
    kind: KeyKind,
    warned: Option<Warned>,
}

impl Watcher {
    fn look(&mut self) {
        for watched in &mut self.keys {
            // An unreadable file is the token source's to report; keep what was known.
            let Ok(key) = SigningKey::from_file(&watched.path, watched.kind) else {
                continue;
            };
            if let Some(metrics) = &self.metrics {
                metrics.key_expiry(&watched.credential, key.expires_at);
            }
            let Some(expires_at) = key.expires_at else {
                continue;
            };
            let outlook = Outlook::at(expires_at, SystemTime::now());
            let now = Instant::now();
            if !matches!(outlook, Outlook::Fine(_)) && Warned::due(watched.warned.as_ref(), expires_at, now) {
                tracing::warn!(
                    credential = %watched.credential,
                    key_file = %watched.path.display(),
                    "{}",
                    outlook.advice(expires_at)
                );
                watched.warned = Some(Warned { expires_at, at: now });
            }
        }
    }
}

/// The last warning about one credential's key.
#[derive(Debug, Clone, Copy)]
struct Warned {
    expires_at: SystemTime,
    at: Instant,
}

impl Warned {
    /// Whether to warn now about a key expiring at `expires_at`: never warned yet, a
    /// different key (date) since, or a day since the last warning.
    fn due(last: Option<&Self>, expires_at: SystemTime, now: Instant) -> bool {
        last.is_none_or(|last| last.expires_at != expires_at || now.duration_since(last.at) >= REMIND_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn thirty_days_ahead_is_a_warning_and_past_is_a_failure() {
        let now = SystemTime::UNIX_EPOCH + 20_000 * DAY;
        assert_eq!(Outlook::at(now + 31 * DAY, now), Outlook::Fine(31 * DAY));
        assert_eq!(Outlook::at(now + 30 * DAY, now), Outlook::Soon(30 * DAY));
        assert_eq!(Outlook::at(now + DAY, now), Outlook::Soon(DAY));
        assert_eq!(Outlook::at(now, now), Outlook::Expired(Duration::ZERO));
        assert_eq!(Outlook::at(now - 3 * DAY, now), Outlook::Expired(3 * DAY));
    }

    #[test]
    fn advice_says_when_and_what_to_do() {
        let now = rfc3339::parse("2026-01-01T00:00:00Z").unwrap();
        let advice = |expires_at: SystemTime| Outlook::at(expires_at, now).advice(expires_at);
        assert_eq!(
            advice(now + 400 * DAY),
            "key expires 2027-02-05T00:00:00Z (in 400 days)"
        );
        assert!(advice(now + 12 * DAY + Duration::from_secs(60))
            .starts_with("key expires 2026-01-13T00:01:00Z, in 12 days: create a new key"));
        assert!(advice(now + Duration::from_secs(7200)).contains(", in 2 hours: "));
        assert!(advice(now - 3 * DAY)
            .starts_with("key expired at 2025-12-29T00:00:00Z, 3 days ago: ZITADEL refuses it"));
    }

    #[test]
    fn a_warning_repeats_daily_and_at_once_for_a_new_date() {
        let start = Instant::now();
        let expires_at = SystemTime::UNIX_EPOCH + 20_000 * DAY;
        assert!(Warned::due(None, expires_at, start));
        let last = Warned {
            expires_at,
            at: start,
        };
        assert!(!Warned::due(
            Some(&last),
            expires_at,
            start + DAY - Duration::from_secs(1)
        ));
        assert!(Warned::due(Some(&last), expires_at, start + DAY));
        assert!(Warned::due(
            Some(&last),
            expires_at + DAY,
            start + Duration::from_secs(1)
        ));
    }
}
