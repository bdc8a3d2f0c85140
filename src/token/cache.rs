//! One valid token per credential: a background refresher mints and publishes, requests
//! only read.
//!
//! The request path loads the current token from an [`ArcSwapOption`]: no lock, no
//! allocation. Only when no valid token exists does a request touch the status channel,
//! and then it either waits for the one fetch in flight (single flight) or fails at once
//! with the last error, never hanging while the refresher backs off. Such a failing
//! request also has the refresher try again at once (at most every
//! [`RefreshPolicy::demand_interval`]), so service returns soon after the issuer does,
//! however long the backoff has grown.
//!
//! An upstream's 401 for the current token has it replaced at once (single flight), the
//! mints paced by a small token bucket so a refusing upstream cannot make the proxy
//! hammer the issuer.
//!
//! The refresher runs under a supervisor that restarts it should it ever die (a panic in a
//! token source): a dead refresher would leave the credential without tokens for good.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Token, TokenError, TokenSource};

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
    /// While the last fetch failed and no valid token is left, a request (answered 503 at
    /// once) has the refresher try again at once rather than after its backoff, at most
    /// once per this interval: service then returns within about this long of the
    /// issuer's, while the issuer sees at most one such retry per interval.
    pub demand_interval: Duration,
    /// How many tokens may be minted in a row for upstream 401s (each 401 for the current
    /// token mints one, so a revocation never reaches clients). Treated as at least 1.
    pub reject_burst: u32,
    /// Once [`RefreshPolicy::reject_burst`] is spent, one more mint for a 401 is allowed
    /// per this interval; a mint over the limit waits (and the requests with it) instead of
    /// being dropped. This keeps an upstream that refuses every token (a wrong audience,
    /// say) from making the proxy hammer the token endpoint.
    pub reject_refill: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_at: 0.8,
            jitter: 0.05,
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(10),
            max_wait: super::endpoint::REQUEST_TIMEOUT * 2,
            demand_interval: Duration::from_millis(250),
            reject_burst: 5,
            reject_refill: Duration::from_secs(2),
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

/// The token bucket that paces mints for upstream 401s ([`RefreshPolicy::reject_burst`]
/// and [`RefreshPolicy::reject_refill`]), kept as the instant it will be full again.
#[derive(Debug)]
struct RejectBudget {
    full_at: Instant,
}

impl RejectBudget {
    /// Spends one mint; returns when it may happen: now, or once the bucket has refilled.
    fn take(&mut self, policy: &RefreshPolicy, now: Instant) -> Instant {
        let start = self.full_at.max(now);
        self.full_at = start + policy.reject_refill;
        // The refill time earlier mints still owe, beyond what the burst allows.
        let owed = start - now;
        let burst = policy
            .reject_refill
            .saturating_mul(policy.reject_burst.saturating_sub(1));
        now + owed.saturating_sub(burst)
    }
}

/// A token as the request path uses it.
#[derive(Debug)]
pub struct CachedToken {
    header: HeaderValue,
    /// `None`: no expiry known (a token file), or one too far off to represent.
    usable_until: Option<Instant>,
    /// When the issuer says the token expires (for display and metrics), if it said.
    pub expires_at: Option<SystemTime>,
    /// The token's scopes, when known.
    pub scope: Option<super::Scope>,
}

impl CachedToken {
    /// `None` when the token cannot be carried in a header. Never panics on a huge
    /// lifetime: a source's `expires_in` is not to be trusted with the process.
    pub(crate) fn new(token: Token, requested_at: Instant, requested_at_wall: SystemTime) -> Option<Self> {
        let mut header = HeaderValue::try_from(format!("Bearer {}", token.access_token.expose())).ok()?;
        header.set_sensitive(true);
        // Stop using a token slightly before it expires so it does not die in flight.
        let margin = |lifetime: Duration| (lifetime / 20).min(Duration::from_secs(30));
        Some(Self {
            header,
            usable_until: token
                .lifetime
                .and_then(|l| requested_at.checked_add(l - margin(l))),
            expires_at: token.lifetime.and_then(|l| requested_at_wall.checked_add(l)),
            scope: token.scope,
        })
    }

    /// The `Authorization` value, marked sensitive.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    /// Whether the token is still good to send (its refresh margin not yet reached).
    pub(crate) fn is_usable(&self) -> bool {
        self.usable_until.is_none_or(|until| Instant::now() < until)
    }

    /// Until when the token is sent; `None`: no expiry known.
    pub(crate) fn usable_until(&self) -> Option<Instant> {
        self.usable_until
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
    /// The refresher died and is about to be restarted.
    Crashed,
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
    /// The token refresher failed unexpectedly (a bug) and is being restarted.
    #[error("no valid token: the token refresher failed unexpectedly and is restarting")]
    Restarting,
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
    /// Has the refresher look again whether a fetch is needed now.
    wake: Notify,
    /// Set with a wake-up for an upstream's 401, so the mint is paced by `rejects`.
    rejected: AtomicBool,
    rejects: Mutex<RejectBudget>,
    /// When a request last had the refresher retry at once.
    last_demand: Mutex<Option<Instant>>,
    /// A token has been published once: a fetch in flight then replaces a refused one.
    held: AtomicBool,
    restarts: AtomicU64,
    policy: RefreshPolicy,
    observer: Option<Arc<dyn CacheObserver>>,
}

/// Told of every fetch's outcome, per credential: how metrics count fetches and expiry
/// without the cache depending on them.
pub trait CacheObserver: Send + Sync + 'static {
    /// A token was minted for `credential`, expiring at `expires_at` (`None`: it does not
    /// expire by time).
    fn minted(&self, credential: &str, expires_at: Option<SystemTime>);
    /// A fetch for `credential` failed with `error`.
    fn failed(&self, credential: &str, error: &TokenError);
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
        Self::spawn_observed(name, source, policy, stop, None)
    }

    /// Like [`TokenCache::spawn`], and tells `observer` (the metrics, say) of every
    /// fetch's outcome, when given.
    pub fn spawn_observed(
        name: impl Into<String>,
        source: impl TokenSource,
        policy: RefreshPolicy,
        stop: CancellationToken,
        observer: Option<Arc<dyn CacheObserver>>,
    ) -> Self {
        let shared = Arc::new(Shared {
            name: name.into(),
            current: ArcSwapOption::empty(),
            status: watch::Sender::new(Status::Fetching),
            wake: Notify::new(),
            rejected: AtomicBool::new(false),
            rejects: Mutex::new(RejectBudget {
                full_at: Instant::now(),
            }),
            last_demand: Mutex::new(None),
            held: AtomicBool::new(false),
            restarts: AtomicU64::new(0),
            policy,
            observer,
        });
        tokio::spawn(supervise(shared.clone(), Arc::new(source), stop));
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
            Status::Fetching | Status::Ready | Status::Crashed => None,
        }
    }

    /// How often the refresher died unexpectedly and was restarted: not 0 means a bug.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    /// Whether a request arriving now would get a token rather than a 503 for want of
    /// one, for readiness: a valid token is held, or a new one is being fetched to replace
    /// one an upstream refused (requests wait for it) and the last fetch did not fail.
    /// False before the first token, and once the token expired and the last fetch failed.
    pub fn serving(&self) -> bool {
        self.valid().is_some()
            || (self.shared.held.load(Ordering::SeqCst)
                && matches!(*self.shared.status.borrow(), Status::Fetching))
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
                Status::Failed(error) => {
                    self.shared.demand();
                    return Err(NoToken::Failed(error.clone()));
                }
                Status::Crashed => return Err(NoToken::Restarting),
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
    /// already replaced by a newer one is left alone, so a burst of 401s mints once; every
    /// 401 for the current token mints, paced by [`RefreshPolicy::reject_burst`] and
    /// [`RefreshPolicy::reject_refill`].
    pub fn reject(&self, used: &Arc<CachedToken>) {
        let current = self.shared.current.load();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
            return;
        }
        let previous = self.shared.current.compare_and_swap(&*current, None);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, used)) {
            tracing::info!(credential = %self.shared.name, "upstream refused the token; minting a new one");
            // Requests wait for the new token, unless the issuer is failing: then they get
            // its error at once, as with any expired token.
            self.shared.status.send_if_modified(|status| match status {
                Status::Failed(_) | Status::Crashed => false,
                Status::Fetching | Status::Ready => {
                    *status = Status::Fetching;
                    true
                }
            });
            self.shared.rejected.store(true, Ordering::SeqCst);
            self.shared.wake.notify_one();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn has_valid(&self) -> bool {
        self.current.load().as_ref().is_some_and(|t| t.is_usable())
    }

    /// Has the refresher retry now, unless a request did within
    /// [`RefreshPolicy::demand_interval`].
    fn demand(&self) {
        let now = Instant::now();
        {
            let mut last = lock(&self.last_demand);
            if last.is_some_and(|at| now.duration_since(at) < self.policy.demand_interval) {
                return;
            }
            *last = Some(now);
        }
        self.wake.notify_one();
    }

    /// Fetches a token and publishes the outcome; returns when the next fetch is due
    /// (`None`: only on a change, a 401 or a request's demand).
    async fn fetch(&self, source: &dyn TokenSource, failures: &mut u32) -> Option<Instant> {
        let requested_at = Instant::now();
        let requested_at_wall = SystemTime::now();
        let outcome = source.fetch().await.and_then(|token| {
            let lifetime = token.lifetime;
            CachedToken::new(token, requested_at, requested_at_wall)
                .map(|cached| (cached, lifetime))
                .ok_or(TokenError::NotAHeader)
        });
        let wait = match outcome {
            Ok((token, lifetime)) => {
                *failures = 0;
                let token = Arc::new(token);
                tracing::info!(
                    credential = %self.name,
                    expires_in_s = lifetime.map(|l| l.as_secs()),
                    scope = token.scope.as_ref().map(|scope| scope.list.as_str()),
                    scope_source = token.scope.as_ref().map(|scope| scope.source.as_str()),
                    "minted a new token"
                );
                if let Some(observer) = &self.observer {
                    observer.minted(&self.name, token.expires_at);
                }
                self.current.store(Some(token));
                self.held.store(true, Ordering::SeqCst);
                self.status.send_replace(Status::Ready);
                lifetime.map(|l| self.policy.refresh_in(l))
            }
            Err(error) => {
                *failures += 1;
                let retry_in = self.policy.backoff(*failures);
                tracing::warn!(
                    credential = %self.name,
                    error = %error,
                    diagnosis = error.diagnosis().unwrap_or(""),
                    still_serving_previous_token = self.has_valid(),
                    retry_in_ms = retry_in.as_millis() as u64,
                    "token fetch failed"
                );
                if let Some(observer) = &self.observer {
                    observer.failed(&self.name, &error);
                }
                self.status.send_replace(Status::Failed(Arc::new(error)));
                Some(retry_in)
            }
        };
        // A wait too long to represent is as good as none.
        wait.and_then(|wait| Instant::now().checked_add(wait))
    }

    /// Returns when the next fetch should start: at `due`, when the source's inputs
    /// changed, or when a request needs a token (after a 401, once the reject budget
    /// allows; or after a failure, on demand).
    async fn next_fetch(&self, source: &dyn TokenSource, due: Option<Instant>) {
        loop {
            let timer = async {
                match due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = timer => return,
                () = source.changed() => {
                    tracing::info!(credential = %self.name, "credential file changed; fetching anew");
                    return;
                }
                () = self.wake.notified() => {}
            }
            let rejected = self.rejected.swap(false, Ordering::SeqCst);
            // Asked during the last fetch, which has answered it already.
            if self.has_valid() {
                continue;
            }
            if rejected {
                let at = lock(&self.rejects).take(&self.policy, Instant::now());
                tokio::time::sleep_until(at).await;
            }
            return;
        }
    }
}

/// Runs the refresh loop and restarts it, after a short backoff, whenever it ends other
/// than by `stop` (a panic in a token source, say): requests would otherwise wait for a
/// token that never comes. Meanwhile requests without a valid token get a 503 at once.
async fn supervise(shared: Arc<Shared>, source: Arc<dyn TokenSource>, stop: CancellationToken) {
    let mut crashes_in_a_row = 0;
    loop {
        let started = Instant::now();
        let run = tokio::spawn(refresh_loop(shared.clone(), source.clone(), stop.clone()));
        if run.await.is_ok() {
            return; // only `stop` ends the loop
        }
        // A loop that ran for a while has not been crashing in a row: restart it soon.
        if started.elapsed() > shared.policy.backoff_cap {
            crashes_in_a_row = 0;
        }
        crashes_in_a_row += 1;
        let restarts = shared.restarts.fetch_add(1, Ordering::SeqCst) + 1;
        let restart_in = shared.policy.backoff(crashes_in_a_row);
        // The panic message went to stderr through the panic hook; it is not repeated
        // here, as it could quote anything the source held.
        tracing::error!(
            credential = %shared.name,
            restarts,
            restart_in_ms = restart_in.as_millis() as u64,
            "the token refresher died unexpectedly; restarting it"
        );
        shared.status.send_replace(Status::Crashed);
        tokio::select! {
            () = tokio::time::sleep(restart_in) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Fetches and waits for the next reason to fetch, until `stop`.
async fn refresh_loop(shared: Arc<Shared>, source: Arc<dyn TokenSource>, stop: CancellationToken) {
    let mut failures = 0u32;
    loop {
        let due = tokio::select! {
            due = shared.fetch(&*source, &mut failures) => due,
            () = stop.cancelled() => return,
        };
        tokio::select! {
            () = shared.next_fetch(&*source, due) => {}
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
    use crate::secret::AccessToken;
    use crate::token::fake::{cache, cache_with, Counting};
    use std::sync::atomic::Ordering;

    fn fetches(source: &Counting) -> usize {
        source.fetches.load(Ordering::SeqCst)
    }

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
        assert_eq!(fetches(&source), 2);

        // The upstream refuses the fresh token too: it goes as well, at once and once.
        cache.reject(&second);
        cache.reject(&second);
        assert_eq!(cache.token().await.unwrap().header(), "Bearer token-3");
        assert_eq!(fetches(&source), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn three_revocations_within_ten_seconds_mint_three_times() {
        let source = Arc::new(Counting::living(Duration::from_secs(3600)));
        let cache = cache(&source);
        let mut token = cache.token().await.unwrap();
        for n in 2..=4 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            cache.reject(&token);
            token = cache.token().await.unwrap();
            assert_eq!(token.header(), format!("Bearer token-{n}").as_str());
        }
        assert_eq!(fetches(&source), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_refusing_every_token_is_paced_by_the_reject_budget() {
        let source = Arc::new(Counting::living(Duration::from_secs(3600)));
        let cache = cache(&source);
        let mut token = cache.token().await.unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            cache.reject(&token);
            // Delayed, never refused: the request waits for the paced mint.
            let next = cache.token().await.unwrap();
            assert_ne!(next.header(), token.header());
            token = next;
        }
        // The first token, a burst of 5 at once, then one every 2 s until 20 s.
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert_eq!(fetches(&source), 1 + 5 + 10);
    }

    #[test]
    fn the_reject_budget_allows_a_burst_then_one_per_refill() {
        let policy = RefreshPolicy::default();
        let now = Instant::now();
        let mut budget = RejectBudget { full_at: now };
        for _ in 0..5 {
            assert_eq!(budget.take(&policy, now), now);
        }
        assert_eq!(budget.take(&policy, now), now + Duration::from_secs(2));
        assert_eq!(budget.take(&policy, now), now + Duration::from_secs(4));
        // Unused, it refills up to the burst and no further.
        let later = now + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(budget.take(&policy, later), later);
        }
        assert_eq!(budget.take(&policy, later), later + Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn service_returns_within_a_second_of_the_source_despite_a_long_backoff() {
        let source = Arc::new(Counting::living(Duration::from_secs(60)));
        source.failing.store(true, Ordering::SeqCst);
        let policy = RefreshPolicy {
            backoff_cap: Duration::from_secs(10),
            ..RefreshPolicy::default()
        };
        let cache = cache_with(&source, policy);
        // No requests yet: the refresher fails on its own until its backoff is at the cap
        // (250 ms doubling: 10 s from the 7th failure on; 5 to 10 s with jitter).
        while fetches(&source) < 8 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        source.failing.store(false, Ordering::SeqCst);
        let back = Instant::now();
        // The first request still gets its answer at once...
        assert!(matches!(cache.token().await, Err(NoToken::Failed(_))));
        assert_eq!(back.elapsed(), Duration::ZERO);
        // ...and has the refresher try again now rather than in 5 to 10 s.
        loop {
            if let Ok(token) = cache.token().await {
                assert_eq!(token.header(), "Bearer token-9");
                break;
            }
            assert!(back.elapsed() < Duration::from_secs(1), "no token within 1 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_have_the_refresher_retry_at_most_every_250_ms() {
        let source = Arc::new(Counting::living(Duration::from_secs(60)));
        source.failing.store(true, Ordering::SeqCst);
        // A first backoff of 5 to 10 s: every retry within the next 2 s is a request's.
        let policy = RefreshPolicy {
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(10),
            ..RefreshPolicy::default()
        };
        let cache = cache_with(&source, policy);
        assert!(matches!(cache.token().await, Err(NoToken::Failed(_))));
        let start = Instant::now();
        let before = fetches(&source);
        while start.elapsed() < Duration::from_secs(2) {
            for _ in 0..10 {
                assert!(matches!(cache.token().await, Err(NoToken::Failed(_))));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let retries = fetches(&source) - before;
        assert!((7..=8).contains(&retries), "{retries} retries in 2 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_source_is_restarted() {
        let source = Arc::new(Counting::living(Duration::from_secs(60)));
        source.panics.store(1, Ordering::SeqCst);
        let cache = cache(&source);
        let start = Instant::now();
        // While the refresher is down, a request hears so at once instead of waiting 20 s.
        assert!(matches!(cache.token().await, Err(NoToken::Restarting)));
        assert_eq!(start.elapsed(), Duration::ZERO);
        let token = loop {
            match cache.token().await {
                Ok(token) => break token,
                Err(NoToken::Restarting) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(other) => panic!("{other}"),
            }
        };
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(token.header(), "Bearer token-2");
        assert_eq!(cache.restarts(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn serving_says_whether_a_request_would_get_a_token() {
        let source = Arc::new(Counting::living(Duration::from_secs(10)));
        let cache = cache(&source);
        assert!(!cache.serving(), "no token yet");
        let first = cache.token().await.unwrap();
        assert!(cache.serving());
        cache.reject(&first);
        assert!(cache.valid().is_none());
        assert!(cache.serving(), "requests wait for the new token");
        cache.token().await.unwrap();
        assert!(cache.serving());
        // The token expires (at 9.5 s) while every refresh fails.
        source.failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(9600)).await;
        assert!(cache.last_error().is_some());
        assert!(!cache.serving());
    }

    #[test]
    fn a_lifetime_past_any_instant_does_not_panic() {
        let token = Token {
            access_token: AccessToken::new("t".to_owned()),
            lifetime: Some(Duration::MAX),
            scope: None,
        };
        let cached = CachedToken::new(token, Instant::now(), SystemTime::now()).unwrap();
        assert!(cached.is_usable());
        assert_eq!(cached.expires_at, None);
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
