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
        // Lossy: a lone surrogate cannot be a window, and must be reported
        // as an invalid window, not as an encoding error.
        return monitor.window(&s.to_string_lossy()).py();
    }
    match window.extract::<f64>() {
        Ok(v) if !window.is_instance_of::<pyo3::types::PyBool>() => monitor.window_seconds(v).py(),
        _ => monitor.window(&window.repr()?.to_string()).py(),
    }
}

/// Longest window `parse_window` accepts without a monitor to bound it:
/// 400 days, past the longest history any tier keeps.
pub const PARSE_WINDOW_MAX_S: u64 = 400 * 86_400;

/// The one window grammar of the package, for code that has no monitor at
/// hand (alert rules, exports, LLM windows): `"90s"`, `"5m"`, `"5min"`,
/// `"1h"`, `"7d"` or a number of seconds, 1 s up to `max_s`.
#[pyfunction]
#[pyo3(signature = (window, max_s = PARSE_WINDOW_MAX_S))]
pub fn parse_window(window: &Bound<'_, PyAny>, max_s: u64) -> PyResult<u64> {
    if let Ok(s) = window.cast::<PyString>() {
        return metrics_core::window::parse_window(&s.to_string_lossy(), max_s).py();
    }
    match window.extract::<f64>() {
        Ok(v) if !window.is_instance_of::<pyo3::types::PyBool>() => {
            metrics_core::window::seconds(v, &window.repr()?.to_string(), max_s).py()
        }
        _ => metrics_core::window::parse_window(&window.repr()?.to_string(), max_s).py(),
    }
}
