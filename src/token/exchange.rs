//! RFC 8693 token exchange: a caller's own access token (the subject) traded for one meant
//! for the upstream, the proxy authenticated as a client; and the cache that keeps each
//! result until it expires.
//!
//! The cache is keyed by the SHA-256 of the subject token, never the token itself, holds
//! at most [`MAX_ENTRIES`], and shares one exchange among concurrent requests with the same
//! subject token (single flight). Refusals are not cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use http::{header, HeaderMap};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::cache::CachedToken;
use super::client_credentials::ClientAuth;
use super::{Endpoint, Token, TokenError};
use crate::secret::AccessToken;

/// The grant type of RFC 8693 §2.1.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// `subject_token_type` of an access token (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The most subject tokens whose exchanged tokens are kept per route.
pub const MAX_ENTRIES: usize = 4096;

/// The longest provider `error` or `error_description` passed on to a caller.
const MAX_PROVIDER_TEXT: usize = 200;

/// A caller's bearer token, and the hash it is cached under. No `Debug` of the token.
pub struct Subject {
    token: AccessToken,
    key: [u8; 32],
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subject([redacted])")
    }
}

impl Subject {
    /// The token of the request's one `Authorization: Bearer <token>` field; `None` when
    /// there is none, it is of another scheme, or there are several.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut fields = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (fields.next(), fields.next()) else {
            return None;
        };
        let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
        let token = token.trim_start_matches(' ');
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
            return None;
        }
        Some(Self::new(token))
    }

    fn new(token: &str) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        Self {
            token: AccessToken::new(token),
            key,
        }
    }
}

/// The grant: trades subject tokens at an endpoint, authenticated as a client.
#[derive(Debug)]
pub struct Exchanger {
    client: ClientAuth,
    endpoint: Endpoint,
    audience: Option<String>,
    scope: Option<String>,
}

impl Exchanger {
    /// Exchanges at `endpoint` as `client`, asking for `audience` and `scopes` when given.
    pub fn new(client: ClientAuth, endpoint: Endpoint, audience: Option<String>, scopes: &[String]) -> Self {
        Self {
            client,
            endpoint,
            audience,
            scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
        }
    }

    /// One exchange. A refusal quoting the subject token has it cut out.
    pub async fn exchange(&self, subject: &Subject) -> Result<Token, TokenError> {
        let mut grant = vec![
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", subject.token.expose()),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ];
        if let Some(audience) = &self.audience {
            grant.push(("audience", audience));
        }
        if let Some(scope) = &self.scope {
            grant.push(("scope", scope));
        }
        let outcome = self.client.request(&self.endpoint, &grant).await;
        outcome.map_err(|error| sanitise(error, subject.token.expose()))
    }
}

/// The provider's words, fit to pass on: the subject token cut out, control characters
/// replaced, the length bounded.
fn sanitise(error: TokenError, subject: &str) -> TokenError {
    let clean = |text: String| {
        let text = text.replace(subject, "[subject token]");
        let mut text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if let Some((end, _)) = text.char_indices().nth(MAX_PROVIDER_TEXT) {
            text.truncate(end);
            text.push('…');
        }
        text
    };
    match error {
        TokenError::Rejected {
            url,
            status,
            error,
            description,
        } => TokenError::Rejected {
            url,
            status,
            error: clean(error),
            description: description.map(clean),
        },
        TokenError::KeyExpired {
            path,
            expired_at,
            refusal,
        } => TokenError::KeyExpired {
            path,
            expired_at,
            refusal: Box::new(sanitise(*refusal, subject)),
        },
        other => other,
    }
}

/// What became of one request's exchange, for metrics.
#[derive(Debug, Clone, Copy)]
pub enum ExchangeOutcome<'a> {
    /// A cached token, or one another request's exchange obtained just now.
    Cached,
    /// A new exchange succeeded.
    Exchanged,
    /// The exchange failed.
    Failed(&'a TokenError),
}

/// Told of every exchange by route: how metrics count them without the cache knowing of
/// Prometheus.
pub trait ExchangeObserver: Send + Sync + 'static {
    /// A request of `route` got (or did not get) its exchanged token.
    fn exchanged(&self, route: &str, outcome: ExchangeOutcome<'_>);
}

/// One subject's exchanged token, filled once by whichever request gets there first.
type Slot = Arc<OnceCell<Arc<CachedToken>>>;

/// The exchanged tokens of one route, by subject token hash.
pub struct ExchangeCache {
    route: String,
    exchanger: Exchanger,
    slots: Mutex<HashMap<[u8; 32], Slot>>,
    observer: Option<Arc<dyn ExchangeObserver>>,
}

impl std::fmt::Debug for ExchangeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeCache")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ExchangeCache {
    /// An empty cache for `route`'s exchanges, told to `observer` when given.
    pub fn new(
        route: impl Into<String>,
        exchanger: Exchanger,
        observer: Option<Arc<dyn ExchangeObserver>>,
    ) -> Self {
        Self {
            route: route.into(),
            exchanger,
            slots: Mutex::default(),
            observer,
        }
    }

    /// The exchanged token for `subject`: cached while usable (the same refresh margin as
    /// minted tokens), otherwise exchanged, once for all concurrent requests with it.
    pub async fn token(&self, subject: &Subject) -> Result<Arc<CachedToken>, TokenError> {
        let slot = self.slot(&subject.key);
        let mut exchanged = false;
        let outcome = slot
            .get_or_try_init(|| {
                exchanged = true;
                self.exchange(subject)
            })
            .await
            .cloned();
        let told = match &outcome {
            Ok(_) if exchanged => ExchangeOutcome::Exchanged,
            Ok(_) => ExchangeOutcome::Cached,
            Err(error) => {
                self.forget(&subject.key, |held| {
                    Arc::ptr_eq(held, &slot) && held.get().is_none()
                });
                ExchangeOutcome::Failed(error)
            }
        };
        if let Some(observer) = &self.observer {
            observer.exchanged(&self.route, told);
        }
        outcome
    }

    /// Drops `used` because the upstream refused it, so the next request exchanges anew.
    pub fn reject(&self, subject: &Subject, used: &Arc<CachedToken>) {
        self.forget(&subject.key, |held| {
            held.get().is_some_and(|t| Arc::ptr_eq(t, used))
        });
    }

    async fn exchange(&self, subject: &Subject) -> Result<Arc<CachedToken>, TokenError> {
        let (requested_at, requested_at_wall) = (Instant::now(), SystemTime::now());
        let token = self.exchanger.exchange(subject).await?;
        tracing::debug!(
            route = %self.route,
            expires_in_s = token.lifetime.map(|l| l.as_secs()),
            "exchanged a caller's token"
        );
        CachedToken::new(token, requested_at, requested_at_wall)
            .map(Arc::new)
            .ok_or(TokenError::NotAHeader)
    }

    /// The slot for `key`: the one held while its token is usable or its exchange under
    /// way, else a new one (making room first when the cache is full).
    fn slot(&self, key: &[u8; 32]) -> Slot {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(key) {
            if slot.get().is_none_or(|token| token.is_usable()) {
                return slot.clone();
            }
        }
        if slots.len() >= MAX_ENTRIES && !slots.contains_key(key) {
            make_room(&mut slots);
        }
        let slot = Slot::default();
        slots.insert(*key, slot.clone());
        slot
    }

    fn forget(&self, key: &[u8; 32], held: impl FnOnce(&Slot) -> bool) {
        let mut slots = lock(&self.slots);
        if slots.get(key).is_some_and(held) {
            slots.remove(key);
        }
    }
}

/// Drops the expired tokens; if none had expired, the one that expires soonest (or, with
/// every exchange still under way, any one: its waiters keep their slot).
fn make_room(slots: &mut HashMap<[u8; 32], Slot>) {
    slots.retain(|_, slot| slot.get().is_none_or(|token| token.is_usable()));
    if slots.len() < MAX_ENTRIES {
        return;
    }
    let soonest = slots
        .iter()
        .filter_map(|(key, slot)| Some((slot.get()?.usable_until()?, *key)))
        .min_by_key(|(until, _)| *until)
        .map(|(_, key)| key)
        .or_else(|| slots.keys().next().copied());
    if let Some(key) = soonest {
        slots.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn subject(values: &[&str]) -> Option<Subject> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        Subject::from_headers(&headers)
    }

    #[test]
    fn takes_one_bearer_token_only() {
        assert_eq!(subject(&["Bearer abc"]).unwrap().token.expose(), "abc");
        assert_eq!(subject(&["bearer  abc"]).unwrap().token.expose(), "abc");
        for refused in [
            &[][..],
            &["Basic YTpi"],
            &["Bearer"],
            &["Bearer "],
            &["Bearer a b"],
            &["Bearer a", "Bearer b"],
        ] {
            assert!(subject(refused).is_none(), "{refused:?}");
        }
        let key = subject(&["Bearer abc"]).unwrap().key;
        assert_eq!(key, subject(&["Bearer  abc"]).unwrap().key);
        assert_ne!(key, subject(&["Bearer abd"]).unwrap().key);
        assert_eq!(
            format!("{:?}", subject(&["Bearer abc"]).unwrap()),
            "Subject([redacted])"
        );
    }

    #[test]
    fn a_refusal_never_quotes_the_subject_token() {
        let refusal = TokenError::Rejected {
            url: "http://issuer/oauth/v2/token".into(),
            status: 400,
            error: "invalid_grant".into(),
            description: Some(format!("token s3cr3t-subject\nis unknown{}", "x".repeat(300))),
        };
        let sanitised = sanitise(refusal, "s3cr3t-subject");
        let (error, description) = sanitised.provider_error().unwrap();
        assert_eq!(error, "invalid_grant");
        let description = description.unwrap();
        assert!(
            description.starts_with("token [subject token] is unknown"),
            "{description}"
        );
        assert!(!description.contains("s3cr3t"));
        assert_eq!(description.chars().count(), MAX_PROVIDER_TEXT + 1);
    }

    fn token(lifetime: Duration) -> Arc<CachedToken> {
        let token = Token {
            access_token: AccessToken::new("t"),
            lifetime: Some(lifetime),
            scope: None,
        };
        Arc::new(CachedToken::new(token, Instant::now(), SystemTime::now()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_cache_drops_expired_tokens_then_the_one_expiring_soonest() {
        let filled = |lifetime: Duration| {
            let slot = Slot::default();
            slot.set(token(lifetime)).unwrap();
            slot
        };
        let mut slots: HashMap<[u8; 32], Slot> = HashMap::new();
        for n in 0..MAX_ENTRIES {
            let key = Subject::new(&n.to_string()).key;
            let lifetime = Duration::from_secs(3600 + n as u64);
            slots.insert(key, filled(lifetime));
        }
        let soonest = Subject::new("0").key;
        make_room(&mut slots);
        assert_eq!(slots.len(), MAX_ENTRIES - 1);
        assert!(!slots.contains_key(&soonest), "the one expiring soonest went");

        let expired = Subject::new("1").key;
        slots.insert(expired, filled(Duration::from_millis(1)));
        slots.insert(Subject::new("in flight").key, Slot::default());
        tokio::time::advance(Duration::from_millis(5)).await;
        make_room(&mut slots);
        assert!(!slots.contains_key(&expired), "an expired token goes first");
        assert!(slots.contains_key(&Subject::new("in flight").key));
        assert_eq!(slots.len(), MAX_ENTRIES - 1);
    }
}
