//! Maps core errors to the Python exception hierarchy, which is defined in
//! `movie_director_metrics/errors.py` (so bad-input classes can subclass
//! both `MetricsError` and `ValueError`).

use metrics_core::{DigestError, MetricsError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;

/// Name of the Python exception class for an error.
pub fn class_name(e: &MetricsError) -> &'static str {
    match e {
        MetricsError::InvalidValue { .. }
        | MetricsError::InvalidValueAt { .. }
        | MetricsError::InvalidArgument(_) => "InvalidValueError",
        MetricsError::InvalidName { .. } => "InvalidNameError",
        MetricsError::ServiceLimit { .. } => "ServiceLimitError",
        MetricsError::UnknownService { .. } => "UnknownServiceError",
        MetricsError::InvalidWindow { .. } => "InvalidWindowError",
        MetricsError::InvalidMetric { .. } | MetricsError::InvalidGauge { .. } => {
            "InvalidMetricError"
        }
        MetricsError::InvalidConfig(_) => "InvalidConfigError",
        MetricsError::Clock(_) => "ClockError",
        MetricsError::Closed => "MonitorClosedError",
    }
}

fn digest_class(e: &DigestError) -> &'static str {
    match e {
        DigestError::Decode(_) => "DecodeError",
        DigestError::InvalidCompression(_) => "InvalidConfigError",
        _ => "InvalidValueError",
    }
}

static ERRORS_MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// Builds an exception of class `name` from `movie_director_metrics.errors`.
pub fn make(py: Python<'_>, name: &str, msg: String) -> PyErr {
    let module = ERRORS_MODULE.get_or_try_init(py, || {
        py.import("movie_director_metrics.errors")
            .map(|m| m.unbind())
    });
    let cls = module.and_then(|m| m.bind(py).getattr(name));
    match cls {
        Ok(cls) => match cls.cast_into::<PyType>() {
            Ok(t) => PyErr::from_type(t, msg),
            Err(_) => PyRuntimeError::new_err(msg),
        },
        // The package is always importable next to _core; if someone
        // imports _core alone, the message still gets through.
        Err(_) => PyRuntimeError::new_err(msg),
    }
}

pub fn to_py(e: MetricsError) -> PyErr {
    Python::attach(|py| make(py, class_name(&e), e.to_string()))
}

pub fn digest_to_py(e: DigestError) -> PyErr {
    Python::attach(|py| make(py, digest_class(&e), e.to_string()))
}

/// `?`-friendly conversion of core results.
pub trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, MetricsError> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

impl<T> IntoPyResult<T> for Result<T, DigestError> {
    fn py(self) -> PyResult<T> {
        self.map_err(digest_to_py)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_a_class() {
        let cases = [
            MetricsError::InvalidValue {
                what: "x",
                value: 1.0,
                expected: "y".into(),
            },
            MetricsError::InvalidName {
                name: "".into(),
                reason: "".into(),
            },
            MetricsError::ServiceLimit {
                name: "".into(),
                limit: 1,
            },
            MetricsError::UnknownService {
                name: "".into(),
                known: vec![],
            },
            MetricsError::InvalidWindow {
                window: "".into(),
                expected: "".into(),
            },
            MetricsError::InvalidConfig("".into()),
            MetricsError::Clock("".into()),
            MetricsError::Closed,
        ];
        let names: Vec<_> = cases.iter().map(class_name).collect();
        assert_eq!(
            names,
            [
                "InvalidValueError",
                "InvalidNameError",
                "ServiceLimitError",
                "UnknownServiceError",
                "InvalidWindowError",
                "InvalidConfigError",
                "ClockError",
                "MonitorClosedError"
            ]
        );
        assert_eq!(
            digest_class(&DigestError::Decode("x".into())),
            "DecodeError"
        );
    }
}
