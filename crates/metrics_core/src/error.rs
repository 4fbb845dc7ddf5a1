//! One error type for the engine's operations.  Every message names the
//! offending value and what was expected; the binding maps each variant to
//! a Python exception class (bad input → subclasses of `ValueError`).

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum MetricsError {
    /// A recorded value is NaN, infinite or outside its accepted range.
    /// Remedy: pass a finite number in the range the message gives.
    InvalidValue {
        what: &'static str,
        value: f64,
        expected: String,
    },
    /// In a batch: element `index` is invalid; nothing of the batch was kept.
    InvalidValueAt {
        what: &'static str,
        index: usize,
        value: f64,
        expected: String,
    },
    /// A service name is empty, too long or has unprintable characters.
    InvalidName { name: String, reason: String },
    /// `max_services` services exist already.  Remedy: raise the limit when
    /// creating the monitor.
    ServiceLimit { name: String, limit: usize },
    /// No service of that name has recorded anything.
    UnknownService { name: String, known: Vec<String> },
    /// A window that is not a known name or a number of seconds in range.
    InvalidWindow { window: String, expected: String },
    /// A metric name the call does not know.
    InvalidMetric {
        metric: String,
        valid: Vec<&'static str>,
    },
    /// A gauge name `set_resource` does not know.
    InvalidGauge {
        gauge: String,
        valid: Vec<&'static str>,
    },
    /// Monitor configuration (tiers, limits) that cannot work.
    InvalidConfig(String),
    /// Arguments that contradict each other; the message says how to call.
    InvalidArgument(String),
    /// A manual-clock operation that cannot be done.
    Clock(String),
    /// The monitor was closed.
    Closed,
}

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsError::InvalidValue {
                what,
                value,
                expected,
            } => write!(f, "invalid {what} {value}: expected {expected}; nothing was recorded"),
            MetricsError::InvalidValueAt {
                what,
                index,
                value,
                expected,
            } => write!(
                f,
                "invalid {what} {value} at index {index}: expected {expected}; nothing of the batch was recorded"
            ),
            MetricsError::InvalidName { name, reason } => {
                write!(f, "invalid service name {name:?}: {reason}")
            }
            MetricsError::ServiceLimit { name, limit } => write!(
                f,
                "cannot add service {name:?}: the monitor already has its maximum of {limit} services (raise max_services)"
            ),
            MetricsError::UnknownService { name, known } => {
                write!(f, "unknown service {name:?}; known services: {known:?}")
            }
            MetricsError::InvalidWindow { window, expected } => {
                write!(f, "invalid window {window:?}: expected {expected}")
            }
            MetricsError::InvalidMetric { metric, valid } => {
                write!(f, "unknown metric {metric:?}; valid metrics: {}", valid.join(", "))
            }
            MetricsError::InvalidGauge { gauge, valid } => {
                write!(f, "unknown resource gauge {gauge:?}; valid gauges: {}", valid.join(", "))
            }
            MetricsError::InvalidConfig(msg) => write!(f, "invalid monitor configuration: {msg}"),
            MetricsError::InvalidArgument(msg) => f.write_str(msg),
            MetricsError::Clock(msg) => f.write_str(msg),
            MetricsError::Closed => f.write_str("the monitor is closed"),
        }
    }
}

impl std::error::Error for MetricsError {}

pub type Result<T> = std::result::Result<T, MetricsError>;
