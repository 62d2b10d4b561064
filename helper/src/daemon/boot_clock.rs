//! A clock that keeps counting while the machine sleeps, to hold against `Instant` (which,
//! on Linux and macOS, does not): see `engine::SuspendDetector`. Only differences between
//! two readings mean anything; the origin is the platform's (usually boot).

use std::time::Duration;

/// Time since boot, sleep included.
///
/// Linux: `CLOCK_BOOTTIME`, which is `CLOCK_MONOTONIC` plus the time spent suspended
/// (Rust's `Instant` is `CLOCK_MONOTONIC`, which stops during suspend).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn boot_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    timespec_to_duration(rc, &ts)
}

/// macOS: `CLOCK_MONOTONIC`, which on Darwin counts sleep (it is `mach_continuous_time`).
/// Rust's `Instant` there is `CLOCK_UPTIME_RAW` (`mach_absolute_time`), which stops while
/// the machine sleeps: the two differ by exactly the sleep.
#[cfg(target_os = "macos")]
#[allow(unsafe_code)]
pub fn boot_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    timespec_to_duration(rc, &ts)
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn timespec_to_duration(rc: libc::c_int, ts: &libc::timespec) -> Duration {
    if rc != 0 {
        // Both clocks exist on every supported kernel; should one not, report no time at
        // all rather than panic: the suspend detector then falls back to the monotonic gap.
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the boot-time clock");
        return Duration::ZERO;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// Windows: `GetTickCount64`, milliseconds since boot with sleep and hibernation included,
/// in steps of 10–16 ms (plenty against a 2 s threshold). `QueryInterruptTime` would be
/// finer but needs Windows 10 and is missing from wine 8.0, which runs our Windows tests;
/// `QueryUnbiasedInterruptTime` excludes sleep.
///
/// Rust's `Instant` on Windows is `QueryPerformanceCounter`, which counts sleep too
/// (rust-lang/rust#79462): there the two clocks agree across a sleep, and a suspend shows
/// as a monotonic gap far beyond the loop's wake-up interval instead (the detector's
/// second test).
#[cfg(windows)]
#[allow(unsafe_code)]
pub fn boot_time() -> Duration {
    // SAFETY: no arguments, no preconditions.
    Duration::from_millis(unsafe { windows_sys::Win32::System::SystemInformation::GetTickCount64() })
}

/// Elsewhere: no sleep-counting clock is wired up; the time since first use on the
/// monotonic clock. The suspend detector then sees no sleep from the clock difference and
/// relies on its monotonic-gap test.
#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub fn boot_time() -> Duration {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(std::time::Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_clock_moves_forward_with_the_monotonic_clock() {
        let (boot0, mono0) = (boot_time(), std::time::Instant::now());
        // Wait on the condition, not a fixed sleep: the boot clock has ticked.
        let deadline = mono0 + Duration::from_secs(5);
        while boot_time() == boot0 {
            assert!(std::time::Instant::now() < deadline, "the boot-time clock does not move");
            std::thread::yield_now();
        }
        let (boot1, mono1) = (boot_time(), std::time::Instant::now());
        assert!(boot0 > Duration::ZERO, "the boot-time clock reads zero");
        // Awake, the two clocks advance alike (within scheduling noise).
        let (db, dm) = (boot1 - boot0, mono1 - mono0);
        assert!(db.abs_diff(dm) < Duration::from_millis(500), "boot {db:?} vs monotonic {dm:?}");
    }
}
