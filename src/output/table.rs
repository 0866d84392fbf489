//! `--format text` for a person at a terminal: a header, then one row of
//! aligned columns per exec (time, pid, ppid, user, container or unit,
//! error, command line), failures in red. Not a stable format: piped or
//! redirected, execwatch writes the plain line of [`super::text`] instead.
//!
//! Every value from the traced process, the container runtimes or the user
//! database goes through the text escaping rules; the only escape sequences
//! written are execwatch's own colour codes. Every fact shown comes from an
//! [`ExecEvent`] method: this module only lays them out.

use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::num::NonZeroUsize;

use lru::LruCache;

use super::clock::Clock;
use super::escape::text_quoted;
use crate::event::{ExecEvent, Workload};

/// Column widths, in characters. The error column is not cut: errno names
/// are execwatch's own words, and the rare long one only shifts its row.
const TIME_W: usize = 12;
const PID_W: usize = 7;
const USER_W: usize = 9;
const WHERE_W: usize = 20;
const ERROR_W: usize = 7;
/// The command line is cut past this many characters, so that a row stays a
/// few terminal lines even for a 128 KiB argv.
const COMMAND_MAX: usize = 512;
/// Characters of a container id shown when the container has no name.
const SHORT_ID: usize = 12;

const ELLIPSIS: char = '…';
const RED: &[u8] = b"\x1b[31m";
const RESET: &[u8] = b"\x1b[0m";

/// Users remembered; a host with many uids (user namespaces) evicts the
/// least recently seen.
const USER_CACHE: usize = 256;

/// Which clock the TIME column shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// Local time, by the C library's rules (TZ, else /etc/localtime).
    Local,
    Utc,
}

/// Colour unless `NO_COLOR` is set to anything but the empty string
/// (no-color.org).
pub fn colour_allowed(no_color: Option<&OsStr>) -> bool {
    no_color.is_none_or(|v| v.is_empty())
}

/// uid -> user name, from the user database (NSS), cached.
struct UserNames {
    cache: LruCache<u32, Option<Box<str>>>,
    lookup: fn(u32) -> Option<String>,
}

fn lookup_user(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

impl UserNames {
    fn new(lookup: fn(u32) -> Option<String>) -> UserNames {
        UserNames {
            cache: LruCache::new(NonZeroUsize::new(USER_CACHE).expect("non-zero")),
            lookup,
        }
    }

    /// The name, `None` when the database has none (the uid is shown).
    fn name(&mut self, uid: u32) -> Option<&str> {
        let lookup = self.lookup;
        self.cache
            .get_or_insert(uid, || lookup(uid).map(String::into_boxed_str))
            .as_deref()
    }
}

/// `tm` for a Unix second in local time.
fn local_tm(secs: i64) -> Option<libc::tm> {
    let t = libc::time_t::try_from(secs).ok()?;
    let mut tm = MaybeUninit::<libc::tm>::uninit();
    // SAFETY: localtime_r (thread-safe) reads `t` and writes only into
    // `tm`, both alive for the call.
    let filled = unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) };
    if filled.is_null() {
        return None;
    }
    // SAFETY: a non-null return means localtime_r filled `tm`.
    Some(unsafe { tm.assume_init() })
}

/// Local seconds of the day, recomputed only when the second changes (the
/// zone's offset may change at any second: DST).
struct LocalClock {
    sec: i64,
    of_day: u32,
}

impl LocalClock {
    fn seconds_of_day(&mut self, secs: i64) -> u32 {
        if secs != self.sec {
            self.sec = secs;
            self.of_day = match local_tm(secs) {
                Some(tm) => (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec) as u32,
                // Out of the C library's range: UTC, better than nothing.
                None => secs.rem_euclid(86_400) as u32,
            };
        }
        self.of_day
    }
}

/// The table renderer: widths are fixed, so rows can be written as they
/// come, each one line.
pub struct Table {
    colour: bool,
    zone: Zone,
    users: UserNames,
    local: LocalClock,
    /// One cell, escaped, before it is cut to its width.
    cell: Vec<u8>,
}

impl Table {
    pub fn new(colour: bool, zone: Zone) -> Table {
        Table::with_user_lookup(colour, zone, lookup_user)
    }

    /// For a terminal: local time, colour unless `NO_COLOR` says not.
    pub fn for_terminal() -> Table {
        Table::new(
            colour_allowed(std::env::var_os("NO_COLOR").as_deref()),
            Zone::Local,
        )
    }

    fn with_user_lookup(colour: bool, zone: Zone, lookup: fn(u32) -> Option<String>) -> Table {
        Table {
            colour,
            zone,
            users: UserNames::new(lookup),
            local: LocalClock {
                sec: i64::MIN,
                of_day: 0,
            },
            cell: Vec::with_capacity(256),
        }
    }

    /// The two header lines: what the times are, then the column names.
    pub fn write_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"# execwatch: ");
        match self.zone {
            Zone::Utc => out.extend_from_slice(b"UTC"),
            Zone::Local => {
                out.extend_from_slice(b"local time");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                if let Some(tm) = local_tm(now) {
                    out.extend_from_slice(b" (");
                    write_utc_offset(out, tm.tm_gmtoff);
                    out.extend_from_slice(b" at start)");
                }
            }
        }
        out.extend_from_slice(b"; failures show ERROR");
        if self.colour {
            out.extend_from_slice(b", in red");
        }
        out.extend_from_slice(b"; exits show exit=N or the signal there");
        out.extend_from_slice(b"; piped: plain text lines\n");
        pad_right(out, "TIME", TIME_W);
        out.push(b' ');
        pad_left(out, "PID", PID_W);
        out.push(b' ');
        pad_left(out, "PPID", PID_W);
        out.push(b' ');
        pad_right(out, "USER", USER_W);
        out.push(b' ');
        pad_right(out, "CONTAINER/UNIT", WHERE_W);
        out.push(b' ');
        pad_right(out, "ERROR", ERROR_W);
        out.extend_from_slice(b" COMMAND\n");
    }

    /// Append one row (with its newline) for `ev`.
    pub fn write_event(&mut self, out: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock) {
        let red = self.colour && !ev.succeeded();
        if red {
            out.extend_from_slice(RED);
        }
        self.write_time(out, clock.unix_ns(ev.boot_ns));
        out.push(b' ');
        let mut n = itoa::Buffer::new();
        pad_left(out, n.format(ev.pid), PID_W);
        out.push(b' ');
        pad_left(out, n.format(ev.ppid), PID_W);
        out.push(b' ');

        self.cell.clear();
        match self.users.name(ev.uid) {
            Some(name) => write_word(&mut self.cell, name.as_bytes()),
            None => self.cell.extend_from_slice(n.format(ev.uid).as_bytes()),
        }
        put_cell(out, &self.cell, USER_W, true);
        out.push(b' ');

        self.cell.clear();
        match ev.workload() {
            Some(Workload::Container {
                name: Some(name), ..
            }) => write_word(&mut self.cell, name.as_bytes()),
            Some(Workload::Container { id, name: None }) => {
                write_word(&mut self.cell, short_id(id))
            }
            Some(Workload::UnconfirmedContainer(id)) => {
                // execwatch's mark: no word from a name or id starts with `?`
                // unquoted (write_word quotes it).
                self.cell.push(b'?');
                write_word(&mut self.cell, short_id(id));
            }
            Some(Workload::Unit(unit)) => write_word(&mut self.cell, unit.as_bytes()),
            None => self.cell.push(b'-'),
        }
        put_cell(out, &self.cell, WHERE_W, true);
        out.push(b' ');

        let status = ev.status_label();
        pad_right(out, status.as_deref().unwrap_or(""), ERROR_W);
        out.push(b' ');

        self.cell.clear();
        write_command(&mut self.cell, ev);
        put_cell(out, &self.cell, COMMAND_MAX, false);
        if red {
            out.extend_from_slice(RESET);
        }
        out.push(b'\n');
    }

    /// `HH:MM:SS.mmm`.
    fn write_time(&mut self, out: &mut Vec<u8>, unix_ns: i128) {
        let secs = unix_ns.div_euclid(1_000_000_000) as i64;
        let ms = (unix_ns.rem_euclid(1_000_000_000) / 1_000_000) as u32;
        let of_day = match self.zone {
            Zone::Utc => secs.rem_euclid(86_400) as u32,
            Zone::Local => self.local.seconds_of_day(secs),
        };
        let two = |out: &mut Vec<u8>, v: u32| {
            out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8])
        };
        two(out, of_day / 3600);
        out.push(b':');
        two(out, of_day / 60 % 60);
        out.push(b':');
        two(out, of_day % 60);
        out.push(b'.');
        out.extend_from_slice(&[
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
        ]);
    }
}

/// `UTC+01:00`, `UTC-03:30`.
fn write_utc_offset(out: &mut Vec<u8>, gmtoff: i64) {
    let sign = if gmtoff < 0 { '-' } else { '+' };
    let m = gmtoff.unsigned_abs() / 60;
    out.extend_from_slice(format!("UTC{sign}{:02}:{:02}", m / 60, m % 60).as_bytes());
}

/// Characters shown bare: a word of these cannot look like a quoted string,
/// an escape, or one of execwatch's marks (`?`, `…`, `<...>`).
fn is_bare(b: &[u8]) -> bool {
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./:=,+@%~".contains(c))
}

/// A word from outside: bare when that is unambiguous, else quoted and
/// escaped by the text rules.
fn write_word(out: &mut Vec<u8>, b: &[u8]) {
    if is_bare(b) {
        out.extend_from_slice(b);
    } else {
        text_quoted(out, b);
    }
}

fn short_id(id: &str) -> &[u8] {
    match id.char_indices().nth(SHORT_ID) {
        Some((at, _)) => &id.as_bytes()[..at],
        None => id.as_bytes(),
    }
}

/// argv as words separated by spaces; ` …` when some arguments were not
/// captured, `<no arguments>` for an empty argv. An exit carries no argv:
/// its executable (its name when unknown) says what ended.
fn write_command(out: &mut Vec<u8>, ev: &ExecEvent) {
    if !ev.is_exec() {
        let what = if ev.executable.is_empty() {
            &ev.comm
        } else {
            &ev.executable
        };
        write_word(out, what);
        return;
    }
    for (i, arg) in ev.args().enumerate() {
        // Past this many bytes there are more than COMMAND_MAX characters:
        // the rest would be cut anyway.
        if out.len() > 4 * COMMAND_MAX {
            return;
        }
        if i > 0 {
            out.push(b' ');
        }
        write_word(out, arg);
    }
    if ev.args_incomplete() {
        if !out.is_empty() {
            out.push(b' ');
        }
        push_char(out, ELLIPSIS);
    } else if out.is_empty() {
        out.extend_from_slice(b"<no arguments>");
    }
}

/// Write `cell` (escaped, so UTF-8) cut to `width` characters, its last one
/// then `…`, and padded to `width` when `pad`.
fn put_cell(out: &mut Vec<u8>, cell: &[u8], width: usize, pad: bool) {
    let s = match std::str::from_utf8(cell) {
        Ok(s) => s,
        // Not reached: escaped text is UTF-8. Keep the valid part.
        Err(e) => std::str::from_utf8(&cell[..e.valid_up_to()]).unwrap_or_default(),
    };
    let mut chars = s.char_indices();
    match chars.nth(width.saturating_sub(1)) {
        Some((at, _)) if chars.next().is_some() => {
            out.extend_from_slice(&s.as_bytes()[..at]);
            push_char(out, ELLIPSIS);
        }
        _ => {
            out.extend_from_slice(s.as_bytes());
            if pad {
                let n = s.chars().count();
                out.resize(out.len() + width.saturating_sub(n), b' ');
            }
        }
    }
}

fn push_char(out: &mut Vec<u8>, c: char) {
    out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

fn pad_right(out: &mut Vec<u8>, s: &str, width: usize) {
    out.extend_from_slice(s.as_bytes());
    out.resize(out.len() + width.saturating_sub(s.chars().count()), b' ');
}

fn pad_left(out: &mut Vec<u8>, s: &str, width: usize) {
    out.resize(out.len() + width.saturating_sub(s.chars().count()), b' ');
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::CgroupInfo;
    use crate::containers::ContainerInfo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn users(uid: u32) -> Option<String> {
        match uid {
            0 => Some("root".into()),
            1000 => Some("averyveryverylongname".into()),
            1001 => Some("ééééééééééé".into()),
            1002 => Some("evil\x1b[2Jname".into()),
            _ => None,
        }
    }

    fn table(colour: bool) -> Table {
        Table::with_user_lookup(colour, Zone::Utc, users)
    }

    fn event(args: &[&[u8]]) -> ExecEvent {
        let mut ev = ExecEvent {
            pid: 4242,
            ppid: 1,
            argc: args.len() as u32,
            ..Default::default()
        };
        ev.set_args(args.iter().copied());
        ev
    }

    fn in_cgroup(mut ev: ExecEvent, cg: CgroupInfo) -> ExecEvent {
        ev.cgroup = Some(Arc::new(cg));
        ev
    }

    fn row(t: &mut Table, ev: &ExecEvent) -> String {
        let mut out = Vec::new();
        t.write_event(&mut out, ev, &Clock::with_offset(0));
        String::from_utf8(out).expect("rows are UTF-8")
    }

    fn header(t: &Table) -> String {
        let mut out = Vec::new();
        t.write_header(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// Character index where `col` starts in the header's column line.
    fn column(header: &str, col: &str) -> usize {
        let line = header.lines().nth(1).unwrap();
        let byte = line.find(col).unwrap();
        line[..byte].chars().count()
    }

    fn chars_from(row: &str, at: usize) -> String {
        row.chars().skip(at).collect()
    }

    fn cell(row: &str, at: usize, width: usize) -> String {
        row.chars().skip(at).take(width).collect()
    }

    #[test]
    fn columns_line_up_with_the_header() {
        let mut t = table(false);
        let h = header(&t);
        assert_eq!(
            h.lines().next(),
            Some("# execwatch: UTC; failures show ERROR; exits show exit=N or the signal there; piped: plain text lines")
        );
        let line = h.lines().nth(1).unwrap();
        assert_eq!(
            line,
            "TIME             PID    PPID USER      CONTAINER/UNIT       ERROR   COMMAND"
        );
        let user = column(&h, "USER");
        let place = column(&h, "CONTAINER/UNIT");
        let error = column(&h, "ERROR");
        let command = column(&h, "COMMAND");

        let plain = event(&[b"ls", b"-l"]);
        let mut long = in_cgroup(
            event(&[b"x"]),
            CgroupInfo {
                unit: Some("a-rather-long-unit-name-indeed.service".into()),
                ..Default::default()
            },
        );
        long.uid = 1000;
        long.pid = 4_194_304;
        let mut failed = event(&[b"/nope"]);
        failed.errno = Some(2);
        failed.uid = 1001;
        let mut too_long_error = event(&[b"/nope"]);
        too_long_error.errno = Some(libc::ENAMETOOLONG);
        too_long_error.uid = 77;

        let rows: Vec<String> = [&plain, &long, &failed, &too_long_error]
            .iter()
            .map(|ev| row(&mut t, ev))
            .collect();
        for r in &rows[..3] {
            assert_eq!(r.chars().nth(user - 1), Some(' '), "{r}");
            assert_eq!(r.chars().nth(place - 1), Some(' '), "{r}");
            assert_eq!(r.chars().nth(error - 1), Some(' '), "{r}");
            assert_eq!(r.chars().nth(command - 1), Some(' '), "{r}");
        }
        assert_eq!(
            rows[0],
            "00:00:00.000    4242       1 root      -                            ls -l\n"
        );
        assert_eq!(cell(&rows[1], 13, 7), "4194304");
        assert_eq!(cell(&rows[1], user, USER_W), "averyver…");
        assert_eq!(cell(&rows[1], place, WHERE_W), "a-rather-long-unit-…");
        assert_eq!(chars_from(&rows[1], command), "x\n");
        assert_eq!(cell(&rows[2], user, USER_W), "\"ééééééé…");
        assert_eq!(cell(&rows[2], error, ERROR_W), "ENOENT ");
        assert_eq!(chars_from(&rows[2], command), "/nope\n");
        // A name longer than its column shifts only the command.
        assert_eq!(cell(&rows[3], user, USER_W), "77       ");
        assert!(rows[3].contains(" ENAMETOOLONG /nope\n"), "{}", rows[3]);
    }

    #[test]
    fn exits_show_how_they_ended() {
        let mut t = table(false);
        // As the daemon gives an exit: no argv, the executable from its table.
        let mut ev = event(&[]);
        ev.action = crate::event::Action::Exit;
        ev.executable = b"/usr/bin/sleep".to_vec();
        ev.exit_status = 9;
        let killed = row(&mut t, &ev);
        assert!(killed.contains(" SIGKILL "), "{killed}");
        assert!(killed.ends_with(" /usr/bin/sleep\n"), "{killed}");
        ev.exit_status = 3 << 8;
        assert!(row(&mut t, &ev).contains(" exit=3 "));
        // A process seen only at its exit, with no executable: its name.
        ev.executable.clear();
        ev.comm = b"kworker".to_vec();
        assert!(row(&mut t, &ev).ends_with(" kworker\n"));
    }

    #[test]
    fn colour_codes_mark_failures_only() {
        let mut t = table(true);
        let h = header(&t);
        assert!(!h.contains('\x1b'), "{h}");
        assert!(h.contains("ERROR, in red;"), "{h}");
        let ok = row(&mut t, &event(&[b"true"]));
        assert!(!ok.contains('\x1b'), "{ok:?}");
        let mut ev = event(&[b"/nope"]);
        ev.errno = Some(13);
        let bad = row(&mut t, &ev);
        assert!(bad.starts_with("\x1b[31m"), "{bad:?}");
        assert!(bad.ends_with(" EACCES  /nope\x1b[0m\n"), "{bad:?}");
        assert_eq!(bad.matches('\x1b').count(), 2, "{bad:?}");
    }

    #[test]
    fn no_color_is_honoured() {
        assert!(colour_allowed(None));
        assert!(colour_allowed(Some(OsStr::new(""))));
        assert!(!colour_allowed(Some(OsStr::new("1"))));
        let mut t = table(false);
        let mut ev = event(&[b"/nope"]);
        ev.errno = Some(2);
        let r = row(&mut t, &ev);
        assert!(!r.contains('\x1b') && r.contains(" ENOENT "), "{r:?}");
        assert!(!header(&t).contains("red"));
    }

    #[test]
    fn hostile_values_stay_escaped() {
        let mut t = table(true);
        let mut ev = in_cgroup(
            event(&[
                b"sh",
                b"\x1b[2J\x1b]0;title\x07",
                b"two\nlines\r",
                "\u{202E}txt.exe\u{0085}".as_bytes(),
                b"\xff\xfe",
                b"",
                b"a b",
                b"say \"hi\"",
            ]),
            CgroupInfo {
                container_id: Some("0123456789abcdef".into()),
                container: Some(Arc::new(ContainerInfo {
                    id: Some("0123456789abcdef".into()),
                    name: Some("\x1b[31mfake".into()),
                    ..Default::default()
                })),
                ..Default::default()
            },
        );
        ev.uid = 1002;
        ev.errno = Some(2);
        let r = row(&mut t, &ev);
        let body = r
            .strip_prefix("\x1b[31m")
            .and_then(|r| r.strip_suffix("\x1b[0m\n"))
            .unwrap_or_else(|| panic!("{r:?}"));
        assert!(!body.chars().any(|c| c.is_control()), "{body:?}");
        assert!(
            body.ends_with(
                r#" sh "\x1b[2J\x1b]0;title\x07" "two\nlines\r" "\u{202E}txt.exe\u{0085}" "\xff\xfe" "" "a b" "say \"hi\"""#
            ),
            "{body}"
        );
        assert!(body.contains(r#" "evil\x1… "#), "{body}");
        assert!(body.contains(r#" "\x1b[31mfake"      "#), "{body}");
    }

    #[test]
    fn containers_and_units() {
        let mut t = table(false);
        let h = header(&t);
        let place = column(&h, "CONTAINER/UNIT");
        let show = |t: &mut Table, cg: CgroupInfo| {
            let r = row(t, &in_cgroup(event(&[b"x"]), cg));
            cell(&r, place, WHERE_W).trim_end().to_string()
        };
        let id = "f".repeat(64);
        let confirmed = |name: Option<&str>| CgroupInfo {
            container_id: Some(id.clone()),
            container: Some(Arc::new(ContainerInfo {
                id: Some(id.clone()),
                name: name.map(Into::into),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(show(&mut t, confirmed(Some("web"))), "web");
        assert_eq!(show(&mut t, confirmed(None)), "ffffffffffff");
        let rootless = CgroupInfo {
            container: Some(Arc::new(ContainerInfo {
                id: Some(id.clone()),
                rootless_uid: Some(1000),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(show(&mut t, rootless), "?ffffffffffff");
        let unit = CgroupInfo {
            unit: Some("user@1000.service".into()),
            ..Default::default()
        };
        assert_eq!(show(&mut t, unit), "user@1000.service");
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let mut t = table(false);
        let h = header(&t);
        let command = column(&h, "COMMAND");
        // Three-byte characters: any byte cut would split one.
        let arg = "✓".repeat(COMMAND_MAX * 2);
        let r = row(&mut t, &event(&[arg.as_bytes()]));
        let shown = chars_from(&r, command);
        let shown = shown.strip_suffix('\n').unwrap();
        assert_eq!(shown.chars().count(), COMMAND_MAX);
        assert!(
            shown.starts_with("\"✓✓") && shown.ends_with("✓…"),
            "{shown}"
        );
        for width in 1..8 {
            let mut out = Vec::new();
            put_cell(&mut out, "é✓😀ab".as_bytes(), width, true);
            let s = String::from_utf8(out).expect("cut on a boundary");
            assert_eq!(s.chars().count(), width, "{s}");
            assert_eq!(s.ends_with('…'), width < 5, "{s}");
        }
    }

    #[test]
    fn arguments_missing_or_none_are_marked() {
        let mut t = table(false);
        let mut cut = event(&[b"ls", b"-l"]);
        cut.argc = 5;
        assert!(row(&mut t, &cut).ends_with(" ls -l …\n"));
        let none = event(&[]);
        assert!(row(&mut t, &none).ends_with(" <no arguments>\n"));
        // Marks cannot be forged by arguments: they would be quoted.
        let forged = event(&[b"<no", b"arguments>", "…".as_bytes()]);
        let r = row(&mut t, &forged);
        assert!(r.ends_with(" \"<no\" \"arguments>\" \"…\"\n"), "{r}");
    }

    #[test]
    fn time_is_hh_mm_ss_millis() {
        let mut t = table(false);
        let ev = ExecEvent {
            boot_ns: 1_795_625_034_123_456_789,
            ..event(&[b"x"])
        };
        assert!(row(&mut t, &ev).starts_with("16:43:54.123 "));
    }

    static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

    fn counting(uid: u32) -> Option<String> {
        LOOKUPS.fetch_add(1, Ordering::Relaxed);
        (uid == 0).then(|| "root".into())
    }

    #[test]
    fn user_names_are_cached_within_a_bound() {
        let mut names = UserNames::new(counting);
        assert_eq!(names.name(0), Some("root"));
        assert_eq!(names.name(0), Some("root"));
        assert_eq!(names.name(5), None);
        assert_eq!(names.name(5), None);
        assert_eq!(LOOKUPS.load(Ordering::Relaxed), 2);
        for uid in 100..100 + 2 * USER_CACHE as u32 {
            names.name(uid);
        }
        assert_eq!(names.cache.len(), USER_CACHE);
    }

    #[test]
    fn the_real_user_database_names_root() {
        let mut t = Table::new(false, Zone::Utc);
        let h = header(&t);
        let r = row(&mut t, &event(&[b"x"]));
        assert_eq!(cell(&r, column(&h, "USER"), 5), "root ");
    }
}
