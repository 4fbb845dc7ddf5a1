//! numpy arrays as Rust slices.

use std::borrow::Cow;

use numpy::{Element, PyReadonlyArray1};

/// The array's data without copying when it is contiguous; a strided view
/// is copied once.
pub fn contiguous<'a, T: Element + Copy>(a: &'a PyReadonlyArray1<'_, T>) -> Cow<'a, [T]> {
    match a.as_slice() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(a.as_array().to_vec()),
    }
}
