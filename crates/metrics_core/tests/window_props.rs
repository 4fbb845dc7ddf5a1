//! Property test of windows against an exact oracle: random traffic with
//! random gaps under a driven clock, then every window's count, errors,
//! min, max and sum must equal those of exactly the records in the span the
//! stats say they cover.

use metrics_core::{Clock, Monitor, MonitorConfig};
use proptest::prelude::*;

const T0: f64 = 1_700_000_040.0; // a whole UTC minute

#[derive(Debug, Clone)]
enum Step {
    Advance(u32),
    Record { value: f64, failed: bool },
    Batch(Vec<f64>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u32..400).prop_map(Step::Advance),
        1 => (3600u32..20_000).prop_map(Step::Advance),
        6 => (0.0f64..5_000.0, any::<bool>()).prop_map(|(value, failed)| Step::Record { value, failed }),
        1 => prop::collection::vec(0.0f64..1e6, 1..50).prop_map(Step::Batch),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn windows_match_an_exact_oracle(steps in prop::collection::vec(step(), 1..120)) {
        let m = Monitor::new(MonitorConfig::default(), Clock::manual(T0)).unwrap();
        let s = m.service("p").unwrap();
        // (epoch second, value, failed)
        let mut log: Vec<(f64, f64, bool)> = Vec::new();
        let mut now = T0;
        for st in &steps {
            match st {
                Step::Advance(sec) => {
                    m.advance(*sec as f64).unwrap();
                    now += *sec as f64;
                }
                Step::Record { value, failed } => {
                    s.record(*value, failed.then_some("boom")).unwrap();
                    log.push((now, *value, *failed));
                }
                Step::Batch(vals) => {
                    s.record_batch(vals, None, "e").unwrap();
                    log.extend(vals.iter().map(|v| (now, *v, false)));
                }
            }
        }
        for window in [1u64, 10, 60, 90, 300, 900, 3600, 6 * 3600, 86_400] {
            let st = m.stats("p", window).unwrap();
            let inside: Vec<_> = log.iter().filter(|r| r.0 >= st.start && r.0 <= st.end).collect();
            prop_assert_eq!(st.count, inside.len() as u64, "window {} start {}", window, st.start - T0);
            prop_assert_eq!(st.errors, inside.iter().filter(|r| r.2).count() as u64);
            if inside.is_empty() {
                prop_assert_eq!(st.avg_ms, None);
                prop_assert_eq!(st.p50_ms, None);
            } else {
                let min = inside.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
                let max = inside.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = inside.iter().map(|r| r.1).sum();
                prop_assert_eq!(st.min_ms, Some(min));
                prop_assert_eq!(st.max_ms, Some(max));
                let avg = st.avg_ms.unwrap();
                prop_assert!((avg - sum / inside.len() as f64).abs() <= 1e-9 * avg.abs().max(1.0));
                let p50 = st.p50_ms.unwrap();
                prop_assert!(p50 >= min && p50 <= max);
                // Peak rpm: the busiest aligned UTC minute of the covered records.
                let mut per_minute = std::collections::BTreeMap::<i64, u64>::new();
                for r in &inside {
                    *per_minute.entry((r.0 / 60.0).floor() as i64 * 60).or_default() += 1;
                }
                let busiest = per_minute.values().copied().max().unwrap();
                prop_assert_eq!(st.peak_rpm, Some(busiest as f64), "window {}", window);
                let at = st.peak_rpm_at.unwrap();
                prop_assert_eq!(per_minute.get(&(at as i64)).copied(), Some(busiest));
            }
            // The covered span never starts before the window asks, and
            // starts at most one coarse bucket late.
            prop_assert!(st.start >= st.end.floor() + 1.0 - window as f64 - 1e-6);
            prop_assert!(st.start <= (st.end.floor() + 1.0 - window as f64).max(T0) + 60.0 + 1e-6);
        }
    }
}
