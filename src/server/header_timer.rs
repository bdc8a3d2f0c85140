//! hyper's HTTP/1.1 header read timeout on one timer per connection.
//!
//! hyper arms the timeout each time it waits for a request head and drops it once the
//! head is in: with hyper-util's `TokioTimer` that is a new tokio `Sleep` per request,
//! entered in the runtime's timer wheel and taken out again, under its lock each way. This
//! timer lends hyper the connection's one `Sleep` instead, moved to each new deadline, and
//! takes it back when hyper drops it. Moving a deadline later takes no lock (tokio files
//! the entry again when the old deadline comes), and deadlines only move later here. The
//! deadlines, and so the timeout's behaviour, are hyper-util's.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// The timer of one connection's HTTP/1.1 side.
#[derive(Debug, Default)]
pub(super) struct ConnectionTimer {
    /// The connection's `Sleep` while hyper holds none.
    spare: Arc<Spare>,
}

type Spare = Mutex<Option<Pin<Box<tokio::time::Sleep>>>>;

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner).take();
        let sleep = match spare {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        Box::pin(Lent {
            sleep: Some(sleep),
            home: Arc::clone(&self.spare),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Lent>() {
            Some(mut lent) => {
                if let Some(sleep) = &mut lent.sleep {
                    sleep.as_mut().reset(tokio::time::Instant::from_std(new_deadline));
                }
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    /// tokio's clock, as hyper-util's `TokioTimer` reads it (paused in tests).
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// The connection's `Sleep` while hyper holds it; back to the connection when dropped.
struct Lent {
    /// `None` only while dropping.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    home: Arc<Spare>,
}

impl Future for Lent {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Sleep for Lent {}

impl Drop for Lent {
    fn drop(&mut self) {
        let sleep = self.sleep.take();
        *self.home.lock().unwrap_or_else(PoisonError::into_inner) = sleep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lent_sleep_ends_at_its_deadline_and_is_lent_again() {
        let timer = ConnectionTimer::default();
        let start = tokio::time::Instant::now();
        timer.sleep(Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(timer.spare.lock().unwrap().is_some(), "given back when dropped");

        let later = timer.sleep(Duration::from_secs(3));
        assert!(timer.spare.lock().unwrap().is_none(), "lent out");
        later.await;
        assert_eq!(start.elapsed(), Duration::from_secs(8));

        let mut moved = timer.sleep(Duration::from_secs(60));
        timer.reset(&mut moved, timer.now() + Duration::from_secs(1));
        moved.await;
        assert_eq!(start.elapsed(), Duration::from_secs(9));
    }
}
