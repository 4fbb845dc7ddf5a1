//! Exact aggregates of a span of time, before percentiles are summarised.
//!
//! An [`Agg`] is what one second's open slot is harvested into, and what the
//! 10 s / 1 min roll-ups add seconds into: every field is an exact sum, count,
//! min or max, and latencies stay as exact log-linear bin counts, so a roll-up
//! loses nothing until its bucket is sealed into a t-digest.

use crate::histogram::{SparseBins, LATENCY_BINS, PROCESSING_BINS};

/// Resource gauges a service can report with `set_resource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Gauge {
    VramUsedBytes,
    VramTotalBytes,
    RamUsedBytes,
    RamTotalBytes,
    CpuPct,
    GpuUtilPct,
    GpuTempC,
    GpuPowerW,
}

impl Gauge {
    pub const ALL: [Gauge; 8] = [
        Gauge::VramUsedBytes,
        Gauge::VramTotalBytes,
        Gauge::RamUsedBytes,
        Gauge::RamTotalBytes,
        Gauge::CpuPct,
        Gauge::GpuUtilPct,
        Gauge::GpuTempC,
        Gauge::GpuPowerW,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Gauge::VramUsedBytes => "vram_used_bytes",
            Gauge::VramTotalBytes => "vram_total_bytes",
            Gauge::RamUsedBytes => "ram_used_bytes",
            Gauge::RamTotalBytes => "ram_total_bytes",
            Gauge::CpuPct => "cpu_pct",
            Gauge::GpuUtilPct => "gpu_util_pct",
            Gauge::GpuTempC => "gpu_temp_c",
            Gauge::GpuPowerW => "gpu_power_w",
        }
    }

    pub fn from_name(name: &str) -> Option<Gauge> {
        Gauge::ALL.into_iter().find(|g| g.name() == name)
    }

    /// Accepted range of a reading (inclusive).
    pub fn range(self) -> (f64, f64) {
        match self {
            Gauge::CpuPct | Gauge::GpuUtilPct => (0.0, 100_000.0), // cpu% sums cores
            Gauge::GpuTempC => (-50.0, 200.0),
            Gauge::GpuPowerW => (0.0, 100_000.0),
            _ => (0.0, 1e18),
        }
    }
}

/// Count / sum / min / max of a gauge's readings in a span.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaugeAgg {
    pub n: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Default for GaugeAgg {
    fn default() -> Self {
        GaugeAgg {
            n: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl GaugeAgg {
    pub fn merge(&mut self, o: &GaugeAgg) {
        // Saturating, here and in every merge below: counts reloaded from
        // storage may be anything a u64/u32 holds, and a sum of them must
        // not wrap (nor panic in a debug build).
        self.n = self.n.saturating_add(o.n);
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// A distribution of durations: exact count/sum/min/max plus bins.
#[derive(Debug, Clone, PartialEq)]
pub struct DurationAgg {
    pub count: u64,
    pub sum_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub bins: SparseBins,
}

impl DurationAgg {
    pub fn empty(bins: SparseBins) -> Self {
        DurationAgg {
            count: 0,
            sum_ms: 0.0,
            min_ms: f64::INFINITY,
            max_ms: f64::NEG_INFINITY,
            bins,
        }
    }

    /// Exact aggregate of `values` (tests build expectations with it).
    #[cfg(test)]
    pub(crate) fn from_values(values: &[f64], layout: crate::histogram::BinLayout) -> Self {
        let bins = crate::histogram::AtomicBins::new(layout);
        for &v in values {
            bins.add(v, 1);
        }
        DurationAgg {
            count: values.len() as u64,
            sum_ms: values.iter().sum(),
            min_ms: values.iter().cloned().fold(f64::INFINITY, f64::min),
            max_ms: values.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
            bins: bins.collect(false),
        }
    }

    pub fn bins_layout(&self) -> crate::histogram::BinLayout {
        self.bins.layout()
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ms / self.count as f64)
    }

    pub fn merge(&mut self, o: &DurationAgg) {
        self.count = self.count.saturating_add(o.count);
        self.sum_ms += o.sum_ms;
        self.min_ms = self.min_ms.min(o.min_ms);
        self.max_ms = self.max_ms.max(o.max_ms);
        self.bins.merge(&o.bins);
    }
}

/// Health-check results in a span.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HealthAgg {
    pub up: u32,
    pub down: u32,
    /// Latest result: (monotonic ns, up).
    pub last: Option<(u64, bool)>,
    pub latency_n: u32,
    pub latency_sum_ms: f64,
}

impl HealthAgg {
    pub fn merge(&mut self, o: &HealthAgg) {
        self.up = self.up.saturating_add(o.up);
        self.down = self.down.saturating_add(o.down);
        self.latency_n = self.latency_n.saturating_add(o.latency_n);
        self.latency_sum_ms += o.latency_sum_ms;
        self.last = match (self.last, o.last) {
            (Some(a), Some(b)) => Some(if b.0 >= a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
    }
}

/// Queue depth samples in a span (depth = running + pending).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueAgg {
    pub n: u64,
    pub depth_sum: u64,
    pub depth_max: u64,
}

impl QueueAgg {
    pub fn merge(&mut self, o: &QueueAgg) {
        self.n = self.n.saturating_add(o.n);
        self.depth_sum = self.depth_sum.saturating_add(o.depth_sum);
        self.depth_max = self.depth_max.max(o.depth_max);
    }
}

/// Everything recorded for one service in one span of time.
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    pub latency: DurationAgg,
    pub errors: u64,
    /// (interned error id, count), ascending by id.
    pub error_types: Vec<(u8, u32)>,
    pub processing: DurationAgg,
    pub queue: QueueAgg,
    /// (gauge, readings), ascending by gauge.
    pub gauges: Vec<(Gauge, GaugeAgg)>,
    pub health: HealthAgg,
}

impl Default for Agg {
    fn default() -> Self {
        Agg {
            latency: DurationAgg::empty(SparseBins::empty(LATENCY_BINS)),
            errors: 0,
            error_types: Vec::new(),
            processing: DurationAgg::empty(SparseBins::empty(PROCESSING_BINS)),
            queue: QueueAgg::default(),
            gauges: Vec::new(),
            health: HealthAgg::default(),
        }
    }
}

impl Agg {
    pub fn is_empty(&self) -> bool {
        self.latency.count == 0
            && self.processing.count == 0
            && self.queue.n == 0
            && self.gauges.is_empty()
            && (self.health.up | self.health.down | self.health.latency_n) == 0
    }

    pub fn merge(&mut self, o: &Agg) {
        self.latency.merge(&o.latency);
        self.errors = self.errors.saturating_add(o.errors);
        merge_sorted(&mut self.error_types, &o.error_types, |a, b| {
            *a = a.saturating_add(*b)
        });
        self.processing.merge(&o.processing);
        self.queue.merge(&o.queue);
        merge_sorted(&mut self.gauges, &o.gauges, |a, b| a.merge(b));
        self.health.merge(&o.health);
    }

    pub fn heap_bytes(&self) -> usize {
        self.latency.bins.heap_bytes()
            + self.processing.bins.heap_bytes()
            + self.error_types.capacity() * std::mem::size_of::<(u8, u32)>()
            + self.gauges.capacity() * std::mem::size_of::<(Gauge, GaugeAgg)>()
    }
}

/// Merges `(key, value)` lists sorted by key, combining equal keys.  A few
/// entries are inserted by binary search; longer lists by one linear merge
/// (a day of per-minute counts is 1440 entries).
pub(crate) fn merge_sorted<K: Ord + Copy, V: Copy>(
    into: &mut Vec<(K, V)>,
    from: &[(K, V)],
    combine: impl Fn(&mut V, &V),
) {
    if into.is_empty() {
        into.extend_from_slice(from);
        return;
    }
    if from.len() > 8 {
        let mut out = Vec::with_capacity(into.len() + from.len());
        let (mut i, mut j) = (0, 0);
        while i < into.len() && j < from.len() {
            match into[i].0.cmp(&from[j].0) {
                std::cmp::Ordering::Less => {
                    out.push(into[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(from[j]);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let mut v = into[i].1;
                    combine(&mut v, &from[j].1);
                    out.push((into[i].0, v));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&into[i..]);
        out.extend_from_slice(&from[j..]);
        *into = out;
        return;
    }
    for (k, v) in from {
        match into.binary_search_by(|e| e.0.cmp(k)) {
            Ok(i) => combine(&mut into[i].1, v),
            Err(i) => into.insert(i, (*k, *v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_names_round_trip() {
        for g in Gauge::ALL {
            assert_eq!(Gauge::from_name(g.name()), Some(g));
        }
        assert_eq!(Gauge::from_name("vram"), None);
    }

    #[test]
    fn merge_sorted_short_and_long_lists_agree() {
        let a: Vec<(u32, u64)> = (0..40).map(|i| (i * 3, 1)).collect();
        let b: Vec<(u32, u64)> = (0..40).map(|i| (i * 2, 10)).collect();
        let mut linear = a.clone();
        merge_sorted(&mut linear, &b, |x, y| *x += *y);
        let mut one_by_one = a.clone();
        for e in &b {
            merge_sorted(&mut one_by_one, std::slice::from_ref(e), |x, y| *x += *y);
        }
        assert_eq!(linear, one_by_one);
        assert!(linear.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(linear.iter().map(|e| e.1).sum::<u64>(), 40 + 400);
        assert_eq!(linear.iter().find(|e| e.0 == 6).unwrap().1, 11);
    }

    #[test]
    fn merge_is_exact() {
        let mut a = Agg::default();
        a.errors = 2;
        a.error_types = vec![(0, 1), (3, 1)];
        a.gauges = vec![(
            Gauge::CpuPct,
            GaugeAgg {
                n: 1,
                sum: 50.0,
                min: 50.0,
                max: 50.0,
            },
        )];
        a.health.last = Some((10, true));
        let mut b = Agg::default();
        b.errors = 1;
        b.error_types = vec![(3, 1)];
        b.gauges = vec![
            (
                Gauge::VramUsedBytes,
                GaugeAgg {
                    n: 1,
                    sum: 1.0,
                    min: 1.0,
                    max: 1.0,
                },
            ),
            (
                Gauge::CpuPct,
                GaugeAgg {
                    n: 1,
                    sum: 70.0,
                    min: 70.0,
                    max: 70.0,
                },
            ),
        ];
        b.health.last = Some((5, false));
        a.merge(&b);
        assert_eq!(a.errors, 3);
        assert_eq!(a.error_types, vec![(0, 1), (3, 2)]);
        assert_eq!(a.gauges[0].0, Gauge::VramUsedBytes);
        assert_eq!(a.gauges[1].1.n, 2);
        assert_eq!(a.gauges[1].1.max, 70.0);
        assert_eq!(a.health.last, Some((10, true)), "the later result wins");
    }
}
