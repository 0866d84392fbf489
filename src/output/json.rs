//! One ECS JSON object per exec, rendered from the field list
//! ([`crate::fields::FIELDS`]); docs/schema.md documents every field.

use std::sync::OnceLock;

use super::clock::{write_rfc3339, Clock};
use super::decimal::{write_i64, write_u64};
use super::escape::{json_base64, json_escape, json_string};
use crate::event::Action;
use crate::event::ExecEvent;
use crate::fields::{Field, List, On, Value, FIELDS};

pub use crate::fields::ECS_VERSION;

/// Each field's path split into object keys, the keys interned so that the
/// writer compares numbers, not strings, per event.
struct Path {
    value: Getter,
    /// (key id, `"key":{`) of each enclosing object, outermost first.
    objects: Vec<(u16, Key)>,
    /// `"leaf":`
    leaf: Key,
    /// The object the field is in: [`ROOT`], or its key id + 1.
    scope: u16,
    /// What comes before the value when the last field written is in
    /// `step_from` (the scope of the field before it in the layout, so
    /// nearly always): closing braces, comma, keys.
    step: Step,
    step_from: u16,
    /// Steps from the scopes of fields further back, for when those in
    /// between were absent (a host process has no container or Kubernetes
    /// fields): the scopes, nearest first, and a step from each.
    more_scopes: Box<[u16]>,
    more_steps: Box<[Step]>,
}

/// Earlier scopes that [`Path::more_steps`] has steps from: enough to pass
/// over the container, Kubernetes and orchestrator fields.
const MORE_STEPS: usize = 8;

/// The scope of a field at the top level.
const ROOT: u16 = 0;
/// The scope before any field is written.
const NONE_YET: u16 = u16::MAX;

/// Longest step kept inline; a longer one is worked out per event.
const STEP_MAX: usize = 64;

/// Bytes between two values, made once per pair of neighbouring fields,
/// padded like [`Key`] for a fixed-size copy.
struct Step {
    bytes: [u8; STEP_MAX],
    /// 0: does not fit, work it out per event.
    len: u8,
}

/// Longest `"key":{` kept inline (a test checks every key fits).
const KEY_MAX: usize = 40;

/// `"k":` followed by `open` (empty, or `{`), made once per key, padded so
/// that it is copied with a fixed-size move: a memcpy call per key cost
/// more than the rest of the key's writing (seen in perf).
struct Key {
    bytes: [u8; KEY_MAX],
    len: u8,
}

fn key_bytes(k: &str, open: &str) -> Key {
    let text = format!("\"{k}\":{open}");
    let mut bytes = [b' '; KEY_MAX];
    let len = text.len().min(KEY_MAX);
    bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
    Key {
        bytes,
        len: len as u8,
    }
}

type Getter = for<'a> fn(&'a ExecEvent) -> Option<Value<'a>>;

/// The fields each kind of event carries, in list order: the writer walks
/// only those.
pub struct Layout {
    exec: Vec<Path>,
    exit: Vec<Path>,
}

impl Layout {
    /// Only the fields with these JSON paths (the benchmark renders the
    /// fields of an older build with it, to compare the two writers).
    pub fn only(json_paths: &[&str]) -> Layout {
        Layout::new(|f| json_paths.contains(&f.json))
    }

    /// The fields `keep` selects, as the other formats' layouts take them.
    pub fn new(keep: impl Fn(&Field) -> bool) -> Layout {
        Layout {
            exec: paths(|f| f.on != On::Exit && keep(f)),
            exit: paths(|f| f.on != On::Exec && keep(f)),
        }
    }
}

fn layout() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| Layout::new(|_| true))
}

/// The paths of the fields `keep` selects, in list order.
fn paths(keep: impl Fn(&Field) -> bool) -> Vec<Path> {
    let mut paths = unstepped_paths(keep);
    for i in 0..paths.len() {
        let from = i.checked_sub(1).map(|p| &paths[p]);
        let step = make_step(from, &paths[i]);
        let step_from = from.map_or(NONE_YET, |p| p.scope);
        // The nearest earlier fields of other scopes (and the start).
        let mut scopes = vec![step_from];
        let mut steps = Vec::new();
        let earlier = paths[..i.saturating_sub(1)].iter().rev().map(Some);
        for from in earlier.chain([None]) {
            let scope = from.map_or(NONE_YET, |p| p.scope);
            if steps.len() == MORE_STEPS || scopes.contains(&scope) {
                continue;
            }
            scopes.push(scope);
            steps.push(make_step(from, &paths[i]));
        }
        scopes.remove(0);
        let path = &mut paths[i];
        path.step = step;
        path.step_from = step_from;
        path.more_scopes = scopes.into_boxed_slice();
        path.more_steps = steps.into_boxed_slice();
    }
    paths
}

/// The step from `from` to `to`; of length 0 (worked out per event) if it
/// does not fit.
fn make_step(from: Option<&Path>, to: &Path) -> Step {
    let mut bytes = Vec::new();
    transition(&mut bytes, from, to);
    let mut step = Step {
        bytes: [b' '; STEP_MAX],
        len: 0,
    };
    if bytes.len() <= STEP_MAX {
        step.bytes[..bytes.len()].copy_from_slice(&bytes);
        step.len = bytes.len() as u8;
    }
    step
}

fn unstepped_paths(keep: impl Fn(&Field) -> bool) -> Vec<Path> {
    let mut ids: Vec<&'static str> = Vec::new();
    FIELDS
        .iter()
        .filter(|f| keep(f))
        .map(|f| {
            let mut segs: Vec<&'static str> = f.json.split('.').collect();
            let leaf = segs.pop().unwrap_or(f.json);
            let mut prefix = String::new();
            let objects: Vec<(u16, Key)> = segs
                .into_iter()
                .map(|s| {
                    // Intern by full prefix: `a.x` and `b.x` are different objects.
                    prefix.push_str(s);
                    prefix.push('.');
                    let id = match ids.iter().position(|p| *p == prefix.as_str()) {
                        Some(i) => i,
                        None => {
                            ids.push(Box::leak(prefix.clone().into_boxed_str()));
                            ids.len() - 1
                        }
                    };
                    (id as u16, key_bytes(s, "{"))
                })
                .collect();
            Path {
                value: f.value,
                scope: objects.last().map_or(ROOT, |o| o.0 + 1),
                objects,
                leaf: key_bytes(leaf, ""),
                step: Step {
                    bytes: [b' '; STEP_MAX],
                    len: 0,
                },
                step_from: NONE_YET,
                more_scopes: Box::new([]),
                more_steps: Box::new([]),
            }
        })
        .collect()
}

#[inline(always)]
fn key(out: &mut Vec<u8>, k: &Key) {
    let end = out.len() + usize::from(k.len);
    out.extend_from_slice(&k.bytes);
    out.truncate(end);
}

/// What comes between the value of `from` (none: the line's opening brace)
/// and the value of `to`: the objects `from` is in and `to` is not are
/// closed, those `to` is in are opened, then its key. Every object open
/// after `from` has a member already, so each needs a comma; a new one
/// does not.
fn transition(out: &mut Vec<u8>, from: Option<&Path>, to: &Path) {
    let objs = &to.objects;
    let Some(from) = from else {
        for (_, k) in objs {
            key(out, k);
        }
        key(out, &to.leaf);
        return;
    };
    let open = &from.objects;
    let same = open
        .iter()
        .zip(objs)
        .take_while(|(a, b)| a.0 == b.0)
        .count();
    for _ in same..open.len() {
        out.push(b'}');
    }
    out.push(b',');
    for (_, k) in &objs[same..] {
        key(out, k);
    }
    key(out, &to.leaf);
}

/// Append one JSON line (with its newline) for `ev`.
pub fn write_event(out: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock) {
    write_fields(out, ev, clock, layout());
}

/// [`write_event`] with the fields of `layout` only.
pub fn write_fields(out: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock, layout: &Layout) {
    out.push(b'{');
    let paths = match ev.action {
        Action::Exec => &layout.exec,
        Action::Exit => &layout.exit,
    };
    // The field last written, and its scope.
    let mut last: Option<&Path> = None;
    let mut last_scope = NONE_YET;
    for path in paths {
        // Matched in place: moving the returned value out costs a
        // store-forwarding stall per field (seen in perf).
        let value = (path.value)(ev);
        let Some(v) = value.as_ref() else { continue };
        // What comes between depends only on the scope last written in.
        let step = if last_scope == path.step_from {
            Some(&path.step)
        } else {
            path.more_scopes
                .iter()
                .position(|&scope| scope == last_scope)
                .map(|i| &path.more_steps[i])
        };
        match step {
            Some(step) if step.len != 0 => {
                let end = out.len() + usize::from(step.len);
                out.extend_from_slice(&step.bytes);
                out.truncate(end);
            }
            _ => transition(out, last, path),
        }
        write_value(out, v, clock);
        last = Some(path);
        last_scope = path.scope;
    }
    for _ in 0..last.map_or(0, |p| p.objects.len()) {
        out.push(b'}');
    }
    out.extend_from_slice(b"}\n");
}

/// A list whose every element is known to be plain printable ASCII: its
/// own JSON escape, so it is copied, not scanned again.
fn known_plain(list: &List<'_>) -> bool {
    match list {
        List::Args(ev) => ev.args_plain(),
        List::Image(i) => i.args_plain(),
        List::Static(_) | List::Privileges(_) => true,
        List::One(_) | List::Env(_) => false,
    }
}

fn plain_string(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(b);
    out.push(b'"');
}

/// A JSON array of strings, copied where they are known plain.
fn write_strings(out: &mut Vec<u8>, list: &List<'_>) {
    if known_plain(list) {
        write_list(out, list, plain_string)
    } else {
        write_list(out, list, json_string)
    }
}

fn write_list(out: &mut Vec<u8>, list: &List<'_>, item: fn(&mut Vec<u8>, &[u8])) {
    out.push(b'[');
    let mut first = true;
    list.for_each(|b| {
        if !first {
            out.push(b',');
        }
        first = false;
        item(out, b);
    });
    out.push(b']');
}

fn write_value(out: &mut Vec<u8>, v: &Value<'_>, clock: &Clock) {
    match v {
        Value::Bytes(b) => json_string(out, b),
        Value::Text(s) => json_string(out, s.as_bytes()),
        Value::Num(x) => write_u64(out, *x),
        Value::Int(x) => write_i64(out, *x),
        Value::Id(x) => {
            out.push(b'"');
            write_u64(out, *x);
            out.push(b'"');
        }
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::BootTime(ns) => {
            out.push(b'"');
            write_rfc3339(out, clock.unix_ns(*ns));
            out.push(b'"');
        }
        Value::List(l) => write_strings(out, l),
        Value::Base64List(l) => write_list(out, l, json_base64),
        Value::Base64(b) => json_base64(out, b),
        Value::Dev(..) | Value::Octal(_) | Value::UnixTime(..) => {
            out.push(b'"');
            v.write_formatted(out);
            out.push(b'"');
        }
        Value::Joined(l, max) => write_joined(out, l, *max),
        Value::Image(i) => {
            out.extend_from_slice(b"[{\"executable\":");
            json_string(out, i.executable());
            out.extend_from_slice(b",\"args\":");
            write_strings(out, &List::Image(i));
            out.extend_from_slice(b"}]");
        }
    }
}

/// The elements joined by spaces, cut at `max` bytes on a UTF-8 boundary.
fn write_joined(out: &mut Vec<u8>, list: &List<'_>, max: usize) {
    if let List::Args(ev) = list {
        if ev.args_plain() {
            // The arguments are one NUL-separated area: whole, it is the
            // joined line once each NUL is a space (one copy, not one each).
            let (area, ends) = ev.args_area();
            let text = &area[..ends.last().copied().unwrap_or(0)];
            if text.len() <= max {
                out.push(b'"');
                let at = out.len();
                out.extend_from_slice(text);
                for b in &mut out[at..] {
                    *b = if *b == 0 { b' ' } else { *b };
                }
                out.push(b'"');
                return;
            }
        }
    }
    let escape: fn(&mut Vec<u8>, &[u8]) = if known_plain(list) {
        |out, b| out.extend_from_slice(b)
    } else {
        json_escape
    };
    out.push(b'"');
    let mut budget = max;
    let mut first = true;
    let mut cut = false;
    list.for_each(|item| {
        if cut {
            return;
        }
        if !first {
            if budget == 0 {
                cut = true;
                return;
            }
            out.push(b' ');
            budget -= 1;
        }
        first = false;
        let mut take = item.len().min(budget);
        // Do not split a UTF-8 sequence: back up to a character boundary.
        while take > 0 && take < item.len() && (item[take] & 0xC0) == 0x80 {
            take -= 1;
        }
        cut = take < item.len();
        escape(out, &item[..take]);
        budget -= take;
    });
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::COMMAND_LINE_MAX;

    fn render(ev: &ExecEvent) -> serde_json::Value {
        let mut out = Vec::new();
        write_event(&mut out, ev, &Clock::with_offset(0));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn command_line_is_capped_but_args_are_whole() {
        let mut ev = ExecEvent::default();
        let long = "é".repeat(3000); // 6000 bytes, two-byte characters
        ev.set_args([&b"prog"[..], long.as_bytes(), b"tail"]);
        ev.argc = 3;
        let v = render(&ev);
        let cl = v["process"]["command_line"].as_str().unwrap();
        assert!(cl.len() <= COMMAND_LINE_MAX, "{}", cl.len());
        assert!(cl.starts_with("prog éé"));
        assert!(!cl.contains('\u{FFFD}'), "cut on a character boundary");
        assert_eq!(v["execwatch"]["command_line_truncated"], true);
        assert_eq!(v["process"]["args"][1].as_str().unwrap(), long);
        assert_eq!(v["process"]["args"][2], "tail");
    }

    /// Plain arguments are copied, others escaped: both give the same JSON
    /// strings, and one hostile argument takes the whole list off the copy path.
    #[test]
    fn plain_and_escaped_arguments_render_alike() {
        let long_plain = "x".repeat(5000);
        let mut ev = ExecEvent::default();
        ev.set_args([&b"prog"[..], long_plain.as_bytes(), b"a b"]);
        ev.argc = 3;
        assert!(ev.args_plain());
        let v = render(&ev);
        assert_eq!(v["process"]["args"][1].as_str().unwrap(), long_plain);
        let cl = v["process"]["command_line"].as_str().unwrap();
        assert_eq!(cl.len(), COMMAND_LINE_MAX);
        assert!(cl.starts_with("prog xxx"));

        ev.set_args([&b"prog"[..], b"q\"\n\x1b", b"a b"]);
        assert!(!ev.args_plain());
        let v = render(&ev);
        assert_eq!(v["process"]["args"][1], "q\"\n\u{1b}");
        assert_eq!(v["process"]["command_line"], "prog q\"\n\u{1b} a b");

        let image = crate::process_table::Image::new(
            b"/bin/x",
            [&b"x"[..], b"say \"hi\""],
            b"x",
            &crate::process_table::Limits::default(),
        );
        assert!(!image.args_plain());
        let mut out = Vec::new();
        write_strings(&mut out, &List::Image(&image));
        assert_eq!(out, br#"["x","say \"hi\""]"#);
    }

    /// Plain arguments are joined as one area with its NULs made spaces:
    /// the same line as one argument at a time, on both sides of the cap.
    #[test]
    fn joined_plain_arguments_match_the_line_one_argument_at_a_time() {
        for extra in [0, 1] {
            let filler = "x".repeat(COMMAND_LINE_MAX - 4 + extra);
            let mut ev = ExecEvent::default();
            ev.set_args([&b"ab"[..], b"", filler.as_bytes()]);
            ev.argc = 3;
            assert!(ev.args_plain());
            let joined = format!("ab  {filler}");
            let v = render(&ev);
            let cl = v["process"]["command_line"].as_str().unwrap();
            assert_eq!(
                cl,
                &joined[..COMMAND_LINE_MAX.min(joined.len())],
                "extra {extra}"
            );
            let flagged = v["execwatch"].get("command_line_truncated").is_some();
            assert_eq!(flagged, extra == 1);
        }
        let mut ev = ExecEvent::default();
        ev.set_args(std::iter::empty::<&[u8]>());
        let mut out = Vec::new();
        write_joined(&mut out, &List::Args(&ev), COMMAND_LINE_MAX);
        assert_eq!(out, b"\"\"");
    }

    #[test]
    fn short_command_line_is_whole_and_unflagged() {
        let mut ev = ExecEvent::default();
        ev.set_args([&b"ls"[..], b"-l", b""]);
        ev.argc = 3;
        let v = render(&ev);
        assert_eq!(v["process"]["command_line"], "ls -l ");
        assert!(v["execwatch"].get("command_line_truncated").is_none());
        assert!(v["execwatch"].get("raw").is_none());
    }

    #[test]
    fn ids_are_strings_and_counts_are_numbers() {
        let ev = ExecEvent {
            uid: 1000,
            auid: Some(1000),
            pid: 42,
            ..Default::default()
        };
        let v = render(&ev);
        assert_eq!(v["user"]["id"], "1000");
        assert_eq!(v["user"]["audit"]["id"], "1000");
        assert_eq!(v["process"]["pid"], 42);
        assert_eq!(v["@timestamp"], "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn unreadable_args_are_incomplete_in_json() {
        let ev = ExecEvent {
            argc: 3,
            args_read_failed: true,
            ..Default::default()
        };
        let v = render(&ev);
        assert_eq!(v["execwatch"]["args_incomplete"], true);
        assert_eq!(v["execwatch"]["args_read_failed"], true);
        assert_eq!(v["execwatch"]["args_truncated"], false);
    }

    /// The steps made once give the line that working out each transition
    /// gives, whichever fields are absent.
    #[test]
    fn steps_give_the_lines_that_transitions_give() {
        let mut events = crate::fields::tests::samples();
        events.push(ExecEvent::default());
        events.push(ExecEvent {
            action: Action::Exit,
            ..Default::default()
        });
        events.push(ExecEvent {
            action: Action::Exit,
            errno: Some(2),
            ..Default::default()
        });
        for ev in &events {
            same_line_both_ways(ev, layout());
        }
        // Between the first and the last field, only fields absent here,
        // from more scopes than any field has steps from: the last one's
        // step is worked out.
        let ev = ExecEvent::default();
        let absent = |f: &Field| (f.value)(&ev).is_none() && f.on != On::Exit;
        let scopes: std::collections::HashSet<_> = FIELDS
            .iter()
            .filter(|f| absent(f))
            .map(|f| f.json.rsplit_once('.').map_or("", |(scope, _)| scope))
            .collect();
        assert!(scopes.len() > MORE_STEPS + 1, "{scopes:?}");
        let sparse =
            Layout::new(|f| f.json == "@timestamp" || f.json == "ecs.version" || absent(f));
        same_line_both_ways(&ev, &sparse);
    }

    /// The line written with the steps is the line written by working out
    /// every transition, and it is JSON.
    fn same_line_both_ways(ev: &ExecEvent, layout: &Layout) {
        let clock = Clock::with_offset(0);
        let mut fast = Vec::new();
        write_fields(&mut fast, ev, &clock, layout);
        let paths = match ev.action {
            Action::Exec => &layout.exec,
            Action::Exit => &layout.exit,
        };
        let mut slow = vec![b'{'];
        let mut last = None;
        for path in paths {
            if let Some(v) = (path.value)(ev) {
                transition(&mut slow, last, path);
                write_value(&mut slow, &v, &clock);
                last = Some(path);
            }
        }
        slow.extend(std::iter::repeat_n(
            b'}',
            last.map_or(0, |p| p.objects.len()),
        ));
        slow.extend_from_slice(b"}\n");
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&slow)
        );
        serde_json::from_slice::<serde_json::Value>(&fast).unwrap();
    }

    #[test]
    fn paths_fit_the_writer() {
        for p in layout().exec.iter().chain(&layout().exit) {
            assert!(p.step.len != 0, "a step longer than STEP_MAX");
        }
        for f in FIELDS {
            for seg in f.json.split('.') {
                assert!(seg.len() + 4 <= KEY_MAX, "{} does not fit KEY_MAX", f.json);
            }
        }
    }
}
