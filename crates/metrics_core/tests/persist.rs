//! Storage hooks: buckets, health runs and error names written out by one
//! monitor and reloaded by another (another clock base, later start) give
//! the same windows; malformed stored bytes are refused, never trusted.

use std::sync::Arc;

use metrics_core::service::StoredBucket;
use metrics_core::{Clock, Monitor, MonitorConfig, RetentionTier};

/// A Tuesday, 10:00:00 UTC.
const T0: f64 = 1_700_042_400.0;

fn with_hours(start: f64) -> Arc<Monitor> {
    let mut c = MonitorConfig::default();
    c.tiers.push(RetentionTier {
        resolution_s: 3600,
        slots: 720,
    });
    Monitor::new(c, Clock::manual(start)).unwrap()
}

/// Three hours of traffic: 2 requests/s, a timeout every 50th, health
/// every 10 s (down for ten minutes in the second hour).
fn record_hours(m: &Monitor) -> (u64, u64) {
    let svc = m.service("comfyui").unwrap();
    let (mut n, mut errs) = (0u64, 0u64);
    for s in 0..3 * 3600u64 {
        for k in 0..2u64 {
            let i = s * 2 + k;
            let err = (i % 50 == 0).then_some(if i % 100 == 0 { "timeout" } else { "http_500" });
            svc.record(5.0 + (i % 97) as f64, err).unwrap();
            n += 1;
            errs += err.is_some() as u64;
        }
        if s % 10 == 0 {
            svc.health(!(4200..4800).contains(&s), None).unwrap();
        }
        m.advance(1.0).unwrap();
    }
    (n, errs)
}

fn copy(from: &Monitor, to: &Monitor, include_building: bool) {
    let a = from.get("comfyui").unwrap();
    let b = to.service("comfyui").unwrap();
    let names = a.error_type_names();
    for res in [60, 3600] {
        let rows = a.stored_buckets(res, 0, include_building, None).unwrap();
        let report = b.restore_buckets(res, rows, &names).unwrap();
        assert_eq!(report.rejected, 0);
    }
    b.restore_health(a.stored_health(0));
}

#[test]
fn reloaded_history_answers_like_the_original() {
    let a = with_hours(T0);
    let (n, errs) = record_hours(&a);
    // Everything written at close (partial buckets included), reloaded by
    // a process started five minutes later.
    let later = a.clock().now_epoch_s() + 300.0;
    let b = with_hours(later);
    copy(&a, &b, true);
    for window in [86_400, 7 * 86_400] {
        let s = b.stats("comfyui", window).unwrap();
        assert_eq!((s.count, s.errors), (n, errs), "window {window}");
        let orig = a.stats("comfyui", window).unwrap();
        assert_eq!(s.error_counts, orig.error_counts);
        assert_eq!(s.min_ms, orig.min_ms);
        assert_eq!(s.max_ms, orig.max_ms);
        let (p, q) = (s.p95_ms.unwrap(), orig.p95_ms.unwrap());
        assert!((p - q).abs() / q < 0.01, "p95 {p} vs {q}");
        // Health: results every 10 s from 0 to 10 790, the last vouching
        // for the 60 s TTL; 600 s of it down.  The process that wrote them
        // ended 10 s into that TTL; the new one, five minutes later, sees
        // all of it, and nothing after.
        assert_eq!(s.uptime_known_s, 10_790 + 60);
        assert_eq!(s.uptime_pct, Some(100.0 * (10_850.0 - 600.0) / 10_850.0));
        assert_eq!(orig.uptime_known_s, 10_801);
    }
    // A 1 h window reaches into the reloaded minutes.
    let s = b.stats("comfyui", 3600).unwrap();
    assert!(s.count > 0 && s.count < n);
}

#[test]
fn a_partial_bucket_merges_with_the_same_span_built_after_restart() {
    let a = with_hours(T0);
    let svc = a.service("comfyui").unwrap();
    for _ in 0..10 {
        svc.record(10.0, None).unwrap();
    }
    a.advance(20.0).unwrap();
    // Restart within the same minute and hour.
    let b = with_hours(a.clock().now_epoch_s() + 5.0);
    copy(&a, &b, true);
    let svc_b = b.get("comfyui").unwrap();
    // Fine tiers are not stored: windows the minute tier answers see it.
    assert_eq!(b.stats("comfyui", 3600).unwrap().count, 10);
    for _ in 0..5 {
        svc_b.record(20.0, Some("timeout")).unwrap();
    }
    assert_eq!(b.stats("comfyui", 3600).unwrap().count, 15);
    // After the minute and the hour seal, one bucket each holds all 15.
    b.advance(3700.0).unwrap();
    for res in [60, 3600] {
        let rows = svc_b.stored_buckets(res, 0, false, None).unwrap();
        assert_eq!(rows.len(), 1, "resolution {res}");
        assert_eq!((rows[0].count, rows[0].errors), (15, 5));
        assert_eq!(rows[0].max_ms, 20.0);
    }
    assert_eq!(b.stats("comfyui", 86_400).unwrap().count, 15);
}

#[test]
fn error_ids_are_renumbered_into_the_new_service() {
    let a = with_hours(T0);
    let svc = a.service("s").unwrap();
    svc.record(1.0, Some("first")).unwrap();
    svc.record(1.0, Some("second")).unwrap();
    svc.record(1.0, Some("second")).unwrap();
    a.advance(61.0).unwrap();
    let rows = svc.stored_buckets(60, 0, false, None).unwrap();
    let b = with_hours(a.clock().now_epoch_s());
    let t = b.service("s").unwrap();
    // This process met "second" first: its ids differ from the file's.
    t.record(1.0, Some("second")).unwrap();
    t.restore_buckets(60, rows, &svc.error_type_names())
        .unwrap();
    let s = b.stats("s", 86_400).unwrap();
    assert_eq!(
        s.error_counts,
        vec![("second".into(), 3), ("first".into(), 1)]
    );
}

#[test]
fn malformed_rows_are_rejected_and_counted() {
    let a = with_hours(T0);
    let svc = a.service("s").unwrap();
    for i in 0..100 {
        svc.record(i as f64, (i % 10 == 0).then_some("boom"))
            .unwrap();
    }
    a.advance(61.0).unwrap();
    let good = svc.stored_buckets(60, 0, false, None).unwrap().remove(0);
    let blob = good.blob.clone().unwrap();
    let mut bad: Vec<StoredBucket> = Vec::new();
    // Truncated at every length, a flipped flag byte, a count that the
    // digest does not add up to, NaN scalars, more errors than requests,
    // a missing blob, a bucket older than the clock's base.
    for cut in 0..blob.len() {
        let mut b = good.clone();
        b.blob = Some(blob[..cut].to_vec());
        bad.push(b);
    }
    let mut b = good.clone();
    b.blob.as_mut().unwrap().push(0);
    bad.push(b);
    let mut b = good.clone();
    b.count += 1;
    bad.push(b);
    let mut b = good.clone();
    b.sum_ms = f64::NAN;
    bad.push(b);
    let mut b = good.clone();
    b.errors = b.count + 1;
    bad.push(b);
    let mut b = good.clone();
    b.blob = None;
    bad.push(b);
    let n_bad = bad.len();
    let t = with_hours(a.clock().now_epoch_s()).service("s").unwrap();
    let r = t.restore_buckets(60, bad, &["boom".into()]).unwrap();
    assert_eq!(r.rejected, n_bad);
    assert_eq!(r.restored, 0);
    // Arbitrary bytes never panic.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let junk: Vec<StoredBucket> = (0..2000)
        .map(|i| {
            let len = i % 64;
            let bytes = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            StoredBucket {
                blob: Some(bytes),
                ..good.clone()
            }
        })
        .collect();
    let r = t.restore_buckets(60, junk, &["boom".into()]).unwrap();
    assert_eq!(r.restored + r.rejected, 2000);
    // Unknown resolution: a clear error naming it.
    let e = t.restore_buckets(7, vec![], &[]).unwrap_err().to_string();
    assert!(e.contains("resolution_s=7") && e.contains("3600 s"), "{e}");
}

#[test]
fn totals_count_everything_and_only_grow() {
    let m = with_hours(T0);
    let svc = m.service("s").unwrap();
    let mut last = 0;
    for s in 0..200u64 {
        svc.record(1.0, (s % 3 == 0).then_some("x")).unwrap();
        svc.record_processing(100.0).unwrap();
        let t = svc.totals();
        assert!(t.count >= last);
        last = t.count;
        m.advance(0.5).unwrap();
    }
    m.advance(100_000.0).unwrap();
    let t = svc.totals();
    assert_eq!((t.count, t.errors), (200, 67));
    assert_eq!(t.error_counts, vec![("x".into(), 67)]);
    assert_eq!(t.processing_count, 200);
    assert_eq!(t.sum_ms, 200.0);
}
