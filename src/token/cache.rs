//! One valid token per credential: a background refresher mints and publishes, requests
//! only read.
//!
//! The request path loads the current token from an [`ArcSwapOption`]: no lock, no
//! allocation. Only when no valid token exists does a request touch the status channel,
//! and then it either waits for the one fetch in flight (single flight) or fails at once
//! with the last error, never hanging while the refresher backs off.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Token, TokenError, TokenSource};
use crate::metrics::Metrics;

/// When to refresh and how to retry.
#[derive(Debug, Clone)]
pub struct RefreshPolicy {
    /// Refresh after this share of the lifetime, give or take [`RefreshPolicy::jitter`].
    pub refresh_at: f64,
    /// Spread of the refresh point, as a share of the lifetime.
    pub jitter: f64,
    /// First retry delay after a failed fetch; doubles with each failure.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// How long a request waits for the fetch in flight before answering 503.
    pub max_wait: Duration,
    /// At most one token is dropped for an upstream's 401 in this interval, so an upstream
    /// that refuses every token (a wrong audience, say) cannot make the proxy hammer the
    /// token endpoint.
    pub min_reject_interval: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_at: 0.8,
            jitter: 0.05,
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(10),
            max_wait: super::endpoint::REQUEST_TIMEOUT * 2,
            min_reject_interval: Duration::from_secs(10),
        }
    }
}

impl RefreshPolicy {
    fn refresh_in(&self, lifetime: Duration) -> Duration {
        let share = self.refresh_at + self.jitter * (2.0 * random_unit() - 1.0);
        lifetime.mul_f64(share.clamp(0.1, 0.95))
    }

    /// Exponential backoff with "equal jitter": between half and all of the capped delay.
    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .backoff_base
            .saturating_mul(1 << failures.saturating_sub(1).min(16));
        let delay = exp.min(self.backoff_cap);
        delay.mul_f64(0.5 + 0.5 * random_unit())
    }
}

/// A token as the request path uses it.
#[derive(Debug)]
pub struct CachedToken {
    header: HeaderValue,
    /// `None`: no expiry known (a token file).
    usable_until: Option<Instant>,
    /// When the issuer says the token expires (for display and metrics), if it said.
    pub expires_at: Option<SystemTime>,
    /// The scopes the issuer granted, when it said.
    pub scope: Option<String>,
}

impl CachedToken {
    /// `None` when the token cannot be carried in a header.
    fn new(token: Token, requested_at: Instant, requested_at_wall: SystemTime) -> Option<Self> {
        let mut header = HeaderValue::try_from(format!("Bearer {}", token.access_token.expose())).ok()?;
        header.set_sensitive(true);
        // Stop using a token slightly before it expires so it does not die in flight.
        let margin = |lifetime: Duration| (lifetime / 20).min(Duration::from_secs(30));
        Some(Self {
            header,
            usable_until: token.lifetime.map(|l| requested_at + l - margin(l)),
            expires_at: token.lifetime.map(|l| requested_at_wall + l),
            scope: token.scope,
        })
    }

    /// The `Authorization` value, marked sensitive.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    fn is_usable(&self) -> bool {
        self.usable_until.is_none_or(|until| Instant::now() < until)
    }
}

/// What the refresher last did, for requests that find no valid token.
#[derive(Debug, Clone)]
enum Status {
    /// A fetch is under way and has not failed yet: wait for it.
    Fetching,
    /// The last fetch succeeded.
    Ready,
    /// The last fetch failed; the refresher is backing off.
    Failed(Arc<TokenError>),
}

/// Why a request has no token to send.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoToken {
    /// The last fetch failed and no valid token is left.
    #[error("no valid token: {0}")]
    Failed(Arc<TokenError>),
    /// The fetch in flight took longer than a request may wait.
    #[error("no valid token yet: the token endpoint has not answered within {0:?}")]
    Timeout(Duration),
    /// The cache is shut down.
    #[error("no valid token: the token refresher has stopped")]
    Stopped,
}

impl NoToken {
    /// The token endpoint's error, when there is one.
    pub fn cause(&self) -> Option<&TokenError> {
        match self {
            Self::Failed(error) => Some(error),
            _ => None,
        }
    }
}

struct Shared {
    name: String,
    current: ArcSwapOption<CachedToken>,
    status: watch::Sender<Status>,
    wake: Notify,
    policy: RefreshPolicy,
    last_reject: std::sync::Mutex<Option<Instant>>,
    metrics: Option<Arc<Metrics>>,
}

/// A cached, self-refreshing token for one credential. Cheap to clone.
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// Starts the refresher for `source`; it stops when `stop` is cancelled.
    ///
    /// The first fetch starts at once, so the token is usually there before the first
    /// request.
    pub fn spawn(
        name: impl Into<String>,
        source: impl TokenSource,
        policy: RefreshPolicy,
        stop: CancellationToken,
    ) -> Self {
        Self::spawn_with_metrics(name, source, policy, stop, None)
    }

    /// Like [`TokenCache::spawn`], and counts every fetch and records each token's expiry
    /// in `metrics` (under the credential `name`), when given.
    pub fn spawn_with_metrics(
        name: impl Into<String>,
        source: impl TokenSource,
        policy: RefreshPolicy,
        stop: CancellationToken,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let shared = Arc::new(Shared {
            name: name.into(),
            current: ArcSwapOption::empty(),
            status: watch::Sender::new(Status::Fetching),
            wake: Notify::new(),
            policy,
            last_reject: std::sync::Mutex::new(None),
            metrics,
        });
        tokio::spawn(refresh_loop(shared.clone(), source, stop));
        Self { shared }
    }

    /// The credential's name, as given to [`TokenCache::spawn`].
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The error of the last fetch, when it failed (the refresher is backing off); `None`
    /// while the last fetch succeeded or the first one is under way.
    pub fn last_error(&self) -> Option<Arc<TokenError>> {
        match &*self.shared.status.borrow() {
            Status::Failed(error) => Some(error.clone()),
            Status::Fetching | Status::Ready => None,
        }
    }

    /// The current token if it is valid; otherwise waits for the fetch in flight, or
    /// fails at once when the last fetch failed.
    pub async fn token(&self) -> Result<Arc<CachedToken>, NoToken> {
        if let Some(token) = self.valid() {
            return Ok(token);
        }
        self.wait_for_token().await
    }

    /// The current token, if it is still valid. Never waits.
    pub fn valid(&self) -> Option<Arc<CachedToken>> {
        self.shared.current.load_full().filter(|t| t.is_usable())
    }

    #[cold]
    async fn wait_for_token(&self) -> Result<Arc<CachedToken>, NoToken> {
        let deadline = Instant::now() + self.shared.policy.max_wait;
        let mut status = self.shared.status.subscribe();
        loop {
            // Subscribed before looking, so a publish between the two is not missed.
            if let Some(token) = self.valid() {
                return Ok(token);
            }
            match &*status.borrow_and_update() {
                Status::Failed(error) => return Err(NoToken::Failed(error.clone())),
                Status::Fetching => {}
                // Published but already unusable (the process slept, say): ask for another.
                Status::Ready => self.shared.wake.notify_one(),
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(NoToken::Stopped),
                Err(_) => return Err(NoToken::Timeout(self.shared.policy.max_wait)),
            }
        }
    }

    /// Drops `used` because the upstream refused it, and has a new one minted. A token
    /// already replaced by a newer one is left alone, so a burst of 401s mints once; and
    /// at most one token is dropped per [`RefreshPolicy::min_reject_interval`].
    pub fn reject(&self, used: &Arc<CachedToken>) {
        let current = self.shared.current.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
            {
                let mut last = self.shared.last_reject.lock().unwrap_or_else(|p| p.into_inner());
                if last.is_some_and(|at| at.elapsed() < self.shared.policy.min_reject_interval) {
                    tracing::warn!(
                        credential = %self.shared.name,
                        "upstream refused a fresh token too; keeping it (check the scopes and audience)"
                    );
                    return;
                }
                *last = Some(Instant::now());
            }
            let previous = self.shared.current.compare_and_swap(&*current, None);
            if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, used)) {
                tracing::info!(credential = %self.shared.name, "upstream refused the token; minting a new one");
                self.shared.status.send_replace(Status::Fetching);
                self.shared.wake.notify_one();
            }
        }
    }
}

async fn refresh_loop(shared: Arc<Shared>, source: impl TokenSource, stop: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let requested_at = Instant::now();
        let requested_at_wall = SystemTime::now();
        let outcome = tokio::select! {
            outcome = source.fetch() => outcome,
            () = stop.cancelled() => return,
        };
        let outcome = outcome.and_then(|token| {
            let lifetime = token.lifetime;
            CachedToken::new(token, requested_at, requested_at_wall)
                .map(|cached| (cached, lifetime))
                .ok_or(TokenError::NotAHeader)
        });
        let wait = match outcome {
            Ok((token, lifetime)) => {
                failures = 0;
                let token = Arc::new(token);
                tracing::info!(
                    credential = %shared.name,
                    expires_in_s = lifetime.map(|l| l.as_secs()),
                    scope = token.scope.as_deref().unwrap_or(""),
                    "minted a new token"
                );
                if let Some(metrics) = &shared.metrics {
                    metrics.token_minted(&shared.name, token.expires_at);
                }
                shared.current.store(Some(token));
                shared.status.send_replace(Status::Ready);
                lifetime.map(|l| shared.policy.refresh_in(l))
            }
            Err(error) => {
                failures += 1;
                let retry_in = shared.policy.backoff(failures);
                let still_valid = shared.current.load().as_ref().is_some_and(|t| t.is_usable());
                tracing::warn!(
                    credential = %shared.name,
                    error = %error,
                    diagnosis = error.diagnosis().unwrap_or(""),
                    still_serving_previous_token = still_valid,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "token fetch failed"
                );
                if let Some(metrics) = &shared.metrics {
                    metrics.token_failed(&shared.name, &error);
                }
                shared.status.send_replace(Status::Failed(Arc::new(error)));
                Some(retry_in)
            }
        };
        // A token without expiry is fetched again only on a change, a 401 or a wake-up.
        let timer = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = timer => {}
            () = shared.wake.notified() => {}
            () = source.changed() => tracing::info!(credential = %shared.name, "credential file changed; fetching anew"),
            () = stop.cancelled() => return,
        }
    }
}

/// A uniform sample in `[0, 1)` for jitter, from the system's secure generator.
fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    // The generator only fails when the OS has no entropy source at all; no jitter then.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::fake::{cache, Counting};
    use std::sync::atomic::Ordering;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_401s_mints_once() {
        let source = Arc::new(Counting::living(Duration::from_secs(10)));
        let cache = cache(&source);
        let first = cache.token().await.unwrap();
        for _ in 0..10 {
            cache.reject(&first);
        }
        let second = cache.token().await.unwrap();
        assert_eq!(second.header(), "Bearer token-2");
        cache.reject(&first); // already replaced: ignored
        assert_eq!(cache.token().await.unwrap().header(), "Bearer token-2");
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);

        // The upstream refuses the fresh token too: kept, no minting loop.
        cache.reject(&second);
        assert_eq!(cache.token().await.unwrap().header(), "Bearer token-2");
        // Later, a refusal drops the token again.
        tokio::time::sleep(Duration::from_secs(11)).await;
        let refused = cache.token().await.unwrap();
        let before = source.fetches.load(Ordering::SeqCst);
        cache.reject(&refused);
        assert_ne!(cache.token().await.unwrap().header(), refused.header());
        assert_eq!(source.fetches.load(Ordering::SeqCst), before + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_token_is_never_handed_out() {
        let source = Arc::new(Counting::living(Duration::from_secs(10)));
        let cache = cache(&source);
        assert_eq!(cache.token().await.unwrap().header(), "Bearer token-1");
        source.failing.store(true, Ordering::SeqCst);
        // Refresh attempts fail from ~8 s on; the token is usable until 9.5 s.
        tokio::time::sleep(Duration::from_millis(9400)).await;
        assert!(cache.valid().is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(cache.valid().is_none());
        assert!(matches!(cache.token().await, Err(NoToken::Failed(_))));
        // Recovery: the next retry succeeds within the capped backoff.
        source.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(cache
            .token()
            .await
            .unwrap()
            .header()
            .to_str()
            .unwrap()
            .starts_with("Bearer token-"));
    }

    #[test]
    fn refresh_lands_around_eighty_percent() {
        let policy = RefreshPolicy::default();
        for _ in 0..100 {
            let at = policy.refresh_in(Duration::from_secs(1000)).as_secs_f64();
            assert!((750.0..=850.0).contains(&at), "{at}");
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RefreshPolicy::default();
        for failures in 1..40 {
            let full = (policy.backoff_base * 2u32.pow((failures - 1).min(16))).min(policy.backoff_cap);
            let delay = policy.backoff(failures);
            assert!(
                delay >= full / 2 && delay <= full,
                "{failures}: {delay:?} vs {full:?}"
            );
        }
        assert!(policy.backoff(100) <= Duration::from_secs(10));
    }
}
