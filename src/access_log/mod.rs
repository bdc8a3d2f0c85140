//! The access log: one line per request on stderr, written off the request path.
//!
//! It observes the proxy from outside, as the metrics do ([`RequestObserver`]). A request
//! formats its line ([`line`]) and appends it to a bounded [`buffer`]; a thread writes the
//! buffer out in large writes. Under overload lines are dropped and counted
//! (`mintproxy_access_log_dropped_total`), never waited for. `--access-log off` turns it
//! off, `--access-log-sample` keeps a share of the lines (failures always), and
//! `RUST_LOG` still filters it as a tracing event of target [`TARGET`] at `info`.

mod buffer;
mod line;

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;

use crate::proxy::{RequestObserver, RequestRecord};
use buffer::Buffer;
pub use buffer::Writer;
pub use line::{Shape, TARGET};

/// The buffer's default size: a few milliseconds of lines at full load, so the writer
/// thread has time to be scheduled on a busy core before lines are dropped.
pub const DEFAULT_BUFFER: usize = 256 * 1024;

/// How long a line may wait in the buffer before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// What the access log does, from `--access-log`, `--access-log-sample`,
/// `--access-log-buffer` and `--log-format` (the flags' defaults: [`Default`], in
/// [`crate::config`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `--access-log on`.
    pub enabled: bool,
    /// The share of requests logged, from 0 to 1 (failures are always logged).
    pub sample: f64,
    /// The most bytes of lines waiting for the writer.
    pub buffer: usize,
    /// How lines look.
    pub shape: Shape,
}

/// The observer that writes access lines.
#[derive(Debug)]
pub struct AccessLog {
    buffer: Arc<Buffer>,
    shape: Shape,
    sample: Sample,
}

impl AccessLog {
    /// Starts the access log on stderr, counting dropped lines in `dropped`: the observer
    /// for the proxy, and the writer to finish after the drain. `None` when it is off, by
    /// `--access-log off` or by `RUST_LOG` (which is read once, here).
    pub fn start(settings: &Settings, dropped: Counter) -> std::io::Result<Option<(Arc<Self>, Writer)>> {
        if !settings.enabled || !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return Ok(None);
        }
        let buffer = Arc::new(Buffer::new(settings.buffer, dropped));
        let writer = Writer::spawn(buffer.clone(), std::io::stderr(), FLUSH_INTERVAL)?;
        let log = Self {
            buffer,
            shape: settings.shape,
            sample: Sample::new(settings.sample),
        };
        Ok(Some((Arc::new(log), writer)))
    }
}

thread_local! {
    /// Where a line is formatted before it is copied into the buffer, so the buffer's lock
    /// is held for a copy only.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl RequestObserver for AccessLog {
    fn request(&self, record: &RequestRecord<'_>) {
        if !always_logged(record) && !self.sample.pick() {
            return;
        }
        let line = line::Line {
            at: SystemTime::now(),
            method: record.method,
            path: record.path,
            status: record.status.as_u16(),
            duration: record.duration,
            route: record.route,
        };
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            line.write(self.shape, scratch);
            self.buffer.push(scratch);
        });
    }

    fn truncated(&self, _route: &str) {}

    fn retried(&self, _route: &str) {}
}

/// Failures, whatever the sample: a status of 500 or above, or an answer of the proxy's
/// own (a refusal, no token, an unreachable or slow upstream).
fn always_logged(record: &RequestRecord<'_>) -> bool {
    record.failure.is_some() || record.status.is_server_error()
}

/// Which requests are logged: each with the configured probability, decided by hashing a
/// request counter with a per-process random key (random, and no lock or RNG state).
#[derive(Debug)]
struct Sample {
    /// A request is logged when its hash is below this; `None`: every request.
    below: Option<u64>,
    key: std::hash::RandomState,
    requests: AtomicU64,
}

impl Sample {
    fn new(share: f64) -> Self {
        // 2^64 · share, saturating; 1 and more log everything.
        let below = (share < 1.0).then_some((share * 18_446_744_073_709_551_616.0) as u64);
        Self {
            below,
            key: std::hash::RandomState::new(),
            requests: AtomicU64::new(0),
        }
    }

    fn pick(&self) -> bool {
        self.below.is_none_or(|below| {
            let n = self.requests.fetch_add(1, Ordering::Relaxed);
            self.key.hash_one(n) < below
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::{Failure, CLIENT_CLOSED};
    use http::{Method, StatusCode};

    #[test]
    fn failures_are_always_logged_and_the_rest_sampled() {
        let logged = |status: StatusCode, failure| {
            always_logged(&RequestRecord {
                route: "/",
                method: &Method::GET,
                path: "/",
                status,
                duration: Duration::ZERO,
                failure,
                client_authorization: false,
            })
        };
        assert!(
            logged(StatusCode::SERVICE_UNAVAILABLE, None),
            "the upstream's 503"
        );
        assert!(logged(StatusCode::BAD_GATEWAY, Some(Failure::Unreachable)));
        assert!(logged(StatusCode::FORBIDDEN, Some(Failure::Refused)));
        assert!(!logged(StatusCode::OK, None));
        assert!(!logged(StatusCode::NOT_FOUND, None), "the upstream's 404");
        assert!(!logged(CLIENT_CLOSED, None), "the client's doing");
    }

    fn picked(share: f64, of: usize) -> usize {
        let sample = Sample::new(share);
        (0..of).filter(|_| sample.pick()).count()
    }

    #[test]
    fn a_sample_keeps_about_its_share() {
        assert_eq!(picked(1.0, 1000), 1000);
        assert_eq!(picked(0.0, 1000), 0);
        let tenth = picked(0.1, 100_000);
        assert!((9_000..=11_000).contains(&tenth), "{tenth} of 100000 at 0.1");
    }
}
