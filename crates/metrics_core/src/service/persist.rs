//! What storage needs from a service: its sealed buckets, health runs and
//! error-type names out, the same back in at start, and lifetime totals.
//!
//! Everything crosses this boundary in UTC epoch seconds, so a file written
//! by one process reads back in another whose clock has a different base.

use super::{History, Service};
use crate::agg::Agg;
use crate::error::{MetricsError, Result};
use crate::histogram::{OctaveCounts, OCTAVE_COUNTS};
use crate::open_slot::{MAX_ERROR_TYPES, OTHER_ERROR};
use crate::sealed::{self, check_blob, MAX_STORED_COUNT};
use crate::service::MAX_DURATION_MS;
use crate::tiers::Bucket;

/// One bucket as storage keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBucket {
    pub start_epoch_s: i64,
    pub count: u64,
    pub errors: u64,
    pub sum_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Digests and extras in the `sealed` layout.
    pub blob: Option<Vec<u8>>,
    /// The bucket was still being built (written at close).
    pub partial: bool,
    /// (error-type id, count), ascending by id: a readable copy of what the
    /// blob holds, for storage's queryable table (ignored on restore).
    pub error_counts: Vec<(u8, u64)>,
}

/// A run of equal health results: the state from `first` to `last` (each
/// result within the health TTL of the previous one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredRun {
    pub first_epoch_s: i64,
    pub last_epoch_s: i64,
    pub up: bool,
}

/// How a restore went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Buckets put back into the tier.
    pub restored: usize,
    /// Buckets outside the tier's window (too old, or in the future).
    pub out_of_window: usize,
    /// Buckets that failed their checks (malformed blob, impossible scalars).
    pub rejected: usize,
}

/// Counts since the service was created (sealed seconds; the open ones are
/// added when read), for monotonic counters such as Prometheus's.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    pub count: u64,
    pub errors: u64,
    pub sum_ms: f64,
    /// (error-type id, count), ascending by id.
    pub error_types: Vec<(u8, u64)>,
    pub processing_count: u64,
    pub processing_sum_ms: f64,
    pub health_up: u64,
    pub health_down: u64,
    /// Latencies and processing times per power of two (see
    /// [`OctaveCounts`]): cumulative histogram buckets at powers of two
    /// are exact sums of them.
    pub latency_octaves: OctaveCounts,
    pub processing_octaves: OctaveCounts,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            count: 0,
            errors: 0,
            sum_ms: 0.0,
            error_types: Vec::new(),
            processing_count: 0,
            processing_sum_ms: 0.0,
            health_up: 0,
            health_down: 0,
            latency_octaves: [0; OCTAVE_COUNTS],
            processing_octaves: [0; OCTAVE_COUNTS],
        }
    }
}

impl Totals {
    pub(super) fn add(&mut self, a: &Agg) {
        self.count += a.latency.count;
        self.errors += a.errors;
        self.sum_ms += a.latency.sum_ms;
        for &(id, n) in &a.error_types {
            crate::agg::merge_sorted(&mut self.error_types, &[(id, n as u64)], |x, y| *x += *y);
        }
        self.processing_count += a.processing.count;
        self.processing_sum_ms += a.processing.sum_ms;
        self.health_up += a.health.up as u64;
        self.health_down += a.health.down as u64;
        a.latency.bins.add_to_octaves(&mut self.latency_octaves);
        a.processing
            .bins
            .add_to_octaves(&mut self.processing_octaves);
    }
}

/// Lifetime totals with error types by name.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTotals {
    pub count: u64,
    pub errors: u64,
    pub sum_ms: f64,
    pub error_counts: Vec<(String, u64)>,
    pub processing_count: u64,
    pub processing_sum_ms: f64,
    pub health_up: u64,
    pub health_down: u64,
    pub latency_octaves: OctaveCounts,
    pub processing_octaves: OctaveCounts,
}

/// Scalars the engine could have written: latencies in [0, MAX_DURATION_MS]
/// and a bounded count, so that sums over any window (and buckets merged
/// on reload, which are stored again) stay exact and finite.
fn plausible(b: &StoredBucket) -> bool {
    let ms = |v: f64| (0.0..=MAX_DURATION_MS).contains(&v);
    // (1 + 1e-9): slack for the rounding of a long f64 sum.
    let sum_ok = (0.0..=b.count as f64 * MAX_DURATION_MS * (1.0 + 1e-9)).contains(&b.sum_ms);
    b.count <= MAX_STORED_COUNT
        && b.errors <= b.count
        && (b.count == 0 || (ms(b.min_ms) && ms(b.max_ms) && b.min_ms <= b.max_ms && sum_ok))
}

impl Service {
    pub(super) fn tier_index(&self, h: &History, resolution_s: u32) -> Result<usize> {
        h.tiers.tier_of(resolution_s).ok_or_else(|| {
            let have: Vec<String> = h
                .tiers
                .tiers
                .iter()
                .map(|t| format!("{} s", t.spec.resolution_s))
                .collect();
            MetricsError::InvalidArgument(format!(
                "resolution_s={resolution_s}: this monitor has no tier of that resolution; \
                 expected one of {}",
                have.join(", ")
            ))
        })
    }

    fn epoch_to_second(&self, epoch_s: i64) -> Option<u32> {
        // Checked: a stored time may be anything, down to i64::MIN.
        let s = epoch_s.checked_sub(self.shared.clock.base_epoch_s() as i64)?;
        u32::try_from(s).ok()
    }

    fn second_to_epoch(&self, s: u32) -> i64 {
        self.shared.clock.base_epoch_s() as i64 + s as i64
    }

    /// Sealed buckets of the tier with `resolution_s` that start at or after
    /// `from_epoch_s`, oldest first; with `include_building`, the current
    /// second is sealed too and the bucket still being built comes last,
    /// marked partial.  `error_ids` renumbers error types (this service's
    /// id → the id storage knows the name by) in blobs and counts.
    pub fn stored_buckets(
        &self,
        resolution_s: u32,
        from_epoch_s: i64,
        include_building: bool,
        error_ids: Option<&[u8; MAX_ERROR_TYPES + 1]>,
    ) -> Result<Vec<StoredBucket>> {
        let (_, now_s) = self.shared.now();
        let mut h = self.lock();
        // Sealing the second still open (at close, or for an export up to
        // now) is safe: a record that lands in it afterwards reopens the
        // slot and arrives as a late second, merged into the same buckets.
        let seal_before = if include_building { now_s + 1 } else { now_s };
        self.seal_locked_before(&mut h, now_s, seal_before);
        let ti = self.tier_index(&h, resolution_s)?;
        let tier = &h.tiers.tiers[ti];
        let from_s = self.epoch_to_second(from_epoch_s.max(0)).unwrap_or(0);
        let from_s = if from_epoch_s < self.second_to_epoch(0) {
            0
        } else {
            from_s
        };
        let row = |b: &Bucket, partial: bool| {
            let blob: Option<Vec<u8>> = b.blob().map(|x| match error_ids {
                Some(map) => sealed::remap_error_ids(x, map).into_vec(),
                None => x.to_vec(),
            });
            StoredBucket {
                error_counts: blob.as_deref().map_or_else(Vec::new, |blob| {
                    let mut agg = Agg::default();
                    sealed::merge_extras(blob, Some(&mut agg));
                    agg.error_types
                        .iter()
                        .map(|&(id, n)| (id, n as u64))
                        .collect()
                }),
                start_epoch_s: self.second_to_epoch(b.start_s),
                count: b.count,
                errors: b.errors,
                sum_ms: b.sum_ms,
                min_ms: b.min_ms,
                max_ms: b.max_ms,
                blob,
                partial,
            }
        };
        let mut out: Vec<StoredBucket> = tier
            .sealed_between(from_s, u32::MAX)
            .map(|b| row(b, false))
            .collect();
        if let Some((start, agg)) = &tier.building {
            // A building bucket whose span has ended is complete: it only
            // waits for a later second to seal it.
            let ended = *start + resolution_s <= now_s;
            if (include_building || ended) && *start >= from_s && !agg.is_empty() {
                let partial = !ended;
                // A reloaded partial bucket of the same span is merged into
                // what this process built, as sealing would (from the
                // tier's own bucket: rows may carry renumbered ids).
                let b = match tier.buckets.back() {
                    Some(prev) if prev.start_s == *start => {
                        out.pop();
                        let mut merged = prev.clone();
                        merged.absorb(agg, tier.compression);
                        merged
                    }
                    _ => Bucket::seal_building(*start, agg, tier.compression),
                };
                out.push(row(&b, partial));
            }
        }
        Ok(out)
    }

    /// Error-type names in id order (ids index this list; id 32 is
    /// "other").
    pub fn error_type_names(&self) -> Vec<String> {
        (0..MAX_ERROR_TYPES as u8)
            .map_while(|id| self.error_types.name(id))
            .collect()
    }

    /// Puts stored buckets back into the tier with `resolution_s`.
    /// `error_names` are the error-type names of the process that wrote
    /// them, in its id order; they are interned here first and the blobs'
    /// ids rewritten when this service numbers them differently.
    pub fn restore_buckets(
        &self,
        resolution_s: u32,
        rows: Vec<StoredBucket>,
        error_names: &[String],
    ) -> Result<RestoreReport> {
        let mut map = [OTHER_ERROR; MAX_ERROR_TYPES + 1];
        for (old, name) in error_names.iter().take(MAX_ERROR_TYPES).enumerate() {
            map[old] = self.error_types.intern(name);
        }
        let identity = map
            .iter()
            .enumerate()
            .all(|(i, &m)| m as usize == i || i >= error_names.len());
        let (_, now_s) = self.shared.now();
        let mut h = self.lock();
        self.seal_locked(&mut h, now_s);
        let ti = self.tier_index(&h, resolution_s)?;
        let mut report = RestoreReport::default();
        let mut buckets = Vec::with_capacity(rows.len());
        for row in rows {
            let Some(start_s) = self.epoch_to_second(row.start_epoch_s) else {
                report.out_of_window += 1;
                continue;
            };
            let blob = match row.blob.as_deref() {
                None if row.count == 0 => None,
                None => {
                    report.rejected += 1;
                    continue;
                }
                Some(bytes) => match check_blob(bytes) {
                    Some(shape)
                        if shape.latency_weight == row.count
                            && shape.max_error_id.is_none_or(|id| {
                                id == OTHER_ERROR || (id as usize) < error_names.len()
                            }) =>
                    {
                        Some(if identity {
                            bytes.to_vec().into_boxed_slice()
                        } else {
                            sealed::remap_error_ids(bytes, &map)
                        })
                    }
                    _ => {
                        report.rejected += 1;
                        continue;
                    }
                },
            };
            if !plausible(&row) {
                report.rejected += 1;
                continue;
            }
            // An empty bucket (health or gauges only) has no latency bounds;
            // storage may hand back anything there, so it is never trusted.
            let (min_ms, max_ms) = if row.count == 0 {
                (f64::INFINITY, f64::NEG_INFINITY)
            } else {
                (row.min_ms, row.max_ms)
            };
            buckets.push(Bucket::from_parts(
                start_s, row.count, row.errors, row.sum_ms, min_ms, max_ms, blob,
            ));
        }
        buckets.sort_by_key(|b| b.start_s);
        let offered = buckets.len();
        if let Some(first) = buckets.first() {
            h.earliest_s = h.earliest_s.min(first.start_s);
        }
        report.restored = h.tiers.restore(ti, buckets, now_s);
        report.out_of_window += offered - report.restored;
        h.cache.clear();
        Ok(report)
    }

    /// Health runs that end (counting the TTL) at or after `from_epoch_s`.
    pub fn stored_health(&self, from_epoch_s: i64) -> Vec<StoredRun> {
        let (_, now_s) = self.shared.now();
        let mut h = self.lock();
        self.seal_locked(&mut h, now_s);
        let ttl = self.shared.config.health_ttl_s as i64;
        h.health
            .runs()
            .filter(|r| self.second_to_epoch(r.1) + ttl >= from_epoch_s)
            .map(|(first, last, up)| StoredRun {
                first_epoch_s: self.second_to_epoch(first),
                last_epoch_s: self.second_to_epoch(last),
                up,
            })
            .collect()
    }

    /// Puts stored health runs back (before any newer result); runs that
    /// overlap what the log holds, or predate this clock's base, are
    /// skipped.  Returns how many were kept.
    pub fn restore_health(&self, mut runs: Vec<StoredRun>) -> usize {
        runs.sort_by_key(|r| r.first_epoch_s);
        let mut h = self.lock();
        let mut kept = 0;
        for r in runs {
            let (Some(first), Some(last)) = (
                self.epoch_to_second(r.first_epoch_s),
                self.epoch_to_second(r.last_epoch_s),
            ) else {
                continue;
            };
            if first <= last && h.health.restore_run(first, last, r.up) {
                h.earliest_s = h.earliest_s.min(first);
                kept += 1;
            }
        }
        h.cache.clear();
        kept
    }

    /// Lifetime totals (sealed seconds plus the open ones).
    pub fn totals(&self) -> NamedTotals {
        let (_, now_s) = self.shared.now();
        let mut h = self.lock();
        self.seal_locked(&mut h, now_s);
        let mut t = h.totals.clone();
        // Still under the lock, so the sealer cannot move a second from the
        // open ring into the totals between the two reads.
        for (_, agg) in self.open.peek_open() {
            t.add(&agg);
        }
        drop(h);
        let mut error_counts: Vec<(String, u64)> = t
            .error_types
            .iter()
            .filter_map(|&(id, n)| self.error_types.name(id).map(|s| (s, n)))
            .collect();
        error_counts.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        NamedTotals {
            count: t.count,
            errors: t.errors,
            sum_ms: t.sum_ms,
            error_counts,
            processing_count: t.processing_count,
            processing_sum_ms: t.processing_sum_ms,
            health_up: t.health_up,
            health_down: t.health_down,
            latency_octaves: t.latency_octaves,
            processing_octaves: t.processing_octaves,
        }
    }
}
