//! The open seconds of one service: a ring of `OPEN_SLOTS` slots written by
//! recorders without locks and harvested into [`Agg`]s by the sealer.
//!
//! A record of second `s` goes to slot `s % OPEN_SLOTS`, is admitted by the
//! slot's [`SlotGate`], and touches only relaxed atomics of that slot: one
//! bin increment, one sum update, and min/max only when they change.  With a
//! sealer running every 250 ms a slot is sealed about 1 s after its second
//! ends, so recorders find their slot open or free; with a stalled sealer
//! (or a manual clock jumping ahead) the recorder that finds an ended second
//! in its slot seals it itself and hands it over through [`Handoff`].

use crate::agg::{Agg, DurationAgg, Gauge, GaugeAgg, HealthAgg, QueueAgg};
use crate::gate::SlotGate;
use crate::handoff::Handoff;
use crate::histogram::{AtomicBins, BinLayout, SparseBins, LATENCY_BINS, PROCESSING_BINS};
use crate::primitive::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Open seconds per service.  Four gives the sealer three seconds of slack
/// before a recorder has to seal for it.
pub const OPEN_SLOTS: usize = 4;
/// Distinct error types kept per service; more are counted under "other".
pub const MAX_ERROR_TYPES: usize = 32;
/// Interned id of the catch-all error type.
pub const OTHER_ERROR: u8 = MAX_ERROR_TYPES as u8;

/// `f64` stored as bits, with the few read-modify-writes we need.
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn new(v: f64) -> Self {
        AtomicF64(AtomicU64::new(v.to_bits()))
    }
    fn load(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn swap(&self, v: f64) -> f64 {
        f64::from_bits(self.0.swap(v.to_bits(), Ordering::Relaxed))
    }
    /// Lock-free add: a CAS loop that, uncontended, succeeds first time.
    #[inline]
    fn add(&self, v: f64) {
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + v).to_bits();
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
    /// Keeps the smaller value; a plain load first, so the common case (no
    /// new minimum) writes nothing.
    #[inline]
    fn min(&self, v: f64) {
        let mut cur = self.0.load(Ordering::Relaxed);
        while v < f64::from_bits(cur) {
            match self.0.compare_exchange_weak(
                cur,
                v.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
    #[inline]
    fn max(&self, v: f64) {
        let mut cur = self.0.load(Ordering::Relaxed);
        while v > f64::from_bits(cur) {
            match self.0.compare_exchange_weak(
                cur,
                v.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// Atomic counterpart of [`DurationAgg`]; the count is the sum of the bins.
struct AtomicDuration {
    sum: AtomicF64,
    min: AtomicF64,
    max: AtomicF64,
    bins: AtomicBins,
}

impl AtomicDuration {
    fn new(layout: BinLayout) -> Self {
        AtomicDuration {
            sum: AtomicF64::new(0.0),
            min: AtomicF64::new(f64::INFINITY),
            max: AtomicF64::new(f64::NEG_INFINITY),
            bins: AtomicBins::new(layout),
        }
    }

    #[inline]
    fn add(&self, v: f64) {
        self.bins.add(v, 1);
        self.sum.add(v);
        self.min.min(v);
        self.max.max(v);
    }

    fn harvest(&self, reset: bool) -> DurationAgg {
        let bins = self.bins.collect(reset);
        let (sum, min, max) = if reset {
            (
                self.sum.swap(0.0),
                self.min.swap(f64::INFINITY),
                self.max.swap(f64::NEG_INFINITY),
            )
        } else {
            (self.sum.load(), self.min.load(), self.max.load())
        };
        DurationAgg {
            count: bins.total(),
            sum_ms: sum,
            min_ms: min,
            max_ms: max,
            bins,
        }
    }
}

struct AtomicGauge {
    n: AtomicU64,
    sum: AtomicF64,
    min: AtomicF64,
    max: AtomicF64,
}

/// The counters of one open second.
pub struct SlotData {
    latency: AtomicDuration,
    /// Failures per interned error type; their sum is the error count, so
    /// a concurrent peek can never see counts that disagree.
    error_types: [AtomicU32; MAX_ERROR_TYPES + 1],
    queue_n: AtomicU64,
    queue_sum: AtomicU64,
    queue_max: AtomicU64,
    gauges: [AtomicGauge; Gauge::ALL.len()],
    health_up: AtomicU32,
    health_down: AtomicU32,
    /// `((ns + 1) << 1) | up` of the latest result, 0 for none: `fetch_max`
    /// keeps the latest whatever order recorders arrive in.
    health_last: AtomicU64,
    health_latency_n: AtomicU32,
    health_latency_sum: AtomicF64,
}

impl SlotData {
    fn new() -> Self {
        SlotData {
            latency: AtomicDuration::new(LATENCY_BINS),
            error_types: std::array::from_fn(|_| AtomicU32::new(0)),
            queue_n: AtomicU64::new(0),
            queue_sum: AtomicU64::new(0),
            queue_max: AtomicU64::new(0),
            gauges: std::array::from_fn(|_| AtomicGauge {
                n: AtomicU64::new(0),
                sum: AtomicF64::new(0.0),
                min: AtomicF64::new(f64::INFINITY),
                max: AtomicF64::new(f64::NEG_INFINITY),
            }),
            health_up: AtomicU32::new(0),
            health_down: AtomicU32::new(0),
            health_last: AtomicU64::new(0),
            health_latency_n: AtomicU32::new(0),
            health_latency_sum: AtomicF64::new(0.0),
        }
    }

    /// One request.  `error`: interned error id of a failure.
    #[inline]
    pub fn record(&self, latency_ms: f64, error: Option<u8>) {
        self.latency.add(latency_ms);
        if let Some(id) = error {
            self.error_types[id as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A batch of requests (already validated): bins are counted one by one,
    /// the scalars are folded locally and published once.
    pub fn record_batch(&self, latencies_ms: &[f64], ok: Option<&[bool]>, error: u8) {
        let (mut sum, mut min, mut max) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
        for &v in latencies_ms {
            self.latency.bins.add(v, 1);
            sum += v;
            min = min.min(v);
            max = max.max(v);
        }
        if latencies_ms.is_empty() {
            return;
        }
        self.latency.sum.add(sum);
        self.latency.min.min(min);
        self.latency.max.max(max);
        if let Some(ok) = ok {
            let failed = ok.iter().filter(|&&b| !b).count() as u64;
            if failed > 0 {
                self.error_types[error as usize].fetch_add(failed as u32, Ordering::Relaxed);
            }
        }
    }

    pub fn queue(&self, depth: u64) {
        self.queue_n.fetch_add(1, Ordering::Relaxed);
        self.queue_sum.fetch_add(depth, Ordering::Relaxed);
        self.queue_max.fetch_max(depth, Ordering::Relaxed);
    }

    pub fn gauge(&self, g: Gauge, v: f64) {
        let a = &self.gauges[g as usize];
        a.n.fetch_add(1, Ordering::Relaxed);
        a.sum.add(v);
        a.min.min(v);
        a.max.max(v);
    }

    pub fn health(&self, up: bool, at_ns: u64, latency_ms: Option<f64>) {
        if up {
            self.health_up.fetch_add(1, Ordering::Relaxed);
        } else {
            self.health_down.fetch_add(1, Ordering::Relaxed);
        }
        self.health_last
            .fetch_max(((at_ns + 1) << 1) | up as u64, Ordering::Relaxed);
        if let Some(ms) = latency_ms {
            self.health_latency_n.fetch_add(1, Ordering::Relaxed);
            self.health_latency_sum.add(ms);
        }
    }

    /// Reads the counters into an [`Agg`]; with `reset` (sealer, owning the
    /// slot exclusively) zeroes them for the slot's next second.
    fn harvest(&self, reset: bool) -> Agg {
        let take64 = |a: &AtomicU64| {
            if reset {
                a.swap(0, Ordering::Relaxed)
            } else {
                a.load(Ordering::Relaxed)
            }
        };
        let take32 = |a: &AtomicU32| {
            if reset {
                a.swap(0, Ordering::Relaxed)
            } else {
                a.load(Ordering::Relaxed)
            }
        };
        let error_types: Vec<(u8, u32)> = self
            .error_types
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let n = take32(a);
                (n != 0).then_some((i as u8, n))
            })
            .collect();
        let gauges = Gauge::ALL
            .iter()
            .filter_map(|&g| {
                let a = &self.gauges[g as usize];
                let n = take64(&a.n);
                if n == 0 {
                    return None;
                }
                let agg = if reset {
                    GaugeAgg {
                        n,
                        sum: a.sum.swap(0.0),
                        min: a.min.swap(f64::INFINITY),
                        max: a.max.swap(f64::NEG_INFINITY),
                    }
                } else {
                    GaugeAgg {
                        n,
                        sum: a.sum.load(),
                        min: a.min.load(),
                        max: a.max.load(),
                    }
                };
                Some((g, agg))
            })
            .collect();
        let last = take64(&self.health_last);
        let health = HealthAgg {
            up: take32(&self.health_up),
            down: take32(&self.health_down),
            last: (last != 0).then(|| ((last >> 1) - 1, last & 1 == 1)),
            latency_n: take32(&self.health_latency_n),
            latency_sum_ms: if reset {
                self.health_latency_sum.swap(0.0)
            } else {
                self.health_latency_sum.load()
            },
        };
        Agg {
            latency: self.latency.harvest(reset),
            errors: error_types.iter().map(|&(_, n)| n as u64).sum(),
            error_types,
            processing: DurationAgg::empty(SparseBins::empty(PROCESSING_BINS)),
            queue: QueueAgg {
                n: take64(&self.queue_n),
                depth_sum: take64(&self.queue_sum),
                depth_max: take64(&self.queue_max),
            },
            gauges,
            health,
        }
    }

    fn heap_bytes(&self) -> usize {
        self.latency.bins.heap_bytes()
    }
}

struct Slot {
    gate: SlotGate,
    data: SlotData,
}

/// The open seconds of one service.
pub struct OpenRing {
    slots: Box<[Slot]>,
    /// Processing-time counters per slot, allocated together on the
    /// service's first `record_processing`: most services never report one.
    processing: OnceLock<Box<[AtomicDuration]>>,
    handoff: Handoff<(u32, Agg)>,
}

impl Default for OpenRing {
    fn default() -> Self {
        OpenRing {
            slots: (0..OPEN_SLOTS)
                .map(|_| Slot {
                    gate: SlotGate::default(),
                    data: SlotData::new(),
                })
                .collect(),
            processing: OnceLock::new(),
            handoff: Handoff::default(),
        }
    }
}

impl OpenRing {
    /// Runs `write` on the open slot of `second` (lock-free; see `gate`).
    #[inline]
    pub fn write<R>(&self, second: u32, write: impl FnOnce(&SlotData) -> R) -> R {
        // A slot only ever opens for seconds congruent to its index, so a
        // newer second found in it (late clock read) is still this slot.
        let idx = second as usize % OPEN_SLOTS;
        let slot = &self.slots[idx];
        slot.gate.enter(second, |ended| {
            let agg = self.harvest(idx, true);
            self.handoff.push((ended, agg));
        });
        let r = write(&slot.data);
        slot.gate.exit();
        r
    }

    /// Records a job's processing time in the open second.
    pub fn write_processing(&self, second: u32, ms: f64) {
        let per_slot = self.processing.get_or_init(|| {
            (0..OPEN_SLOTS)
                .map(|_| AtomicDuration::new(PROCESSING_BINS))
                .collect()
        });
        self.write(second, |_| per_slot[second as usize % OPEN_SLOTS].add(ms));
    }

    /// Everything slot `idx` holds (its counters and its processing times).
    fn harvest(&self, idx: usize, reset: bool) -> Agg {
        let mut agg = self.slots[idx].data.harvest(reset);
        if let Some(p) = self.processing.get() {
            agg.processing = p[idx].harvest(reset);
        }
        agg
    }

    /// Seals every second before `before`: harvested seconds, in any order.
    pub fn seal_ended(&self, before: u32, out: &mut Vec<(u32, Agg)>) {
        for (idx, slot) in self.slots.iter().enumerate() {
            if let Some(second) = slot.gate.claim_ended(before) {
                let agg = self.harvest(idx, true);
                slot.gate.release();
                out.push((second, agg));
            }
        }
        out.extend(self.handoff.take_all());
    }

    /// Non-destructive view of the seconds still open (for reads of "now").
    pub fn peek_open(&self) -> Vec<(u32, Agg)> {
        let mut out = Vec::new();
        for (idx, slot) in self.slots.iter().enumerate() {
            if let Some(s) = slot.gate.open_second() {
                let agg = self.harvest(idx, false);
                // The slot may have been sealed and reopened meanwhile; the
                // view then mixes seconds, so drop it (the data is sealed).
                if slot.gate.open_second() == Some(s) && !agg.is_empty() {
                    out.push((s, agg));
                }
            }
        }
        out
    }

    pub fn heap_bytes(&self) -> usize {
        self.slots.len() * std::mem::size_of::<Slot>()
            + self
                .slots
                .iter()
                .map(|s| s.data.heap_bytes())
                .sum::<usize>()
            + self.processing.get().map_or(0, |p| {
                p.iter()
                    .map(|d| std::mem::size_of::<AtomicDuration>() + d.bins.heap_bytes())
                    .sum()
            })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn harvest_matches_what_was_recorded() {
        let ring = OpenRing::default();
        ring.write(5, |d| {
            d.record(10.0, None);
            d.record(30.0, Some(2));
            d.queue(3);
            d.queue(1);
            d.gauge(Gauge::GpuTempC, -5.0);
            d.health(true, 5_100_000_000, Some(4.0));
        });
        ring.write(5, |d| d.health(false, 5_200_000_000, None));
        ring.write_processing(5, 1500.0);
        let peek = ring.peek_open();
        assert_eq!(peek.len(), 1);
        let mut out = vec![];
        ring.seal_ended(5, &mut out);
        assert!(out.is_empty(), "second 5 has not ended");
        ring.seal_ended(6, &mut out);
        assert_eq!(out.len(), 1);
        let (s, a) = &out[0];
        assert_eq!(*s, 5);
        assert_eq!(a, &peek[0].1);
        assert_eq!(a.latency.count, 2);
        assert_eq!(
            (a.latency.sum_ms, a.latency.min_ms, a.latency.max_ms),
            (40.0, 10.0, 30.0)
        );
        assert_eq!(a.errors, 1);
        assert_eq!(a.error_types, vec![(2, 1)]);
        assert_eq!(a.processing.count, 1);
        assert_eq!((a.queue.n, a.queue.depth_sum, a.queue.depth_max), (2, 4, 3));
        assert_eq!(a.gauges[0].1.min, -5.0);
        assert_eq!((a.health.up, a.health.down), (1, 1));
        assert_eq!(a.health.last, Some((5_200_000_000, false)));
        assert!(ring.peek_open().is_empty());
    }

    #[test]
    fn jump_ahead_seals_through_handoff() {
        let ring = OpenRing::default();
        ring.write(1, |d| d.record(1.0, None));
        // Second 1 + OPEN_SLOTS lands in the same slot: the recorder seals.
        ring.write(1 + OPEN_SLOTS as u32, |d| d.record(2.0, None));
        let mut out = vec![];
        ring.seal_ended(100, &mut out);
        out.sort_by_key(|e| e.0);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, 1);
        assert_eq!(out[0].1.latency.sum_ms, 1.0);
        assert_eq!(out[1].1.latency.sum_ms, 2.0);
    }

    #[test]
    fn batch_counts_failures() {
        let ring = OpenRing::default();
        ring.write(0, |d| {
            d.record_batch(&[1.0, 2.0, 3.0], Some(&[true, false, false]), 4)
        });
        let a = &ring.peek_open()[0].1;
        assert_eq!((a.latency.count, a.errors), (3, 2));
        assert_eq!(a.error_types, vec![(4, 2)]);
        assert_eq!((a.latency.min_ms, a.latency.max_ms), (1.0, 3.0));
    }
}
