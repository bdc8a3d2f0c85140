//! The access log's buffer and its writer thread, as nginx buffers its access log.
//!
//! Requests append whole lines to a bounded buffer under a short lock and never wait for
//! the output. A thread takes the buffer's contents in one piece and writes them with
//! one `write_all`: a short interval after the first line arrives, as soon as the buffer is
//! half full, and when the log closes. So a busy proxy makes a few large writes a second
//! instead of one per request, and an idle one wakes nobody. When the output stalls (a
//! full pipe nobody reads) and the buffer fills, lines are dropped and counted, never
//! waited for.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

/// Lines waiting for the writer, at most `capacity` bytes of them.
#[derive(Debug)]
pub(crate) struct Buffer {
    state: Mutex<State>,
    /// Signalled on the first line into an empty buffer, on crossing half the capacity,
    /// and on closing.
    wake: Condvar,
    capacity: usize,
    dropped: Counter,
}

#[derive(Debug, Default)]
struct State {
    bytes: Vec<u8>,
    lines: u64,
    closed: bool,
}

/// One take of the buffer, for the writer.
struct Batch {
    lines: u64,
    last: bool,
}

impl Buffer {
    /// An empty buffer of `capacity` bytes, counting dropped lines in `dropped`.
    pub(crate) fn new(capacity: usize, dropped: Counter) -> Self {
        Self {
            state: Mutex::default(),
            wake: Condvar::new(),
            capacity,
            dropped,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one holds whole lines still.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one whole `line`, or drops and counts it when it does not fit or the log
    /// is closed. Never waits for the writer.
    pub(crate) fn push(&self, line: &[u8]) {
        let mut state = self.lock();
        let before = state.bytes.len();
        if state.closed || before + line.len() > self.capacity {
            drop(state);
            self.dropped.inc();
            return;
        }
        state.bytes.extend_from_slice(line);
        state.lines += 1;
        drop(state);
        let half = self.capacity / 2;
        if before == 0 || (before < half && before + line.len() >= half) {
            self.wake.notify_one();
        }
    }

    /// Waits for lines, then `interval` longer unless the buffer gets half full or the
    /// log closes, and swaps the buffer's contents into the empty `batch`.
    fn take(&self, batch: &mut Vec<u8>, interval: Duration) -> Batch {
        let mut state = self.lock();
        while state.bytes.is_empty() && !state.closed {
            state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        let deadline = Instant::now() + interval;
        while !state.closed && state.bytes.len() < self.capacity / 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .wake
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut state.bytes, batch);
        Batch {
            lines: std::mem::take(&mut state.lines),
            last: state.closed,
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// The thread writing a [`Buffer`] out. [`Writer::finish`] (or dropping it) closes the
/// buffer, writes what is left and waits for the thread: no line is lost on a clean stop.
#[derive(Debug)]
pub struct Writer {
    buffer: Arc<Buffer>,
    thread: Option<JoinHandle<()>>,
}

/// The writer thread does little but copy bytes: a small stack is plenty.
const WRITER_STACK: usize = 64 * 1024;

impl Writer {
    /// Starts a thread writing `buffer` to `out`, a short `interval` after each first line.
    pub(crate) fn spawn(
        buffer: Arc<Buffer>,
        out: impl Write + Send + 'static,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let shared = buffer.clone();
        let thread = std::thread::Builder::new()
            .name("access-log".to_owned())
            .stack_size(WRITER_STACK)
            .spawn(move || write_until_closed(&shared, out, interval))?;
        Ok(Self {
            buffer,
            thread: Some(thread),
        })
    }

    /// Closes the buffer, writes every line in it, and waits for the thread to end.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.buffer.close();
        if let Some(thread) = self.thread.take() {
            // The thread does not panic; if it did, its lines are lost either way.
            let _ = thread.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_until_closed(buffer: &Buffer, mut out: impl Write, interval: Duration) {
    let mut batch = Vec::new();
    loop {
        let Batch { lines, last } = buffer.take(&mut batch, interval);
        if !batch.is_empty() {
            // `Stderr::write_all` holds stderr's lock for the whole batch, so other log
            // lines cannot land inside it.
            if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
                buffer.dropped.inc_by(lines);
            }
            batch.clear();
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that holds what it was given, for a look after the writer finished.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<u8>>>);

    impl Write for Seen {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// An output that refuses every write, like a closed stderr.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_full_buffer_drops_and_counts_lines_instead_of_waiting() {
        // No writer runs: the buffer is a stalled log's.
        let dropped = Counter::default();
        let buffer = Buffer::new(10, dropped.clone());
        for line in ["abcd\n", "efgh\n", "ijkl\n", "m\n"] {
            buffer.push(line.as_bytes());
        }
        assert_eq!(
            dropped.get(),
            2,
            "the third and fourth lines do not fit in 10 bytes"
        );
        let mut batch = Vec::new();
        let taken = buffer.take(&mut batch, HOUR);
        assert_eq!(batch, b"abcd\nefgh\n", "a half-full buffer is taken at once");
        assert_eq!(taken.lines, 2);
        buffer.push(b"nopq\n");
        assert_eq!(dropped.get(), 2, "taking the lines made room");
    }

    #[test]
    fn finishing_writes_every_line_at_once() {
        let dropped = Counter::default();
        let buffer = Arc::new(Buffer::new(1 << 20, dropped.clone()));
        let seen = Seen::default();
        let writer = Writer::spawn(buffer.clone(), seen.clone(), HOUR).unwrap();
        buffer.push(b"one\n");
        buffer.push(b"two\n");
        writer.finish();
        assert_eq!(*seen.0.lock().unwrap(), b"one\ntwo\n", "not an hour later");
        buffer.push(b"late\n");
        assert_eq!(dropped.get(), 1, "a line after the close is dropped and counted");
    }

    #[test]
    fn lines_that_cannot_be_written_are_counted_as_dropped() {
        let dropped = Counter::default();
        let buffer = Arc::new(Buffer::new(1 << 20, dropped.clone()));
        let writer = Writer::spawn(buffer.clone(), Broken, HOUR).unwrap();
        buffer.push(b"one\n");
        buffer.push(b"two\n");
        drop(writer);
        assert_eq!(dropped.get(), 2);
    }
}
