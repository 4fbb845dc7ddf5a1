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

/// Every request kind of the steady state below, once.
fn burst(s: &metrics_core::Service, i: u64) {
    s.record(1.0 + (i % 1000) as f64, None).unwrap();
    if i % 1000 == 0 {
        s.record(5.0, Some("timeout")).unwrap();
        s.set_queue(1, 2).unwrap();
        s.set_resources(&[(Gauge::VramUsedBytes, 1e9)]).unwrap();
        s.health(true, Some(1.0)).unwrap();
        s.record_processing(10.0).unwrap();
    }
}

/// Open seconds a service keeps (`open_slot::OPEN_SLOTS`).
const OPEN_SLOTS: u64 = 4;

#[test]
fn record_success_path_does_not_allocate() {
    // A manual clock, so the test decides when seconds end; sealing (the
    // sealer thread's job in real use) happens outside the watched spans.
    let m = Monitor::new(MonitorConfig::default(), Clock::manual(1.7e9)).unwrap();
    let s = m.service("hot").unwrap();
    // Warm-up: each open slot allocates its histogram octaves the first
    // time a value lands in one (`histogram::AtomicBins`), the error type
    // is interned and the processing counters are allocated once.
    let mut warm_allocs = 0;
    for _ in 0..OPEN_SLOTS {
        WATCH.with(|w| w.set(true));
        for i in 0..1000 {
            burst(&s, i);
        }
        WATCH.with(|w| w.set(false));
        warm_allocs += ALLOCS.with(|a| a.replace(0));
        m.advance(1.0).unwrap();
        m.seal_all();
    }
    // Bounded, and counted: the error name (its box and string), the
    // processing counters (one table, plus each slot's octave table), and
    // per slot one chunk per octave touched: 1..1000 ms spans 10 latency
    // octaves, 10 ms one processing octave.
    let bound = 2 + (1 + OPEN_SLOTS) + OPEN_SLOTS * (10 + 1);
    assert!(
        warm_allocs <= bound,
        "warm-up allocated {warm_allocs} times (bound {bound})"
    );
    // Steady state: 200 000 records over 8 seconds allocate nothing.
    for second in 0..8u64 {
        WATCH.with(|w| w.set(true));
        for i in 0..25_000 {
            burst(&s, second * 25_000 + i);
        }
        WATCH.with(|w| w.set(false));
        m.advance(1.0).unwrap();
        m.seal_all();
    }
    let n = ALLOCS.with(|a| a.get());
    assert_eq!(n, 0, "the record path allocated {n} times");
    let want = OPEN_SLOTS * (1000 + 1) + 200_000 + 200;
    assert_eq!(m.stats("hot", 300).unwrap().count, want);
    m.close();
}
