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

/// `secs` (Unix seconds) as a UTC date and time for messages people read, e.g.
/// `2026-11-25 18:30 UTC`. (Howard Hinnant's days-to-civil algorithm: no date crate for
/// one line of text.)
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let minutes_of_day = (secs % 86_400) / 60;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", minutes_of_day / 60, minutes_of_day % 60)
}

#[cfg(test)]
mod format_tests {
    use super::format_utc;

    #[test]
    fn dates_read_as_people_write_them() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_795_624_406), "2026-11-25 16:33 UTC");
        assert_eq!(format_utc(4_102_444_799), "2099-12-31 23:59 UTC");
    }
}
