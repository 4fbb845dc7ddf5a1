//! One monitored service: its lock-free recording surface and its history.
//!
//! Recording (`record`, `record_batch`, `set_queue`, `record_processing`,
//! `set_resource`, `health`) validates the input, reads the clock once and
//! writes relaxed atomics of the open second (see `open_slot`) plus a few
//! "latest value" atomics.  It never takes the service's mutex; only sealing
//! and reads do, so a reader merging a day of buckets delays other readers
//! and the sealer, never a recorder.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::agg::Gauge;
use crate::clock::Clock;
use crate::config::MonitorConfig;
use crate::error::{MetricsError, Result};
use crate::health::{uptime_pct, HealthLog};
use crate::intern::ErrorTypes;
use crate::middle::{refresh_middles, MiddleCache};
use crate::open_slot::OpenRing;
use crate::primitive::{AtomicU64, Ordering};
use crate::query::{collect_window, WindowAcc};
use crate::stats::{GaugeStats, ServiceStats};
use crate::tiers::TierStore;

mod persist;
pub use persist::{NamedTotals, RestoreReport, StoredBucket, StoredRun, Totals};

/// Largest accepted duration: 1e9 ms (11.6 days).
pub const MAX_DURATION_MS: f64 = 1e9;
/// Longest service name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// What every service of a monitor shares.
#[derive(Debug)]
pub struct Shared {
    pub clock: Clock,
    pub config: MonitorConfig,
}

impl Shared {
    #[inline]
    fn now(&self) -> (u64, u32) {
        let ns = self.clock.now_ns();
        (ns, second_of(ns))
    }

    pub fn epoch_of_second(&self, s: u32) -> f64 {
        self.clock.base_epoch_s() + s as f64
    }

    fn epoch_of_ms(&self, ms: u64) -> f64 {
        self.clock.base_epoch_s() + ms as f64 * 1e-3
    }
}

#[inline]
fn second_of(ns: u64) -> u32 {
    (ns / 1_000_000_000) as u32
}

#[inline]
fn ms_of(ns: u64) -> u64 {
    ns / 1_000_000
}

/// Checks a duration in milliseconds.
#[inline]
pub fn check_duration(what: &'static str, ms: f64) -> Result<()> {
    if ms.is_finite() && (0.0..=MAX_DURATION_MS).contains(&ms) {
        Ok(())
    } else {
        Err(MetricsError::InvalidValue {
            what,
            value: ms,
            expected: format!("a finite number of milliseconds in [0, {MAX_DURATION_MS:e}]"),
        })
    }
}

/// Checks a service name: 1-64 printable characters.
pub fn check_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    let reason = if n == 0 {
        Some("it is empty; expected 1 to 64 printable characters".to_owned())
    } else if n > MAX_NAME_CHARS {
        Some(format!(
            "it has {n} characters; expected 1 to {MAX_NAME_CHARS}"
        ))
    } else {
        name.chars()
            .find(|c| c.is_control() || (c.is_whitespace() && *c != ' '))
            .map(|c| {
                format!("character {c:?} is not printable; expected 1 to 64 printable characters")
            })
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(MetricsError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
    }
}

/// Latest readings, kept outside the buckets so "current" values are one
/// load away.  Each packs its time so that `fetch_max` keeps the latest.
struct LastValues {
    /// `(ms + 1) << 8 | error id` of the last failure, 0 = none.
    error: AtomicU64,
    /// `running << 32 | pending`.
    queue: AtomicU64,
    /// `ms + 1`, 0 = none.
    queue_at: AtomicU64,
    gauge_value: [AtomicU64; Gauge::ALL.len()],
    gauge_at: [AtomicU64; Gauge::ALL.len()],
    /// `(ms + 1) << 1 | up`, 0 = none.
    health: AtomicU64,
}

impl Default for LastValues {
    fn default() -> Self {
        LastValues {
            error: AtomicU64::new(0),
            queue: AtomicU64::new(0),
            queue_at: AtomicU64::new(0),
            gauge_value: std::array::from_fn(|_| AtomicU64::new(0)),
            gauge_at: std::array::from_fn(|_| AtomicU64::new(0)),
            health: AtomicU64::new(0),
        }
    }
}

/// Sealed history, behind the service's mutex.
struct History {
    tiers: TierStore,
    health: HealthLog,
    cache: MiddleCache,
    /// Oldest second with data: the clock's start, or older history
    /// reloaded from storage.  Windows reaching further back start here.
    earliest_s: u32,
    /// Lifetime counts of sealed seconds.
    totals: Totals,
}

pub struct Service {
    name: String,
    shared: Arc<Shared>,
    open: OpenRing,
    error_types: ErrorTypes,
    last: LastValues,
    history: Mutex<History>,
}

impl Service {
    pub fn new(name: &str, shared: Arc<Shared>) -> Result<Service> {
        check_name(name)?;
        let c = &shared.config;
        let tiers = TierStore::new(&c.tiers, c.bucket_compression, c.archive_compression);
        let earliest_s = shared.clock.start_second();
        Ok(Service {
            name: name.to_owned(),
            shared,
            open: OpenRing::default(),
            error_types: ErrorTypes::default(),
            last: LastValues::default(),
            history: Mutex::new(History {
                tiers,
                health: HealthLog::default(),
                cache: MiddleCache::default(),
                earliest_s,
                totals: Totals::default(),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    // ---- recording (lock-free) -------------------------------------------

    /// One request: its latency and, for a failure, its error type.
    #[inline]
    pub fn record(&self, latency_ms: f64, error: Option<&str>) -> Result<()> {
        check_duration("latency_ms", latency_ms)?;
        let (ns, s) = self.shared.now();
        let id = error.map(|e| self.error_types.intern(e));
        self.open.write(s, |d| d.record(latency_ms, id));
        if let Some(id) = id {
            // Plain store: the last writer is the last error (ties within a
            // coarse-clock tick are common, so no time-based max).
            self.last
                .error
                .store(((ms_of(ns) + 1) << 8) | id as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A batch of requests at the current time.  Validates every element
    /// first: one bad value rejects the whole batch, naming its index.
    /// `ok[i] == false` marks a failure of type `error`.
    pub fn record_batch(
        &self,
        latencies_ms: &[f64],
        ok: Option<&[bool]>,
        error: &str,
    ) -> Result<()> {
        if let Some(ok) = ok {
            if ok.len() != latencies_ms.len() {
                return Err(MetricsError::InvalidValue {
                    what: "ok array length",
                    value: ok.len() as f64,
                    expected: format!("the length of latencies_ms ({})", latencies_ms.len()),
                });
            }
        }
        if let Some(index) = latencies_ms
            .iter()
            .position(|v| !(v.is_finite() && (0.0..=MAX_DURATION_MS).contains(v)))
        {
            return Err(MetricsError::InvalidValueAt {
                what: "latency_ms",
                index,
                value: latencies_ms[index],
                expected: format!("a finite number of milliseconds in [0, {MAX_DURATION_MS:e}]"),
            });
        }
        if latencies_ms.is_empty() {
            return Ok(());
        }
        let any_failed = ok.is_some_and(|o| o.iter().any(|b| !b));
        let id = if any_failed {
            self.error_types.intern(error)
        } else {
            0
        };
        let (ns, s) = self.shared.now();
        // Chunks keep each u32 bin increment far from overflow.
        for (i, chunk) in latencies_ms.chunks(1 << 20).enumerate() {
            let ok_chunk = ok.map(|o| &o[i << 20..(i << 20) + chunk.len()]);
            self.open.write(s, |d| d.record_batch(chunk, ok_chunk, id));
        }
        if any_failed {
            self.last
                .error
                .store(((ms_of(ns) + 1) << 8) | id as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// How long a job spent executing (separate from request latency).
    pub fn record_processing(&self, ms: f64) -> Result<()> {
        check_duration("processing_ms", ms)?;
        let (_, s) = self.shared.now();
        self.open.write_processing(s, ms);
        Ok(())
    }

    /// Current queue: jobs running and waiting.
    pub fn set_queue(&self, running: u64, pending: u64) -> Result<()> {
        for (what, v) in [("queue running", running), ("queue pending", pending)] {
            if v > u32::MAX as u64 {
                return Err(MetricsError::InvalidValue {
                    what,
                    value: v as f64,
                    expected: format!("an integer in [0, {}]", u32::MAX),
                });
            }
        }
        let (ns, s) = self.shared.now();
        self.open.write(s, |d| d.queue(running + pending));
        self.last
            .queue
            .store((running << 32) | pending, Ordering::Relaxed);
        self.last.queue_at.store(ms_of(ns) + 1, Ordering::Release);
        Ok(())
    }

    /// Resource readings; all are validated before any is kept.
    pub fn set_resources(&self, readings: &[(Gauge, f64)]) -> Result<()> {
        for &(g, v) in readings {
            let (lo, hi) = g.range();
            if !(v.is_finite() && (lo..=hi).contains(&v)) {
                return Err(MetricsError::InvalidValue {
                    what: g.name(),
                    value: v,
                    expected: format!("a finite number in [{lo}, {hi:e}]"),
                });
            }
        }
        let (ns, s) = self.shared.now();
        self.open.write(s, |d| {
            for &(g, v) in readings {
                d.gauge(g, v);
            }
        });
        for &(g, v) in readings {
            self.last.gauge_value[g as usize].store(v.to_bits(), Ordering::Relaxed);
            self.last.gauge_at[g as usize].store(ms_of(ns) + 1, Ordering::Release);
        }
        Ok(())
    }

    /// A health-check result, with the probe's own latency if measured.
    pub fn health(&self, up: bool, latency_ms: Option<f64>) -> Result<()> {
        if let Some(ms) = latency_ms {
            check_duration("health latency_ms", ms)?;
        }
        let (ns, s) = self.shared.now();
        self.open.write(s, |d| d.health(up, ns, latency_ms));
        self.last
            .health
            .fetch_max(((ms_of(ns) + 1) << 1) | up as u64, Ordering::Relaxed);
        Ok(())
    }

    // ---- sealing and reads ------------------------------------------------

    fn lock(&self) -> MutexGuard<'_, History> {
        // A panic while holding the lock cannot leave History half-updated
        // in a way later reads would misreport, so poisoning is ignored.
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seals every ended second and prunes expired history.
    pub fn seal(&self) {
        let (_, now_s) = self.shared.now();
        let mut h = self.lock();
        self.seal_locked(&mut h, now_s);
    }

    fn seal_locked(&self, h: &mut History, now_s: u32) {
        self.seal_locked_before(h, now_s, now_s);
    }

    /// Seals the open seconds before `before` (normally `now_s`: the ones
    /// that ended), then prunes history older than the tiers of `now_s`.
    fn seal_locked_before(&self, h: &mut History, now_s: u32, before: u32) {
        let mut ended = Vec::new();
        self.open.seal_ended(before, &mut ended);
        ended.sort_by_key(|e| e.0);
        let ttl = self.shared.config.health_ttl_s;
        let revision = h.tiers.revision;
        for (s, agg) in &ended {
            h.totals.add(agg);
            h.tiers.insert(*s, agg);
            if let Some((_, up)) = agg.health.last {
                h.health.push(*s, up, ttl);
            }
        }
        if h.tiers.revision != revision {
            h.cache.clear();
        }
        h.tiers.prune(now_s);
        // The middles of recently read windows follow the seal, so the
        // first read after a bucket seals does not pay for merging it.
        refresh_middles(
            &h.tiers,
            &mut h.cache,
            now_s,
            self.shared.config.query_compression,
        );
        let horizon = now_s.saturating_sub(self.shared.config.max_window_s() as u32);
        h.health.prune(horizon, ttl);
    }

    /// Everything recorded in `[from_s, now]`, and the first second covered.
    fn window_acc(&self, window_s: u64) -> (WindowAcc, u32, u32, u64, (u64, u64)) {
        let (now_ns, now_s) = self.shared.now();
        let from_s = (now_s + 1).saturating_sub(window_s.min(u32::MAX as u64) as u32);
        let mut h = self.lock();
        self.seal_locked(&mut h, now_s);
        let History {
            tiers,
            cache,
            health,
            earliest_s,
            ..
        } = &mut *h;
        let (mut acc, covered_from) = collect_window(
            tiers,
            cache,
            window_s,
            now_s,
            self.shared.config.query_compression,
        );
        let mut provisional: Option<(u32, bool)> = None;
        for (s, agg) in self.open.peek_open() {
            if s >= from_s {
                acc.add_agg(s, &agg, 1);
                if let Some((_, up)) = agg.health.last {
                    if provisional.is_none_or(|p| p.0 <= s) {
                        provisional = Some((s, up));
                    }
                }
            }
        }
        let ttl = self.shared.config.health_ttl_s;
        // Nothing is older than the clock or the history reloaded from
        // storage: a window reaching further back starts (for rates) there.
        let covered_from = covered_from.max(*earliest_s);
        let covered = health.covered(covered_from, now_s + 1, ttl, provisional);
        (acc, covered_from, now_s, now_ns, covered)
    }

    /// Statistics over the last `window_s` seconds.
    pub fn stats(&self, window_s: u64) -> ServiceStats {
        let (acc, covered_from, _now_s, now_ns, (up_s, down_s)) = self.window_acc(window_s);
        self.build_stats(&acc, window_s, covered_from, now_ns, up_s, down_s, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_stats(
        &self,
        acc: &WindowAcc,
        window_s: u64,
        from_s: u32,
        end_ns: u64,
        up_s: u64,
        down_s: u64,
        latest: bool,
    ) -> ServiceStats {
        let sh = &self.shared;
        let qc = sh.config.query_compression;
        let a = &acc.agg;
        let lat = &a.latency;
        let from_ms = from_s as u64 * 1000;
        let start = sh.epoch_of_second(from_s);
        let end = sh.clock.epoch_of_ns(end_ns);
        let span_min = ((end - start).max(1.0)) / 60.0;
        let q = |d: &Option<crate::TDigest>, p: f64| {
            d.as_ref().and_then(|d| d.quantile(p).ok().flatten())
        };
        let ld = acc.latency_digest(qc);
        let pd = acc.processing_digest(qc);
        let mut error_counts: Vec<(String, u64)> = a
            .error_types
            .iter()
            .filter_map(|&(id, n)| self.error_types.name(id).map(|s| (s, n as u64)))
            .collect();
        error_counts.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
        let peak = acc.peak();
        // "Latest" values only when they fall inside the window.
        let in_window = |at_plus_one: u64| latest && at_plus_one > from_ms && at_plus_one != 0;
        let last_err = self.last.error.load(Ordering::Relaxed);
        let (last_error, last_error_at) = if last_err != 0 && in_window(last_err >> 8) {
            (
                self.error_types.name((last_err & 0xFF) as u8),
                Some(sh.epoch_of_ms((last_err >> 8) - 1)),
            )
        } else {
            (None, None)
        };
        let queue_at = self.last.queue_at.load(Ordering::Acquire);
        let (queue_running, queue_pending) = if in_window(queue_at) {
            let qv = self.last.queue.load(Ordering::Relaxed);
            (Some(qv >> 32), Some(qv & 0xFFFF_FFFF))
        } else {
            (None, None)
        };
        let health_last = self.last.health.load(Ordering::Relaxed);
        let (up, last_health_at) = if health_last != 0 && in_window(health_last >> 1) {
            let at_ms = (health_last >> 1) - 1;
            let fresh = end_ns / 1_000_000 <= at_ms + sh.config.health_ttl_s as u64 * 1000;
            (
                fresh.then_some(health_last & 1 == 1),
                Some(sh.epoch_of_ms(at_ms)),
            )
        } else {
            (None, None)
        };
        let resources = a
            .gauges
            .iter()
            .map(|(g, ga)| {
                let at = self.last.gauge_at[*g as usize].load(Ordering::Acquire);
                let last = in_window(at).then(|| {
                    f64::from_bits(self.last.gauge_value[*g as usize].load(Ordering::Relaxed))
                });
                (
                    g.name(),
                    GaugeStats {
                        last,
                        avg: ga.sum / ga.n as f64,
                        min: ga.min,
                        max: ga.max,
                        samples: ga.n,
                    },
                )
            })
            .collect();
        let h = &a.health;
        ServiceStats {
            service: self.name.clone(),
            window_s,
            start,
            end,
            count: lat.count,
            errors: a.errors,
            success_rate: (lat.count > 0).then(|| 1.0 - a.errors as f64 / lat.count as f64),
            rpm: lat.count as f64 / span_min,
            peak_rpm: peak.map(|p| p.1),
            peak_rpm_at: peak.map(|p| sh.epoch_of_second(p.0)),
            avg_ms: lat.mean_ms(),
            min_ms: (lat.count > 0).then_some(lat.min_ms),
            max_ms: (lat.count > 0).then_some(lat.max_ms),
            p50_ms: q(&ld, 0.5),
            p90_ms: q(&ld, 0.9),
            p95_ms: q(&ld, 0.95),
            p99_ms: q(&ld, 0.99),
            error_counts,
            last_error,
            last_error_at,
            uptime_pct: uptime_pct(up_s, down_s),
            uptime_known_s: up_s + down_s,
            health_checks: h.up as u64 + h.down as u64,
            up,
            last_health_at,
            health_latency_ms: (h.latency_n > 0).then(|| h.latency_sum_ms / h.latency_n as f64),
            queue_running,
            queue_pending,
            queue_depth_avg: (a.queue.n > 0).then(|| a.queue.depth_sum as f64 / a.queue.n as f64),
            queue_depth_max: (a.queue.n > 0).then_some(a.queue.depth_max),
            processing_count: a.processing.count,
            processing_avg_ms: a.processing.mean_ms(),
            processing_p50_ms: q(&pd, 0.5),
            processing_p95_ms: q(&pd, 0.95),
            resources,
        }
    }

    /// Per-span statistics across the window for charts: one entry per
    /// bucket of the finest tier covering the window, or `points` spans.
    /// Spans before the monitor existed are present and empty, so a chart
    /// of a window always spans the whole window.
    pub fn series_stats(&self, window_s: u64, points: Option<usize>) -> Vec<ServiceStats> {
        self.series_stats_at(window_s, points, None)
            .unwrap_or_default()
    }

    /// [`Service::series_stats`] from the tier with `resolution_s` (for
    /// exports at a chosen resolution) instead of the finest covering one.
    pub fn series_stats_at(
        &self,
        window_s: u64,
        points: Option<usize>,
        resolution_s: Option<u32>,
    ) -> Result<Vec<ServiceStats>> {
        let (now_ns, now_s) = self.shared.now();
        let mut h = self.lock();
        self.seal_locked(&mut h, now_s);
        let specs: Vec<_> = h.tiers.tiers.iter().map(|t| t.spec).collect();
        let ti = match resolution_s {
            None => crate::query::plan(&specs, window_s).edge_tier,
            Some(r) => self.tier_index(&h, r)?,
        };
        let tier = &h.tiers.tiers[ti];
        let res = tier.spec.resolution_s as i64;
        let end = now_s as i64 + 1;
        let want_from = end - window_s as i64;
        let first = (want_from.div_euclid(res) + (want_from.rem_euclid(res) != 0) as i64) * res;
        let first = first.min(tier.bucket_start(now_s) as i64);
        let native = ((end - first) + res - 1) / res;
        let per = points.map_or(1, |p| (native as usize).div_ceil(p.max(1)).max(1)) as i64;
        let span = per * res;
        let groups = ((native + per - 1) / per) as usize;
        let mut accs: Vec<WindowAcc> = (0..groups).map(|_| WindowAcc::default()).collect();
        let group_of = |s: u32| ((s as i64 - first) / span) as usize;
        let first_u = first.max(0) as u32;
        for b in tier.sealed_between(first_u, now_s + 1) {
            if let Some(a) = accs.get_mut(group_of(b.start_s)) {
                a.add_bucket(b, res as u32);
            }
        }
        if let Some((s, agg)) = &tier.building {
            if *s >= first_u {
                if let Some(a) = accs.get_mut(group_of(*s)) {
                    a.add_agg(*s, agg, res as u32);
                }
            }
        }
        for (s, agg) in self.open.peek_open() {
            if s >= first_u {
                if let Some(a) = accs.get_mut(group_of(s)) {
                    a.add_agg(s, &agg, 1);
                }
            }
        }
        let ttl = self.shared.config.health_ttl_s;
        let health = h.health.clone();
        drop(h);
        let base = self.shared.clock.base_epoch_s();
        Ok(accs
            .iter()
            .enumerate()
            .map(|(k, acc)| {
                let g_from = first + k as i64 * span;
                let g_to = (g_from + span).min(end);
                let (up, down) = if g_to > 0 {
                    health.covered(g_from.max(0) as u32, g_to as u32, ttl, None)
                } else {
                    (0, 0)
                };
                let end_ns = if g_to > now_s as i64 {
                    now_ns
                } else {
                    g_to as u64 * 1_000_000_000
                };
                let mut st = self.build_stats(
                    acc,
                    span as u64,
                    g_from.max(0) as u32,
                    end_ns,
                    up,
                    down,
                    false,
                );
                st.start = base + g_from as f64;
                st
            })
            .collect())
    }

    /// Bytes this service owns (open slots, history, caches, names).
    pub fn memory_bytes(&self) -> usize {
        let h = self.lock();
        std::mem::size_of::<Service>()
            + self.name.capacity()
            + self.open.heap_bytes()
            + self.error_types.heap_bytes()
            + h.tiers.heap_bytes()
            + h.health.heap_bytes()
            + h.cache.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        check_name("comfyui @ 127.0.0.1:8188").unwrap();
        check_name("ü-service").unwrap();
        assert!(check_name("").unwrap_err().to_string().contains("empty"));
        assert!(check_name(&"x".repeat(65))
            .unwrap_err()
            .to_string()
            .contains("65 characters"));
        assert!(check_name("a\nb")
            .unwrap_err()
            .to_string()
            .contains("not printable"));
        assert!(check_name("tab\there").is_err());
        check_name(&"é".repeat(64)).unwrap();
    }

    #[test]
    fn durations_are_checked() {
        check_duration("latency_ms", 0.0).unwrap();
        check_duration("latency_ms", 1e9).unwrap();
        for bad in [-0.1, 1e9 + 1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = check_duration("latency_ms", bad).unwrap_err().to_string();
            assert!(e.contains("[0, 1e9]"), "{e}");
        }
    }
}
