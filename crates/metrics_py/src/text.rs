//! `str` arguments as UTF-8.  A Python `str` may hold a lone surrogate
//! (`"\ud800"`), which no UTF-8 text can: such a name gets an error of our
//! hierarchy that shows the value and says what was expected, where PyO3's
//! own `&str` conversion raises a bare `UnicodeEncodeError`.

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::errors::make;

/// What a text argument is, for the error.
#[derive(Clone, Copy)]
pub enum Role {
    /// A service name: `InvalidNameError`.
    ServiceName,
    /// An error type: `InvalidValueError`.
    ErrorType,
}

/// `s` as UTF-8, or the error of `role` naming the value.
pub fn utf8<'a>(s: &'a Bound<'_, PyString>, role: Role) -> PyResult<&'a str> {
    s.to_str().map_err(|_| {
        let py = s.py();
        let shown = s
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_else(|_| "<str>".to_owned());
        let why = "holds a lone surrogate, which is not valid Unicode text (UTF-8)";
        match role {
            Role::ServiceName => make(
                py,
                "InvalidNameError",
                format!("invalid service name {shown}: it {why}; expected 1 to 64 printable characters"),
            ),
            Role::ErrorType => make(
                py,
                "InvalidValueError",
                format!("invalid error type {shown}: it {why}; expected printable text; nothing was recorded"),
            ),
        }
    })
}
