//! Escaping of hostile bytes for the text and JSON outputs.
//!
//! Both escapers share one scanner: runs of plain ASCII are found eight bytes
//! at a time and copied whole; everything else is decoded (`utf8_chunks`,
//! the same "maximal subpart" rule as `String::from_utf8_lossy` for bad
//! bytes) and handed to the format's rules.

/// A format's escaping rules.
trait Rules {
    /// Write the escape for an ASCII byte that is not plain (a control, DEL,
    /// `"` or `\\`).
    fn ascii(out: &mut Vec<u8>, b: u8);
    /// Write `c` (not ASCII), escaped if the format needs it.
    fn wide(out: &mut Vec<u8>, c: char, utf8: &[u8]);
    /// Write a maximal invalid subsequence.
    fn invalid(out: &mut Vec<u8>, bytes: &[u8]);
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// True when no byte of `w` is zero.
#[inline(always)]
fn no_zero_byte(v: u64) -> bool {
    v.wrapping_sub(LO) & !v & HI == 0
}

/// True when all eight bytes are printable ASCII other than `"` and `\\`.
#[inline(always)]
fn plain_word(w: u64) -> bool {
    w & HI == 0
        && w.wrapping_sub(LO * 0x20) & !w & HI == 0
        && no_zero_byte(w ^ (LO * u64::from(b'"')))
        && no_zero_byte(w ^ (LO * u64::from(b'\\')))
        && no_zero_byte(w ^ (LO * 0x7f))
}

#[inline(always)]
fn plain_byte(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// Sixteen bytes at a time with SSE2 (every x86-64 has it): the index of the
/// first byte at or after `i` that is not plain, or the end.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn skip_plain_wide(bytes: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::*;
    /// Bit n set when byte n of the 16 at `at` is not plain.
    #[inline(always)]
    fn not_plain(bytes: &[u8], at: usize) -> u32 {
        debug_assert!(at + 16 <= bytes.len());
        // SAFETY: callers keep `at + 16 <= len`, so the unaligned 16-byte
        // load stays inside `bytes`; SSE2 is part of the x86-64 baseline.
        unsafe {
            let v = _mm_loadu_si128(bytes.as_ptr().add(at).cast());
            // +1 maps 0x20..=0x7e to 0x21..=0x7f, the only bytes above 0x20
            // as signed: controls, DEL and all bytes from 0x80 fall out.
            let shifted = _mm_add_epi8(v, _mm_set1_epi8(1));
            let printable = _mm_cmpgt_epi8(shifted, _mm_set1_epi8(0x20));
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let bs = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            let plain = _mm_andnot_si128(_mm_or_si128(quote, bs), printable);
            !(_mm_movemask_epi8(plain) as u32) & 0xffff
        }
    }
    while i + 32 <= bytes.len() {
        let m = not_plain(bytes, i) | not_plain(bytes, i + 16) << 16;
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
        i += 32;
    }
    if i + 16 <= bytes.len() {
        let m = not_plain(bytes, i);
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
        i += 16;
    }
    i
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn skip_plain_wide(_bytes: &[u8], i: usize) -> usize {
    i
}

/// The index of the first byte at or after `i` that is not plain printable
/// ASCII (a control, DEL, `"`, `\\` or any byte from 0x80), or the end.
#[inline]
fn skip_plain(bytes: &[u8], i: usize) -> usize {
    let mut i = skip_plain_wide(bytes, i);
    while let Some(w) = bytes.get(i..i + 8) {
        if !plain_word(u64::from_le_bytes(w.try_into().expect("8 bytes"))) {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && plain_byte(bytes[i]) {
        i += 1;
    }
    i
}

/// True when `bytes` is printable ASCII without `"` or `\\`: it is its own
/// escape in both formats, so it can be copied as it is.
pub fn is_plain(bytes: &[u8]) -> bool {
    skip_plain(bytes, 0) == bytes.len()
}

/// Escape `bytes` by the format's rules. The UTF-8 walk is the standard
/// library's (`utf8_chunks`): invalid sequences come out in maximal
/// subparts, as `String::from_utf8_lossy` sees them.
fn escape<R: Rules>(out: &mut Vec<u8>, bytes: &[u8]) {
    // Plain ASCII is the common case: copied with no UTF-8 check at all.
    let plain = skip_plain(bytes, 0);
    out.extend_from_slice(&bytes[..plain]);
    let bytes = &bytes[plain..];
    if bytes.is_empty() {
        return;
    }
    out.reserve(bytes.len());
    // from_utf8 checks a word at a time where utf8_chunks goes byte by byte.
    if let Ok(s) = std::str::from_utf8(bytes) {
        return escape_valid::<R>(out, s);
    }
    for chunk in bytes.utf8_chunks() {
        escape_valid::<R>(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            R::invalid(out, chunk.invalid());
        }
    }
}

fn escape_valid<R: Rules>(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut run = 0; // start of the pending verbatim run
    let mut i = 0;
    while i < bytes.len() {
        i = skip_plain(bytes, i);
        let Some(&b) = bytes.get(i) else { break };
        out.extend_from_slice(&bytes[run..i]);
        if b < 0x80 {
            R::ascii(out, b);
            i += 1;
        } else if let Some(c) = s.get(i..).and_then(|rest| rest.chars().next()) {
            // `i` is on a character boundary: it only ever moves by whole characters.
            let n = c.len_utf8();
            R::wide(out, c, &bytes[i..i + n]);
            i += n;
        } else {
            break;
        }
        run = i;
    }
    out.extend_from_slice(&bytes[run..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Characters shown escaped in text output besides C0/C1 controls: they can
/// reorder or hide text on a terminal (bidi overrides, zero-width marks,
/// line/paragraph separators, BOM).
fn is_deceptive(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}'
        | '\u{FEFF}')
}

/// The backslash escapes both formats share.
fn short_escape(b: u8) -> Option<&'static [u8]> {
    match b {
        b'"' => Some(b"\\\""),
        b'\\' => Some(b"\\\\"),
        b'\n' => Some(b"\\n"),
        b'\r' => Some(b"\\r"),
        b'\t' => Some(b"\\t"),
        _ => None,
    }
}

struct Text;

impl Rules for Text {
    fn ascii(out: &mut Vec<u8>, b: u8) {
        match short_escape(b) {
            Some(e) => out.extend_from_slice(e),
            None => Text::invalid(out, &[b]),
        }
    }

    fn wide(out: &mut Vec<u8>, c: char, utf8: &[u8]) {
        if c.is_control() || is_deceptive(c) {
            out.extend_from_slice(format!("\\u{{{:04X}}}", c as u32).as_bytes());
        } else {
            out.extend_from_slice(utf8);
        }
    }

    fn invalid(out: &mut Vec<u8>, bytes: &[u8]) {
        for &b in bytes {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        }
    }
}

struct Json;

impl Rules for Json {
    fn ascii(out: &mut Vec<u8>, b: u8) {
        match short_escape(b) {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]),
        }
    }

    fn wide(out: &mut Vec<u8>, c: char, utf8: &[u8]) {
        match c {
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            _ => out.extend_from_slice(utf8),
        }
    }

    fn invalid(out: &mut Vec<u8>, _bytes: &[u8]) {
        out.extend_from_slice("\u{FFFD}".as_bytes());
    }
}

/// Append `bytes` for a human, inside double quotes, so that no input can
/// end the quoted string, split the line or move the cursor: `"` and `\` get
/// a backslash, \n \r \t are spelled out, other controls and invalid bytes
/// become `\xNN`, C1 controls and deceptive Unicode become `\u{NNNN}`.
pub fn text_quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    escape::<Text>(out, bytes);
    out.push(b'"');
}

/// Append `bytes` as a JSON string. Invalid UTF-8 becomes U+FFFD, as
/// `String::from_utf8_lossy` does (the caller says whether that happened and
/// ships the raw bytes separately). Controls, DEL and U+2028/U+2029 are `\u`
/// escapes, so the line stays one line for any JSON or JavaScript reader.
pub fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    json_escape(out, bytes);
    out.push(b'"');
}

/// [`json_string`] without the quotes, for strings written in pieces.
pub fn json_escape(out: &mut Vec<u8>, bytes: &[u8]) {
    escape::<Json>(out, bytes);
}

/// Standard base64 (RFC 4648, padded) of `bytes`, appended as a JSON string.
pub fn json_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    use base64::Engine;
    out.push(b'"');
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(bytes, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + n);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &[u8]) -> String {
        let mut v = Vec::new();
        text_quoted(&mut v, b);
        String::from_utf8(v).unwrap()
    }

    fn json(b: &[u8]) -> String {
        let mut v = Vec::new();
        json_string(&mut v, b);
        String::from_utf8(v).unwrap()
    }

    fn b64(b: &[u8]) -> String {
        let mut v = Vec::new();
        json_base64(&mut v, b);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn text_escapes_everything_that_could_forge_a_line() {
        assert_eq!(text(b"a b"), r#""a b""#);
        assert_eq!(text(b"x\ny"), r#""x\ny""#);
        assert_eq!(text(b"\r\t"), r#""\r\t""#);
        assert_eq!(text(b"\x1b[2J"), r#""\x1b[2J""#);
        assert_eq!(text(b"\x7f\x00"), r#""\x7f\x00""#);
        assert_eq!(text(b"q\"uote\\"), r#""q\"uote\\""#);
        assert_eq!(text(b"\xff\xfe"), r#""\xff\xfe""#);
        assert_eq!(text("\u{202E}evil".as_bytes()), r#""\u{202E}evil""#);
        assert_eq!(text("\u{0085}".as_bytes()), r#""\u{0085}""#);
        assert_eq!(text("héllo ✓".as_bytes()), "\"héllo ✓\"");
        assert_eq!(text(b""), r#""""#);
    }

    #[test]
    fn text_output_is_printable_ascii_or_plain_unicode() {
        let all: Vec<u8> = (0..=255u8).collect();
        let t = text(&all);
        assert!(!t.chars().any(|c| c.is_control()), "{t}");
    }

    #[test]
    fn json_escapes_and_round_trips() {
        for s in [
            "plain",
            "a\"b\\c",
            "nl\nand\rcr\ttab",
            "\u{1b}[31m",
            "\u{7f}",
            "\u{2028}\u{2029}",
            "é✓😀",
            "",
        ] {
            let j = json(s.as_bytes());
            assert!(!j.contains('\n') && !j.contains('\u{2028}'), "{j}");
            let back: String = serde_json::from_str(&j).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn json_replaces_invalid_utf8() {
        let back: String = serde_json::from_str(&json(b"a\xffb\xc3")).unwrap();
        assert_eq!(back, "a\u{FFFD}b\u{FFFD}");
    }

    /// Deterministic pseudo-random byte strings biased to tricky bytes.
    fn samples() -> Vec<Vec<u8>> {
        let pool: &[u8] = b"a\"\\\n\x1b\x7f\x00\xc3\xa9\xe2\x80\xa8\xed\xa0\x80\xf0\x9f\x98\x80\xf4\x90\xff\xc0\xe0 ";
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        (0..5000)
            .map(|i| {
                (0..(i % 40))
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        pool[(x % pool.len() as u64) as usize]
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn json_matches_from_utf8_lossy_on_arbitrary_bytes() {
        for s in samples() {
            let j = json(&s);
            assert!(!j.contains('\n'), "{j}");
            let back: String = serde_json::from_str(&j).unwrap_or_else(|e| panic!("{e}: {j}"));
            assert_eq!(back, String::from_utf8_lossy(&s), "{s:x?}");
        }
    }

    #[test]
    fn text_never_emits_controls_on_arbitrary_bytes() {
        for s in samples() {
            let t = text(&s);
            assert!(
                !t.chars().any(|c| c.is_control() || is_deceptive(c)),
                "{t:?}"
            );
            assert!(t.starts_with('"') && t.ends_with('"'));
            // Quotes inside are always escaped: the string cannot end early.
            let inner = &t[1..t.len() - 1];
            let unescaped_quote = inner.char_indices().any(|(i, c)| {
                c == '"' && inner[..i].chars().rev().take_while(|&p| p == '\\').count() % 2 == 0
            });
            assert!(!unescaped_quote, "{t}");
        }
    }

    #[test]
    fn long_plain_runs_are_copied_verbatim() {
        let s = "abcdefghijklmnopqrstuvwxyz0123456789 -_./:=".repeat(10);
        assert_eq!(json(s.as_bytes()), format!("\"{s}\""));
        assert_eq!(text(s.as_bytes()), format!("\"{s}\""));
        let mut with_quote = s.clone();
        with_quote.insert(77, '"');
        assert_eq!(
            json(with_quote.as_bytes()),
            format!("\"{}\"", with_quote.replace('"', "\\\""))
        );
    }

    /// Each byte that is not plain, at every offset of a 16-byte block and
    /// of the 8-byte and byte-wise tails: the wide scanner stops at it.
    #[test]
    fn the_scanner_stops_at_every_non_plain_byte_at_every_offset() {
        let specials: &[u8] = &[0x00, 0x1f, b'"', b'\\', 0x7f, 0x80, 0xc3, 0xff];
        for len in [1usize, 7, 8, 15, 16, 17, 31, 32, 33, 47] {
            for pos in 0..len {
                for &b in specials {
                    let mut v = vec![b'a'; len];
                    v[pos] = b;
                    assert_eq!(skip_plain(&v, 0), pos, "len {len} pos {pos} byte {b:#x}");
                    assert!(!is_plain(&v));
                    let back: String = serde_json::from_str(&json(&v)).unwrap();
                    assert_eq!(back, String::from_utf8_lossy(&v), "{v:x?}");
                    assert!(!text(&v).chars().any(|c| c.is_control()));
                }
                assert!(is_plain(&vec![b' '; len]));
                assert!(is_plain(&vec![b'~'; len]));
            }
        }
        // Plain is exactly printable ASCII less the quote and the backslash.
        for b in 0..=255u8 {
            let plain = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
            assert_eq!(
                is_plain(
                    &[b'x'; 20]
                        .iter()
                        .chain([b].iter())
                        .copied()
                        .collect::<Vec<_>>()
                ),
                plain,
                "{b:#x}"
            );
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases: [(&[u8], &str); 7] = [
            (b"", ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(b64(input), format!("\"{want}\""));
        }
        assert_eq!(b64(b"\xff\xfe\xfd"), "\"//79\"");
    }
}
