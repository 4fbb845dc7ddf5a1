//! The byte layout of a sealed bucket's digests and less common aggregates.
//!
//! 24 h of 1-minute buckets is most of a service's memory, so everything
//! but the hot scalars (count, errors, sum, min, max) lives in one boxed
//! byte string per bucket, allocated once at seal time:
//!
//! ```text
//!   blob   = varint(len(latency)) latency extras
//!   digest = (varint(Δcode) varint(weight))*      ascending means
//!   extras = flags [error types] [processing] [queue] [gauges] [health]
//! ```
//!
//! A digest mean is a 16-bit fixed-point log2 code (steps of 2^(1/1024):
//! ≤ 0.034 % off, an order of magnitude under the 0.39 % of the bins the
//! values came from), stored as the delta from the previous code, so a
//! centroid usually costs two bytes.  Extras only hold the sections that
//! have data; gauge min/max are kept as f32 (7 significant digits, rounded
//! outward so min <= avg <= max still holds after reading back) and all
//! sums as f64 so averages over a day do not drift.

use crate::agg::{merge_sorted, Agg, DurationAgg, Gauge, GaugeAgg, HealthAgg, QueueAgg};
use crate::open_slot::MAX_ERROR_TYPES;
use crate::service::MAX_DURATION_MS;
use crate::tdigest::TDigest;

/// Most requests (or readings) one stored bucket may claim: far beyond any
/// real bucket (2^48 ≈ 2.8e14), and small enough that sums over any window
/// stay exact in u64 and finite in f64, so merged buckets store again.
pub(crate) const MAX_STORED_COUNT: u64 = 1 << 48;

const HAS_ERROR_TYPES: u8 = 1;
const HAS_PROCESSING: u8 = 2;
const HAS_QUEUE: u8 = 4;
const HAS_GAUGES: u8 = 8;
const HAS_HEALTH: u8 = 16;

/// log2 fixed-point scale of digest means.
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

/// `v` as the nearest f32 not past it in the given direction (up: >= v,
/// down: <= v).
fn f32_toward(v: f64, up: bool) -> f32 {
    let f = v as f32;
    if !f.is_finite() || f as f64 == v {
        return f;
    }
    let past = if up { f as f64 > v } else { (f as f64) < v };
    if past {
        return f;
    }
    // One ulp further out: away from zero when moving outward from the
    // value's own sign, toward zero otherwise.
    let bits = f.to_bits();
    let away = (f > 0.0) == up;
    if f == 0.0 {
        let tiny = f32::from_bits(1);
        return if up { tiny } else { -tiny };
    }
    f32::from_bits(if away { bits + 1 } else { bits - 1 })
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

/// A cursor over bytes this module wrote (so reads cannot run short).
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        while self.at < self.bytes.len() && shift < 64 {
            let b = self.bytes[self.at];
            self.at += 1;
            v |= ((b & 0x7F) as u64) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let end = (self.at + n).min(self.bytes.len());
        let s = &self.bytes[self.at..end];
        self.at = end;
        s
    }
    fn f64(&mut self) -> f64 {
        self.take(8).try_into().map_or(0.0, f64::from_le_bytes)
    }
    fn f32(&mut self) -> f32 {
        self.take(4).try_into().map_or(0.0, f32::from_le_bytes)
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
}

/// Appends the digest of `points` (exact `d` scalars give min/max).
fn encode_digest(points: &[(f64, u64)], d: &DurationAgg, compression: f64, out: &mut Vec<u8>) {
    if d.count == 0 || points.is_empty() {
        return;
    }
    let Ok(digest) = TDigest::from_weighted(compression, points, d.min_ms, d.max_ms) else {
        return;
    };
    let mut prev = 0u16;
    let mut pending: Option<(u16, u64)> = None;
    let flush = |out: &mut Vec<u8>, c: u16, w: u64, prev: &mut u16| {
        push_varint(out, (c - *prev) as u64);
        push_varint(out, w);
        *prev = c;
    };
    // Centroids whose means code the same are merged: the code is all a
    // reader could tell them apart by.
    for (mean, w) in digest.centroids() {
        let code = encode_mean(mean);
        match &mut pending {
            Some((c, acc)) if *c == code => *acc += w,
            _ => {
                if let Some((c, acc)) = pending.take() {
                    flush(out, c, acc, &mut prev);
                }
                pending = Some((code, w));
            }
        }
    }
    if let Some((c, acc)) = pending {
        flush(out, c, acc, &mut prev);
    }
}

/// A frozen digest inside a blob.
#[derive(Debug, Clone, Copy)]
pub struct DigestView<'a>(&'a [u8]);

/// Freezes the digest of `points` on its own (for cached summaries).
pub fn freeze(points: &[(f64, u64)], d: &DurationAgg, compression: f64) -> Box<[u8]> {
    let mut out = Vec::new();
    encode_digest(points, d, compression, &mut out);
    out.into_boxed_slice()
}

impl<'a> DigestView<'a> {
    /// A view of bytes made by [`freeze`].
    pub fn new(bytes: &'a [u8]) -> Self {
        DigestView(bytes)
    }

    /// The centroids as weighted points, ascending.
    pub fn points(self) -> impl Iterator<Item = (f64, u64)> + 'a {
        let mut r = Reader {
            bytes: self.0,
            at: 0,
        };
        let mut code = 0u64;
        std::iter::from_fn(move || {
            if r.at >= r.bytes.len() {
                return None;
            }
            code += r.varint();
            let w = r.varint();
            Some((decode_mean(code.min(u16::MAX as u64) as u16), w))
        })
    }

    pub fn len_bytes(self) -> usize {
        self.0.len()
    }
}

/// Encodes a bucket: digests of the given points (bins of `agg` are not
/// read) and every extras section `agg` has.  `None` when there is nothing.
#[cfg(test)]
pub fn encode_blob(
    agg: &Agg,
    latency_points: &[(f64, u64)],
    processing_points: &[(f64, u64)],
    compression: f64,
) -> Option<Box<[u8]>> {
    let mut out = Vec::new();
    encode_blob_into(
        agg,
        latency_points,
        processing_points,
        compression,
        &mut out,
    )
    .then(|| out.into_boxed_slice())
}

/// Appends the digest of `points` to `out` behind its varint length.
fn push_sized_digest(points: &[(f64, u64)], d: &DurationAgg, compression: f64, out: &mut Vec<u8>) {
    let at = out.len();
    encode_digest(points, d, compression, out);
    // The varint of the length, put in front of the digest.
    let (mut n, mut head, mut k) = ((out.len() - at) as u64, [0u8; 10], 0);
    loop {
        head[k] = (n & 0x7F) as u8;
        n >>= 7;
        k += 1;
        if n == 0 {
            break;
        }
        head[k - 1] |= 0x80;
    }
    out.splice(at..at, head[..k].iter().copied());
}

/// [`encode_blob`] into a caller's buffer (cleared first), so sealing can
/// reuse one scratch buffer and allocate only the blob's exact bytes.
/// False when there is nothing to encode.
pub fn encode_blob_into(
    agg: &Agg,
    latency_points: &[(f64, u64)],
    processing_points: &[(f64, u64)],
    compression: f64,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    push_sized_digest(latency_points, &agg.latency, compression, out);
    let latency_empty = out.len() == 1;

    let p = &agg.processing;
    let h = &agg.health;
    let sections = [
        (!agg.error_types.is_empty(), HAS_ERROR_TYPES),
        (p.count > 0, HAS_PROCESSING),
        (agg.queue.n > 0, HAS_QUEUE),
        (!agg.gauges.is_empty(), HAS_GAUGES),
        ((h.up | h.down | h.latency_n) != 0, HAS_HEALTH),
    ];
    let flags = sections
        .iter()
        .filter(|(present, _)| *present)
        .fold(0u8, |f, (_, bit)| f | bit);
    if flags == 0 && latency_empty {
        out.clear();
        return false;
    }
    out.push(flags);
    if flags & HAS_ERROR_TYPES != 0 {
        push_varint(out, agg.error_types.len() as u64);
        for &(id, n) in &agg.error_types {
            out.push(id);
            push_varint(out, n as u64);
        }
    }
    if flags & HAS_PROCESSING != 0 {
        push_varint(out, p.count);
        for v in [p.sum_ms, p.min_ms, p.max_ms] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        push_sized_digest(processing_points, p, compression, out);
    }
    if flags & HAS_QUEUE != 0 {
        for v in [agg.queue.n, agg.queue.depth_max, agg.queue.depth_sum] {
            push_varint(out, v);
        }
    }
    if flags & HAS_GAUGES != 0 {
        push_varint(out, agg.gauges.len() as u64);
        for (g, a) in &agg.gauges {
            out.push(*g as u8);
            push_varint(out, a.n);
            out.extend_from_slice(&a.sum.to_le_bytes());
            out.extend_from_slice(&f32_toward(a.min, false).to_le_bytes());
            out.extend_from_slice(&f32_toward(a.max, true).to_le_bytes());
        }
    }
    if flags & HAS_HEALTH != 0 {
        for v in [h.up, h.down, h.latency_n] {
            push_varint(out, v as u64);
        }
        if h.latency_n > 0 {
            out.extend_from_slice(&h.latency_sum_ms.to_le_bytes());
        }
    }
    true
}

fn split(blob: &[u8]) -> (DigestView<'_>, Reader<'_>) {
    let mut r = Reader { bytes: blob, at: 0 };
    let n = r.varint() as usize;
    let latency = DigestView(r.take(n));
    (latency, r)
}

/// The latency digest of a blob.
pub fn latency(blob: &[u8]) -> Option<DigestView<'_>> {
    let (d, _) = split(blob);
    (d.len_bytes() > 0).then_some(d)
}

/// Decodes the extras into `into` (adding), returning the processing digest.
pub fn merge_extras<'a>(blob: &'a [u8], into: Option<&mut Agg>) -> Option<DigestView<'a>> {
    let (_, mut r) = split(blob);
    let flags = r.u8();
    let mut scratch = Agg::default();
    let agg = into.unwrap_or(&mut scratch);
    if flags & HAS_ERROR_TYPES != 0 {
        let k = r.varint();
        for _ in 0..k {
            let id = r.u8();
            // check_blob refused counts past u32::MAX.
            let n = r.varint() as u32;
            merge_sorted(&mut agg.error_types, &[(id, n)], |a, b| {
                *a = a.saturating_add(*b)
            });
        }
    }
    let mut processing = None;
    if flags & HAS_PROCESSING != 0 {
        let count = r.varint();
        let (sum, min, max) = (r.f64(), r.f64(), r.f64());
        let d = &mut agg.processing;
        d.count = d.count.saturating_add(count);
        d.sum_ms += sum;
        d.min_ms = d.min_ms.min(min);
        d.max_ms = d.max_ms.max(max);
        let n = r.varint() as usize;
        let view = DigestView(r.take(n));
        processing = (n > 0).then_some(view);
    }
    if flags & HAS_QUEUE != 0 {
        let (n, depth_max, depth_sum) = (r.varint(), r.varint(), r.varint());
        agg.queue.merge(&QueueAgg {
            n,
            depth_sum,
            depth_max,
        });
    }
    if flags & HAS_GAUGES != 0 {
        let k = r.varint();
        for _ in 0..k {
            let tag = r.u8();
            let n = r.varint();
            let (sum, min, max) = (r.f64(), r.f32(), r.f32());
            if let Some(&g) = Gauge::ALL.get(tag as usize) {
                let a = GaugeAgg {
                    n,
                    sum,
                    min: min as f64,
                    max: max as f64,
                };
                merge_sorted(&mut agg.gauges, &[(g, a)], |x, y| x.merge(y));
            }
        }
    }
    if flags & HAS_HEALTH != 0 {
        let (up, down, latency_n) = (r.varint(), r.varint(), r.varint());
        let latency_sum_ms = if latency_n > 0 { r.f64() } else { 0.0 };
        agg.health.merge(&HealthAgg {
            up: up as u32,
            down: down as u32,
            last: None,
            latency_n: latency_n as u32,
            latency_sum_ms,
        });
    }
    processing
}

/// A strict cursor for bytes that come from outside (storage): every read
/// that runs short, or a varint longer than 64 bits, marks it bad.
struct Strict<'a> {
    bytes: &'a [u8],
    at: usize,
    bad: bool,
}

impl<'a> Strict<'a> {
    fn varint(&mut self) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.at) else {
                self.bad = true;
                return 0;
            };
            self.at += 1;
            v |= ((b & 0x7F) as u64) << shift;
            if b & 0x80 == 0 {
                return v;
            }
        }
        self.bad = true;
        v
    }
    fn take(&mut self, n: u64) -> &'a [u8] {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            self.bad = true;
            self.at = self.bytes.len();
            return &[];
        }
        let s = &self.bytes[self.at..self.at + n as usize];
        self.at += n as usize;
        s
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    /// An f64 in `[lo, hi]` (NaN is not).
    fn within(&mut self, lo: f64, hi: f64) {
        let b = self.take(8);
        let v = b.try_into().map_or(f64::NAN, f64::from_le_bytes);
        self.bad |= !(lo..=hi).contains(&v);
    }
    fn finite(&mut self, width: u64) {
        let b = self.take(width);
        let ok = match b.len() {
            8 => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])).is_finite(),
            4 => f32::from_le_bytes(b.try_into().unwrap_or([0; 4])).is_finite(),
            _ => false,
        };
        self.bad |= !ok;
    }
}

/// Total weight of a digest section, or `None` when it is malformed.
fn check_digest(bytes: &[u8]) -> Option<u64> {
    let mut r = Strict {
        bytes,
        at: 0,
        bad: false,
    };
    let (mut code, mut total) = (0u64, 0u64);
    while r.at < bytes.len() {
        // Checked: a wrapped sum of deltas could land back under u16::MAX.
        code = code.checked_add(r.varint())?;
        let w = r.varint();
        if r.bad || code > u16::MAX as u64 || w == 0 {
            return None;
        }
        total = total.checked_add(w)?;
    }
    Some(total)
}

/// What a well-formed stored blob holds, for checks against its bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobShape {
    /// Total weight of the latency digest (the bucket's request count).
    pub latency_weight: u64,
    /// Highest error-type id used, if any.
    pub max_error_id: Option<u8>,
}

/// Checks bytes read back from storage before they become a bucket: every
/// section parses, lengths fit, floats are finite, ids are in range and
/// nothing trails.  `None` when anything is off.
pub fn check_blob(blob: &[u8]) -> Option<BlobShape> {
    let mut r = Strict {
        bytes: blob,
        at: 0,
        bad: false,
    };
    let n = r.varint();
    let latency_weight = check_digest(r.take(n))?;
    let flags = r.u8();
    if r.bad
        || flags & !(HAS_ERROR_TYPES | HAS_PROCESSING | HAS_QUEUE | HAS_GAUGES | HAS_HEALTH) != 0
    {
        return None;
    }
    let mut max_error_id = None;
    if flags & HAS_ERROR_TYPES != 0 {
        let k = r.varint();
        if k > MAX_ERROR_TYPES as u64 + 1 {
            return None;
        }
        for _ in 0..k {
            let id = r.u8();
            // Counts are u32 in the engine: a larger one was not written by it.
            if id as usize > MAX_ERROR_TYPES || r.varint() > u32::MAX as u64 {
                return None;
            }
            max_error_id = max_error_id.max(Some(id));
        }
    }
    if flags & HAS_PROCESSING != 0 {
        // Durations the engine records lie in [0, MAX_DURATION_MS].
        let count = r.varint();
        if count > MAX_STORED_COUNT {
            return None;
        }
        r.within(0.0, count as f64 * MAX_DURATION_MS * (1.0 + 1e-9));
        r.within(0.0, MAX_DURATION_MS);
        r.within(0.0, MAX_DURATION_MS);
        let n = r.varint();
        check_digest(r.take(n))?;
    }
    if flags & HAS_QUEUE != 0 {
        for _ in 0..3 {
            r.varint();
        }
    }
    if flags & HAS_GAUGES != 0 {
        let k = r.varint();
        if k > Gauge::ALL.len() as u64 {
            return None;
        }
        for _ in 0..k {
            let g = Gauge::ALL.get(r.u8() as usize)?;
            // A gauge is only written with readings (n = 0 would read as a
            // NaN average), each within the gauge's range.
            let n = r.varint();
            if n == 0 || n > MAX_STORED_COUNT {
                return None;
            }
            let (lo, hi) = g.range();
            let reach = lo.abs().max(hi.abs()) * n as f64 * (1.0 + 1e-9);
            r.within(-reach, reach);
            r.finite(4);
            r.finite(4);
        }
    }
    if flags & HAS_HEALTH != 0 {
        let (up, down, latency_n) = (r.varint(), r.varint(), r.varint());
        if up.max(down).max(latency_n) > u32::MAX as u64 {
            return None;
        }
        if latency_n > 0 {
            r.within(0.0, latency_n as f64 * MAX_DURATION_MS * (1.0 + 1e-9));
        }
    }
    (!r.bad && r.at == blob.len()).then_some(BlobShape {
        latency_weight,
        max_error_id,
    })
}

/// Rewrites the error-type ids of a checked blob through `map` (old id →
/// new id), for history reloaded into a service whose ids differ.
pub fn remap_error_ids(blob: &[u8], map: &[u8; MAX_ERROR_TYPES + 1]) -> Box<[u8]> {
    let (latency, mut r) = split(blob);
    let mut out = Vec::with_capacity(blob.len());
    push_varint(&mut out, latency.len_bytes() as u64);
    out.extend_from_slice(latency.0);
    let flags = r.u8();
    out.push(flags);
    if flags & HAS_ERROR_TYPES != 0 {
        let k = r.varint();
        let mut types: Vec<(u8, u32)> = Vec::new();
        for _ in 0..k {
            let id = map[(r.u8() as usize).min(MAX_ERROR_TYPES)];
            let n = r.varint() as u32;
            merge_sorted(&mut types, &[(id, n)], |a, b| *a = a.saturating_add(*b));
        }
        push_varint(&mut out, types.len() as u64);
        for (id, n) in types {
            out.push(id);
            push_varint(&mut out, n as u64);
        }
    }
    out.extend_from_slice(&r.bytes[r.at..]);
    out.into_boxed_slice()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::{LATENCY_BINS, PROCESSING_BINS};

    fn duration(values: &[f64], layout: crate::histogram::BinLayout) -> DurationAgg {
        DurationAgg::from_values(values, layout)
    }

    #[test]
    fn gauge_bounds_round_outward() {
        for v in [
            1e9 + 90.0,
            -1e9 - 90.0,
            0.1,
            -0.1,
            6.1e9 + 7.0,
            3.0,
            1e-50,
            -1e-50,
        ] {
            let (lo, hi) = (f32_toward(v, false) as f64, f32_toward(v, true) as f64);
            assert!(lo <= v && v <= hi, "{v}: {lo} .. {hi}");
            assert!((hi - lo) <= v.abs() * 2.5e-7 + 1e-44, "{v}: {lo} .. {hi}");
        }
    }

    #[test]
    fn mean_codes_are_within_a_step() {
        for v in [1e-3, 0.5, 1.0, 37.25, 1234.5, 9.99e8] {
            let back = decode_mean(encode_mean(v));
            assert!((back - v).abs() / v < 3.4e-4, "{v} -> {back}");
        }
        assert_eq!(decode_mean(encode_mean(0.0)), 0.0);
    }

    #[test]
    fn blob_round_trips_every_section() {
        let mut a = Agg::default();
        a.latency = duration(&[0.5, 3.0, 3.0, 250.0, 4e8], LATENCY_BINS);
        a.errors = 3;
        a.error_types = vec![(0, 2), (32, 1)];
        a.processing = duration(&[1500.0, 2500.0], PROCESSING_BINS);
        a.queue = QueueAgg {
            n: 3,
            depth_sum: 7,
            depth_max: 4,
        };
        a.gauges = vec![
            (
                Gauge::VramUsedBytes,
                GaugeAgg {
                    n: 2,
                    sum: 2.0e10,
                    min: 9.5e9,
                    max: 1.05e10,
                },
            ),
            (
                Gauge::GpuTempC,
                GaugeAgg {
                    n: 1,
                    sum: -3.5,
                    min: -3.5,
                    max: -3.5,
                },
            ),
        ];
        a.health = HealthAgg {
            up: 5,
            down: 1,
            last: Some((9, true)),
            latency_n: 2,
            latency_sum_ms: 7.25,
        };
        let lp = a
            .latency
            .bins
            .weighted_points(a.latency.min_ms, a.latency.max_ms);
        let pp = a
            .processing
            .bins
            .weighted_points(a.processing.min_ms, a.processing.max_ms);
        let blob = encode_blob(&a, &lp, &pp, 200.0).unwrap();
        let lat: Vec<_> = latency(&blob).unwrap().points().collect();
        assert_eq!(lat.iter().map(|p| p.1).sum::<u64>(), 5);
        assert_eq!(lat.len(), 4, "the two 3.0s share a centroid");
        let mut back = Agg::default();
        let proc_view = merge_extras(&blob, Some(&mut back)).unwrap();
        assert_eq!(proc_view.points().map(|p| p.1).sum::<u64>(), 2);
        assert_eq!(back.error_types, a.error_types);
        assert_eq!(back.processing.count, 2);
        assert_eq!(
            (
                back.processing.sum_ms,
                back.processing.min_ms,
                back.processing.max_ms
            ),
            (4000.0, 1500.0, 2500.0)
        );
        assert_eq!(back.queue, a.queue);
        assert_eq!(back.gauges[0].1.sum, 2.0e10);
        assert!(
            (back.gauges[0].1.max - 1.05e10).abs() / 1.05e10 < 1e-7,
            "f32 min/max"
        );
        assert_eq!(back.gauges[1].1.min, -3.5);
        assert_eq!(
            (back.health.up, back.health.down, back.health.latency_n),
            (5, 1, 2)
        );
        assert_eq!(back.health.latency_sum_ms, 7.25);
        assert!(blob.len() < 120, "{} bytes", blob.len());
    }

    #[test]
    fn latency_only_bucket_is_just_its_digest() {
        let mut a = Agg::default();
        a.latency = duration(&[10.0, 11.0, 12.0], LATENCY_BINS);
        let lp = a.latency.bins.weighted_points(10.0, 12.0);
        let blob = encode_blob(&a, &lp, &[], 200.0).unwrap();
        assert!(blob.len() <= 1 + 3 * 3 + 1, "{} bytes", blob.len());
        let mut back = Agg::default();
        assert!(merge_extras(&blob, Some(&mut back)).is_none());
        assert!(back.is_empty());
        assert!(encode_blob(&Agg::default(), &[], &[], 200.0).is_none());
    }
}
