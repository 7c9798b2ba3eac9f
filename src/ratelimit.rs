//! Token buckets: per connection for what a member sends, and keyed (by client address, by room)
//! for failed joins, room creations and lobby requests. A bucket holds `capacity` tokens and
//! refills them evenly over `window`, so a burst up to the limit passes and a steady flood is held
//! to the rate. Beside them, the counts that bound what one address holds at once: its sockets,
//! and its argon2 runs.

use std::{
    hash::Hash,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use dashmap::DashMap;

use crate::{address::AddressKey, domain::RoomId, protocol::Refusal};

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

    /// Time until `cost` tokens are there, or `None` when they are there now. A cost over the
    /// capacity costs the whole capacity: it must be possible once the bucket is full.
    fn wait_for(&mut self, cost: f64, now: Instant) -> Option<Duration> {
        if self.capacity == 0.0 {
            return None;
        }
        self.refill(now);
        let cost = cost.min(self.capacity);
        (self.tokens < cost).then(|| Duration::from_secs_f64((cost - self.tokens) / self.per_sec))
    }

    /// Takes `cost` tokens (at most the capacity), or says how long to wait for them.
    pub fn take(&mut self, cost: f64, now: Instant) -> Result<(), Duration> {
        let cost = cost.min(self.capacity);
        match self.wait_for(cost, now) {
            Some(wait) => Err(wait),
            None => {
                self.tokens -= cost;
                Ok(())
            }
        }
    }

    /// Puts back a token taken for an attempt that turned out to cost nothing.
    fn give_back(&mut self, cost: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + cost).min(self.capacity);
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }
}

/// One bucket per key, created full on first use.
pub struct KeyedLimiter<K: Eq + Hash> {
    /// A shard lock for one take; entries that have refilled are pruned every minute, so the map
    /// holds only the keys active in the last window.
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

    /// Puts back the token [`Self::take`] took.
    pub fn give_back(&self, key: &K) {
        if let Some(mut bucket) = self.buckets.get_mut(key) {
            bucket.give_back(1.0, Instant::now());
        }
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

/// The server's keyed limits, in memory only.
pub struct Limiters {
    failed_per_address: KeyedLimiter<AddressKey>,
    failed_per_room: KeyedLimiter<RoomId>,
    creates_per_address: KeyedLimiter<AddressKey>,
    lobby_per_address: KeyedLimiter<AddressKey>,
    /// argon2 runs waiting or running, per address; an entry lives while its count is above
    /// zero (a shard lock per claim and release).
    hashing: DashMap<AddressKey, usize>,
    /// Attempts that hold a failed-attempt token and have not been decided yet, per address;
    /// the same life as `hashing`.
    deciding: DashMap<AddressKey, usize>,
    hashes_per_address: usize,
    pub sockets: Arc<Sockets>,
}

impl Limiters {
    pub fn new(config: &crate::config::Config) -> Self {
        let minute = Duration::from_secs(60);
        Self {
            failed_per_address: KeyedLimiter::new(config.join_failures_per_ip, minute),
            failed_per_room: KeyedLimiter::new(config.join_failures_per_room, minute),
            creates_per_address: KeyedLimiter::new(
                config.creates_per_ip,
                Duration::from_secs(3600),
            ),
            lobby_per_address: KeyedLimiter::new(config.lobby_per_minute, minute),
            hashing: DashMap::new(),
            deciding: DashMap::new(),
            hashes_per_address: config.hashes_per_address.max(1),
            sockets: Arc::new(Sockets::new(config)),
        }
    }

    /// A join's or a delete's claim on the failed-attempt allowances; see [`Attempt`].
    pub fn attempt(&self, address: AddressKey, room: Option<RoomId>) -> Attempt<'_> {
        Attempt {
            limiters: self,
            address,
            room,
            charged: false,
            hashing: None,
        }
    }

    /// A claim on `runs` of the address's argon2 runs, or `None` when it has its share waiting
    /// or running already: past that, one address's work would queue in front of everyone's.
    pub fn hashing(&self, address: AddressKey, runs: usize) -> Option<Hashing<'_>> {
        let mut running = self.hashing.entry(address).or_insert(0);
        if *running + runs > self.hashes_per_address {
            drop(running);
            self.hashing.remove_if(&address, |_, running| *running == 0);
            return None;
        }
        *running += runs;
        Some(Hashing {
            limiters: self,
            address,
            runs,
        })
    }

    pub fn create(&self, address: AddressKey) -> Result<(), Duration> {
        self.creates_per_address.take(&address)
    }

    pub fn lobby(&self, address: AddressKey) -> Result<(), Duration> {
        self.lobby_per_address.take(&address)
    }

    pub fn prune(&self) {
        self.failed_per_address.prune();
        self.failed_per_room.prune();
        self.creates_per_address.prune();
        self.lobby_per_address.prune();
    }
}

/// One join's or delete's claim on the failed-attempt allowances of its address and its room.
/// A token of each is taken before the work that could fail (looking up a room that is not live,
/// an argon2 run) and given back when the credentials turn out right, so that a burst of wrong
/// guesses sent at once is refused from the first one past the limit, not after all of them have
/// been worked on. A claim that is dropped keeps its tokens: a client that hangs up during its
/// argon2 run has still had it.
pub struct Attempt<'a> {
    limiters: &'a Limiters,
    address: AddressKey,
    room: Option<RoomId>,
    charged: bool,
    hashing: Option<Hashing<'a>>,
}

/// Why an attempt may not go on to its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The failed-attempt allowance is used up by failures.
    Failures(Duration),
    /// The address has its share of argon2 runs waiting or running, or its allowance is held by
    /// attempts still being decided (a reconnecting crowd behind one address, each going to a
    /// different cold room): not a failure, and worth trying again in a moment.
    Busy,
}

impl From<Refused> for Refusal {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Failures(wait) => Refusal::rate_limited(wait),
            Refused::Busy => Refusal::busy(),
        }
    }
}

/// Argon2 runs claimed for an address ([`Limiters::hashing`]); given back when dropped.
pub struct Hashing<'a> {
    limiters: &'a Limiters,
    address: AddressKey,
    runs: usize,
}

impl Drop for Hashing<'_> {
    fn drop(&mut self) {
        self.limiters
            .hashing
            .remove_if_mut(&self.address, |_, running| {
                *running -= self.runs;
                *running == 0
            });
    }
}

impl Attempt<'_> {
    /// Refuses at once, before any work, when either allowance is used up.
    pub fn check(&self) -> Result<(), Refused> {
        let l = self.limiters;
        let by_address = l
            .failed_per_address
            .check(&self.address)
            .map_err(|wait| self.failures_or_busy(wait));
        let by_room = self
            .room
            .as_ref()
            .map_or(Ok(()), |room| l.failed_per_room.check(room))
            .map_err(Refused::Failures);
        match (by_address, by_room) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(Refused::Failures(a)), Err(Refused::Failures(b))) => {
                Err(Refused::Failures(a.max(b)))
            }
            (Err(refused), _) | (_, Err(refused)) => Err(refused),
        }
    }

    /// The address's allowance is used up: by failures, or by attempts still being decided.
    fn failures_or_busy(&self, wait: Duration) -> Refused {
        let deciding = self
            .limiters
            .deciding
            .get(&self.address)
            .is_some_and(|n| *n > 0);
        if deciding {
            Refused::Busy
        } else {
            Refused::Failures(wait)
        }
    }

    /// Takes a token of each allowance (once per attempt), or refuses without taking any.
    pub fn charge(&mut self) -> Result<(), Refused> {
        if self.charged {
            return Ok(());
        }
        let l = self.limiters;
        if let Err(wait) = l.failed_per_address.take(&self.address) {
            return Err(self.failures_or_busy(wait));
        }
        if let Some(room) = &self.room {
            if let Err(wait) = l.failed_per_room.take(room) {
                l.failed_per_address.give_back(&self.address);
                return Err(Refused::Failures(wait));
            }
        }
        *l.deciding.entry(self.address).or_insert(0) += 1;
        self.charged = true;
        Ok(())
    }

    /// The attempt is decided: it no longer holds its tokens back from others.
    fn decided(&mut self) {
        if std::mem::take(&mut self.charged) {
            self.limiters.deciding.remove_if_mut(&self.address, |_, n| {
                *n -= 1;
                *n == 0
            });
        }
    }

    /// Claims one of the address's argon2 runs (the claim ends with the attempt), then charges;
    /// a refused claim charges nothing.
    pub fn before_hashing(&mut self) -> Result<(), Refused> {
        if self.hashing.is_none() {
            self.hashing = Some(
                self.limiters
                    .hashing(self.address, 1)
                    .ok_or(Refused::Busy)?,
            );
        }
        self.charge()
    }

    /// The attempt did not fail on its credentials: the tokens go back.
    pub fn refund(&mut self) {
        if self.charged {
            let l = self.limiters;
            l.failed_per_address.give_back(&self.address);
            if let Some(room) = &self.room {
                l.failed_per_room.give_back(room);
            }
            self.decided();
        }
    }
}

/// An attempt dropped with its tokens taken has failed: they stay taken.
impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        self.decided();
    }
}

/// Why a socket was turned away right after its upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The server holds as many sockets as it may.
    Server,
    /// This address holds as many sockets, or as many waiting to join, as it may.
    Address,
}

/// The sockets held, in all and per client address; see [`Sockets::open`].
pub struct Sockets {
    total: AtomicUsize,
    /// An entry per address holding a socket, removed with its last one (a shard lock per open,
    /// join and close).
    per_address: DashMap<AddressKey, Held>,
    max_total: usize,
    max_per_address: usize,
    max_joining_per_address: usize,
}

#[derive(Default)]
struct Held {
    open: usize,
    joining: usize,
}

impl Sockets {
    fn new(config: &crate::config::Config) -> Self {
        let unlimited = |n: usize| if n == 0 { usize::MAX } else { n };
        Self {
            total: AtomicUsize::new(0),
            per_address: DashMap::new(),
            max_total: unlimited(config.max_connections.unwrap_or(0)),
            max_per_address: unlimited(config.max_connections_per_address),
            max_joining_per_address: unlimited(config.max_joining_per_address),
        }
    }

    /// Counts a new socket, not yet joined, or says why it may not open.
    pub fn open(self: &Arc<Self>, address: AddressKey) -> Result<Place, Full> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Full::Server);
        }
        let mut held = self.per_address.entry(address).or_default();
        if held.open >= self.max_per_address || held.joining >= self.max_joining_per_address {
            drop(held);
            self.release(address, false);
            return Err(Full::Address);
        }
        held.open += 1;
        held.joining += 1;
        Ok(Place {
            sockets: self.clone(),
            address,
            joining: true,
        })
    }

    /// Uncounts one socket (the total only, when the address had none counted yet).
    fn release(&self, address: AddressKey, counted: bool) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        self.per_address.remove_if_mut(&address, |_, held| {
            if counted {
                held.open -= 1;
            }
            held.open == 0
        });
    }
}

/// One socket's place in [`Sockets`], given back when dropped.
pub struct Place {
    sockets: Arc<Sockets>,
    address: AddressKey,
    joining: bool,
}

impl Place {
    /// The socket has joined: it no longer counts as waiting to.
    pub fn joined(&mut self) {
        if std::mem::take(&mut self.joining) {
            if let Some(mut held) = self.sockets.per_address.get_mut(&self.address) {
                held.joining -= 1;
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.joined();
        self.sockets.release(self.address, true);
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

    fn limiters(tweak: impl FnOnce(&mut crate::config::Config)) -> Limiters {
        let mut config = crate::config::Config::defaults();
        tweak(&mut config);
        Limiters::new(&config)
    }

    fn address(text: &str) -> AddressKey {
        AddressKey::of(text.parse().unwrap())
    }

    #[test]
    fn an_attempt_takes_its_tokens_before_the_work_and_gives_them_back_on_success() {
        let l = limiters(|c| c.join_failures_per_ip = 2);
        let me = address("192.0.2.1");
        for _ in 0..5 {
            let mut attempt = l.attempt(me, None);
            attempt.charge().unwrap();
            attempt.refund();
        }
        let mut first = l.attempt(me, None);
        first.charge().unwrap();
        let mut second = l.attempt(me, None);
        second.charge().unwrap();
        drop((first, second));
        let third = l.attempt(me, None);
        assert!(third.check().is_err());
        assert!(l.attempt(address("192.0.2.2"), None).check().is_ok());
    }

    #[test]
    fn an_address_has_a_bounded_number_of_argon2_runs_at_once() {
        let l = limiters(|c| {
            c.hashes_per_address = 1;
            c.join_failures_per_ip = 100;
        });
        let me = address("2001:db8::1");
        let mut running = l.attempt(me, None);
        running.before_hashing().unwrap();
        let mut neighbour = l.attempt(address("2001:db8::2"), None);
        assert_eq!(neighbour.before_hashing(), Err(Refused::Busy));
        assert!(l.hashing(me, 1).is_none());
        drop(running);
        assert!(neighbour.before_hashing().is_ok());
        drop(neighbour);
        assert!(l.hashing.is_empty());
        // A refused claim costs no failure token.
        let strict = limiters(|c| {
            c.hashes_per_address = 2;
            c.join_failures_per_ip = 1;
        });
        let create = strict.hashing(me, 2).unwrap();
        assert_eq!(
            strict.attempt(me, None).before_hashing(),
            Err(Refused::Busy)
        );
        drop(create);
        assert!(strict.attempt(me, None).before_hashing().is_ok());
    }

    #[test]
    fn sockets_are_counted_per_address_and_joining_separately() {
        let l = limiters(|c| {
            c.max_connections = Some(4);
            c.max_connections_per_address = 3;
            c.max_joining_per_address = 2;
        });
        let me = address("192.0.2.1");
        let mut a = l.sockets.open(me).unwrap();
        let _b = l.sockets.open(me).unwrap();
        assert_eq!(l.sockets.open(me).err(), Some(Full::Address));
        a.joined();
        let _c = l.sockets.open(me).unwrap();
        assert_eq!(l.sockets.open(me).err(), Some(Full::Address));
        let _d = l.sockets.open(address("192.0.2.2")).unwrap();
        assert_eq!(
            l.sockets.open(address("192.0.2.3")).err(),
            Some(Full::Server)
        );
        drop((a, _b, _c, _d));
        assert!(l.sockets.per_address.is_empty());
        assert_eq!(l.sockets.total.load(Ordering::Relaxed), 0);
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
