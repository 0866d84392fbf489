//! On a fresh machine tracefs is not mounted: execwatch mounts it (and says
//! so) for the syscall exit tracepoints. Its own test binary, because it
//! unmounts tracefs, which tests running in parallel would feel.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{has_arg, marker, Daemon};

#[test]
fn without_tracefs_it_mounts_it_logs_it_and_captures_failures() {
    common::require_root();
    // Unmount every tracefs mount at the usual place (there may be several).
    while Command::new("umount")
        .arg("/sys/kernel/tracing")
        .status()
        .unwrap()
        .success()
    {}
    let mounted = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounted.contains(" /sys/kernel/tracing tracefs "),
        "{mounted}"
    );

    let d = Daemon::start(&[]);
    let m = marker("tracefs");
    assert!(Command::new(format!("/nonexistent/{m}"))
        .arg(&m)
        .status()
        .is_err());
    let e = d
        .wait_for(1, Duration::from_secs(20), |v| has_arg(v, &m))
        .remove(0);
    let stopped = d.stop();
    assert_eq!(e["error"]["code"], "ENOENT");
    assert!(
        stopped
            .stderr
            .contains("mounted tracefs at /sys/kernel/tracing"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains(r#""failed_execs":"tracepoints""#),
        "{}",
        stopped.stderr
    );
}
