//! When the reader cannot keep up, the kernel side drops records, counts
//! them by reason, and delivery resumes once the pressure goes. Its own test
//! binary: it floods the host with execs, which would perturb other tests.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{has_arg, marker, run_quiet, Daemon};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_paused_reader_loses_counted_records_and_recovers() {
    // 64 KiB ring, ~4 KiB records: it holds about 16 of the 400 execs.
    let d = Daemon::start(&["--ring-buffer-size", "64KiB", "--stats-interval", "1"]);
    let pid = Pid::from_raw(d.pid() as i32);
    let m = marker("flood");
    let big = "x".repeat(4000);
    let rss_before = rss_kib(d.pid());

    kill(pid, Signal::SIGSTOP).unwrap();
    for _ in 0..400 {
        assert!(run_quiet(Command::new("/bin/true").arg(&m).arg(&big)).success());
    }
    kill(pid, Signal::SIGCONT).unwrap();

    // Delivery resumes: an exec after the pressure is gone arrives.
    let after = marker("after");
    assert!(run_quiet(Command::new("/bin/true").arg(&after)).success());
    d.wait_for(1, Duration::from_secs(20), |v| has_arg(v, &after));
    // The loss warning comes from the periodic counter check.
    d.wait_for_stderr("exec events lost", Duration::from_secs(10));
    let rss_after = rss_kib(d.pid());
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    let flood = stopped.events.iter().filter(|v| has_arg(v, &m)).count() as u64;
    let s = stopped.summary();
    let (events, seen, lost) = (
        s["events"].as_u64().unwrap(),
        s["seen"].as_u64().unwrap(),
        s["lost_total"].as_u64().unwrap(),
    );
    assert!(
        flood < 400,
        "the paused reader cannot have received all 400 ({flood})"
    );
    assert!(lost >= 400 - flood, "lost {lost}, delivered {flood} of 400");
    assert_eq!(s["lost_ringbuf_full"].as_u64().unwrap(), lost);
    assert_eq!(events + lost, seen, "delivered + lost = seen: {s}");
    assert_eq!(s["decode_errors"], 0);
    // Sequence numbers leave a gap for every lost record.
    let mut seqs: Vec<u64> = stopped
        .events
        .iter()
        .map(|v| v["event"]["sequence"].as_u64().unwrap())
        .collect();
    seqs.sort_unstable();
    let span = seqs.last().unwrap() - seqs.first().unwrap() + 1;
    assert!(
        span - seqs.len() as u64 <= lost,
        "gaps {} > lost {lost}",
        span - seqs.len() as u64
    );
    assert!(
        span - seqs.len() as u64 > 0,
        "the losses show as sequence gaps"
    );
    // No unbounded buffering in the daemon while it was behind.
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
}

#[test]
fn a_blocked_output_pipe_loses_counted_records_and_recovers() {
    common::require_root();
    // stdout is a pipe nobody reads for a while: writes block, the ring fills.
    let mut child = Command::new(common::BIN)
        .args(["--format", "json", "--ring-buffer-size", "64KiB"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || common::read_all(&mut stderr));
    std::thread::sleep(Duration::from_secs(2)); // attached (no reader of stdout yet)
    let m = marker("pipe");
    let big = "y".repeat(4000);
    for _ in 0..400 {
        assert!(run_quiet(Command::new("/bin/true").arg(&m).arg(&big)).success());
    }
    // Now drain stdout: delivery resumes.
    let mut stdout = child.stdout.take().unwrap();
    let out_reader = std::thread::spawn(move || common::read_all(&mut stdout));
    let after = marker("pipe-after");
    std::thread::sleep(Duration::from_millis(500));
    assert!(run_quiet(Command::new("/bin/true").arg(&after)).success());
    std::thread::sleep(Duration::from_millis(1500));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    let out = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(
        out.contains(&after),
        "delivery resumed after the pipe drained"
    );
    let flood = out.lines().filter(|l| l.contains(&m)).count() as u64;
    let summary: serde_json::Value = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["message"] == "summary")
        .unwrap_or_else(|| panic!("no summary: {err}"));
    let lost = summary["lost_total"].as_u64().unwrap();
    assert!(
        flood < 400 && lost >= 400 - flood,
        "delivered {flood}, lost {lost}: {summary}"
    );
    assert_eq!(
        summary["events"].as_u64().unwrap() + lost,
        summary["seen"].as_u64().unwrap(),
        "{summary}"
    );
}
