//! Tokens kept on disk between runs of `mintproxy token`, so a script calling it in a loop
//! mints once rather than every time (as gcloud, az and kubelogin do).
//!
//! One file per credential identity in a directory only its owner may enter (0700), each
//! file owner-only (0600) and written whole under a temporary name, then renamed into
//! place: a concurrent reader sees the old token or the new one, never half of either. A
//! file holds the token, when it was issued and expires, and its scope; never a key, an
//! assertion or a secret. A file that is damaged, someone else's, or readable by others is
//! ignored with a warning (and replaced by the next mint): the cache can only save a
//! mint, never fail one.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Scope, Token};
use crate::secret::AccessToken;

/// A cached token is handed out only while at least this much of its life is left...
const MIN_REMAINING: Duration = Duration::from_secs(5 * 60);
/// ...and at least this share of its lifetime, so the caller has time to use it.
const MIN_REMAINING_SHARE: u32 = 10;

/// A cache file larger than this is not one of ours.
const MAX_FILE_SIZE: u64 = 64 * 1024;

/// Which file a credential's token lives in: a SHA-256 over everything that decides which
/// token the issuer hands out, so two credentials never share a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key for a credential: `principal` is the key id or client id; `token_endpoint`
    /// the override, if any; `params` its token parameters (another audience is another
    /// token).
    pub fn new(
        principal: &str,
        issuer: &str,
        token_endpoint: Option<&str>,
        scopes: &[String],
        params: &[(String, String)],
    ) -> Self {
        // A JSON array keeps the parts apart: no two lists of strings serialise alike.
        let mut identity = serde_json::json!([
            "mintproxy token cache 1",
            principal,
            issuer,
            token_endpoint.unwrap_or(""),
            scopes
        ]);
        if !params.is_empty() {
            // Only then: the keys of credentials without parameters stay as they were.
            identity
                .as_array_mut()
                .expect("built as an array")
                .push(serde_json::json!(params));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, identity.to_string().as_bytes());
        Self(digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect())
    }
}

/// What a cache file holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    access_token: String,
    /// Unix seconds.
    issued_at: u64,
    /// Unix seconds.
    expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<Scope>,
}

/// The token cache directory, checked and ready.
#[derive(Debug)]
pub struct DiskCache {
    dir: PathBuf,
}

impl DiskCache {
    /// `$XDG_CACHE_HOME/mintproxy`, or `~/.cache/mintproxy`; `None` when neither variable
    /// is set to an absolute path.
    pub fn default_dir() -> Option<PathBuf> {
        let absolute = |name| {
            std::env::var_os(name)
                .map(PathBuf::from)
                .filter(|path| path.is_absolute())
        };
        absolute("XDG_CACHE_HOME")
            .or_else(|| absolute("HOME").map(|home| home.join(".cache")))
            .map(|base| base.join("mintproxy"))
    }

    /// Creates `dir` (0700) if needed and makes sure it is this user's and closed to
    /// others; `None`, with a warning, when it cannot be used.
    pub fn open(dir: PathBuf) -> Option<Self> {
        match Self::prepare(&dir) {
            Ok(()) => Some(Self { dir }),
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), "not using the token cache: {reason}");
                None
            }
        }
    }

    fn prepare(dir: &Path) -> Result<(), String> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?;
        let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(format!("it belongs to another user (uid {})", meta.uid()));
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| format!("cannot make it owner-only: {e}"))?;
        }
        Ok(())
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.json", key.0))
    }

    /// The cached token for `key` if it has enough life left at `now`, with its lifetime
    /// counted from `now`. A missing or stale entry is silently `None`; an unusable file is
    /// `None` with a warning.
    pub fn load(&self, key: &CacheKey, now: SystemTime) -> Option<Token> {
        let path = self.path(key);
        match read_entry(&path) {
            Ok(Some(entry)) => fresh(entry, now),
            Ok(None) => None,
            Err(reason) => {
                tracing::warn!(file = %path.display(), "ignoring the cached token: {reason}");
                None
            }
        }
    }

    /// Keeps `token`, issued at `issued_at`, for `key`. Tokens without an expiry (a token
    /// file's) are not kept; a failure to write is a warning, the token is still good.
    pub fn store(&self, key: &CacheKey, token: &Token, issued_at: SystemTime) {
        let Some(lifetime) = token.lifetime else {
            return;
        };
        let entry = Entry {
            access_token: token.access_token.expose().to_owned(),
            issued_at: unix_seconds(issued_at),
            expires_at: unix_seconds(issued_at + lifetime),
            scope: token.scope.clone(),
        };
        let path = self.path(key);
        if let Err(e) = write_atomically(&path, &serde_json::to_vec(&entry).expect("an entry serialises")) {
            tracing::warn!(file = %path.display(), "cannot keep the token in the cache: {e}");
        }
    }
}

/// Reads a cache file: `Ok(None)` when there is none; `Err` (why it is unusable, quoting
/// nothing from it) when it is not this user's, others may read it, or it is damaged.
fn read_entry(path: &Path) -> Result<Option<Entry>, String> {
    // O_NOFOLLOW: a symbolic link planted in place of the file is refused, not followed.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file.metadata().map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(format!("it belongs to another user (uid {})", meta.uid()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "group or others may read it (mode {:o}), so the token may have leaked",
            meta.mode() & 0o777
        ));
    }
    let mut text = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    // serde's messages can quote a value, which here may be the token: say only where.
    let entry: Entry = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "not a token cache entry (damaged at line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if entry.access_token.is_empty() || http::HeaderValue::from_str(&entry.access_token).is_err() {
        return Err("not a token cache entry (no usable access_token)".to_owned());
    }
    Ok(Some(entry))
}

/// The entry as a token whose lifetime counts from `now`, if enough of it is left.
fn fresh(entry: Entry, now: SystemTime) -> Option<Token> {
    let issued_at = UNIX_EPOCH + Duration::from_secs(entry.issued_at);
    let expires_at = UNIX_EPOCH + Duration::from_secs(entry.expires_at);
    let lifetime = expires_at.duration_since(issued_at).ok()?;
    // A clock that went back past the issue time cannot tell how much life is left.
    now.duration_since(issued_at).ok()?;
    let remaining = expires_at.duration_since(now).ok()?;
    (remaining >= MIN_REMAINING.max(lifetime / MIN_REMAINING_SHARE)).then(|| Token {
        access_token: AccessToken::new(entry.access_token),
        lifetime: Some(remaining),
        scope: entry.scope,
    })
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Writes `bytes` to a new owner-only file beside `path`, then renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut random = [0u8; 8];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| std::io::Error::other("no system randomness"))?;
    let suffix: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.{suffix}.tmp"));
    let written = (|| {
        let mut file: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(bytes)?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(issued_at: u64, expires_at: u64) -> Entry {
        Entry {
            access_token: "token".into(),
            issued_at,
            expires_at,
            scope: None,
        }
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_token_serves_while_five_minutes_and_a_tenth_of_its_life_remain() {
        let remaining = |entry, now| fresh(entry, at(now)).and_then(|token| token.lifetime);
        // 12 h token: a tenth (72 min) is the bar.
        let day = 1_000_000;
        assert_eq!(
            remaining(entry(day, day + 43_200), day),
            Some(Duration::from_secs(43_200))
        );
        assert_eq!(
            remaining(entry(day, day + 43_200), day + 43_200 - 4320),
            Some(Duration::from_secs(4320))
        );
        assert_eq!(remaining(entry(day, day + 43_200), day + 43_200 - 4319), None);
        // 20 min token: five minutes is the bar.
        assert_eq!(
            remaining(entry(day, day + 1200), day + 900),
            Some(Duration::from_secs(300))
        );
        assert_eq!(remaining(entry(day, day + 1200), day + 901), None);
        // A token shorter than five minutes is never reused; an expired one neither.
        assert_eq!(remaining(entry(day, day + 299), day), None);
        assert_eq!(remaining(entry(day, day + 43_200), day + 50_000), None);
        // Nonsense times, and a clock that went back before the issue.
        assert_eq!(remaining(entry(day, day - 1), day - 10), None);
        assert_eq!(remaining(entry(day, day + 43_200), day - 1), None);
    }

    #[test]
    fn keys_differ_by_every_part() {
        let scopes = vec!["openid".to_owned()];
        let key = CacheKey::new("key-1", "https://a.example", None, &scopes, &[]);
        assert_eq!(key.0.len(), 64);
        assert_eq!(
            key,
            CacheKey::new("key-1", "https://a.example", None, &scopes, &[])
        );
        assert_ne!(
            key,
            CacheKey::new("key-2", "https://a.example", None, &scopes, &[])
        );
        assert_ne!(
            key,
            CacheKey::new("key-1", "https://b.example", None, &scopes, &[])
        );
        assert_ne!(
            key,
            CacheKey::new(
                "key-1",
                "https://a.example",
                Some("https://a.example/t"),
                &scopes,
                &[]
            )
        );
        assert_ne!(key, CacheKey::new("key-1", "https://a.example", None, &[], &[]));
        let audience = [("audience".to_owned(), "billing".to_owned())];
        assert_ne!(
            key,
            CacheKey::new("key-1", "https://a.example", None, &scopes, &audience)
        );
        let split = ["openid".to_owned(), "profile".to_owned()];
        let joined = ["openid profile".to_owned()];
        assert_ne!(
            CacheKey::new("k", "i", None, &split, &[]),
            CacheKey::new("k", "i", None, &joined, &[])
        );
    }

    use crate::token::ScopeSource;

    #[test]
    fn stores_owner_only_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path().join("mintproxy")).unwrap();
        let key = CacheKey::new("k", "i", None, &[], &[]);
        let now = SystemTime::now();
        let token = Token {
            access_token: AccessToken::new("secret-token"),
            lifetime: Some(Duration::from_secs(3600)),
            scope: Some(Scope {
                list: "openid".into(),
                source: ScopeSource::Requested,
            }),
        };
        cache.store(&key, &token, now);
        let dir_mode = std::fs::metadata(dir.path().join("mintproxy")).unwrap().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let file_mode = std::fs::metadata(cache.path(&key)).unwrap().mode();
        assert_eq!(file_mode & 0o777, 0o600);
        let back = cache.load(&key, now).unwrap();
        assert_eq!(back.access_token.expose(), "secret-token");
        assert_eq!(back.scope, token.scope, "the list and where it came from");
        assert!(back.lifetime.unwrap() > Duration::from_secs(3598));
        // A file without expiry is not kept.
        let other = CacheKey::new("k2", "i", None, &[], &[]);
        cache.store(
            &other,
            &Token {
                lifetime: None,
                ..token
            },
            now,
        );
        assert!(!cache.path(&other).exists());
        // Only the entry is left behind: no temporary file.
        let names = std::fs::read_dir(dir.path().join("mintproxy")).unwrap().count();
        assert_eq!(names, 1);
    }

    #[test]
    fn unusable_files_are_refused_without_quoting_them() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(dir.path().to_path_buf()).unwrap();
        let key = CacheKey::new("k", "i", None, &[], &[]);
        let path = cache.path(&key);
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        assert!(read_entry(&path).unwrap().is_none(), "no file is no entry");
        write(
            r#"{"access_token":"leaky","issued_at":1,"expires_at":"soon"}"#,
            0o600,
        );
        let damaged = read_entry(&path).err().unwrap();
        assert!(damaged.starts_with("not a token cache entry"), "{damaged}");
        assert!(
            !damaged.contains("leaky") && !damaged.contains("soon"),
            "{damaged}"
        );
        write(r#"{"access_token":"a\nb","issued_at":1,"expires_at":2}"#, 0o600);
        assert!(read_entry(&path).is_err());
        write(r#"{"access_token":"ok","issued_at":1,"expires_at":2}"#, 0o640);
        assert!(read_entry(&path).err().unwrap().contains("mode 640"));
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &path).unwrap();
        assert!(read_entry(&path).err().unwrap().starts_with("cannot open it"));
    }
}
