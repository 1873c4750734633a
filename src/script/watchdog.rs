//! Stops a run at its deadline between any two of its operations.
//!
//! The engine's progress hook runs before every operation, but reading the
//! clock there costs more than many operations do, so it reads the clock only
//! every [`CLOCK_EVERY_OPS`](super::limits::CLOCK_EVERY_OPS) operations. That
//! alone lets a script whose operations are each slow (a large `to_json`, a
//! long string replace) run far past its deadline, and hold an async thread
//! far past the inline budget. So one watchdog thread looks at the clock for
//! every run: each thread that runs scripts has a [`Slot`] holding its run's
//! deadline, and the watchdog, every [`TICK`], marks the slots whose deadline
//! has passed. The progress hook reads that mark before every operation (one
//! relaxed atomic load). A run is thus stopped within one operation of
//! `deadline + TICK`.
//!
//! The watchdog sleeps (parks) after [`IDLE_AFTER`] without runs, and the next
//! run wakes it: a busy server does not pay a wake-up per run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often the watchdog looks at the deadlines.
pub const TICK: Duration = Duration::from_micros(500);

/// Without a run for this long, the watchdog parks until the next one.
pub const IDLE_AFTER: Duration = Duration::from_secs(1);

/// The deadline of the run on one thread, and the watchdog's mark.
#[derive(Default)]
struct Slot {
    /// The run's deadline in nanoseconds since [`epoch`]; 0: no run.
    deadline: AtomicU64,
    /// The deadline the watchdog found passed (compared with `deadline`, so a
    /// mark meant for an earlier run never stops a later one).
    expired: AtomicU64,
    /// Runs started on this thread, so the watchdog can tell activity.
    runs: AtomicU64,
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

/// Whether the watchdog is parked (so the next run must wake it).
static PARKED: AtomicBool = AtomicBool::new(false);

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
    MINE.with(|m| {
        m.0.runs.fetch_add(1, Ordering::Relaxed);
        m.0.deadline.store(at, Ordering::SeqCst);
    });
    let thread = watchdog();
    if PARKED.load(Ordering::SeqCst) && PARKED.swap(false, Ordering::SeqCst) {
        thread.unpark();
    }
}

/// The run on this thread has ended.
pub fn disarm() {
    MINE.with(|m| m.0.deadline.store(0, Ordering::SeqCst));
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
    let mut last_runs = 0u64;
    let mut last_active = Instant::now();
    loop {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let at = nanos(now);
        let (runs, armed) = scan(at);
        if armed || runs != last_runs {
            last_runs = runs;
            last_active = now;
            continue;
        }
        if now.duration_since(last_active) < IDLE_AFTER {
            continue;
        }
        // Park, unless a run started meanwhile: `arm` stores its deadline before
        // it reads PARKED, and this stores PARKED before it scans again.
        PARKED.store(true, Ordering::SeqCst);
        let (runs, armed) = scan(at);
        if armed || runs != last_runs {
            PARKED.store(false, Ordering::SeqCst);
            last_runs = runs;
            last_active = now;
            continue;
        }
        while PARKED.load(Ordering::SeqCst) {
            std::thread::park();
        }
        last_active = Instant::now();
    }
}

/// Marks the runs past their deadline; returns the total runs started and
/// whether any run is under way.
fn scan(now: u64) -> (u64, bool) {
    let mut runs = 0u64;
    let mut armed = false;
    for slot in slots().iter() {
        runs = runs.wrapping_add(slot.runs.load(Ordering::Relaxed));
        let deadline = slot.deadline.load(Ordering::SeqCst);
        if deadline != 0 {
            armed = true;
            if now >= deadline {
                slot.expired.store(deadline, Ordering::Relaxed);
            }
        }
    }
    (runs, armed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_marked_soon_after_its_deadline_and_only_that_run() {
        std::thread::spawn(|| {
            let start = Instant::now();
            arm(start + Duration::from_millis(5));
            while !expired() {
                assert!(start.elapsed() < Duration::from_secs(2), "never marked");
                std::hint::spin_loop();
            }
            let took = start.elapsed();
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
    fn the_watchdog_wakes_after_parking() {
        std::thread::spawn(|| {
            arm(Instant::now());
            disarm();
            // Long enough for the watchdog to park.
            std::thread::sleep(IDLE_AFTER + Duration::from_millis(100));
            let start = Instant::now();
            arm(start + Duration::from_millis(2));
            while !expired() {
                assert!(start.elapsed() < Duration::from_secs(2), "never woke");
                std::hint::spin_loop();
            }
            disarm();
        })
        .join()
        .unwrap();
    }
}
