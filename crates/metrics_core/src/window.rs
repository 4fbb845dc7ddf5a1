//! Window names ("5m", "1h", "24h", or seconds) → seconds.

use crate::error::{MetricsError, Result};

/// Named windows listed in error messages.
pub const NAMED_WINDOWS: [&str; 6] = ["1m", "5m", "15m", "1h", "6h", "24h"];

/// Parses `"90s"`, `"5m"`, `"1h"`, `"1d"` or a bare number of seconds;
/// accepts 1 s up to `max_s`.
pub fn parse_window(text: &str, max_s: u64) -> Result<u64> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let mult = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => f64::NAN,
    };
    let value: f64 = num.trim().parse().unwrap_or(f64::NAN);
    seconds(value * mult, text, max_s)
}

/// Validates a window given as a number of seconds.
pub fn seconds(value: f64, original: &str, max_s: u64) -> Result<u64> {
    if value.is_finite() && value >= 1.0 && value <= max_s as f64 {
        Ok(value.round() as u64)
    } else {
        Err(MetricsError::InvalidWindow {
            window: original.to_owned(),
            expected: format!(
                "one of {} or a number of seconds from 1 to {max_s} (e.g. \"90s\", \"30m\", 600)",
                NAMED_WINDOWS.join(", ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_window("5m", 86_400).unwrap(), 300);
        assert_eq!(parse_window("24h", 86_400).unwrap(), 86_400);
        assert_eq!(parse_window("1d", 86_400).unwrap(), 86_400);
        assert_eq!(parse_window("90", 86_400).unwrap(), 90);
        assert_eq!(parse_window("90s", 86_400).unwrap(), 90);
        assert_eq!(parse_window(" 1.5h ", 86_400).unwrap(), 5400);
    }

    #[test]
    fn rejects_with_the_valid_ones() {
        for bad in ["", "5x", "0", "-1m", "48h", "nan", "m"] {
            let e = parse_window(bad, 86_400).unwrap_err().to_string();
            assert!(e.contains("1m, 5m, 15m, 1h, 6h, 24h"), "{bad}: {e}");
        }
    }
}
