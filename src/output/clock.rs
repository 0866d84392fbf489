//! Kernel boot-clock timestamps -> RFC 3339 UTC wall-clock time.

use std::cell::Cell;

use nix::time::{clock_gettime, ClockId};

use super::decimal::pair;

/// Converts CLOCK_BOOTTIME nanoseconds to Unix nanoseconds. The offset moves
/// when the wall clock is stepped, so the daemon refreshes it periodically.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

fn now_ns(id: ClockId) -> i128 {
    let ts = clock_gettime(id).expect("CLOCK_REALTIME and CLOCK_BOOTTIME always exist on Linux");
    i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec())
}

/// CLOCK_BOOTTIME now, in ns: the clock of BPF's `bpf_ktime_get_boot_ns`,
/// which stamps every event.
pub fn boot_ns_now() -> u64 {
    now_ns(ClockId::CLOCK_BOOTTIME) as u64
}

impl Clock {
    pub fn new() -> Clock {
        let mut c = Clock { offset_ns: 0 };
        c.refresh();
        c
    }

    /// A clock with a fixed offset (tests, benchmarks).
    pub fn with_offset(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    pub fn refresh(&mut self) {
        let boot = now_ns(ClockId::CLOCK_BOOTTIME);
        let real = now_ns(ClockId::CLOCK_REALTIME);
        self.offset_ns = real - boot;
    }

    pub fn unix_ns(&self, boot_ns: u64) -> i128 {
        i128::from(boot_ns) + self.offset_ns
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

thread_local! {
    /// The last day written, as `YYYY-MM-DD`: the timestamps of a batch
    /// nearly all fall on one day, and the calendar arithmetic is most of
    /// the cost of one.
    static LAST_DAY: Cell<(i64, [u8; 10])> = const { Cell::new((i64::MIN, [0; 10])) };
}

/// `YYYY-MM-DD` of days since the Unix epoch.
fn date(days: i64) -> [u8; 10] {
    let (y, m, d) = civil_from_days(days);
    let y = y.clamp(0, 9999) as u32;
    let mut b = *b"0000-00-00";
    b[0..2].copy_from_slice(&pair(y / 100));
    b[2..4].copy_from_slice(&pair(y));
    b[5..7].copy_from_slice(&pair(m));
    b[8..10].copy_from_slice(&pair(d));
    b
}

/// Append `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` for Unix nanoseconds.
pub fn write_rfc3339(out: &mut Vec<u8>, unix_ns: i128) {
    // i64 arithmetic where it fits (until 2262): an i128 division is a
    // library call, and this runs for several fields of every event.
    let (secs, nanos) = match i64::try_from(unix_ns) {
        Ok(ns) => (
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        ),
        Err(_) => (
            unix_ns.div_euclid(1_000_000_000) as i64,
            unix_ns.rem_euclid(1_000_000_000) as u32,
        ),
    };
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let day = LAST_DAY.with(|last| match last.get() {
        (d, b) if d == days => b,
        _ => {
            let b = date(days);
            last.set((days, b));
            b
        }
    });
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    b[..10].copy_from_slice(&day);
    b[11..13].copy_from_slice(&pair(sod / 3600));
    b[14..16].copy_from_slice(&pair(sod / 60 % 60));
    b[17..19].copy_from_slice(&pair(sod % 60));
    b[20] = b'0' + (nanos / 100_000_000) as u8;
    b[21..23].copy_from_slice(&pair(nanos / 1_000_000));
    b[23..25].copy_from_slice(&pair(nanos / 10_000));
    b[25..27].copy_from_slice(&pair(nanos / 100));
    b[27..29].copy_from_slice(&pair(nanos));
    out.extend_from_slice(&b);
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(ns: i128) -> String {
        let mut v = Vec::new();
        write_rfc3339(&mut v, ns);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            fmt(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            fmt(1_795_625_034_123_456_789),
            "2026-11-25T16:43:54.123456789Z"
        );
        assert_eq!(
            fmt(4_102_444_799_999_999_999),
            "2099-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn consecutive_timestamps_across_days_and_years_are_each_right() {
        // The day is cached: each write must still use its own.
        let cases = [
            (1_795_625_034_123_456_789, "2026-11-25T16:43:54.123456789Z"),
            (1_795_625_034_123_456_790, "2026-11-25T16:43:54.123456790Z"),
            (1_795_651_199_999_999_999, "2026-11-25T23:59:59.999999999Z"),
            (1_795_651_200_000_000_000, "2026-11-26T00:00:00.000000000Z"),
            (1_798_761_599_000_000_007, "2026-12-31T23:59:59.000000007Z"),
            (1_798_761_600_090_000_000, "2027-01-01T00:00:00.090000000Z"),
            (1_795_625_034_000_000_000, "2026-11-25T16:43:54.000000000Z"),
            (-1, "1969-12-31T23:59:59.999999999Z"),
        ];
        for (ns, want) in cases {
            assert_eq!(fmt(ns), want, "{ns}");
        }
    }

    #[test]
    fn boot_offset_tracks_realtime() {
        let c = Clock::new();
        let boot = now_ns(ClockId::CLOCK_BOOTTIME) as u64;
        let real = now_ns(ClockId::CLOCK_REALTIME);
        assert!((c.unix_ns(boot) - real).abs() < 1_000_000_000);
    }
}
