//! Time source of a monitor.
//!
//! Internally everything runs on a monotonic nanosecond count since the
//! monitor's *base* (its creation); outputs are UTC epoch seconds computed as
//! `base_epoch + monotonic offset`, so a wall-clock step (NTP, DST, user
//! changing the date) never reorders buckets.  A [`Clock::manual`] clock lets
//! tests and simulations drive time explicitly without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(target_os = "linux"))]
use std::time::Instant;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where "now" comes from.
///
/// The base is a UTC midnight [`HISTORY_DAYS`] before the clock was
/// created (so reloaded history has seconds of its own), and offsets
/// count from it, so 1 s / 10 s / 1 min buckets (and minutes for peak rpm)
/// line up with UTC wall-clock boundaries.
#[derive(Debug)]
pub struct Clock {
    /// UTC epoch seconds at offset 0: a UTC midnight.
    base_epoch_s: f64,
    /// Nanoseconds from the base to the moment the clock was created.
    start_offset_ns: u64,
    source: Source,
}

/// Days of history before a clock's start that its seconds can express:
/// history reloaded from storage (30 days of hourly buckets, with room to
/// spare) must sit at non-negative seconds.
pub const HISTORY_DAYS: f64 = 400.0;

/// Splits an epoch time into (a UTC midnight `HISTORY_DAYS` before it, ns
/// since then).  Never before the Unix epoch, so simulated clocks may start
/// at 0.
fn midnight_and_offset(epoch_s: f64) -> (f64, u64) {
    let midnight = ((epoch_s / 86_400.0).floor() - HISTORY_DAYS).max(0.0) * 86_400.0;
    (midnight, ((epoch_s - midnight) * 1e9).round() as u64)
}

#[derive(Debug)]
enum Source {
    System {
        base: MonoBase,
    },
    /// Nanoseconds since base, moved only forward by [`Clock::advance`].
    Manual {
        offset_ns: AtomicU64,
    },
}

/// Longest time a monitor's clock can span: seconds are counted in `u32`
/// from the base, so stay well inside that (about 100 years).
pub const MAX_SPAN_S: f64 = 3.1e9;

/// A manual clock refused to go backwards.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockError(pub String);

impl Clock {
    /// Real time: monotonic, anchored at the current UTC time.
    pub fn system() -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let (base_epoch_s, start_offset_ns) = midnight_and_offset(now);
        Clock {
            base_epoch_s,
            start_offset_ns,
            source: Source::System {
                base: MonoBase::now(),
            },
        }
    }

    /// A clock that only moves when told to, starting at `start_epoch_s`
    /// (UTC epoch seconds).
    pub fn manual(start_epoch_s: f64) -> Self {
        let (base_epoch_s, start_offset_ns) = midnight_and_offset(start_epoch_s);
        Clock {
            base_epoch_s,
            start_offset_ns,
            source: Source::Manual {
                offset_ns: AtomicU64::new(0),
            },
        }
    }

    pub fn is_manual(&self) -> bool {
        matches!(self.source, Source::Manual { .. })
    }

    /// The second (since the base) in which the clock was created: no data
    /// can be older, so windows never reach back before it.
    pub fn start_second(&self) -> u32 {
        (self.start_offset_ns / 1_000_000_000) as u32
    }

    /// UTC epoch seconds of monotonic offset 0.
    pub fn base_epoch_s(&self) -> f64 {
        self.base_epoch_s
    }

    /// Nanoseconds since the base.  On the record path: for the system clock
    /// this is one coarse-clock read on Linux.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.start_offset_ns
            + match &self.source {
                Source::System { base } => system_offset_ns(base),
                Source::Manual { offset_ns } => offset_ns.load(Ordering::Acquire),
            }
    }

    /// UTC epoch seconds now.
    pub fn now_epoch_s(&self) -> f64 {
        self.epoch_of_ns(self.now_ns())
    }

    /// Converts a monotonic offset to UTC epoch seconds.
    pub fn epoch_of_ns(&self, offset_ns: u64) -> f64 {
        // Whole seconds and the fraction apart, so whole seconds stay exact.
        self.base_epoch_s
            + (offset_ns / 1_000_000_000) as f64
            + (offset_ns % 1_000_000_000) as f64 * 1e-9
    }

    /// Moves a manual clock forward by `seconds` (must be finite and >= 0).
    pub fn advance(&self, seconds: f64) -> Result<(), ClockError> {
        match &self.source {
            Source::System { .. } => Err(ClockError(
                "advance() needs a manual clock; this monitor uses the system clock".into(),
            )),
            Source::Manual { offset_ns } => {
                if !seconds.is_finite() || !(0.0..=MAX_SPAN_S).contains(&seconds) {
                    return Err(ClockError(format!(
                        "cannot advance the clock by {seconds} s: expected a finite number of seconds in [0, {MAX_SPAN_S:e}]"
                    )));
                }
                let step = (seconds * 1e9).round() as u64;
                let now = offset_ns.load(Ordering::Acquire);
                if self.start_offset_ns + now + step > (MAX_SPAN_S * 1e9) as u64 {
                    return Err(ClockError(format!(
                        "cannot advance the clock by {seconds} s: a monitor's clock spans at most {MAX_SPAN_S:e} s (about 100 years)"
                    )));
                }
                offset_ns.fetch_add(step, Ordering::AcqRel);
                Ok(())
            }
        }
    }

    /// Moves a manual clock to the UTC epoch time `epoch_s` (never backwards).
    pub fn set_epoch_s(&self, epoch_s: f64) -> Result<(), ClockError> {
        let now = self.now_epoch_s();
        if !epoch_s.is_finite() || epoch_s < now - 1e-9 {
            return Err(ClockError(format!(
                "cannot set the clock to {epoch_s}: time only moves forward (now is {now:.3})"
            )));
        }
        self.advance((epoch_s - now).max(0.0))
    }
}

/// A reading of the monotonic clock that the system source counts from.
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, Copy)]
struct MonoBase(u64);

#[cfg(target_os = "linux")]
impl MonoBase {
    fn now() -> Self {
        MonoBase(coarse_monotonic_ns())
    }
}

#[cfg(target_os = "linux")]
#[inline]
fn system_offset_ns(base: &MonoBase) -> u64 {
    coarse_monotonic_ns().saturating_sub(base.0)
}

/// CLOCK_MONOTONIC_COARSE: the kernel's last tick (1-4 ms resolution), read
/// from the vDSO without a syscall.  Monotonic, never steps with wall time.
#[cfg(target_os = "linux")]
#[inline]
fn coarse_monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC_COARSE is
    // supported by every Linux since 2.6.32, so the call only writes `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(not(target_os = "linux"))]
#[derive(Debug, Clone, Copy)]
struct MonoBase(Instant);

#[cfg(not(target_os = "linux"))]
impl MonoBase {
    fn now() -> Self {
        MonoBase(Instant::now())
    }
}

#[cfg(not(target_os = "linux"))]
#[inline]
fn system_offset_ns(base: &MonoBase) -> u64 {
    base.0.elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = Clock::manual(1_000.0);
        assert_eq!(c.now_epoch_s(), 1_000.0);
        assert_eq!(c.base_epoch_s(), 0.0, "never before the Unix epoch");
        let d = Clock::manual(1_700_000_123.5);
        // The UTC midnight before, less HISTORY_DAYS.
        assert_eq!(d.base_epoch_s(), 1_699_920_000.0 - 400.0 * 86_400.0);
        assert_eq!(d.now_ns() % 1_000_000_000, 500_000_000);
        c.advance(1.5).unwrap();
        assert!((c.now_epoch_s() - 1_001.5).abs() < 1e-9);
        assert!(c.advance(-1.0).is_err());
        assert!(c.advance(f64::NAN).is_err());
        assert!(c.set_epoch_s(1_000.0).is_err());
        c.set_epoch_s(2_000.0).unwrap();
        assert!((c.now_epoch_s() - 2_000.0).abs() < 1e-6);
        c.advance(3.0e9).unwrap();
        let e = c.advance(2.0e8).unwrap_err().0;
        assert!(e.contains("100 years"), "{e}");
    }

    #[test]
    fn system_clock_is_monotonic_and_near_wall_time() {
        let c = Clock::system();
        let a = c.now_ns();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = c.now_ns();
        assert!(b >= a);
        assert!(
            b - a >= 10_000_000,
            "coarse clock advanced only {} ns",
            b - a
        );
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((c.now_epoch_s() - wall).abs() < 0.5);
        assert!(c.advance(1.0).is_err());
    }
}
