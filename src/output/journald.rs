//! journald's native protocol: one datagram per entry, binary-safe fields,
//! sealed memfd for entries too large for a datagram.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

use super::clock::{write_rfc3339, Clock};
use super::decimal::{write_i64, write_u64};
use super::text::{self, TextLayout};
use crate::event::ExecEvent;
use crate::fields::{Field, Journald, PerKind, Value};

pub const SOCKET: &str = "/run/systemd/journal/socket";

/// MESSAGE_IDs (journalctl MESSAGE_ID=...; catalog in deploy/systemd).
pub mod message_ids {
    /// A successful exec.
    pub const EXEC: &str = "f09ad527e8ef47a6917d817cfe678f23";
    /// A failed exec.
    pub const EXEC_FAILED: &str = "9231b8bcd2bb4b2c92ef027577427ed7";
    /// A process ended.
    pub const EXIT: &str = "fee24699c8db43fe83cbbbad27f4c12f";
    /// The daemon attached and records.
    pub const STARTED: &str = "5084ea02f125437bae2cc1bbb89afe1e";
    /// Exec events were lost.
    pub const LOST: &str = "04873e0f8d5a4c0a99a421049e2f4091";
    /// The daemon stopped: summary of what it delivered and lost.
    pub const SUMMARY: &str = "128cd06b0fd1461899812fb2b650e3b7";
}

/// Most elements of a list sent as numbered fields (journald caps the
/// fields of an entry); `NAME_OMITTED` counts the rest.
pub const LIST_FIELDS_MAX: usize = 512;

/// Most fields execwatch puts in one entry. journald drops an entry with
/// more than 1024 fields, its own trusted fields counted (about twenty), and
/// says so only in its debug log (CVE-2018-16865's fix): a traced process
/// could otherwise hide its exec behind many arguments or environment
/// entries. Lists share what the other fields leave, in field order.
pub const ENTRY_FIELDS_MAX: usize = 900;

/// Fields written before the event's own: MESSAGE, MESSAGE_ID, PRIORITY,
/// SYSLOG_IDENTIFIER.
const HEADER_FIELDS: usize = 4;

/// Most fields one event field writes besides its list's elements: its
/// value, or a list's `_OMITTED`, or an image's `_EXE` and `_OMITTED`.
const OTHER_FIELDS_MAX: usize = 2;

/// Append one field. Values with a newline use the binary form
/// (`NAME\n<le64 length><bytes>\n`), so no value can start another field.
pub fn field(buf: &mut Vec<u8>, name: &str, value: &[u8]) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// A number never holds a newline: `NAME=digits`, the digits written in
/// place by `digits`.
fn num(buf: &mut Vec<u8>, name: &str, digits: impl FnOnce(&mut Vec<u8>)) {
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'=');
    digits(buf);
    buf.push(b'\n');
}

/// Which fields an entry carries, and its MESSAGE's.
pub struct JournaldLayout {
    carried: PerKind,
    message: TextLayout,
}

impl JournaldLayout {
    /// The fields `keep` selects.
    pub fn new(keep: impl Fn(&Field) -> bool) -> JournaldLayout {
        JournaldLayout {
            carried: PerKind::new(|f| matches!(f.journald, Journald::Field(_)) && keep(f)),
            message: TextLayout::new(keep),
        }
    }

    /// Every field.
    pub fn all() -> &'static JournaldLayout {
        static ALL: OnceLock<JournaldLayout> = OnceLock::new();
        ALL.get_or_init(|| JournaldLayout::new(|_| true))
    }
}

/// Build the entry for one exec: MESSAGE (the text line), MESSAGE_ID and
/// PRIORITY, then one field per event field of [`FIELDS`](crate::fields::FIELDS).
pub fn write_event(buf: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock) {
    write_entry(buf, ev, clock, JournaldLayout::all());
}

/// [`write_event`] with the fields of `layout`.
pub fn write_entry(buf: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock, layout: &JournaldLayout) {
    // Written in place: the text line never holds a newline (every control
    // character is escaped), so the plain `NAME=value` form is safe.
    buf.extend_from_slice(b"MESSAGE=");
    text::write_message(buf, ev, clock, &layout.message);
    buf.push(b'\n');
    let (id, prio) = match (ev.action, ev.succeeded()) {
        (crate::event::Action::Exit, _) => (message_ids::EXIT, "6"),
        (_, true) => (message_ids::EXEC, "6"),
        (_, false) => (message_ids::EXEC_FAILED, "5"),
    };
    field(buf, "MESSAGE_ID", id.as_bytes());
    field(buf, "PRIORITY", prio.as_bytes());
    field(buf, "SYSLOG_IDENTIFIER", b"execwatch");
    let mut scratch = Vec::new();
    let carried = layout.carried.of(ev);
    let mut out = Entry {
        buf,
        written: HEADER_FIELDS,
        elements_left: 0,
    };
    for (i, f) in carried.iter().enumerate() {
        let Journald::Field(name) = f.journald else {
            continue;
        };
        if let Some(v) = (f.value)(ev) {
            // Room kept for every field after this one at its largest.
            let later = (carried.len() - i - 1) * OTHER_FIELDS_MAX;
            out.elements_left =
                ENTRY_FIELDS_MAX.saturating_sub(out.written + later + OTHER_FIELDS_MAX);
            out.value(name, &v, clock, &mut scratch);
        }
    }
}

/// An entry being written: counts its fields, and how many list elements
/// the field being written may take.
struct Entry<'b> {
    buf: &'b mut Vec<u8>,
    written: usize,
    elements_left: usize,
}

impl Entry<'_> {
    fn field(&mut self, name: &str, value: &[u8]) {
        field(self.buf, name, value);
        self.written += 1;
    }

    fn num(&mut self, name: &str, digits: impl FnOnce(&mut Vec<u8>)) {
        num(self.buf, name, digits);
        self.written += 1;
    }

    fn value(&mut self, name: &str, v: &Value<'_>, clock: &Clock, scratch: &mut Vec<u8>) {
        match v {
            Value::Bytes(b) => self.field(name, b),
            Value::Text(s) => self.field(name, s.as_bytes()),
            Value::Num(x) | Value::Id(x) => self.num(name, |b| write_u64(b, *x)),
            Value::Int(x) => self.num(name, |b| write_i64(b, *x)),
            Value::Bool(b) => self.field(name, if *b { b"1" } else { b"0" }),
            Value::BootTime(ns) => {
                scratch.clear();
                write_rfc3339(scratch, clock.unix_ns(*ns));
                self.field(name, scratch);
            }
            Value::List(l) | Value::Base64List(l) => {
                let base64 = matches!(v, Value::Base64List(_));
                let kept = LIST_FIELDS_MAX.min(self.elements_left);
                let mut key = String::with_capacity(name.len() + 8);
                let mut i = 0usize;
                l.for_each(|item| {
                    if i < kept {
                        key.clear();
                        key.push_str(name);
                        key.push('_');
                        key.push_str(itoa::Buffer::new().format(i));
                        if base64 {
                            self.field(&key, base64_text(item).as_bytes());
                        } else {
                            self.field(&key, item);
                        }
                    }
                    i += 1;
                });
                self.elements_left -= i.min(kept);
                if i > kept {
                    self.num(&format!("{name}_OMITTED"), |b| {
                        write_u64(b, (i - kept) as u64)
                    });
                }
            }
            Value::Joined(l, _) => {
                scratch.clear();
                l.for_each(|item| {
                    if !scratch.is_empty() {
                        scratch.push(b' ');
                    }
                    scratch.extend_from_slice(item);
                });
                self.field(name, scratch);
            }
            Value::Base64(b) => self.field(name, base64_text(b).as_bytes()),
            Value::Dev(..) | Value::Octal(_) | Value::UnixTime(..) => {
                scratch.clear();
                v.write_formatted(scratch);
                self.field(name, scratch);
            }
            Value::Image(i) => {
                self.field(&format!("{name}_EXE"), i.executable());
                self.value(
                    &format!("{name}_ARGV"),
                    &Value::List(crate::fields::List::Image(i)),
                    clock,
                    scratch,
                );
            }
        }
    }
}

fn base64_text(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Bytes before each entry in a chunk for the writer thread: its length,
/// little-endian. Entries hold newlines, so lines cannot frame them.
pub const FRAME_HEADER: usize = 4;

/// Append `ev` as one framed entry ([`frames`] takes them apart).
pub fn write_framed(buf: &mut Vec<u8>, ev: &ExecEvent, clock: &Clock, layout: &JournaldLayout) {
    let at = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    write_entry(buf, ev, clock, layout);
    let len = u32::try_from(buf.len() - at - FRAME_HEADER).unwrap_or(u32::MAX);
    buf[at..at + FRAME_HEADER].copy_from_slice(&len.to_le_bytes());
}

/// The entries of a chunk of framed entries, in order; a cut frame at the
/// end is not one.
pub fn frames(mut b: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (head, rest) = b.split_first_chunk::<FRAME_HEADER>()?;
        let len = u32::from_le_bytes(*head) as usize;
        let entry = rest.get(..len)?;
        b = &rest[len..];
        Some(entry)
    })
}

/// A connection to journald's native socket.
pub struct Journal {
    sock: UnixDatagram,
    path: std::path::PathBuf,
    nonblocking: bool,
}

impl std::os::fd::AsFd for Journal {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Journal {
    pub fn connect() -> io::Result<Journal> {
        Journal::connect_to(SOCKET.as_ref())
    }

    pub fn connect_to(path: &std::path::Path) -> io::Result<Journal> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot reach journald at {} ({e}): is systemd-journald running?",
                    path.display()
                ),
            )
        })?;
        Ok(Journal {
            sock,
            path: path.to_owned(),
            nonblocking: false,
        })
    }

    /// Send one entry; entries too large for a datagram go in a sealed
    /// memfd. journald restarted (its socket is a new one): connect again,
    /// once. Blocks while journald's queue is full; a signal interrupts it.
    pub fn send(&mut self, entry: &[u8]) -> io::Result<()> {
        match self.send_once(entry) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOTCONN)) => {
                let nonblocking = self.nonblocking;
                *self = Journal::connect_to(&self.path)?;
                self.set_nonblocking(nonblocking)?;
                self.send_once(entry)
            }
            r => r,
        }
    }

    /// Sends fail with `WouldBlock` instead of waiting while journald is full.
    pub fn set_nonblocking(&mut self, on: bool) -> io::Result<()> {
        self.sock.set_nonblocking(on)?;
        self.nonblocking = on;
        Ok(())
    }

    fn send_once(&self, entry: &[u8]) -> io::Result<()> {
        match self.sock.send(entry) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMSGSIZE) | Some(libc::ENOBUFS)) => {
                self.send_memfd(entry)
            }
            Err(e) => Err(e),
        }
    }

    fn send_memfd(&self, entry: &[u8]) -> io::Result<()> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MFdFlags};
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

        let fd = memfd_create(
            c"execwatch-journal",
            MFdFlags::MFD_ALLOW_SEALING | MFdFlags::MFD_CLOEXEC,
        )?;
        let mut file = std::fs::File::from(fd);
        file.write_all(entry)?;
        fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let fds = [file.as_raw_fd()];
        sendmsg::<()>(
            self.sock.as_raw_fd(),
            &[],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )?;
        Ok(())
    }
}

/// Whether stderr is connected to the journal (systemd sets JOURNAL_STREAM
/// to the `device:inode` of the stream it gave the service).
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(std::io::stderr()).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// Parse the native protocol back into (name, value) pairs (for tests).
#[cfg(test)]
pub fn parse(mut b: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap();
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.push((
                String::from_utf8(line[..eq].to_vec()).unwrap(),
                line[eq + 1..].to_vec(),
            ));
            b = &b[nl + 1..];
        } else {
            let name = String::from_utf8(line.to_vec()).unwrap();
            let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let start = nl + 9;
            out.push((name, b[start..start + len].to_vec()));
            assert_eq!(b[start + len], b'\n');
            b = &b[start + len + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_with_newlines_use_the_binary_form() {
        let mut buf = Vec::new();
        field(&mut buf, "A", b"plain");
        field(&mut buf, "B", b"two\nlines\nFORGED=1");
        field(&mut buf, "C", b"\xff\x00bytes");
        let f = parse(&buf);
        assert_eq!(f.len(), 3, "a newline cannot start a forged field");
        assert_eq!(f[1], ("B".into(), b"two\nlines\nFORGED=1".to_vec()));
        assert_eq!(f[2].1, b"\xff\x00bytes");
    }

    #[test]
    fn framed_entries_come_apart_whole_and_a_cut_one_is_dropped() {
        let clock = Clock::with_offset(0);
        let mut evs = [ExecEvent::default(), ExecEvent::default()];
        evs[0].set_args([&b"a"[..]]);
        evs[1].set_args([&b"b\nFORGED=1"[..], b"c"]);
        let (mut framed, mut plain) = (Vec::new(), Vec::new());
        for ev in &evs {
            write_framed(&mut framed, ev, &clock, JournaldLayout::all());
            let mut one = Vec::new();
            write_event(&mut one, ev, &clock);
            plain.push(one);
        }
        let got: Vec<&[u8]> = frames(&framed).collect();
        assert_eq!(got, [&plain[0][..], &plain[1][..]]);
        for cut in 0..framed.len() {
            let n = frames(&framed[..cut]).count();
            let whole = if cut >= framed.len() {
                2
            } else if cut >= 4 + plain[0].len() {
                1
            } else {
                0
            };
            assert_eq!(n, whole, "cut at {cut}");
        }
    }

    #[test]
    fn a_restarted_journald_is_reached_again() {
        let dir = std::env::temp_dir().join(format!("execwatch-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let first = UnixDatagram::bind(&path).unwrap();
        let mut j = Journal::connect_to(&path).unwrap();
        j.send(b"ONE=1\n").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(first.recv(&mut buf).unwrap(), 6);
        // journald restarts: a new socket at the same path.
        drop(first);
        std::fs::remove_file(&path).unwrap();
        let second = UnixDatagram::bind(&path).unwrap();
        j.send(b"TWO=2\n").unwrap();
        let n = second.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"TWO=2\n");
        // Gone for good: an error, not a hang.
        drop(second);
        std::fs::remove_file(&path).unwrap();
        let e = j.send(b"THREE=3\n").unwrap_err();
        assert!(e.to_string().contains("cannot reach journald"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exec_entry_has_one_line_message_and_indexed_argv() {
        let mut ev = ExecEvent::default();
        ev.set_args([&b"sh"[..], b"-c", b"echo\nFORGED=1", b""]);
        ev.argc = 4;
        ev.comm = b"sh".to_vec();
        ev.executable = b"/usr/bin/dash".to_vec();
        let mut buf = Vec::new();
        write_event(&mut buf, &ev, &Clock::with_offset(0));
        let f = parse(&buf);
        let get = |n: &str| f.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let msg = get("MESSAGE").unwrap();
        assert!(!msg.contains(&b'\n'));
        assert_eq!(get("MESSAGE_ID").unwrap(), message_ids::EXEC.as_bytes());
        assert_eq!(get("EXECWATCH_ARGV_2").unwrap(), b"echo\nFORGED=1");
        assert_eq!(get("EXECWATCH_ARGV_3").unwrap(), b"");
        assert_eq!(get("EXECWATCH_ARGC").unwrap(), b"4");
        assert!(get("FORGED").is_none());
        assert!(
            f.iter().all(|(k, _)| !k.starts_with('_')),
            "no trusted fields"
        );
    }

    #[test]
    fn an_entry_never_holds_more_fields_than_journald_takes() {
        // Every sample (parent and previous images included), with more
        // arguments and --env matches than one entry can carry.
        for mut ev in crate::fields::tests::samples() {
            let args: Vec<Vec<u8>> = (0..700).map(|i| format!("a{i}").into_bytes()).collect();
            ev.set_args(args.iter().map(|a| a.as_slice()));
            ev.argc = args.len() as u32;
            ev.env_vars = (0..700).map(|i| format!("X={i}").into_bytes()).collect();
            let mut buf = Vec::new();
            write_event(&mut buf, &ev, &Clock::with_offset(0));
            let f = parse(&buf);
            assert!(f.len() <= ENTRY_FIELDS_MAX, "{} fields", f.len());
            let get = |n: &str| f.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let count = |prefix: &str| {
                f.iter()
                    .filter(|(k, _)| {
                        k.strip_prefix(prefix)
                            .is_some_and(|i| i.bytes().all(|b| b.is_ascii_digit()))
                    })
                    .count()
            };
            let omitted = |name: &str| {
                get(&format!("{name}_OMITTED")).map_or(0, |v| {
                    String::from_utf8(v).unwrap().parse::<usize>().unwrap()
                })
            };
            if ev.action == crate::event::Action::Exec {
                // Each list's elements are kept, in order, or counted.
                for (name, total) in [("EXECWATCH_ARGV", 700), ("EXECWATCH_ENV", 700)] {
                    let kept = count(&format!("{name}_"));
                    assert_eq!(kept + omitted(name), total, "{name}");
                    assert!(kept > 0 || name == "EXECWATCH_ENV", "{name}");
                }
                assert_eq!(get("EXECWATCH_ARGV_0").unwrap(), b"a0");
            }
            // Every other field is there, as with one argument and one
            // match; a later list is cut, never left out uncounted.
            ev.set_args([&b"a0"[..]]);
            ev.env_vars.truncate(1);
            let mut small = Vec::new();
            write_event(&mut small, &ev, &Clock::with_offset(0));
            for (name, _) in parse(&small) {
                let element = name
                    .rsplit_once('_')
                    .filter(|(_, i)| i.bytes().all(|b| b.is_ascii_digit()));
                let present = f.iter().any(|(k, _)| *k == name);
                match element {
                    Some((list, _)) => assert!(
                        present || get(&format!("{list}_OMITTED")).is_some(),
                        "{name} neither there nor counted"
                    ),
                    None => assert!(present, "{name} missing"),
                }
            }
        }
    }

    #[test]
    fn arguments_past_the_field_cap_are_counted() {
        let args: Vec<String> = (0..LIST_FIELDS_MAX + 88).map(|i| i.to_string()).collect();
        let mut ev = ExecEvent::default();
        ev.set_args(args.iter().map(|a| a.as_bytes()));
        ev.argc = args.len() as u32;
        ev.exe_identity = Some(crate::event::ExeIdentity {
            ino: 12_345_678_901,
            ..Default::default()
        });
        let mut buf = Vec::new();
        write_event(&mut buf, &ev, &Clock::with_offset(0));
        let f = parse(&buf);
        let get = |n: &str| f.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let last = format!("EXECWATCH_ARGV_{}", LIST_FIELDS_MAX - 1);
        assert_eq!(get(&last).unwrap(), args[LIST_FIELDS_MAX - 1].as_bytes());
        assert!(get(&format!("EXECWATCH_ARGV_{LIST_FIELDS_MAX}")).is_none());
        assert_eq!(get("EXECWATCH_ARGV_OMITTED").unwrap(), b"88");
        assert_eq!(get("EXECWATCH_EXE_INODE").unwrap(), b"12345678901");
    }
}
