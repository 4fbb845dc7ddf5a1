//! `StoredBucket`: one sealed bucket as storage keeps it, with named fields
//! (the storage hooks used to hand out positional 9-tuples).

use metrics_core::service::StoredBucket;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// A sealed bucket of one tier, as ``Service.stored_buckets`` gives it and
/// ``Service.restore_buckets`` takes it back.
#[pyclass(
    frozen,
    get_all,
    name = "StoredBucket",
    module = "movie_director_metrics._core"
)]
pub struct PyStoredBucket {
    /// UTC epoch seconds the bucket starts at.
    pub start_s: i64,
    pub count: u64,
    pub errors: u64,
    pub sum_ms: f64,
    /// Meaningless (0) when ``count`` is 0.
    pub min_ms: f64,
    pub max_ms: f64,
    /// The engine's compact bytes (digests, queue, gauges, health), or None.
    pub blob: Option<Py<PyBytes>>,
    /// The bucket still being built (``include_building``).
    pub partial: bool,
    /// ``(error id, count)`` pairs, in the ids storage asked for.
    pub error_counts: Vec<(u8, u64)>,
}

#[pymethods]
impl PyStoredBucket {
    fn __repr__(&self) -> String {
        format!(
            "StoredBucket(start_s={}, count={}, errors={}, partial={})",
            self.start_s,
            self.count,
            self.errors,
            if self.partial { "True" } else { "False" }
        )
    }
}

impl PyStoredBucket {
    pub fn new(py: Python<'_>, b: StoredBucket) -> Self {
        PyStoredBucket {
            start_s: b.start_epoch_s,
            count: b.count,
            errors: b.errors,
            sum_ms: b.sum_ms,
            min_ms: b.min_ms,
            max_ms: b.max_ms,
            blob: b.blob.map(|x| PyBytes::new(py, &x).unbind()),
            partial: b.partial,
            error_counts: b.error_counts,
        }
    }

    /// The bucket to restore (not partial, error counts dropped: they are
    /// in the blob).
    pub fn to_core(&self, py: Python<'_>) -> StoredBucket {
        StoredBucket {
            start_epoch_s: self.start_s,
            count: self.count,
            errors: self.errors,
            sum_ms: self.sum_ms,
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            blob: self.blob.as_ref().map(|b| b.as_bytes(py).to_vec()),
            partial: false,
            error_counts: Vec::new(),
        }
    }
}
