//! The daemon with its stdout in the test's hands (a pipe read slowly or
//! not at all, /dev/full), an exec flood, and a notify socket: the pieces
//! of the overload, output-failure and liveness tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_execwatch");

/// `execwatch --format json ARGS` with `stdout` as given, attached.
pub struct Spawned {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl Spawned {
    pub fn start(args: &[&str], stdout: Stdio, env: &[(&str, String)]) -> Spawned {
        let mut cmd = Command::new(BIN);
        cmd.args(["--format", "json"]).args(args);
        Spawned::start_command(cmd, stdout, env)
    }

    /// `cmd` is execwatch, or a wrapper that execs it in the same process.
    pub fn start_command(mut cmd: Command, stdout: Stdio, env: &[(&str, String)]) -> Spawned {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test loads BPF programs and must run as root");
        }
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn execwatch");
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let se = Arc::clone(&stderr);
        let stderr_thread = std::thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut line = String::new();
            while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                se.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let s = Spawned {
            child,
            stderr,
            stderr_thread: Some(stderr_thread),
        };
        s.wait_stderr("execwatch attached", Duration::from_secs(60));
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn wait_stderr(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {needle:?} on stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    }

    /// Wait for the exit; panics (after killing it) past `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let Some(status) = crate::common::wait_within(&mut self.child, timeout) else {
            panic!(
                "execwatch still running after {timeout:?}; stderr:\n{}",
                self.stderr()
            );
        };
        if let Some(t) = self.stderr_thread.take() {
            t.join().unwrap();
        }
        status
    }

    /// The final summary diagnostic.
    pub fn summary(&self) -> Value {
        self.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["message"] == "summary")
            .unwrap_or_else(|| panic!("no summary in stderr:\n{}", self.stderr()))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.stderr_thread.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A daemon under sustained overload, as the helpers below expect it: a
/// ring buffer that fills at once, a 1 s drain deadline
/// ([`sigterm_ends_in_time`]) and a loss check every second
/// ([`assert_turning_and_reporting_losses`]).
pub fn overload_args() -> Vec<String> {
    // 64 KiB for each possible CPU's ring buffer: the least that holds a record.
    let cpus = libbpf_rs::num_possible_cpus().expect("count possible CPUs") as u64;
    let ring = ((64u64 << 10) * cpus).next_power_of_two().to_string();
    [
        "--ring-buffer-size",
        &ring,
        "--drain-timeout",
        "1",
        "--stats-interval",
        "1",
    ]
    .map(String::from)
    .to_vec()
}

/// SIGTERM to exit: the loop notices within a turn, then the drain.
pub const STOP_BOUND: Duration = Duration::from_secs(2);

/// SIGTERM a daemon run with `--drain-timeout 1` under a flood: it exits
/// successfully within the stop bound plus the drain. The time it took.
pub fn sigterm_ends_in_time(d: &mut Spawned, flood: Flood) -> Duration {
    let t0 = Instant::now();
    d.sigterm();
    let status = d.wait_exit(Duration::from_secs(20));
    let took = t0.elapsed();
    flood.stop();
    assert!(status.success(), "{status}: {}", d.stderr());
    assert!(
        took < STOP_BOUND + Duration::from_secs(1),
        "SIGTERM to exit took {took:?} with --drain-timeout 1"
    );
    took
}

/// While the output is behind, the loop keeps turning: over `secs`
/// seconds with WATCHDOG_USEC=1 s, a ping every half second at least, a
/// loss warning on stderr and the losses in STATUS. The pings.
pub fn assert_turning_and_reporting_losses(d: &Spawned, notify: &NotifySocket, secs: u64) -> usize {
    let msgs = notify.collect(Duration::from_secs(secs));
    let pings = msgs.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        pings >= secs as usize,
        "{pings} watchdog pings in {secs} s: {msgs:?}"
    );
    d.wait_stderr("exec events lost", Duration::from_secs(5));
    assert!(
        msgs.iter()
            .any(|m| m.contains("STATUS=recording:") && m.contains("lost_ringbuf_full=")),
        "STATUS shows the losses: {msgs:?}"
    );
    pings
}

/// The run's arithmetic, and every lost reason in lost_total.
pub fn assert_summary_adds_up(s: &Value) {
    let n = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("no {k} in the summary: {s}"))
    };
    assert_eq!(
        n("seen"),
        n("events") + n("lost_total") + n("decode_errors"),
        "seen = delivered + lost + decode errors: {s}"
    );
    assert_eq!(
        n("lost_total"),
        n("lost_ringbuf_full") + n("lost_no_scratch") + n("lost_output") + n("lost_shutdown"),
        "{s}"
    );
    assert_eq!(
        n("events"),
        n("events_success") + n("events_failure"),
        "{s}"
    );
}

/// Complete lines (what the daemon counts as delivered) in `bytes`.
pub fn complete_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Execs as fast as `threads` threads can run them, each with `arg_len`
/// bytes of argument, until stopped.
pub struct Flood {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Flood {
    pub fn start(marker: &str, arg_len: usize, threads: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|_| {
                let (stop, count) = (Arc::clone(&stop), Arc::clone(&count));
                let (m, big) = (marker.to_string(), "z".repeat(arg_len));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let ok = Command::new("/bin/true")
                            .arg(&m)
                            .arg(&big)
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .is_ok_and(|s| s.success());
                        assert!(ok);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Flood {
            stop,
            count,
            threads,
        }
    }

    /// Execs run so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Stop; the number of execs run.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.count.load(Ordering::Relaxed)
    }
}

#[allow(unused_imports)]
pub use crate::common::notify::NotifySocket;

pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Anonymous resident memory: heap and stacks, not the binary's pages.
pub fn anon_kib(pid: u32) -> u64 {
    status_kib(pid, "RssAnon:")
}

/// [`anon_kib`] once three reads 200 ms apart agree: the daemon is done
/// with what it was given. Fails if it has not settled within 30 s.
pub fn settled_anon_kib(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reads = vec![anon_kib(pid)];
    loop {
        if let [a, b, c] = reads[reads.len().saturating_sub(3)..] {
            if a == b && b == c {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "RssAnon of {pid} did not settle in 30 s: {reads:?} KiB"
        );
        std::thread::sleep(Duration::from_millis(200));
        reads.push(anon_kib(pid));
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
