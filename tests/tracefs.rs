//! On a fresh machine tracefs is not mounted. execwatch then reads the
//! syscall exit tracepoint ids from a private tracefs mount that it undoes
//! at once, attaches to the tracepoints through perf events of its own, and
//! leaves no mount behind; when the tracepoints are not used it mounts
//! nothing. Each daemon runs in a mount namespace of its own where tracefs is
//! unmounted, so the host's tracefs (and tests running beside these) are
//! left alone.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{has_arg, marker, Daemon, BIN};

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

#[test]
fn without_tracefs_it_mounts_privately_reads_the_ids_unmounts_and_captures_failures() {
    let d = Daemon::start_cmd(without_tracefs(&[]));
    // Attached, and no tracefs anywhere in its mount namespace.
    assert_eq!(tracefs_mounts(d.pid()), Vec::<String>::new());
    let m = marker("tracefs");
    assert!(Command::new(format!("/nonexistent/{m}"))
        .arg(&m)
        .status()
        .is_err());
    let e = d.wait_for(1, Duration::from_secs(20), |v| has_arg(v, &m));
    assert_eq!(e[0]["error"]["code"], "ENOENT");
    let stopped = d.stop_within(Duration::from_secs(20));
    assert!(stopped.status.success());
    let err = &stopped.stderr;
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
        let d = Daemon::start_cmd(without_tracefs(&["--failed-execs", mode]));
        assert_eq!(tracefs_mounts(d.pid()), Vec::<String>::new(), "{mode}");
        let stopped = d.stop_within(Duration::from_secs(20));
        assert!(stopped.status.success());
        let err = &stopped.stderr;
        assert!(!err.contains("mounted tracefs"), "{mode}: {err}");
        assert!(
            err.contains(&format!(r#""failed_execs":"{}""#, mode)),
            "{err}"
        );
    }
}
