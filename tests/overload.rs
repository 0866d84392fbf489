//! When the reader cannot keep up, the kernel side drops records, counts
//! them by reason, and delivery resumes once the pressure goes. Under
//! sustained overload the loop still turns: the watchdog is pinged, losses
//! are reported as they happen, and SIGTERM ends the daemon within the drain
//! deadline, counting what it could not write. Its own test binary: it
//! floods the host with execs, which would perturb other tests.

mod common;
mod spawned;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{has_arg, marker, run_quiet, Daemon};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use spawned::{
    anon_kib, assert_summary_adds_up, assert_turning_and_reporting_losses, complete_lines,
    overload_args, rss_kib, sigterm_ends_in_time, Flood, NotifySocket, Spawned,
};

#[test]
fn a_paused_reader_loses_counted_records_and_recovers() {
    // 64 KiB rings, ~4 KiB records: each holds about 16 of the 400 execs.
    let ring = common::small_ring();
    let d = Daemon::start(&["--ring-buffer-size", &ring, "--stats-interval", "1"]);
    let pid = Pid::from_raw(d.pid() as i32);
    let m = marker("flood");
    let big = "x".repeat(4000);
    let rss_before = rss_kib(d.pid());

    kill(pid, Signal::SIGSTOP).unwrap();
    for _ in 0..400 {
        assert!(run_quiet(Command::new("/bin/true").arg(&m).arg(&big)).success());
    }
    kill(pid, Signal::SIGCONT).unwrap();

    // Delivery resumes: an exec after the pressure is gone arrives. The
    // daemon needs a moment to drain the full ring (other execs on the host
    // fill it too): one exec every 200 ms until one gets through.
    let after = marker("after");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while d.matching(|v| has_arg(v, &after)).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no exec delivered 20 s after the reader resumed"
        );
        assert!(run_quiet(Command::new("/bin/true").arg(&after)).success());
        std::thread::sleep(Duration::from_millis(200));
    }
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
    assert_summary_adds_up(&s);
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
    // stdout is a pipe nobody reads for a while: writes block, the ring fills.
    // Close-on-exec: another test's child holding the write end would keep
    // the reader below from ever seeing the end.
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let ring = common::small_ring();
    let d = Daemon::start_with_stdout(
        "json",
        &["--ring-buffer-size", &ring],
        Stdio::from(out_w),
        &[],
    );
    let m = marker("pipe");
    let big = "y".repeat(4000);
    for _ in 0..400 {
        assert!(run_quiet(Command::new("/bin/true").arg(&m).arg(&big)).success());
    }
    // Now drain stdout: delivery resumes.
    let out = Arc::new(Mutex::new(String::new()));
    let read_out = Arc::clone(&out);
    let out_reader = std::thread::spawn(move || {
        for line in BufReader::new(std::fs::File::from(out_r)).lines() {
            let mut out = read_out.lock().unwrap();
            out.push_str(&line.unwrap());
            out.push('\n');
        }
    });
    // The daemon first drains the full ring (other execs on the host fill
    // it too): one exec every 200 ms until one gets through.
    let after = marker("pipe-after");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !out.lock().unwrap().contains(&after) {
        assert!(
            Instant::now() < deadline,
            "delivery did not resume after the pipe drained"
        );
        assert!(run_quiet(Command::new("/bin/true").arg(&after)).success());
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    out_reader.join().unwrap();
    let out = out.lock().unwrap();
    let flood = out.lines().filter(|l| l.contains(&m)).count() as u64;
    let summary = stopped.summary();
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

#[test]
fn sustained_overload_with_a_slow_reader_keeps_the_watchdog_warns_and_stops_in_time() {
    let notify = NotifySocket::new("overload");
    let args = overload_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = Spawned::start(
        &args,
        Stdio::piped(),
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "1000000".into()),
        ],
    );
    // A slow reader: 16 KiB every 50 ms, about 320 KiB/s, far below what
    // two threads of 4 KB execs produce.
    let mut out = d.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => return all,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let m = marker("sustained");
    let flood = Flood::start(&m, 4000, 2);
    // The loop keeps turning while the output is behind: pings every half
    // WATCHDOG_USEC, and losses reported while they happen.
    let pings = assert_turning_and_reporting_losses(&d, &notify, 4);

    let execs = flood.count();
    let took = sigterm_ends_in_time(&mut d, flood);
    let written = reader.join().unwrap();
    let s = d.summary();
    assert_summary_adds_up(&s);
    assert_eq!(
        s["events"].as_u64().unwrap(),
        complete_lines(&written),
        "delivered = lines the reader got: {s}"
    );
    assert!(s["lost_ringbuf_full"].as_u64().unwrap() > 0, "{s}");
    assert!(
        s["lost_shutdown"].as_u64().unwrap() > 0,
        "a slow reader cannot take the whole queue in 1 s: {s}"
    );
    assert!(s["seen"].as_u64().unwrap() >= execs, "{execs} execs: {s}");
    eprintln!("slow reader: {pings} pings in 4 s, SIGTERM to exit {took:?}: {s}");
}

#[test]
fn sigterm_with_a_stalled_output_ends_in_time_and_counts_what_was_not_written() {
    // stdout is a pipe nobody reads until the daemon has exited.
    let ring = common::small_ring();
    let mut d = Spawned::start(
        &["--ring-buffer-size", &ring, "--drain-timeout", "1"],
        Stdio::piped(),
        &[],
    );
    let mut out = d.child.stdout.take().unwrap();
    let m = marker("stalled");
    let flood = Flood::start(&m, 4000, 2);
    d.wait_stderr("exec events lost", Duration::from_secs(20));
    let anon = anon_kib(d.pid());

    let took = sigterm_ends_in_time(&mut d, flood);
    let mut written = Vec::new();
    out.read_to_end(&mut written).unwrap();
    let s = d.summary();
    assert_summary_adds_up(&s);
    // The writer was blocked mid-chunk: only the complete lines count.
    assert_eq!(
        s["events"].as_u64().unwrap(),
        complete_lines(&written),
        "delivered = lines in the pipe: {s}"
    );
    assert!(s["lost_shutdown"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["lost_output"], 0, "{s}");
    // The output queue is bounded (1 MiB plus chunks), whatever the backlog.
    assert!(
        anon < 12 * 1024,
        "anonymous memory {anon} KiB while the output was stalled"
    );
    eprintln!("stalled output: SIGTERM to exit {took:?}, anonymous memory {anon} KiB: {s}");
}

#[test]
fn the_default_drain_timeout_is_below_the_units_stop_timeout() {
    let help = Command::new(common::BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let drain: u64 = help
        .split("--drain-timeout")
        .nth(1)
        .and_then(|rest| rest.split("[default: ").nth(1))
        .and_then(|d| d.split(']').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no --drain-timeout default in:\n{help}"));
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/systemd/execwatch.service"
    ))
    .unwrap();
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec= in seconds");
    // Room for the 2 s to notice the signal and the summary after the drain.
    assert!(
        drain + 5 <= stop,
        "drain {drain} s vs TimeoutStopSec {stop} s"
    );
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/execwatch.yaml"
    ))
    .unwrap();
    let grace: u64 = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("terminationGracePeriodSeconds");
    assert!(
        drain + 5 <= grace,
        "drain {drain} s vs grace period {grace} s"
    );
}
