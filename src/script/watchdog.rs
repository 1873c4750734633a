//! Stops a run on a blocking thread at its deadline, between any two of its
//! operations.
//!
//! The engine's progress hook runs before every operation, but reading the
//! clock there costs more than many operations do, so on a blocking thread it
//! reads the clock only every [`CLOCK_EVERY_OPS`](super::limits::CLOCK_EVERY_OPS)
//! operations. That alone lets a script whose operations are each slow (a
//! large `to_json`, a long string replace) run far past its deadline. So one
//! watchdog thread keeps the deadlines: each thread that runs scripts has a
//! [`Slot`] holding its run's deadline; the watchdog sleeps until the earliest
//! one, marks the slots whose deadline has passed, and sleeps again. The
//! progress hook reads that mark before every operation (one relaxed atomic
//! load). A run is thus stopped within one operation of its deadline.
//!
//! The watchdog wakes only for deadlines (seconds apart, as timeouts are), or
//! when a run starts with a deadline earlier than the one it sleeps for: a busy
//! server does not pay a wake-up per run. Inline attempts (1 ms on an async
//! thread) are not armed here: they read the clock every few operations instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The deadline of the run on one thread, and the watchdog's mark.
#[derive(Default)]
struct Slot {
    /// The run's deadline in nanoseconds since [`epoch`]; 0: no run.
    deadline: AtomicU64,
    /// The deadline the watchdog found passed (compared with `deadline`, so a
    /// mark meant for an earlier run never stops a later one).
    expired: AtomicU64,
}

/// This thread's slot, registered with the watchdog until the thread ends.
struct Registered(Arc<Slot>);

impl Registered {
    fn new() -> Self {
        let slot = Arc::new(Slot::default());
        slots().push(slot.clone());
        Self(slot)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        slots().retain(|s| !Arc::ptr_eq(s, &self.0));
    }
}

thread_local! {
    static MINE: Registered = Registered::new();
}

fn registry() -> &'static Mutex<Vec<Arc<Slot>>> {
    static SLOTS: OnceLock<Mutex<Vec<Arc<Slot>>>> = OnceLock::new();
    SLOTS.get_or_init(Mutex::default)
}

fn slots() -> std::sync::MutexGuard<'static, Vec<Arc<Slot>>> {
    registry().lock().unwrap_or_else(|p| p.into_inner())
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`]; never 0 (0 means "no run").
fn nanos(at: Instant) -> u64 {
    (at.saturating_duration_since(epoch()).as_nanos() as u64).max(1)
}

/// When the watchdog will wake next (nanoseconds since [`epoch`]; `u64::MAX`: not before a run).
static NEXT_WAKE: AtomicU64 = AtomicU64::new(u64::MAX);

fn watchdog() -> &'static std::thread::Thread {
    static THREAD: OnceLock<std::thread::Thread> = OnceLock::new();
    THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("script-watchdog".into())
            .spawn(watch)
            .expect("the watchdog thread starts")
            .thread()
            .clone()
    })
}

/// Marks the run on this thread to stop at `deadline` (until [`disarm`]).
pub fn arm(deadline: Instant) {
    let at = nanos(deadline);
    MINE.with(|m| m.0.deadline.store(at, Ordering::SeqCst));
    let thread = watchdog();
    // Wake the watchdog only when it sleeps past this deadline.
    if at < NEXT_WAKE.load(Ordering::SeqCst) {
        NEXT_WAKE.fetch_min(at, Ordering::SeqCst);
        thread.unpark();
    }
}

/// The run on this thread has ended.
pub fn disarm() {
    MINE.with(|m| m.0.deadline.store(0, Ordering::Relaxed));
}

/// `true` once the watchdog has found this thread's run past its deadline.
#[inline]
pub fn expired() -> bool {
    MINE.with(|m| {
        let deadline = m.0.deadline.load(Ordering::Relaxed);
        deadline != 0 && m.0.expired.load(Ordering::Relaxed) == deadline
    })
}

fn watch() {
    loop {
        let now = nanos(Instant::now());
        let mut next = scan(now);
        NEXT_WAKE.store(next, Ordering::SeqCst);
        // A run armed during the scan saw the old NEXT_WAKE: look once more.
        let again = scan(nanos(Instant::now()));
        if again < next {
            next = again;
            NEXT_WAKE.store(next, Ordering::SeqCst);
        }
        if next == u64::MAX {
            std::thread::park();
        } else {
            let now = nanos(Instant::now());
            std::thread::park_timeout(Duration::from_nanos(next.saturating_sub(now)));
        }
    }
}

/// Marks the runs past their deadline at `now`; returns the earliest deadline
/// still to come (`u64::MAX`: none).
fn scan(now: u64) -> u64 {
    let mut next = u64::MAX;
    for slot in slots().iter() {
        let deadline = slot.deadline.load(Ordering::SeqCst);
        if deadline == 0 {
            continue;
        }
        if now >= deadline {
            slot.expired.store(deadline, Ordering::Relaxed);
        } else {
            next = next.min(deadline);
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_marked(start: Instant) -> Duration {
        while !expired() {
            assert!(start.elapsed() < Duration::from_secs(2), "never marked");
            std::hint::spin_loop();
        }
        start.elapsed()
    }

    #[test]
    fn a_run_is_marked_soon_after_its_deadline_and_only_that_run() {
        std::thread::spawn(|| {
            let start = Instant::now();
            arm(start + Duration::from_millis(5));
            let took = wait_marked(start);
            assert!(took >= Duration::from_millis(5), "{took:?}");
            disarm();
            assert!(!expired());
            // The next run on the thread starts unmarked.
            arm(Instant::now() + Duration::from_secs(60));
            assert!(!expired());
            disarm();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_earlier_deadline_wakes_a_watchdog_sleeping_for_a_later_one() {
        let far = std::thread::spawn(|| {
            arm(Instant::now() + Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(300));
            disarm();
        });
        std::thread::sleep(Duration::from_millis(50));
        std::thread::spawn(|| {
            let start = Instant::now();
            arm(start + Duration::from_millis(10));
            let took = wait_marked(start);
            assert!(took < Duration::from_millis(200), "{took:?}");
            disarm();
        })
        .join()
        .unwrap();
        far.join().unwrap();
    }
}
