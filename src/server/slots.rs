//! Connection slots: at most `--max-connections` connections at once, and at the limit the
//! longest-idle keep-alive connection gives its slot to a new one, as nginx reuses idle
//! connections. Idle connections would otherwise lock new callers out until they time out.
//!
//! Each connection holds a [`Slot`]: a count of its requests in flight (a request ends
//! when its response has been written or dropped), when it last started or finished one,
//! and the signal that asks it to close. Closing is graceful: an evicted connection only
//! loses the chance of another request, never a request in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long an eviction may take before the next idle connection is asked too: an
/// evicted connection halfway through reading a request head finishes that request first.
const EVICTION_GRACE: Duration = Duration::from_millis(100);

/// Every connection's slot.
#[derive(Debug)]
pub(super) struct Slots {
    limit: usize,
    /// Asks every connection to close (shutdown).
    stop: CancellationToken,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<State>>>,
    /// Signalled when a connection ends, or goes idle while new ones wait.
    room: Notify,
    /// New connections waiting for a slot.
    waiting: AtomicUsize,
    /// Requests in flight on all connections.
    in_flight: AtomicUsize,
}

/// One connection's state, shared between the connection and [`Slots`].
#[derive(Debug)]
struct State {
    busy: AtomicUsize,
    /// Microseconds since [`Slots::epoch`] when the connection opened or a request last
    /// ended: the start of its idle time (a busy connection is never evicted).
    last_active: AtomicU64,
    close: CancellationToken,
}

impl Slots {
    /// Room for `limit` connections; `stop` asks all of them to close.
    pub(super) fn new(limit: usize, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            stop,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::default(),
            room: Notify::new(),
            waiting: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// A slot for a new connection; at the limit, closes the longest-idle connection for
    /// it, or waits for one to end when every connection has a request in flight.
    pub(super) async fn acquire(self: &Arc<Self>) -> Slot {
        let _waiting = Waiting::on(self);
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before looking, so a slot freed in between is not missed.
            room.as_mut().enable();
            let evicted = {
                let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
                if open.len() < self.limit {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let state = Arc::new(State {
                        busy: AtomicUsize::new(0),
                        last_active: AtomicU64::new(self.now()),
                        close: self.stop.child_token(),
                    });
                    open.insert(id, state.clone());
                    return Slot {
                        id,
                        slots: self.clone(),
                        state,
                    };
                }
                longest_idle(&open)
                    .inspect(|state| state.close.cancel())
                    .is_some()
            };
            if evicted {
                tracing::debug!("at the connection limit: closing the longest-idle connection");
                let _ = tokio::time::timeout(EVICTION_GRACE, room).await;
            } else {
                room.await;
            }
        }
    }

    /// Requests in flight on all connections.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Counts a new connection waiting for a slot, so that connections going idle say so.
struct Waiting<'a>(&'a Slots);

impl<'a> Waiting<'a> {
    fn on(slots: &'a Slots) -> Self {
        slots.waiting.fetch_add(1, Ordering::AcqRel);
        Self(slots)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The idle connection (no request in flight, not already asked to close) that has been
/// idle longest; of two idle as long, the older.
fn longest_idle(open: &HashMap<u64, Arc<State>>) -> Option<&Arc<State>> {
    open.iter()
        .filter(|(_, state)| state.busy.load(Ordering::Acquire) == 0 && !state.close.is_cancelled())
        .min_by_key(|(id, state)| (state.last_active.load(Ordering::Relaxed), **id))
        .map(|(_, state)| state)
}

/// One connection's place among the open ones; dropping it frees the place.
#[derive(Debug)]
pub(super) struct Slot {
    id: u64,
    slots: Arc<Slots>,
    state: Arc<State>,
}

impl Slot {
    /// Cancelled when the connection should close once its requests in flight are
    /// answered: on shutdown, or to make room for a new connection.
    pub(super) fn closing(&self) -> &CancellationToken {
        &self.state.close
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub(super) fn request(&self) -> Busy {
        self.state.busy.fetch_add(1, Ordering::AcqRel);
        self.slots.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy {
            slots: self.slots.clone(),
            state: self.state.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.slots.room.notify_one();
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub(super) struct Busy {
    slots: Arc<Slots>,
    state: Arc<State>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.state.last_active.store(self.slots.now(), Ordering::Relaxed);
        let idle = self.state.busy.fetch_sub(1, Ordering::AcqRel) == 1;
        self.slots.in_flight.fetch_sub(1, Ordering::AcqRel);
        if idle && self.slots.waiting.load(Ordering::Acquire) > 0 {
            self.slots.room.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_longest_idle_connection_makes_room() {
        let slots = Slots::new(3, CancellationToken::new());
        let oldest = slots.acquire().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let busy = slots.acquire().await;
        let _request = busy.request();
        tokio::time::advance(Duration::from_secs(1)).await;
        let recent = slots.acquire().await;
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await }
        });
        // The oldest idle connection is asked to close; the busy one, older, is not.
        oldest.closing().cancelled().await;
        assert!(!busy.closing().is_cancelled());
        assert!(!recent.closing().is_cancelled());
        assert_eq!(slots.in_flight(), 1);
        drop(oldest);
        let admitted = waiting.await.unwrap();
        assert!(!admitted.closing().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_connection_is_busy_a_new_one_waits() {
        let slots = Slots::new(1, CancellationToken::new());
        let only = slots.acquire().await;
        let request = only.request();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await }
        });
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished());
        assert!(!only.closing().is_cancelled(), "a request in flight is never cut");
        drop(request);
        // Idle now: evicted, and its slot goes to the waiting connection once it closes.
        only.closing().cancelled().await;
        drop(only);
        waiting.await.unwrap();
        assert_eq!(slots.in_flight(), 0);
    }

    #[test]
    fn shutdown_asks_every_connection_to_close() {
        let stop = CancellationToken::new();
        let slots = Slots::new(2, stop.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (a, b) = runtime.block_on(async { (slots.acquire().await, slots.acquire().await) });
        stop.cancel();
        assert!(a.closing().is_cancelled() && b.closing().is_cancelled());
    }
}
