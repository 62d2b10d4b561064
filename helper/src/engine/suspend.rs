//! Noticing that the machine slept or the process was stopped, from two clocks the caller
//! reads: the monotonic clock (`Instant`) and a boot-time clock that keeps counting while the
//! machine sleeps (`daemon::boot_clock::boot_time`). Pure: the clocks are passed in.
//!
//! Why it matters: on Linux and macOS `Instant` stops while the machine sleeps, so after a
//! night asleep every timer (ICE consent, WireGuard's, the relay's refreshes) believes a few
//! seconds passed, while NAT mappings, the TURN allocation and the peer's WireGuard session
//! are long gone. And a process stopped by SIGSTOP (or a VM paused, a debugger) sees its
//! monotonic clock run on but its loop did not run: the same dead mappings, with no timer
//! having fired in between. Either way the engine must re-check everything at once
//! ([`super::Engine::handle_resume`]).

use std::time::{Duration, Instant};

/// How much time must be unaccounted for before it counts as a suspend: clock reads are
/// not atomic and a busy machine delays a loop by some milliseconds, never seconds.
pub const SUSPEND_THRESHOLD: Duration = Duration::from_secs(2);

/// Compares successive readings of the two clocks. Call [`SuspendDetector::observe`] at
/// least every `expected_max_gap` (the data plane loop wakes at least once a second).
#[derive(Debug, Clone)]
pub struct SuspendDetector {
    monotonic: Instant,
    boot: Duration,
    expected_max_gap: Duration,
}

impl SuspendDetector {
    /// `monotonic` and `boot` read now; `expected_max_gap` is the longest the caller may go
    /// between two observations when nothing is wrong.
    pub fn new(monotonic: Instant, boot: Duration, expected_max_gap: Duration) -> Self {
        Self { monotonic, boot, expected_max_gap }
    }

    /// The clocks read now. Returns how long the machine slept or the process did not run
    /// since the last observation, when that exceeds [`SUSPEND_THRESHOLD`]:
    /// * the boot-time clock advanced more than the monotonic one: the machine slept (the
    ///   difference is the sleep);
    /// * the monotonic clock advanced much more than `expected_max_gap`: the process was
    ///   stopped, or the machine slept on a platform whose monotonic clock counts sleep
    ///   (Windows), and the excess is the time lost.
    pub fn observe(&mut self, monotonic: Instant, boot: Duration) -> Option<Duration> {
        let mono_gap = monotonic.saturating_duration_since(self.monotonic);
        let boot_gap = boot.saturating_sub(self.boot);
        // Never move backwards: a reading older than the last (a caller mixing threads)
        // counts as no time.
        self.monotonic = self.monotonic.max(monotonic);
        self.boot = self.boot.max(boot);
        let slept = boot_gap.saturating_sub(mono_gap);
        let stalled = mono_gap.saturating_sub(self.expected_max_gap);
        let lost = slept.max(stalled);
        (lost > SUSPEND_THRESHOLD).then_some(lost)
    }
}
