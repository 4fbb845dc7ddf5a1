//! Lifecycle churn for the leak check (`scripts/leak_check.sh` runs every
//! test binary of this crate under LeakSanitizer; these tests add the paths
//! the others touch least).
//!
//! Each test passes on its own; what it guards is reported by the sanitizer
//! at exit: monitors dropped with and without `close()` while their sealer
//! threads run, seconds handed between recorders and the sealer (the
//! lock-free open slots), late seconds absorbed into sealed buckets, and
//! buckets and health runs copied out and restored into a fresh monitor.
//! On Linux the thread count is also checked: a dropped monitor's sealer
//! must exit (it holds the monitor weakly and notices within one period).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_core::monitor::SEAL_PERIOD;
use metrics_core::{Clock, Gauge, Monitor, MonitorConfig};

const T0: f64 = 1_700_000_000.0;

/// The tests of this binary run one at a time: the thread count of one
/// must not see another's recorders or sealer.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn filled(m: &Monitor, services: usize, seconds: u32) {
    for sec in 0..seconds {
        for i in 0..services {
            let s = m.service(&format!("svc-{i}")).unwrap();
            let lat: Vec<f64> = (0..8)
                .map(|k| 10.0 + ((sec as usize * 7 + k * 13 + i) % 500) as f64)
                .collect();
            let ok: Vec<bool> = (0..8).map(|k| (sec as usize + k) % 11 != 0).collect();
            s.record_batch(
                &lat,
                Some(&ok),
                if i % 2 == 0 { "timeout" } else { "http_500" },
            )
            .unwrap();
            s.record_processing(100.0 + sec as f64).unwrap();
            if sec % 5 == 0 {
                s.health(sec % 97 != 0, Some(3.0)).unwrap();
                s.set_queue(1, u64::from(sec % 4)).unwrap();
                s.set_resources(&[(Gauge::VramUsedBytes, 5e9), (Gauge::GpuUtilPct, 40.0)])
                    .unwrap();
            }
        }
        if m.clock().is_manual() {
            m.advance(1.0).unwrap();
        }
    }
}

/// Live sealer threads (named "mdm-sealer"): counting every thread would
/// also count the harness threads of other tests waiting on `serial()`.
#[cfg(target_os = "linux")]
fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| {
        d.filter_map(|t| t.ok())
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|name| name.trim() == "mdm-sealer")
            })
            .count()
    })
}

#[cfg(not(target_os = "linux"))]
fn os_threads() -> usize {
    0
}

#[test]
fn monitors_dropped_with_and_without_close() {
    let _serial = serial();
    let before = os_threads();
    for round in 0..20 {
        let m = Monitor::new(MonitorConfig::default(), Clock::system()).unwrap();
        filled(&m, 3, 2);
        let _ = m.snapshot(300);
        let _ = m.memory_bytes();
        if round % 2 == 0 {
            m.close();
        }
        drop(m); // odd rounds: the sealer finds the monitor gone and exits
    }
    let deadline = Instant::now() + SEAL_PERIOD * 8 + Duration::from_secs(2);
    while os_threads() > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        os_threads() <= before,
        "sealer threads left: {} before, {} after",
        before,
        os_threads()
    );
}

#[test]
fn recorders_and_sealer_hand_off_seconds() {
    let _serial = serial();
    // Eight recorders against the running sealer: open slots are handed
    // over and recycled thousands of times.
    let m = Monitor::new(MonitorConfig::default(), Clock::system()).unwrap();
    let svc = m.service("busy").unwrap();
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let svc = Arc::clone(&svc);
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_millis(1500);
                let mut i = 0u64;
                while Instant::now() < until {
                    let err = (i % 50 == 0).then_some(if t % 2 == 0 { "even" } else { "odd" });
                    svc.record(1.0 + (i % 300) as f64, err).unwrap();
                    i += 1;
                }
                i
            })
        })
        .collect();
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(m.stats("busy", 300).unwrap().count, total);
    m.close();
}

#[test]
fn late_seconds_and_long_history() {
    let _serial = serial();
    // A manual clock through two days: every tier fills and rolls off.
    let m = Monitor::new(MonitorConfig::default(), Clock::manual(T0)).unwrap();
    filled(&m, 2, 600);
    for _ in 0..(2 * 24 * 60) {
        let s = m.service("svc-0").unwrap();
        s.record(50.0, None).unwrap();
        m.advance(60.0).unwrap();
        let _ = m.stats("svc-0", 3600);
    }
    let _ = m.snapshot(86_400);
    m.close();
}

#[test]
fn stored_history_restores_into_a_fresh_monitor() {
    let _serial = serial();
    let src = Monitor::new(MonitorConfig::default(), Clock::manual(T0)).unwrap();
    filled(&src, 3, 400);
    for round in 0..10 {
        let dst = Monitor::new(MonitorConfig::default(), Clock::manual(T0 + 400.0)).unwrap();
        for name in src.services() {
            let from = src.get(&name).unwrap();
            let to = dst.service(&name).unwrap();
            let names = from.error_type_names();
            for res in [1, 10, 60] {
                let rows = from.stored_buckets(res, 0, round % 2 == 0, None).unwrap();
                let report = to.restore_buckets(res, rows, &names).unwrap();
                assert_eq!(report.rejected, 0);
            }
            to.restore_health(from.stored_health(0));
        }
        assert!(dst.stats("svc-0", 3600).unwrap().count > 0);
        if round % 2 == 1 {
            dst.close();
        }
    }
}
