//! `Monitor`: services, windows and dashboard reads.

use std::sync::Arc;

use metrics_core::{Clock, Metric, Monitor, MonitorConfig, RetentionTier};
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::errors::IntoPyResult;
use crate::service::PyService;
use crate::stats::PyServiceStats;
use crate::text::{utf8, Role};
use crate::window::window_s;

#[pyclass(frozen, name = "Monitor", module = "movie_director_metrics._core")]
pub struct PyMonitor {
    inner: Arc<Monitor>,
}

type SeriesArrays<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

#[pymethods]
impl PyMonitor {
    #[new]
    #[pyo3(signature = (
        *,
        tiers=None,
        max_services=64,
        health_ttl_s=60,
        manual_clock=false,
        start_time=None,
        bucket_compression=None,
        archive_compression=None,
        query_compression=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        tiers: Option<Vec<(u32, u32)>>,
        max_services: usize,
        health_ttl_s: u32,
        manual_clock: bool,
        start_time: Option<f64>,
        bucket_compression: Option<f64>,
        archive_compression: Option<f64>,
        query_compression: Option<f64>,
    ) -> PyResult<Self> {
        let d = MonitorConfig::default();
        let config = MonitorConfig {
            tiers: tiers.map_or(d.tiers.clone(), |t| {
                t.into_iter()
                    .map(|(r, s)| RetentionTier::new(r, s))
                    .collect()
            }),
            max_services,
            health_ttl_s,
            bucket_compression: bucket_compression.unwrap_or(d.bucket_compression),
            archive_compression: archive_compression.unwrap_or(d.archive_compression),
            query_compression: query_compression.unwrap_or(d.query_compression),
        };
        let clock = match (manual_clock, start_time) {
            (true, t) => {
                let t = t.unwrap_or_else(|| Clock::system().now_epoch_s());
                if !(t.is_finite() && (0.0..4e9).contains(&t)) {
                    return Err(metrics_core::MetricsError::InvalidConfig(format!(
                        "start_time {t} is out of range: expected UTC epoch seconds in [0, 4e9)"
                    )))
                    .py();
                }
                Clock::manual(t)
            }
            (false, Some(_)) => {
                return Err(metrics_core::MetricsError::InvalidConfig(
                    "start_time needs manual_clock=True".into(),
                ))
                .py()
            }
            (false, None) => Clock::system(),
        };
        Ok(PyMonitor {
            inner: Monitor::new(config, clock).py()?,
        })
    }

    /// The handle of service `name`, created on first use.
    fn service(&self, name: &Bound<'_, PyString>) -> PyResult<PyService> {
        let name = utf8(name, Role::ServiceName)?;
        Ok(PyService {
            service: self.inner.service(name).py()?,
            monitor: self.inner.clone(),
        })
    }

    fn services(&self) -> Vec<String> {
        self.inner.services()
    }

    #[getter]
    fn tiers(&self) -> Vec<(u32, u32)> {
        self.inner
            .config()
            .tiers
            .iter()
            .map(|t| (t.resolution_s, t.slots))
            .collect()
    }

    #[getter]
    fn max_services(&self) -> usize {
        self.inner.config().max_services
    }

    #[getter]
    fn health_ttl_s(&self) -> u32 {
        self.inner.config().health_ttl_s
    }

    #[pyo3(signature = (service, window=None))]
    fn stats(
        &self,
        py: Python<'_>,
        service: &Bound<'_, PyString>,
        window: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyServiceStats> {
        let service = utf8(service, Role::ServiceName)?;
        let w = window_s(&self.inner, window)?;
        let m = &self.inner;
        Ok(py.detach(|| m.stats(service, w)).py()?.into())
    }

    #[pyo3(signature = (window=None))]
    fn snapshot<'py>(
        &self,
        py: Python<'py>,
        window: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let w = window_s(&self.inner, window)?;
        let m = &self.inner;
        let all = py.detach(|| m.snapshot(w));
        let d = PyDict::new(py);
        for s in all {
            let name = s.service.clone();
            d.set_item(name, Bound::new(py, PyServiceStats::from(s))?)?;
        }
        Ok(d)
    }

    #[pyo3(signature = (service, metric, window=None, points=None))]
    fn series<'py>(
        &self,
        py: Python<'py>,
        service: &Bound<'py, PyString>,
        metric: &str,
        window: Option<&Bound<'py, PyAny>>,
        points: Option<usize>,
    ) -> PyResult<SeriesArrays<'py>> {
        let service = utf8(service, Role::ServiceName)?;
        let metric = Metric::parse(metric).py()?;
        let w = window_s(&self.inner, window)?;
        let m = &self.inner;
        let (t, v) = py.detach(|| m.series(service, metric, w, points)).py()?;
        Ok((PyArray1::from_vec(py, t), PyArray1::from_vec(py, v)))
    }

    #[pyo3(signature = (service, window=None, points=None, resolution_s=None))]
    fn series_stats(
        &self,
        py: Python<'_>,
        service: &Bound<'_, PyString>,
        window: Option<&Bound<'_, PyAny>>,
        points: Option<usize>,
        resolution_s: Option<u32>,
    ) -> PyResult<Vec<PyServiceStats>> {
        let service = utf8(service, Role::ServiceName)?;
        let w = window_s(&self.inner, window)?;
        let m = &self.inner;
        let per = py
            .detach(|| m.series_stats(service, w, points, resolution_s))
            .py()?;
        Ok(per.into_iter().map(PyServiceStats::from).collect())
    }

    #[pyo3(signature = (metric, window=None))]
    fn compare(
        &self,
        py: Python<'_>,
        metric: &str,
        window: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(String, Option<f64>)>> {
        let metric = Metric::parse(metric).py()?;
        let w = window_s(&self.inner, window)?;
        let m = &self.inner;
        Ok(py.detach(|| m.compare(metric, w)))
    }

    fn memory_bytes(&self, py: Python<'_>) -> usize {
        let m = &self.inner;
        py.detach(|| m.memory_bytes())
    }

    /// UTC epoch seconds on this monitor's clock.
    fn now(&self) -> f64 {
        self.inner.clock().now_epoch_s()
    }

    #[getter]
    fn manual_clock(&self) -> bool {
        self.inner.clock().is_manual()
    }

    fn advance(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let m = &self.inner;
        py.detach(|| m.advance(seconds)).py()
    }

    fn close(&self, py: Python<'_>) {
        let m = &self.inner;
        py.detach(|| m.close())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        format!(
            "Monitor(services={}, tiers={:?}, manual_clock={})",
            self.inner.services().len(),
            self.tiers(),
            self.inner.clock().is_manual()
        )
    }
}
