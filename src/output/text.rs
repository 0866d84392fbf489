//! One line per exec for people, rendered from the field list
//! ([`crate::fields::FIELDS`]). Every string from the traced process is
//! quoted and escaped, so no argument can split the line, forge another, or
//! drive the terminal.

use super::clock::{write_rfc3339, Clock};
use super::decimal::{write_i64, write_u64};
use super::escape::text_quoted;
use crate::event::ExecEvent;
use std::sync::OnceLock;

use crate::fields::{Field, List, PerKind, Text, Value};

/// Which fields the line shows: the leading ones (the timestamp), then
/// the message's.
pub struct TextLayout {
    prefix: PerKind,
    shown: PerKind,
}

impl TextLayout {
    /// The fields `keep` selects.
    pub fn new(keep: impl Fn(&Field) -> bool) -> TextLayout {
        TextLayout {
            prefix: PerKind::new(|f| matches!(f.text, Text::Prefix) && keep(f)),
            shown: PerKind::new(|f| !matches!(f.text, Text::Prefix | Text::Absent(_)) && keep(f)),
        }
    }

    /// Every field.
    pub fn all() -> &'static TextLayout {
        static ALL: OnceLock<TextLayout> = OnceLock::new();
        ALL.get_or_init(|| TextLayout::new(|_| true))
    }
}

/// Append one line (with its newline) for `ev`: the leading field (the
/// timestamp), then the message.
pub fn write_event(out: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock) {
    write_line(out, ev, clock, TextLayout::all());
}

/// [`write_event`] with the fields of `layout`.
pub fn write_line(out: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock, layout: &TextLayout) {
    for f in layout.prefix.of(ev) {
        if let Some(v) = (f.value)(ev) {
            write_value(out, &v, clock);
            out.push(b' ');
        }
    }
    write_message(out, ev, clock, layout);
    out.push(b'\n');
}

/// The line without its leading timestamp and newline (journald's MESSAGE).
pub fn write_message(out: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock, layout: &TextLayout) {
    let start = out.len();
    for f in layout.shown.of(ev) {
        let (label, shown) = match f.text {
            Text::Label(l) => (Some(l), true),
            Text::LabelIf(l, cond) => (Some(l), cond(ev)),
            Text::Bare => (None, true),
            Text::BareIf(cond) => (None, cond(ev)),
            Text::Prefix | Text::Absent(_) => continue,
        };
        if !shown {
            continue;
        }
        let Some(v) = (f.value)(ev) else { continue };
        if let Value::Bool(b) = v {
            // A flag: its label when true, nothing when false.
            if b {
                sep(out, start);
                out.extend_from_slice(label.unwrap_or(f.json).as_bytes());
            }
            continue;
        }
        sep(out, start);
        if let Some(l) = label {
            out.extend_from_slice(l.as_bytes());
            out.push(b'=');
        }
        write_value(out, &v, clock);
    }
}

fn sep(out: &mut Vec<u8>, start: usize) {
    if out.len() > start {
        out.push(b' ');
    }
}

fn write_list(out: &mut Vec<u8>, l: &List<'_>) {
    out.push(b'[');
    let mut first = true;
    l.for_each(|item| {
        if !first {
            out.push(b' ');
        }
        first = false;
        text_quoted(out, item);
    });
    out.push(b']');
}

fn write_value(out: &mut Vec<u8>, v: &Value<'_>, clock: &Clock) {
    match v {
        Value::Bytes(b) => text_quoted(out, b),
        // execwatch's own words: no escaping needed, none applied.
        Value::Text(s) => out.extend_from_slice(s.as_bytes()),
        Value::Num(x) | Value::Id(x) => write_u64(out, *x),
        Value::Int(x) => write_i64(out, *x),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::BootTime(ns) => write_rfc3339(out, clock.unix_ns(*ns)),
        Value::List(l) | Value::Base64List(l) | Value::Joined(l, _) => write_list(out, l),
        Value::Base64(b) => text_quoted(out, b),
        Value::Dev(..) | Value::Octal(_) | Value::UnixTime(..) => {
            v.write_formatted(out);
        }
        Value::Image(i) => text_quoted(out, i.executable()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ev: &ExecEvent) -> String {
        let mut out = Vec::new();
        write_event(&mut out, ev, &Clock::with_offset(0));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_plain_exec_reads_well() {
        let mut ev = ExecEvent {
            seq: 3,
            pid: 10,
            tid: 10,
            ns_pid: 10,
            ppid: 1,
            argc: 2,
            comm: b"ls".to_vec(),
            caller_comm: b"bash".to_vec(),
            executable: b"/usr/bin/ls".to_vec(),
            filename: b"/usr/bin/ls".to_vec(),
            ..Default::default()
        };
        ev.set_args([&b"ls"[..], b"-l"]);
        assert_eq!(
            line(&ev),
            "1970-01-01T00:00:00.000000000Z exec seq=3 pid=10 ppid=1 \
             start=1970-01-01T00:00:00.000000000Z comm=\"ls\" \
             exe=\"/usr/bin/ls\" argv=[\"ls\" \"-l\"] uid=0 gid=0 caller=\"bash\" \
             cgroup-id=0 cgroup-unresolved\n"
        );
    }

    #[test]
    fn a_failure_and_unreadable_args_say_so() {
        let ev = ExecEvent {
            errno: Some(2),
            argc: 1,
            args_read_failed: true,
            ..Default::default()
        };
        let l = line(&ev);
        assert!(l.contains(" exec failure seq=0 error=ENOENT "), "{l}");
        assert!(l.contains(" argc=1 "), "{l}");
        assert!(l.contains(" args-incomplete"), "{l}");
    }
}
