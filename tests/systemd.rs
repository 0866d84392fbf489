//! systemd integration for real: sd_notify over a real socket, and entries
//! in a real journald read back with journalctl.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::notify::NotifySocket;
use common::{
    ensure_journald, journal_bytes as bytes, journal_entries, journal_since_now, marker, run_quiet,
    wait_journal_entries,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn spawn(args: &[&str], notify: &NotifySocket, env: &[(&str, &str)]) -> Child {
    common::require_root();
    let mut cmd = Command::new(common::BIN);
    cmd.args(args)
        .env("NOTIFY_SOCKET", notify.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

#[test]
fn sd_notify_ready_after_attach_status_watchdog_stopping() {
    let n = NotifySocket::new("sd");
    let mut child = spawn(
        &["--format", "json", "--stats-interval", "1"],
        &n,
        &[("WATCHDOG_USEC", "600000")],
    );
    // Read stdout as it comes: a full pipe would block the daemon (and rightly
    // starve the watchdog).
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let first = n.until(Duration::from_secs(60), |m| m.contains("READY=1"));
    assert!(first.last().unwrap().contains("STATUS="), "{first:?}");
    // READY means attached: an exec right now is recorded.
    let m = marker("ready");
    assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
    let mut seen = n.until(Duration::from_secs(10), |m| m.contains("STATUS=recording:"));
    seen.extend(n.until(Duration::from_secs(5), |m| m == "WATCHDOG=1"));
    seen.extend(n.until(Duration::from_secs(5), |m| m == "WATCHDOG=1"));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    n.until(Duration::from_secs(10), |m| m.contains("STOPPING=1"));
    assert!(child.wait().unwrap().success());
    let out = reader.join().unwrap();
    assert!(
        out.lines().any(|l| l.contains(&m)),
        "the exec right after READY is in the output"
    );
    let status = seen
        .iter()
        .find(|m| m.contains("STATUS=recording:"))
        .unwrap();
    assert!(
        status.contains("events") && status.contains("lost"),
        "{status}"
    );
}

#[test]
fn no_notify_socket_is_a_no_op() {
    common::require_root();
    let mut child = Command::new(common::BIN)
        .args(["--format", "json"])
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, stdout) = std::sync::mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        // Read to the end: a closed pipe would fail the daemon's writes.
        for line in out.lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    // No READY=1 to wait for: past that point once an exec is recorded.
    let m = marker("no-notify");
    let deadline = Instant::now() + Duration::from_secs(60);
    'recorded: loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "execwatch exited without a NOTIFY_SOCKET"
        );
        assert!(
            Instant::now() < deadline,
            "execwatch recorded no exec without a NOTIFY_SOCKET"
        );
        assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
        while let Ok(line) = stdout.recv_timeout(Duration::from_millis(100)) {
            if line.contains(&m) {
                break 'recorded;
            }
            if Instant::now() >= deadline {
                break; // the check above fails the test
            }
        }
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    reader.join().unwrap();
}

#[test]
fn journald_entries_are_native_fields_and_cannot_be_forged() {
    ensure_journald();
    // This daemon's pid may have written to the journal before, as another
    // process: its diagnostics are looked for after this point only.
    let since = journal_since_now();
    let n = NotifySocket::new("journal");
    let mut child = spawn(&["--format", "journald"], &n, &[]);
    n.until(Duration::from_secs(60), |m| m.contains("READY=1"));
    let m = marker("journal");
    let hostile: [&[u8]; 4] = [
        m.as_bytes(),
        b"line\nFORGED_FIELD=1\nMESSAGE=forged",
        b"\x1b[2J\x1b[31mred",
        b"\xff\xfe",
    ];
    let mut cmd = Command::new("/bin/true");
    for a in hostile {
        cmd.arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(a));
    }
    let status = run_quiet(&mut cmd);
    assert!(status.success());
    let daemon_pid = child.id();
    let ours = common::exec_entry_matches(&m, daemon_pid);
    let written = wait_journal_entries(&ours, 1, Duration::from_secs(10));
    assert!(!written.is_empty(), "no journal entry {ours:?}");
    kill(Pid::from_raw(daemon_pid as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());

    let entries = journal_entries(&ours);
    assert_eq!(entries.len(), 1, "one entry per exec: {entries:?}");
    let e = &entries[0];
    let msg = bytes(&e["MESSAGE"]);
    assert!(
        !msg.contains(&b'\n'),
        "MESSAGE is one line: {:?}",
        String::from_utf8_lossy(&msg)
    );
    assert!(String::from_utf8_lossy(&msg).contains(r"line\nFORGED_FIELD=1\nMESSAGE=forged"));
    assert_eq!(e["MESSAGE_ID"], "f09ad527e8ef47a6917d817cfe678f23");
    assert_eq!(e["SYSLOG_IDENTIFIER"], "execwatch");
    assert_eq!(e["PRIORITY"], "6");
    assert_eq!(e["EXECWATCH_OUTCOME"], "success");
    assert_eq!(e["EXECWATCH_ARGC"], "5");
    assert_eq!(bytes(&e["EXECWATCH_ARGV_2"]), hostile[1]);
    assert_eq!(bytes(&e["EXECWATCH_ARGV_3"]), hostile[2]);
    assert_eq!(bytes(&e["EXECWATCH_ARGV_4"]), hostile[3]);
    assert!(e.get("FORGED_FIELD").is_none(), "no forged field: {e}");
    let exe = std::fs::canonicalize("/bin/true").unwrap();
    assert_eq!(e["EXECWATCH_EXE"], exe.to_str().unwrap());
    assert_eq!(e["EXECWATCH_PPID"], std::process::id().to_string());
    assert!(e.get("EXECWATCH_CGROUP_PATH").is_some());

    // The daemon's own diagnostics are entries with their MESSAGE_IDs too.
    let mut from_daemon = vec![format!("_PID={daemon_pid}"), since];
    // The summary is sent at exit: journald may not have written it yet.
    let mut summary = from_daemon.clone();
    summary.push(format!(
        "MESSAGE_ID={}",
        execwatch::output::journald::message_ids::SUMMARY
    ));
    wait_journal_entries(&summary, 1, Duration::from_secs(10));
    from_daemon.push("SYSLOG_IDENTIFIER=execwatch".into());
    let diag = journal_entries(&from_daemon);
    let ids: Vec<&str> = diag
        .iter()
        .filter_map(|d| d["MESSAGE_ID"].as_str())
        .collect();
    assert!(
        ids.contains(&"5084ea02f125437bae2cc1bbb89afe1e"),
        "started: {ids:?}"
    );
    assert!(
        ids.contains(&"128cd06b0fd1461899812fb2b650e3b7"),
        "summary: {ids:?}"
    );
}

#[test]
fn journald_is_the_default_when_stderr_is_the_journal() {
    ensure_journald();
    // Give execwatch a stderr whose device:inode JOURNAL_STREAM names, as
    // systemd does for a service whose output goes to the journal.
    let n = NotifySocket::new("stream");
    let err_path = n.dir().join("stderr");
    let err = std::fs::File::create(&err_path).unwrap();
    let st = nix::sys::stat::fstat(&err).unwrap();
    common::require_root();
    let mut child = Command::new(common::BIN)
        .env("NOTIFY_SOCKET", n.path())
        .env("JOURNAL_STREAM", format!("{}:{}", st.st_dev, st.st_ino))
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap();
    n.until(Duration::from_secs(60), |m| m.contains("READY=1"));
    let m = marker("default");
    assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
    // Ours: other tests' journald daemons record the same exec.
    let ours = common::exec_entry_matches(&m, child.id());
    let written = wait_journal_entries(&ours, 1, Duration::from_secs(10));
    assert!(!written.is_empty(), "entry {ours:?} not in the journal");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.is_empty(), "nothing on stdout in journald mode: {out}");
}

fn repo_file(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

#[test]
fn shipped_unit_verifies_and_scores_low_exposure() {
    let unit = std::fs::read_to_string(repo_file("deploy/systemd/execwatch.service")).unwrap();
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "LogRateLimitIntervalSec=0",
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON",
    ] {
        assert!(unit.contains(want), "unit lacks {want}");
    }
    // verify checks that ExecStart exists: point it at the built binary,
    // nothing else changes.
    let dir = std::env::temp_dir().join(format!("execwatch-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("execwatch.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/execwatch", common::BIN)).unwrap();
    let v = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let verify_out = format!(
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(
        v.status.success() && verify_out.trim().is_empty(),
        "verify: {verify_out}"
    );

    let s = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&s.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for execwatch.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 2.5, "exposure {level} > 2.5:\n{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn catalog_explains_every_message_id() {
    use execwatch::output::journald::message_ids as ids;
    let catalog = std::fs::read_to_string(repo_file("deploy/systemd/execwatch.catalog")).unwrap();
    for id in [
        ids::EXEC,
        ids::EXEC_FAILED,
        ids::EXIT,
        ids::STARTED,
        ids::LOST,
        ids::SUMMARY,
    ] {
        let entry = catalog
            .split("\n-- ")
            .find(|e| e.starts_with(id))
            .unwrap_or_else(|| panic!("no catalog entry for {id}"));
        assert!(entry.contains("\nSubject: "), "{id} has no Subject");
    }
}
