//! A real journald for the tests, and reading it back. Standalone (used by
//! tests/common and tests/spawned through `#[path]`).

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Start a standalone systemd-journald when none is listening (PID 1 here
/// is not systemd).
pub fn ensure_journald() {
    let up = || {
        UnixDatagram::unbound()
            .unwrap()
            .connect(JOURNAL_SOCKET)
            .is_ok()
    };
    if up() {
        return;
    }
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let journald = [
        "/lib/systemd/systemd-journald",
        "/usr/lib/systemd/systemd-journald",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("systemd-journald is installed (Debian package systemd)");
    // --fork: setsid returns at once, journald lives on in its own session.
    let started = Command::new("setsid")
        .args(["--fork", journald])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start systemd-journald");
    assert!(started.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !up() {
        assert!(
            Instant::now() < deadline,
            "systemd-journald did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// journald entries selected by `args` (journalctl match expressions, and
/// options such as `--file=`).
pub fn journal_entries<S: AsRef<OsStr>>(args: &[S]) -> Vec<Value> {
    let out = Command::new("journalctl")
        .args(["-o", "json", "--no-pager", "--all"])
        .args(args)
        .output()
        .expect("run journalctl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The journal's last cursor.
pub fn journal_cursor() -> Option<String> {
    journal_entries(&["-n", "1"])
        .first()
        .and_then(|e| e["__CURSOR"].as_str().map(str::to_string))
}

/// A journalctl match for entries journald receives from now on: a
/// daemon's `_PID` alone may match an earlier process's entries, as the
/// flood tests wrap the pid space around. (Not `--after-cursor`: with
/// matches, journalctl 252 skips the first entry after the cursor.)
pub fn journal_since_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("--since=@{}.{:06}", now.as_secs(), now.subsec_micros())
}

/// [`journal_entries`] once at least `n` are there, or `timeout` has
/// passed: journald writes what it receives some time later. The caller
/// checks what it got.
pub fn wait_journal_entries<S: AsRef<OsStr>>(
    args: &[S],
    n: usize,
    timeout: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let entries = journal_entries(args);
        if entries.len() >= n || Instant::now() > deadline {
            return entries;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A journal field as bytes: journalctl gives non-printable values as arrays.
pub fn journal_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        Value::Array(a) => a.iter().map(|x| x.as_u64().unwrap() as u8).collect(),
        other => panic!("not a journal field value: {other}"),
    }
}

/// journalctl matches for the exec entry whose argv[1] is `m`, written by
/// the daemon `pid` (other tests' daemons record the same exec).
pub fn exec_entry_matches(m: &str, pid: u32) -> [String; 3] {
    [
        format!("EXECWATCH_ARGV_1={m}"),
        format!("_PID={pid}"),
        "EXECWATCH_ACTION=exec".to_string(),
    ]
}
