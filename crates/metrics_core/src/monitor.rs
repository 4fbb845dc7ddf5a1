//! The monitor: a registry of services, the background sealer, and the
//! dashboard reads (`stats`, `snapshot`, `series`, `compare`).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::Clock;
use crate::config::MonitorConfig;
use crate::error::{MetricsError, Result};
use crate::primitive::Ordering;
use crate::service::{check_name, Service, Shared};
use crate::stats::{Metric, ServiceStats};
use crate::window::parse_window;

/// How often the background sealer folds ended seconds into the tiers.
pub const SEAL_PERIOD: Duration = Duration::from_millis(250);

#[derive(Default)]
struct Registry {
    by_name: HashMap<String, Arc<Service>>,
    /// Creation order, for stable listings.
    order: Vec<Arc<Service>>,
}

struct Sealer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

pub struct Monitor {
    shared: Arc<Shared>,
    registry: RwLock<Registry>,
    sealer: Mutex<Option<Sealer>>,
}

/// A time series: UTC epoch seconds and values (NaN where no data).
pub type Series = (Vec<f64>, Vec<f64>);

impl Monitor {
    /// Creates a monitor; with the system clock a background thread seals
    /// ended seconds every 250 ms (it never holds a lock recorders need).
    pub fn new(config: MonitorConfig, clock: Clock) -> Result<Arc<Monitor>> {
        config.validate()?;
        let manual = clock.is_manual();
        let monitor = Arc::new(Monitor {
            shared: Arc::new(Shared { clock, config }),
            registry: RwLock::new(Registry::default()),
            sealer: Mutex::new(None),
        });
        if !manual {
            monitor.start_sealer();
        }
        Ok(monitor)
    }

    fn start_sealer(self: &Arc<Self>) {
        let stop = Arc::new(AtomicBool::new(false));
        let weak: Weak<Monitor> = Arc::downgrade(self);
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mdm-sealer".into())
            .spawn(move || {
                while !stop2.load(Ordering::Acquire) {
                    std::thread::park_timeout(SEAL_PERIOD);
                    match weak.upgrade() {
                        Some(m) => m.seal_all(),
                        None => return,
                    }
                }
            })
            .expect("spawning the sealer thread");
        *self.sealer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Sealer { stop, thread });
    }

    pub fn config(&self) -> &MonitorConfig {
        &self.shared.config
    }

    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The service called `name`, created on first use.
    pub fn service(&self, name: &str) -> Result<Arc<Service>> {
        if let Some(s) = self.read().by_name.get(name) {
            return Ok(s.clone());
        }
        check_name(name)?;
        let mut reg = self.registry.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = reg.by_name.get(name) {
            return Ok(s.clone());
        }
        let limit = self.shared.config.max_services;
        if reg.order.len() >= limit {
            return Err(MetricsError::ServiceLimit {
                name: name.to_owned(),
                limit,
            });
        }
        let s = Arc::new(Service::new(name, self.shared.clone())?);
        reg.by_name.insert(name.to_owned(), s.clone());
        reg.order.push(s.clone());
        Ok(s)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    /// An existing service.
    pub fn get(&self, name: &str) -> Result<Arc<Service>> {
        let reg = self.read();
        reg.by_name
            .get(name)
            .cloned()
            .ok_or_else(|| MetricsError::UnknownService {
                name: name.to_owned(),
                known: reg.order.iter().map(|s| s.name().to_owned()).collect(),
            })
    }

    /// Service names in creation order.
    pub fn services(&self) -> Vec<String> {
        self.read()
            .order
            .iter()
            .map(|s| s.name().to_owned())
            .collect()
    }

    fn all(&self) -> Vec<Arc<Service>> {
        self.read().order.clone()
    }

    /// Parses a window name against this monitor's retention.
    pub fn window(&self, text: &str) -> Result<u64> {
        parse_window(text, self.shared.config.max_window_s())
    }

    pub fn window_seconds(&self, seconds: f64) -> Result<u64> {
        crate::window::seconds(
            seconds,
            &seconds.to_string(),
            self.shared.config.max_window_s(),
        )
    }

    pub fn stats(&self, name: &str, window_s: u64) -> Result<ServiceStats> {
        Ok(self.get(name)?.stats(window_s))
    }

    /// Every service's stats, in creation order.
    pub fn snapshot(&self, window_s: u64) -> Vec<ServiceStats> {
        self.all().iter().map(|s| s.stats(window_s)).collect()
    }

    /// One metric over the window, per bucket (or `points` spans).
    pub fn series(
        &self,
        name: &str,
        metric: Metric,
        window_s: u64,
        points: Option<usize>,
    ) -> Result<Series> {
        check_points(points)?;
        let per = self.get(name)?.series_stats(window_s, points);
        Ok(per
            .iter()
            .map(|s| (s.start, metric.of(s).unwrap_or(f64::NAN)))
            .unzip())
    }

    /// Per-span statistics of one service (see [`Service::series_stats_at`]).
    pub fn series_stats(
        &self,
        name: &str,
        window_s: u64,
        points: Option<usize>,
        resolution_s: Option<u32>,
    ) -> Result<Vec<ServiceStats>> {
        check_points(points)?;
        self.get(name)?
            .series_stats_at(window_s, points, resolution_s)
    }

    /// Services ranked best first by `metric`; services without data last.
    pub fn compare(&self, metric: Metric, window_s: u64) -> Vec<(String, Option<f64>)> {
        let mut rows: Vec<(String, Option<f64>)> = self
            .snapshot(window_s)
            .iter()
            .map(|s| (s.service.clone(), metric.of(s)))
            .collect();
        let better_first = metric.higher_is_better();
        rows.sort_by(|a, b| match (a.1, b.1) {
            (Some(x), Some(y)) => {
                let o = x.total_cmp(&y);
                if better_first {
                    o.reverse()
                } else {
                    o
                }
            }
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        });
        rows
    }

    /// Folds every ended second into the tiers (the sealer does this every
    /// 250 ms; reads do it for their service first).
    pub fn seal_all(&self) {
        for s in self.all() {
            s.seal();
        }
    }

    /// Manual clock only: moves time forward and seals what ended.
    pub fn advance(&self, seconds: f64) -> Result<()> {
        self.shared
            .clock
            .advance(seconds)
            .map_err(|e| MetricsError::Clock(e.0))?;
        self.seal_all();
        Ok(())
    }

    /// Bytes the engine owns for all services.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Monitor>() + self.all().iter().map(|s| s.memory_bytes()).sum::<usize>()
    }

    /// Stops the background sealer (idempotent) after a last seal.
    pub fn close(&self) {
        let sealer = self.sealer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(s) = sealer {
            s.stop.store(true, Ordering::Release);
            s.thread.thread().unpark();
            // The sealer may itself be dropping the last reference; a
            // thread cannot join itself.
            if s.thread.thread().id() != std::thread::current().id() {
                let _ = s.thread.join();
            }
        }
        self.seal_all();
    }

    pub fn is_sealer_running(&self) -> bool {
        self.sealer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// A chart needs at least one point (`None`: one per bucket).
fn check_points(points: Option<usize>) -> Result<()> {
    if points == Some(0) {
        return Err(MetricsError::InvalidValue {
            what: "points",
            value: 0.0,
            expected: "a positive number of points, or None for one per bucket".into(),
        });
    }
    Ok(())
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let sealer = self
            .sealer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(s) = sealer {
            s.stop.store(true, Ordering::Release);
            s.thread.thread().unpark();
            if s.thread.thread().id() != std::thread::current().id() {
                let _ = s.thread.join();
            }
        }
    }
}
