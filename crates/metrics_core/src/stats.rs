//! What a window query answers: [`ServiceStats`], and the metrics that
//! `series` / `compare` can chart or rank.

use crate::agg::Gauge;
use crate::error::{MetricsError, Result};

/// Readings of one resource gauge in a window.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeStats {
    /// Latest reading in the window.
    pub last: Option<f64>,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub samples: u64,
}

/// Everything known about one service over one window.  Fields that have
/// no data in the window are `None` (never a zero that looks real).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceStats {
    pub service: String,
    /// Requested window length.
    pub window_s: u64,
    /// UTC epoch seconds the data actually covers: `[start, end]`.
    pub start: f64,
    pub end: f64,
    pub count: u64,
    pub errors: u64,
    /// Successful / all requests, 0..1.
    pub success_rate: Option<f64>,
    /// Requests per minute over the covered span.
    pub rpm: f64,
    /// Most requests in one aligned minute, and that minute's start.
    pub peak_rpm: Option<f64>,
    pub peak_rpm_at: Option<f64>,
    pub avg_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Failures per error type, most frequent first.
    pub error_counts: Vec<(String, u64)>,
    pub last_error: Option<String>,
    pub last_error_at: Option<f64>,
    pub uptime_pct: Option<f64>,
    /// Seconds of the window some health result vouched for.
    pub uptime_known_s: u64,
    pub health_checks: u64,
    /// Latest health state, if a result still vouches for now.
    pub up: Option<bool>,
    pub last_health_at: Option<f64>,
    pub health_latency_ms: Option<f64>,
    pub queue_running: Option<u64>,
    pub queue_pending: Option<u64>,
    pub queue_depth_avg: Option<f64>,
    pub queue_depth_max: Option<u64>,
    pub processing_count: u64,
    pub processing_avg_ms: Option<f64>,
    pub processing_p50_ms: Option<f64>,
    pub processing_p95_ms: Option<f64>,
    pub resources: Vec<(&'static str, GaugeStats)>,
}

/// A figure that `series` and `compare` know how to compute per span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Count,
    Errors,
    Rpm,
    SuccessRate,
    ErrorRate,
    AvgMs,
    MinMs,
    MaxMs,
    P50Ms,
    P90Ms,
    P95Ms,
    P99Ms,
    UptimePct,
    QueueDepthAvg,
    QueueDepthMax,
    ProcessingAvgMs,
    ProcessingP50Ms,
    ProcessingP95Ms,
    HealthLatencyMs,
    Gauge(Gauge),
}

const SCALAR_METRICS: [(&str, Metric); 19] = [
    ("count", Metric::Count),
    ("errors", Metric::Errors),
    ("rpm", Metric::Rpm),
    ("success_rate", Metric::SuccessRate),
    ("error_rate", Metric::ErrorRate),
    ("avg_ms", Metric::AvgMs),
    ("min_ms", Metric::MinMs),
    ("max_ms", Metric::MaxMs),
    ("p50_ms", Metric::P50Ms),
    ("p90_ms", Metric::P90Ms),
    ("p95_ms", Metric::P95Ms),
    ("p99_ms", Metric::P99Ms),
    ("uptime_pct", Metric::UptimePct),
    ("queue_depth_avg", Metric::QueueDepthAvg),
    ("queue_depth_max", Metric::QueueDepthMax),
    ("processing_avg_ms", Metric::ProcessingAvgMs),
    ("processing_p50_ms", Metric::ProcessingP50Ms),
    ("processing_p95_ms", Metric::ProcessingP95Ms),
    ("health_latency_ms", Metric::HealthLatencyMs),
];

impl Metric {
    /// Every metric name, gauges included.
    pub fn names() -> Vec<&'static str> {
        SCALAR_METRICS
            .iter()
            .map(|(n, _)| *n)
            .chain(Gauge::ALL.iter().map(|g| g.name()))
            .collect()
    }

    pub fn parse(name: &str) -> Result<Metric> {
        SCALAR_METRICS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .or_else(|| Gauge::from_name(name).map(Metric::Gauge))
            .ok_or_else(|| MetricsError::InvalidMetric {
                metric: name.to_owned(),
                valid: Metric::names(),
            })
    }

    /// Whether a larger value is better (for ranking).
    pub fn higher_is_better(self) -> bool {
        matches!(
            self,
            Metric::SuccessRate | Metric::UptimePct | Metric::Rpm | Metric::Count
        )
    }

    /// Reads this metric off a [`ServiceStats`].
    pub fn of(self, s: &ServiceStats) -> Option<f64> {
        match self {
            Metric::Count => Some(s.count as f64),
            Metric::Errors => Some(s.errors as f64),
            Metric::Rpm => Some(s.rpm),
            Metric::SuccessRate => s.success_rate,
            Metric::ErrorRate => s.success_rate.map(|r| 1.0 - r),
            Metric::AvgMs => s.avg_ms,
            Metric::MinMs => s.min_ms,
            Metric::MaxMs => s.max_ms,
            Metric::P50Ms => s.p50_ms,
            Metric::P90Ms => s.p90_ms,
            Metric::P95Ms => s.p95_ms,
            Metric::P99Ms => s.p99_ms,
            Metric::UptimePct => s.uptime_pct,
            Metric::QueueDepthAvg => s.queue_depth_avg,
            Metric::QueueDepthMax => s.queue_depth_max.map(|v| v as f64),
            Metric::ProcessingAvgMs => s.processing_avg_ms,
            Metric::ProcessingP50Ms => s.processing_p50_ms,
            Metric::ProcessingP95Ms => s.processing_p95_ms,
            Metric::HealthLatencyMs => s.health_latency_ms,
            Metric::Gauge(g) => s
                .resources
                .iter()
                .find(|(n, _)| *n == g.name())
                .map(|(_, st)| st.avg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_parse_and_errors_list_them() {
        for n in Metric::names() {
            Metric::parse(n).unwrap();
        }
        let e = Metric::parse("p95").unwrap_err().to_string();
        assert!(e.contains("p95_ms") && e.contains("vram_used_bytes"), "{e}");
    }
}
