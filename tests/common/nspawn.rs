//! A minimal Debian booted with systemd as PID 1 under systemd-nspawn, on an
//! overlay of a cached rootfs, so that what a test installs or enables is
//! gone with it and the cache stays as debootstrap made it.
//! Used as `#[path = "common/nspawn.rs"] mod nspawn;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROOTFS: &str = "/var/cache/execwatch/rootfs";
const SUITE: &str = "bookworm";
/// systemd to boot, execwatch's shared libraries, man-db for `man`.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,libelf1,zlib1g,man-db";

/// The cached rootfs, made by debootstrap on first use. A cache from before
/// man-db was included gets it with apt (in a throwaway nspawn, not booted).
pub fn rootfs() -> PathBuf {
    let root = PathBuf::from(ROOTFS);
    if !root.join("usr/lib/systemd/systemd").exists() {
        let mirror = std::env::var("EXECWATCH_DEBIAN_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        let tmp = root.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
        let st = Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
            .arg(&tmp)
            .arg(&mirror)
            .stdout(Stdio::null())
            .status()
            .expect("debootstrap is installed by scripts/install-deps --test");
        assert!(st.success(), "debootstrap {SUITE} from {mirror} failed");
        std::fs::rename(&tmp, &root).unwrap();
    }
    if !root.join("usr/bin/man").exists() {
        let st = Command::new("systemd-nspawn")
            // --keep-unit: no scope to register (PID 1 may not be systemd).
            .args([
                "-q",
                "--register=no",
                "--keep-unit",
                "-M",
                "execwatch-cache",
                "-D",
            ])
            .arg(&root)
            .args([
                "sh",
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -qq --no-install-recommends man-db",
            ])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "installing man-db into {ROOTFS} failed");
    }
    root
}

/// An overlayfs whose lower layer is the cached rootfs.
struct Overlay {
    dir: PathBuf,
    merged: PathBuf,
}

impl Overlay {
    fn new(name: &str, lower: &Path) -> Overlay {
        let dir = std::env::temp_dir().join(format!("execwatch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("mounting an overlay on {}: {e}", merged.display()));
        Overlay { dir, merged }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn status_field(pid: u32, name: &str) -> Option<String> {
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

/// A booted container: nspawn and everything in the cgroup it was started
/// from, on its own overlay (dropped last).
pub struct Container {
    nspawn: Child,
    pub cgroup: PathBuf,
    pub init: u32,
    pub log: PathBuf,
    overlay: Overlay,
}

impl Container {
    /// Boot `name` (also the log's name: /tmp/execwatch-NAME.log) with BPF
    /// allowed. `prepare` edits the root before the boot; `extra` are more
    /// nspawn options.
    pub fn boot(name: &str, prepare: impl FnOnce(&Path), extra: &[String]) -> Container {
        let overlay = Overlay::new(name, &rootfs());
        prepare(&overlay.merged);
        // Started from a cgroup of its own, which nspawn (--keep-unit) hands
        // to the container's systemd.
        let cgroup = execwatch::cgroups::cgroup2_mount()
            .unwrap()
            .join(format!("execwatch-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&cgroup).unwrap();
        let log = std::env::temp_dir().join(format!("execwatch-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec systemd-nspawn -q -D {} --register=no \
             --keep-unit -b -M {name} --capability=CAP_BPF,CAP_PERFMON \
             --system-call-filter='bpf perf_event_open' {}",
            cgroup.display(),
            overlay.merged.display(),
            extra.join(" ")
        );
        let nspawn = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut c = Container {
            nspawn,
            cgroup,
            init: 0,
            log,
            overlay,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(pid) = container_init(c.nspawn.id()) {
                c.init = pid;
                let state = c.run_str(&["systemctl", "is-system-running"]);
                if state == "running" || state == "degraded" {
                    return c;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the container did not finish booting; see {}",
                c.log.display()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Run a command in all of the container's namespaces.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a"])
            .args(args)
            .output()
            .unwrap()
    }

    /// Its stdout, trimmed.
    pub fn run_str(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(args).stdout)
            .trim()
            .to_string()
    }

    /// Run, and fail the test with its output unless it succeeds.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?} in the container: {}\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The first journal entry (JSON) matching `matches`, waiting for it.
    pub fn journal_entry(&self, matches: &[&str]) -> serde_json::Value {
        let mut args = vec!["journalctl", "-o", "json", "--no-pager"];
        args.extend(matches);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.run_str(&args).lines().next() {
                return serde_json::from_str(line).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no journal entry for {matches:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
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
        wait_unpopulated(&self.cgroup, Duration::from_secs(10));
        remove_cgroup_tree(&self.cgroup);
    }
}

/// Wait until no process is left in `cgroup` or below it: killed ones leave
/// as they exit, and only an empty cgroup can be removed. Past `timeout` it
/// returns (a drop does not panic); the removal then fails as it would.
fn wait_unpopulated(cgroup: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline
        && std::fs::read_to_string(cgroup.join("cgroup.events"))
            .is_ok_and(|events| events.lines().any(|l| l == "populated 1"))
    {
        std::thread::sleep(Duration::from_millis(20));
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
