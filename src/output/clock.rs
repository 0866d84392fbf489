//! Kernel boot-clock timestamps -> RFC 3339 UTC wall-clock time.

use nix::time::{clock_gettime, ClockId};

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
    let (y, m, d) = civil_from_days(days);
    let mut b = [0u8; 30];
    let mut put = |at: usize, v: u32, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, y.clamp(0, 9999) as u32, 4);
    put(5, m, 2);
    put(8, d, 2);
    put(11, sod / 3600, 2);
    put(14, sod / 60 % 60, 2);
    put(17, sod % 60, 2);
    put(20, nanos, 9);
    b[4] = b'-';
    b[7] = b'-';
    b[10] = b'T';
    b[13] = b':';
    b[16] = b':';
    b[19] = b'.';
    b[29] = b'Z';
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
    fn boot_offset_tracks_realtime() {
        let c = Clock::new();
        let boot = now_ns(ClockId::CLOCK_BOOTTIME) as u64;
        let real = now_ns(ClockId::CLOCK_REALTIME);
        assert!((c.unix_ns(boot) - real).abs() < 1_000_000_000);
    }
}
