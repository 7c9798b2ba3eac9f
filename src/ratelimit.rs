//! Token buckets: per connection for what a member sends, and keyed (by IP, by room) for failed
//! joins and room creations. A bucket holds `capacity` tokens and refills them evenly over
//! `window`, so a burst up to the limit passes and a steady flood is held to the rate.

use std::{
    hash::Hash,
    time::{Duration, Instant},
};

use dashmap::DashMap;

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A bucket of `capacity` tokens refilled over `window`; a capacity of 0 means unlimited.
    pub fn new(capacity: u64, window: Duration, now: Instant) -> Self {
        let capacity = capacity as f64;
        Self {
            capacity,
            per_sec: capacity / window.as_secs_f64(),
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// Time until `cost` tokens are there, or `None` when they are there now.
    fn wait_for(&mut self, cost: f64, now: Instant) -> Option<Duration> {
        if self.capacity == 0.0 {
            return None;
        }
        self.refill(now);
        (self.tokens < cost).then(|| {
            Duration::from_secs_f64((cost.min(self.capacity) - self.tokens) / self.per_sec)
        })
    }

    /// Takes `cost` tokens, or says how long to wait for them.
    pub fn take(&mut self, cost: f64, now: Instant) -> Result<(), Duration> {
        match self.wait_for(cost, now) {
            Some(wait) => Err(wait),
            None => {
                self.tokens -= cost;
                Ok(())
            }
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

/// One bucket per key, created full on first use.
pub struct KeyedLimiter<K: Eq + Hash> {
    buckets: DashMap<K, Bucket>,
    capacity: u64,
    window: Duration,
}

impl<K: Eq + Hash + Clone> KeyedLimiter<K> {
    pub fn new(capacity: u32, window: Duration) -> Self {
        Self {
            buckets: DashMap::new(),
            capacity: u64::from(capacity),
            window,
        }
    }

    /// How long `key` must wait before it may try again, without using a token. Used before a
    /// join, so that the attempt after the last allowed failure is refused before any work.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        match self.buckets.get_mut(key) {
            Some(mut bucket) => bucket.wait_for(1.0, now).map_or(Ok(()), Err),
            None => Ok(()),
        }
    }

    /// Uses one token of `key`.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(self.capacity, self.window, now))
            .take(1.0, now)
    }

    /// Forgets full buckets, so the map holds only keys that have been limited recently.
    pub fn prune(&self) {
        let now = Instant::now();
        self.buckets.retain(|_, bucket| !bucket.is_full(now));
    }
}

/// Whole milliseconds to wait, at least 1.
pub fn retry_after_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The server's keyed limits: failed joins (and failed deletes) per IP and per room ID, and
/// room creations per IP. Keys live in memory only.
pub struct Limiters {
    failed_per_ip: KeyedLimiter<std::net::IpAddr>,
    failed_per_room: KeyedLimiter<String>,
    creates_per_ip: KeyedLimiter<std::net::IpAddr>,
}

impl Limiters {
    pub fn new(config: &crate::config::Config) -> Self {
        let minute = Duration::from_secs(60);
        Self {
            failed_per_ip: KeyedLimiter::new(config.join_failures_per_ip, minute),
            failed_per_room: KeyedLimiter::new(config.join_failures_per_room, minute),
            creates_per_ip: KeyedLimiter::new(config.creates_per_ip, Duration::from_secs(3600)),
        }
    }

    /// Whether this IP may try to join (or delete) this room now.
    pub fn check_join(&self, ip: std::net::IpAddr, room: &str) -> Result<(), Duration> {
        let by_ip = self.failed_per_ip.check(&ip);
        let by_room = self.failed_per_room.check(&room.to_owned());
        match (by_ip, by_room) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(a), Err(b)) => Err(a.max(b)),
            (Err(w), _) | (_, Err(w)) => Err(w),
        }
    }

    pub fn join_failed(&self, ip: std::net::IpAddr, room: &str) {
        let _ = self.failed_per_ip.take(&ip);
        let _ = self.failed_per_room.take(&room.to_owned());
    }

    pub fn create(&self, ip: std::net::IpAddr) -> Result<(), Duration> {
        self.creates_per_ip.take(&ip)
    }

    pub fn prune(&self) {
        self.failed_per_ip.prune();
        self.failed_per_room.prune();
        self.creates_per_ip.prune();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_capacity_passes_then_waits() {
        let now = Instant::now();
        let mut b = Bucket::new(3, Duration::from_secs(3), now);
        for _ in 0..3 {
            assert!(b.take(1.0, now).is_ok());
        }
        let wait = b.take(1.0, now).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        assert!(b.take(1.0, now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn capacity_zero_is_unlimited() {
        let now = Instant::now();
        let mut b = Bucket::new(0, Duration::from_secs(1), now);
        for _ in 0..1000 {
            assert!(b.take(1e9, now).is_ok());
        }
    }

    #[test]
    fn keyed_check_refuses_only_after_the_limit_is_used() {
        let limiter = KeyedLimiter::new(2, Duration::from_secs(60));
        assert!(limiter.check(&"ip").is_ok());
        limiter.take(&"ip").unwrap();
        assert!(limiter.check(&"ip").is_ok());
        limiter.take(&"ip").unwrap();
        assert!(limiter.check(&"ip").is_err());
        assert!(limiter.check(&"other").is_ok());
    }

    #[test]
    fn prune_forgets_full_buckets_only() {
        let limiter = KeyedLimiter::new(2, Duration::from_secs(60));
        limiter.take(&"a").unwrap();
        limiter.prune();
        assert_eq!(limiter.buckets.len(), 1);
        let quick = KeyedLimiter::new(1, Duration::from_nanos(1));
        quick.take(&"a").unwrap();
        std::thread::sleep(Duration::from_millis(1));
        quick.prune();
        assert_eq!(quick.buckets.len(), 0);
    }
}
