//! Answering a window from the tiers.
//!
//! A window of `w` seconds ending now is assembled from at most three kinds
//! of parts, chosen so that a query touches few digests however long it is:
//!
//! * the **middle**: sealed buckets of the coarsest tier whose resolution is
//!   at most an eighth of the window (10 s buckets for 5 min and 1 h, 1 min
//!   beyond), never the archive tier (the last, kept at a lower compression)
//!   for a window a finer tier covers whole.  It only changes when that tier
//!   seals a bucket or the window's start passes one, and it is kept merged
//!   (see `middle`);
//! * the **left edge**: sealed buckets of the finest tier that still covers
//!   the whole window, between the window's start and the first middle
//!   bucket (at most 9 one-second buckets for 5 min);
//! * the **right edge**: the middle tier's building bucket (exact bins of
//!   the seconds sealed since its start) and the seconds still open.
//!
//! The window therefore starts at the first whole bucket of the left-edge
//! tier: exact for windows up to the finest tier's 5 min, within 10 s up to
//! 1 h, within 1 min beyond.  The start actually covered is reported.

use crate::agg::{merge_sorted, Agg};
use crate::config::RetentionTier;
pub use crate::middle::MiddleCache;
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
    pub(crate) fn compact(mut self, compression: f64) -> WindowAcc {
        if self.minutes.len() > 3 {
            self.minutes = compact_minutes(&self.minutes);
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

/// The minutes of a span that peak-rpm can still need once other parts
/// join it: only its first and last minute can be shared with a
/// neighbouring part; of the others, the (earliest) busiest is all.
pub(crate) fn compact_minutes(minutes: &[(u32, f64)]) -> Vec<(u32, f64)> {
    if minutes.len() <= 3 {
        return minutes.to_vec();
    }
    let last = minutes.len() - 1;
    let inner = minutes[1..last]
        .iter()
        .copied()
        .fold(minutes[1], |b, m| if m.1 > b.1 { m } else { b });
    vec![minutes[0], inner, minutes[last]]
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

/// The middle tier's sealed buckets a window whose first second is
/// `from_s` takes: `[from, to)`.
pub(crate) fn middle_span(tier: &Tier, from_s: u32) -> (u32, u32) {
    let from = tier.ceil(from_s);
    (from, tier.sealed_end().max(from))
}

/// Adds the sealed buckets of `tier` in `[from, to)` one by one.
pub(crate) fn add_buckets(w: &mut WindowAcc, tier: &Tier, from: u32, to: u32) {
    for b in tier.sealed_between(from, to) {
        w.add_bucket(b, tier.spec.resolution_s);
    }
}

/// Collects the sealed and building parts of the window of `window_s`
/// ending at `now_s` (the open seconds are added by the caller).  Returns
/// the accumulated parts and the first second actually covered.
pub fn collect_window(
    store: &TierStore,
    cache: &mut MiddleCache,
    window_s: u64,
    now_s: u32,
    compression: f64,
) -> (WindowAcc, u32) {
    let from_s = (now_s + 1).saturating_sub(window_s.min(u32::MAX as u64) as u32);
    let specs: Vec<RetentionTier> = store.tiers.iter().map(|t| t.spec).collect();
    let p = plan(&specs, window_s);
    let mid = &store.tiers[p.middle_tier];
    let edge = &store.tiers[p.edge_tier];
    let (mid_from, mid_to) = middle_span(mid, from_s);
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
    cache.middle(
        (window_s, p.middle_tier),
        mid,
        (mid_from, mid_to),
        now_s,
        compression,
        &mut acc,
    );
    if let Some((start, agg)) = &mid.building {
        if *start >= mid_from {
            acc.add_agg(*start, agg, mid.spec.resolution_s);
        }
    }
    (acc, covered_from)
}

/// The same parts merged straight from the buckets, with no cache: the
/// oracle the maintained middle is tested against.
#[cfg(test)]
pub(crate) fn collect_window_uncached(
    store: &TierStore,
    window_s: u64,
    now_s: u32,
) -> (WindowAcc, u32) {
    let from_s = (now_s + 1).saturating_sub(window_s.min(u32::MAX as u64) as u32);
    let specs: Vec<RetentionTier> = store.tiers.iter().map(|t| t.spec).collect();
    let p = plan(&specs, window_s);
    let (mid, edge) = (&store.tiers[p.middle_tier], &store.tiers[p.edge_tier]);
    let (mid_from, mid_to) = middle_span(mid, from_s);
    let mut acc = WindowAcc::default();
    let mut covered_from = mid_from;
    if p.edge_tier != p.middle_tier {
        covered_from = edge.ceil(from_s);
        add_buckets(&mut acc, edge, covered_from, mid_from);
        if let Some((start, agg)) = &edge.building {
            if (covered_from..mid_from).contains(start) {
                acc.add_agg(*start, agg, edge.spec.resolution_s);
            }
        }
    }
    add_buckets(&mut acc, mid, mid_from, mid_to);
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
