//! Shared test harness: runs the real daemon against the real kernel.
#![allow(dead_code)]

pub mod journal;
pub mod notify;
#[allow(unused_imports)]
pub use journal::{
    ensure_journald, exec_entry_matches, journal_bytes, journal_cursor, journal_entries,
    journal_since_now, wait_journal_entries, JOURNAL_SOCKET,
};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod formats;
pub mod fuse;

pub const BIN: &str = env!("CARGO_BIN_EXE_execwatch");

/// Fail (never skip) when not root: these tests load BPF programs.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "this test loads BPF programs into the kernel and must run as root \
             (it runs as uid {}): run it as root, e.g. `sudo scripts/test`",
            nix::unistd::geteuid()
        );
    }
}

/// A marker unique to this test run, to find our own execs among the host's.
pub fn marker(name: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "execwatch-test-{}-{}-{}",
        name,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub struct Daemon {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    /// stdout lines of `--format text`.
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    stdout_done: Option<thread::JoinHandle<()>>,
    /// The last output line, when it ended without its newline.
    cut_tail: Arc<Mutex<Option<Vec<u8>>>>,
    stderr_done: Option<thread::JoinHandle<()>>,
    _notify_dir: Option<tempdir::TempDir>,
}

pub struct Stopped {
    pub status: ExitStatus,
    pub events: Vec<Value>,
    pub lines: Vec<String>,
    pub stderr: String,
}

impl Stopped {
    /// The first JSON diagnostic on stderr that `pred` accepts; panics,
    /// naming `what` and showing stderr, when there is none.
    pub fn diagnostic(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| pred(v))
            .unwrap_or_else(|| panic!("no {what} in stderr:\n{}", self.stderr))
    }

    /// The final `summary` diagnostic.
    pub fn summary(&self) -> Value {
        self.diagnostic("summary line", |v| v["message"] == "summary")
    }
}

/// A directory removed on drop (for notify sockets).
pub mod tempdir {
    pub struct TempDir(pub std::path::PathBuf);

    impl TempDir {
        pub fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(super::marker(name));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Daemon {
    /// Start `execwatch --format json ARGS` and wait until it is attached.
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_format("json", args)
    }

    /// Start `execwatch --format FORMAT ARGS` with a NOTIFY_SOCKET, and wait
    /// for READY=1: the programs are attached and the ring buffer is read.
    pub fn start_format(format: &str, args: &[&str]) -> Daemon {
        Daemon::start_with_stdout(format, args, Stdio::piped(), &[])
    }

    /// [`Daemon::start_format`] with stdout sent to `stdout` (not read here
    /// unless it is a pipe) and extra environment variables.
    pub fn start_with_stdout(
        format: &str,
        args: &[&str],
        stdout: Stdio,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.arg("--format").arg(format).args(args);
        Daemon::spawn_cmd(cmd, format, stdout, env)
    }

    /// [`Daemon::start`] with another build of execwatch.
    pub fn start_bin(bin: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Daemon {
        let mut cmd = Command::new(bin);
        cmd.arg("--format").arg("json").args(args);
        Daemon::start_cmd(cmd)
    }

    /// Start `cmd`, which runs execwatch with `--format json` (through a
    /// wrapper, say), and wait for READY=1.
    pub fn start_cmd(cmd: Command) -> Daemon {
        Daemon::start_cmd_format(cmd, "json")
    }

    /// [`Daemon::start_cmd`] for a `cmd` whose output is in `format` (its
    /// default format, say).
    pub fn start_cmd_format(cmd: Command, format: &str) -> Daemon {
        Daemon::spawn_cmd(cmd, format, Stdio::piped(), &[])
    }

    fn spawn_cmd(mut cmd: Command, format: &str, stdout: Stdio, env: &[(&str, &str)]) -> Daemon {
        require_root();
        if format == "journald" {
            ensure_journald();
        }
        let dir = tempdir::TempDir::new("notify");
        let sock_path = dir.0.join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut child = cmd
            .env("NOTIFY_SOCKET", &sock_path)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn execwatch");
        let events = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));

        let ev = Arc::clone(&events);
        let ln = Arc::clone(&lines);
        let cut_tail = Arc::new(Mutex::new(None));
        let tail = Arc::clone(&cut_tail);
        let json = format == "json";
        let stdout_done = child.stdout.take().map(|out| {
            thread::spawn(move || {
                let mut out = BufReader::new(out);
                loop {
                    let mut line = Vec::new();
                    if out.read_until(b'\n', &mut line).expect("read stdout") == 0 {
                        break;
                    }
                    if line.pop() != Some(b'\n') {
                        // A daemon killed mid-write leaves a cut line; a
                        // stopped one never does (checked in stop()).
                        *tail.lock().unwrap() = Some(line);
                        break;
                    }
                    if json {
                        let v: Value = serde_json::from_slice(&line).unwrap_or_else(|e| {
                            panic!(
                                "stdout line is not JSON ({e}): {}",
                                String::from_utf8_lossy(&line)
                            )
                        });
                        ev.lock().unwrap().push(v);
                    } else {
                        let l = String::from_utf8(line).expect("text output is UTF-8");
                        ln.lock().unwrap().push(l);
                    }
                }
            })
        });
        let err = child.stderr.take().unwrap();
        let se = Arc::clone(&stderr);
        let stderr_done = thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => se.lock().unwrap().push_str(&line),
                }
            }
        });
        let mut d = Daemon {
            child,
            events,
            lines,
            stderr,
            stdout_done,
            cut_tail,
            stderr_done: Some(stderr_done),
            _notify_dir: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = sock.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    break;
                }
            }
            let exited = d.child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() > deadline {
                let _ = d.child.kill();
                let stopped = d.stop_now();
                panic!(
                    "execwatch did not send READY=1; stderr:\n{}",
                    stopped.stderr
                );
            }
        }
        d._notify_dir = Some(dir);
        d
    }

    /// Text lines seen so far that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Wait until at least `n` text lines contain `needle`; panics after
    /// `timeout`.
    pub fn wait_for_lines(&self, n: usize, timeout: Duration, needle: &str) -> Vec<String> {
        self.wait_n(n, timeout, &format!("lines with {needle:?}"), || {
            self.lines_with(needle)
        })
    }

    /// Poll `found` until it gives at least `n` items; panics after
    /// `timeout`, saying it waited for `n` of `what`.
    fn wait_n<T>(
        &self,
        n: usize,
        timeout: Duration,
        what: &str,
        found: impl Fn() -> Vec<T>,
    ) -> Vec<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = found();
            if found.len() >= n {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {timeout:?} for {n} {what}, saw {}; stderr:\n{}",
                    found.len(),
                    self.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Events seen so far that satisfy `pred`.
    pub fn matching(&self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|v| pred(v))
            .cloned()
            .collect()
    }

    /// Wait until at least `n` events satisfy `pred`; panics after `timeout`.
    pub fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        self.wait_n(n, timeout, "matching events", || self.matching(&pred))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until stderr contains `needle`; panics after `timeout`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr.lock().unwrap().contains(needle) {
            if Instant::now() > deadline {
                panic!(
                    "waited {timeout:?} for {needle:?} on stderr:\n{}",
                    self.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for exit and collect everything.
    pub fn stop(mut self) -> Stopped {
        self.sigterm();
        self.stopped_cleanly()
    }

    /// [`Daemon::stop`], but the daemon must exit within `timeout`: past
    /// it, it is killed and the test fails.
    pub fn stop_within(mut self, timeout: Duration) -> Stopped {
        self.sigterm();
        if wait_within(&mut self.child, timeout).is_none() {
            let stopped = self.stop_now();
            panic!(
                "execwatch still running {timeout:?} after SIGTERM; stderr:\n{}",
                stopped.stderr
            );
        }
        self.stopped_cleanly()
    }

    fn sigterm(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal execwatch");
    }

    /// Collect everything of a daemon told to stop: its output must end
    /// in a whole line.
    fn stopped_cleanly(&mut self) -> Stopped {
        let stopped = self.stop_now();
        if let Some(t) = self.cut_tail.lock().unwrap().take() {
            panic!(
                "a stopped daemon's output ends in a cut line: {}",
                String::from_utf8_lossy(&t)
            );
        }
        stopped
    }

    /// SIGKILL (a crash), then collect everything.
    pub fn kill(mut self) -> Stopped {
        let _ = self.child.kill();
        self.stop_now()
    }

    fn stop_now(&mut self) -> Stopped {
        let status = self.child.wait().expect("wait execwatch");
        if let Some(h) = self.stdout_done.take() {
            h.join().expect("stdout reader");
        }
        self.stderr_done
            .take()
            .unwrap()
            .join()
            .expect("stderr reader");
        Stopped {
            status,
            events: std::mem::take(&mut *self.events.lock().unwrap()),
            lines: std::mem::take(&mut *self.lines.lock().unwrap()),
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
        }
    }
}

/// `child`'s exit status once it exits within `timeout`; past it, `None`,
/// the child killed and reaped.
pub fn wait_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A child killed and reaped when dropped (an assertion failing first
/// leaves no process behind).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.stderr_done.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Exec events whose argv contains `marker` (exit events carry no argv).
pub fn has_arg(v: &Value, marker: &str) -> bool {
    v["event"]["action"] == "exec"
        && v["process"]["args"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(marker)))
}

/// The SHA-256 of a file in hex, by `sha256sum`: an implementation
/// independent of the daemon's.
pub fn sha256sum(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {path:?} failed");
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Wait until `pid` runs `exe`: a child between fork and exec still runs
/// its parent's image.
pub fn wait_exec(pid: u32, exe: &Path) {
    let end = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .as_deref()
        != Some(exe)
    {
        assert!(Instant::now() < end, "{pid} never exec'd {exe:?}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Start `cmd` in a session (and process group) of its own: no controlling
/// terminal, and a known leader, whatever session runs the tests (a CI
/// runner's may be session 0, which has no leader).
pub fn in_new_session(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        })
    }
}

/// Run a command to completion; it must succeed (its stderr says why not).
pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run a command to completion, ignoring its output.
pub fn run_quiet(cmd: &mut Command) -> ExitStatus {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run command")
}

/// Read all of a reader to a string (for child stderr).
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// podman with this host's settings (deploy/image/containers.conf: PID 1 is
/// not systemd, low limits, no network setup).
pub fn podman() -> Command {
    let mut c = Command::new("podman");
    c.env(
        "CONTAINERS_CONF",
        concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/image/containers.conf"),
    );
    c
}

/// A static busybox root file system at `dir` (`sh`, `true`, `sleep`).
pub fn busybox_rootfs(dir: &std::path::Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("busybox-static is installed by scripts/install-deps");
    for link in ["sh", "true", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(link)).unwrap();
    }
}

/// A local busybox image, `podman import`ed; removed on drop.
pub struct PodmanImage(pub String);

impl PodmanImage {
    pub fn busybox(tag: &str) -> PodmanImage {
        let dir = std::env::temp_dir().join(format!("execwatch-image-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        busybox_rootfs(&dir.join("root"));
        let tar = dir.join("root.tar");
        assert!(Command::new("tar")
            .arg("-C")
            .arg(dir.join("root"))
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap()
            .success());
        let out = podman()
            .args(["import", "--change", r#"CMD ["/bin/sh"]"#])
            .arg(&tar)
            .arg(tag)
            .output()
            .expect("podman is installed by scripts/install-deps");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PodmanImage(tag.into())
    }
}

impl Drop for PodmanImage {
    fn drop(&mut self) {
        let _ = podman().args(["rmi", "-f", &self.0]).output();
    }
}

/// `/bin/true MARKER i` for i = 0, 1, ... one after the other until stopped.
pub struct ExecLoop {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ExecLoop {
    pub fn start(m: &str) -> ExecLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (s, d, m) = (Arc::clone(&stop), Arc::clone(&done), m.to_string());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let i = d.load(Ordering::Relaxed);
                assert!(run_quiet(Command::new("/bin/true").arg(&m).arg(i.to_string())).success());
                d.store(i + 1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
        });
        ExecLoop {
            stop,
            done,
            thread: Some(thread),
        }
    }

    pub fn count(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub fn wait_for_more(&self, n: u64) {
        let target = self.count() + n;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count() < target {
            assert!(Instant::now() < deadline, "the exec loop is stuck");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop; the number of execs run.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.count()
    }
}

/// Kernel ids of the BPF objects a process holds fds to (its fdinfo).
#[derive(Debug, Default)]
pub struct BpfIds {
    pub links: Vec<u32>,
    pub progs: Vec<u32>,
    pub maps: Vec<u32>,
}

pub fn bpf_ids(pid: u32) -> BpfIds {
    let mut ids = BpfIds::default();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(text) = std::fs::read_to_string(entry.unwrap().path()) else {
            continue;
        };
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse::<u32>().ok())
        };
        if let Some(id) = field("link_id:") {
            ids.links.push(id);
        } else if let Some(id) = field("map_id:") {
            // Program arrays are never opened by id here: closing such an
            // fd while the kernel's deferred clearing of the array is
            // pending leaks a reference (seen on 6.18), so they would stay.
            // They go with the programs that use them, checked instead.
            if field("map_type:") != Some(libbpf_rs::MapType::ProgArray.into()) {
                ids.maps.push(id);
            }
        } else if let Some(id) = field("prog_id:") {
            ids.progs.push(id);
        }
    }
    ids.links.sort_unstable();
    ids.links.dedup();
    ids.progs.sort_unstable();
    ids.progs.dedup();
    ids.maps.sort_unstable();
    ids.maps.dedup();
    ids
}

fn link_exists(id: u32) -> bool {
    // SAFETY: a plain syscall wrapper; a non-negative return is a new fd
    // that nothing else owns.
    let fd = unsafe { libbpf_rs::libbpf_sys::bpf_link_get_fd_by_id(id) };
    if fd >= 0 {
        // SAFETY: see above.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    fd >= 0
}

/// Which of `ids` the kernel still has.
pub fn still_there(ids: &BpfIds) -> Vec<String> {
    let mut left = Vec::new();
    left.extend(
        ids.links
            .iter()
            .filter(|&&id| link_exists(id))
            .map(|id| format!("link {id}")),
    );
    left.extend(
        ids.progs
            .iter()
            .filter(|&&id| libbpf_rs::Program::fd_from_id(id).is_ok())
            .map(|id| format!("prog {id}")),
    );
    left.extend(
        ids.maps
            .iter()
            .filter_map(|&id| libbpf_rs::MapHandle::from_map_id(id).ok().map(|m| (id, m)))
            .map(|(id, m)| format!("map {id} {:?}", libbpf_rs::MapCore::name(&m))),
    );
    left
}

/// Wait until the kernel has freed all of `ids` (freeing is deferred).
pub fn assert_all_gone(ids: &BpfIds) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = still_there(ids);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still loaded: {left:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The smallest `--ring-buffer-size` that gives each possible CPU's ring
/// buffer room for one largest record (64 KiB each), in bytes.
pub fn small_ring() -> String {
    let cpus = libbpf_rs::num_possible_cpus().expect("count possible CPUs") as u64;
    ((64u64 << 10) * cpus).next_power_of_two().to_string()
}
