//! Escaping of hostile bytes for the text and JSON outputs.

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

/// Append `bytes` for a human, inside double quotes, so that no input can
/// end the quoted string, split the line or move the cursor: `"` and `\` get
/// a backslash, \n \r \t are spelled out, other controls and invalid bytes
/// become `\xNN`, deceptive Unicode becomes `\u{NNNN}`.
pub fn text_quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x80 && c.is_ascii_control() => hex_byte(out, c as u8),
                c if c.is_control() || is_deceptive(c) => {
                    out.extend_from_slice(format!("\\u{{{:04X}}}", c as u32).as_bytes())
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        for &b in chunk.invalid() {
            hex_byte(out, b);
        }
    }
    out.push(b'"');
}

fn hex_byte(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[
        b'\\',
        b'x',
        HEX[usize::from(b >> 4)],
        HEX[usize::from(b & 15)],
    ]);
}

/// Append `bytes` as a JSON string. Invalid UTF-8 becomes U+FFFD (the caller
/// says whether that happened and ships the raw bytes separately). Controls,
/// DEL and U+2028/U+2029 are `\u` escapes, so the line stays one line for
/// any JSON or JavaScript reader.
pub fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    json_escape(out, bytes);
    out.push(b'"');
}

/// [`json_string`] without the quotes, for strings written in pieces.
pub fn json_escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid().as_bytes();
        let mut plain_from = 0;
        let mut i = 0;
        while i < valid.len() {
            let b = valid[i];
            let esc: Option<&[u8]> = match b {
                b'"' => Some(b"\\\""),
                b'\\' => Some(b"\\\\"),
                b'\n' => Some(b"\\n"),
                b'\r' => Some(b"\\r"),
                b'\t' => Some(b"\\t"),
                0x00..=0x1f | 0x7f => None,
                // U+2028 / U+2029: E2 80 A8 / E2 80 A9
                0xE2 if valid.get(i + 1) == Some(&0x80)
                    && matches!(valid.get(i + 2), Some(0xA8 | 0xA9)) =>
                {
                    None
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            out.extend_from_slice(&valid[plain_from..i]);
            match esc {
                Some(e) => {
                    out.extend_from_slice(e);
                    i += 1;
                }
                None if b == 0xE2 => {
                    out.extend_from_slice(if valid[i + 2] == 0xA8 {
                        b"\\u2028"
                    } else {
                        b"\\u2029"
                    });
                    i += 3;
                }
                None => {
                    out.extend_from_slice(b"\\u00");
                    hex_digits(out, b);
                    i += 1;
                }
            }
            plain_from = i;
        }
        out.extend_from_slice(&valid[plain_from..]);
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{FFFD}".as_bytes());
        }
    }
}

fn hex_digits(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// Standard base64 (RFC 4648, padded) of `bytes`, appended as a JSON string.
pub fn json_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.push(b'"');
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63]);
        out.push(A[(n >> 12) as usize & 63]);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63]
        } else {
            b'='
        });
    }
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
