//! The maintained middle of a window (see `query` for the other parts).
//!
//! The middle `[from, to)` is itself three pieces, split at the boundaries
//! of the blocks of `BLOCK` buckets (an hour of minutes) inside it:
//!
//! ```text
//!   from      first block boundary        last block boundary      to
//!    | oldest  |  whole blocks (summaries)  |  newest (block filling) |
//! ```
//!
//! * the **newest** piece, the sealed buckets of the block still filling,
//!   grows incrementally: a newly sealed bucket is merged into the
//!   compacted piece, never the block's earlier buckets again.  When the
//!   block completes the piece becomes that block's summary;
//! * the **whole blocks** are merged from their summaries once per block
//!   boundary (hourly for 1 min buckets), or extended when only their
//!   newest end moved;
//! * the **oldest** piece, what is left of the block the window's start
//!   falls in, shrinks one bucket at a time.  A t-digest cannot give
//!   values back, so this piece is merged from its buckets each time.
//!
//! The three are compacted into one digest-sized middle.  Sealing keeps the
//! middles of the windows read in the last [`KEEP_WARM_S`] current
//! ([`refresh_middles`]), so the first read after a bucket seals finds its
//! middle merged and adds only the edges; a read that finds its middle
//! stale (a window not read lately) brings it up to date the same way.

use crate::agg::{merge_sorted, Agg};
use crate::query::{add_buckets, compact_minutes, middle_span, WindowAcc};
use crate::tiers::{Bucket, Tier, TierStore};

/// Recently read windows' middles, kept current as their tier seals, and
/// summaries of whole blocks of `BLOCK` sealed buckets that they reuse.
#[derive(Debug, Default)]
pub struct MiddleCache {
    middles: Vec<Middle>,
    /// ((tier, block start), summary), ascending.
    blocks: Vec<((usize, u32), Summary)>,
}

/// Buckets per cached block: an hour of minutes, ten minutes of 10 s.
pub const BLOCK: u32 = 60;

/// How long after its last read sealing keeps a window's middle current.
/// Past it the middle is dropped; the next read of that window rebuilds it.
pub const KEEP_WARM_S: u32 = 300;

/// Distinct window lengths cached per service (one middle each).
const CACHE_ENTRIES: usize = 8;

/// Merged sealed buckets of one tier in `[from, to)`.
#[derive(Debug)]
struct Piece<T> {
    from: u32,
    to: u32,
    acc: T,
}

/// One window length's middle and the pieces it was assembled from (see
/// the module docs).
#[derive(Debug)]
struct Middle {
    window_s: u64,
    tier: usize,
    /// The middle tier's sealed buckets `[from, to)` merged into `acc`.
    from: u32,
    to: u32,
    /// `None` until first built.
    acc: Option<Summary>,
    /// Whole blocks.
    whole: Option<Piece<Summary>>,
    /// The sealed buckets of the newest, still filling block, compacted
    /// but not frozen: it is merged into again and again, and re-freezing
    /// would round its means once per merge.
    newest: Option<Piece<WindowAcc>>,
    /// Last second this window was read at.
    read_s: u32,
}

impl Middle {
    fn heap_bytes(&self) -> usize {
        self.acc.as_ref().map_or(0, Summary::heap_bytes)
            + self.whole.as_ref().map_or(0, |p| p.acc.heap_bytes())
            + self.newest.as_ref().map_or(0, |p| p.acc.heap_bytes())
    }
}

/// Merged sealed buckets, frozen: exact scalars, the digests in the sealed
/// byte format (about 2.5 bytes a centroid instead of 16, means rounded
/// once to 0.034 %) and the minutes peak-rpm can still need.  A block of
/// `BLOCK` buckets spans whole UTC minutes, so its busiest minute is all it
/// keeps; a middle also keeps its first and last (see `WindowAcc::compact`).
#[derive(Debug)]
struct Summary {
    agg: Agg,
    latency: Box<[u8]>,
    processing: Box<[u8]>,
    minutes: Box<[(u32, f64)]>,
}

impl Summary {
    fn build<'a>(
        buckets: impl Iterator<Item = &'a Bucket>,
        resolution_s: u32,
        compression: f64,
    ) -> Summary {
        let mut w = WindowAcc::default();
        for b in buckets {
            w.add_bucket(b, resolution_s);
        }
        Summary::freeze(&w, compression, true)
    }

    /// Compacts and freezes `w` (its bins are not read); `peak_only` for
    /// spans of whole minutes that no other part shares a minute with.
    fn freeze(w: &WindowAcc, compression: f64, peak_only: bool) -> Summary {
        let mut agg = w.agg.clone();
        let latency = crate::sealed::freeze(&w.latency_points, &agg.latency, compression);
        let processing = crate::sealed::freeze(&w.processing_points, &agg.processing, compression);
        agg.latency.bins = crate::histogram::SparseBins::empty(agg.latency.bins_layout());
        agg.processing.bins = crate::histogram::SparseBins::empty(agg.processing.bins_layout());
        let minutes = if peak_only {
            w.peak().into_iter().collect()
        } else {
            compact_minutes(&w.minutes).into()
        };
        Summary {
            agg,
            latency,
            processing,
            minutes,
        }
    }

    fn add_to(&self, w: &mut WindowAcc) {
        w.agg.merge(&self.agg);
        w.latency_points
            .extend(crate::sealed::DigestView::new(&self.latency).points());
        w.processing_points
            .extend(crate::sealed::DigestView::new(&self.processing).points());
        merge_sorted(&mut w.minutes, &self.minutes, |a, b| *a += *b);
    }

    fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Summary>()
            + self.agg.heap_bytes()
            + self.latency.len()
            + self.processing.len()
            + std::mem::size_of_val(&*self.minutes)
    }
}

/// Adds the whole blocks of tier `ti` in `[from, to)` (both block
/// boundaries) from their summaries, building the missing ones.
fn add_blocks(
    blocks: &mut Vec<((usize, u32), Summary)>,
    w: &mut WindowAcc,
    ti: usize,
    tier: &Tier,
    from: u32,
    to: u32,
    compression: f64,
) {
    let span = tier.spec.resolution_s * BLOCK;
    // Blocks older than the tier keeps are of no further use.
    let oldest = tier.buckets.front().map_or(0, |b| b.start_s);
    blocks.retain(|((t, start), _)| *t != ti || start + span > oldest);
    let mut start = from;
    while start < to {
        let key = (ti, start);
        let i = match blocks.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(i) => i,
            Err(i) => {
                let block = Summary::build(
                    tier.sealed_between(start, start + span),
                    tier.spec.resolution_s,
                    compression,
                );
                blocks.insert(i, (key, block));
                i
            }
        };
        blocks[i].1.add_to(w);
        start += span;
    }
}

impl MiddleCache {
    pub fn clear(&mut self) {
        self.middles.clear();
        self.blocks.clear();
    }

    pub fn heap_bytes(&self) -> usize {
        self.middles.iter().map(Middle::heap_bytes).sum::<usize>()
            + self.middles.capacity() * std::mem::size_of::<Middle>()
            + self.blocks.capacity() * std::mem::size_of::<((usize, u32), Summary)>()
            + self
                .blocks
                .iter()
                .map(|(_, b)| b.heap_bytes() - std::mem::size_of::<Summary>())
                .sum::<usize>()
    }

    /// Adds the middle of `[from, to)` of tier `ti` for windows of
    /// `window_s`, brought up to date, to `into`; marks it read at `read_s`.
    pub(crate) fn middle(
        &mut self,
        (window_s, ti): (u64, usize),
        tier: &Tier,
        (from, to): (u32, u32),
        read_s: u32,
        compression: f64,
        into: &mut WindowAcc,
    ) {
        let i = match self
            .middles
            .iter()
            .position(|m| m.window_s == window_s && m.tier == ti)
        {
            Some(i) => i,
            None => {
                if self.middles.len() >= CACHE_ENTRIES {
                    // The least recently read window makes room.
                    let lru = (0..self.middles.len())
                        .min_by_key(|&i| self.middles[i].read_s)
                        .unwrap_or(0);
                    self.middles.swap_remove(lru);
                }
                self.middles.push(Middle {
                    window_s,
                    tier: ti,
                    from,
                    to,
                    acc: None,
                    whole: None,
                    newest: None,
                    read_s,
                });
                self.middles.len() - 1
            }
        };
        let m = &mut self.middles[i];
        m.read_s = m.read_s.max(read_s);
        update(m, &mut self.blocks, tier, (from, to), compression);
        if let Some(acc) = &m.acc {
            acc.add_to(into);
        }
    }
}

/// Brings `m` to the buckets `[from, to)`: nothing to do when it already
/// covers them; otherwise the newest piece takes the buckets sealed since,
/// the whole blocks are reused (or extended, or rebuilt at a block
/// boundary), and only the oldest piece is merged from its buckets.
fn update(
    m: &mut Middle,
    blocks: &mut Vec<((usize, u32), Summary)>,
    tier: &Tier,
    (from, to): (u32, u32),
    compression: f64,
) {
    if m.acc.is_some() && (m.from, m.to) == (from, to) {
        return;
    }
    let ti = m.tier;
    let span = tier.spec.resolution_s * BLOCK;
    let first_block = from.div_ceil(span).saturating_mul(span);
    let end_blocks = to / span * span;
    let mut acc = WindowAcc::default();
    if first_block > end_blocks {
        // `[from, to)` lies inside one block: a few buckets, merged whole.
        m.whole = None;
        m.newest = None;
        add_buckets(&mut acc, tier, from, to);
    } else {
        let newest = match m.newest.take() {
            Some(mut p) if p.from == end_blocks && p.to <= to => {
                if p.to < to {
                    let mut grown = std::mem::take(&mut p.acc);
                    add_buckets(&mut grown, tier, p.to, to);
                    p.acc = grown.compact(compression);
                    p.to = to;
                }
                p
            }
            stale => {
                // A newest piece that filled its block is that block's
                // summary: the whole blocks reuse it instead of its buckets.
                if let Some(p) = stale.filter(|p| p.from % span == 0 && p.to == p.from + span) {
                    let key = (ti, p.from);
                    if let Err(i) = blocks.binary_search_by(|(k, _)| k.cmp(&key)) {
                        blocks.insert(i, (key, Summary::freeze(&p.acc, compression, true)));
                    }
                }
                let mut w = WindowAcc::default();
                add_buckets(&mut w, tier, end_blocks, to);
                Piece {
                    from: end_blocks,
                    to,
                    acc: w.compact(compression),
                }
            }
        };
        let whole = match m.whole.take() {
            Some(p) if (p.from, p.to) == (first_block, end_blocks) => p,
            // Only the newest end moved (a window that is not a whole
            // number of blocks): extended, so re-frozen at most once
            // before its start passes a block boundary and it is rebuilt.
            Some(p) if p.from == first_block && p.to < end_blocks => {
                let mut w = WindowAcc::default();
                p.acc.add_to(&mut w);
                add_blocks(blocks, &mut w, ti, tier, p.to, end_blocks, compression);
                Piece {
                    from: first_block,
                    to: end_blocks,
                    acc: Summary::freeze(&w, compression, true),
                }
            }
            _ => {
                let mut w = WindowAcc::default();
                add_blocks(
                    blocks,
                    &mut w,
                    ti,
                    tier,
                    first_block,
                    end_blocks,
                    compression,
                );
                Piece {
                    from: first_block,
                    to: end_blocks,
                    acc: Summary::freeze(&w, compression, true),
                }
            }
        };
        add_buckets(&mut acc, tier, from, first_block);
        whole.acc.add_to(&mut acc);
        acc.add_acc(&newest.acc);
        m.whole = Some(whole);
        m.newest = Some(newest);
    }
    // Frozen once per update from unfrozen parts, so its means are rounded
    // once, as a sealed bucket's are.
    (m.from, m.to, m.acc) = (from, to, Some(Summary::freeze(&acc, compression, false)));
}

/// Keeps the middles of windows read within [`KEEP_WARM_S`] of `now_s`
/// current (called after each seal, so that the first read after a bucket
/// seals finds its middle merged) and drops the others.
pub fn refresh_middles(store: &TierStore, cache: &mut MiddleCache, now_s: u32, compression: f64) {
    let MiddleCache { middles, blocks } = cache;
    middles.retain(|m| now_s.saturating_sub(m.read_s) <= KEEP_WARM_S);
    for m in middles.iter_mut() {
        let Some(tier) = store.tiers.get(m.tier) else {
            continue;
        };
        let from_s = (now_s + 1).saturating_sub(m.window_s.min(u32::MAX as u64) as u32);
        update(m, blocks, tier, middle_span(tier, from_s), compression);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::agg::{DurationAgg, Gauge, GaugeAgg, HealthAgg, QueueAgg};
    use crate::config::RetentionTier;
    use crate::histogram::{LATENCY_BINS, PROCESSING_BINS};
    use crate::query::{collect_window, collect_window_uncached};

    const COMPRESSION: f64 = 500.0;

    /// Small tiers with several blocks per window, so that short runs
    /// cross many block boundaries: blocks of 120 s and 240 s.
    const TIERS: [RetentionTier; 3] = [
        RetentionTier::new(1, 30),
        RetentionTier::new(2, 300),
        RetentionTier::new(4, 600),
    ];
    const WINDOWS: [u64; 6] = [20, 60, 250, 600, 1300, 2400];

    /// xorshift64*: the values of one second from its seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A second's aggregate: a few latencies (1 ms to 1.1 s, log-uniform),
    /// sometimes errors, processing times, queue, gauges and health.
    fn second(seed: u64) -> Agg {
        let mut r = Rng(seed | 1);
        let n = (r.next() % 9) as usize;
        let values: Vec<f64> = (0..n).map(|_| (7.0 * r.unit()).exp()).collect();
        let mut a = Agg {
            latency: DurationAgg::from_values(&values, LATENCY_BINS),
            ..Agg::default()
        };
        if n > 0 && r.next() % 4 == 0 {
            a.errors = 1;
            a.error_types = vec![((r.next() % 3) as u8, 1)];
        }
        if r.next() % 5 == 0 {
            a.processing = DurationAgg::from_values(&[1000.0 + 500.0 * r.unit()], PROCESSING_BINS);
        }
        if r.next() % 3 == 0 {
            let depth = r.next() % 7;
            a.queue = QueueAgg {
                n: 1,
                depth_sum: depth,
                depth_max: depth,
            };
            let v = (100.0 * r.unit()).round();
            a.gauges = vec![(
                Gauge::CpuPct,
                GaugeAgg {
                    n: 1,
                    sum: v,
                    min: v,
                    max: v,
                },
            )];
        }
        if r.next() % 4 == 0 {
            a.health = HealthAgg {
                up: 1,
                down: 0,
                last: None,
                latency_n: 1,
                latency_sum_ms: 2.5,
            };
        }
        a
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Time moves on `secs` seconds; each has data with probability
        /// `density`/8 (0: an idle stretch).
        Advance { secs: u16, density: u8, seed: u64 },
        /// A second `back` seconds old arrives late.
        Late { back: u16, seed: u64 },
        /// One window is read.
        Read { window: usize },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (1u16..90, 0u8..=8, any::<u64>())
                .prop_map(|(secs, density, seed)| Step::Advance { secs, density, seed }),
            1 => (200u16..1500, 0u8..=8, any::<u64>())
                .prop_map(|(secs, density, seed)| Step::Advance { secs, density, seed }),
            1 => (2u16..400, any::<u64>()).prop_map(|(back, seed)| Step::Late { back, seed }),
            6 => (0..WINDOWS.len()).prop_map(|window| Step::Read { window }),
        ]
    }

    /// What `Service` does when seconds seal: insert, drop the cache on a
    /// late change, prune, refresh the read middles.
    fn seal(store: &mut TierStore, cache: &mut MiddleCache, seconds: &[(u32, Agg)], now_s: u32) {
        let revision = store.revision;
        for (s, a) in seconds {
            store.insert(*s, a);
        }
        if store.revision != revision {
            cache.clear();
        }
        store.prune(now_s);
        refresh_middles(store, cache, now_s, COMPRESSION);
    }

    /// The read through the maintained middle against the one merged
    /// straight from the buckets: exact scalars, the same busiest minute,
    /// and percentiles within a rank error far under the accuracy targets.
    fn check(store: &TierStore, cache: &mut MiddleCache, window_s: u64, now_s: u32) {
        let (got, got_from) = collect_window(store, cache, window_s, now_s, COMPRESSION);
        let (want, want_from) = collect_window_uncached(store, window_s, now_s);
        assert_eq!(got_from, want_from);
        let (g, w) = (&got.agg, &want.agg);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
        assert_eq!(
            g.latency.count, w.latency.count,
            "window {window_s} at {now_s}"
        );
        assert!(close(g.latency.sum_ms, w.latency.sum_ms));
        assert_eq!(
            (g.latency.min_ms, g.latency.max_ms),
            (w.latency.min_ms, w.latency.max_ms)
        );
        assert_eq!((g.errors, &g.error_types), (w.errors, &w.error_types));
        assert_eq!(g.processing.count, w.processing.count);
        assert!(close(g.processing.sum_ms, w.processing.sum_ms));
        assert_eq!(
            (g.processing.min_ms, g.processing.max_ms),
            (w.processing.min_ms, w.processing.max_ms)
        );
        assert_eq!(g.queue, w.queue);
        assert_eq!(g.gauges.len(), w.gauges.len());
        for ((gk, ga), (wk, wa)) in g.gauges.iter().zip(&w.gauges) {
            assert_eq!((gk, ga.n, ga.min, ga.max), (wk, wa.n, wa.min, wa.max));
            assert!(close(ga.sum, wa.sum));
        }
        assert_eq!(
            (
                g.health.up,
                g.health.down,
                g.health.latency_n,
                g.health.last
            ),
            (
                w.health.up,
                w.health.down,
                w.health.latency_n,
                w.health.last
            )
        );
        assert!(close(g.health.latency_sum_ms, w.health.latency_sum_ms));
        assert_eq!(got.peak(), want.peak(), "busiest minute, window {window_s}");
        for (gd, wd, n) in [
            (
                got.latency_digest(COMPRESSION),
                want.latency_digest(COMPRESSION),
                w.latency.count,
            ),
            (
                got.processing_digest(COMPRESSION),
                want.processing_digest(COMPRESSION),
                w.processing.count,
            ),
        ] {
            assert_eq!(gd.is_some(), wd.is_some());
            let (Some(gd), Some(wd)) = (gd, wd) else {
                continue;
            };
            assert_eq!(gd.count(), wd.count());
            for q in [0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999] {
                let v = gd.quantile(q).unwrap().unwrap();
                let rank = wd.cdf(v).unwrap();
                // The widest centroid a digest at 500 may hold at q (the
                // middle is compacted at that compression before the edges
                // join it; see `tdigest::compress`), plus a few values
                // either way where values are few: the maintained read is
                // compacted twice (the middle, then middle + edges), the
                // re-merge once, and in a sparse tail with gaps in the data
                // each compaction can move a quantile by a value.  Both are
                // approximations (their accuracy against the exact values
                // is tests/test_accuracy.py's); this bounds how far apart
                // they may be.  Seen in 4 000-case runs (seeds kept in
                // proptest-regressions/middle.txt): 1.7 values at p99 of
                // 395; at p99.9 (not a figure the API reports: it stops at
                // p99) up to 3.9 values of 5 690.
                let z = 4.0 * (n as f64 / COMPRESSION).ln().max(0.0) + 24.0;
                let values = if q >= 0.999 { 6.0 } else { 2.5 };
                let slack = z / COMPRESSION * q * (1.0 - q) + values / n as f64;
                // Where values tie the re-merge's rank jumps: then the
                // value itself must be within the 0.5 % digest target.
                let want_v = wd.quantile(q).unwrap().unwrap();
                assert!(
                    (rank - q).abs() <= slack || (v - want_v).abs() <= 0.005 * want_v,
                    "window {window_s} at {now_s}: p{q} = {v} (re-merge {want_v}) has rank {rank} \
                     in the re-merge (n = {n})"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        #[test]
        fn maintained_middle_matches_a_full_re_merge(
            steps in prop::collection::vec(step(), 1..80)
        ) {
            let mut store = TierStore::new(&TIERS, 200.0, 200.0);
            let mut cache = MiddleCache::default();
            let mut now_s = 1_000u32;
            for st in steps {
                match st {
                    Step::Advance { secs, density, seed } => {
                        let seconds: Vec<(u32, Agg)> = (now_s..now_s + secs as u32)
                            .filter(|s| (seed ^ *s as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61 < density as u64)
                            .map(|s| (s, second(seed ^ s as u64)))
                            .collect();
                        now_s += secs as u32;
                        seal(&mut store, &mut cache, &seconds, now_s);
                    }
                    Step::Late { back, seed } => {
                        let s = now_s.saturating_sub(back as u32);
                        seal(&mut store, &mut cache, &[(s, second(seed))], now_s);
                    }
                    Step::Read { window } => check(&store, &mut cache, WINDOWS[window], now_s),
                }
            }
            for w in WINDOWS {
                check(&store, &mut cache, w, now_s);
            }
        }
    }

    #[test]
    fn sealing_keeps_a_read_middle_current() {
        let mut store = TierStore::new(&TIERS, 200.0, 200.0);
        let mut cache = MiddleCache::default();
        let mut now_s = 10_000u32;
        let window_s = 2400;
        for _ in 0..3 {
            for _ in 0..700 {
                now_s += 1;
                seal(
                    &mut store,
                    &mut cache,
                    &[(now_s - 1, second(now_s as u64))],
                    now_s,
                );
            }
            collect_window(&store, &mut cache, window_s, now_s, COMPRESSION);
        }
        // Past a 4 s bucket boundary the seal has already moved the middle
        // on: the read finds it covering exactly the buckets it needs.
        for _ in 0..9 {
            now_s += 1;
            seal(
                &mut store,
                &mut cache,
                &[(now_s - 1, second(now_s as u64))],
                now_s,
            );
        }
        let tier = &store.tiers[2];
        let want = middle_span(tier, now_s + 1 - window_s as u32);
        let m = &cache.middles[0];
        assert_eq!((m.from, m.to), want);
        let before = m.acc.as_ref().unwrap().latency.as_ptr();
        collect_window(&store, &mut cache, window_s, now_s, COMPRESSION);
        let after = cache.middles[0].acc.as_ref().unwrap().latency.as_ptr();
        assert_eq!(before, after, "the read did not rebuild the middle");
        // The pieces: whole blocks of 240 s and the newest block's buckets.
        let whole = cache.middles[0].whole.as_ref().unwrap();
        assert_eq!((whole.from % 240, whole.to % 240), (0, 0));
        assert!(whole.to - whole.from >= 240 * 8);
        let newest = cache.middles[0].newest.as_ref().unwrap();
        assert_eq!((newest.from, newest.to), (whole.to, want.1));
        // Unread for longer than KEEP_WARM_S, the middle is dropped.
        for _ in 0..KEEP_WARM_S + 1 {
            now_s += 1;
            seal(&mut store, &mut cache, &[], now_s);
        }
        assert!(cache.middles.is_empty());
    }
}
