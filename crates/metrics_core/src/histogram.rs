//! Log-linear binning of latencies, the lock-free front end of every digest.
//!
//! A record lands in one bin with a single relaxed `fetch_add`: the bin index
//! is read straight off the bits of the `f64` (exponent + top `SUB_BITS`
//! mantissa bits), so there is no `log()` on the hot path.  Each power of two
//! is split into `2^SUB_BITS` equal bins, so a bin's width is at most
//! `2^-SUB_BITS` of its lower edge; representing a bin by its midpoint is off
//! by at most half that (0.39 % for `SUB_BITS = 7`).  When a second is sealed
//! the non-empty bins become weighted points of a t-digest, clamped to the
//! exact min/max of the second, so p0/p100 stay exact.
//!
//! Counts per second and per bin are exact: merging sparse bins across
//! seconds (the 10 s and 1 min roll-ups) is plain addition, and the t-digest
//! of a coarse bucket is built once, from exact bin counts.

use crate::primitive::{AtomicU32, Ordering};

/// Values below `2^LOW_EXP` ms (≈ 1 µs) share bin 0.
const LOW_EXP: i32 = -10;
/// Values are at most 1e9 ms < 2^30 ms (the record path rejects more).
const HIGH_EXP: i32 = 30;

/// Geometry of a log-linear bin layout with `2^sub_bits` bins per octave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinLayout {
    sub_bits: u32,
}

/// Latency bins: 128 per octave, ≤ 0.39 % representation error.
pub const LATENCY_BINS: BinLayout = BinLayout { sub_bits: 7 };
/// Job processing time bins: 32 per octave, ≤ 1.6 % representation error
/// (jobs run for seconds; a quarter of the memory of the latency layout).
pub const PROCESSING_BINS: BinLayout = BinLayout { sub_bits: 5 };

impl BinLayout {
    /// Number of bins, bin 0 included.
    #[allow(clippy::len_without_is_empty)] // a layout is never empty
    pub const fn len(self) -> usize {
        1 + (((HIGH_EXP - LOW_EXP) as usize) << self.sub_bits)
    }

    /// Bit pattern of the smallest value of bin 1 (`2^LOW_EXP`).
    const fn base_bits(self) -> u64 {
        ((LOW_EXP + 1023) as u64) << 52
    }

    const fn shift(self) -> u32 {
        52 - self.sub_bits
    }

    /// Bin of a finite value in `[0, 2^HIGH_EXP)`; callers validate first.
    #[inline]
    pub fn index(self, value: f64) -> usize {
        let bits = value.to_bits();
        if bits < self.base_bits() {
            return 0;
        }
        // For non-negative doubles the bit pattern is monotone in the value,
        // so (bits - base) >> shift counts whole sub-octave bins above base.
        let idx = 1 + ((bits - self.base_bits()) >> self.shift()) as usize;
        idx.min(self.len() - 1)
    }

    /// Lower and upper edge of a bin.
    pub fn edges(self, index: usize) -> (f64, f64) {
        if index == 0 {
            return (0.0, f64::from_bits(self.base_bits()));
        }
        let lo = self.base_bits() + (((index - 1) as u64) << self.shift());
        let hi = self.base_bits() + ((index as u64) << self.shift());
        (f64::from_bits(lo), f64::from_bits(hi))
    }

    /// The value that stands for a bin: its midpoint.
    pub fn representative(self, index: usize) -> f64 {
        let (lo, hi) = self.edges(index);
        0.5 * (lo + hi)
    }

    /// Worst relative distance from a value in a bin (above bin 0) to the
    /// bin's representative.
    pub fn max_relative_error(self) -> f64 {
        0.5 / (1u64 << self.sub_bits) as f64
    }
}

/// Dense bins written concurrently by recorders (one relaxed add each).
pub struct AtomicBins {
    layout: BinLayout,
    counts: Box<[AtomicU32]>,
}

impl AtomicBins {
    pub fn new(layout: BinLayout) -> Self {
        AtomicBins {
            layout,
            counts: (0..layout.len()).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    pub fn layout(&self) -> BinLayout {
        self.layout
    }

    /// Counts one value.  Relaxed: the slot protocol around it (see
    /// `open_slot`) publishes the count to the sealer.
    #[inline]
    pub fn add(&self, value: f64, n: u32) {
        self.counts[self.layout.index(value)].fetch_add(n, Ordering::Relaxed);
    }

    /// Non-empty bins in ascending order; with `reset` the bins are zeroed
    /// (only by the sealer that owns the slot exclusively).
    pub fn collect(&self, reset: bool) -> SparseBins {
        let mut out = Vec::new();
        for (i, c) in self.counts.iter().enumerate() {
            let n = if reset {
                // Owner-exclusive at this point; swap keeps it one pass.
                c.swap(0, Ordering::Relaxed)
            } else {
                c.load(Ordering::Relaxed)
            };
            if n != 0 {
                out.push((i as u16, n as u64));
            }
        }
        SparseBins {
            layout: self.layout,
            bins: out,
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.counts.len() * std::mem::size_of::<AtomicU32>()
    }
}

/// Exact sparse bin counts `(bin, count)`, ascending by bin.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseBins {
    layout: BinLayout,
    bins: Vec<(u16, u64)>,
}

impl SparseBins {
    pub fn empty(layout: BinLayout) -> Self {
        SparseBins {
            layout,
            bins: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    pub fn layout(&self) -> BinLayout {
        self.layout
    }

    pub fn total(&self) -> u64 {
        self.bins.iter().map(|&(_, c)| c).sum()
    }

    /// Adds another set of counts (same layout) by a linear merge.
    pub fn merge(&mut self, other: &SparseBins) {
        debug_assert_eq!(self.layout, other.layout);
        if other.bins.is_empty() {
            return;
        }
        crate::agg::merge_sorted(&mut self.bins, &other.bins, |a, b| *a += *b);
    }

    /// Weighted points for a digest: bin representatives clamped to the
    /// exact `[min, max]` of the values they came from.
    pub fn weighted_points(&self, min: f64, max: f64) -> Vec<(f64, u64)> {
        self.bins
            .iter()
            .map(|&(i, c)| {
                let v = self.layout.representative(i as usize).clamp(min, max);
                (v, c)
            })
            .collect()
    }

    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<(u16, u64)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_inside_its_bin() {
        for layout in [LATENCY_BINS, PROCESSING_BINS] {
            let mut x = 1e-4;
            while x < 1e9 {
                let i = layout.index(x);
                let (lo, hi) = layout.edges(i);
                assert!(lo <= x && x < hi, "{x} not in bin {i} [{lo}, {hi})");
                if i > 0 {
                    let rel = (layout.representative(i) - x).abs() / x;
                    assert!(rel <= layout.max_relative_error() + 1e-12, "{x}: {rel}");
                }
                x *= 1.0137;
            }
            assert_eq!(layout.index(0.0), 0);
            assert_eq!(layout.index(1e9), layout.index(1e9 - 1.0));
            assert!(layout.index(1e9) < layout.len());
        }
        assert_eq!(LATENCY_BINS.len(), 1 + 40 * 128);
    }

    #[test]
    fn bins_are_monotone() {
        let mut prev = 0;
        let mut x = 0.0;
        while x < 5e8 {
            let i = LATENCY_BINS.index(x);
            assert!(i >= prev);
            prev = i;
            x = x * 1.001 + 1e-5;
        }
    }

    #[test]
    fn sparse_merge_adds_counts() {
        let a = AtomicBins::new(LATENCY_BINS);
        let b = AtomicBins::new(LATENCY_BINS);
        for v in [1.0, 2.0, 2.0, 300.0] {
            a.add(v, 1);
        }
        for v in [2.0, 5.0, 300.0, 300.0] {
            b.add(v, 1);
        }
        let mut sa = a.collect(true);
        sa.merge(&b.collect(false));
        assert_eq!(sa.total(), 8);
        assert_eq!(a.collect(false).total(), 0, "reset emptied the bins");
        assert_eq!(b.collect(false).total(), 4, "peek kept the bins");
        let pts = sa.weighted_points(1.0, 300.0);
        assert_eq!(pts.iter().map(|p| p.1).sum::<u64>(), 8);
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(pts.iter().all(|p| (1.0..=300.0).contains(&p.0)));
    }
}
