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

use crate::primitive::{AtomicPtr, AtomicU32, Ordering};

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

/// Bins written concurrently by recorders (one relaxed add each), stored as
/// one lazily allocated chunk per octave.
///
/// A dense array of every bin costs 20 KiB per open second of the latency
/// layout (5 121 counters), most of it never touched: a service's latencies
/// span a few octaves.  So bin 0 lives inline and each octave's
/// `2^sub_bits` counters are allocated the first time a value lands in it,
/// then kept until the bins drop — a chunk is never freed or replaced while
/// recorders may hold it, so there is no reclamation problem.  Steady-state
/// recording therefore allocates nothing (`tests/no_alloc.rs`); the first
/// value of an octave in an open slot allocates once (at most
/// `OCTAVES` chunks per slot).
pub struct AtomicBins {
    layout: BinLayout,
    /// Bin 0: values below `2^LOW_EXP` ms.
    zero: AtomicU32,
    /// Octave `k` holds bins `1 + k·2^sub_bits ..`; null until first used.
    /// Each non-null pointer owns a `Box<[AtomicU32]>` of `2^sub_bits`
    /// counters (its length is implied by the layout).
    chunks: Box<[AtomicPtr<AtomicU32>]>,
}

/// Octaves of a layout above bin 0.
const OCTAVES: usize = (HIGH_EXP - LOW_EXP) as usize;

/// Counts per power of two, the coarse histogram of lifetime totals
/// (Prometheus histograms): entry 0 is bin 0 (below `2^LOW_EXP` ms), entry
/// `j >= 1` the octave `[2^(LOW_EXP + j - 1), 2^(LOW_EXP + j))` ms.  Exact:
/// every fine bin lies inside one octave, so the counts are sums of bins.
pub type OctaveCounts = [u64; OCTAVE_COUNTS];
/// Entries of [`OctaveCounts`].
pub const OCTAVE_COUNTS: usize = OCTAVES + 1;

/// Upper edge in ms of entry `j` of [`OctaveCounts`]: `2^(LOW_EXP + j)`.
pub fn octave_upper_ms(j: usize) -> f64 {
    2f64.powi(LOW_EXP + j as i32)
}

impl AtomicBins {
    pub fn new(layout: BinLayout) -> Self {
        AtomicBins {
            layout,
            zero: AtomicU32::new(0),
            chunks: (0..OCTAVES)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        }
    }

    pub fn layout(&self) -> BinLayout {
        self.layout
    }

    fn chunk_len(&self) -> usize {
        1 << self.layout.sub_bits
    }

    /// Counts one value.  Relaxed: the slot protocol around it (see
    /// `open_slot`) publishes the count to the sealer.
    #[inline]
    pub fn add(&self, value: f64, n: u32) {
        let i = self.layout.index(value);
        if i == 0 {
            self.zero.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let (octave, offset) = (
            (i - 1) >> self.layout.sub_bits,
            (i - 1) & (self.chunk_len() - 1),
        );
        self.chunk(octave)[offset].fetch_add(n, Ordering::Relaxed);
    }

    /// The counters of `octave`, allocating them on first use.
    #[inline]
    fn chunk(&self, octave: usize) -> &[AtomicU32] {
        // Acquire: pairs with the Release of the CAS that published the
        // chunk, so its zeroed counters are visible before we add to them.
        let p = self.chunks[octave].load(Ordering::Acquire);
        if !p.is_null() {
            // SAFETY: a non-null pointer was published by `install` from a
            // live `Box<[AtomicU32]>` of `chunk_len()` counters, and chunks
            // are only freed in `drop` (`&mut self`), so it outlives `&self`.
            return unsafe { std::slice::from_raw_parts(p, self.chunk_len()) };
        }
        self.install(octave)
    }

    #[cold]
    fn install(&self, octave: usize) -> &[AtomicU32] {
        let fresh: Box<[AtomicU32]> = (0..self.chunk_len()).map(|_| AtomicU32::new(0)).collect();
        let fresh = Box::into_raw(fresh) as *mut AtomicU32;
        // Publish: the first CAS from null wins.  AcqRel — Release makes
        // the zeroed counters visible to whoever loads the pointer; Acquire
        // on failure sees the winner's counters before we use them.
        let winner = match self.chunks[octave].compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(existing) => {
                // SAFETY: `fresh` came from `Box::into_raw` above with this
                // length and was never published, so we still own it.
                drop(unsafe {
                    Box::from_raw(std::ptr::slice_from_raw_parts_mut(fresh, self.chunk_len()))
                });
                existing
            }
        };
        // SAFETY: as in `chunk`: published, live until `drop`.
        unsafe { std::slice::from_raw_parts(winner, self.chunk_len()) }
    }

    /// Non-empty bins in ascending order; with `reset` the bins are zeroed
    /// (only by the sealer that owns the slot exclusively).  Only allocated
    /// octaves are scanned.
    pub fn collect(&self, reset: bool) -> SparseBins {
        let take = |c: &AtomicU32| {
            if reset {
                // Owner-exclusive at this point; swap keeps it one pass.
                c.swap(0, Ordering::Relaxed)
            } else {
                c.load(Ordering::Relaxed)
            }
        };
        let mut out = Vec::new();
        let z = take(&self.zero);
        if z != 0 {
            out.push((0u16, z as u64));
        }
        for (octave, slot) in self.chunks.iter().enumerate() {
            // Acquire: as in `chunk` (a writer may have installed it).
            let p = slot.load(Ordering::Acquire);
            if p.is_null() {
                continue;
            }
            // SAFETY: as in `chunk`: published, live until `drop`.
            let chunk = unsafe { std::slice::from_raw_parts(p, self.chunk_len()) };
            let base = 1 + (octave << self.layout.sub_bits);
            for (j, c) in chunk.iter().enumerate() {
                let n = take(c);
                if n != 0 {
                    out.push(((base + j) as u16, n as u64));
                }
            }
        }
        SparseBins {
            layout: self.layout,
            bins: out,
        }
    }

    /// Bytes owned: the chunk table and the allocated chunks.
    pub fn heap_bytes(&self) -> usize {
        let allocated = self
            .chunks
            .iter()
            .filter(|p| !p.load(Ordering::Relaxed).is_null())
            .count();
        self.chunks.len() * std::mem::size_of::<AtomicPtr<AtomicU32>>()
            + allocated * self.chunk_len() * std::mem::size_of::<AtomicU32>()
    }
}

impl Drop for AtomicBins {
    fn drop(&mut self) {
        let len = self.chunk_len();
        for slot in self.chunks.iter() {
            // `&mut self`: no recorder holds a chunk any more.
            let p = slot.load(Ordering::Relaxed);
            if !p.is_null() {
                // SAFETY: `p` came from `Box::into_raw` of a `len`-counter
                // boxed slice in `install`, published once, freed only here.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, len)) });
            }
        }
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

    /// Adds these counts into per-octave counts.
    pub fn add_to_octaves(&self, out: &mut OctaveCounts) {
        for &(bin, n) in &self.bins {
            let j = if bin == 0 {
                0
            } else {
                1 + ((bin as usize - 1) >> self.layout.sub_bits)
            };
            out[j] += n;
        }
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

    #[test]
    fn octave_counts_are_exact_sums_of_bins() {
        for layout in [LATENCY_BINS, PROCESSING_BINS] {
            let a = AtomicBins::new(layout);
            let mut want: OctaveCounts = [0; OCTAVE_COUNTS];
            let mut x = 1e-5;
            while x < 1e9 {
                a.add(x, 1);
                // The octave by definition: the entry whose edges hold x.
                let j = (0..OCTAVE_COUNTS)
                    .find(|&j| x < octave_upper_ms(j))
                    .unwrap();
                assert!(j == 0 || x >= octave_upper_ms(j - 1));
                want[j] += 1;
                x *= 1.09;
            }
            let mut got: OctaveCounts = [0; OCTAVE_COUNTS];
            a.collect(false).add_to_octaves(&mut got);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn octaves_are_allocated_on_first_use_only() {
        let a = AtomicBins::new(LATENCY_BINS);
        let empty = a.heap_bytes();
        assert_eq!(empty, OCTAVES * 8, "no counters before the first value");
        for v in [0.0, 1e-9, 1.5, 1.7, 1.99, 300.0, 1e9] {
            a.add(v, 2);
        }
        // 1.5..1.99 share one octave; 300 and 1e9 one each.
        assert_eq!(a.heap_bytes(), empty + 3 * 128 * 4);
        let bins = a.collect(true);
        assert_eq!(bins.total(), 14);
        assert_eq!(bins.bins[0], (0, 4), "0 and 1e-9 both land in bin 0");
        assert_eq!(
            bins.bins.last().unwrap().0 as usize,
            LATENCY_BINS.index(1e9)
        );
        assert_eq!(a.heap_bytes(), empty + 3 * 128 * 4, "reset keeps chunks");
        assert_eq!(a.collect(false).total(), 0);
        // Same bins as a value-by-value index computation.
        let b = AtomicBins::new(PROCESSING_BINS);
        let mut x = 1e-4;
        let mut want = std::collections::BTreeMap::new();
        while x < 1e9 {
            b.add(x, 1);
            *want.entry(PROCESSING_BINS.index(x) as u16).or_insert(0u64) += 1;
            x *= 1.37;
        }
        assert_eq!(b.collect(false).bins, want.into_iter().collect::<Vec<_>>());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! `RUSTFLAGS="--cfg loom" cargo test -p metrics_core --release --lib loom`
    use super::*;
    use loom::sync::Arc;

    /// Two recorders racing to install the same octave: exactly one chunk
    /// wins, neither count is lost, and the loser's chunk is freed.
    #[test]
    fn loom_racing_installs_keep_every_count() {
        loom::model(|| {
            let bins = Arc::new(AtomicBins::new(PROCESSING_BINS));
            let writers: Vec<_> = [2.0, 2.5]
                .into_iter()
                .map(|v| {
                    let bins = bins.clone();
                    loom::thread::spawn(move || bins.add(v, 1))
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            let got = bins.collect(true);
            assert_eq!(got.total(), 2);
            let table = OCTAVES * std::mem::size_of::<AtomicPtr<AtomicU32>>();
            assert_eq!(
                bins.heap_bytes(),
                table + 32 * std::mem::size_of::<AtomicU32>(),
                "one chunk"
            );
        });
    }
}
