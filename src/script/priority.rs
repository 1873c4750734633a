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
//! for good once they turn out long. The slots are shared fairly between
//! channels: one channel holds at most [`Slots::cap`] of them and
//! [`MAX_LONG_RUNS_PER_CHANNEL`] long-run places; a freed slot goes to the
//! waiting run whose channel holds the fewest; and a long run that kept its
//! slot hands it over at its next check when a channel holding fewer waits.
//! So another channel's run gets a slot within milliseconds, however many
//! runaways one channel starts.
//!
//! Raising the priority back at the end of the run needs `CAP_SYS_NICE` (or an
//! `RLIMIT_NICE` of 20); without it the thread stays low until the runtime
//! retires it (after 10 s idle), which is logged once.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// CPU time a blocking-thread run may use at normal priority.
pub const FAIR_SHARE: Duration = Duration::from_millis(1);

/// The `nice` value of a thread running a long script.
pub const LOW: i32 = 19;

/// Long runs that may have given their computing slot up at once. Past it, a
/// run that turns long keeps its slot (and competes for the CPU with short
/// runs only at low priority): so runaways never take more than this many
/// threads plus the slots, however many are started.
pub const MAX_LONG_RUNS: usize = 32;

/// Long runs of one channel that may have given their slot up at once: half
/// the places, so that a channel's runaways leave the rest to other channels.
pub const MAX_LONG_RUNS_PER_CHANNEL: usize = MAX_LONG_RUNS / 2;

/// Long runs that gave their slot up, now.
static LONG_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many script runs may compute on blocking threads at once: 4 per core
/// (at least 4). A run gives its slot up while it waits on the network or a
/// commit ([`while_waiting`]), so slow outbound calls do not hold others up.
/// Without the bound, 32 concurrent runs on one core leave the thread that
/// reads and answers the sockets a 33rd of it, and latency has a long tail.
pub fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Slots::new((cores * 4).max(4))
    })
}

/// The computing slots, shared fairly between channels.
pub struct Slots {
    total: usize,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    free: usize,
    /// Slots held, and long-run places taken, per channel (entries at 0 are removed).
    held: HashMap<Arc<str>, Holding>,
    /// Runs waiting for a slot, oldest first.
    waiting: VecDeque<(Arc<str>, oneshot::Sender<Slot>)>,
}

#[derive(Default, Clone, Copy)]
struct Holding {
    slots: usize,
    long: usize,
}

impl SlotState {
    /// Slots `channel` holds now.
    fn held(&self, channel: &str) -> usize {
        self.held.get(channel).map_or(0, |h| h.slots)
    }

    /// Forgets `channel` once it holds nothing.
    fn tidy(&mut self, channel: &str) {
        if self
            .held
            .get(channel)
            .is_some_and(|h| h.slots == 0 && h.long == 0)
        {
            self.held.remove(channel);
        }
    }
}

/// One computing slot, held for `channel` until dropped.
pub struct Slot {
    /// `None` once counted back by [`Slots::hand_out`] itself.
    channel: Option<Arc<str>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(channel) = &self.channel {
            slots().release(channel);
        }
    }
}

impl Slots {
    fn new(total: usize) -> Self {
        Self {
            total,
            state: Mutex::new(SlotState {
                free: total,
                ..SlotState::default()
            }),
        }
    }

    /// The most slots one channel holds at once: three quarters (at least
    /// one), so one channel's runs always leave some to the others.
    pub fn cap(&self) -> usize {
        (self.total - self.total / 4).max(1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a run of `channel`: at once when one is free and the channel
    /// is under its cap and nobody waits ahead of it, else in fair order.
    pub async fn acquire(&self, channel: &Arc<str>) -> Slot {
        let waiting = {
            let mut state = self.lock();
            if state.free > 0 && state.held(channel) < self.cap() && state.waiting.is_empty() {
                state.free -= 1;
                state.held.entry(channel.clone()).or_default().slots += 1;
                return Slot {
                    channel: Some(channel.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.push_back((channel.clone(), tx));
            // Free slots that waiting runs of capped channels could not take.
            self.hand_out(&mut state);
            rx
        };
        // Each `Slots::release` hands a slot to a live waiter or frees it.
        waiting
            .await
            .expect("a waiting run is always handed a slot or dropped")
    }

    /// Gives a slot of `channel` back: to the waiting run whose channel holds
    /// the fewest (under its cap; the oldest of those first), else it is free.
    fn release(&self, channel: &Arc<str>) {
        let mut state = self.lock();
        if let Some(h) = state.held.get_mut(channel) {
            h.slots = h.slots.saturating_sub(1);
        }
        state.tidy(channel);
        state.free += 1;
        self.hand_out(&mut state);
    }

    /// Hands free slots to waiting runs, fewest-held channel first.
    fn hand_out(&self, state: &mut SlotState) {
        while state.free > 0 {
            state.waiting.retain(|(_, tx)| !tx.is_closed());
            let next = state
                .waiting
                .iter()
                .enumerate()
                .filter(|(_, (c, _))| state.held(c) < self.cap())
                .min_by_key(|(i, (c, _))| (state.held(c), *i))
                .map(|(i, _)| i);
            let Some((channel, tx)) = next.and_then(|i| state.waiting.remove(i)) else {
                return;
            };
            state.free -= 1;
            state.held.entry(channel.clone()).or_default().slots += 1;
            if let Err(mut slot) = tx.send(Slot {
                channel: Some(channel),
            }) {
                // Gave up waiting just now: count the slot back here (the
                // lock is held, so not through `release`).
                if let Some(channel) = slot.channel.take() {
                    if let Some(h) = state.held.get_mut(&channel) {
                        h.slots -= 1;
                    }
                }
                state.free += 1;
            }
        }
    }

    /// Whether a run of another channel holding fewer slots than `channel`
    /// (or none) waits: then a long run of `channel` hands its slot over.
    fn wanted_elsewhere(&self, channel: &Arc<str>) -> bool {
        let state = self.lock();
        if state.waiting.is_empty() {
            return false;
        }
        let mine = state.held(channel);
        state
            .waiting
            .iter()
            .any(|(c, tx)| c != channel && !tx.is_closed() && state.held(c) < mine)
    }

    /// Takes one of `channel`'s long-run places, if it has one left.
    fn take_long_place(&self, channel: &Arc<str>) -> bool {
        let mut state = self.lock();
        let h = state.held.entry(channel.clone()).or_default();
        if h.long >= MAX_LONG_RUNS_PER_CHANNEL {
            return false;
        }
        let counted = LONG_RUNS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_LONG_RUNS).then_some(n + 1)
            })
            .is_ok();
        if counted {
            h.long += 1;
        } else {
            state.tidy(channel);
        }
        counted
    }

    fn give_long_place_back(&self, channel: &Arc<str>) {
        let mut state = self.lock();
        if let Some(h) = state.held.get_mut(channel) {
            h.long = h.long.saturating_sub(1);
        }
        state.tidy(channel);
        LONG_RUNS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Gives this run's slot up while `wait` waits (an outbound call, a commit),
/// then takes one again; outside a run on a blocking thread it just calls `wait`.
pub fn while_waiting<T>(wait: impl FnOnce() -> T) -> T {
    let held = SLOT.with(|s| s.borrow_mut().take());
    let channel = held.as_ref().and_then(|s| s.channel.clone());
    drop(held);
    let out = wait();
    if let Some(channel) = channel {
        take_again(&channel);
    }
    out
}

/// Waits (on this blocking thread) for a slot of `channel` again, for what
/// is left of the run's time at most: past it the run stops at its next
/// check anyway.
fn take_again(channel: &Arc<str>) {
    let left = super::remaining();
    let again = tokio::runtime::Handle::try_current().ok().and_then(|rt| {
        rt.block_on(async {
            tokio::time::timeout(left, slots().acquire(channel))
                .await
                .ok()
        })
    });
    SLOT.with(|s| *s.borrow_mut() = again);
}

thread_local! {
    /// The computing slot of the run on this thread (it knows its channel).
    static SLOT: RefCell<Option<Slot>> = const { RefCell::new(None) };
    /// The next wall-clock moment at which to look at the run's CPU time.
    static CHECK_AT: Cell<Option<Instant>> = const { Cell::new(None) };
    /// This thread's CPU time when the run started.
    static CPU_AT_START: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// Whether this thread's priority was lowered by the current run.
    static LOWERED: Cell<bool> = const { Cell::new(false) };
    /// The channel whose long-run place the current run holds, if it counts
    /// among the [`MAX_LONG_RUNS`].
    static COUNTED: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// Watches a run on a blocking thread, from its start to its end (when dropped,
/// also by a panic).
pub struct Watch(());

impl Watch {
    /// Starts watching the run about to start on this thread, which holds `slot`.
    pub fn start(slot: Option<Slot>) -> Self {
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
        // A long run that kept its slot hands it to a channel holding fewer.
        hand_over_if_wanted();
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
    // than MAX_LONG_RUNS (and its channel's share of them) have …
    let channel = super::with_context(|c| c.map(|c| Arc::<str>::from(c.channel.code())));
    let counted = channel.filter(|c| slots().take_long_place(c));
    if let Some(channel) = counted {
        COUNTED.with(|c| *c.borrow_mut() = Some(channel));
        SLOT.with(|s| s.borrow_mut().take());
        metrics::gauge!("switchyard_script_long_runs").increment(1.0);
    }
    // … and takes the CPU only when nothing else wants it.
    if set_nice(LOW) {
        LOWERED.with(|l| l.set(true));
        metrics::counter!("switchyard_script_runs_lowered_total").increment(1);
    }
}

/// Hands this run's slot over (and waits for one again) when a run of a
/// channel holding fewer slots waits.
fn hand_over_if_wanted() {
    let Some(channel) = SLOT.with(|s| s.borrow().as_ref().and_then(|s| s.channel.clone())) else {
        return;
    };
    if !slots().wanted_elsewhere(&channel) {
        return;
    }
    SLOT.with(|s| s.borrow_mut().take());
    metrics::counter!("switchyard_script_slots_handed_over_total").increment(1);
    take_again(&channel);
}

/// Ends the watch; gives the thread its normal priority back if it was lowered.
fn end() {
    SLOT.with(|s| s.borrow_mut().take());
    if let Some(channel) = COUNTED.with(|c| c.borrow_mut().take()) {
        slots().give_long_place_back(&channel);
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
