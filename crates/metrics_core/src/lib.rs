//! `metrics_core`: a lock-free, time-tiered metrics engine for the request
//! latency, errors, queue depth, processing time, resource gauges and health
//! checks of a handful of services, with merging t-digest percentiles.
//!
//! Pure Rust, no Python: the `metrics_py` crate binds it.
//!
//! * Recording ([`Service::record`] and friends) is lock-free and
//!   allocation-free on the success path: see `gate` and `open_slot`.
//! * History lives in retention tiers ([`RetentionTier`], default
//!   5 min @ 1 s, 1 h @ 10 s, 24 h @ 1 min) rolled up from exact per-second
//!   aggregates; percentiles come from [`TDigest`]s.
//! * Reads ([`Monitor::stats`], `snapshot`, `series`, `compare`) never block
//!   recorders.

#![cfg_attr(test, allow(clippy::field_reassign_with_default))]

pub mod agg;
pub mod clock;
pub mod config;
pub mod error;
mod gate;
mod handoff;
pub mod health;
pub mod histogram;
mod intern;
mod middle;
pub mod monitor;
pub mod open_slot;
mod primitive;
pub mod query;
mod sealed;
pub mod service;
pub mod stats;
pub mod tdigest;
pub mod tiers;
pub mod window;

pub use agg::Gauge;
pub use clock::Clock;
pub use config::{MonitorConfig, RetentionTier, DEFAULT_TIERS};
pub use error::MetricsError;
pub use monitor::Monitor;
pub use service::Service;
pub use stats::{GaugeStats, Metric, ServiceStats};
pub use tdigest::{DigestError, TDigest, DEFAULT_COMPRESSION};
