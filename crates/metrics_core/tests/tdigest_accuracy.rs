//! Accuracy of [`TDigest`] against exact `numpy.percentile(method="linear")`
//! on the four benchmark data sets of `shared/bench/peers.py`
//! (`make_datasets`), regenerated here with a small deterministic PRNG:
//! the same distributions, not numpy's samples, so exact values differ from
//! the Python baseline while the conclusions carry over.
//!
//! `examples/tdigest_tradeoff.rs` includes this file to print the
//! compression/size/error table, so both always measure the same thing.

use metrics_core::{TDigest, DEFAULT_COMPRESSION};

/// Quantiles the benchmark reports.
pub const QUANTILES: [f64; 5] = [0.5, 0.9, 0.95, 0.99, 0.999];
/// Accuracy target: worst |relative error| (p90 of the bimodal set excluded).
pub const MAX_RELATIVE_ERROR: f64 = 0.005;
/// Size target for `to_bytes()`.
pub const MAX_BYTES: usize = 4096;

/// xoshiro256** seeded through splitmix64.
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller; one of the pair is discarded for brevity).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln stays finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// The four data sets of `peers.py::make_datasets`, with `n` values each.
pub fn datasets(n: usize, seed: u64) -> Vec<(&'static str, Vec<f64>)> {
    let mut rng = Rng::new(seed);
    let lognormal: Vec<f64> = (0..n)
        .map(|_| (200f64.ln() + 0.6 * rng.normal()).exp())
        .collect();
    let high = (0.10 * n as f64).round() as usize;
    let mut bimodal: Vec<f64> = (0..n)
        .map(|i| {
            let v = if i < n - high {
                120.0 + 15.0 * rng.normal()
            } else {
                2500.0 + 400.0 * rng.normal()
            };
            v.max(1e-3)
        })
        .collect();
    for i in (1..n).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        bimodal.swap(i, j);
    }
    let pareto: Vec<f64> = (0..n)
        .map(|_| 50.0 * (1.0 - rng.uniform()).powf(-1.0 / 1.5))
        .collect();
    let mut sorted = lognormal.clone();
    sorted.sort_unstable_by(f64::total_cmp);
    vec![
        ("lognormal", lognormal),
        ("bimodal", bimodal),
        ("pareto", pareto),
        ("lognormal-sorted", sorted),
    ]
}

/// numpy's "linear" percentile: h = (n − 1)·q, interpolate floor/ceil.
pub fn exact_linear(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

/// Distance from `q` to the range of ranks `value` occupies in `sorted`
/// (as in peers.py: 0 when `value` lies at quantile `q`).
pub fn rank_error(sorted: &[f64], value: f64, q: f64) -> f64 {
    let n = sorted.len() as f64;
    let lo = sorted.partition_point(|&x| x < value) as f64 / n;
    let hi = sorted.partition_point(|&x| x <= value) as f64 / n;
    if (lo..=hi).contains(&q) {
        0.0
    } else {
        (lo - q).abs().min((hi - q).abs())
    }
}

/// Worst errors of one compression setting over all data sets.
#[derive(Debug, Default)]
pub struct Measurement {
    /// Worst |relative error| per entry of [`QUANTILES`].
    pub worst_relative: [f64; 5],
    /// Worst |rank error| (a fraction, not percentage points).
    pub worst_rank: f64,
    /// Largest centroid count over the data sets.
    pub centroids: usize,
    /// Largest `to_bytes().len()` over the data sets.
    pub bytes: usize,
}

/// Data sets prepared once: values in insertion order plus a sorted copy.
pub struct Prepared {
    pub sets: Vec<(&'static str, Vec<f64>, Vec<f64>)>,
}

pub fn prepare(n: usize) -> Prepared {
    let sets = datasets(n, 20_240_607)
        .into_iter()
        .map(|(name, values)| {
            let mut sorted = values.clone();
            sorted.sort_unstable_by(f64::total_cmp);
            (name, values, sorted)
        })
        .collect();
    Prepared { sets }
}

/// Streams every set into a digest one value at a time and compares.
pub fn measure(prepared: &Prepared, compression: f64) -> Measurement {
    evaluate(prepared, |values| {
        let mut digest = TDigest::new(compression).unwrap();
        for &v in values {
            digest.try_add(v).unwrap();
        }
        digest.flush();
        digest
    })
}

/// The 24 h window path: each set is split into `parts` consecutive
/// digests at `part_compression` (one per minute), which are combined with
/// one `merge_all` at `compression`.
pub fn measure_merged(
    prepared: &Prepared,
    part_compression: f64,
    parts: usize,
    compression: f64,
) -> Measurement {
    evaluate(prepared, |values| {
        let digests: Vec<TDigest> = values
            .chunks(values.len().div_ceil(parts))
            .map(|chunk| {
                let mut d = TDigest::new(part_compression).unwrap();
                d.add_slice(chunk).unwrap();
                d.shrink_to_fit();
                d
            })
            .collect();
        TDigest::merge_all(compression, &digests).unwrap()
    })
}

/// Builds a digest of every set with `build` and compares it to the data.
pub fn evaluate(prepared: &Prepared, build: impl Fn(&[f64]) -> TDigest) -> Measurement {
    let mut m = Measurement::default();
    for (name, values, sorted) in &prepared.sets {
        let digest = build(values);
        assert_eq!(digest.count(), values.len() as u64);
        assert_eq!(digest.min(), Some(sorted[0]));
        assert_eq!(digest.max(), Some(sorted[sorted.len() - 1]));
        m.centroids = m.centroids.max(digest.centroid_count());
        m.bytes = m.bytes.max(digest.to_bytes().len());
        for (i, &q) in QUANTILES.iter().enumerate() {
            let est = digest.quantile(q).unwrap().unwrap();
            let exact = exact_linear(sorted, q);
            m.worst_rank = m.worst_rank.max(rank_error(sorted, est, q));
            // The bimodal p90 falls between the modes: value error there
            // only measures which interpolation convention is used.
            if *name == "bimodal" && q == 0.9 {
                continue;
            }
            let rel = ((est - exact) / exact).abs();
            m.worst_relative[i] = m.worst_relative[i].max(rel);
        }
    }
    m
}

fn assert_meets_target(what: &str, m: &Measurement, max_rank_error: f64) {
    println!("{what}: {m:?}");
    for (q, err) in QUANTILES.iter().zip(m.worst_relative) {
        assert!(
            err <= MAX_RELATIVE_ERROR,
            "{what}, p{}: worst relative error {:.3} % exceeds {:.1} %",
            q * 100.0,
            err * 100.0,
            MAX_RELATIVE_ERROR * 100.0
        );
    }
    assert!(m.bytes <= MAX_BYTES, "{what}: {} serialized bytes", m.bytes);
    assert!(
        m.worst_rank <= max_rank_error,
        "{what}: rank error {} > {max_rank_error}",
        m.worst_rank
    );
}

/// The hard requirement: n = 10⁶ per set, stream-inserted (≈ 3 s in a
/// debug build).
#[test]
fn default_compression_meets_target() {
    let m = measure(&prepare(1_000_000), DEFAULT_COMPRESSION);
    // Measured 0.015 pp; the design notes ask for ≤ 0.1 pp.
    assert_meets_target("stream, n = 1e6", &m, 1e-3);
}

/// 1440 per-minute digests at δ = 100 merged once at the default δ. One
/// merge pass makes fuller centroids than streaming (252 vs 361), so the
/// rank error at the median is larger: measured 0.14 pp.
#[test]
fn merged_minute_digests_meet_target() {
    let m = measure_merged(&prepare(1_000_000), 100.0, 1440, DEFAULT_COMPRESSION);
    assert_meets_target("merge_all of 1440 digests, n = 1e6", &m, 2e-3);
}

#[test]
fn exact_linear_matches_numpy_definition() {
    let s = [1.0, 2.0, 4.0, 8.0];
    assert_eq!(exact_linear(&s, 0.0), 1.0);
    assert_eq!(exact_linear(&s, 1.0), 8.0);
    assert_eq!(exact_linear(&s, 0.5), 3.0);
    assert!((exact_linear(&s, 0.9) - 6.8).abs() < 1e-12);
    assert_eq!(rank_error(&s, 2.0, 0.25), 0.0);
    assert_eq!(rank_error(&s, 4.0, 0.25), 0.25);
}
