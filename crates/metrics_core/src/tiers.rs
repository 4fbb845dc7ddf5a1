//! Tiered retention: sealed buckets per tier, rolled up from seconds.
//!
//! Every sealed second is added to the *building* bucket of every tier (the
//! 1 s, 10 s and 1 min bucket it falls in).  When a second arrives for a
//! later bucket, the building one is sealed: its exact latency / processing
//! bins become a t-digest, kept as compact `(f32 mean, u32 weight)`
//! centroids, and the scalars stay exact.  Buckets roll off by time: a tier
//! keeps the buckets that start within its window of "now".

use std::collections::VecDeque;

use crate::agg::{merge_sorted, Agg, DurationAgg, Gauge, GaugeAgg, HealthAgg, QueueAgg};
use crate::config::RetentionTier;
use crate::histogram::SparseBins;
use crate::tdigest::TDigest;

/// A digest frozen into its centroids, about 2 bytes each.  Means are
/// coded as 16-bit fixed-point log2 (steps of 2^(1/1024), so ≤ 0.034 % off,
/// an order of magnitude under the 0.39 % of the bins they came from), and
/// since centroids are sorted, each code is stored as a LEB128 varint delta
/// from the previous one (one byte for neighbours), followed by the weight
/// as a varint.  24 h of 1-minute buckets is most of a service's memory, so
/// this is where bytes matter.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedDigest(Box<[u8]>);

/// log2 fixed-point scale of [`SealedDigest`] means.
const LOG_STEPS: f64 = 1024.0;
/// Offset so that 2^-11 ms (below the finest bin) codes as 1; 0 codes 0.0.
const LOG_OFFSET: f64 = 11.0;

fn encode_mean(v: f64) -> u16 {
    if v <= 0.0 {
        return 0;
    }
    ((v.log2() + LOG_OFFSET) * LOG_STEPS)
        .round()
        .clamp(1.0, u16::MAX as f64) as u16
}

fn decode_mean(code: u16) -> f64 {
    if code == 0 {
        0.0
    } else {
        (code as f64 / LOG_STEPS - LOG_OFFSET).exp2()
    }
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn read_varint(bytes: &[u8], i: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    while *i < bytes.len() && shift < 64 {
        let b = bytes[*i];
        *i += 1;
        v |= ((b & 0x7F) as u64) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    v
}

impl SealedDigest {
    /// Compresses exact bins into a digest of `compression`.
    pub fn from_duration(d: &DurationAgg, compression: f64) -> Option<SealedDigest> {
        Self::from_points(&d.bins.weighted_points(d.min_ms, d.max_ms), d, compression)
    }

    fn from_points(points: &[(f64, u64)], d: &DurationAgg, compression: f64) -> Option<Self> {
        if d.count == 0 || points.is_empty() {
            return None;
        }
        let digest = TDigest::from_weighted(compression, points, d.min_ms, d.max_ms).ok()?;
        let mut out = Vec::with_capacity(digest.centroid_count() * 2 + 4);
        let mut prev = 0u16;
        let mut pending: Option<(u16, u64)> = None;
        // Centroids whose means quantize to the same code are merged: the
        // code is all a reader could tell them apart by.
        for (mean, w) in digest.centroids() {
            let code = encode_mean(mean);
            match &mut pending {
                Some((c, acc)) if *c == code => *acc += w,
                _ => {
                    if let Some((c, acc)) = pending.take() {
                        push_varint(&mut out, (c - prev) as u64);
                        push_varint(&mut out, acc);
                        prev = c;
                    }
                    pending = Some((code, w));
                }
            }
        }
        if let Some((c, acc)) = pending {
            push_varint(&mut out, (c - prev) as u64);
            push_varint(&mut out, acc);
        }
        Some(SealedDigest(out.into_boxed_slice()))
    }

    /// The centroids as weighted points, ascending.
    pub fn points(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let bytes = &self.0;
        let mut i = 0;
        let mut code = 0u64;
        std::iter::from_fn(move || {
            if i >= bytes.len() {
                return None;
            }
            code += read_varint(bytes, &mut i);
            let w = read_varint(bytes, &mut i);
            Some((decode_mean(code.min(u16::MAX as u64) as u16), w))
        })
    }

    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

/// A sealed bucket: exact latency scalars inline, a frozen latency digest,
/// and everything else (error types, processing, queue, gauges, health)
/// boxed only when the bucket has any, since most buckets have none.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub start_s: u32,
    pub count: u64,
    pub errors: u64,
    pub sum_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub latency: Option<SealedDigest>,
    pub extras: Option<Box<Extras>>,
}

/// The less common parts of a sealed bucket, each only as big as what it
/// holds: most buckets of a service with a queue have a few queue samples,
/// a health result and one to three gauges, and nothing else.
#[derive(Debug, Clone)]
pub struct Extras {
    pub error_types: Box<[(u8, u32)]>,
    pub processing: Option<Box<SealedDuration>>,
    pub queue: SealedQueue,
    pub gauges: Box<[SealedGauge]>,
    pub health: SealedHealth,
}

/// Queue samples of a sealed bucket (depths fit u32: `set_queue` checks).
#[derive(Debug, Clone, Copy, Default)]
pub struct SealedQueue {
    pub n: u32,
    pub depth_max: u32,
    pub depth_sum: u64,
}

/// One gauge of a sealed bucket.  Min/max as f32 (7 significant digits:
/// VRAM to the kilobyte, temperatures to 1e-5 °C); the sum stays f64 so
/// averages over a day do not drift.
#[derive(Debug, Clone, Copy)]
pub struct SealedGauge {
    pub gauge: Gauge,
    pub n: u32,
    pub min: f32,
    pub max: f32,
    pub sum: f64,
}

/// Health-check counts of a sealed bucket.
#[derive(Debug, Clone, Copy, Default)]
pub struct SealedHealth {
    pub up: u32,
    pub down: u32,
    pub latency_n: u32,
    pub latency_sum_ms: f64,
}

/// Exact scalars and frozen digest of a sealed duration distribution.
#[derive(Debug, Clone)]
pub struct SealedDuration {
    pub count: u64,
    pub sum_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub digest: Option<SealedDigest>,
}

impl Bucket {
    fn seal(start_s: u32, agg: Agg, compression: f64) -> Bucket {
        let latency = SealedDigest::from_duration(&agg.latency, compression);
        let has_extras = !agg.error_types.is_empty()
            || agg.processing.count > 0
            || agg.queue.n > 0
            || !agg.gauges.is_empty()
            || agg.health.up + agg.health.down + agg.health.latency_n > 0;
        let extras = has_extras.then(|| {
            let p = &agg.processing;
            Box::new(Extras {
                error_types: agg.error_types.clone().into_boxed_slice(),
                processing: (p.count > 0).then(|| {
                    Box::new(SealedDuration {
                        count: p.count,
                        sum_ms: p.sum_ms,
                        min_ms: p.min_ms,
                        max_ms: p.max_ms,
                        digest: SealedDigest::from_duration(p, compression),
                    })
                }),
                queue: SealedQueue {
                    n: agg.queue.n.min(u32::MAX as u64) as u32,
                    depth_max: agg.queue.depth_max.min(u32::MAX as u64) as u32,
                    depth_sum: agg.queue.depth_sum,
                },
                gauges: agg
                    .gauges
                    .iter()
                    .map(|(g, a)| SealedGauge {
                        gauge: *g,
                        n: a.n.min(u32::MAX as u64) as u32,
                        min: a.min as f32,
                        max: a.max as f32,
                        sum: a.sum,
                    })
                    .collect(),
                health: SealedHealth {
                    up: agg.health.up,
                    down: agg.health.down,
                    latency_n: agg.health.latency_n,
                    latency_sum_ms: agg.health.latency_sum_ms,
                },
            })
        });
        let l = &agg.latency;
        Bucket {
            start_s,
            count: l.count,
            errors: agg.errors,
            sum_ms: l.sum_ms,
            min_ms: l.min_ms,
            max_ms: l.max_ms,
            latency,
            extras,
        }
    }

    /// Adds this bucket's exact scalars to `into` (digests are separate).
    pub fn merge_into(&self, into: &mut Agg) {
        let l = &mut into.latency;
        l.count += self.count;
        l.sum_ms += self.sum_ms;
        l.min_ms = l.min_ms.min(self.min_ms);
        l.max_ms = l.max_ms.max(self.max_ms);
        into.errors += self.errors;
        if let Some(x) = &self.extras {
            merge_sorted(&mut into.error_types, &x.error_types, |a, b| *a += *b);
            if let Some(p) = &x.processing {
                let d = &mut into.processing;
                d.count += p.count;
                d.sum_ms += p.sum_ms;
                d.min_ms = d.min_ms.min(p.min_ms);
                d.max_ms = d.max_ms.max(p.max_ms);
            }
            into.queue.merge(&QueueAgg {
                n: x.queue.n as u64,
                depth_sum: x.queue.depth_sum,
                depth_max: x.queue.depth_max as u64,
            });
            for g in x.gauges.iter() {
                let agg = GaugeAgg {
                    n: g.n as u64,
                    sum: g.sum,
                    min: g.min as f64,
                    max: g.max as f64,
                };
                merge_sorted(&mut into.gauges, &[(g.gauge, agg)], |a, b| a.merge(b));
            }
            into.health.merge(&HealthAgg {
                up: x.health.up,
                down: x.health.down,
                last: None,
                latency_n: x.health.latency_n,
                latency_sum_ms: x.health.latency_sum_ms,
            });
        }
    }

    pub fn processing(&self) -> Option<&SealedDigest> {
        self.extras
            .as_ref()
            .and_then(|x| x.processing.as_ref())
            .and_then(|p| p.digest.as_ref())
    }

    /// Adds a late second to an already sealed bucket (rare: a second
    /// harvested by a recorder after later seconds were sealed).
    fn absorb(&mut self, late: &Agg, compression: f64) {
        let mut merged = Agg::default();
        self.merge_into(&mut merged);
        merged.merge(late);
        let thaw = |old: Option<&SealedDigest>, add: &DurationAgg, all: &mut DurationAgg| {
            let mut pts: Vec<(f64, u64)> = old.iter().flat_map(|d| d.points()).collect();
            pts.extend(add.bins.weighted_points(add.min_ms, add.max_ms));
            SealedDigest::from_points(&pts, all, compression)
        };
        let latency = thaw(self.latency.as_ref(), &late.latency, &mut merged.latency);
        let processing = thaw(self.processing(), &late.processing, &mut merged.processing);
        merged.latency.bins = SparseBins::empty(merged.latency.bins_layout());
        merged.processing.bins = SparseBins::empty(merged.processing.bins_layout());
        let mut sealed = Bucket::seal(self.start_s, merged, compression);
        sealed.latency = latency;
        if let Some(p) = sealed.extras.as_mut().and_then(|x| x.processing.as_mut()) {
            p.digest = processing;
        }
        *self = sealed;
    }

    pub fn heap_bytes(&self) -> usize {
        self.latency.as_ref().map_or(0, |d| d.heap_bytes())
            + self.extras.as_ref().map_or(0, |x| {
                std::mem::size_of::<Extras>()
                    + std::mem::size_of_val(&*x.error_types)
                    + std::mem::size_of_val(&*x.gauges)
                    + x.processing.as_ref().map_or(0, |p| {
                        std::mem::size_of::<SealedDuration>()
                            + p.digest.as_ref().map_or(0, |d| d.heap_bytes())
                    })
            })
    }
}

/// One retention tier of one service.
#[derive(Debug)]
pub struct Tier {
    pub spec: RetentionTier,
    /// t-digest compression of this tier's sealed buckets.
    pub compression: f64,
    /// Sealed buckets, ascending by start.
    pub buckets: VecDeque<Bucket>,
    /// The bucket seconds are still being added to: (start, exact agg).
    pub building: Option<(u32, Agg)>,
}

impl Tier {
    fn new(spec: RetentionTier, compression: f64) -> Self {
        Tier {
            spec,
            compression,
            buckets: VecDeque::new(),
            building: None,
        }
    }

    /// Start of the bucket holding `second`.
    pub fn bucket_start(&self, second: u32) -> u32 {
        second - second % self.spec.resolution_s
    }

    /// First bucket start at or after `second`.
    pub fn ceil(&self, second: u32) -> u32 {
        let r = self.spec.resolution_s;
        second.div_ceil(r) * r
    }

    /// Sealed buckets with `from <= start < to`.
    pub fn sealed_between(&self, from: u32, to: u32) -> impl Iterator<Item = &Bucket> {
        let lo = self.buckets.partition_point(|b| b.start_s < from);
        let hi = self.buckets.partition_point(|b| b.start_s < to);
        self.buckets.range(lo..hi.max(lo))
    }

    /// Where sealed data ends: the building bucket's start, or past the
    /// last sealed bucket.
    pub fn sealed_end(&self) -> u32 {
        match (&self.building, self.buckets.back()) {
            (Some((s, _)), _) => *s,
            (None, Some(b)) => b.start_s + self.spec.resolution_s,
            (None, None) => 0,
        }
    }
}

/// Appends a bucket, growing the ring by doubling but never past the tier's
/// slot count (a full 1440-slot tier would otherwise reserve 2048 slots).
fn push_capped(buckets: &mut VecDeque<Bucket>, slots: usize, bucket: Bucket) {
    let (len, cap) = (buckets.len(), buckets.capacity());
    if len == cap {
        buckets.reserve_exact(cap.max(8).min(slots.saturating_sub(len)).max(1));
    }
    buckets.push_back(bucket);
}

/// All tiers of one service.
#[derive(Debug)]
pub struct TierStore {
    pub tiers: Vec<Tier>,
    /// Seconds that arrived after their bucket had rolled off.
    pub late_dropped: u64,
    /// Bumped whenever an already sealed bucket changes (late seconds), so
    /// cached merges of sealed buckets know they are stale.
    pub revision: u64,
}

impl TierStore {
    /// `compression` for every tier but the last, `archive_compression` for it.
    pub fn new(specs: &[RetentionTier], compression: f64, archive_compression: f64) -> Self {
        let last = specs.len().saturating_sub(1);
        TierStore {
            tiers: specs
                .iter()
                .enumerate()
                .map(|(i, &t)| {
                    Tier::new(
                        t,
                        if i == last {
                            archive_compression
                        } else {
                            compression
                        },
                    )
                })
                .collect(),
            late_dropped: 0,
            revision: 0,
        }
    }

    /// Adds one sealed second to every tier.
    pub fn insert(&mut self, second: u32, agg: &Agg) {
        for tier in &mut self.tiers {
            let start = tier.bucket_start(second);
            match &mut tier.building {
                Some((b, acc)) if *b == start => acc.merge(agg),
                Some((b, _)) if *b > start => {
                    // Late second for a bucket already sealed (or empty).
                    self.revision += 1;
                    let pos = tier.buckets.partition_point(|x| x.start_s < start);
                    let full = tier.buckets.len() >= tier.spec.slots as usize;
                    match tier.buckets.get_mut(pos) {
                        Some(bk) if bk.start_s == start => bk.absorb(agg, tier.compression),
                        _ if pos == 0 && full => self.late_dropped += 1,
                        _ => tier
                            .buckets
                            .insert(pos, Bucket::seal(start, agg.clone(), tier.compression)),
                    }
                }
                building => {
                    if let Some((b, acc)) = building.take() {
                        if !acc.is_empty() {
                            let bucket = Bucket::seal(b, acc, tier.compression);
                            push_capped(&mut tier.buckets, tier.spec.slots as usize, bucket);
                        }
                    }
                    *building = Some((start, agg.clone()));
                }
            }
        }
    }

    /// Drops buckets that started before each tier's window of `now_s`.
    pub fn prune(&mut self, now_s: u32) {
        for tier in &mut self.tiers {
            let keep_from = tier
                .bucket_start(now_s)
                .saturating_sub((tier.spec.slots - 1).saturating_mul(tier.spec.resolution_s));
            while tier.buckets.front().is_some_and(|b| b.start_s < keep_from) {
                tier.buckets.pop_front();
            }
            if tier.building.as_ref().is_some_and(|(s, _)| *s < keep_from) {
                tier.building = None;
            }
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.tiers
            .iter()
            .map(|t| {
                t.buckets.capacity() * std::mem::size_of::<Bucket>()
                    + t.buckets.iter().map(Bucket::heap_bytes).sum::<usize>()
                    + t.building.as_ref().map_or(0, |(_, a)| a.heap_bytes())
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_TIERS;
    use crate::histogram::{AtomicBins, LATENCY_BINS};

    fn second_with(values: &[f64]) -> Agg {
        let bins = AtomicBins::new(LATENCY_BINS);
        for &v in values {
            bins.add(v, 1);
        }
        let mut a = Agg::default();
        a.latency = DurationAgg {
            count: values.len() as u64,
            sum_ms: values.iter().sum(),
            min_ms: values.iter().cloned().fold(f64::INFINITY, f64::min),
            max_ms: values.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            bins: bins.collect(false),
        };
        a
    }

    #[test]
    fn seconds_roll_up_and_roll_off_by_time() {
        let mut store = TierStore::new(&DEFAULT_TIERS, 200.0, 100.0);
        for s in 0..7200u32 {
            store.insert(s, &second_with(&[1.0 + (s % 7) as f64]));
            store.prune(s);
        }
        let [t1, t10, t60] = &store.tiers[..] else {
            panic!()
        };
        // Sealed 1 s buckets: the building one is second 7199.
        assert_eq!(t1.buckets.len(), 299);
        assert_eq!(t1.buckets.front().unwrap().start_s, 7199 - 299);
        assert_eq!(t10.buckets.len(), 359);
        assert_eq!(t60.buckets.len(), 119);
        // Exact counts survive roll-up.
        let total60: u64 = t60.buckets.iter().map(|b| b.count).sum::<u64>()
            + t60.building.as_ref().unwrap().1.latency.count;
        assert_eq!(total60, 7200);
        let b = &t10.buckets[0];
        assert_eq!(b.count, 10);
        assert!(b.extras.is_none(), "latency-only buckets box nothing");
        let w: u64 = b.latency.as_ref().unwrap().points().map(|p| p.1).sum();
        assert_eq!(w, 10);
    }

    #[test]
    fn a_time_jump_drops_everything_older_than_the_window() {
        let mut store = TierStore::new(&DEFAULT_TIERS, 200.0, 100.0);
        store.insert(10, &second_with(&[5.0]));
        store.insert(11, &second_with(&[5.0]));
        store.insert(200_000, &second_with(&[5.0]));
        store.prune(200_000);
        for t in &store.tiers {
            assert!(t.buckets.is_empty(), "tier {:?} kept old buckets", t.spec);
            assert_eq!(t.building.as_ref().unwrap().0, t.bucket_start(200_000));
        }
    }

    #[test]
    fn sealed_digest_codes_means_within_a_step() {
        for v in [0.0, 1e-3, 0.5, 1.0, 37.25, 1234.5, 9.99e8] {
            let back = decode_mean(encode_mean(v));
            if v == 0.0 {
                assert_eq!(back, 0.0);
            } else {
                assert!((back - v).abs() / v < 3.4e-4, "{v} -> {back}");
            }
        }
        let bins = crate::histogram::AtomicBins::new(crate::histogram::LATENCY_BINS);
        let values = [0.0, 0.5, 3.0, 3.0, 250.0, 4e8];
        for v in values {
            bins.add(v, 1);
        }
        let d = DurationAgg {
            count: values.len() as u64,
            sum_ms: values.iter().sum(),
            min_ms: 0.0,
            max_ms: 4e8,
            bins: bins.collect(false),
        };
        let sealed = SealedDigest::from_duration(&d, 200.0).unwrap();
        let pts: Vec<_> = sealed.points().collect();
        assert_eq!(pts.iter().map(|p| p.1).sum::<u64>(), 6);
        assert_eq!(pts.len(), 5, "the two 3.0s share a centroid");
        // Bin 0 holds [0, 2^-10 ms); its midpoint stands for it.
        assert!(pts[0].0 < 1e-3);
        for (p, v) in pts.iter().zip([0.0, 0.5, 3.0, 250.0, 4e8]).skip(1) {
            let tol = crate::histogram::LATENCY_BINS.max_relative_error() + 3.4e-4;
            assert!((p.0 - v).abs() <= v * tol, "{} vs {v}", p.0);
        }
        assert!(
            sealed.heap_bytes() <= 3 * 5,
            "{} bytes",
            sealed.heap_bytes()
        );
    }

    #[test]
    fn late_second_is_absorbed_into_its_bucket() {
        let mut store = TierStore::new(&DEFAULT_TIERS, 200.0, 100.0);
        store.insert(0, &second_with(&[1.0]));
        store.insert(20, &second_with(&[2.0]));
        store.insert(5, &second_with(&[3.0, 4.0]));
        let t10 = &store.tiers[1];
        assert_eq!(t10.buckets.len(), 1);
        assert_eq!(t10.buckets[0].count, 3);
        assert_eq!(t10.buckets[0].max_ms, 4.0);
        let t1 = &store.tiers[0];
        let starts: Vec<_> = t1.buckets.iter().map(|b| b.start_s).collect();
        assert_eq!(starts, vec![0, 5]);
    }
}
