//! Window arguments: `"5m"`-style strings or a number of seconds.

use metrics_core::Monitor;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors::IntoPyResult;

/// Default window of every read.
pub const DEFAULT_WINDOW: &str = "5m";

pub fn window_s(monitor: &Monitor, window: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
    let Some(window) = window else {
        return monitor.window(DEFAULT_WINDOW).py();
    };
    if let Ok(s) = window.cast::<PyString>() {
        return monitor.window(s.to_str()?).py();
    }
    match window.extract::<f64>() {
        Ok(v) if !window.is_instance_of::<pyo3::types::PyBool>() => monitor.window_seconds(v).py(),
        _ => monitor.window(&window.repr()?.to_string()).py(),
    }
}
