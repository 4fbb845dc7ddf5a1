//! `movie_director_metrics._core`: registers the binding types.  Logic lives
//! in `metrics_core`; each exposed type has its own module here.

use pyo3::prelude::*;

mod arrays;
mod bucket;
mod errors;
mod monitor;
mod service;
mod stats;
mod tdigest;
mod text;
mod window;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<monitor::PyMonitor>()?;
    m.add_class::<service::PyService>()?;
    m.add_class::<stats::PyServiceStats>()?;
    m.add_class::<stats::PyGaugeStats>()?;
    m.add_class::<tdigest::PyTDigest>()?;
    m.add_class::<bucket::PyStoredBucket>()?;
    m.add_function(wrap_pyfunction!(
        service::_stress_record_from_rust_threads,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(window::parse_window, m)?)?;
    m.add_function(wrap_pyfunction!(service::record_each, m)?)?;
    // The engine's limits, so Python code names them instead of copying
    // their values.
    m.add("MAX_DURATION_MS", metrics_core::service::MAX_DURATION_MS)?;
    m.add("MAX_NAME_CHARS", metrics_core::service::MAX_NAME_CHARS)?;
    m.add(
        "MAX_SERVICES_LIMIT",
        metrics_core::config::MAX_SERVICES_LIMIT,
    )?;
    m.add("MAX_ERROR_TYPES", metrics_core::open_slot::MAX_ERROR_TYPES)?;
    m.add(
        "OCTAVE_UPPER_MS",
        (0..metrics_core::histogram::OCTAVE_COUNTS)
            .map(metrics_core::histogram::octave_upper_ms)
            .collect::<Vec<_>>(),
    )?;
    m.add("DEFAULT_COMPRESSION", metrics_core::DEFAULT_COMPRESSION)?;
    m.add("METRICS", metrics_core::Metric::names())?;
    m.add(
        "GAUGES",
        metrics_core::Gauge::ALL
            .iter()
            .map(|g| g.name())
            .collect::<Vec<_>>(),
    )?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
