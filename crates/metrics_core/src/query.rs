//! Answering a window from the tiers.
//!
//! A window of `w` seconds ending now is assembled from at most three kinds
//! of parts, chosen so that a query touches few digests however long it is:
//!
//! * the **middle**: sealed buckets of the coarsest tier whose resolution is
//!   at most an eighth of the window (10 s buckets for 5 min and 1 h, 1 min
//!   beyond), never the archive tier (the last, kept at a lower compression)
//!   for a window a finer tier covers whole.  It only changes when that tier seals a bucket, so it is
//!   merged once and cached until then;
//! * the **left edge**: sealed buckets of the finest tier that still covers
//!   the whole window, between the window's start and the first middle
//!   bucket (at most 9 one-second buckets for 5 min);
//! * the **right edge**: the middle tier's building bucket (exact bins of
//!   the seconds sealed since its start) and the seconds still open.
//!
//! The window therefore starts at the first whole bucket of the left-edge
//! tier: exact for windows up to the finest tier's 5 min, within 10 s up to
//! 1 h, within 1 min beyond.  The start actually covered is reported.

use std::sync::Arc;

use crate::agg::{merge_sorted, Agg};
use crate::config::RetentionTier;
use crate::tdigest::TDigest;
use crate::tiers::{Bucket, Tier, TierStore};

/// Exact scalars plus the weighted points of a window's digests.
#[derive(Debug, Clone, Default)]
pub struct WindowAcc {
    /// Scalars of every part; bins only from building/open parts.
    pub agg: Agg,
    pub latency_points: Vec<(f64, u64)>,
    pub processing_points: Vec<(f64, u64)>,
    /// Requests per aligned minute: (minute start, count), ascending.
    pub minutes: Vec<(u32, f64)>,
}

impl WindowAcc {
    pub fn add_bucket(&mut self, b: &Bucket, resolution_s: u32) {
        if let Some(d) = b.merge_into(&mut self.agg) {
            self.processing_points.extend(d.points());
        }
        if let Some(d) = b.latency() {
            self.latency_points.extend(d.points());
        }
        self.add_minute(b.start_s, b.count, resolution_s);
    }

    /// Adds an exact (unsealed) span; its bins are turned into points at
    /// `finish` time together with the others.
    pub fn add_agg(&mut self, start_s: u32, agg: &Agg, resolution_s: u32) {
        self.agg.merge(agg);
        self.add_minute(start_s, agg.latency.count, resolution_s);
    }

    /// The busiest aligned minute: (start, requests).
    pub fn peak(&self) -> Option<(u32, f64)> {
        self.minutes
            .iter()
            .copied()
            .fold(None, |best: Option<(u32, f64)>, m| match best {
                Some(b) if b.1 >= m.1 => Some(b),
                _ => Some(m),
            })
    }

    pub fn add_acc(&mut self, o: &WindowAcc) {
        self.agg.merge(&o.agg);
        self.latency_points.extend_from_slice(&o.latency_points);
        self.processing_points
            .extend_from_slice(&o.processing_points);
        merge_sorted(&mut self.minutes, &o.minutes, |a, b| *a += *b);
    }

    fn add_minute(&mut self, start_s: u32, count: u64, resolution_s: u32) {
        if count == 0 {
            return;
        }
        let (minute, n) = if resolution_s <= 60 {
            (start_s - start_s % 60, count as f64)
        } else {
            // Coarser than a minute: its average rate per minute.
            (start_s, count as f64 * 60.0 / resolution_s as f64)
        };
        merge_sorted(&mut self.minutes, &[(minute, n)], |a, b| *a += *b);
    }

    /// Latency digest over everything added.
    pub fn latency_digest(&self, compression: f64) -> Option<TDigest> {
        let l = &self.agg.latency;
        digest_of(&self.latency_points, l, compression)
    }

    pub fn processing_digest(&self, compression: f64) -> Option<TDigest> {
        digest_of(&self.processing_points, &self.agg.processing, compression)
    }

    /// Shrinks the points to one digest's centroids and the minutes to
    /// those peak-rpm can still need (for the cache).  Only the first and
    /// last minute of a part can share a minute with a neighbouring part;
    /// of the others, the busiest is all that matters.
    fn compact(mut self, compression: f64) -> WindowAcc {
        if self.minutes.len() > 3 {
            let last = self.minutes.len() - 1;
            let inner = self.minutes[1..last]
                .iter()
                .copied()
                .fold(self.minutes[1], |b, m| if m.1 > b.1 { m } else { b });
            self.minutes = vec![self.minutes[0], inner, self.minutes[last]];
        }
        if let Some(d) = self.latency_digest(compression) {
            self.latency_points = d.centroids().collect();
        }
        if let Some(d) = self.processing_digest(compression) {
            self.processing_points = d.centroids().collect();
        }
        self.agg.latency.bins = crate::histogram::SparseBins::empty(self.agg.latency.bins_layout());
        self.agg.processing.bins =
            crate::histogram::SparseBins::empty(self.agg.processing.bins_layout());
        self
    }

    pub fn heap_bytes(&self) -> usize {
        self.agg.heap_bytes()
            + (self.latency_points.capacity() + self.processing_points.capacity())
                * std::mem::size_of::<(f64, u64)>()
            + self.minutes.capacity() * std::mem::size_of::<(u32, f64)>()
    }
}

fn digest_of(
    points: &[(f64, u64)],
    d: &crate::agg::DurationAgg,
    compression: f64,
) -> Option<TDigest> {
    if d.count == 0 {
        return None;
    }
    let mut all = Vec::with_capacity(points.len() + 64);
    all.extend_from_slice(points);
    all.extend(d.bins.weighted_points(d.min_ms, d.max_ms));
    TDigest::from_weighted(compression, &all, d.min_ms, d.max_ms).ok()
}

/// Which tiers answer a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Tier of the left edge (finest tier covering the window).
    pub edge_tier: usize,
    /// Tier of the middle and of the building bucket on the right.
    pub middle_tier: usize,
}

pub fn plan(tiers: &[RetentionTier], window_s: u64) -> Plan {
    let edge_tier = tiers
        .iter()
        .position(|t| t.window_s() >= window_s)
        .unwrap_or(tiers.len() - 1);
    // The last tier is the archive, kept at a lower compression: windows
    // that a finer tier covers whole are answered from that finer tier.
    let last = tiers.len() - 1;
    let coarsest = if edge_tier < last { last - 1 } else { last };
    let middle_tier = (edge_tier..=coarsest)
        .rev()
        .find(|&j| tiers[j].resolution_s as u64 * 8 <= window_s)
        .unwrap_or(edge_tier);
    Plan {
        edge_tier,
        middle_tier,
    }
}

/// Key of a cached middle part: (window length, tier, first bucket start, end).
pub type MiddleKey = (u64, usize, u32, u32);

/// A few recently used middle parts, and summaries of whole blocks of
/// `BLOCK` sealed buckets that rebuilding a middle reuses.
#[derive(Debug, Default)]
pub struct MiddleCache {
    entries: Vec<(MiddleKey, Arc<WindowAcc>)>,
    /// ((tier, block start), summary), ascending.
    blocks: Vec<((usize, u32), Block)>,
}

/// Buckets per cached block: an hour of minutes, ten minutes of 10 s.
pub const BLOCK: u32 = 60;

/// The merged, frozen content of one block of sealed buckets.  A block
/// spans `BLOCK` × resolution seconds, a whole number of UTC minutes, so
/// its busiest minute is all that peak-rpm needs from it.
#[derive(Debug)]
struct Block {
    agg: Agg,
    latency: Box<[u8]>,
    processing: Box<[u8]>,
    peak: Option<(u32, f64)>,
}

impl Block {
    fn build<'a>(
        buckets: impl Iterator<Item = &'a Bucket>,
        resolution_s: u32,
        compression: f64,
    ) -> Block {
        let mut w = WindowAcc::default();
        for b in buckets {
            w.add_bucket(b, resolution_s);
        }
        let peak = w.peak();
        let mut agg = w.agg;
        let latency = crate::sealed::freeze(&w.latency_points, &agg.latency, compression);
        let processing = crate::sealed::freeze(&w.processing_points, &agg.processing, compression);
        agg.latency.bins = crate::histogram::SparseBins::empty(agg.latency.bins_layout());
        agg.processing.bins = crate::histogram::SparseBins::empty(agg.processing.bins_layout());
        Block {
            agg,
            latency,
            processing,
            peak,
        }
    }

    fn add_to(&self, w: &mut WindowAcc) {
        w.agg.merge(&self.agg);
        w.latency_points
            .extend(crate::sealed::DigestView::new(&self.latency).points());
        w.processing_points
            .extend(crate::sealed::DigestView::new(&self.processing).points());
        if let Some(p) = self.peak {
            merge_sorted(&mut w.minutes, &[p], |a, b| *a += *b);
        }
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Block>()
            + self.agg.heap_bytes()
            + self.latency.len()
            + self.processing.len()
    }
}

/// Distinct window lengths cached per service (one middle each).
const CACHE_ENTRIES: usize = 8;

impl MiddleCache {
    /// A cached middle, marked most recently used.
    fn get(&mut self, key: MiddleKey) -> Option<Arc<WindowAcc>> {
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        let e = self.entries.remove(i);
        let acc = e.1.clone();
        self.entries.push(e);
        Some(acc)
    }

    fn insert(&mut self, key: MiddleKey, acc: WindowAcc) -> Arc<WindowAcc> {
        let acc = Arc::new(acc);
        // A window's previous middle is stale once it has slid.
        self.entries.retain(|(k, _)| k.0 != key.0);
        if self.entries.len() >= CACHE_ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push((key, acc.clone()));
        acc
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.blocks.clear();
    }

    pub fn heap_bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|(_, a)| a.heap_bytes())
            .sum::<usize>()
            + self.entries.capacity() * std::mem::size_of::<(MiddleKey, Arc<WindowAcc>)>()
            + self
                .blocks
                .iter()
                .map(|(_, b)| b.heap_bytes())
                .sum::<usize>()
    }

    /// Merges the sealed buckets of `tier` in `[from, to)`: whole blocks
    /// from their cached summaries (built on first use), the rest bucket
    /// by bucket.  Turns rebuilding a day of minutes from 1440 digests into
    /// at most 24 block summaries plus 118 buckets.
    fn merge_range(
        &mut self,
        ti: usize,
        tier: &Tier,
        from: u32,
        to: u32,
        compression: f64,
    ) -> WindowAcc {
        let res = tier.spec.resolution_s;
        let span = res * BLOCK;
        let first_block = from.div_ceil(span) * span;
        let end_blocks = to / span * span;
        let mut m = WindowAcc::default();
        if first_block >= end_blocks {
            for b in tier.sealed_between(from, to) {
                m.add_bucket(b, res);
            }
            return m;
        }
        for b in tier.sealed_between(from, first_block) {
            m.add_bucket(b, res);
        }
        // Blocks older than the tier keeps are of no further use.
        let oldest = tier.buckets.front().map_or(0, |b| b.start_s);
        self.blocks
            .retain(|((t, start), _)| *t != ti || start + span > oldest);
        let mut start = first_block;
        while start < end_blocks {
            let key = (ti, start);
            let i = match self.blocks.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) => i,
                Err(i) => {
                    let block =
                        Block::build(tier.sealed_between(start, start + span), res, compression);
                    self.blocks.insert(i, (key, block));
                    i
                }
            };
            self.blocks[i].1.add_to(&mut m);
            start += span;
        }
        for b in tier.sealed_between(end_blocks, to) {
            m.add_bucket(b, res);
        }
        m
    }
}

/// Collects the sealed and building parts of the window whose first second
/// is `from_s` (the open seconds are added by the caller).  Returns the
/// accumulated parts and the first second actually covered.
pub fn collect_window(
    store: &TierStore,
    cache: &mut MiddleCache,
    window_s: u64,
    from_s: u32,
    compression: f64,
) -> (WindowAcc, u32) {
    let specs: Vec<RetentionTier> = store.tiers.iter().map(|t| t.spec).collect();
    let p = plan(&specs, window_s);
    let mid = &store.tiers[p.middle_tier];
    let edge = &store.tiers[p.edge_tier];
    let mid_from = mid.ceil(from_s);
    let mid_to = mid.sealed_end().max(mid_from);
    let mut acc = WindowAcc::default();
    let covered_from = if p.edge_tier != p.middle_tier {
        let edge_from = edge.ceil(from_s);
        for b in edge.sealed_between(edge_from, mid_from) {
            acc.add_bucket(b, edge.spec.resolution_s);
        }
        // The edge tier's newest sealed second sits in its building bucket;
        // it belongs to the left edge when the middle tier's buckets start
        // after it (a window whose data all falls before `mid_from`).
        if let Some((start, agg)) = &edge.building {
            if (edge_from..mid_from).contains(start) {
                acc.add_agg(*start, agg, edge.spec.resolution_s);
            }
        }
        edge_from
    } else {
        mid_from
    };
    let key = (window_s, p.middle_tier, mid_from, mid_to);
    let middle = match cache.get(key) {
        Some(m) => m,
        None => {
            let m = cache
                .merge_range(p.middle_tier, mid, mid_from, mid_to, compression)
                .compact(compression);
            cache.insert(key, m)
        }
    };
    acc.add_acc(&middle);
    if let Some((start, agg)) = &mid.building {
        if *start >= mid_from {
            acc.add_agg(*start, agg, mid.spec.resolution_s);
        }
    }
    (acc, covered_from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_TIERS;

    #[test]
    fn plans_pick_edge_and_middle_tiers() {
        let t = &DEFAULT_TIERS;
        assert_eq!(
            plan(t, 60),
            Plan {
                edge_tier: 0,
                middle_tier: 0
            }
        );
        assert_eq!(
            plan(t, 300),
            Plan {
                edge_tier: 0,
                middle_tier: 1
            }
        );
        assert_eq!(
            plan(t, 3600),
            Plan {
                edge_tier: 1,
                middle_tier: 1
            }
        );
        assert_eq!(
            plan(t, 1800),
            Plan {
                edge_tier: 1,
                middle_tier: 1
            }
        );
        assert_eq!(
            plan(t, 6 * 3600),
            Plan {
                edge_tier: 2,
                middle_tier: 2
            }
        );
        assert_eq!(
            plan(t, 86_400),
            Plan {
                edge_tier: 2,
                middle_tier: 2
            }
        );
        assert_eq!(
            plan(t, 80),
            Plan {
                edge_tier: 0,
                middle_tier: 1
            }
        );
    }
}
