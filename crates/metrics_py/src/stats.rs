//! `ServiceStats` and `GaugeStats`: frozen snapshots of a window.

use metrics_core::{GaugeStats, ServiceStats};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Readings of one resource gauge in a window.
#[pyclass(
    frozen,
    get_all,
    name = "GaugeStats",
    module = "movie_director_metrics._core"
)]
#[derive(Clone)]
pub struct PyGaugeStats {
    last: Option<f64>,
    avg: f64,
    min: f64,
    max: f64,
    samples: u64,
}

#[pymethods]
impl PyGaugeStats {
    fn __repr__(&self) -> String {
        let last = self.last.map_or("None".to_string(), |v| v.to_string());
        format!(
            "GaugeStats(last={last}, avg={}, min={}, max={}, samples={})",
            self.avg, self.min, self.max, self.samples
        )
    }
}

impl From<&GaugeStats> for PyGaugeStats {
    fn from(g: &GaugeStats) -> Self {
        PyGaugeStats {
            last: g.last,
            avg: g.avg,
            min: g.min,
            max: g.max,
            samples: g.samples,
        }
    }
}

/// Statistics of one service over one window (see `_core.pyi`).
#[pyclass(frozen, name = "ServiceStats", module = "movie_director_metrics._core")]
pub struct PyServiceStats {
    #[pyo3(get)]
    service: String,
    #[pyo3(get)]
    window_s: u64,
    #[pyo3(get)]
    start: f64,
    #[pyo3(get)]
    end: f64,
    #[pyo3(get)]
    count: u64,
    #[pyo3(get)]
    errors: u64,
    #[pyo3(get)]
    success_rate: Option<f64>,
    #[pyo3(get)]
    rpm: f64,
    #[pyo3(get)]
    peak_rpm: Option<f64>,
    #[pyo3(get)]
    peak_rpm_at: Option<f64>,
    #[pyo3(get)]
    avg_ms: Option<f64>,
    #[pyo3(get)]
    min_ms: Option<f64>,
    #[pyo3(get)]
    max_ms: Option<f64>,
    #[pyo3(get)]
    p50_ms: Option<f64>,
    #[pyo3(get)]
    p90_ms: Option<f64>,
    #[pyo3(get)]
    p95_ms: Option<f64>,
    #[pyo3(get)]
    p99_ms: Option<f64>,
    #[pyo3(get)]
    last_error: Option<String>,
    #[pyo3(get)]
    last_error_at: Option<f64>,
    #[pyo3(get)]
    uptime_pct: Option<f64>,
    #[pyo3(get)]
    uptime_known_s: u64,
    #[pyo3(get)]
    health_checks: u64,
    #[pyo3(get)]
    up: Option<bool>,
    #[pyo3(get)]
    last_health_at: Option<f64>,
    #[pyo3(get)]
    health_latency_ms: Option<f64>,
    #[pyo3(get)]
    queue_running: Option<u64>,
    #[pyo3(get)]
    queue_pending: Option<u64>,
    #[pyo3(get)]
    queue_depth_avg: Option<f64>,
    #[pyo3(get)]
    queue_depth_max: Option<u64>,
    #[pyo3(get)]
    processing_count: u64,
    #[pyo3(get)]
    processing_avg_ms: Option<f64>,
    #[pyo3(get)]
    processing_p50_ms: Option<f64>,
    #[pyo3(get)]
    processing_p95_ms: Option<f64>,
    error_counts_list: Vec<(String, u64)>,
    resources_list: Vec<(&'static str, PyGaugeStats)>,
}

/// Field order of `as_dict()` (and of exports built on it).
const FIELDS: [&str; 35] = [
    "service",
    "window_s",
    "start",
    "end",
    "count",
    "errors",
    "success_rate",
    "rpm",
    "peak_rpm",
    "peak_rpm_at",
    "avg_ms",
    "min_ms",
    "max_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "error_counts",
    "last_error",
    "last_error_at",
    "uptime_pct",
    "uptime_known_s",
    "health_checks",
    "up",
    "last_health_at",
    "health_latency_ms",
    "queue_running",
    "queue_pending",
    "queue_depth_avg",
    "queue_depth_max",
    "processing_count",
    "processing_avg_ms",
    "processing_p50_ms",
    "processing_p95_ms",
    "resources",
];

#[pymethods]
impl PyServiceStats {
    /// Failures per error type, most frequent first.
    #[getter]
    fn error_counts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.error_counts_list {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// Resource gauges reported in the window: name -> GaugeStats.
    #[getter]
    fn resources<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in &self.resources_list {
            d.set_item(*k, Bound::new(py, v.clone())?)?;
        }
        Ok(d)
    }

    /// All fields as a plain dict (gauges as dicts too), in a stable order.
    fn as_dict<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        let d = PyDict::new(py);
        let me = slf.get();
        for f in FIELDS {
            match f {
                "error_counts" => d.set_item(f, me.error_counts(py)?)?,
                "resources" => {
                    let r = PyDict::new(py);
                    for (k, g) in &me.resources_list {
                        let gd = PyDict::new(py);
                        gd.set_item("last", g.last)?;
                        gd.set_item("avg", g.avg)?;
                        gd.set_item("min", g.min)?;
                        gd.set_item("max", g.max)?;
                        gd.set_item("samples", g.samples)?;
                        r.set_item(*k, gd)?;
                    }
                    d.set_item(f, r)?
                }
                _ => d.set_item(f, slf.getattr(f)?)?,
            }
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("None".to_string(), |x| format!("{x:.1}"));
        format!(
            "ServiceStats(service={:?}, window_s={}, count={}, errors={}, avg_ms={}, p95_ms={}, uptime_pct={})",
            self.service,
            self.window_s,
            self.count,
            self.errors,
            ms(self.avg_ms),
            ms(self.p95_ms),
            ms(self.uptime_pct)
        )
    }
}

impl From<ServiceStats> for PyServiceStats {
    fn from(s: ServiceStats) -> Self {
        PyServiceStats {
            service: s.service,
            window_s: s.window_s,
            start: s.start,
            end: s.end,
            count: s.count,
            errors: s.errors,
            success_rate: s.success_rate,
            rpm: s.rpm,
            peak_rpm: s.peak_rpm,
            peak_rpm_at: s.peak_rpm_at,
            avg_ms: s.avg_ms,
            min_ms: s.min_ms,
            max_ms: s.max_ms,
            p50_ms: s.p50_ms,
            p90_ms: s.p90_ms,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
            last_error: s.last_error,
            last_error_at: s.last_error_at,
            uptime_pct: s.uptime_pct,
            uptime_known_s: s.uptime_known_s,
            health_checks: s.health_checks,
            up: s.up,
            last_health_at: s.last_health_at,
            health_latency_ms: s.health_latency_ms,
            queue_running: s.queue_running,
            queue_pending: s.queue_pending,
            queue_depth_avg: s.queue_depth_avg,
            queue_depth_max: s.queue_depth_max,
            processing_count: s.processing_count,
            processing_avg_ms: s.processing_avg_ms,
            processing_p50_ms: s.processing_p50_ms,
            processing_p95_ms: s.processing_p95_ms,
            error_counts_list: s.error_counts,
            resources_list: s
                .resources
                .iter()
                .map(|(n, g)| (*n, PyGaugeStats::from(g)))
                .collect(),
        }
    }
}
