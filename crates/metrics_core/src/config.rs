//! Monitor configuration: retention tiers and limits, validated up front.

use crate::error::{MetricsError, Result};

/// One retention tier: `slots` buckets of `resolution_s` seconds each, so it
/// keeps the last `resolution_s * slots` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionTier {
    pub resolution_s: u32,
    pub slots: u32,
}

impl RetentionTier {
    pub const fn new(resolution_s: u32, slots: u32) -> Self {
        RetentionTier {
            resolution_s,
            slots,
        }
    }

    /// Seconds of history the tier keeps.
    pub fn window_s(&self) -> u64 {
        self.resolution_s as u64 * self.slots as u64
    }
}

/// 5 min at 1 s, 1 h at 10 s, 24 h at 1 min.
pub const DEFAULT_TIERS: [RetentionTier; 3] = [
    RetentionTier::new(1, 300),
    RetentionTier::new(10, 360),
    RetentionTier::new(60, 1440),
];

/// Everything a monitor is created with.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    pub tiers: Vec<RetentionTier>,
    pub max_services: usize,
    /// How long one health result vouches for a service's state.
    pub health_ttl_s: u32,
    /// Compression of the t-digest kept per sealed bucket of every tier but
    /// the last.  These buckets hold few values (a 10 s bucket at 20 req/s
    /// has 200), where a t-digest is only accurate when it barely
    /// compresses: at 100 a 200-value digest errs ~1.5 % at the median, at
    /// 200 under 0.1 %.
    pub bucket_compression: f64,
    /// Compression of the last (longest) tier's buckets, most of the memory
    /// (1440 buckets a service by default).  Lower it to save memory at the
    /// price of accuracy on windows longer than the finer tiers: at 100 a
    /// 24 h window of 20 req/s errs up to ~1.3 % at the median, at 200 0.2 %.
    pub archive_compression: f64,
    /// Compression of digests merged to answer a window query.  Higher than
    /// `TDigest`'s default: a window merges many partial digests, and at a
    /// few thousand values 200 errs ~1 % at the median, 500 under 0.5 %.
    pub query_compression: f64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            tiers: DEFAULT_TIERS.to_vec(),
            max_services: 64,
            health_ttl_s: 60,
            bucket_compression: 200.0,
            archive_compression: 200.0,
            query_compression: 500.0,
        }
    }
}

/// Most services a monitor can be configured for.
pub const MAX_SERVICES_LIMIT: usize = 4096;
/// Most buckets one tier may keep (memory guard).
pub const MAX_SLOTS_PER_TIER: u32 = 100_000;

impl MonitorConfig {
    /// Checks that tiers nest (each resolution a multiple of the previous
    /// one, each window longer) and that limits are sane.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MetricsError::InvalidConfig(m));
        if self.tiers.is_empty() || self.tiers.len() > 6 {
            return bad(format!(
                "expected 1 to 6 retention tiers, got {}",
                self.tiers.len()
            ));
        }
        for (i, t) in self.tiers.iter().enumerate() {
            if t.resolution_s == 0 || t.resolution_s > 86_400 {
                return bad(format!(
                    "tier {i}: resolution {} s is out of range: expected 1 to 86400 s",
                    t.resolution_s
                ));
            }
            if t.slots < 2 || t.slots > MAX_SLOTS_PER_TIER {
                return bad(format!(
                    "tier {i}: {} slots is out of range: expected 2 to {MAX_SLOTS_PER_TIER}",
                    t.slots
                ));
            }
            if i > 0 {
                let p = self.tiers[i - 1];
                if t.resolution_s <= p.resolution_s || t.resolution_s % p.resolution_s != 0 {
                    return bad(format!(
                        "tier {i}: resolution {} s must be a larger multiple of tier {}'s {} s so buckets nest",
                        t.resolution_s,
                        i - 1,
                        p.resolution_s
                    ));
                }
                if t.window_s() <= p.window_s() {
                    return bad(format!(
                        "tier {i}: window {} s ({} x {} s) must be longer than tier {}'s {} s",
                        t.window_s(),
                        t.slots,
                        t.resolution_s,
                        i - 1,
                        p.window_s()
                    ));
                }
            }
        }
        if self.tiers[0].window_s() < 2 {
            return bad("the finest tier must keep at least 2 s".into());
        }
        if self.max_services == 0 || self.max_services > MAX_SERVICES_LIMIT {
            return bad(format!(
                "max_services {} is out of range: expected 1 to {MAX_SERVICES_LIMIT}",
                self.max_services
            ));
        }
        if self.health_ttl_s == 0 || self.health_ttl_s > 86_400 {
            return bad(format!(
                "health_ttl_s {} is out of range: expected 1 to 86400",
                self.health_ttl_s
            ));
        }
        for (name, c) in [
            ("bucket_compression", self.bucket_compression),
            ("archive_compression", self.archive_compression),
            ("query_compression", self.query_compression),
        ] {
            if !(10.0..=10_000.0).contains(&c) {
                return bad(format!("{name} {c} is out of range: expected 10 to 10000"));
            }
        }
        Ok(())
    }

    /// Longest window any query can cover.
    pub fn max_window_s(&self) -> u64 {
        self.tiers.last().map(|t| t.window_s()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        MonitorConfig::default().validate().unwrap();
        assert_eq!(MonitorConfig::default().max_window_s(), 86_400);
    }

    #[test]
    fn tiers_must_nest() {
        let mut c = MonitorConfig::default();
        c.tiers = vec![RetentionTier::new(1, 300), RetentionTier::new(15, 10)];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("must be longer"), "{e}");
        c.tiers = vec![RetentionTier::new(10, 300), RetentionTier::new(15, 1000)];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("multiple"), "{e}");
        c.tiers = vec![];
        assert!(c.validate().is_err());
        c.tiers = vec![RetentionTier::new(0, 10)];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("resolution 0"));
    }

    #[test]
    fn limits_are_checked() {
        let c = MonitorConfig {
            max_services: 0,
            ..MonitorConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_services 0"));
    }
}
