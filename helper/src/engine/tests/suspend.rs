//! The suspend detector, with injected clocks: a sleep (the boot-time clock runs ahead of
//! the monotonic one), a stop (the monotonic clock jumps past the loop's wake-up interval),
//! and ordinary gaps and jitter, which must pass unnoticed.

use std::time::{Duration, Instant};

use crate::engine::{SuspendDetector, SUSPEND_THRESHOLD};

/// The data plane loop wakes at least once a second.
const LOOP_GAP: Duration = Duration::from_secs(1);

/// Two clocks that the test advances: the monotonic one and the boot-time one.
struct Clocks {
    mono: Instant,
    boot: Duration,
}

impl Clocks {
    fn new() -> Self {
        Self { mono: Instant::now(), boot: Duration::from_secs(1000) }
    }

    /// The machine is awake for `d`: both clocks advance.
    fn awake(&mut self, d: Duration) {
        self.mono += d;
        self.boot += d;
    }

    /// The machine sleeps for `d`: only the boot-time clock advances (Linux, macOS).
    fn sleep(&mut self, d: Duration) {
        self.boot += d;
    }
}

#[test]
fn ordinary_gaps_and_jitter_are_no_suspend() {
    let mut c = Clocks::new();
    let mut d = SuspendDetector::new(c.mono, c.boot, LOOP_GAP);
    for i in 0..1000u64 {
        // Wake-ups from 1 ms to a second and a half late (a busy machine), and the two
        // clocks read a few milliseconds apart in either order.
        c.awake(Duration::from_millis(1 + (i * 37) % 2500));
        let skew = Duration::from_millis(i % 7);
        let observed =
            if i % 2 == 0 { d.observe(c.mono, c.boot + skew) } else { d.observe(c.mono + skew, c.boot) };
        assert_eq!(observed, None, "false suspend at observation {i}");
        if i % 2 == 1 {
            // Keep the skewed monotonic reading consistent with what comes next.
            c.mono += skew;
            c.boot += skew;
        }
    }
}

#[test]
fn a_sleep_shows_as_the_boot_clock_running_ahead() {
    let mut c = Clocks::new();
    let mut d = SuspendDetector::new(c.mono, c.boot, LOOP_GAP);
    c.awake(Duration::from_millis(300));
    c.sleep(Duration::from_secs(3600));
    c.awake(Duration::from_millis(200));
    assert_eq!(d.observe(c.mono, c.boot), Some(Duration::from_secs(3600)));
    // Reported once: the next observation is ordinary again.
    c.awake(LOOP_GAP);
    assert_eq!(d.observe(c.mono, c.boot), None);
}

#[test]
fn a_short_nap_below_the_threshold_is_ignored_and_one_above_is_not() {
    let mut c = Clocks::new();
    let mut d = SuspendDetector::new(c.mono, c.boot, LOOP_GAP);
    c.sleep(SUSPEND_THRESHOLD - Duration::from_millis(100));
    assert_eq!(d.observe(c.mono, c.boot), None);
    c.sleep(SUSPEND_THRESHOLD + Duration::from_millis(100));
    assert_eq!(d.observe(c.mono, c.boot), Some(SUSPEND_THRESHOLD + Duration::from_millis(100)));
}

#[test]
fn a_stopped_process_shows_as_a_monotonic_gap_far_beyond_the_loop_interval() {
    let mut c = Clocks::new();
    let mut d = SuspendDetector::new(c.mono, c.boot, LOOP_GAP);
    c.awake(LOOP_GAP);
    assert_eq!(d.observe(c.mono, c.boot), None);
    // SIGSTOP for 200 s: both clocks run, our loop did not.
    c.awake(Duration::from_secs(200));
    assert_eq!(d.observe(c.mono, c.boot), Some(Duration::from_secs(200) - LOOP_GAP));
    c.awake(LOOP_GAP);
    assert_eq!(d.observe(c.mono, c.boot), None);
}

#[test]
fn a_sleep_on_a_platform_whose_monotonic_clock_counts_it_is_seen_too() {
    // Windows: `Instant` (QueryPerformanceCounter) includes sleep, like the boot clock.
    let mut c = Clocks::new();
    let mut d = SuspendDetector::new(c.mono, c.boot, LOOP_GAP);
    c.awake(Duration::from_secs(600));
    assert_eq!(d.observe(c.mono, c.boot), Some(Duration::from_secs(600) - LOOP_GAP));
}

#[test]
fn a_clock_read_out_of_order_never_counts_as_time() {
    let mut c = Clocks::new();
    let mut d = SuspendDetector::new(c.mono, c.boot, LOOP_GAP);
    c.awake(LOOP_GAP);
    assert_eq!(d.observe(c.mono, c.boot), None);
    // An older reading (another thread's), then the present again.
    assert_eq!(d.observe(c.mono - Duration::from_millis(500), c.boot - Duration::from_secs(5)), None);
    c.awake(LOOP_GAP);
    assert_eq!(d.observe(c.mono, c.boot), None);
}
