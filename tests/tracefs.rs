//! On a fresh machine tracefs is not mounted. execwatch then reads the
//! syscall exit tracepoint ids from a private tracefs mount that it undoes
//! at once, attaches to the tracepoints through perf events of its own, and
//! leaves no mount behind; when the tracepoints are not used it mounts
//! nothing. Each daemon runs in a mount namespace of its own where tracefs is
//! unmounted, so the host's tracefs (and tests running beside these) are
//! left alone.

mod common;
mod spawned;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{has_arg, marker};
use serde_json::Value;
use spawned::{Spawned, BIN};

/// `execwatch --format json ARGS` in a new mount namespace without tracefs.
fn without_tracefs(args: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "for m in /sys/kernel/tracing /sys/kernel/debug/tracing; do \
               while umount \"$m\" 2>/dev/null; do :; done; \
             done; exec \"$0\" --format json \"$@\"",
        )
        .arg(BIN)
        .args(args);
    cmd
}

/// tracefs mounts the daemon can see.
fn tracefs_mounts(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .filter(|l| l.contains(" - tracefs "))
        .map(str::to_string)
        .collect()
}

/// Collect the daemon's events.
fn events_of(d: &mut Spawned) -> Arc<Mutex<Vec<Value>>> {
    let out = d.child.stdout.take().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = Arc::clone(&events);
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                ev.lock().unwrap().push(v);
            }
        }
    });
    events
}

#[test]
fn without_tracefs_it_mounts_privately_reads_the_ids_unmounts_and_captures_failures() {
    let mut d = Spawned::start_command(without_tracefs(&[]), Stdio::piped(), &[]);
    let events = events_of(&mut d);
    // Attached, and no tracefs anywhere in its mount namespace.
    assert_eq!(tracefs_mounts(d.pid()), Vec::<String>::new());
    let m = marker("tracefs");
    assert!(Command::new(format!("/nonexistent/{m}"))
        .arg(&m)
        .status()
        .is_err());
    let deadline = Instant::now() + Duration::from_secs(20);
    let e = loop {
        if let Some(e) = events.lock().unwrap().iter().find(|v| has_arg(v, &m)) {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "{}", d.stderr());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(e["error"]["code"], "ENOENT");
    d.sigterm();
    assert!(d.wait_exit(Duration::from_secs(20)).success());
    let err = d.stderr();
    let dir = err
        .split("mounted tracefs at ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no mount logged:\n{err}"));
    assert!(
        dir.contains("execwatch-tracefs."),
        "a directory of its own, not /sys/kernel/tracing: {dir}"
    );
    assert!(
        err.contains(&format!("unmounted tracefs at {dir}")),
        "{err}"
    );
    assert!(!std::path::Path::new(dir).exists(), "{dir} removed");
    assert!(err.contains(r#""failed_execs":"tracepoints""#), "{err}");
}

#[test]
fn nothing_is_mounted_when_the_tracepoints_are_not_used() {
    for mode in ["sys-exit", "off"] {
        let mut d = Spawned::start_command(
            without_tracefs(&["--failed-execs", mode]),
            Stdio::null(),
            &[],
        );
        assert_eq!(tracefs_mounts(d.pid()), Vec::<String>::new(), "{mode}");
        d.sigterm();
        assert!(d.wait_exit(Duration::from_secs(20)).success());
        let err = d.stderr();
        assert!(!err.contains("mounted tracefs"), "{mode}: {err}");
        assert!(
            err.contains(&format!(r#""failed_execs":"{}""#, mode)),
            "{err}"
        );
    }
}
