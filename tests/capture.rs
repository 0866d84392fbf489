//! The real BPF program on the real kernel: each test starts the daemon, runs
//! real processes, and checks the JSON events they produced.

mod common;

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::{has_arg, marker, run_quiet, Daemon};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn true_path() -> String {
    std::fs::canonicalize("/bin/true")
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn args_of(v: &Value) -> Vec<String> {
    v["process"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

#[test]
fn hostile_argv_is_captured_exactly_and_escaped() {
    let d = Daemon::start(&[]);
    let m = marker("odd");
    let odd: Vec<OsString> = vec![
        OsString::from(&m),
        "two words".into(),
        "".into(),
        "line\nbreak\r\n".into(),
        "\x1b[2J\x1b[31mred".into(),
        OsString::from_vec(b"bad\xff\xfeutf8".to_vec()),
        "\u{202e}txt.exe".into(),
        "".into(),
    ];
    let mut child = Command::new("/bin/true");
    child.args(&odd);
    let status = run_quiet(&mut child);
    assert!(status.success());
    let ev = d.wait_for(1, WAIT, |v| has_arg(v, &m)).remove(0);
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    assert_eq!(ev["event"]["outcome"], "success");
    assert_eq!(ev["process"]["executable"], true_path());
    assert_eq!(ev["execwatch"]["filename"], "/bin/true");
    assert_eq!(ev["process"]["name"], "true");
    assert_eq!(ev["process"]["args_count"], 9);
    assert_eq!(ev["process"]["parent"]["pid"], std::process::id());
    assert_eq!(ev["execwatch"]["args_truncated"], false);
    let args = args_of(&ev);
    assert_eq!(args.len(), 9, "{args:?}");
    assert_eq!(args[0], "/bin/true");
    assert_eq!(args[1], m);
    assert_eq!(args[2], "two words");
    assert_eq!(args[3], "");
    assert_eq!(args[4], "line\nbreak\r\n");
    assert_eq!(args[5], "\x1b[2J\x1b[31mred");
    assert_eq!(args[6], "bad\u{FFFD}\u{FFFD}utf8");
    assert_eq!(args[7], "\u{202e}txt.exe");
    assert_eq!(args[8], "", "a trailing empty argument survives");
    // Lossless: the exact bytes of every argument, as base64.
    let raw: Vec<&str> = ev["execwatch"]["raw"]["args"]
        .as_array()
        .expect("raw args present when an argument is not UTF-8")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(raw[6], b64(b"bad\xff\xfeutf8"));
    assert_eq!(raw[1], b64(m.as_bytes()));
}

#[test]
fn text_format_cannot_be_forged_by_argv() {
    let m = marker("text");
    // No --format: text is the default on a pipe.
    let d = Daemon::start_cmd_format(Command::new(common::BIN), "text");
    let forged = "x\n2026-01-01T00:00:00.000000000Z exec seq=0 pid=1 comm=\"init\"";
    assert!(
        run_quiet(Command::new("/bin/true").args([m.as_str(), forged, "\x1b]0;title\x07"]))
            .success()
    );
    d.wait_for_lines(1, Duration::from_secs(10), &m);
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let out = &stopped.lines;
    let ours: Vec<&String> = out.iter().filter(|l| l.contains(&m)).collect();
    assert!(!ours.is_empty(), "no text line with the marker:\n{out:#?}");
    for line in &ours {
        assert!(
            line.contains(r#""x\n2026-01-01T00:00:00.000000000Z exec seq=0 pid=1 comm=\"init\"""#),
            "{line}"
        );
        assert!(line.contains(r#""\x1b]0;title\x07""#), "{line}");
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
    }
    // The forged text never starts a line of its own.
    assert!(!out
        .iter()
        .any(|l| l.starts_with("2026-01-01T00:00:00.000000000Z")));
}

#[test]
fn failed_execs_carry_errno_via_syscall_tracepoints() {
    failed_execs_carry_errno(&["--failed-execs", "tracepoints"]);
}

#[test]
fn failed_execs_carry_errno_via_sys_exit() {
    failed_execs_carry_errno(&["--failed-execs", "sys-exit"]);
}

fn failed_execs_carry_errno(args: &[&str]) {
    let d = Daemon::start(args);
    let m = marker("fail");
    // ENOENT
    let missing = format!("/nonexistent/{m}");
    assert!(Command::new(&missing).arg(&m).status().is_err());
    // EACCES: a file without any execute bit, even for root.
    let dir = tempdir(&m);
    let noexec = dir.join("noexec");
    std::fs::write(&noexec, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(Command::new(&noexec).arg(&m).status().is_err());

    let evs = d.wait_for(2, WAIT, |v| has_arg(v, &m));
    d.stop();
    let enoent = evs
        .iter()
        .find(|v| v["execwatch"]["filename"] == missing.as_str())
        .expect("ENOENT event");
    assert_eq!(enoent["event"]["outcome"], "failure");
    assert_eq!(enoent["error"]["code"], "ENOENT");
    assert_eq!(enoent["execwatch"]["syscall"], "execve");
    assert!(enoent["process"].get("executable").is_none());
    let eacces = evs
        .iter()
        .find(|v| v["execwatch"]["filename"] == noexec.to_str().unwrap())
        .expect("EACCES event");
    assert_eq!(eacces["error"]["code"], "EACCES");
    assert_eq!(eacces["process"]["args"][1], m.as_str());
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir(m: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(m);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fork; the child runs `exec` (async-signal-safe syscalls only) and exits
/// 127 if it returns.
fn fork_exec(exec: impl FnOnce()) {
    // SAFETY: the child only calls execveat/fexecve and _exit, which are
    // async-signal-safe; everything they need was allocated before fork.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            exec();
            // SAFETY: _exit is async-signal-safe and ends the child at once.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
}

#[test]
fn fexecve_and_execveat_are_captured_with_the_real_path() {
    let d = Daemon::start(&[]);
    let m1 = marker("fexecve");
    let m2 = marker("execveat");
    let file = std::fs::File::open("/bin/true").unwrap();
    let dir = std::fs::File::open(std::path::Path::new(&true_path()).parent().unwrap()).unwrap();
    use std::os::fd::AsFd;
    let argv1 = [
        CString::new("true").unwrap(),
        CString::new(m1.as_str()).unwrap(),
    ];
    let argv2 = [
        CString::new("true").unwrap(),
        CString::new(m2.as_str()).unwrap(),
    ];
    let env: [CString; 0] = [];
    let name = CString::new("true").unwrap();
    fork_exec(|| {
        let _ = nix::unistd::fexecve(file.as_fd(), &argv1, &env);
    });
    fork_exec(|| {
        let _ = nix::unistd::execveat(
            dir.as_fd(),
            &name,
            &argv2,
            &env,
            nix::fcntl::AtFlags::empty(),
        );
    });
    let e1 = d.wait_for(1, WAIT, |v| has_arg(v, &m1)).remove(0);
    let e2 = d.wait_for(1, WAIT, |v| has_arg(v, &m2)).remove(0);
    d.stop();
    for e in [&e1, &e2] {
        assert_eq!(e["event"]["outcome"], "success");
        assert_eq!(e["process"]["executable"], true_path(), "{e}");
    }
    let f1 = e1["execwatch"]["filename"].as_str().unwrap();
    assert!(f1.starts_with("/dev/fd/"), "fexecve filename: {f1}");
    let f2 = e2["execwatch"]["filename"].as_str().unwrap();
    assert!(
        f2.starts_with("/dev/fd/") && f2.ends_with("/true"),
        "execveat filename: {f2}"
    );
}

#[test]
fn failed_execveat_is_attributed_to_execveat() {
    for hook in ["tracepoints", "sys-exit"] {
        failed_execveat(hook);
    }
}

fn failed_execveat(hook: &str) {
    let d = Daemon::start(&["--failed-execs", hook]);
    let m = marker("execveat-fail");
    let dir = std::fs::File::open("/").unwrap();
    use std::os::fd::AsFd;
    let argv = [
        CString::new("x").unwrap(),
        CString::new(m.as_str()).unwrap(),
    ];
    let env: [CString; 0] = [];
    let name = CString::new(format!("nonexistent-{m}")).unwrap();
    // Not forked: a failed exec returns.
    let err = nix::unistd::execveat(
        dir.as_fd(),
        &name,
        &argv,
        &env,
        nix::fcntl::AtFlags::empty(),
    )
    .unwrap_err();
    assert_eq!(err, nix::errno::Errno::ENOENT);
    let e = d.wait_for(1, WAIT, |v| has_arg(v, &m)).remove(0);
    d.stop();
    assert_eq!(e["execwatch"]["syscall"], "execveat");
    assert_eq!(e["error"]["code"], "ENOENT");
    assert_eq!(e["execwatch"]["filename"], name.to_str().unwrap());
    assert_eq!(e["process"]["thread"]["id"], nix::unistd::gettid().as_raw());
    assert_eq!(e["process"]["pid"], std::process::id());
}

#[test]
fn exec_from_a_thread_reports_the_process_pid_and_old_tid() {
    let d = Daemon::start(&[]);
    let m = marker("thread");
    // python3 runs exec in a second thread; the exec'd program reports nothing
    // itself, the event must carry the process id and the calling thread id.
    let script = format!(
        "import os,threading,sys\n\
         print(os.getpid(), flush=True)\n\
         def go():\n    print(threading.get_native_id(), flush=True); os.execv('/bin/true', ['true', '{m}'])\n\
         t=threading.Thread(target=go); t.start(); t.join()\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3 is installed by scripts/test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let (pid, tid) = (ids[0], ids[1]);
    assert_ne!(pid, tid);
    let e = d.wait_for(1, WAIT, |v| has_arg(v, &m)).remove(0);
    d.stop();
    assert_eq!(e["process"]["pid"], pid);
    assert_eq!(e["process"]["thread"]["id"], tid);
    assert_eq!(e["process"]["executable"], true_path());
    assert_eq!(e["execwatch"]["caller"]["name"], "python3");
}

#[test]
fn argv_over_the_limit_is_truncated_not_lost() {
    let d = Daemon::start(&["--max-args-bytes", "4KiB"]);
    let m = marker("long");
    let big = "y".repeat(100);
    let mut cmd = Command::new("/bin/true");
    cmd.arg(&m);
    for _ in 0..100 {
        cmd.arg(&big);
    }
    assert!(run_quiet(&mut cmd).success());
    let e = d.wait_for(1, WAIT, |v| has_arg(v, &m)).remove(0);
    d.stop();
    assert_eq!(e["execwatch"]["args_truncated"], true);
    assert_eq!(e["process"]["args_count"], 102);
    assert_eq!(e["execwatch"]["args_bytes"], 10 + m.len() + 1 + 101 * 100);
    let args = args_of(&e);
    assert!(args.len() < 102 && args.len() > 30, "{}", args.len());
    let captured: usize = args.iter().map(|a| a.len() + 1).sum();
    assert!(captured <= 4096 + 1, "{captured}");
    assert!(args[2..args.len() - 1].iter().all(|a| *a == big));
}

#[test]
fn large_argv_is_captured_whole_up_to_128kib() {
    let d = Daemon::start(&["--max-args-bytes", "128KiB"]);
    let m = marker("huge");
    let big = "z".repeat(2000);
    let mut cmd = Command::new("/bin/true");
    cmd.arg(&m);
    for _ in 0..60 {
        cmd.arg(&big);
    }
    assert!(run_quiet(&mut cmd).success());
    // The same argv through a failed exec: read pointer by pointer.
    let mut failed = Command::new(format!("/nonexistent/{m}"));
    failed.arg(&m);
    for _ in 0..60 {
        failed.arg(&big);
    }
    assert!(failed.status().is_err());
    let evs = d.wait_for(2, WAIT, |v| has_arg(v, &m));
    d.stop();
    for e in &evs {
        assert_eq!(e["execwatch"]["args_truncated"], false, "{}", e["event"]);
        let args = args_of(e);
        assert_eq!(args.len(), 62);
        assert!(args[2..].iter().all(|a| *a == big));
    }
}

#[test]
fn a_burst_of_execs_is_delivered_whole_with_distinct_sequence_numbers() {
    let d = Daemon::start(&[]);
    let m = marker("burst");
    const PER_THREAD: usize = 1500;
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let evs = d.wait_for(2 * PER_THREAD, Duration::from_secs(60), |v| has_arg(v, &m));
    let stopped = d.stop();
    assert_eq!(evs.len(), 2 * PER_THREAD);
    let mut seqs: Vec<u64> = stopped
        .events
        .iter()
        .map(|v| v["event"]["sequence"].as_u64().unwrap())
        .collect();
    let n = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "sequence numbers are unique");
    let s = stopped.summary();
    assert_eq!(s["lost_total"], 0, "{s}");
    assert_eq!(s["events"].as_u64().unwrap(), n as u64);
    assert_eq!(
        s["seen"], s["events"],
        "every exec the kernel saw was delivered"
    );
    // Delivered events are a gap-free run of sequence numbers.
    assert_eq!(seqs.last().unwrap() - seqs.first().unwrap() + 1, n as u64);
}

/// Each CPU has its own ring buffer: a process that execs on one CPU and
/// exits on another leaves its two records in two of them, the exit in the
/// ring read first. The daemon still delivers the exec first (it reads in
/// sequence order), and the exit knows what the process ran.
#[test]
fn an_exit_on_another_cpu_than_the_exec_comes_after_it() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(
        cpus >= 2,
        "this test needs 2 CPUs to move a process between them, this machine has {cpus}"
    );
    let d = Daemon::start(&[]);
    let m = marker("cpumove");
    const N: usize = 100;
    for _ in 0..N {
        // Exec'd on CPU 1; moved to CPU 0 (by its child taskset) before it exits.
        let ok = run_quiet(
            Command::new("taskset")
                .args([
                    "-c",
                    "1",
                    "/bin/sh",
                    "-c",
                    "taskset -pc 0 $$ >/dev/null; exit 0",
                ])
                .arg(&m),
        );
        assert!(ok.success());
    }
    d.wait_for(N, WAIT, |v| {
        has_arg(v, &m) && v["event"]["action"] == "exec"
    });
    let stopped = d.stop();
    let evs = &stopped.events;
    let mut checked = 0;
    for (i, exec) in evs.iter().enumerate() {
        // taskset execs first, then sh in the same process: sh's exec.
        if !(has_arg(exec, &m) && exec["event"]["action"] == "exec")
            || exec["process"]["args"][0] != "/bin/sh"
        {
            continue;
        }
        let id = &exec["process"]["entity_id"];
        let exit = evs
            .iter()
            .position(|v| v["event"]["action"] == "exit" && v["process"]["entity_id"] == *id)
            .unwrap_or_else(|| panic!("no exit for {exec}"));
        assert!(exit > i, "the exit came before the exec: {}", evs[exit]);
        assert_eq!(
            evs[exit]["process"]["executable"],
            exec["process"]["executable"]
        );
        checked += 1;
    }
    assert_eq!(checked, N);
    let s = stopped.summary();
    assert_eq!(s["lost_total"], 0, "{s}");
}

#[test]
fn sigterm_drains_what_is_already_in_the_ring_buffer() {
    // A 10 s poll interval and a wakeup threshold far away: the records sit
    // in the ring buffer until SIGTERM makes the daemon drain them.
    let d = Daemon::start(&["--poll-interval", "10000"]);
    // Kept: lets the loop's first turn after READY pass (not observable).
    std::thread::sleep(Duration::from_millis(200));
    let m = marker("drain");
    for _ in 0..50 {
        assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
    }
    let before = d.matching(|v| has_arg(v, &m)).len();
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let after = stopped.events.iter().filter(|v| has_arg(v, &m)).count();
    assert_eq!(
        after, 50,
        "all execs delivered after SIGTERM (before SIGTERM: {before})"
    );
    assert!(
        before < 50,
        "records were waiting for the drain, not delivered early"
    );
}

#[test]
fn a_lone_exec_on_an_idle_host_is_delivered_within_the_poll_interval() {
    let d = Daemon::start(&["--poll-interval", "100"]);
    let m = marker("idle");
    assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
    // Not a timing assertion: the bound is 100 ms; anything under the
    // generous wait proves the record did not wait for a wakeup that never came.
    d.wait_for(1, Duration::from_secs(5), |v| has_arg(v, &m));
    d.stop();
}

#[test]
fn identity_fields_match_the_process() {
    let d = Daemon::start(&[]);
    let m = marker("ids");
    let mut cmd = Command::new("/bin/true");
    cmd.arg(&m).uid(65534).gid(65534);
    assert!(run_quiet(&mut cmd).success());
    let e = d.wait_for(1, WAIT, |v| has_arg(v, &m)).remove(0);
    d.stop();
    assert_eq!(e["user"]["id"], "65534");
    assert_eq!(e["user"]["effective"]["id"], "65534");
    assert_eq!(e["group"]["id"], "65534");
    let own_cgroup = std::fs::metadata(cgroup_dir()).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino()
    });
    assert_eq!(
        e["execwatch"]["cgroup"]["id"].as_u64(),
        own_cgroup.ok(),
        "cgroup v2 id is the inode of the cgroup directory"
    );
    let pidns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_eq!(
        pidns.to_string_lossy(),
        format!("pid:[{}]", e["execwatch"]["pid_ns"]["inode"])
    );
    let mntns = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_eq!(
        mntns.to_string_lossy(),
        format!("mnt:[{}]", e["execwatch"]["mnt_ns"]["inode"])
    );
    assert_eq!(e["execwatch"]["pid_ns"]["pid"], e["process"]["pid"]);
    let ts = e["@timestamp"].as_str().unwrap();
    assert!(ts.ends_with('Z') && ts.len() == 30, "{ts}");
}

/// This process's cgroup v2 directory (pure v2, or hybrid under unified/).
fn cgroup_dir() -> std::path::PathBuf {
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 entry");
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let p = std::path::Path::new(root);
        if p.join("cgroup.procs").exists() && is_cgroup2(p) {
            return p.join(path.trim_start_matches('/'));
        }
    }
    panic!("no cgroup v2 mount");
}

fn is_cgroup2(p: &std::path::Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

#[test]
fn failed_execs_off_skips_failures_but_keeps_successes() {
    let d = Daemon::start(&["--failed-execs", "off"]);
    let m = marker("nofail");
    assert!(Command::new(format!("/nonexistent/{m}"))
        .arg(&m)
        .status()
        .is_err());
    assert!(run_quiet(Command::new("/bin/true").arg(&m)).success());
    d.wait_for(1, WAIT, |v| has_arg(v, &m));
    let stopped = d.stop();
    let ours: Vec<&Value> = stopped.events.iter().filter(|v| has_arg(v, &m)).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["event"]["outcome"], "success");
}
