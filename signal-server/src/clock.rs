//! Wall-clock time in Unix seconds, behind a trait so tests can move it (invite expiry,
//! address cool-down) without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> u64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

/// The system clock plus an offset that tests advance.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    offset_secs: AtomicU64,
}

impl ShiftedClock {
    pub fn advance(&self, secs: u64) {
        self.offset_secs.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ShiftedClock {
    fn now(&self) -> u64 {
        SystemClock.now() + self.offset_secs.load(Ordering::SeqCst)
    }
}
