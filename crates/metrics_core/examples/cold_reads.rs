//! Times dashboard reads on full tiers, in Rust alone (no Python): 10
//! services with 24 h + 10 min of the benchmark load (`benchmarks/bench_load.py`:
//! 10 latencies every 5 s, health every 10 s, queue and gauges on half of the
//! services), then `snapshot` of 5 min, 1 h and 24 h right after a minute of
//! traffic (cold: every cached part has slid) and polled each second (warm),
//! and how long sealing takes (it keeps read windows' middles current).
//!
//! ```text
//! cargo run --release -p metrics_core --example cold_reads [rounds]
//! ```

use std::time::Instant;

use metrics_core::{Clock, Gauge, Monitor, MonitorConfig};

/// xorshift64*, enough for a load pattern.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Lognormal around 200 ms (σ = 0.6), by Box–Muller.
    fn latency_ms(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        let z = (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        (200f64.ln() + 0.6 * z).exp()
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("rounds must be a positive integer"))
        .unwrap_or(20);
    let m = Monitor::new(MonitorConfig::default(), Clock::manual(1_767_225_600.0)).unwrap();
    let services: Vec<_> = (0..10)
        .map(|i| m.service(&format!("svc-{i:02}")).unwrap())
        .collect();
    let mut rng = Rng(20240607);
    let pool: Vec<Vec<f64>> = (0..64)
        .map(|_| (0..10).map(|_| rng.latency_ms()).collect())
        .collect();
    let start = Instant::now();
    for k in 0..(24 * 3600 + 600) / 5 {
        for s in &services {
            s.record_batch(&pool[k % 64], None, "").unwrap();
        }
        if k % 2 == 0 {
            for (i, s) in services.iter().enumerate() {
                s.health(true, Some(5.0 + i as f64)).unwrap();
                if i < 5 {
                    s.set_queue(k as u64 % 3, (k + i) as u64 % 5).unwrap();
                    s.set_resources(&[
                        (Gauge::VramUsedBytes, 6e9 + 1e6 * (k % 100) as f64),
                        (Gauge::GpuUtilPct, (k % 100) as f64),
                    ])
                    .unwrap();
                }
            }
        }
        m.advance(5.0).unwrap();
    }
    println!(
        "load built in {:.1} s; memory_bytes {:.3} MiB",
        start.elapsed().as_secs_f64(),
        m.memory_bytes() as f64 / 1048576.0
    );
    // Returns the slowest `advance(1)` (sealing 10 services, with the
    // middles of recently read windows moved on) and the median one.
    let traffic = |seconds: usize| {
        let mut seal_ms = Vec::with_capacity(seconds);
        for _ in 0..seconds {
            for s in &services {
                s.record_batch(&[180.0, 240.0], None, "").unwrap();
            }
            let t = Instant::now();
            m.advance(1.0).unwrap();
            seal_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        seal_ms
    };
    let only = std::env::args().nth(2);
    for (name, window_s) in [("5m", 300u64), ("1h", 3600), ("24h", 86_400)] {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let before = m.memory_bytes();
        let t = Instant::now();
        m.snapshot(window_s);
        let first_ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "memory_bytes {:.3} MiB, + {} B for reading {name}",
            m.memory_bytes() as f64 / 1048576.0,
            m.memory_bytes() as i64 - before as i64
        );
        let (mut cold, mut warm, mut seal_max, mut seal) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let s = traffic(60);
            seal_max.push(s.iter().copied().fold(0.0, f64::max));
            seal.push(median(s));
            let t = Instant::now();
            m.snapshot(window_s);
            cold.push(t.elapsed().as_secs_f64() * 1e3);
            for _ in 0..5 {
                traffic(1);
                let t = Instant::now();
                m.snapshot(window_s);
                warm.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        println!(
            "snapshot({name}): first read (nothing cached for it) {first_ms:.3} ms, cold median {:.3} ms, \
             warm median {:.3} ms; advance(1) of 10 services median {:.3} ms, slowest per minute (median) {:.3} ms",
            median(cold),
            median(warm),
            median(seal),
            median(seal_max)
        );
    }
    println!(
        "memory_bytes after reads {:.3} MiB",
        m.memory_bytes() as f64 / 1048576.0
    );
}
