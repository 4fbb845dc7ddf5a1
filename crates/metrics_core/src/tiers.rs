//! Tiered retention: sealed buckets per tier, rolled up from seconds.
//!
//! Every sealed second is added to the *building* bucket of every tier (the
//! 1 s, 10 s and 1 min bucket it falls in).  When a second arrives for a
//! later bucket, the building one is sealed: its exact latency / processing
//! bins become t-digests frozen into a compact byte string (`sealed`), and
//! the scalars stay exact.  Buckets roll off by time: a tier
//! keeps the buckets that start within its window of "now".

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ptr::NonNull;

use crate::agg::{Agg, DurationAgg};
use crate::config::RetentionTier;
use crate::sealed::{self, DigestView};

mod slab;

/// A sealed bucket's byte string behind one thin pointer, so a [`Bucket`]
/// is 56 bytes instead of the 64 a `Box<[u8]>` (pointer + length) made it
/// (~2 000 buckets a service).  Allocated once, at its exact size rounded
/// up to 8 bytes, in the blob pages of [`slab`].  A 4-byte head comes
/// first: for a blob in a slab slot `(offset in page) << 16 | len` (len is
/// then at most `MAX_SLOT - 4`), for a bigger one `LARGE | len`.
struct Blob(NonNull<u8>);

// SAFETY: a Blob owns its allocation exclusively and is immutable.
unsafe impl Send for Blob {}
// SAFETY: shared access only reads.
unsafe impl Sync for Blob {}

const BLOB_HEAD: usize = std::mem::size_of::<u32>();
const LARGE: u32 = 1 << 31;

impl Blob {
    fn new(bytes: &[u8]) -> Blob {
        let len = bytes.len();
        let (p, offset) = slab::alloc(BLOB_HEAD + len);
        let head = if BLOB_HEAD + len > slab::MAX_SLOT {
            assert!(len < LARGE as usize, "a bucket blob over 2 GiB");
            LARGE | len as u32
        } else {
            ((offset as u32) << 16) | len as u32
        };
        // SAFETY: `p` points to BLOB_HEAD + len writable bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(head.to_le_bytes().as_ptr(), p, BLOB_HEAD);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(BLOB_HEAD), len);
        }
        Blob(NonNull::new(p).expect("allocations are not null"))
    }

    /// The blob's length and, in a slab slot, its offset in the page.
    fn head(&self) -> (usize, usize) {
        let mut head = [0u8; BLOB_HEAD];
        // SAFETY: the allocation starts with the head.
        unsafe { std::ptr::copy_nonoverlapping(self.0.as_ptr(), head.as_mut_ptr(), BLOB_HEAD) };
        let h = u32::from_le_bytes(head);
        if h & LARGE != 0 {
            ((h & !LARGE) as usize, 0)
        } else {
            ((h & 0xFFFF) as usize, (h >> 16) as usize)
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialised bytes follow the head; they live as
        // long as `self`.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(BLOB_HEAD), self.head().0) }
    }

    /// Bytes the blob occupies.
    fn footprint(&self) -> usize {
        slab::slot_size(BLOB_HEAD + self.head().0)
    }
}

impl Drop for Blob {
    fn drop(&mut self) {
        let (len, offset) = self.head();
        // SAFETY: allocated by `slab::alloc` with this size, at this
        // offset; dropped once.
        unsafe { slab::free(self.0.as_ptr(), BLOB_HEAD + len, offset) }
    }
}

impl Clone for Blob {
    fn clone(&self) -> Blob {
        Blob::new(self.as_slice())
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.head().0)
    }
}

thread_local! {
    /// Where a bucket is encoded before its exact-size copy is made: no
    /// growing or shrinking buffer per seal (whose leftovers fragment the
    /// heap between long-lived blobs).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The blob of a bucket, encoded in this thread's scratch buffer (a fresh
/// one while thread-local storage is being torn down).
fn encode(
    agg: &Agg,
    latency_points: &[(f64, u64)],
    processing_points: &[(f64, u64)],
    compression: f64,
) -> Option<Blob> {
    let run = |out: &mut Vec<u8>| {
        let some =
            sealed::encode_blob_into(agg, latency_points, processing_points, compression, out);
        let blob = some.then(|| Blob::new(out));
        if out.capacity() > 4096 {
            *out = Vec::new(); // a rare huge bucket: not kept per thread
        }
        blob
    };
    SCRATCH
        .try_with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut out) => run(&mut out),
            Err(_) => run(&mut Vec::new()),
        })
        .unwrap_or_else(|_| run(&mut Vec::new()))
}

/// A sealed bucket: the hot scalars inline (exact), everything else —
/// latency and processing digests, error types, queue, gauges, health — in
/// one byte string (see `sealed`), absent when the bucket had none.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub start_s: u32,
    pub count: u64,
    pub errors: u64,
    pub sum_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    blob: Option<Blob>,
}

impl Bucket {
    fn seal(start_s: u32, agg: &Agg, compression: f64) -> Bucket {
        let lp = agg
            .latency
            .bins
            .weighted_points(agg.latency.min_ms, agg.latency.max_ms);
        let p = &agg.processing;
        let pp = p.bins.weighted_points(p.min_ms, p.max_ms);
        Self::seal_points(start_s, agg, &lp, &pp, compression)
    }

    fn seal_points(
        start_s: u32,
        agg: &Agg,
        latency_points: &[(f64, u64)],
        processing_points: &[(f64, u64)],
        compression: f64,
    ) -> Bucket {
        let l = &agg.latency;
        Bucket {
            start_s,
            count: l.count,
            errors: agg.errors,
            sum_ms: l.sum_ms,
            min_ms: l.min_ms,
            max_ms: l.max_ms,
            blob: encode(agg, latency_points, processing_points, compression),
        }
    }

    /// The frozen latency digest.
    pub fn latency(&self) -> Option<DigestView<'_>> {
        self.blob().and_then(sealed::latency)
    }

    /// The frozen processing-time digest.
    pub fn processing(&self) -> Option<DigestView<'_>> {
        self.blob().and_then(|b| sealed::merge_extras(b, None))
    }

    /// Adds this bucket's exact scalars to `into`; returns the processing
    /// digest found on the way (the latency digest is [`Bucket::latency`]).
    pub fn merge_into(&self, into: &mut Agg) -> Option<DigestView<'_>> {
        let l = &mut into.latency;
        // Saturating: a reloaded bucket's counts may be anything (see agg).
        l.count = l.count.saturating_add(self.count);
        l.sum_ms += self.sum_ms;
        l.min_ms = l.min_ms.min(self.min_ms);
        l.max_ms = l.max_ms.max(self.max_ms);
        into.errors = into.errors.saturating_add(self.errors);
        self.blob()
            .and_then(|b| sealed::merge_extras(b, Some(into)))
    }

    /// Adds a late second to an already sealed bucket (rare: a second
    /// harvested by a recorder after later seconds were sealed).
    pub(crate) fn absorb(&mut self, late: &Agg, compression: f64) {
        let mut merged = Agg::default();
        self.merge_into(&mut merged);
        merged.merge(late);
        let thaw = |old: Option<DigestView<'_>>, add: &DurationAgg| {
            let mut pts: Vec<(f64, u64)> = old.into_iter().flat_map(|d| d.points()).collect();
            pts.extend(add.bins.weighted_points(add.min_ms, add.max_ms));
            pts
        };
        let lp = thaw(self.latency(), &late.latency);
        let pp = thaw(self.processing(), &late.processing);
        *self = Bucket::seal_points(self.start_s, &merged, &lp, &pp, compression);
    }

    /// Merges another bucket of the same span into this one (a bucket
    /// reloaded from storage meeting the one this process built).
    fn absorb_bucket(&mut self, other: &Bucket, compression: f64) {
        let mut merged = Agg::default();
        self.merge_into(&mut merged);
        other.merge_into(&mut merged);
        let points = |a: Option<DigestView<'_>>, b: Option<DigestView<'_>>| {
            a.into_iter()
                .chain(b)
                .flat_map(|d| d.points())
                .collect::<Vec<_>>()
        };
        let lp = points(self.latency(), other.latency());
        let pp = points(self.processing(), other.processing());
        *self = Bucket::seal_points(self.start_s, &merged, &lp, &pp, compression);
    }

    /// A bucket from its stored parts; the blob must have passed
    /// [`sealed::check_blob`].
    pub fn from_parts(
        start_s: u32,
        count: u64,
        errors: u64,
        sum_ms: f64,
        min_ms: f64,
        max_ms: f64,
        blob: Option<Box<[u8]>>,
    ) -> Bucket {
        Bucket {
            start_s,
            count,
            errors,
            sum_ms,
            min_ms,
            max_ms,
            blob: blob.map(|b| Blob::new(&b)),
        }
    }

    /// Seals the exact aggregate of a bucket still being built (a partial
    /// bucket written out at close).
    pub fn seal_building(start_s: u32, agg: &Agg, compression: f64) -> Bucket {
        Bucket::seal(start_s, agg, compression)
    }

    /// The encoded digests and extras (see `sealed`), as stored.
    pub fn blob(&self) -> Option<&[u8]> {
        self.blob.as_ref().map(Blob::as_slice)
    }

    pub fn heap_bytes(&self) -> usize {
        self.blob.as_ref().map_or(0, Blob::footprint)
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
            // A partial bucket reloaded from storage shares the building
            // bucket's span until the two merge when it seals.
            (Some((s, _)), Some(b)) if b.start_s == *s => *s + self.spec.resolution_s,
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
                            .insert(pos, Bucket::seal(start, agg, tier.compression)),
                    }
                }
                building => {
                    if let Some((b, acc)) = building.take() {
                        if !acc.is_empty() {
                            match tier.buckets.back_mut() {
                                // A partial bucket reloaded from storage
                                // (the previous run closed mid-bucket).
                                Some(last) if last.start_s == b => {
                                    self.revision += 1;
                                    last.absorb(&acc, tier.compression);
                                }
                                _ => {
                                    let bucket = Bucket::seal(b, &acc, tier.compression);
                                    push_capped(
                                        &mut tier.buckets,
                                        tier.spec.slots as usize,
                                        bucket,
                                    );
                                }
                            }
                        }
                    }
                    *building = Some((start, agg.clone()));
                }
            }
        }
    }

    /// Index of the tier with this resolution.
    pub fn tier_of(&self, resolution_s: u32) -> Option<usize> {
        self.tiers
            .iter()
            .position(|t| t.spec.resolution_s == resolution_s)
    }

    /// Puts reloaded buckets back into tier `ti`: each goes in start order,
    /// and one whose span already has a bucket is merged into it.  Buckets
    /// outside the tier's window of `now_s` are skipped.  Returns how many
    /// were kept.
    pub fn restore(&mut self, ti: usize, buckets: Vec<Bucket>, now_s: u32) -> usize {
        let tier = &mut self.tiers[ti];
        let res = tier.spec.resolution_s;
        let newest = tier.bucket_start(now_s);
        let oldest = newest.saturating_sub((tier.spec.slots - 1).saturating_mul(res));
        let mut kept = 0;
        for b in buckets {
            if b.start_s % res != 0 || b.start_s < oldest || b.start_s > newest {
                continue;
            }
            let pos = tier.buckets.partition_point(|x| x.start_s < b.start_s);
            match tier.buckets.get_mut(pos) {
                Some(same) if same.start_s == b.start_s => same.absorb_bucket(&b, tier.compression),
                _ => tier.buckets.insert(pos, b),
            }
            kept += 1;
        }
        if kept > 0 {
            self.revision += 1;
        }
        kept
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
    use crate::histogram::LATENCY_BINS;

    fn second_with(values: &[f64]) -> Agg {
        Agg {
            latency: DurationAgg::from_values(values, LATENCY_BINS),
            ..Agg::default()
        }
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
        assert!(b.processing().is_none());
        let w: u64 = b.latency().unwrap().points().map(|p| p.1).sum();
        assert_eq!(w, 10);
    }

    #[test]
    fn buckets_are_small_and_blobs_round_trip() {
        assert_eq!(std::mem::size_of::<Bucket>(), 56);
        assert_eq!(std::mem::size_of::<Option<Blob>>(), 8);
        for bytes in [
            &b""[..],
            &b"x"[..],
            &[7u8; 300][..],
            &[8u8; 508][..],
            &[9u8; 509][..],
            &[1u8; 70_000][..],
        ] {
            let b = Bucket::from_parts(0, 1, 0, 1.0, 1.0, 1.0, Some(bytes.into()));
            let c = b.clone();
            drop(b);
            assert_eq!(c.blob(), Some(bytes));
            assert_eq!(c.heap_bytes(), slab::slot_size(4 + bytes.len()));
        }
        let big = second_with(&(0..5000).map(|i| 1.0 + i as f64).collect::<Vec<_>>());
        let b = Bucket::seal(0, &big, 200.0);
        assert_eq!(
            b.latency().unwrap().points().map(|p| p.1).sum::<u64>(),
            5000
        );
        SCRATCH.with(|s| assert!(s.borrow().capacity() <= 4096));
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
