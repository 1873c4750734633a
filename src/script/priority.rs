//! CPU priority of long script runs.
//!
//! The server runs request handling (and the short inline attempts of scripts)
//! on the async threads, and scripts that need more on a blocking thread. A run
//! on a blocking thread that has used more than [`FAIR_SHARE`] of CPU time is
//! a long or runaway run: its thread is lowered to the lowest priority
//! (`nice` 19) until the run ends, so that under CPU contention it takes what is
//! left over and other channels keep their speed. Limits are unchanged: the run
//! is still stopped at its deadline. Without contention it runs as fast as before.
//!
//! Runs on blocking threads also take one of a bounded number of computing
//! slots ([`slots`]), given up while they wait on the network or a commit and
//! for good once they turn out long.
//!
//! Raising the priority back at the end of the run needs `CAP_SYS_NICE` (or an
//! `RLIMIT_NICE` of 20); without it the thread stays low until the runtime
//! retires it (after 10 s idle), which is logged once.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// CPU time a blocking-thread run may use at normal priority.
pub const FAIR_SHARE: Duration = Duration::from_millis(1);

/// The `nice` value of a thread running a long script.
pub const LOW: i32 = 19;

/// Long runs that may have given their computing slot up at once. Past it, a
/// run that turns long keeps its slot (and competes for the CPU with short
/// runs only at low priority): so runaways never take more than this many
/// threads plus the slots, however many are started.
pub const MAX_LONG_RUNS: usize = 32;

/// Long runs that gave their slot up, now.
static LONG_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many script runs may compute on blocking threads at once: 4 per core
/// (at least 4). A run gives its slot up while it waits on the network or a
/// commit ([`while_waiting`]), so slow outbound calls do not hold others up.
/// Without the bound, 32 concurrent runs on one core leave the thread that
/// reads and answers the sockets a 33rd of it, and latency has a long tail.
pub fn slots() -> &'static Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Semaphore::new((cores * 4).max(4)))
    })
}

/// Gives this run's slot up while `wait` waits (an outbound call, a commit),
/// then takes one again; outside a run on a blocking thread it just calls `wait`.
pub fn while_waiting<T>(wait: impl FnOnce() -> T) -> T {
    let held = SLOT.with(|s| s.borrow_mut().take()).is_some();
    let out = wait();
    if held {
        let again = tokio::runtime::Handle::try_current()
            .ok()
            .and_then(|rt| rt.block_on(slots().clone().acquire_owned()).ok());
        SLOT.with(|s| *s.borrow_mut() = again);
    }
    out
}

thread_local! {
    /// The computing slot of the run on this thread.
    static SLOT: RefCell<Option<OwnedSemaphorePermit>> = const { RefCell::new(None) };
    /// The next wall-clock moment at which to look at the run's CPU time.
    static CHECK_AT: Cell<Option<Instant>> = const { Cell::new(None) };
    /// This thread's CPU time when the run started.
    static CPU_AT_START: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// Whether this thread's priority was lowered by the current run.
    static LOWERED: Cell<bool> = const { Cell::new(false) };
    /// Whether the current run counts among the [`MAX_LONG_RUNS`].
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Watches a run on a blocking thread, from its start to its end (when dropped,
/// also by a panic).
pub struct Watch(());

impl Watch {
    /// Starts watching the run about to start on this thread, which holds `slot`.
    pub fn start(slot: Option<OwnedSemaphorePermit>) -> Self {
        SLOT.with(|s| *s.borrow_mut() = slot);
        CPU_AT_START.with(|c| c.set(thread_cpu()));
        CHECK_AT.with(|c| c.set(Some(Instant::now() + FAIR_SHARE)));
        Watch(())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        end();
    }
}

/// Called from the engine's progress hook with the current time: lowers the
/// thread's priority once the run has used its fair share of CPU time.
pub fn check(now: Instant) {
    if LOWERED.with(Cell::get) {
        // A lowered thread still gets whole time slices (milliseconds) now and
        // then; giving the CPU back every check keeps other requests' latency.
        std::thread::yield_now();
        return;
    }
    let due = CHECK_AT.with(|c| c.get().is_some_and(|t| now >= t));
    if !due {
        return;
    }
    let used = thread_cpu().saturating_sub(CPU_AT_START.with(Cell::get));
    if used < FAIR_SHARE {
        // Mostly waiting (webquery, kv), not computing: look again later.
        CHECK_AT.with(|c| c.set(Some(now + FAIR_SHARE - used)));
        return;
    }
    CHECK_AT.with(|c| c.set(None));
    // A long run is background work from now on: it gives its computing slot
    // to the short runs (so runaways cannot hold all the slots), while fewer
    // than MAX_LONG_RUNS have …
    let counted = LONG_RUNS
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_LONG_RUNS).then_some(n + 1)
        })
        .is_ok();
    if counted {
        COUNTED.with(|c| c.set(true));
        SLOT.with(|s| s.borrow_mut().take());
        metrics::gauge!("switchyard_script_long_runs").increment(1.0);
    }
    // … and takes the CPU only when nothing else wants it.
    if set_nice(LOW) {
        LOWERED.with(|l| l.set(true));
        metrics::counter!("switchyard_script_runs_lowered_total").increment(1);
    }
}

/// Ends the watch; gives the thread its normal priority back if it was lowered.
fn end() {
    SLOT.with(|s| s.borrow_mut().take());
    if COUNTED.with(|c| c.replace(false)) {
        LONG_RUNS.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge!("switchyard_script_long_runs").decrement(1.0);
    }
    CHECK_AT.with(|c| c.set(None));
    if LOWERED.with(|l| l.replace(false)) && !set_nice(0) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "a long script run lowered its thread's priority, and it cannot be raised \
                 again without CAP_SYS_NICE: that blocking thread stays low until it is retired"
            )
        });
    }
}

#[cfg(target_os = "linux")]
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Sets the `nice` value of the calling thread only (Linux: a thread id is a process id here).
#[cfg(target_os = "linux")]
fn set_nice(value: i32) -> bool {
    // SAFETY: plain system calls on the calling thread's own id.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, value) == 0 }
}

/// The calling thread's `nice` value.
#[cfg(target_os = "linux")]
pub fn nice() -> i32 {
    // SAFETY: as above; -1 is a valid answer, errno is not needed for the tests' use.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Duration {
    Duration::ZERO
}

#[cfg(not(target_os = "linux"))]
fn set_nice(_: i32) -> bool {
    false
}

#[cfg(not(target_os = "linux"))]
pub fn nice() -> i32 {
    0
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_busy_run_is_lowered_and_a_waiting_one_is_not() {
        // Whether this process may raise a thread's priority again (CAP_SYS_NICE).
        let can_raise = std::thread::spawn(|| set_nice(1) && set_nice(0))
            .join()
            .unwrap();
        std::thread::spawn(move || {
            let start_nice = nice();
            // Waiting (sleeping) past the fair share uses no CPU: not lowered.
            let watch = Watch::start(None);
            std::thread::sleep(FAIR_SHARE * 2);
            check(Instant::now());
            assert_eq!(nice(), start_nice);
            drop(watch);

            // Computing past the fair share: lowered, then restored at the end
            // when the process may (without CAP_SYS_NICE the thread stays low).
            let watch = Watch::start(None);
            let begun = Instant::now();
            while begun.elapsed() < FAIR_SHARE * 3 {
                std::hint::black_box(0u64.wrapping_add(1));
            }
            check(Instant::now());
            assert_eq!(nice(), LOW);
            drop(watch);
            assert_eq!(nice(), if can_raise { start_nice } else { LOW });
        })
        .join()
        .unwrap();
    }
}
