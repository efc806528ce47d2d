//! An allocator that remembers the largest single allocation each thread
//! asked for, so that a fuzz target can check that a decoder never
//! allocates from a length a peer announced but did not send. A test binary
//! or driver installs it with `#[global_allocator]`; without it the check
//! is skipped.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

/// The system allocator, with the largest request per thread recorded.
pub struct Tracking;

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    INSTALLED.store(true, Ordering::Relaxed);
    // `try_with`: allocations while the thread is being torn down.
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// Forgets what this thread allocated so far.
pub fn reset() {
    let _ = LARGEST.try_with(|l| l.set(0));
}

/// The largest allocation this thread asked for since [`reset`]; `None` when
/// [`Tracking`] is not the global allocator.
pub fn largest() -> Option<usize> {
    if !INSTALLED.load(Ordering::Relaxed) {
        return None;
    }
    LARGEST.try_with(Cell::get).ok()
}
