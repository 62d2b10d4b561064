//! Token buckets keyed by source address or network, for invite redemption and
//! request floods. The arithmetic that makes guessing an invite code infeasible is in
//! `docs/ARCHITECTURE.md` ("Invite codes and rate limits").

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `burst` events at once, refilled at `per_minute`.
#[derive(Clone, Copy, PartialEq, Debug, Serialize, Deserialize)]
pub struct Rate {
    pub burst: u32,
    pub per_minute: u32,
}

impl Rate {
    fn refill_per_sec(&self) -> f64 {
        f64::from(self.per_minute) / 60.0
    }
}

/// Buckets that are full again are forgotten, so memory follows the number of keys
/// that misbehaved recently, not every key ever seen.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    state: Mutex<LimiterState<K>>,
}

#[derive(Debug)]
struct LimiterState<K> {
    buckets: HashMap<K, Bucket>,
    last_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub fn new(rate: Rate) -> Self {
        Self { rate, state: Mutex::new(LimiterState { buckets: HashMap::new(), last_sweep: None }) }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.rate.refill_per_sec()).min(f64::from(self.rate.burst))
    }

    /// Whether `key` has a token left, without taking it.
    pub fn allows(&self, key: &K, now: Instant) -> bool {
        let state = self.state.lock().expect("limiter lock");
        state.buckets.get(key).is_none_or(|b| self.refilled(b, now) >= 1.0)
    }

    /// Takes a token from `key`; returns whether one was there.
    pub fn take(&self, key: &K, now: Instant) -> bool {
        let mut state = self.state.lock().expect("limiter lock");
        self.sweep(&mut state, now);
        let burst = f64::from(self.rate.burst);
        let bucket = state.buckets.entry(key.clone()).or_insert(Bucket { tokens: burst, updated: now });
        let tokens = self.refilled(bucket, now);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            true
        } else {
            bucket.tokens = tokens;
            false
        }
    }

    fn sweep(&self, state: &mut LimiterState<K>, now: Instant) {
        if state.last_sweep.is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY) {
            return;
        }
        state.last_sweep = Some(now);
        let burst = f64::from(self.rate.burst);
        let buckets = std::mem::take(&mut state.buckets);
        state.buckets = buckets.into_iter().filter(|(_, b)| self.refilled(b, now) < burst).collect();
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.state.lock().unwrap().buckets.len()
    }
}

/// The key a source address is limited by: the address itself for IPv4, its /64 for
/// IPv6 (one home gets a whole /64, so single addresses would cost an attacker nothing).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_then_refilled() {
        let limiter = Limiter::new(Rate { burst: 3, per_minute: 6 });
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.take(&"a", t0)));
        assert!(!limiter.allows(&"a", t0));
        assert!(!limiter.take(&"a", t0));
        assert!(limiter.allows(&"b", t0), "keys are independent");
        // 6 per minute: one token every 10 s.
        assert!(!limiter.allows(&"a", t0 + Duration::from_secs(9)));
        assert!(limiter.take(&"a", t0 + Duration::from_secs(10)));
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let limiter = Limiter::new(Rate { burst: 2, per_minute: 60 });
        let t0 = Instant::now();
        for i in 0..100 {
            limiter.take(&i, t0);
        }
        assert_eq!(limiter.tracked(), 100);
        limiter.take(&1000, t0 + Duration::from_secs(120));
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
