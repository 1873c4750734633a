//! The memory a script run may take: counted by the allocator, checked before
//! every operation.
//!
//! The engine's size limits (string, array, map) are checked where a value is
//! built, but not everywhere a container grows: `m[key] = value` checks the
//! value, not the map it lands in, since measuring the whole map after each
//! insertion would make filling it quadratic. So a script could still fill a
//! map with a hundred thousand keys of a megabyte each. Counting bytes where
//! they are allocated closes every such path at once: the process's allocator
//! is wrapped in [`Counting`], which keeps, per thread, the bytes allocated
//! minus the bytes freed; a run notes that figure when it starts and is
//! stopped with a script error once it has grown by more than
//! [`RUN_MEMORY`].

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// The most memory one run may hold at once (bytes allocated on its thread
/// since it started, less those freed).
pub const RUN_MEMORY: usize = 32 * 1024 * 1024;

thread_local! {
    /// Bytes allocated on this thread minus bytes freed on it (may go negative:
    /// memory is often freed by another thread than the one that took it).
    static NET: Cell<isize> = const { Cell::new(0) };
    /// `NET` when the run on this thread started, if one runs.
    static BASE: Cell<Option<isize>> = const { Cell::new(None) };
}

/// A global allocator that counts bytes per thread (see the module doc).
pub struct Counting<A>(pub A);

#[inline]
fn add(bytes: isize) {
    // `try_with`: the allocator is called while threads start and end too.
    let _ = NET.try_with(|n| n.set(n.get().wrapping_add(bytes)));
}

// SAFETY: every call is passed to the wrapped allocator unchanged; the
// counting touches only a thread-local `Cell` that has no destructor.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: the caller's contract is the wrapped allocator's.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}

/// A run starts on this thread.
pub fn start() {
    BASE.with(|b| b.set(Some(NET.with(Cell::get))));
}

/// The run on this thread has ended.
pub fn end() {
    BASE.with(|b| b.set(None));
}

/// `true` when the run on this thread holds more than [`RUN_MEMORY`].
#[inline]
pub fn over() -> bool {
    BASE.with(|b| {
        b.get()
            .is_some_and(|base| NET.with(Cell::get).wrapping_sub(base) > RUN_MEMORY as isize)
    })
}
