//! Public-API tests of the monitor with a driven clock: windows, roll-off,
//! uptime, percentiles against an exact oracle, and concurrent recorders.

use std::sync::Arc;

use metrics_core::{Clock, Gauge, Metric, Monitor, MonitorConfig, RetentionTier};

const T0: f64 = 1_700_000_000.0;

fn manual() -> Arc<Monitor> {
    Monitor::new(MonitorConfig::default(), Clock::manual(T0)).unwrap()
}

fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (h - lo as f64)
}

#[test]
fn empty_window_has_no_fake_zeros() {
    let m = manual();
    m.service("idle").unwrap();
    let s = m.stats("idle", 300).unwrap();
    assert_eq!((s.count, s.errors), (0, 0));
    assert_eq!(s.success_rate, None);
    assert_eq!(s.avg_ms, None);
    assert_eq!(s.p95_ms, None);
    assert_eq!(s.uptime_pct, None);
    assert_eq!(s.queue_depth_avg, None);
    assert_eq!(s.peak_rpm, None);
    assert!(s.resources.is_empty());
}

#[test]
fn counts_errors_and_window_expiry() {
    let m = manual();
    let svc = m.service("comfyui").unwrap();
    for i in 0..100 {
        svc.record(10.0 + i as f64, None).unwrap();
    }
    svc.record(5000.0, Some("timeout")).unwrap();
    svc.record(7.0, Some("http_500")).unwrap();
    svc.record(8.0, Some("timeout")).unwrap();
    let s = m.stats("comfyui", 300).unwrap();
    assert_eq!((s.count, s.errors), (103, 3));
    assert_eq!(
        s.error_counts,
        vec![("timeout".into(), 2), ("http_500".into(), 1)]
    );
    assert_eq!(s.last_error.as_deref(), Some("timeout"));
    assert_eq!(s.min_ms, Some(7.0));
    assert_eq!(s.max_ms, Some(5000.0));
    assert!((s.success_rate.unwrap() - 100.0 / 103.0).abs() < 1e-12);
    // Two minutes later the 1 min window is empty, the 5 min one is not.
    m.advance(120.0).unwrap();
    assert_eq!(m.stats("comfyui", 60).unwrap().count, 0);
    assert_eq!(m.stats("comfyui", 60).unwrap().last_error, None);
    assert_eq!(m.stats("comfyui", 300).unwrap().count, 103);
    // After 5 minutes + it leaves the 5 min window but stays in 1 h / 24 h.
    m.advance(200.0).unwrap();
    assert_eq!(m.stats("comfyui", 300).unwrap().count, 0);
    assert_eq!(m.stats("comfyui", 3600).unwrap().count, 103);
    assert_eq!(m.stats("comfyui", 86_400).unwrap().count, 103);
    m.advance(86_400.0).unwrap();
    assert_eq!(m.stats("comfyui", 86_400).unwrap().count, 0);
}

#[test]
fn percentiles_over_tiers_match_exact_within_a_percent() {
    let m = manual();
    let svc = m.service("llm").unwrap();
    let mut all = Vec::new();
    let mut x: u64 = 0x9E3779B97F4A7C15;
    // 2 hours, 20 requests per second, lognormal-ish latencies.
    for _ in 0..7200 {
        for _ in 0..20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            let v = 200.0 * (2.0 * (u - 0.5)).exp() * (1.0 + 3.0 * u * u * u);
            svc.record(v, None).unwrap();
            all.push(v);
        }
        m.advance(1.0).unwrap();
    }
    for (window, tail) in [
        (300u64, 300usize * 20),
        (3600, 3600 * 20),
        (86_400, all.len()),
    ] {
        let s = m.stats("llm", window).unwrap();
        // The window covers whole buckets: compare against exactly the
        // samples of the seconds it covers.
        let covered = ((s.end - s.start).round() as usize) * 20;
        let n = covered.min(tail);
        assert_eq!(s.count as usize, n, "window {window}");
        let mut w: Vec<f64> = all[all.len() - n..].to_vec();
        w.sort_by(f64::total_cmp);
        for (q, got) in [
            (0.5, s.p50_ms),
            (0.9, s.p90_ms),
            (0.95, s.p95_ms),
            (0.99, s.p99_ms),
        ] {
            let want = exact_quantile(&w, q);
            let rel = (got.unwrap() - want).abs() / want;
            eprintln!("window {window} q{q}: rel err {:.4}%", rel * 100.0);
            assert!(
                rel < 0.01,
                "window {window} q{q}: {} vs {want} ({rel})",
                got.unwrap()
            );
        }
        let avg = w.iter().sum::<f64>() / w.len() as f64;
        assert!((s.avg_ms.unwrap() - avg).abs() / avg < 1e-9, "avg is exact");
        assert_eq!(s.max_ms, Some(*w.last().unwrap()));
    }
}

#[test]
fn uptime_is_time_weighted_and_ignores_unknown_time() {
    let m = manual();
    let svc = m.service("ollama").unwrap();
    // 10 min up (check every 10 s), 5 min down, 5 min silence, 5 min up.
    for _ in 0..60 {
        svc.health(true, Some(3.0)).unwrap();
        m.advance(10.0).unwrap();
    }
    for _ in 0..30 {
        svc.health(false, None).unwrap();
        m.advance(10.0).unwrap();
    }
    m.advance(300.0).unwrap();
    for _ in 0..30 {
        svc.health(true, None).unwrap();
        m.advance(10.0).unwrap();
    }
    let s = m.stats("ollama", 3600).unwrap();
    // ttl 60 s: the last down result (t=890) covers [890, 950) of the
    // silence, the rest of it (950..1200) is unknown.  The window runs to
    // the end of the current second (now = 1500): up = [0, 600) +
    // [1200, 1501) = 901 s, down = [600, 950) = 350 s.
    assert_eq!(s.uptime_known_s, 901 + 350);
    let want = 100.0 * 901.0 / 1251.0;
    assert!(
        (s.uptime_pct.unwrap() - want).abs() < 1e-9,
        "{:?}",
        s.uptime_pct
    );
    assert_eq!(s.health_checks, 120);
    assert_eq!(s.up, Some(true));
    assert!((s.health_latency_ms.unwrap() - 3.0).abs() < 1e-12);
}

#[test]
fn queue_processing_and_resources() {
    let m = manual();
    let svc = m.service("a1111").unwrap();
    svc.set_queue(1, 4).unwrap();
    m.advance(1.0).unwrap();
    svc.set_queue(1, 1).unwrap();
    for ms in [1000.0, 2000.0, 3000.0] {
        svc.record_processing(ms).unwrap();
    }
    svc.set_resources(&[(Gauge::VramUsedBytes, 6e9), (Gauge::VramTotalBytes, 24e9)])
        .unwrap();
    m.advance(1.0).unwrap();
    svc.set_resources(&[(Gauge::VramUsedBytes, 8e9)]).unwrap();
    let s = m.stats("a1111", 300).unwrap();
    assert_eq!((s.queue_running, s.queue_pending), (Some(1), Some(1)));
    assert_eq!(s.queue_depth_max, Some(5));
    assert_eq!(s.queue_depth_avg, Some(3.5));
    assert_eq!(s.processing_count, 3);
    assert_eq!(s.processing_avg_ms, Some(2000.0));
    let p50 = s.processing_p50_ms.unwrap();
    assert!((p50 - 2000.0).abs() / 2000.0 < 0.02, "{p50}");
    let vram = &s
        .resources
        .iter()
        .find(|r| r.0 == "vram_used_bytes")
        .unwrap()
        .1;
    assert_eq!(
        (vram.last, vram.avg, vram.max, vram.samples),
        (Some(8e9), 7e9, 8e9, 2)
    );
}

#[test]
fn series_and_compare() {
    let m = manual();
    let fast = m.service("fast").unwrap();
    let slow = m.service("slow").unwrap();
    m.service("silent").unwrap();
    for _ in 0..30 {
        fast.record(10.0, None).unwrap();
        slow.record(100.0, None).unwrap();
        slow.record(100.0, Some("x")).unwrap();
        m.advance(2.0).unwrap();
    }
    let (ts, vals) = m.series("fast", Metric::Count, 300, None).unwrap();
    assert_eq!(ts.len(), vals.len());
    assert_eq!(ts.len(), 300);
    assert!(ts.windows(2).all(|w| (w[1] - w[0] - 1.0).abs() < 1e-9));
    let total: f64 = vals.iter().filter(|v| v.is_finite()).sum();
    assert_eq!(total, 30.0);
    let (_, avg) = m.series("slow", Metric::AvgMs, 300, Some(30)).unwrap();
    assert_eq!(avg.len(), 30);
    assert!(avg.iter().any(|v| v.is_nan()), "spans without data are NaN");
    assert!(avg.iter().filter(|v| v.is_finite()).all(|&v| v == 100.0));
    let ranked = m.compare(Metric::P95Ms, 300);
    assert_eq!(ranked[0].0, "fast");
    assert_eq!(ranked[1].0, "slow");
    assert_eq!(ranked[2], ("silent".to_string(), None));
    let by_success = m.compare(Metric::SuccessRate, 300);
    assert_eq!(by_success[0].0, "fast");
}

#[test]
fn service_limit_and_unknown_service() {
    let cfg = MonitorConfig {
        max_services: 2,
        ..MonitorConfig::default()
    };
    let m = Monitor::new(cfg, Clock::manual(T0)).unwrap();
    m.service("a").unwrap();
    m.service("b").unwrap();
    m.service("a").unwrap();
    let e = m.service("c").err().unwrap().to_string();
    assert!(e.contains("maximum of 2"), "{e}");
    let e = m.stats("zzz", 60).err().unwrap().to_string();
    assert!(e.contains("\"zzz\"") && e.contains("\"a\""), "{e}");
}

#[test]
fn bad_values_record_nothing() {
    let m = manual();
    let s = m.service("x").unwrap();
    s.record(1.0, None).unwrap();
    assert!(s.record(f64::NAN, None).is_err());
    assert!(s.record(-1.0, Some("t")).is_err());
    let e = s
        .record_batch(&[1.0, 2.0, f64::INFINITY, 3.0], None, "e")
        .unwrap_err();
    assert!(e.to_string().contains("index 2"), "{e}");
    assert!(s
        .set_resources(&[(Gauge::CpuPct, 5.0), (Gauge::GpuTempC, f64::NAN)])
        .is_err());
    let st = m.stats("x", 60).unwrap();
    assert_eq!(st.count, 1);
    assert!(
        st.resources.is_empty(),
        "the valid reading of a rejected call is not kept"
    );
}

#[test]
fn custom_tiers_are_validated_and_used() {
    let bad = MonitorConfig {
        tiers: vec![RetentionTier::new(2, 60), RetentionTier::new(7, 100)],
        ..MonitorConfig::default()
    };
    assert!(Monitor::new(bad, Clock::manual(T0)).is_err());
    let cfg = MonitorConfig {
        tiers: vec![RetentionTier::new(1, 60), RetentionTier::new(5, 120)],
        ..MonitorConfig::default()
    };
    let m = Monitor::new(cfg, Clock::manual(T0)).unwrap();
    assert!(m.window("1h").is_err(), "longer than the last tier");
    let s = m.service("s").unwrap();
    s.record(1.0, None).unwrap();
    m.advance(500.0).unwrap();
    assert_eq!(m.stats("s", 600).unwrap().count, 1);
    m.advance(200.0).unwrap();
    assert_eq!(m.stats("s", 600).unwrap().count, 0);
}

#[test]
fn rust_threads_exact_counts_with_sealer_running() {
    // System clock: the background sealer runs while 8 threads record.
    let m = Monitor::new(MonitorConfig::default(), Clock::system()).unwrap();
    let svc = m.service("stress").unwrap();
    const THREADS: usize = 8;
    const PER: usize = 200_000;
    let hs: Vec<_> = (0..THREADS)
        .map(|t| {
            let svc = svc.clone();
            std::thread::spawn(move || {
                for i in 0..PER {
                    let err = (i % 100 == 0).then_some(if t % 2 == 0 { "even" } else { "odd" });
                    svc.record(1.0 + (i % 50) as f64, err).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let s = m.stats("stress", 300).unwrap();
    assert_eq!(s.count, (THREADS * PER) as u64);
    assert_eq!(s.errors, (THREADS * PER / 100) as u64);
    let even: u64 = s.error_counts.iter().find(|e| e.0 == "even").unwrap().1;
    assert_eq!(even, (THREADS / 2 * PER / 100) as u64);
    m.close();
}

#[test]
fn memory_for_ten_services_with_full_retention_is_bounded() {
    let m = manual();
    let svcs: Vec<_> = (0..10)
        .map(|i| m.service(&format!("svc{i}")).unwrap())
        .collect();
    let mut x = 1u64;
    // 24 h + 5 min at 5 req/s per service, queue and gauges on half.
    for sec in 0..(86_400 + 300) {
        for (i, s) in svcs.iter().enumerate() {
            for _ in 0..5 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.record(20.0 + (x >> 40) as f64 / 1e4, None).unwrap();
            }
            if i < 5 && sec % 5 == 0 {
                s.set_queue(1, x >> 60).unwrap();
                s.set_resources(&[(Gauge::VramUsedBytes, 1e9)]).unwrap();
            }
        }
        m.advance(1.0).unwrap();
    }
    let bytes = m.memory_bytes();
    eprintln!("memory_bytes for 10 services, full retention: {bytes}");
    assert!(bytes < 10 * 1024 * 1024, "{bytes}");
}

#[test]
fn newest_sealed_second_counts_in_windows_starting_before_the_middle_tier() {
    // Regression: the last record falls in the window's first partial 10 s
    // bucket, so only the 1 s tier's building bucket holds it.
    for window in [60u64, 80, 120, 300] {
        let m = manual();
        let s = m.service("a").unwrap();
        m.advance(103.0).unwrap();
        s.record(1.0, None).unwrap();
        m.advance((window - 3) as f64).unwrap();
        let st = m.stats("a", window).unwrap();
        let covered = st.start <= T0 + 103.0;
        assert_eq!(
            st.count,
            covered as u64,
            "window {window}: start {}",
            st.start - T0
        );
    }
}

#[test]
fn lifetime_octave_counts_place_every_value_and_survive_sealing() {
    use metrics_core::histogram::{octave_upper_ms, OCTAVE_COUNTS};
    let m = manual();
    let s = m.service("hist").unwrap();
    let values = [0.0005, 0.75, 1.0, 1.5, 2.0, 250.0, 999.0, 1024.0, 3.6e6];
    for (i, &v) in values.iter().enumerate() {
        s.record(v, None).unwrap();
        s.record_processing(v * 2.0).unwrap();
        if i % 3 == 0 {
            m.advance(1.0).unwrap(); // some sealed, some still open when read
        }
    }
    let t = s.totals();
    assert_eq!(t.latency_octaves.iter().sum::<u64>(), values.len() as u64);
    assert_eq!(
        t.processing_octaves.iter().sum::<u64>(),
        values.len() as u64
    );
    for (j, &n) in t.latency_octaves.iter().enumerate() {
        let lo = if j == 0 { 0.0 } else { octave_upper_ms(j - 1) };
        let want = values
            .iter()
            .filter(|&&v| lo <= v && v < octave_upper_ms(j))
            .count() as u64;
        assert_eq!(n, want, "octave {j} [{lo}, {})", octave_upper_ms(j));
    }
    assert_eq!(OCTAVE_COUNTS, t.latency_octaves.len());
    m.close();
}
