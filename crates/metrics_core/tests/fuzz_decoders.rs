//! Hostile bytes into the two decoders that read data from outside the
//! process: [`TDigest::from_bytes`] (serialized digests) and
//! [`Service::restore_buckets`] (bucket blobs and scalars read back from
//! SQLite, checked by `sealed::check_blob`).
//!
//! Properties, for every input:
//!
//! * no panic (a panic fails the case and proptest shrinks it), including
//!   integer overflow in debug builds, and not in the reads that follow a
//!   restore either (stats, series, compare, totals, storing again);
//! * no hang: every case must finish well within [`CASE_BUDGET`];
//! * bounded allocation: a counting allocator watches the decoding thread,
//!   and no single allocation may exceed a small multiple of the input
//!   (a length field claiming 2^60 entries must be refused, not reserved);
//! * what is accepted is consistent: a decoded digest answers queries
//!   inside `[min, max]` and re-encodes to itself; restored buckets store
//!   again and restore again without a rejection;
//! * valid inputs round-trip exactly.
//!
//! Case counts stay small for `make test`; a long run is
//! `PROPTEST_CASES=200000 cargo test --release -p metrics_core --test fuzz_decoders`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use metrics_core::service::StoredBucket;
use metrics_core::{
    Clock, DigestError, Gauge, Metric, Monitor, MonitorConfig, RetentionTier, TDigest,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;

// ---- a counting allocator --------------------------------------------------

struct Watching;

thread_local! {
    static WATCH: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged; the
// bookkeeping only touches const-initialised thread-locals (no allocation).
unsafe impl GlobalAlloc for Watching {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's layout contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's layout contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` was allocated by `System` with `layout`; the caller
        // upholds realloc's contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn note(size: usize) {
    // `try_with`: the thread-locals may already be gone while a thread exits.
    let _ = WATCH.try_with(|w| {
        if w.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

#[global_allocator]
static GLOBAL: Watching = Watching;

/// Runs `f` and returns its result with the largest single allocation it
/// made on this thread.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    WATCH.with(|w| w.set(true));
    let out = f();
    WATCH.with(|w| w.set(false));
    (out, LARGEST.with(|l| l.get()))
}

/// Inputs that failed once (proptest seeds), replayed before new cases.
const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fuzz_corpus/fuzz_decoders.proptest-regressions"
);

/// Longest one case may take, even in a debug build on a slow machine.
const CASE_BUDGET: Duration = Duration::from_secs(5);

fn cases(default: u32) -> ProptestConfig {
    // PROPTEST_CASES (the environment) overrides the default for long runs.
    let from_env = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok());
    ProptestConfig {
        cases: from_env.unwrap_or(default),
        max_shrink_iters: 10_000,
        // Failures are kept with the Python fuzz corpus and replayed first.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(CORPUS))),
        ..ProptestConfig::default()
    }
}

// ---- mutations of valid encodings ---------------------------------------------

/// Values a length or count field can be made to claim.
const HUGE: [u64; 10] = [
    1 << 60,
    u64::MAX,
    1 << 63,
    (1 << 63) + 1,
    1 << 32,
    u32::MAX as u64,
    (u32::MAX as u64) + 1,
    1 << 53,
    0xFFFF,
    0x1_0000,
];

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, u8),
    /// Replaces up to `.1` bytes at the index by the LEB128 of a huge value.
    HugeVarint(Index, u8, u64),
    /// Ten or more continuation bytes: a varint longer than 64 bits.
    OverlongVarint(Index, u8),
    /// Repeats a slice (a section or centroid twice).
    Duplicate(Index, u8),
    /// Replaces 4 or 8 bytes by a special float (NaN, inf, -0, max, tiny).
    SpecialFloat(Index, bool, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<Index>(), 1u8..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<Index>(), 0u8..4, prop::sample::select(HUGE.to_vec()))
            .prop_map(|(i, k, v)| Mutation::HugeVarint(i, k, v)),
        (any::<Index>(), 10u8..14).prop_map(|(i, n)| Mutation::OverlongVarint(i, n)),
        (any::<Index>(), 1u8..24).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        (any::<Index>(), any::<bool>(), 0u8..8)
            .prop_map(|(i, w, k)| Mutation::SpecialFloat(i, w, k)),
    ]
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, v);
    out
}

const SPECIAL_F64: [f64; 8] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    -0.0,
    f64::MAX,
    f64::MIN_POSITIVE,
    5e-324,
    -1.0,
];

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    let at = |i: &Index| if len == 0 { 0 } else { i.index(len) };
    let splice = |bytes: &mut Vec<u8>, i: usize, remove: usize, with: &[u8]| {
        let end = (i + remove).min(bytes.len());
        bytes.splice(i..end, with.iter().copied());
    };
    match m {
        Mutation::Truncate(i) => bytes.truncate(at(i)),
        Mutation::FlipBit(i, b) if len > 0 => bytes[at(i)] ^= 1 << b,
        Mutation::SetByte(i, v) if len > 0 => bytes[at(i)] = *v,
        Mutation::Insert(i, v) => splice(bytes, at(i), 0, v),
        Mutation::Delete(i, n) => splice(bytes, at(i), *n as usize, &[]),
        Mutation::HugeVarint(i, k, v) => splice(bytes, at(i), *k as usize, &varint(*v)),
        Mutation::OverlongVarint(i, n) => {
            let mut v = vec![0xFF; *n as usize];
            v.push(0x01);
            splice(bytes, at(i), 1, &v)
        }
        Mutation::Duplicate(i, n) if len > 0 => {
            let i = at(i);
            let part: Vec<u8> = bytes[i..(i + *n as usize).min(len)].to_vec();
            splice(bytes, i, 0, &part)
        }
        Mutation::SpecialFloat(i, wide, k) => {
            let f = SPECIAL_F64[*k as usize % SPECIAL_F64.len()];
            if *wide {
                splice(bytes, at(i), 8, &f.to_le_bytes())
            } else {
                splice(bytes, at(i), 4, &(f as f32).to_le_bytes())
            }
        }
        _ => {}
    }
}

// ---- TDigest::from_bytes ---------------------------------------------------------

const QS: [f64; 9] = [0.0, 0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];

/// Decodes `bytes` on this thread, checking time and allocation.
fn decode(bytes: &[u8]) -> Result<Result<TDigest, DigestError>, TestCaseError> {
    let t0 = Instant::now();
    let (r, largest) = largest_allocation(|| TDigest::from_bytes(bytes));
    prop_assert!(
        t0.elapsed() < CASE_BUDGET,
        "from_bytes took {:?}",
        t0.elapsed()
    );
    // Centroids are 16 bytes and take at least 5 input bytes each; an error
    // message may spell out a float in full (a few hundred digits).
    let bound = 4 * bytes.len() + 4096;
    prop_assert!(
        largest <= bound,
        "from_bytes of {} bytes allocated {largest} bytes at once",
        bytes.len()
    );
    if let Err(e) = &r {
        prop_assert!(
            matches!(e, DigestError::Decode(_)),
            "not a decode error: {e:?}"
        );
    }
    Ok(r)
}

/// What any accepted digest must satisfy.
fn check_accepted(d: &TDigest) -> Result<(), TestCaseError> {
    let weights: u64 = d.centroids().map(|c| c.1).sum();
    prop_assert_eq!(weights, d.count());
    // A running sum of finite values may overflow to ±inf, never NaN.
    prop_assert!(!d.sum().is_nan(), "a decoded digest has sum {}", d.sum());
    let means: Vec<f64> = d.centroids().map(|c| c.0).collect();
    prop_assert!(
        means.windows(2).all(|w| w[0] <= w[1]),
        "unsorted means {means:?}"
    );
    if d.count() == 0 {
        prop_assert_eq!(d.quantile(0.5).unwrap(), None);
        prop_assert_eq!(d.cdf(1.0), None);
    } else {
        let (lo, hi) = (d.min().unwrap(), d.max().unwrap());
        prop_assert!(lo.is_finite() && hi.is_finite() && lo <= hi);
        prop_assert!(
            means.iter().all(|m| (lo..=hi).contains(m)),
            "means outside [{lo}, {hi}]"
        );
        prop_assert!(!d.mean().unwrap().is_nan());
        let mut last = f64::NEG_INFINITY;
        for q in QS {
            let v = d.quantile(q).unwrap().unwrap();
            prop_assert!(
                v >= last && (lo..=hi).contains(&v),
                "q={q}: {v} (last {last}, [{lo}, {hi}])"
            );
            last = v;
        }
        prop_assert_eq!(d.quantile(0.0).unwrap(), Some(lo));
        prop_assert_eq!(d.quantile(1.0).unwrap(), Some(hi));
        for x in [lo, hi, (lo + hi) / 2.0, f64::MAX, -f64::MAX] {
            let c = d.cdf(x).unwrap();
            prop_assert!((0.0..=1.0).contains(&c), "cdf({x}) = {c}");
        }
    }
    // Re-encoding gives a digest that decodes to the same thing, and
    // merging it is harmless.
    let again = TDigest::from_bytes(&d.to_bytes());
    prop_assert!(again.is_ok(), "re-encoding does not decode: {again:?}");
    let again = again.unwrap();
    prop_assert_eq!(again.to_bytes(), d.to_bytes());
    let mut m = TDigest::new(100.0).unwrap();
    m.add_slice(&[1.0, 2.0, 3.0]).unwrap();
    m.merge(d);
    if let Some(want) = d.count().checked_add(3) {
        prop_assert_eq!(m.count(), want);
    }
    let merged = TDigest::merge_all(d.compression(), [d, &again]);
    if let Ok(merged) = merged {
        prop_assert_eq!(
            merged.count(),
            d.count().checked_mul(2).unwrap_or(merged.count())
        );
    }
    Ok(())
}

fn values() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        prop::collection::vec(0.0f64..1e4, 0..600),
        prop::collection::vec(
            prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL,
            1..80
        ),
        prop::collection::vec(
            prop::sample::select(vec![0.0, -0.0, 1.0, 1e300, -1e300, 5e-324, 3.5]),
            1..40
        ),
    ]
}

fn encoded_digest() -> impl Strategy<Value = (Vec<f64>, f64)> {
    (
        values(),
        prop::sample::select(vec![10.0, 37.5, 100.0, 500.0, 10_000.0]),
    )
}

fn digest_of(xs: &[f64], compression: f64) -> TDigest {
    let mut d = TDigest::new(compression).unwrap();
    d.add_slice(xs).unwrap();
    d
}

/// A header (as `to_bytes` writes it) claiming `count` values in `n`
/// centroids, followed by `body`.
fn header(wide: bool, count: u64, sum: f64, min: f64, max: f64, n: u64, body: &[u8]) -> Vec<u8> {
    let mut b = b"TD\x01".to_vec();
    b.push(wide as u8);
    b.extend_from_slice(&100.0f64.to_le_bytes());
    put_varint(&mut b, count);
    for v in [sum, min, max] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    put_varint(&mut b, n);
    b.extend_from_slice(body);
    b
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn digest_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(d) = decode(&bytes)? {
            check_accepted(&d)?;
        }
    }

    /// Bytes that start like a digest, so the decoder gets past the magic
    /// and version and the fields behind them are what is random.
    #[test]
    fn digest_arbitrary_bytes_after_a_valid_prefix(
        wide in any::<bool>(),
        rest in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = b"TD\x01".to_vec();
        bytes.push(wide as u8);
        bytes.extend_from_slice(&100.0f64.to_le_bytes());
        bytes.extend_from_slice(&rest);
        if let Ok(d) = decode(&bytes)? {
            check_accepted(&d)?;
        }
    }

    #[test]
    fn digest_mutated_encodings(
        (xs, compression) in encoded_digest(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut bytes = digest_of(&xs, compression).to_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if let Ok(d) = decode(&bytes)? {
            check_accepted(&d)?;
        }
    }

    /// Length and count fields claiming up to 2^64 entries over a short
    /// body: refused without reserving anything near that.
    #[test]
    fn digest_huge_length_fields(
        wide in any::<bool>(),
        count in prop::sample::select(HUGE.to_vec()),
        n in prop::sample::select(HUGE.to_vec()),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let bytes = header(wide, count, 1.0, 0.0, 2.0, n, &body);
        prop_assert!(decode(&bytes)?.is_err());
    }

    #[test]
    fn digest_valid_encodings_round_trip((xs, compression) in encoded_digest()) {
        let d = digest_of(&xs, compression);
        let bytes = d.to_bytes();
        let back = decode(&bytes)?;
        prop_assert!(back.is_ok(), "a valid encoding was refused: {back:?}");
        let back = back.unwrap();
        prop_assert_eq!(back.to_bytes(), bytes);
        prop_assert_eq!((back.count(), back.min(), back.max()), (d.count(), d.min(), d.max()));
        prop_assert_eq!(back.sum().to_bits(), d.sum().to_bits());
        prop_assert_eq!(back.compression(), d.compression());
        let (a, b): (Vec<_>, Vec<_>) = (d.centroids().collect(), back.centroids().collect());
        prop_assert_eq!(a.len(), b.len());
        for ((m0, w0), (m1, w1)) in a.iter().zip(&b) {
            prop_assert_eq!(w0, w1);
            // Means may round to f32 (relative error <= 6e-8).
            prop_assert!(m0 == m1 || ((m0 - m1) / m0).abs() <= 6e-8, "{m0} vs {m1}");
        }
        check_accepted(&back)?;
    }
}

// ---- Service::restore_buckets --------------------------------------------------

/// A Tuesday, 10:00:00 UTC.
const T0: f64 = 1_700_042_400.0;
const SERVICE: &str = "svc";

fn monitor_at(start: f64) -> Arc<Monitor> {
    let mut c = MonitorConfig::default();
    c.tiers.push(RetentionTier {
        resolution_s: 3600,
        slots: 720,
    });
    Monitor::new(c, Clock::manual(start)).unwrap()
}

/// Rows and error names written by a monitor that saw every kind of data:
/// latencies, 34 error types (two past the table, so "other"), processing
/// times, queue depths, every gauge, health with and without latency.
struct Source {
    minutes: Vec<StoredBucket>,
    hours: Vec<StoredBucket>,
    names: Vec<String>,
    end_epoch_s: f64,
}

fn source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(|| {
        let m = monitor_at(T0);
        let s = m.service(SERVICE).unwrap();
        for sec in 0..2 * 3600u64 {
            if sec % 7 == 0 {
                let err = (sec % 21 == 0).then(|| format!("e{}", (sec / 21) % 34));
                s.record(0.25 + (sec % 997) as f64 * 3.1, err.as_deref())
                    .unwrap();
            }
            if sec % 60 == 0 {
                s.record_processing(1500.0 + sec as f64).unwrap();
                s.set_queue(sec % 3, sec % 5).unwrap();
                let readings: Vec<(Gauge, f64)> = Gauge::ALL
                    .iter()
                    .map(|&g| (g, g.range().0.max(0.0) + (sec % 50) as f64))
                    .collect();
                s.set_resources(&readings).unwrap();
            }
            if sec % 10 == 0 {
                s.health(sec % 900 > 30, (sec % 20 == 0).then_some(12.5))
                    .unwrap();
            }
            m.advance(1.0).unwrap();
        }
        let names = s.error_type_names();
        assert_eq!(names.len(), 32);
        Source {
            minutes: s.stored_buckets(60, 0, true, None).unwrap(),
            hours: s.stored_buckets(3600, 0, true, None).unwrap(),
            names,
            end_epoch_s: m.clock().now_epoch_s(),
        }
    })
}

/// Every read a restored service answers, plus storing again: none may
/// panic, and what was accepted once must be accepted again.
fn exercise(m: &Monitor) -> Result<(), TestCaseError> {
    let max_window = 720 * 3600;
    for w in [1, 60, 300, 3600, 6 * 3600, 86_400, 7 * 86_400, max_window] {
        let st = m.stats(SERVICE, w).unwrap();
        for p in [st.p50_ms, st.p90_ms, st.p95_ms, st.p99_ms]
            .into_iter()
            .flatten()
        {
            prop_assert!(p.is_finite(), "percentile {p}");
        }
        for metric in Metric::names() {
            let metric = Metric::parse(metric).unwrap();
            let _ = metric.of(&st);
        }
    }
    m.snapshot(86_400);
    for metric in Metric::names() {
        m.compare(Metric::parse(metric).unwrap(), 3600);
    }
    let svc = m.get(SERVICE).unwrap();
    for (w, points) in [(3600, None), (86_400, Some(7)), (max_window, Some(50))] {
        svc.series_stats(w, points);
    }
    for res in [60, 3600] {
        svc.series_stats_at(86_400, Some(24), Some(res)).unwrap();
    }
    svc.totals();
    // Stored again and restored into a fresh monitor: nothing is refused.
    let names = svc.error_type_names();
    let later = monitor_at(m.clock().now_epoch_s() + 5.0);
    let again = later.service(SERVICE).unwrap();
    for res in [60, 3600] {
        let rows = svc.stored_buckets(res, 0, true, None).unwrap();
        let r = again.restore_buckets(res, rows, &names).unwrap();
        prop_assert_eq!(
            r.rejected,
            0,
            "restored buckets of {} s did not store again",
            res
        );
    }
    later.stats(SERVICE, 86_400).unwrap();
    Ok(())
}

/// Restores `rows` into a fresh monitor a little after the source ended,
/// checking time and allocation, then exercises it.
fn restore_and_exercise(
    resolution_s: u32,
    rows: Vec<StoredBucket>,
    names: &[String],
) -> Result<(), TestCaseError> {
    let input_bytes: usize = rows
        .iter()
        .map(|r| 64 + r.blob.as_ref().map_or(0, Vec::len))
        .sum::<usize>()
        + names.iter().map(String::len).sum::<usize>();
    let m = monitor_at(source().end_epoch_s + 30.0);
    let svc = m.service(SERVICE).unwrap();
    let t0 = Instant::now();
    let offered = rows.len();
    let (report, largest) = largest_allocation(|| svc.restore_buckets(resolution_s, rows, names));
    let report = report.unwrap();
    prop_assert_eq!(
        report.restored + report.rejected + report.out_of_window,
        offered
    );
    // The tier's ring grows by doubling up to its 1440 slots; blobs are
    // copied (and rewritten for other error ids) one at a time.
    let bound = (256 << 10).max(8 * input_bytes);
    prop_assert!(
        largest <= bound,
        "restore of {input_bytes} bytes allocated {largest} bytes at once"
    );
    exercise(&m)?;
    prop_assert!(
        t0.elapsed() < CASE_BUDGET,
        "restore and reads took {:?}",
        t0.elapsed()
    );
    Ok(())
}

/// One stored row and its resolution, from the source.
fn stored_row() -> impl Strategy<Value = (u32, StoredBucket)> {
    let src = source();
    let (nm, nh) = (src.minutes.len(), src.hours.len());
    prop_oneof![
        4 => (0..nm).prop_map(move |i| (60u32, source().minutes[i].clone())),
        1 => (0..nh).prop_map(move |i| (3600u32, source().hours[i].clone())),
    ]
}

/// Error-type names as a restore may get them: the writer's own, a prefix,
/// another order, hostile strings, or more than the table holds.
fn error_names() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        4 => Just(source().names.clone()),
        1 => (0usize..32).prop_map(|n| source().names[..n].to_vec()),
        1 => Just(source().names.iter().rev().cloned().collect()),
        1 => prop::collection::vec(any::<String>(), 0..40),
        1 => prop::collection::vec(
            prop::sample::select(vec![
                String::new(), "other".into(), "e1".into(), "\u{0}".into(), "a\nb".into(),
                "x".repeat(10_000), "é\u{202e}🙂".into(),
            ]),
            0..40,
        ),
    ]
}

/// Scalars a stored row can carry instead of its own.
fn scalar_override() -> impl Strategy<Value = Option<(u64, u64, f64, f64, f64)>> {
    let u = prop_oneof![
        any::<u64>(),
        prop::sample::select(vec![0u64, 1, 2, 100, u32::MAX as u64, u64::MAX, 1 << 63]),
    ];
    let f = prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![
            0.0,
            -0.0,
            -1.0,
            1.0,
            1e9,
            1e300,
            f64::MAX,
            f64::NAN,
            f64::INFINITY
        ]),
    ];
    prop::option::weighted(0.3, (u.clone(), u, f.clone(), f.clone(), f))
}

/// Start times: the row's own, another bucket's, off-grid, far past/future.
fn start_override() -> impl Strategy<Value = Option<i64>> {
    prop::option::weighted(
        0.2,
        prop_oneof![
            any::<i64>(),
            prop::sample::select(vec![
                0i64,
                -1,
                i64::MIN,
                i64::MAX,
                T0 as i64 + 1,
                T0 as i64 + 59
            ]),
        ],
    )
}

fn mutate_row(
    mut row: StoredBucket,
    mutations: &[Mutation],
    scalars: Option<(u64, u64, f64, f64, f64)>,
    start: Option<i64>,
) -> StoredBucket {
    if let Some(blob) = row.blob.as_mut() {
        for m in mutations {
            apply(blob, m);
        }
    }
    if let Some((count, errors, sum_ms, min_ms, max_ms)) = scalars {
        (row.count, row.errors, row.sum_ms, row.min_ms, row.max_ms) =
            (count, errors, sum_ms, min_ms, max_ms);
    }
    if let Some(s) = start {
        row.start_epoch_s = s;
    }
    row
}

// ---- structured blobs: well-formed enough to pass check_blob ---------------------

/// Integers a section may carry: small, around u32/u64 limits.
fn wild_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0u64..10,
        1 => any::<u64>(),
        2 => prop::sample::select(vec![
            u32::MAX as u64, u32::MAX as u64 + 1, u64::MAX, u64::MAX / 2 + 1, 1 << 53, 1 << 63,
        ]),
    ]
}

fn wild_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -10.0f64..1e4,
        1 => prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO,
        1 => prop::sample::select(vec![f64::MAX, -f64::MAX, 1e300, -1e300, 5e-324, -0.0, 0.0]),
    ]
}

fn wild_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => -10.0f32..1e4,
        1 => prop::num::f32::NORMAL | prop::num::f32::ZERO,
        1 => prop::sample::select(vec![f32::MAX, -f32::MAX, f32::MIN_POSITIVE, -0.0f32]),
    ]
}

/// (Δcode, weight) pairs: codes stay within u16, weights may be huge.
fn digest_section() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec(
        (0u64..9000, prop_oneof![3 => 1u64..50, 1 => wild_u64()]),
        0..12,
    )
}

/// (count, sum, min, max, digest) of a processing section.
type ProcessingSection = (u64, f64, f64, f64, Vec<(u64, u64)>);
/// (gauge tag, readings, sum, min, max) of one gauge.
type GaugeSection = (u8, u64, f64, f32, f32);

#[derive(Debug, Clone)]
struct Sections {
    latency: Vec<(u64, u64)>,
    error_types: Option<Vec<(u8, u64)>>,
    processing: Option<ProcessingSection>,
    queue: Option<(u64, u64, u64)>,
    gauges: Option<Vec<GaugeSection>>,
    health: Option<(u64, u64, u64, f64)>,
}

fn sections() -> impl Strategy<Value = Sections> {
    (
        digest_section(),
        prop::option::of(prop::collection::vec((0u8..33, wild_u64()), 0..6)),
        prop::option::of((
            wild_u64(),
            wild_f64(),
            wild_f64(),
            wild_f64(),
            digest_section(),
        )),
        prop::option::of((wild_u64(), wild_u64(), wild_u64())),
        prop::option::of(prop::collection::vec(
            (0u8..8, wild_u64(), wild_f64(), wild_f32(), wild_f32()),
            0..9,
        )),
        prop::option::of((
            prop_oneof![0u64..100, Just(u32::MAX as u64)],
            prop_oneof![0u64..100, Just(u32::MAX as u64)],
            prop_oneof![0u64..100, Just(u32::MAX as u64)],
            wild_f64(),
        )),
    )
        .prop_map(
            |(latency, error_types, processing, queue, gauges, health)| Sections {
                latency,
                error_types,
                processing,
                queue,
                gauges,
                health,
            },
        )
}

fn encode_digest(pairs: &[(u64, u64)], out: &mut Vec<u8>) {
    let mut body = Vec::new();
    for &(dc, w) in pairs {
        put_varint(&mut body, dc);
        put_varint(&mut body, w);
    }
    put_varint(out, body.len() as u64);
    out.extend_from_slice(&body);
}

/// The blob in the `sealed` layout, and the latency weight it holds.
fn encode_sections(s: &Sections) -> (Vec<u8>, u64) {
    let mut out = Vec::new();
    encode_digest(&s.latency, &mut out);
    let flags = [
        (s.error_types.is_some(), 1u8),
        (s.processing.is_some(), 2),
        (s.queue.is_some(), 4),
        (s.gauges.is_some(), 8),
        (s.health.is_some(), 16),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0u8, |f, (_, b)| f | b);
    out.push(flags);
    if let Some(types) = &s.error_types {
        put_varint(&mut out, types.len() as u64);
        for &(id, n) in types {
            out.push(id);
            put_varint(&mut out, n);
        }
    }
    if let Some((count, sum, min, max, digest)) = &s.processing {
        put_varint(&mut out, *count);
        for v in [sum, min, max] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        encode_digest(digest, &mut out);
    }
    if let Some((n, depth_max, depth_sum)) = s.queue {
        for v in [n, depth_max, depth_sum] {
            put_varint(&mut out, v);
        }
    }
    if let Some(gauges) = &s.gauges {
        put_varint(&mut out, gauges.len() as u64);
        for &(tag, n, sum, min, max) in gauges {
            out.push(tag);
            put_varint(&mut out, n);
            out.extend_from_slice(&sum.to_le_bytes());
            out.extend_from_slice(&min.to_le_bytes());
            out.extend_from_slice(&max.to_le_bytes());
        }
    }
    if let Some((up, down, latency_n, latency_sum)) = s.health {
        for v in [up, down, latency_n] {
            put_varint(&mut out, v);
        }
        if latency_n > 0 {
            out.extend_from_slice(&latency_sum.to_le_bytes());
        }
    }
    let weight = s
        .latency
        .iter()
        .try_fold(0u64, |t, &(_, w)| t.checked_add(w))
        .unwrap_or(u64::MAX);
    (out, weight)
}

/// Rows of structured blobs at bucket starts near the source's end (some
/// sharing a start, so reloads merge), with scalars that pass the plausibility
/// check most of the time.
fn structured_rows() -> impl Strategy<Value = Vec<StoredBucket>> {
    let row = (
        sections(),
        0i64..6,
        prop_oneof![3 => 0u64..3, 1 => wild_u64()],
        (0.0f64..1e6, 0.0f64..1e3, 0.0f64..1e6),
        any::<bool>(),
    )
        .prop_map(|(s, slot, errors, (sum_ms, min_ms, span), plain)| {
            let (blob, count) = encode_sections(&s);
            let start = (source().end_epoch_s as i64 / 60 - 1 - slot) * 60;
            StoredBucket {
                start_epoch_s: start,
                count,
                errors: errors.min(count),
                sum_ms,
                min_ms,
                max_ms: min_ms + span,
                // Now and then the row the writer would give for no latency data.
                blob: if plain && count == 0 {
                    None
                } else {
                    Some(blob)
                },
                partial: false,
                error_counts: Vec::new(),
            }
        });
    prop::collection::vec(row, 1..7)
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn restore_mutated_rows(
        picks in prop::collection::vec(
            (stored_row(), prop::collection::vec(mutation(), 0..4), scalar_override(), start_override()),
            1..6,
        ),
        names in error_names(),
    ) {
        // Rows of one resolution only (the first pick's), as storage gives them.
        let res = (picks[0].0).0;
        let rows: Vec<StoredBucket> = picks
            .into_iter()
            .filter(|((r, _), _, _, _)| *r == res)
            .map(|((_, row), muts, scalars, start)| mutate_row(row, &muts, scalars, start))
            .collect();
        restore_and_exercise(res, rows, &names)?;
    }

    #[test]
    fn restore_arbitrary_blobs(
        blobs in prop::collection::vec(
            (prop::option::weighted(0.9, prop::collection::vec(any::<u8>(), 0..256)), scalar_override()),
            1..6,
        ),
        names in error_names(),
    ) {
        let template = &source().minutes[source().minutes.len() / 2];
        let rows = blobs
            .into_iter()
            .map(|(blob, scalars)| {
                let mut row = template.clone();
                row.blob = blob;
                mutate_row(row, &[], scalars, None)
            })
            .collect();
        restore_and_exercise(60, rows, &names)?;
    }

    /// Blobs built section by section, so they pass `check_blob` and the
    /// values inside (huge counts, extreme floats, u32 limits, gauges with
    /// no readings) reach the merges and reads behind it.
    #[test]
    fn restore_structured_blobs(rows in structured_rows(), names in error_names()) {
        restore_and_exercise(60, rows, &names)?;
    }

    /// Huge length fields inside a blob: refused, never reserved.
    #[test]
    fn restore_huge_length_fields(
        at in any::<Index>(),
        value in prop::sample::select(HUGE.to_vec()),
        remove in 0u8..3,
    ) {
        let (_, mut row) = (60, source().minutes[3].clone());
        apply(row.blob.as_mut().unwrap(), &Mutation::HugeVarint(at, remove, value));
        restore_and_exercise(60, vec![row], &source().names)?;
    }
}

/// The writer's own rows come back exactly: nothing refused, and the
/// reloaded monitor answers with the writer's counts.
#[test]
fn restore_valid_rows_round_trip() {
    let src = source();
    let m = monitor_at(src.end_epoch_s + 30.0);
    let svc = m.service(SERVICE).unwrap();
    for (res, rows) in [(60, &src.minutes), (3600, &src.hours)] {
        let r = svc.restore_buckets(res, rows.clone(), &src.names).unwrap();
        assert_eq!((r.rejected, r.out_of_window), (0, 0), "resolution {res}");
    }
    let want: u64 = src.minutes.iter().map(|r| r.count).sum();
    let errors: u64 = src.minutes.iter().map(|r| r.errors).sum();
    let st = m.stats(SERVICE, 86_400).unwrap();
    assert_eq!((st.count, st.errors), (want, errors));
    assert_eq!(st.error_counts.len(), 33, "32 named types and other");
    // Stored again, byte for byte the same rows.
    let again = svc.stored_buckets(60, 0, false, None).unwrap();
    assert_eq!(again.len(), src.minutes.len());
    for (a, b) in again.iter().zip(&src.minutes) {
        assert_eq!(
            (a.start_epoch_s, a.count, a.errors),
            (b.start_epoch_s, b.count, b.errors)
        );
        assert_eq!(a.blob, b.blob);
    }
    exercise(&m).unwrap();
}

// ---- what the fuzzing found, kept as plain tests ------------------------------------

fn one_row(sections: &Sections, start_epoch_s: i64) -> StoredBucket {
    let (blob, count) = encode_sections(sections);
    StoredBucket {
        start_epoch_s,
        count,
        errors: 0,
        sum_ms: count as f64,
        min_ms: 0.0,
        max_ms: 2.0,
        blob: Some(blob),
        partial: false,
        error_counts: Vec::new(),
    }
}

fn empty_sections() -> Sections {
    Sections {
        latency: vec![(10_240, 1)],
        error_types: None,
        processing: None,
        queue: None,
        gauges: None,
        health: None,
    }
}

fn minute_start() -> i64 {
    (source().end_epoch_s as i64 / 60 - 1) * 60
}

/// `epoch_to_second` subtracted the clock base from a stored time without a
/// check: i64::MIN overflowed (a panic in a debug build).
#[test]
fn found_a_start_time_of_i64_min_is_out_of_window() {
    let m = monitor_at(source().end_epoch_s);
    let svc = m.service(SERVICE).unwrap();
    let r = svc
        .restore_buckets(60, vec![one_row(&empty_sections(), i64::MIN)], &[])
        .unwrap();
    assert_eq!((r.restored, r.out_of_window), (0, 1));
}

/// A bucket with u32::MAX health-ups: `up + down` overflowed u32 when the
/// window's health_checks were counted (debug: panic; release: wrapped to
/// a wrong count).  Merges of reloaded counts now saturate.
#[test]
fn found_health_counts_at_u32_max_do_not_overflow() {
    let m = monitor_at(source().end_epoch_s);
    let svc = m.service(SERVICE).unwrap();
    let mut s = empty_sections();
    s.health = Some((u32::MAX as u64, 1, 0, 0.0));
    let rows = vec![
        one_row(&s, minute_start()),
        one_row(&s, minute_start() - 60),
    ];
    assert_eq!(svc.restore_buckets(60, rows, &[]).unwrap().restored, 2);
    let st = m.stats(SERVICE, 3600).unwrap();
    // ups saturate at u32::MAX over the window; the two downs add up.
    assert_eq!(st.health_checks, u32::MAX as u64 + 2);
    exercise(&m).unwrap();
}

/// Digest codes are stored as deltas; a delta near u64::MAX wrapped the
/// running code back under u16::MAX (debug: panic) instead of failing the
/// check.
#[test]
fn found_a_wrapping_digest_delta_is_refused() {
    let m = monitor_at(source().end_epoch_s);
    let svc = m.service(SERVICE).unwrap();
    let mut s = empty_sections();
    s.latency = vec![(100, 1), (u64::MAX - 50, 1)];
    let r = svc
        .restore_buckets(60, vec![one_row(&s, minute_start())], &[])
        .unwrap();
    assert_eq!(r.rejected, 1);
}

/// Two reloaded rows of the same minute whose counts add past u64::MAX:
/// the merged bucket lost its digest and was refused when stored again
/// (losing the data this process recorded in that minute too).  Counts
/// past 2^48 per bucket are refused on reload.
#[test]
fn found_counts_past_2_pow_48_are_refused() {
    let m = monitor_at(source().end_epoch_s);
    let svc = m.service(SERVICE).unwrap();
    let mut huge = empty_sections();
    huge.latency = vec![(10_240, u64::MAX)];
    let r = svc
        .restore_buckets(
            60,
            vec![
                one_row(&huge, minute_start()),
                one_row(&empty_sections(), minute_start()),
            ],
            &[],
        )
        .unwrap();
    assert_eq!((r.restored, r.rejected), (1, 1));
    exercise(&m).unwrap();
}

/// Gauges with no readings (a NaN average), sums no reading could reach
/// (inf after merging two such buckets, refused when stored again), and
/// error-type counts past u32 (silently truncated) are refused.
#[test]
fn found_impossible_extras_are_refused() {
    let m = monitor_at(source().end_epoch_s);
    let svc = m.service(SERVICE).unwrap();
    let mut no_readings = empty_sections();
    no_readings.gauges = Some(vec![(0, 0, 0.0, 0.0, 0.0)]);
    let mut past_range = empty_sections();
    past_range.gauges = Some(vec![(4, 1, 1e300, 0.0, 1.0)]);
    let mut slow = empty_sections();
    slow.processing = Some((1, f64::MAX, 0.0, 1.0, vec![]));
    let mut many_errors = empty_sections();
    many_errors.error_types = Some(vec![(0, u32::MAX as u64 + 1)]);
    let mut row_sum = one_row(&empty_sections(), minute_start());
    row_sum.sum_ms = 1e300;
    let rows = vec![
        one_row(&no_readings, minute_start()),
        one_row(&past_range, minute_start()),
        one_row(&slow, minute_start()),
        one_row(&many_errors, minute_start()),
        row_sum,
    ];
    let r = svc.restore_buckets(60, rows, &["e".into()]).unwrap();
    assert_eq!((r.restored, r.rejected), (0, 5));
}

/// A digest of one value must have min = max (else quantile(1) answered
/// the minimum), and a NaN sum is refused; an infinite sum, which a digest
/// of huge finite values really has, is not.
#[test]
fn found_digest_headers_that_contradict_themselves() {
    let mut bad = header(false, 1, 1.0, 0.5, 2.0, 1, &[]);
    bad.extend_from_slice(&2.0f32.to_le_bytes());
    bad.push(1);
    assert!(TDigest::from_bytes(&bad).is_err(), "one value, min != max");
    let mut nan = header(false, 1, f64::NAN, 2.0, 2.0, 1, &[]);
    nan.extend_from_slice(&2.0f32.to_le_bytes());
    nan.push(1);
    assert!(TDigest::from_bytes(&nan).is_err(), "NaN sum");
    assert!(
        TDigest::from_bytes(&header(false, 0, 3.0, 0.0, 0.0, 0, &[])).is_err(),
        "empty with a sum"
    );
    let d = digest_of(&[1e308, 1e308], 100.0);
    assert_eq!(d.sum(), f64::INFINITY);
    let back = TDigest::from_bytes(&d.to_bytes()).unwrap();
    assert_eq!(back.sum(), f64::INFINITY);
}

/// Found on nightly by `digest_valid_encodings_round_trip`: [-0.0, 0.0]
/// re-encoded with a centroid of -0.0 where the first encoding had +0.0,
/// because which zero `f64::min` returns is unspecified (it changed between
/// toolchains) and `from_bytes` clamps means into [min, max].  The digest
/// now keeps one zero: every toolchain encodes the same bytes.
#[test]
fn found_negative_zero_round_trips_on_every_toolchain() {
    for xs in [[-0.0, 0.0], [0.0, -0.0], [-0.0, -0.0]] {
        let d = digest_of(&xs, 10.0);
        assert_eq!(d.min().map(f64::to_bits), Some(0), "{xs:?}");
        assert_eq!(d.max().map(f64::to_bits), Some(0), "{xs:?}");
        let bytes = d.to_bytes();
        assert_eq!(
            TDigest::from_bytes(&bytes).unwrap().to_bytes(),
            bytes,
            "{xs:?}"
        );
    }
    let mut w = TDigest::new(10.0).unwrap();
    w.add_weighted(-0.0, 3).unwrap();
    assert_eq!(w.min().map(f64::to_bits), Some(0));
    let bins = TDigest::from_weighted(10.0, &[(-0.0, 2)], -0.0, -0.0).unwrap();
    assert_eq!(
        (bins.min().map(f64::to_bits), bins.max().map(f64::to_bits)),
        (Some(0), Some(0))
    );
}
