//! Property tests of the public [`TDigest`] API.

use metrics_core::{DigestError, TDigest};
use proptest::prelude::*;

const COMPRESSION: f64 = 100.0;
const QS: [f64; 11] = [
    0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0,
];

/// Integer-valued doubles: sums are exact in any order, so `sum()` can be
/// compared exactly; duplicates are common, which exercises ties.
fn values(max_len: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((-100_000i32..100_000).prop_map(f64::from), 0..max_len)
}

/// Arbitrary finite doubles of any magnitude.
fn wild_values(max_len: usize) -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        1..max_len,
    )
}

fn digest(xs: &[f64]) -> TDigest {
    let mut d = TDigest::new(COMPRESSION).unwrap();
    d.add_slice(xs).unwrap();
    d
}

/// Distance from `q` to the ranks `value` occupies in `sorted`.
fn rank_error(sorted: &[f64], value: f64, q: f64) -> f64 {
    let n = sorted.len() as f64;
    let lo = sorted.partition_point(|&x| x < value) as f64 / n;
    let hi = sorted.partition_point(|&x| x <= value) as f64 / n;
    if (lo..=hi).contains(&q) {
        0.0
    } else {
        (lo - q).abs().min((hi - q).abs())
    }
}

/// Largest weight, as a fraction of n, that the k2 scale lets one centroid
/// have around quantile `q`: `Z/δ · q(1-q)` with `Z = 4 ln(n/δ) + 24`.  An
/// estimate interpolated inside such a centroid can be off by up to that
/// much in rank, which for small n is more than the large-n figure.
fn k2_centroid_fraction(n: usize, q: f64) -> f64 {
    let z = 4.0 * (n as f64 / COMPRESSION).ln().max(0.0) + 24.0;
    z / COMPRESSION * q * (1.0 - q)
}

/// Every quantile is within `bound` (or one k2 centroid, if larger) in rank
/// of the exact data, plus the 1/n granularity of the data itself.
fn assert_rank_close(d: &TDigest, xs: &[f64], bound: f64) -> Result<(), TestCaseError> {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    for q in QS {
        let slack = bound.max(k2_centroid_fraction(sorted.len(), q)) + 1.0 / sorted.len() as f64;
        let est = d.quantile(q).unwrap().unwrap();
        let err = rank_error(&sorted, est, q);
        prop_assert!(err <= slack, "q={q}: rank error {err} > {slack}");
    }
    Ok(())
}

fn assert_exact_stats(d: &TDigest, xs: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(d.count(), xs.len() as u64);
    let min = xs.iter().copied().reduce(f64::min);
    let max = xs.iter().copied().reduce(f64::max);
    prop_assert_eq!(d.min(), min);
    prop_assert_eq!(d.max(), max);
    if !xs.is_empty() {
        prop_assert_eq!(d.quantile(0.0).unwrap(), min);
        prop_assert_eq!(d.quantile(1.0).unwrap(), max);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn merge_approximates_digest_of_union(a in values(3000), b in values(3000)) {
        let mut merged = digest(&a);
        merged.merge(&digest(&b));
        let union: Vec<f64> = a.iter().chain(&b).copied().collect();
        assert_exact_stats(&merged, &union)?;
        prop_assert_eq!(merged.sum(), union.iter().sum::<f64>());
        if !union.is_empty() {
            assert_rank_close(&merged, &union, 0.02)?;
            let all = TDigest::merge_all(COMPRESSION, [&digest(&a), &digest(&b)]).unwrap();
            assert_exact_stats(&all, &union)?;
            assert_rank_close(&all, &union, 0.02)?;
        }
    }

    #[test]
    fn insertion_order_does_not_matter_beyond_bounds(
        xs in values(5000).prop_filter("non-empty", |v| !v.is_empty()),
        seed in any::<u64>(),
    ) {
        let mut shuffled = xs.clone();
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let mut sorted = xs.clone();
        sorted.sort_by(f64::total_cmp);
        for order in [&xs, &shuffled, &sorted] {
            let d = digest(order);
            assert_exact_stats(&d, &xs)?;
            assert_rank_close(&d, &xs, 0.02)?;
        }
    }

    #[test]
    fn serialization_round_trips(xs in wild_values(3000)) {
        let d = digest(&xs);
        let back = TDigest::from_bytes(&d.to_bytes()).unwrap();
        prop_assert_eq!(back.count(), d.count());
        prop_assert_eq!(back.min(), d.min());
        prop_assert_eq!(back.max(), d.max());
        prop_assert_eq!(back.sum().to_bits(), d.sum().to_bits());
        prop_assert_eq!(back.centroid_count(), d.centroid_count());
        for q in QS {
            let (a, b) = (d.quantile(q).unwrap().unwrap(), back.quantile(q).unwrap().unwrap());
            // f32 means: relative rounding 2^-24 of the values involved.
            let tol = 1e-6 * a.abs().max(b.abs()) + f64::from(f32::MIN_POSITIVE);
            prop_assert!((a - b).abs() <= tol, "q={}: {} vs {}", q, a, b);
        }
    }

    #[test]
    fn min_max_exact_after_any_operations(
        ops in prop::collection::vec((0u8..4, values(400)), 1..12),
    ) {
        let mut d = TDigest::new(COMPRESSION).unwrap();
        let mut all = Vec::new();
        for (op, xs) in ops {
            match op {
                0 => {
                    for &x in &xs {
                        d.try_add(x).unwrap();
                    }
                }
                1 => d.merge(&digest(&xs)),
                2 => {
                    let items: Vec<(f64, u64)> = xs.iter().map(|&x| (x, 2)).collect();
                    if let (Some(lo), Some(hi)) = (
                        xs.iter().copied().reduce(f64::min),
                        xs.iter().copied().reduce(f64::max),
                    ) {
                        d.merge(&TDigest::from_weighted(50.0, &items, lo, hi).unwrap());
                        all.extend_from_slice(&xs);
                    }
                }
                _ => {
                    d.add_slice(&xs).unwrap();
                    d.flush();
                }
            }
            all.extend_from_slice(&xs);
            assert_exact_stats(&d, &all)?;
        }
    }

    #[test]
    fn quantile_is_monotone_in_q(xs in wild_values(3000), mut qs in prop::collection::vec(0.0..=1.0f64, 2..40)) {
        let d = digest(&xs);
        qs.sort_by(f64::total_cmp);
        let vals: Vec<f64> = qs.iter().map(|&q| d.quantile(q).unwrap().unwrap()).collect();
        for w in vals.windows(2) {
            prop_assert!(w[0] <= w[1], "{:?}", vals);
        }
    }

    #[test]
    fn cdf_is_monotone_in_x(xs in values(3000), mut probes in prop::collection::vec(-120_000.0..120_000.0f64, 2..40)) {
        let d = digest(&xs);
        probes.extend(xs.iter().take(20));
        probes.sort_by(f64::total_cmp);
        let cdf: Vec<Option<f64>> = probes.iter().map(|&x| d.cdf(x)).collect();
        if xs.is_empty() {
            prop_assert!(cdf.iter().all(Option::is_none));
        } else {
            let cdf: Vec<f64> = cdf.into_iter().map(Option::unwrap).collect();
            for w in cdf.windows(2) {
                prop_assert!(w[0] <= w[1] && (0.0..=1.0).contains(&w[0]), "{:?}", cdf);
            }
        }
    }

    #[test]
    fn from_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = TDigest::from_bytes(&bytes);
    }

    #[test]
    fn corrupted_encodings_are_rejected_or_consistent(
        xs in values(500).prop_filter("non-empty", |v| !v.is_empty()),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = digest(&xs).to_bytes();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        match TDigest::from_bytes(&bytes) {
            Err(e) => prop_assert!(matches!(e, DigestError::Decode(_))),
            Ok(d) => {
                // Whatever was accepted is a valid digest.
                let mut last = f64::NEG_INFINITY;
                for q in QS {
                    let v = d.quantile(q).unwrap().unwrap();
                    prop_assert!(v >= last && v >= d.min().unwrap() && v <= d.max().unwrap());
                    last = v;
                }
                prop_assert_eq!(TDigest::from_bytes(&d.to_bytes()).unwrap().count(), d.count());
            }
        }
    }
}
