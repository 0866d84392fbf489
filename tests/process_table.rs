//! The process table against real processes and its memory bound.
//!
//! RSS is measured within this test process, so the tests here run one at a
//! time (LOCK) and nothing else allocates meanwhile.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use execwatch::entity_id::{boot_ns_from_ticks, ticks_from_boot_ns, EntityIds};
use execwatch::output::clock::boot_ns_now;
use execwatch::process_table::{read_stat, ExecRecord, Limits, Origin, ProcessTable, SeedOne};

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn ids() -> EntityIds {
    EntityIds::for_this_boot().unwrap()
}

#[test]
fn entity_id_from_proc_ticks_equals_the_one_from_boot_ns() {
    let _g = lock();
    let ids = ids();
    // A child's start_boottime lies between the clock readings around the
    // spawn; when both fall in one tick, that tick is the child's, and the
    // BPF route (ns -> ticks) must give the /proc route's id.
    let mut matched = 0;
    for _ in 0..50 {
        let before = boot_ns_now();
        let mut child = Command::new("/usr/bin/sleep")
            .arg("5")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let after = boot_ns_now();
        let pid = child.id();
        let stat = read_stat(pid).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        let (lo, hi) = (ticks_from_boot_ns(before), ticks_from_boot_ns(after));
        assert!(
            lo <= stat.start_ticks && stat.start_ticks <= hi,
            "/proc start {} outside the spawn window [{lo}, {hi}]: wrong clock or unit",
            stat.start_ticks
        );
        if lo == hi {
            assert_eq!(
                ids.from_boot_ns(pid, before),
                ids.from_ticks(pid, stat.start_ticks)
            );
            assert_eq!(
                ids.from_boot_ns(pid, after),
                ids.from_ticks(pid, stat.start_ticks)
            );
            matched += 1;
        }
    }
    assert!(matched > 10, "only {matched} of 50 spawns fit in one tick");
}

/// Realistic images: a path and a few arguments.
fn realistic(i: u32) -> (String, Vec<String>) {
    let exe = format!("/usr/lib/tool-{}/bin/worker-{}", i % 97, i % 13);
    let args = vec![
        format!("worker-{}", i % 13),
        "--config".into(),
        format!("/etc/tool/{}.conf", i % 31),
        format!("--id={i}"),
    ];
    (exe, args)
}

/// Worst-case images: over every per-entry limit.
fn worst(i: u32) -> (String, Vec<String>) {
    let exe = format!("/{:0>700}", i);
    let args = (0..100).map(|k| format!("{k:0>40}{i}")).collect();
    (exe, args)
}

/// Run `n` processes through the table as bash would: the shell forks, the
/// child execs (a tenth exec twice), exits. `exits` false loses every exit
/// record, so the table fills and must evict.
fn churn(
    t: &mut ProcessTable,
    n: u32,
    exits: bool,
    image: impl Fn(u32) -> (String, Vec<String>),
) -> (u32, u32) {
    let shell = ExecRecord {
        pid: 1000,
        ppid: 1,
        start_boot_ns: boot_ns_from_ticks(1),
        parent_start_boot_ns: None,
        session_leader: 1000,
        group_leader: 1000,
        boot_ns: 1,
        executable: b"/usr/bin/bash",
        name: b"bash",
    };
    t.on_exec(&shell, [b"bash".as_slice(), b"-c", b"loop"]);
    let mut with_parent = 0;
    let mut with_previous = 0;
    for i in 0..n {
        // Pids cycle like the kernel's, skipping the shell's.
        let pid = 2000 + (i % 4_000_000);
        let start = boot_ns_from_ticks(10 + u64::from(i)) + 77;
        t.on_fork(pid, 1000, start, Some(boot_ns_from_ticks(1)));
        let (exe, args) = image(i);
        let rec = ExecRecord {
            pid,
            ppid: 1000,
            start_boot_ns: start,
            parent_start_boot_ns: Some(boot_ns_from_ticks(1)),
            session_leader: 1000,
            group_leader: pid,
            boot_ns: start + 5,
            executable: exe.as_bytes(),
            name: b"worker",
        };
        let ctx = t.on_exec(&rec, args.iter().map(|a| a.as_bytes()));
        with_parent += u32::from(ctx.parent.is_some());
        if i % 10 == 0 {
            let ctx = t.on_exec(&rec, args.iter().map(|a| a.as_bytes()));
            with_previous += u32::from(ctx.previous.is_some());
        }
        if exits {
            let e = t.on_exit(pid, start).expect("entry for an exec'd child");
            assert!(e.reports_exit());
        }
    }
    (with_parent, with_previous)
}

#[test]
fn a_hundred_thousand_processes_stay_under_the_memory_bound() {
    let _g = lock();
    let limits = Limits::default();
    let bound = limits.memory_bound();
    assert_eq!(bound, 128 << 20, "the documented figure");

    // Realistic: exits arrive; the table stays small.
    let before = rss_bytes();
    let mut t = ProcessTable::new(ids(), limits);
    let (with_parent, with_previous) = churn(&mut t, 100_000, true, realistic);
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("with exits: {} entries, RSS +{} KiB", t.len(), grown / 1024);
    assert_eq!(t.len(), 1);
    assert_eq!(with_parent, 100_000);
    assert_eq!(with_previous, 10_000);
    assert!(grown <= 4 << 20, "RSS grew {grown} B for a one-entry table");
    drop(t);

    // Worst case: every image over the limits and every exit lost, so the
    // table fills to max_entries and evicts 34 465 entries.
    let before = rss_bytes();
    let mut t = ProcessTable::new(ids(), limits);
    let (with_parent, with_previous) = churn(&mut t, 100_000, false, worst);
    let full = rss_bytes();
    let grown = full.saturating_sub(before);
    let s = t.stats();
    eprintln!(
        "worst case: {} entries, RSS +{} KiB (bound {} KiB), {:.0} B/entry, {:?}",
        t.len(),
        grown / 1024,
        bound / 1024,
        grown as f64 / t.len() as f64,
        s
    );
    assert_eq!(t.len(), limits.max_entries);
    assert_eq!(s.evicted_forks + s.evicted_execs, 100_000 + 1 - 65_536);
    assert!(
        grown <= bound,
        "RSS grew {grown} B over the bound {bound} B"
    );
    // The shell, used as parent on every exec, is never evicted.
    assert_eq!(with_parent, 100_000);
    assert_eq!(with_previous, 10_000);
    let e = t.get(2000 + 99_999).unwrap();
    let img = e.image.as_deref().unwrap();
    assert_eq!(img.executable().len(), limits.max_executable);
    assert!(img.executable_truncated && img.args_truncated);
}

/// Children that live until their stdin closes.
fn spawn_cats(n: usize) -> Vec<Child> {
    (0..n)
        .map(|i| {
            Command::new("/usr/bin/cat")
                .arg(format!("/dev/stdin-{i}"))
                .arg("-")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect()
}

#[test]
fn real_processes_seeded_from_proc_come_and_go() {
    let _g = lock();
    let ids = ids();
    let limits = Limits::for_this_host();
    let mut t = ProcessTable::new(ids, limits);
    let report = t.seed_from_proc().unwrap();
    assert!(report.seeded > 1);
    let base = t.len();
    let before = rss_bytes();
    let me = std::process::id();
    let my_id = t.get(me).unwrap().entity_id;
    let mut seen = 0;
    for _round in 0..15 {
        let mut kids = spawn_cats(200);
        for k in &kids {
            let pid = k.id();
            // The child may still be the forked test binary until it execs.
            common::wait_exec(pid, std::path::Path::new("/usr/bin/cat"));
            assert_eq!(t.seed_pid(pid), SeedOne::Seeded);
            let e = t.get(pid).unwrap();
            assert_eq!(e.origin, Origin::Seeded);
            assert_eq!(e.ppid, me);
            assert_eq!(e.parent_entity_id, Some(my_id));
            assert_eq!(
                e.entity_id,
                ids.from_ticks(pid, read_stat(pid).unwrap().start_ticks)
            );
            let img = e.image.as_deref().unwrap();
            assert_eq!(img.executable(), b"/usr/bin/cat");
            let args: Vec<&[u8]> = img.args().collect();
            assert_eq!(args[0], b"/usr/bin/cat");
            assert!(args[1].starts_with(b"/dev/stdin-"));
            assert_eq!(img.name(), b"cat");
            seen += 1;
        }
        for mut k in kids.drain(..) {
            let pid = k.id();
            let start = t.get(pid).unwrap().start_boot_ns;
            drop(k.stdin.take());
            k.wait().unwrap();
            let e = t.on_exit(pid, start).unwrap();
            assert!(e.reports_exit());
            // Gone from /proc, so a later seed of the pid finds nothing.
            assert_eq!(t.seed_pid(pid), SeedOne::Vanished);
        }
        assert_eq!(t.len(), base);
    }
    assert_eq!(seen, 3000);
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("3000 real processes: RSS +{} KiB", grown / 1024);
    assert!(grown <= limits.memory_bound());
}

#[test]
fn a_shells_child_seeded_from_proc_has_the_shell_and_its_args_as_parent() {
    let _g = lock();
    // `; true` keeps bash from exec'ing sleep in its own place.
    // In a session of its own, so that its leader is known (bash) whatever
    // session runs the tests.
    let mut bash = common::in_new_session(
        Command::new("/usr/bin/bash")
            .args(["-c", "/usr/bin/sleep 30; true", "lineage-test"])
            .stdin(Stdio::null()),
    )
    .spawn()
    .unwrap();
    let bash_pid = bash.id();
    let end = Instant::now() + Duration::from_secs(10);
    let sleep_pid = loop {
        let kids = std::fs::read_to_string(format!("/proc/{bash_pid}/task/{bash_pid}/children"))
            .unwrap_or_default();
        if let Some(p) = kids.split_whitespace().next() {
            let p: u32 = p.parse().unwrap();
            if std::fs::read_link(format!("/proc/{p}/exe")).ok().as_deref()
                == Some(std::path::Path::new("/usr/bin/sleep"))
            {
                break p;
            }
        }
        assert!(Instant::now() < end, "bash never started sleep");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut t = ProcessTable::new(ids(), Limits::for_this_host());
    t.seed_from_proc().unwrap();
    // The first exec of sleep's child (as if sleep ran something): its
    // parent is sleep; sleep's own parent is bash with its args.
    let sleep = t.get(sleep_pid).unwrap().clone();
    let rec = ExecRecord {
        pid: 4_000_000,
        ppid: sleep_pid,
        start_boot_ns: sleep.start_boot_ns + 10_000_000,
        parent_start_boot_ns: Some(sleep.start_boot_ns),
        session_leader: sleep.session_leader,
        group_leader: sleep.group_leader,
        boot_ns: boot_ns_now(),
        executable: b"/usr/bin/true",
        name: b"true",
    };
    let ctx = t.on_exec(&rec, [b"true".as_slice()]);
    let p = ctx.parent.unwrap();
    assert_eq!(p.pid, sleep_pid);
    assert_eq!(p.entity_id, sleep.entity_id);
    let bash_entry = t.get(bash_pid).unwrap();
    assert_eq!(sleep.ppid, bash_pid);
    assert_eq!(sleep.parent_entity_id, Some(bash_entry.entity_id));
    let img = bash_entry.image.as_deref().unwrap();
    assert_eq!(img.executable(), b"/usr/bin/bash");
    let args: Vec<&[u8]> = img.args().collect();
    assert_eq!(
        args,
        [
            b"/usr/bin/bash".as_slice(),
            b"-c",
            b"/usr/bin/sleep 30; true",
            b"lineage-test"
        ]
    );
    // The session leader (bash) is found with its id.
    assert_eq!(sleep.session_leader, bash_pid);
    let l = ctx
        .session_leader
        .as_ref()
        .expect("the leader is in the table");
    assert_eq!((l.pid, l.entity_id), (bash_pid, bash_entry.entity_id));
    bash.kill().unwrap();
    bash.wait().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sleep_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .ok();
}

/// A process may map a FUSE file over its own arguments, and stop the
/// server. Were `/proc/PID/cmdline` read through that mapping, the table
/// (the event loop, the seeding before READY) would wait for good; the
/// kernel reads it from anonymous memory only (since 4.18), so the process
/// gets no args, at once, and the next one is read whole.
#[test]
fn a_process_whose_args_a_stalled_fuse_server_holds_does_not_hold_the_table() {
    let _g = lock();
    common::require_root();
    assert!(
        std::path::Path::new("/usr/bin/bindfs").exists(),
        "this test needs bindfs (a FUSE file system): run scripts/install-deps --test"
    );
    let dir = common::tempdir::TempDir::new("args-fuse");
    let (src, mnt) = (dir.0.join("src"), dir.0.join("mnt"));
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    std::fs::write(src.join("page"), vec![b'x'; 4096]).unwrap();
    let mut server = Command::new("/usr/bin/bindfs")
        .arg("-f")
        .args([&src, &mnt])
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while !mnt.join("page").exists() {
        assert!(Instant::now() < until, "bindfs did not mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    struct Cleanup(u32, std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGCONT,
            );
            let _ = Command::new("umount").arg("-l").arg(&self.1).status();
        }
    }
    let _cleanup = Cleanup(server.id(), mnt.clone());
    // The victim maps the FUSE file over the page of its arguments, then
    // waits; the server stops before anyone touched that page.
    let script = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
page = int(fields[48 - 3]) & ~4095
fd = os.open(sys.argv[1], os.O_RDONLY)
got = libc.mmap(page, 4096, 1, 0x02 | 0x10, fd, 0)
os.write(1, b"mapped\n" if got == page else b"failed\n")
time.sleep(120)
"#;
    let mut victim = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(mnt.join("page"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(victim.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "mapped\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let (victim_pid, me) = (victim.id(), std::process::id());
    std::thread::spawn(move || {
        let mut t = ProcessTable::new(ids(), Limits::for_this_host());
        let t0 = Instant::now();
        let seeded = t.seed_pid(victim_pid);
        let took = t0.elapsed();
        let args = t
            .get(victim_pid)
            .and_then(|e| e.image.as_deref().map(|i| i.args().count()));
        // The next process is read whole, by a new reader.
        let next = t.seed_pid(me);
        let my_args = t
            .get(me)
            .and_then(|e| e.image.as_deref().map(|i| i.args().count()));
        let _ = tx.send((seeded, took, args, next, my_args));
    });
    let (seeded, took, args, next, my_args) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the table waited on the stalled FUSE server");
    assert_eq!(seeded, SeedOne::Seeded);
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(
        args,
        Some(0),
        "the args that could not be read are left out"
    );
    assert_eq!(next, SeedOne::Seeded);
    assert!(my_args.is_some_and(|n| n > 0), "{my_args:?}");

    // The server answers again before the victim is killed: a killed
    // process still finishes a FUSE request its server has taken.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let _ = victim.kill();
    let _ = victim.wait();
    drop(_cleanup);
    let _ = server.kill();
    let _ = server.wait();
}
