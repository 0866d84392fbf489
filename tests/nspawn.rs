//! The shipped unit, unchanged, under a real systemd (PID 1 of a
//! systemd-nspawn container booted from a minimal Debian rootfs): the
//! hardening must not break the daemon. Slow (a boot, and a debootstrap on
//! first use), so it is ignored by a plain `cargo test`; scripts/test runs it
//! with `--ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::marker;
use serde_json::Value;

const ROOTFS: &str = "/var/cache/execwatch/rootfs";
const SUITE: &str = "bookworm";

/// A cached minimal Debian with systemd and execwatch's shared libraries.
fn rootfs() -> PathBuf {
    let root = PathBuf::from(ROOTFS);
    if root.join("usr/lib/systemd/systemd").exists() {
        return root;
    }
    let mirror = std::env::var("EXECWATCH_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    let tmp = root.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    let st = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus,libelf1,zlib1g",
            SUITE,
        ])
        .arg(&tmp)
        .arg(&mirror)
        .stdout(Stdio::null())
        .status()
        .expect("debootstrap is installed by scripts/install-deps");
    assert!(st.success(), "debootstrap {SUITE} from {mirror} failed");
    std::fs::rename(&tmp, &root).unwrap();
    root
}

fn status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
}

/// The container's PID 1: a descendant of nspawn whose pid in its own
/// namespace is 1.
fn container_init(nspawn: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let Ok(pid) = entry.ok()?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let inner_one =
            status_field(pid, "NSpid:").is_some_and(|v| v.split_whitespace().last() == Some("1"));
        if !inner_one || pid == 1 {
            continue;
        }
        let mut p = pid;
        for _ in 0..4 {
            match status_field(p, "PPid:").and_then(|v| v.parse::<u32>().ok()) {
                Some(pp) if pp == nspawn => return Some(pid),
                Some(pp) if pp > 1 => p = pp,
                _ => break,
            }
        }
    }
    None
}

fn inside(init: u32, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .args(["-t", &init.to_string(), "-a"])
        .args(args)
        .output()
        .unwrap()
}

fn inside_str(init: u32, args: &[&str]) -> String {
    String::from_utf8_lossy(&inside(init, args).stdout)
        .trim()
        .to_string()
}

/// nspawn and everything in the cgroup it was started from.
struct Container {
    nspawn: Child,
    cgroup: PathBuf,
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGTERM asks nspawn to shut the container down cleanly.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.nspawn.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && matches!(self.nspawn.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        // Whatever is left (a stuck boot): kill the whole cgroup, remove it.
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        std::thread::sleep(Duration::from_millis(300));
        remove_cgroup_tree(&self.cgroup);
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// One container at a time: they boot from the same rootfs directory.
static CONTAINER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Boot the rootfs with the shipped unit, unchanged and enabled, and the
/// binary bind-mounted in; returns once execwatch.service is active, with
/// the container's PID 1.
fn boot_shipped_unit(name: &str) -> (Container, u32) {
    common::require_root();
    let root = rootfs();
    // The shipped unit, unchanged, enabled; the binary bind-mounted in.
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/execwatch.service");
    std::fs::copy(&unit, root.join("etc/systemd/system/execwatch.service")).unwrap();
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    let _ = std::fs::remove_file(wants.join("execwatch.service"));
    std::os::unix::fs::symlink(
        "/etc/systemd/system/execwatch.service",
        wants.join("execwatch.service"),
    )
    .unwrap();
    std::fs::write(root.join("usr/local/bin/execwatch"), b"").unwrap(); // bind target

    // Started from a cgroup of its own, which nspawn (--keep-unit) hands to
    // the container's systemd.
    let cg = execwatch::cgroups::cgroup2_mount()
        .unwrap()
        .join(format!("execwatch-nspawn-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&cg).unwrap();
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("execwatch-nspawn-{name}.log")))
            .unwrap();
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec systemd-nspawn -q -D {} --register=no --keep-unit -b \
         -M execwatch-test --bind-ro={}:/usr/local/bin/execwatch \
         --capability=CAP_BPF,CAP_PERFMON --system-call-filter='bpf perf_event_open'",
        cg.display(),
        root.display(),
        common::BIN
    );
    let container = Container {
        nspawn: Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
        cgroup: cg.clone(),
    };

    let deadline = Instant::now() + Duration::from_secs(120);
    let init = loop {
        if let Some(pid) = container_init(container.nspawn.id()) {
            if inside_str(pid, &["systemctl", "is-active", "execwatch"]) == "active" {
                break pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "execwatch.service did not become active; see /tmp/execwatch-nspawn-{name}.log"
        );
        std::thread::sleep(Duration::from_millis(300));
    };

    (container, init)
}

#[test]
#[ignore = "boots a container (slow): scripts/test runs it with --ignored"]
fn shipped_unit_runs_under_real_systemd() {
    let _one = CONTAINER.lock().unwrap_or_else(|e| e.into_inner());
    let (container, init) = boot_shipped_unit("unit");
    let cg = container.cgroup.clone();
    // An exec inside the container lands in the container's journal.
    let m = marker("nspawn");
    assert!(inside(init, &["/bin/true", &m]).status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let entry: Value = loop {
        let out = inside_str(
            init,
            &[
                "journalctl",
                "-o",
                "json",
                "--no-pager",
                &format!("EXECWATCH_ARGV_1={m}"),
            ],
        );
        if let Some(line) = out.lines().next() {
            break serde_json::from_str(line).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no journal entry for the marked exec"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(entry["EXECWATCH_EXE"], "/usr/bin/true");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "execwatch");
    assert_eq!(entry["_SYSTEMD_UNIT"], "execwatch.service");

    // A clean stop under systemd: SIGTERM, drain, exit 0.
    assert!(inside(init, &["systemctl", "stop", "execwatch"])
        .status
        .success());
    let result = inside_str(
        init,
        &[
            "systemctl",
            "show",
            "-p",
            "Result",
            "-p",
            "ExecMainStatus",
            "execwatch",
        ],
    );
    assert!(
        result.contains("Result=success") && result.contains("ExecMainStatus=0"),
        "{result}"
    );
    drop(container);
    assert!(!cg.exists(), "the container's cgroup is cleaned up");
}

/// The host pid of a process of the container (pid `inner` in it).
fn host_pid(container: &Container, inner: u32) -> u32 {
    let cg = container
        .cgroup
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            status_field(pid, "NSpid:")
                .is_some_and(|v| v.split_whitespace().last() == Some(&inner.to_string()))
                && std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|c| c.contains(&cg))
        })
        .unwrap_or_else(|| panic!("no host pid for the container's pid {inner}"))
}

/// execwatch's journal entries of this boot matching `filters`, with only
/// the fields the restart test reads.
fn journal(init: u32, filters: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "journalctl",
        "-b",
        "-u",
        "execwatch",
        "-o",
        "json",
        "--no-pager",
        "--output-fields=MESSAGE,EXECWATCH_SEQUENCE,EXECWATCH_ARGV_1,EXECWATCH_ARGV_2,LOST_TOTAL,RECORDS",
    ];
    args.extend_from_slice(filters);
    let out = inside(init, &args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn field_u64(v: &Value, k: &str) -> Option<u64> {
    v[k].as_str()?.parse().ok()
}

#[test]
#[ignore = "boots a container (slow): scripts/test runs it with --ignored"]
fn restart_keeps_programs_attached_and_stop_detaches_them() {
    let _one = CONTAINER.lock().unwrap_or_else(|e| e.into_inner());
    let (container, init) = boot_shipped_unit("restart");
    let show = |p: &str| {
        inside_str(
            init,
            &["systemctl", "show", "-p", p, "--value", "execwatch"],
        )
    };
    let m = marker("nspawn-restart");
    // Every exec on the kernel reaches the container's execwatch: the loop
    // runs here, on the host.
    let execs = common::ExecLoop::start(&m);
    execs.wait_for_more(50);
    const RESTARTS: usize = 2;
    for _ in 0..RESTARTS {
        let out = inside(init, &["systemctl", "restart", "execwatch"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // 5 maps, and an array and a link per hook (3 or 4 hooks).
        let stored: u32 = show("NFileDescriptorStore").parse().unwrap();
        assert!(stored >= 11, "{stored} objects in the fd store");
        execs.wait_for_more(50);
    }
    let daemon = host_pid(&container, show("MainPID").parse().unwrap());
    let ids = common::bpf_ids(daemon);
    let n = execs.stop();
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = (n - 1).to_string();
    while journal(
        init,
        &[
            &format!("EXECWATCH_ARGV_1={m}"),
            &format!("EXECWATCH_ARGV_2={last}"),
        ],
    )
    .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the last exec of the loop never reached the journal"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Every exec of the loop in the journal exactly once.
    let mut count = vec![0u32; n as usize];
    for e in journal(init, &[&format!("EXECWATCH_ARGV_1={m}")]) {
        count[field_u64(&e, "EXECWATCH_ARGV_2").unwrap() as usize] += 1;
    }
    let missing: Vec<usize> = (0..count.len()).filter(|&i| count[i] == 0).collect();
    let twice: Vec<usize> = (0..count.len()).filter(|&i| count[i] > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "of {n} execs, missing {missing:?}, twice {twice:?}"
    );

    // One sequence through the restarts: no duplicate, no gap.
    let all = journal(init, &[]);
    let mut seqs: Vec<u64> = all
        .iter()
        .filter_map(|e| field_u64(e, "EXECWATCH_SEQUENCE"))
        .collect();
    let len = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), len, "a sequence number twice in the journal");
    let gaps: Vec<u64> = seqs
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| w[0])
        .collect();
    assert!(gaps.is_empty(), "sequence gaps after {gaps:?}");
    let message = |e: &Value| e["MESSAGE"].as_str().unwrap_or("").to_string();
    let takeovers = all
        .iter()
        .filter(|e| {
            message(e)
                == "taking over the ring buffer: draining what the previous execwatch left first"
        })
        .count();
    assert_eq!(
        takeovers, RESTARTS,
        "each restart drained the kept buffer first"
    );
    for s in all.iter().filter(|e| message(e) == "summary") {
        assert_eq!(field_u64(s, "LOST_TOTAL"), Some(0), "{s}");
    }

    // A stop releases the store (systemd 252): nothing stays attached.
    assert!(inside(init, &["systemctl", "stop", "execwatch"])
        .status
        .success());
    assert_eq!(show("NFileDescriptorStore"), "0");
    assert!(!ids.links.is_empty() && !ids.progs.is_empty(), "{ids:?}");
    common::assert_all_gone(&ids);
    drop(container);
}
