//! A write that fails is not a delivery: `--format json > /dev/full` counts
//! every event as lost (reason `output`), says why in one line, and exits
//! non-zero.

mod common;
mod spawned;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{marker, run_quiet};
use spawned::{assert_summary_adds_up, Spawned};

#[test]
fn json_to_dev_full_counts_every_event_as_lost_and_exits_non_zero() {
    let full = std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let mut d = Spawned::start(&[], Stdio::from(full), &[]);
    let m = marker("devfull");
    for _ in 0..5 {
        assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
    }
    // The first write fails and ends the run, without a signal.
    let status = d.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", d.stderr());
    let err = d.stderr();
    let last = err.lines().last().unwrap();
    assert_eq!(
        last, "execwatch: error: writing events: No space left on device (os error 28)",
        "{err}"
    );
    let s = d.summary();
    assert_summary_adds_up(&s);
    assert_eq!(s["events"], 0, "nothing was written: {s}");
    assert!(s["lost_output"].as_u64().unwrap() >= 5, "{s}");
    assert_eq!(s["lost_shutdown"], 0, "{s}");
    assert!(
        err.contains("exec events lost: the output failed"),
        "a loss warning names the reason: {err}"
    );
}
