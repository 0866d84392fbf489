//! journald that stops reading (here: SIGSTOP, as a hung or overloaded
//! journald would) must not wedge the daemon: losses are reported while it
//! lasts, SIGTERM ends it within the drain deadline, and what it counts as
//! delivered is exactly what reached the journal. Its own test binary: it
//! stops the host's journald for a few seconds, which other tests read.

mod common;
mod spawned;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::journal::{ensure_journald, journal_entries, journal_since_now};
use common::marker;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use spawned::{
    assert_summary_adds_up, assert_turning_and_reporting_losses, overload_args,
    sigterm_ends_in_time, Flood, NotifySocket, Spawned, BIN,
};

/// The journald of this mount namespace (the one whose socket execwatch
/// reaches).
fn journald_pid() -> Pid {
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let pids: Vec<Pid> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() == "systemd-journal")
                && std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == Some(own_ns.clone())
        })
        .map(Pid::from_raw)
        .collect();
    assert_eq!(pids.len(), 1, "one systemd-journald here: {pids:?}");
    pids[0]
}

/// SIGCONT on drop, so a failed test leaves journald running.
struct Stopped(Pid);

impl Stopped {
    fn stop(pid: Pid) -> Stopped {
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP journald");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

#[test]
fn a_stalled_journald_cannot_wedge_the_daemon_and_delivered_means_in_the_journal() {
    ensure_journald();
    let journald = journald_pid();
    // Only entries from here on: this daemon's pid may have been an
    // earlier process's, one that wrote to the journal too.
    let since = journal_since_now();
    let mut cmd = Command::new(BIN);
    cmd.args(["--format", "journald"]).args(overload_args());
    let notify = NotifySocket::new("journald-stall");
    let mut d = Spawned::start_command(
        cmd,
        Stdio::null(),
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "1000000".into()),
        ],
    );
    let m = marker("journald-stall");

    let stalled = Stopped::stop(journald);
    let flood = Flood::start(&m, 2000, 2);
    // The loop keeps turning while journald reads nothing: pings, and the
    // kernel's drops reported as they happen (stderr and STATUS; the
    // journal cannot take them now).
    assert_turning_and_reporting_losses(&d, &notify, 3);
    let took = sigterm_ends_in_time(&mut d, flood);
    let s = d.summary();
    assert_summary_adds_up(&s);
    assert!(s["lost_shutdown"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["lost_output"], 0, "{s}");
    let delivered = s["events"].as_u64().unwrap();
    assert!(delivered > 0, "journald's queue took some entries: {s}");

    // journald reads again: what the daemon counted as delivered is there,
    // no more and no less.
    drop(stalled);
    let matches = [format!("_PID={}", d.pid()), since];
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n;
    loop {
        n = journal_entries(&matches)
            .iter()
            .filter(|e| e["EXECWATCH_ACTION"].is_string())
            .count() as u64;
        if n >= delivered || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(n, delivered, "entries in the journal vs delivered: {s}");
    eprintln!("stalled journald: SIGTERM to exit {took:?}, {n} entries in the journal: {s}");
}
