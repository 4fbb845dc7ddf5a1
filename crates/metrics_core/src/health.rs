//! Health-check history and the uptime arithmetic.
//!
//! **Definition.** A health result at second `t` vouches for the service's
//! state from `t` until the next result or until `ttl` seconds have passed,
//! whichever comes first.  Time no result vouches for is *unknown*: it is
//! left out of both numerator and denominator, so
//!
//! ```text
//!   uptime_pct = 100 * up_s / (up_s + down_s)      (None when up_s + down_s = 0)
//! ```
//!
//! and `known_s = up_s + down_s` says how much of the window the figure is
//! based on.  A monitor that was not running, or a checker that stopped, so
//! never counts as downtime (nor as uptime).  Resolution is one second: the
//! state of a second is the last result recorded in it.
//!
//! Results are kept as runs of equal state whose results are at most `ttl`
//! apart, so a steady service costs one run however often it is checked.

/// Consecutive results of one state, each within `ttl` of the previous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first_s: u32,
    last_s: u32,
    up: bool,
}

/// Most runs kept per service (a service flapping every second for a day
/// fits; beyond this the oldest runs go first).
const MAX_RUNS: usize = 200_000;

#[derive(Debug, Default, Clone)]
pub struct HealthLog {
    runs: Vec<Run>,
}

impl HealthLog {
    /// Adds the state of `second` (seconds arrive in ascending order; an
    /// older second than the latest one kept is ignored).
    pub fn push(&mut self, second: u32, up: bool, ttl_s: u32) {
        if let Some(last) = self.runs.last_mut() {
            if second < last.last_s {
                return;
            }
            if second == last.last_s {
                if last.up != up {
                    // A later result in the same second flips its state.
                    if last.first_s == last.last_s {
                        last.up = up;
                    } else {
                        last.last_s -= 1;
                        self.runs.push(Run {
                            first_s: second,
                            last_s: second,
                            up,
                        });
                    }
                }
                return;
            }
            if last.up == up && second - last.last_s <= ttl_s {
                last.last_s = second;
                return;
            }
        }
        if self.runs.len() >= MAX_RUNS {
            self.runs.remove(0);
        }
        self.runs.push(Run {
            first_s: second,
            last_s: second,
            up,
        });
    }

    /// The runs as (first second, last second, up), oldest first.
    pub fn runs(&self) -> impl Iterator<Item = (u32, u32, bool)> + '_ {
        self.runs.iter().map(|r| (r.first_s, r.last_s, r.up))
    }

    /// Puts a stored run back in front of the log: kept only when it ends
    /// before the first run held (history is reloaded before new results,
    /// oldest first, so this only refuses overlaps).
    pub fn restore_run(&mut self, first_s: u32, last_s: u32, up: bool) -> bool {
        let run = Run {
            first_s,
            last_s,
            up,
        };
        let pos = self.runs.partition_point(|r| r.last_s < first_s);
        let fits_before = self.runs.get(pos).is_none_or(|next| last_s < next.first_s);
        let fits_after = pos == 0 || self.runs[pos - 1].last_s < first_s;
        if fits_before && fits_after && self.runs.len() < MAX_RUNS {
            self.runs.insert(pos, run);
            true
        } else {
            false
        }
    }

    /// Drops runs that ended before `before_s`.
    pub fn prune(&mut self, before_s: u32, ttl_s: u32) {
        let keep_from = self
            .runs
            .iter()
            .position(|r| r.last_s.saturating_add(ttl_s) > before_s)
            .unwrap_or(self.runs.len());
        self.runs.drain(..keep_from);
    }

    /// (up seconds, down seconds) within `[from_s, to_s)`, with `extra` a
    /// provisional result not yet in the log (the open second).
    pub fn covered(
        &self,
        from_s: u32,
        to_s: u32,
        ttl_s: u32,
        extra: Option<(u32, bool)>,
    ) -> (u64, u64) {
        let mut tmp;
        let runs = match extra {
            Some((s, up)) => {
                tmp = self.clone();
                tmp.push(s, up, ttl_s);
                &tmp.runs
            }
            None => &self.runs,
        };
        let (mut up_s, mut down_s) = (0u64, 0u64);
        for (i, r) in runs.iter().enumerate() {
            let mut end = r.last_s as u64 + ttl_s as u64;
            if let Some(next) = runs.get(i + 1) {
                end = end.min(next.first_s as u64);
            }
            let lo = (r.first_s as u64).max(from_s as u64);
            let hi = end.min(to_s as u64);
            if hi > lo {
                if r.up {
                    up_s += hi - lo;
                } else {
                    down_s += hi - lo;
                }
            }
        }
        (up_s, down_s)
    }

    pub fn heap_bytes(&self) -> usize {
        self.runs.capacity() * std::mem::size_of::<Run>()
    }
}

/// `100 * up / (up + down)`, `None` when nothing is known.
pub fn uptime_pct(up_s: u64, down_s: u64) -> Option<f64> {
    let known = up_s + down_s;
    (known > 0).then(|| 100.0 * up_s as f64 / known as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_checks_make_one_run() {
        let mut h = HealthLog::default();
        for s in (0..600).step_by(5) {
            h.push(s, true, 30);
        }
        assert_eq!(h.runs.len(), 1);
        // Results 0..595 every 5 s; the last vouches until 625.
        assert_eq!(h.covered(0, 1000, 30, None), (625, 0));
        assert_eq!(uptime_pct(625, 0), Some(100.0));
    }

    #[test]
    fn down_period_and_unknown_gap() {
        let mut h = HealthLog::default();
        // up at 0, 10, 20; down at 30, 40; silence; up again at 200.
        for s in [0, 10, 20] {
            h.push(s, true, 15);
        }
        for s in [30, 40] {
            h.push(s, false, 15);
        }
        h.push(200, true, 15);
        let (up, down) = h.covered(0, 215, 15, None);
        // up: [0,30) + [200,215) = 45; down: [30, 55) = 25; 55..200 unknown.
        assert_eq!((up, down), (45, 25));
        let pct = uptime_pct(up, down).unwrap();
        assert!((pct - 100.0 * 45.0 / 70.0).abs() < 1e-12);
        // Window only over the silence: nothing known.
        assert_eq!(h.covered(60, 190, 15, None), (0, 0));
        assert_eq!(uptime_pct(0, 0), None);
    }

    #[test]
    fn provisional_result_and_prune() {
        let mut h = HealthLog::default();
        h.push(0, true, 10);
        assert_eq!(h.covered(0, 100, 10, Some((50, false))), (10, 10));
        h.push(50, false, 10);
        h.prune(30, 10);
        assert_eq!(h.runs.len(), 1);
        assert_eq!(h.covered(0, 100, 10, None), (0, 10));
    }

    #[test]
    fn flip_within_a_second() {
        let mut h = HealthLog::default();
        h.push(0, true, 10);
        h.push(5, true, 10);
        h.push(5, false, 10);
        assert_eq!(h.covered(0, 100, 10, None), (5, 10));
    }
}
