//! What the relay limits, and the bookkeeping behind it. The turn crate has no
//! quotas of its own, so they live here: [`Registry`] counts each device's live
//! allocations and can close them, [`TokenBucket`] meters bytes. Both are plain
//! state with no socket and no clock of their own, so they are tested directly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use trellis_protocol::DeviceId;

/// Limits on what one device may take from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayQuotas {
    /// Live allocations one device may hold at once.
    pub max_allocations_per_device: usize,
    /// How long an allocation may live in total, however often it is refreshed.
    pub max_allocation_lifetime: Duration,
    /// Bytes per second one allocation may relay, in each direction. Up to one
    /// second's worth (at least one full 1500-byte datagram) may pass in a burst;
    /// datagrams over the limit are dropped, as a congested link would.
    pub bytes_per_second_per_allocation: u64,
}

impl Default for RelayQuotas {
    fn default() -> Self {
        Self {
            // One allocation per address family serves every peer of a device
            // (permissions are per peer, not the allocation). Four leaves room for
            // IPv4 + IPv6 and for make-before-break when one is replaced, plus an
            // allocation left over from a restarted daemon until it times out.
            max_allocations_per_device: 4,
            // Forces a device to re-allocate, and so to re-authenticate, at least
            // hourly, so a forgotten or stuck allocation cannot hold a port and
            // bandwidth forever; once an hour is a negligible cost for the daemon.
            max_allocation_lifetime: Duration::from_secs(60 * 60),
            // 2 MiB/s (about 16 Mbit/s) each way: plenty for the shell sessions,
            // calls and file syncs that end up relayed, while one device cannot
            // fill a typical 1 Gbit/s server link on its own.
            bytes_per_second_per_allocation: 2 * 1024 * 1024,
        }
    }
}

/// The largest datagram the turn server reads or relays (its buffers are 1500
/// bytes). A bucket always holds at least this much, so that a very low rate
/// still lets full-size datagrams through instead of none at all.
pub(super) const MAX_DATAGRAM: u64 = 1500;

/// A token bucket counting bytes: it refills at `rate` bytes per second up to
/// `capacity` (one second's worth, at least [`MAX_DATAGRAM`]), and a datagram passes
/// only if the bucket holds its whole size. Starts full.
#[derive(Debug)]
pub(super) struct TokenBucket {
    rate: u64,
    capacity: u64,
    tokens: u64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    pub(super) fn new(bytes_per_second: u64, now: Instant) -> Self {
        let capacity = bytes_per_second.max(MAX_DATAGRAM);
        Self { rate: bytes_per_second, capacity, tokens: capacity, updated: now }
    }

    /// Takes `bytes` tokens if the bucket holds that many; says whether it did.
    pub(super) fn try_take(&mut self, bytes: u64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }

    fn refill(&mut self, now: Instant) {
        const NANOS_PER_SEC: u128 = 1_000_000_000;
        let room = self.capacity - self.tokens;
        let elapsed = now.saturating_duration_since(self.updated).as_nanos();
        let earned = elapsed.saturating_mul(u128::from(self.rate)) / NANOS_PER_SEC;
        if earned >= u128::from(room) {
            // Full: time spent full earns nothing later.
            self.tokens = self.capacity;
            self.updated = now;
        } else if earned > 0 {
            // Advance the clock only by the time those whole tokens took, so that the
            // fractions of a token left over add up across calls instead of being lost.
            self.tokens += earned as u64;
            let spent = (earned * NANOS_PER_SEC).div_ceil(u128::from(self.rate));
            self.updated += Duration::from_nanos(spent as u64);
        }
    }
}

/// The live allocations of every device: counts them against
/// [`RelayQuotas::max_allocations_per_device`] and can close them (eviction,
/// shutdown). Each allocation holds an [`AllocationTicket`]; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct Registry {
    max_per_device: usize,
    next_id: AtomicU64,
    /// Per device, each live allocation's id and the switch that closes it.
    live: Mutex<HashMap<DeviceId, HashMap<u64, watch::Sender<bool>>>>,
}

/// A device already holds as many allocations as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("device {device} already holds {live} relay allocations, the most allowed")]
pub(super) struct AllocationQuotaReached {
    pub device: DeviceId,
    pub live: usize,
}

impl Registry {
    pub(super) fn new(max_per_device: usize) -> Arc<Self> {
        Arc::new(Self { max_per_device, next_id: AtomicU64::new(0), live: Mutex::default() })
    }

    /// Takes one of `device`'s allocation slots, if it has one left.
    pub(super) fn register(
        self: &Arc<Self>,
        device: DeviceId,
    ) -> Result<AllocationTicket, AllocationQuotaReached> {
        let mut live = self.live.lock().expect("relay registry lock poisoned");
        let count = live.get(&device).map_or(0, HashMap::len);
        if count >= self.max_per_device {
            return Err(AllocationQuotaReached { device, live: count });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(false);
        live.entry(device).or_default().insert(id, close);
        Ok(AllocationTicket { registry: Arc::clone(self), device, id, closed })
    }

    /// How many allocations `device` holds now.
    pub(super) fn live(&self, device: &DeviceId) -> usize {
        self.live.lock().expect("relay registry lock poisoned").get(device).map_or(0, HashMap::len)
    }

    /// Closes every allocation of `device`; returns how many there were.
    pub(super) fn close_device(&self, device: &DeviceId) -> usize {
        let live = self.live.lock().expect("relay registry lock poisoned");
        live.get(device).map_or(0, |allocations| {
            allocations.values().for_each(|close| {
                close.send_replace(true);
            });
            allocations.len()
        })
    }

    /// Closes every allocation.
    pub(super) fn close_all(&self) {
        let live = self.live.lock().expect("relay registry lock poisoned");
        live.values().flat_map(HashMap::values).for_each(|close| {
            close.send_replace(true);
        });
    }

    fn release(&self, device: &DeviceId, id: u64) {
        let mut live = self.live.lock().expect("relay registry lock poisoned");
        if let Some(allocations) = live.get_mut(device) {
            allocations.remove(&id);
            if allocations.is_empty() {
                live.remove(device);
            }
        }
    }
}

/// One allocation's slot in the [`Registry`], freed on drop.
#[derive(Debug)]
pub(super) struct AllocationTicket {
    registry: Arc<Registry>,
    device: DeviceId,
    id: u64,
    closed: watch::Receiver<bool>,
}

impl AllocationTicket {
    pub(super) fn device(&self) -> DeviceId {
        self.device
    }

    pub(super) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves once the registry closes this allocation.
    pub(super) async fn closed(&self) {
        let mut closed = self.closed.clone();
        // An error means the switch is gone, which only happens on release: closed too.
        let _ = closed.wait_for(|closed| *closed).await;
    }

    /// Closes this allocation (the turn server closes it, or it expired).
    pub(super) fn close(&self) {
        let live = self.registry.live.lock().expect("relay registry lock poisoned");
        if let Some(close) = live.get(&self.device).and_then(|allocations| allocations.get(&self.id)) {
            close.send_replace(true);
        }
    }
}

impl Drop for AllocationTicket {
    fn drop(&mut self) {
        self.registry.release(&self.device, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_passes_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10_000, start);
        // A full second's worth at once, then nothing.
        assert!(bucket.try_take(6_000, start));
        assert!(bucket.try_take(4_000, start));
        assert!(!bucket.try_take(1, start));
        // 100 ms earn 1000 bytes, in small steps too.
        for step in 1..=10 {
            assert!(!bucket.try_take(1_001, start + Duration::from_millis(10 * step)));
        }
        assert!(bucket.try_take(1_000, start + Duration::from_millis(100)));
        assert!(!bucket.try_take(1, start + Duration::from_millis(100)));
        // A long pause refills only up to the capacity.
        let later = start + Duration::from_secs(3600);
        assert!(bucket.try_take(10_000, later));
        assert!(!bucket.try_take(1, later));
    }

    #[test]
    fn bucket_earns_fractions_over_many_calls() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1_500, start);
        assert!(bucket.try_take(1_500, start));
        // 1.5 bytes per ms: every single-ms step earns a fraction; none may be lost.
        let mut passed = 0;
        for ms in 1..=1_000 {
            while bucket.try_take(1, start + Duration::from_millis(ms)) {
                passed += 1;
            }
        }
        assert!((1_499..=1_500).contains(&passed), "{passed} bytes passed in one second at 1500 B/s");
    }

    #[test]
    fn tiny_rates_still_pass_full_datagrams() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, start);
        assert!(bucket.try_take(MAX_DATAGRAM, start));
        assert!(!bucket.try_take(MAX_DATAGRAM, start + Duration::from_secs(1)));
    }

    #[test]
    fn registry_counts_per_device_and_frees_on_drop() {
        let registry = Registry::new(2);
        let (a, b) = (DeviceId::random(), DeviceId::random());
        let first = registry.register(a).unwrap();
        let _second = registry.register(a).unwrap();
        assert_eq!(registry.register(a).unwrap_err(), AllocationQuotaReached { device: a, live: 2 });
        // Another device is not affected.
        let _other = registry.register(b).unwrap();
        assert_eq!(registry.live(&a), 2);
        drop(first);
        assert_eq!(registry.live(&a), 1);
        assert!(registry.register(a).is_ok());
    }

    #[test]
    fn a_zero_quota_refuses_without_leaving_state() {
        let registry = Registry::new(0);
        let device = DeviceId::random();
        assert!(registry.register(device).is_err());
        assert!(registry.live.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn closing_a_device_closes_only_its_allocations() {
        let registry = Registry::new(4);
        let (a, b) = (DeviceId::random(), DeviceId::random());
        let (a1, a2, b1) =
            (registry.register(a).unwrap(), registry.register(a).unwrap(), registry.register(b).unwrap());
        assert_eq!(registry.close_device(&a), 2);
        a1.closed().await;
        a2.closed().await;
        assert!(a1.is_closed() && a2.is_closed());
        assert!(!b1.is_closed());
        // Closing is not releasing: the slot is held until the allocation is gone.
        assert_eq!(registry.live(&a), 2);
        b1.close();
        assert!(b1.is_closed());
        registry.close_all();
        assert_eq!(registry.close_device(&DeviceId::random()), 0);
    }
}
