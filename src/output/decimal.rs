//! Decimal digits without a copy call: itoa formats into its own buffer,
//! and appending that costs a `memcpy` call per number (seen in perf, with
//! some 35 numbers per exec). These write the digits in place.

/// Two decimal digits of each number below 100.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The two digits of `v % 100`.
pub fn pair(v: u32) -> [u8; 2] {
    let i = (v % 100) as usize * 2;
    [PAIRS[i], PAIRS[i + 1]]
}

fn digit_count(v: u64) -> usize {
    let mut n = 1;
    let mut p = 10u64;
    while n < 20 && v >= p {
        n += 1;
        p = p.wrapping_mul(10);
    }
    n
}

/// Append `v` in decimal.
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    let n = digit_count(v);
    let at = out.len();
    // A fixed-size append (no call), then cut to the digits.
    out.extend_from_slice(&[b'0'; 20]);
    out.truncate(at + n);
    let digits = &mut out[at..];
    let mut v = v;
    let mut end = n;
    while end >= 2 {
        digits[end - 2..end].copy_from_slice(&pair((v % 100) as u32));
        v /= 100;
        end -= 2;
    }
    if end == 1 {
        digits[0] = b'0' + v as u8;
    }
}

/// Append `v` in decimal, with a sign when negative.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    write_u64(out, v.unsigned_abs());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn u(v: u64) -> String {
        let mut out = b"x".to_vec();
        write_u64(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn edges_of_every_width() {
        assert_eq!(u(0), "x0");
        assert_eq!(u(9), "x9");
        assert_eq!(u(10), "x10");
        assert_eq!(u(99), "x99");
        assert_eq!(u(100), "x100");
        assert_eq!(u(4026531836), "x4026531836");
        assert_eq!(u(u64::MAX), "x18446744073709551615");
        let mut out = Vec::new();
        write_i64(&mut out, i64::MIN);
        assert_eq!(out, i64::MIN.to_string().as_bytes());
    }

    proptest! {
        #[test]
        fn same_as_std(v in any::<u64>(), w in any::<i64>(), shift in 0u32..64) {
            let v = v >> shift;
            let mut out = Vec::new();
            write_u64(&mut out, v);
            prop_assert_eq!(out, v.to_string().into_bytes());
            let mut out = Vec::new();
            write_i64(&mut out, w >> shift);
            prop_assert_eq!(out, (w >> shift).to_string().into_bytes());
        }
    }
}
