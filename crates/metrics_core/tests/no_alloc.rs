//! The success path of `record` allocates nothing: a counting allocator
//! watches the recording thread while it records in steady state.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use metrics_core::{Clock, Gauge, Monitor, MonitorConfig};

struct Counting;

thread_local! {
    static WATCH: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged; the
// bookkeeping only touches const-initialised thread-locals (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCH.with(|w| w.get()) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: forwarded with the caller's layout contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn record_success_path_does_not_allocate() {
    let m = Monitor::new(MonitorConfig::default(), Clock::system()).unwrap();
    let s = m.service("hot").unwrap();
    s.record(1.0, Some("timeout")).unwrap(); // interns the error type once
    s.record_processing(1.0).unwrap(); // allocates the processing counters once
    s.record(1.0, None).unwrap();
    WATCH.with(|w| w.set(true));
    for i in 0..200_000 {
        s.record(1.0 + (i % 1000) as f64, None).unwrap();
        if i % 1000 == 0 {
            s.record(5.0, Some("timeout")).unwrap();
            s.set_queue(1, 2).unwrap();
            s.set_resources(&[(Gauge::VramUsedBytes, 1e9)]).unwrap();
            s.health(true, Some(1.0)).unwrap();
            s.record_processing(10.0).unwrap();
        }
    }
    WATCH.with(|w| w.set(false));
    let n = ALLOCS.with(|a| a.get());
    assert_eq!(n, 0, "the record path allocated {n} times");
    assert_eq!(m.stats("hot", 300).unwrap().count, 200_000 + 200 + 2);
    m.close();
}
