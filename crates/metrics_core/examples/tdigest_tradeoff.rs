//! Prints the compression → centroids / serialized bytes / error table of
//! the t-digest as Markdown (n = 10⁶ per data set, stream-inserted):
//!
//! ```text
//! cargo run --release -p metrics_core --example tdigest_tradeoff [n]
//! ```
//!
//! The measurement code is shared with `tests/tdigest_accuracy.rs`, which
//! asserts the target (≤ 0.5 %, ≤ 4096 bytes) for `DEFAULT_COMPRESSION` at
//! the same n = 10⁶. The `ns/add` column is wall time per inserted value
//! including the (cheap) queries and serialization.

#[path = "../tests/tdigest_accuracy.rs"]
#[allow(dead_code, unused_imports)]
mod accuracy;

use accuracy::{measure, measure_merged, prepare, Measurement, QUANTILES};
use metrics_core::DEFAULT_COMPRESSION;
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("n must be a positive integer"))
        .unwrap_or(1_000_000);
    let prepared = prepare(n);
    println!(
        "n = {n} per set; worst |relative error| over lognormal, bimodal (p90 excluded), \
         pareto, sorted lognormal\n"
    );
    header("δ", "ns/add");
    for compression in [50.0, 100.0, 150.0, 200.0, 300.0, 500.0] {
        let start = Instant::now();
        let m = measure(&prepared, compression);
        let ns = start.elapsed().as_nanos() as f64 / (4 * n) as f64;
        row(&compression.to_string(), &m, &format!("{ns:.0}"));
    }
    println!(
        "\n1440 consecutive per-minute digests at δ_part, combined by one \
         merge_all at δ = {DEFAULT_COMPRESSION}\n"
    );
    header("δ_part", "merge_all ms");
    for part in [50.0, 100.0, 200.0, DEFAULT_COMPRESSION] {
        let m = measure_merged(&prepared, part, 1440, DEFAULT_COMPRESSION);
        // Time one merge separately: `measure_merged` also builds the parts.
        let parts: Vec<_> = prepared.sets[0]
            .1
            .chunks(n.div_ceil(1440))
            .map(|chunk| {
                let mut d = metrics_core::TDigest::new(part).unwrap();
                d.add_slice(chunk).unwrap();
                d.shrink_to_fit();
                d
            })
            .collect();
        // Best of 5: a single run is dominated by first-touch page faults.
        let ms = (0..5)
            .map(|_| {
                let start = Instant::now();
                let merged = metrics_core::TDigest::merge_all(DEFAULT_COMPRESSION, &parts);
                let ms = start.elapsed().as_secs_f64() * 1e3;
                assert_eq!(merged.unwrap().count(), n as u64);
                ms
            })
            .fold(f64::INFINITY, f64::min);
        row(&part.to_string(), &m, &format!("{ms:.2}"));
    }
}

fn header(first: &str, last: &str) {
    let qs: Vec<String> = QUANTILES
        .iter()
        .map(|q| format!("p{}", q * 100.0))
        .collect();
    println!(
        "| {first} | centroids | bytes | {} | worst rank err (pp) | {last} |",
        qs.join(" | ")
    );
    println!(
        "|---:|---:|---:|{}---:|---:|",
        "---:|".repeat(QUANTILES.len())
    );
}

fn row(first: &str, m: &Measurement, last: &str) {
    let errors: Vec<String> = m
        .worst_relative
        .iter()
        .map(|e| format!("{:.3} %", e * 100.0))
        .collect();
    println!(
        "| {first} | {} | {} | {} | {:.4} | {last} |",
        m.centroids,
        m.bytes,
        errors.join(" | "),
        m.worst_rank * 100.0
    );
}
