//! `--format text` on a terminal: the real daemon writes to a pseudo-terminal
//! and shows the header and aligned rows, failures in red, no colour under
//! NO_COLOR; the same run piped writes the plain lines.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{marker, Daemon};
use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};

/// Everything the daemon wrote to the terminal, read as it comes.
struct Terminal {
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// A pseudo-terminal: its reader here, and the other end for a child's
    /// stdout. Both descriptors are close-on-exec from the start, so no
    /// process spawned meanwhile keeps the terminal open.
    fn open() -> (Terminal, File) {
        let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .expect("open a pseudo-terminal");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname_r(&master).expect("ptsname");
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)
            .unwrap_or_else(|e| panic!("open {name}: {e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        let mut master = master;
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // EIO once the last writer is gone.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (Terminal { seen }, slave)
    }

    /// The output so far, with the terminal's CR LF turned back into LF.
    fn text(&self) -> String {
        let bytes = self.seen.lock().unwrap().clone();
        String::from_utf8(bytes)
            .expect("the table is UTF-8")
            .replace("\r\n", "\n")
    }

    /// Wait until the output has `n` lines containing `needle`.
    fn wait_for(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let t = self.text();
            if t.lines().filter(|l| l.contains(needle)).count() >= n {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "no {n} rows with {needle} on the terminal:\n{t}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `/bin/true MARKER` (its pid) and a failed exec of `/nonexistent/MARKER`.
fn marked_execs(m: &str) -> u32 {
    let mut ok = Command::new("/bin/true")
        .arg(m)
        .stdout(Stdio::null())
        .spawn()
        .expect("run /bin/true");
    let pid = ok.id();
    assert!(ok.wait().unwrap().success());
    let missing = Command::new(format!("/nonexistent/{m}")).spawn();
    assert!(missing.is_err(), "/nonexistent/{m} ran");
    pid
}

/// Start the daemon on a terminal, run the marked execs, stop it.
fn table_run(name: &str, no_color: &str) -> (String, String, u32) {
    let (term, slave) = Terminal::open();
    let d = Daemon::start_with_stdout("text", &[], slave.into(), &[("NO_COLOR", no_color)]);
    let m = marker(name);
    let pid = marked_execs(&m);
    let out = term.wait_for(&m, 2);
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    (out, m, pid)
}

/// Character offset of `col` in the column line.
fn column(header: &str, col: &str) -> usize {
    header[..header.find(col).unwrap()].chars().count()
}

fn from_char(line: &str, at: usize) -> String {
    line.chars().skip(at).collect()
}

fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b.iter().enumerate().all(|(i, c)| match i {
            2 | 5 => *c == b':',
            8 => *c == b'.',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn a_terminal_gets_a_table_with_failures_in_red() {
    let (out, m, pid) = table_run("table", "");
    let mut lines = out.lines();
    let note = lines.next().unwrap();
    assert!(
        note.starts_with("# execwatch: local time (UTC")
            && note.ends_with(
                "; failures show ERROR, in red; exits show exit=N or the signal there; \
                 piped: plain text lines"
            ),
        "{note}"
    );
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("TIME ") && header.ends_with(" COMMAND"),
        "{header}"
    );
    let command = column(header, "COMMAND");
    let error = column(header, "ERROR");
    // The header is written once.
    assert_eq!(out.matches("TIME ").count(), 1, "{out}");

    let ok = out
        .lines()
        .find(|l| l.contains(&format!("/bin/true {m}")))
        .unwrap_or_else(|| panic!("no row for /bin/true {m}:\n{out}"));
    assert!(!ok.contains('\x1b'), "{ok:?}");
    let cols: Vec<&str> = ok.split_whitespace().collect();
    assert!(is_time(cols[0]), "{ok}");
    assert_eq!(cols[1], pid.to_string(), "{ok}");
    assert_eq!(cols[2], std::process::id().to_string(), "{ok}");
    assert_eq!(cols[3], "root", "{ok}");
    assert_eq!(from_char(ok, command), format!("/bin/true {m}"), "{ok}");
    assert_eq!(from_char(ok, error).trim_start(), format!("/bin/true {m}"));

    let failed = out
        .lines()
        .find(|l| l.contains(&format!("/nonexistent/{m}")))
        .unwrap_or_else(|| panic!("no row for the failed exec:\n{out}"));
    let body = failed
        .strip_prefix("\x1b[31m")
        .and_then(|f| f.strip_suffix("\x1b[0m"))
        .unwrap_or_else(|| panic!("the failure is not in red: {failed:?}"));
    assert!(!body.contains('\x1b'), "{failed:?}");
    assert_eq!(
        from_char(body, error),
        format!("ENOENT  /nonexistent/{m}"),
        "{body}"
    );
    assert_eq!(from_char(body, command), format!("/nonexistent/{m}"));
}

#[test]
fn no_color_turns_the_red_off() {
    let (out, m, _) = table_run("nocolor", "1");
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(!out.lines().next().unwrap().contains("red"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(&format!(" ENOENT  /nonexistent/{m}"))),
        "{out}"
    );
}

#[test]
fn piped_it_stays_the_plain_text_format() {
    let d = Daemon::start_format("text", &[]);
    let m = marker("piped");
    let pid = marked_execs(&m);
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.lines_with(&m).len() < 2 {
        assert!(Instant::now() < deadline, "no text lines with {m}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let first = stopped.lines.first().expect("some lines");
    assert!(
        !first.starts_with('#') && !first.starts_with("TIME"),
        "a header reached a pipe: {first}"
    );
    let ok = stopped
        .lines
        .iter()
        // The marker too: a pid alone may be an earlier process's exit.
        .find(|l| l.contains(&format!(" pid={pid} ")) && l.contains(&m))
        .expect("the /bin/true line");
    // 2026-11-25T16:56:32.764340398Z exec seq=...
    assert_eq!(ok.as_bytes()[4], b'-', "{ok}");
    assert_eq!(&ok[29..36], "Z exec ", "{ok}");
    assert!(
        ok.contains(&format!(r#" argv=["/bin/true" "{m}"] "#)),
        "{ok}"
    );
    let failed = stopped
        .lines
        .iter()
        .find(|l| l.contains(&format!(r#"argv=["/nonexistent/{m}"]"#)))
        .expect("the failed exec's line");
    assert!(
        failed.contains(" exec failure ") && failed.contains(" error=ENOENT "),
        "{failed}"
    );
    assert!(stopped.lines.iter().all(|l| !l.contains('\x1b')));
}
