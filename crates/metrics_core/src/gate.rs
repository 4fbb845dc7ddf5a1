//! The admission protocol of an open one-second slot.
//!
//! Recorders never lock.  Each open slot carries one 64-bit word:
//!
//! ```text
//!   state = tag << 32 | writers
//!   tag   = FREE (0) | second + 1 | SEALING (u32::MAX)
//! ```
//!
//! * A recorder *enters* with one `fetch_add(1)`: that both announces it as
//!   an in-flight writer and tells it which second the slot holds.  If the tag
//!   is its second it writes the slot's relaxed counters and *exits* with one
//!   `fetch_sub(1)`.  Two RMWs per record, no loop, on the hot path.
//! * If the tag is another second it retracts its announcement and, without
//!   announcing again, either opens a FREE slot for its second (CAS), waits out
//!   a seal in progress (bounded: a seal copies a few KiB), moves on to a newer
//!   second the slot already holds (its clock read was late), or — when the
//!   slot still holds a second that has ended and nobody sealed it — seals it
//!   itself, so a stalled sealer can never make a recorder wait for it.
//! * A sealer claims a slot with one CAS from `(tag, 0 writers)` to
//!   `(SEALING, 0)`: the CAS can only succeed when no writer of that second is
//!   in flight, so the sealer sees all of their writes and none can follow.
//!   It releases the slot by subtracting `SEALING << 32`, which keeps the
//!   writer bits that retracting recorders may still hold transiently.
//!
//! Memory ordering: a writer's exit is `Release` and the claim CAS is
//! `Acquire`, so every relaxed counter update of the second happens-before the
//! sealer reads it.  The sealer's reset of the counters happens-before the
//! release (`Release`), and whoever next opens the slot reads that release
//! with `Acquire` (the opening CAS and every later entering `fetch_add` are in
//! its release sequence), so no write of a new second can be wiped by the
//! reset of the old one.

use crate::primitive::{spin_loop, AtomicU64, Ordering};

const WRITERS: u64 = 0xFFFF_FFFF;
const FREE: u64 = 0;
const SEALING: u64 = u32::MAX as u64;

/// One open slot's admission word.
#[derive(Debug)]
pub struct SlotGate {
    state: AtomicU64,
}

impl Default for SlotGate {
    fn default() -> Self {
        SlotGate {
            state: AtomicU64::new(FREE << 32),
        }
    }
}

#[inline]
fn tag_of(second: u32) -> u64 {
    second as u64 + 1
}

impl SlotGate {
    /// Enters the slot for `second` and returns the second actually entered:
    /// `second`, or a newer second the slot already holds.  The caller must
    /// call [`exit`](Self::exit) after writing.
    ///
    /// `seal_stale(old_second)` runs while this recorder owns the slot in
    /// SEALING state, when the slot still held an ended, unsealed second: it
    /// must harvest and reset the slot's counters.
    #[inline]
    pub fn enter(&self, second: u32, mut seal_stale: impl FnMut(u32)) -> u32 {
        let mut want = tag_of(second);
        // Step 1 (hot path): announce ourselves and learn the slot's tag in
        // one RMW.  AcqRel: Acquire pairs with the release that last
        // opened/reset the slot; Release orders nothing before it but keeps
        // the RMW in the release sequence that later entrants acquire.
        let mut prev = self.state.fetch_add(1, Ordering::AcqRel);
        loop {
            if prev >> 32 == want {
                return (want - 1) as u32;
            }
            // Step 2: wrong second, so retract the announcement; until we
            // re-enter we are invisible to sealers.
            self.state.fetch_sub(1, Ordering::Relaxed);
            loop {
                let cur = self.state.load(Ordering::Acquire);
                let tag = cur >> 32;
                if tag == want {
                    break;
                } else if tag == FREE {
                    // Step 3a: open the free slot for our second, keeping the
                    // writer bits of recorders that are retracting.
                    let open = (want << 32) | (cur & WRITERS);
                    if self
                        .state
                        .compare_exchange(cur, open, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        break;
                    }
                } else if tag == SEALING {
                    // Step 3b: a seal is copying the slot out; it is bounded.
                    spin_loop();
                } else if tag < want {
                    // Step 3c: an ended second nobody sealed.  Claim it the
                    // way a sealer does (only with no writer of it in flight)
                    // and seal it ourselves.
                    if cur & WRITERS == 0
                        && self
                            .state
                            .compare_exchange(
                                cur,
                                SEALING << 32,
                                Ordering::Acquire,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                    {
                        seal_stale((tag - 1) as u32);
                        self.release();
                    } else {
                        spin_loop();
                    }
                } else {
                    // Step 3d: the slot already holds a newer second: our
                    // clock read was late (preempted); record into it.
                    want = tag;
                    break;
                }
            }
            // Step 4: announce again and re-check.
            prev = self.state.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Leaves the slot.  Release: publishes this writer's relaxed updates to
    /// the sealer whose claim CAS will read this (or a later) value.
    #[inline]
    pub fn exit(&self) {
        self.state.fetch_sub(1, Ordering::Release);
    }

    /// For sealers: if the slot holds a second earlier than `before`, waits
    /// until its in-flight writers have left, moves it to SEALING and returns
    /// that second.  The caller must harvest, reset and [`release`](Self::release).
    pub fn claim_ended(&self, before: u32) -> Option<u32> {
        loop {
            let cur = self.state.load(Ordering::Acquire);
            let tag = cur >> 32;
            if tag == FREE || tag == SEALING || tag > before as u64 {
                // Free, being sealed by a recorder, or still current.
                return None;
            }
            if cur & WRITERS != 0 {
                // Stragglers of an ended second, or recorders retracting:
                // both leave within a few instructions.
                spin_loop();
                continue;
            }
            // Acquire: synchronises with every writer's Release exit.
            if self
                .state
                .compare_exchange(cur, SEALING << 32, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return Some((tag - 1) as u32);
            }
        }
    }

    /// SEALING → FREE.  Subtracting keeps writer bits that recorders may
    /// hold between their optimistic enter and their retraction.  Release:
    /// the reset of the counters happens-before the next opening.
    pub fn release(&self) {
        self.state.fetch_sub(SEALING << 32, Ordering::Release);
    }

    /// The second the slot is open for, if any (a racy hint for readers).
    pub fn open_second(&self) -> Option<u32> {
        let tag = self.state.load(Ordering::Acquire) >> 32;
        (tag != FREE && tag != SEALING).then(|| (tag - 1) as u32)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64 as StdU64;
    use std::sync::Arc;

    #[test]
    fn enter_opens_free_slot_and_exit_leaves() {
        let g = SlotGate::default();
        assert_eq!(g.open_second(), None);
        assert_eq!(g.enter(7, |_| panic!("nothing to seal")), 7);
        g.exit();
        assert_eq!(g.open_second(), Some(7));
        assert_eq!(g.claim_ended(7), None, "second 7 is still current");
        assert_eq!(g.claim_ended(8), Some(7));
        g.release();
        assert_eq!(g.open_second(), None);
    }

    #[test]
    fn recorder_seals_a_stale_second_itself() {
        let g = SlotGate::default();
        g.enter(3, |_| unreachable!());
        g.exit();
        let mut sealed = vec![];
        assert_eq!(g.enter(11, |s| sealed.push(s)), 11);
        g.exit();
        assert_eq!(sealed, vec![3]);
        assert_eq!(g.open_second(), Some(11));
    }

    #[test]
    fn late_clock_read_joins_the_newer_second() {
        let g = SlotGate::default();
        g.enter(12, |_| unreachable!());
        g.exit();
        assert_eq!(g.enter(8, |_| unreachable!()), 12);
        g.exit();
    }

    /// Many threads, seconds moving under them, a concurrent sealer: every
    /// unit written is harvested exactly once.
    #[test]
    fn stress_exact_totals_with_concurrent_sealer() {
        const THREADS: u64 = 4;
        const PER: u64 = 50_000;
        let gate = Arc::new(SlotGate::default());
        let data = Arc::new(StdU64::new(0));
        let harvested = Arc::new(StdU64::new(0));
        let clock = Arc::new(StdU64::new(0));
        let done = Arc::new(StdU64::new(0));
        let mut hs = vec![];
        for _ in 0..THREADS {
            let (gate, data, harvested, clock, done) = (
                gate.clone(),
                data.clone(),
                harvested.clone(),
                clock.clone(),
                done.clone(),
            );
            hs.push(std::thread::spawn(move || {
                for i in 0..PER {
                    if i % 1000 == 0 {
                        clock.fetch_add(1, Ordering::Relaxed);
                    }
                    let s = clock.load(Ordering::Relaxed) as u32;
                    gate.enter(s, |_| {
                        harvested.fetch_add(data.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                    });
                    data.fetch_add(1, Ordering::Relaxed);
                    gate.exit();
                }
                done.fetch_add(1, Ordering::Release);
            }));
        }
        while done.load(Ordering::Acquire) < THREADS {
            let now = clock.load(Ordering::Relaxed) as u32;
            if gate.claim_ended(now).is_some() {
                harvested.fetch_add(data.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                gate.release();
            }
            std::thread::yield_now();
        }
        for h in hs {
            h.join().unwrap();
        }
        if gate.claim_ended(u32::MAX - 2).is_some() {
            harvested.fetch_add(data.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            gate.release();
        }
        assert_eq!(harvested.load(Ordering::Relaxed), THREADS * PER);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! `RUSTFLAGS="--cfg loom" cargo test -p metrics_core --release --lib loom`
    use super::*;
    use loom::sync::atomic::AtomicU64 as LoomU64;
    use loom::sync::Arc;

    /// Two recorders (one of them in a later second) and a sealer: the units
    /// written are harvested exactly once, in every interleaving.
    #[test]
    fn loom_no_write_lost_or_double_counted() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(2);
        model.max_branches = 100_000;
        model.check(|| {
            let gate = Arc::new(SlotGate::default());
            let data = Arc::new(LoomU64::new(0));
            let harvested = Arc::new(LoomU64::new(0));
            let spawn_writer = |second: u32| {
                let (gate, data, harvested) = (gate.clone(), data.clone(), harvested.clone());
                loom::thread::spawn(move || {
                    gate.enter(second, |_| {
                        harvested.fetch_add(data.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                    });
                    data.fetch_add(1, Ordering::Relaxed);
                    gate.exit();
                })
            };
            let a = spawn_writer(0);
            let b = spawn_writer(1);
            if gate.claim_ended(1).is_some() {
                harvested.fetch_add(data.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                gate.release();
            }
            a.join().unwrap();
            b.join().unwrap();
            if gate.claim_ended(u32::MAX - 2).is_some() {
                harvested.fetch_add(data.swap(0, Ordering::Relaxed), Ordering::Relaxed);
                gate.release();
            }
            assert_eq!(harvested.load(Ordering::Relaxed), 2);
        });
    }
}
