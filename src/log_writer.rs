//! The log writer (SPEC §11's one line per request, at no cost to the
//! request): a line, formatted by the thread that logs it, is appended to
//! one shared buffer under a lock held for a copy; a writer thread of its
//! own takes the buffer every [`WRITE_EVERY`] and writes it to stderr in
//! one call. While lines come, nothing on the request's path writes, wakes a
//! thread or makes a syscall. A writer that found the buffer empty sleeps
//! until a line comes (an idle server does not wake a hundred times a
//! second): the first line after the quiet wakes it, once. Past the
//! buffer's bound (a reader of stderr that stalls) a line is dropped and
//! counted, never waited for. On a clean stop every line still buffered is
//! written ([`LogWriter`]'s drop).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How often the buffer is written out.
pub const WRITE_EVERY: Duration = Duration::from_millis(10);
/// The buffer's bound in bytes by default (environment `SWITCHYARD_LOG_BUFFER`).
pub const BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// How long a stop waits for the last lines to be written (a stderr nobody reads).
const LAST_WRITE: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Shared {
    buffer: Mutex<Vec<u8>>,
    limit: usize,
    dropped: AtomicU64,
    /// Set to stop the writer; the writer sets `done` when it has written the rest.
    stop: Mutex<(bool, bool)>,
    wake: Condvar,
    /// The writer sleeps until a line comes (set and waited on under `stop`).
    idle: AtomicBool,
    /// Rounds of the writer (each a wake-up).
    rounds: AtomicU64,
}

/// Where `tracing`'s formatter writes: the shared buffer.
#[derive(Clone)]
pub struct Lines(Arc<Shared>);

/// One formatted line (or a part of one) on its way into the buffer.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, given: &[u8]) -> std::io::Result<usize> {
        // No secret's value reaches the log (SPEC §20).
        let redacted = crate::secrets::redact_bytes(given);
        let bytes: &[u8] = &redacted;
        let mut buffer = self.0.buffer.lock().unwrap_or_else(|p| p.into_inner());
        if buffer.len() + bytes.len() > self.0.limit {
            drop(buffer);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            buffer.extend_from_slice(bytes);
            drop(buffer);
            // The first line after a quiet spell wakes the writer; under `stop`,
            // so the wake cannot fall between its look at the buffer and its wait.
            if self.0.idle.load(Ordering::Relaxed) && self.0.idle.swap(false, Ordering::SeqCst) {
                let _stop = self.0.stop.lock().unwrap_or_else(|p| p.into_inner());
                self.0.wake.notify_all();
            }
        }
        Ok(given.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.0)
    }
}

impl Lines {
    /// Lines dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// How many times the writer has woken so far.
    #[cfg(test)]
    fn writer_rounds(&self) -> u64 {
        self.0.rounds.load(Ordering::Relaxed)
    }
}

/// Keeps the writer thread: dropped at the end of `main`, it writes every
/// line still buffered (waiting at most [`LAST_WRITE`]).
#[must_use = "the writer stops when this is dropped"]
pub struct LogWriter(Arc<Shared>);

/// Starts the writer thread on `out`; the buffer holds at most `limit` bytes.
pub fn start(out: impl Write + Send + 'static, limit: usize) -> (Lines, LogWriter) {
    let shared = Arc::new(Shared {
        limit,
        ..Shared::default()
    });
    let me = shared.clone();
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_loop(&me, out))
        .expect("a thread for the log writer");
    (Lines(shared.clone()), LogWriter(shared))
}

fn write_loop(shared: &Shared, mut out: impl Write) {
    let mut spare = Vec::new();
    let mut found_none = false;
    loop {
        let stopping = {
            let mut stop = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
            if found_none && !stop.0 {
                // Nothing came last round: sleep until a line does (or the stop).
                shared.idle.store(true, Ordering::SeqCst);
                if shared.buffer.lock().map_or(true, |b| !b.is_empty()) {
                    shared.idle.store(false, Ordering::SeqCst);
                } else {
                    stop = shared
                        .wake
                        .wait_while(stop, |s| !s.0 && shared.idle.load(Ordering::SeqCst))
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
            // Lines are coming: gather them for one interval.
            let (stop, _) = shared
                .wake
                .wait_timeout_while(stop, WRITE_EVERY, |s| !s.0)
                .unwrap_or_else(|p| p.into_inner());
            stop.0
        };
        shared.rounds.fetch_add(1, Ordering::Relaxed);
        {
            let mut buffer = shared.buffer.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *buffer, &mut spare);
        }
        found_none = spare.is_empty();
        if !spare.is_empty() {
            let _ = out.write_all(&spare);
            let _ = out.flush();
            spare.clear();
        }
        if stopping {
            shared.stop.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
            shared.wake.notify_all();
            return;
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let stop = {
            let mut stop = self.0.stop.lock().unwrap_or_else(|p| p.into_inner());
            stop.0 = true;
            stop
        };
        self.0.wake.notify_all();
        let _ = self
            .0
            .wake
            .wait_timeout_while(stop, LAST_WRITE, |s| !s.1)
            .unwrap_or_else(|p| p.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_and_all_of_them_on_stop() {
        let sink = Sink::default();
        let (lines, writer) = start(sink.clone(), 1 << 20);
        for i in 0..1000 {
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&lines);
            writeln!(line, "line {i}").unwrap();
        }
        drop(writer);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
        assert_eq!(lines.dropped(), 0);
    }

    /// Waits (at most 5 s) until `sink` holds `want`.
    fn wait_for(sink: &Sink, want: &str) {
        for _ in 0..500 {
            if String::from_utf8_lossy(&sink.0.lock().unwrap()).contains(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{want:?} never written");
    }

    #[test]
    fn an_idle_writer_sleeps_until_a_line_comes_and_writes_it_then() {
        let sink = Sink::default();
        let (lines, writer) = start(sink.clone(), 1 << 20);
        for round in 0..3 {
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&lines);
            writeln!(line, "line {round}").unwrap();
            wait_for(&sink, &format!("line {round}\n"));
            // One more round finds nothing; then the writer sleeps (on a busy
            // machine that round may come late: wait for it, at most 5 s).
            let mut asleep = lines.writer_rounds();
            for tries in 0.. {
                std::thread::sleep(WRITE_EVERY * 5);
                let now = lines.writer_rounds();
                if now == asleep {
                    break;
                }
                assert!(tries < 100, "the writer never went to sleep");
                asleep = now;
            }
            std::thread::sleep(WRITE_EVERY * 20);
            assert_eq!(lines.writer_rounds(), asleep, "the idle writer woke up");
        }
        // A stop wakes a sleeping writer, and it ends.
        drop(writer);
        assert_eq!(
            String::from_utf8(sink.0.lock().unwrap().clone()).unwrap(),
            "line 0\nline 1\nline 2\n"
        );
    }

    #[test]
    fn lines_past_the_bound_are_dropped_and_counted() {
        let sink = Sink::default();
        let (lines, writer) = start(sink, 100);
        // Written within one interval: the buffer holds 100 bytes.
        for _ in 0..50 {
            let mut line = tracing_subscriber::fmt::MakeWriter::make_writer(&lines);
            line.write_all(b"0123456789\n").unwrap();
        }
        assert!(lines.dropped() >= 40, "{}", lines.dropped());
        drop(writer);
    }
}
