//! `TDigest`: the merging t-digest, usable on its own.

use metrics_core::TDigest;
use numpy::PyReadonlyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyType};

use crate::errors::IntoPyResult;

/// Not thread-safe by design (one owner, like a list): concurrent use from
/// two threads raises instead of corrupting.
#[pyclass(name = "TDigest", module = "movie_director_metrics._core")]
pub struct PyTDigest {
    inner: TDigest,
}

#[pymethods]
impl PyTDigest {
    #[new]
    #[pyo3(signature = (compression=metrics_core::DEFAULT_COMPRESSION))]
    fn new(compression: f64) -> PyResult<Self> {
        Ok(PyTDigest {
            inner: TDigest::new(compression).py()?,
        })
    }

    fn update(&mut self, value: f64) -> PyResult<()> {
        self.inner.try_add(value).py()
    }

    fn update_many(&mut self, py: Python<'_>, values: PyReadonlyArray1<'_, f64>) -> PyResult<()> {
        let xs = crate::arrays::contiguous(&values);
        let xs: &[f64] = &xs;
        let d = &mut self.inner;
        py.detach(|| {
            d.add_slice(xs)?;
            d.flush();
            Ok::<(), metrics_core::DigestError>(())
        })
        .py()
    }

    fn quantile(&mut self, q: f64) -> PyResult<Option<f64>> {
        self.inner.flush();
        self.inner.quantile(q).py()
    }

    fn cdf(&mut self, x: f64) -> PyResult<Option<f64>> {
        if x.is_nan() {
            return Err(metrics_core::DigestError::NonFinite(x)).py();
        }
        self.inner.flush();
        Ok(self.inner.cdf(x))
    }

    fn merge(&mut self, other: PyRef<'_, PyTDigest>) -> PyResult<()> {
        self.inner.merge(&other.inner);
        Ok(())
    }

    #[getter]
    fn count(&self) -> u64 {
        self.inner.count()
    }

    #[getter]
    fn min(&self) -> Option<f64> {
        self.inner.min()
    }

    #[getter]
    fn max(&self) -> Option<f64> {
        self.inner.max()
    }

    #[getter]
    fn sum(&self) -> f64 {
        self.inner.sum()
    }

    #[getter]
    fn compression(&self) -> f64 {
        self.inner.compression()
    }

    #[getter]
    fn centroid_count(&mut self) -> usize {
        self.inner.flush();
        self.inner.centroid_count()
    }

    /// Bytes of memory the digest holds.
    #[getter]
    fn nbytes(&self) -> usize {
        std::mem::size_of::<TDigest>() + self.inner.heap_bytes()
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    #[classmethod]
    fn from_bytes(_cls: &Bound<'_, PyType>, data: &[u8]) -> PyResult<Self> {
        Ok(PyTDigest {
            inner: TDigest::from_bytes(data).py()?,
        })
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        let py = slf.py();
        let bytes = slf.borrow().to_bytes(py);
        Ok((slf.get_type().getattr("from_bytes")?, (bytes,)))
    }

    fn __len__(&self) -> usize {
        self.inner.count() as usize
    }

    fn __repr__(&self) -> String {
        let opt = |v: Option<f64>| v.map_or("None".to_string(), |x| format!("{x:?}"));
        format!(
            "TDigest(compression={:?}, count={}, min={}, max={})",
            self.inner.compression(),
            self.inner.count(),
            opt(self.inner.min()),
            opt(self.inner.max())
        )
    }
}
