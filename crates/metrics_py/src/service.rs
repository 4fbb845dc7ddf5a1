//! `Service`: the recording handle of one service.

use std::sync::Arc;

use metrics_core::open_slot::{MAX_ERROR_TYPES, OTHER_ERROR};
use metrics_core::service::{StoredBucket, StoredRun};
use metrics_core::{Gauge, MetricsError, Monitor, Service};
use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

use crate::bucket::PyStoredBucket;
use crate::errors::IntoPyResult;
use crate::stats::PyServiceStats;
use crate::text::{utf8, Role};
use crate::window::window_s;

/// Records requests, queue depth, processing time, resources and health of
/// one service.  Thread-safe; the recording methods are lock-free (reads
/// and the storage hooks take the service's history lock).
#[pyclass(frozen, name = "Service", module = "movie_director_metrics._core")]
pub struct PyService {
    pub(crate) service: Arc<Service>,
    pub(crate) monitor: Arc<Monitor>,
}

#[pymethods]
impl PyService {
    #[getter]
    fn name(&self) -> &str {
        self.service.name()
    }

    #[pyo3(signature = (latency_ms, ok=true, error=None))]
    fn record(
        &self,
        latency_ms: f64,
        ok: bool,
        error: Option<&Bound<'_, PyString>>,
    ) -> PyResult<()> {
        let error = error_of(latency_ms, ok, error)?;
        self.service.record(latency_ms, error).py()
    }

    #[pyo3(signature = (latencies_ms, ok=None, error="error"))]
    fn record_many(
        &self,
        py: Python<'_>,
        latencies_ms: PyReadonlyArray1<'_, f64>,
        ok: Option<PyReadonlyArray1<'_, bool>>,
        error: &str,
    ) -> PyResult<()> {
        // Zero-copy for contiguous arrays; a strided view is copied once.
        let l = crate::arrays::contiguous(&latencies_ms);
        let ok = ok.as_ref().map(crate::arrays::contiguous);
        let (l, ok_slice): (&[f64], Option<&[bool]>) = (&l, ok.as_deref());
        let svc = &self.service;
        py.detach(|| svc.record_batch(l, ok_slice, error)).py()
    }

    #[pyo3(signature = (running=0, pending=0))]
    fn set_queue(&self, running: i64, pending: i64) -> PyResult<()> {
        // Signed here so a negative count gets the engine's InvalidValueError
        // (naming the value), not an OverflowError from the conversion.
        let count = |what: &'static str, v: i64| {
            u64::try_from(v).map_err(|_| MetricsError::InvalidValue {
                what,
                value: v as f64,
                expected: format!("an integer in [0, {}]", u32::MAX),
            })
        };
        let (running, pending) = (
            count("queue running", running).py()?,
            count("queue pending", pending).py()?,
        );
        self.service.set_queue(running, pending).py()
    }

    fn record_processing(&self, ms: f64) -> PyResult<()> {
        self.service.record_processing(ms).py()
    }

    #[pyo3(signature = (**gauges))]
    fn set_resource(&self, gauges: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        let mut readings = Vec::new();
        if let Some(g) = gauges {
            for (k, v) in g.iter() {
                let name: String = k.extract()?;
                let gauge = Gauge::from_name(&name)
                    .ok_or_else(|| MetricsError::InvalidGauge {
                        gauge: name.clone(),
                        valid: Gauge::ALL.iter().map(|g| g.name()).collect(),
                    })
                    .py()?;
                let value: f64 = v.extract().map_err(|_| {
                    crate::errors::to_py(MetricsError::InvalidValue {
                        what: gauge.name(),
                        value: f64::NAN,
                        expected: format!(
                            "a number, got {}",
                            v.get_type()
                                .name()
                                .map(|n| n.to_string())
                                .unwrap_or_default()
                        ),
                    })
                })?;
                readings.push((gauge, value));
            }
        }
        self.service.set_resources(&readings).py()
    }

    #[pyo3(signature = (up, latency_ms=None))]
    fn health(&self, up: bool, latency_ms: Option<f64>) -> PyResult<()> {
        self.service.health(up, latency_ms).py()
    }

    #[pyo3(signature = (window=None))]
    fn stats(&self, py: Python<'_>, window: Option<&Bound<'_, PyAny>>) -> PyResult<PyServiceStats> {
        let w = window_s(&self.monitor, window)?;
        let svc = &self.service;
        Ok(py.detach(|| svc.stats(w)).into())
    }

    fn totals<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let svc = &self.service;
        let t = py.detach(|| svc.totals());
        let d = PyDict::new(py);
        d.set_item("count", t.count)?;
        d.set_item("errors", t.errors)?;
        d.set_item("sum_ms", t.sum_ms)?;
        d.set_item("error_counts", t.error_counts)?;
        d.set_item("processing_count", t.processing_count)?;
        d.set_item("processing_sum_ms", t.processing_sum_ms)?;
        d.set_item("health_up", t.health_up)?;
        d.set_item("health_down", t.health_down)?;
        d.set_item("latency_octaves", t.latency_octaves.to_vec())?;
        d.set_item("processing_octaves", t.processing_octaves.to_vec())?;
        Ok(d)
    }

    fn error_types(&self) -> Vec<String> {
        self.service.error_type_names()
    }

    #[pyo3(signature = (resolution_s, since=0, include_building=false, error_ids=None))]
    fn stored_buckets(
        &self,
        py: Python<'_>,
        resolution_s: u32,
        since: i64,
        include_building: bool,
        error_ids: Option<Vec<u8>>,
    ) -> PyResult<Vec<PyStoredBucket>> {
        let map = error_ids.map(|ids| error_id_map(&ids)).transpose().py()?;
        let svc = &self.service;
        let rows = py
            .detach(|| svc.stored_buckets(resolution_s, since, include_building, map.as_ref()))
            .py()?;
        Ok(rows
            .into_iter()
            .map(|b| PyStoredBucket::new(py, b))
            .collect())
    }

    fn restore_buckets<'py>(
        &self,
        py: Python<'py>,
        resolution_s: u32,
        rows: Vec<Bound<'py, PyAny>>,
        error_types: Vec<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        // A bucket from stored_buckets, or a row read back from a file
        // (the first seven fields: start, count, errors, sum, min, max, blob).
        let rows = rows
            .iter()
            .map(|row| match row.cast::<PyStoredBucket>() {
                Ok(b) => Ok(b.get().to_core(py)),
                Err(_) => {
                    let (start, count, errors, sum_ms, min_ms, max_ms, blob): InRow<'py> =
                        row.extract()?;
                    Ok(StoredBucket {
                        start_epoch_s: start,
                        count,
                        errors,
                        sum_ms,
                        min_ms,
                        max_ms,
                        blob: blob.map(|b| b.as_bytes().to_vec()),
                        partial: false,
                        error_counts: Vec::new(),
                    })
                }
            })
            .collect::<PyResult<Vec<StoredBucket>>>()?;
        let svc = &self.service;
        let r = py
            .detach(|| svc.restore_buckets(resolution_s, rows, &error_types))
            .py()?;
        let d = PyDict::new(py);
        d.set_item("restored", r.restored)?;
        d.set_item("out_of_window", r.out_of_window)?;
        d.set_item("rejected", r.rejected)?;
        Ok(d)
    }

    #[pyo3(signature = (since=0))]
    fn stored_health(&self, py: Python<'_>, since: i64) -> Vec<(i64, i64, bool)> {
        let svc = &self.service;
        py.detach(|| svc.stored_health(since))
            .into_iter()
            .map(|r| (r.first_epoch_s, r.last_epoch_s, r.up))
            .collect()
    }

    fn restore_health(&self, py: Python<'_>, runs: Vec<(i64, i64, bool)>) -> usize {
        let runs = runs
            .into_iter()
            .map(|(first, last, up)| StoredRun {
                first_epoch_s: first,
                last_epoch_s: last,
                up,
            })
            .collect();
        let svc = &self.service;
        py.detach(|| svc.restore_health(runs))
    }

    fn __repr__(&self) -> String {
        format!("Service({:?})", self.service.name())
    }
}

/// `ids[live id] = stored id`; ids past the list (types interned after the
/// caller read the names) become "other".
fn error_id_map(ids: &[u8]) -> Result<[u8; MAX_ERROR_TYPES + 1], MetricsError> {
    if ids.len() > MAX_ERROR_TYPES + 1 || ids.iter().any(|&i| i as usize > MAX_ERROR_TYPES) {
        return Err(MetricsError::InvalidArgument(format!(
            "error_ids={ids:?}: expected at most {} ids, each 0 to {MAX_ERROR_TYPES}",
            MAX_ERROR_TYPES + 1
        )));
    }
    let mut map = [OTHER_ERROR; MAX_ERROR_TYPES + 1];
    map[..ids.len()].copy_from_slice(ids);
    Ok(map)
}

/// A bucket read back from a file, for restoring: start, count, errors,
/// sum, min, max, blob.
type InRow<'py> = (i64, u64, u64, f64, f64, f64, Option<Bound<'py, PyBytes>>);

/// Test support: records `per_thread` latencies from each of `threads` Rust
/// threads at once, with the GIL released (exact-count stress tests).
#[pyfunction]
#[pyo3(signature = (service, threads, per_thread, error_every=0))]
pub fn _stress_record_from_rust_threads(
    py: Python<'_>,
    service: &PyService,
    threads: usize,
    per_thread: usize,
    error_every: usize,
) -> PyResult<()> {
    let svc = service.service.clone();
    py.detach(move || {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let svc = svc.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        let err = (error_every > 0 && i % error_every == 0).then_some("stress");
                        svc.record(1.0 + ((i + t) % 97) as f64, err)?;
                    }
                    Ok::<(), MetricsError>(())
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(recorded) => recorded?,
                // A panic is a bug, not a clock error: re-raise it as one
                // (PyO3 turns it into a PanicException at the boundary).
                Err(payload) => std::panic::resume_unwind(payload),
            }
        }
        Ok::<(), MetricsError>(())
    })
    .py()
}

/// The error type of a `record(latency_ms, ok, error)` call: None for a
/// success, `error` (default "error") for a failure.
fn error_of<'a>(
    latency_ms: f64,
    ok: bool,
    error: Option<&'a Bound<'_, PyString>>,
) -> PyResult<Option<&'a str>> {
    let error = error.map(|e| utf8(e, Role::ErrorType)).transpose()?;
    match (ok, error) {
        (true, None) => Ok(None),
        (false, e) => Ok(Some(e.unwrap_or("error"))),
        (true, Some(e)) => Err(MetricsError::InvalidArgument(format!(
            "record({latency_ms}, ok=True, error={e:?}) is contradictory: pass ok=False to record a failure of type {e:?}; nothing was recorded"
        )))
        .py(),
    }
}

/// One request recorded into each of `services` with a single call from
/// Python (a job's service, model and workflow series): the value and
/// the handles are checked first, so a bad call records into none.
#[pyfunction]
#[pyo3(signature = (services, latency_ms, ok=true, error=None))]
pub fn record_each(
    services: &Bound<'_, pyo3::types::PyTuple>,
    latency_ms: f64,
    ok: bool,
    error: Option<&Bound<'_, PyString>>,
) -> PyResult<()> {
    let error = error_of(latency_ms, ok, error)?;
    metrics_core::service::check_duration("latency_ms", latency_ms).py()?;
    for s in services.iter() {
        s.cast::<PyService>()?;
    }
    for s in services.iter() {
        s.cast::<PyService>()?
            .get()
            .service
            .record(latency_ms, error)
            .py()?;
    }
    Ok(())
}
