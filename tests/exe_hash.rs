//! The executable hasher on real files and real processes: the hash equals
//! `sha256sum`, and every reason to skip one happens for its cause.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

mod common;

use common::fuse::SilentFuse;
use common::tempdir::TempDir;
use common::{sha256sum, wait_exec};
use execwatch::exe_hash::{
    hash_verified, FileIdentity, HashConfig, HashOutcome, HashRequest, HashResults, Hasher,
    OrderedHold, Requested, SkipReason,
};

fn hasher() -> Hasher {
    Hasher::new(HashConfig::default()).unwrap()
}

/// Request and wait for the answer.
fn hash_now(h: &mut Hasher, req: HashRequest) -> HashOutcome {
    match h.request(req) {
        Requested::Ready(o) => o,
        Requested::Pending(t) => {
            let end = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(o) = h.take(t) {
                    return o;
                }
                assert!(Instant::now() < end, "no answer in 30 s");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn hex(o: HashOutcome) -> String {
    match o {
        HashOutcome::Hash(d) => d.to_string(),
        other => panic!("expected a hash, got {other:?}"),
    }
}

fn write_file(path: &Path, bytes: &[u8]) {
    let mut f = fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// A copy of `sleep` under `dir`, so tests may delete or rewrite it.
fn own_sleep(dir: &Path) -> PathBuf {
    let p = dir.join("sleep-copy");
    fs::copy("/usr/bin/sleep", &p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn spawn(exe: &Path) -> Child {
    Command::new(exe)
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn req_for(pid: u32, path: &Path, identity: FileIdentity) -> HashRequest {
    HashRequest {
        pid,
        path: Some(path.to_path_buf()),
        identity,
    }
}

#[test]
fn hash_of_a_running_binary_equals_sha256sum() {
    let mut child = spawn(Path::new("/usr/bin/sleep"));
    let pid = child.id();
    let identity = FileIdentity::of_path(Path::new(&format!("/proc/{pid}/exe"))).unwrap();
    let mut h = hasher();
    let got = hex(hash_now(
        &mut h,
        req_for(pid, Path::new("/usr/bin/sleep"), identity),
    ));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(got, sha256sum(Path::new("/usr/bin/sleep")));
    // Cached by identity: answered at once, no second job.
    assert_eq!(h.lookup(&identity).unwrap().to_string(), got);
    assert_eq!(
        h.request(req_for(pid, Path::new("/usr/bin/sleep"), identity)),
        Requested::Ready(HashOutcome::Hash(h.lookup(&identity).unwrap()))
    );
    assert_eq!(h.stats().hashed, 1);
}

#[test]
fn empty_and_odd_sized_files_hash_like_sha256sum() {
    let dir = TempDir::new("sizes");
    let mut h = hasher();
    // Sizes around the 256 KiB read chunk.
    for (i, size) in [0usize, 1, 262_143, 262_144, 262_145, 3 << 20]
        .iter()
        .enumerate()
    {
        let p = dir.0.join(format!("f{i}"));
        let bytes: Vec<u8> = (0..*size).map(|n| (n * 7 + i) as u8).collect();
        write_file(&p, &bytes);
        let id = FileIdentity::of_path(&p).unwrap();
        assert_eq!(
            hex(hash_now(&mut h, req_for(0, &p, id))),
            sha256sum(&p),
            "size {size}"
        );
    }
}

#[test]
fn a_binary_rewritten_in_place_gets_its_new_hash() {
    let dir = TempDir::new("rewrite");
    let p = dir.0.join("tool");
    write_file(&p, b"#!/bin/sh\necho one\n");
    let mut h = hasher();
    let id1 = FileIdentity::of_path(&p).unwrap();
    let first = hex(hash_now(&mut h, req_for(0, &p, id1)));
    assert_eq!(first, sha256sum(&p));

    // Same path, same inode, new bytes of the same size.
    // Kept: a later timestamp tick, so mtime/ctime can change.
    std::thread::sleep(Duration::from_millis(20));
    let mut f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all(b"#!/bin/sh\necho two\n").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let id2 = FileIdentity::of_path(&p).unwrap();
    assert_eq!(id2.ino, id1.ino, "rewritten in place");
    assert_ne!(id2, id1, "mtime/ctime must change");
    assert!(h.lookup(&id2).is_none(), "the new version is not cached");
    let second = hex(hash_now(&mut h, req_for(0, &p, id2)));
    assert_eq!(second, sha256sum(&p));
    assert_ne!(second, first);
    // The old version cannot be hashed any more: its bytes are gone.
    assert!(h.lookup(&id1).is_some(), "its old hash stays cached");
    let mut fresh = hasher();
    assert_eq!(
        hash_now(&mut fresh, req_for(0, &p, id1)),
        HashOutcome::Skipped(SkipReason::Changed)
    );
}

#[test]
fn a_file_replaced_before_the_open_is_changed() {
    let dir = TempDir::new("replaced");
    let p = dir.0.join("tool");
    write_file(&p, b"original");
    let id = FileIdentity::of_path(&p).unwrap();
    // Replaced by rename, as package managers do, before the worker opens it.
    let tmp = dir.0.join("tool.new");
    write_file(&tmp, b"original");
    fs::rename(&tmp, &p).unwrap();
    let mut h = hasher();
    assert_eq!(
        hash_now(&mut h, req_for(0, &p, id)),
        HashOutcome::Skipped(SkipReason::Changed)
    );
    assert_eq!(h.stats().changed, 1);
}

#[test]
fn a_live_process_is_hashed_through_proc_when_its_path_means_nothing_here() {
    // A container's exec path is relative to the container's root; opened
    // here it names nothing (or something else). /proc/PID/exe is the file.
    let dir = TempDir::new("live");
    let exe = own_sleep(&dir.0);
    let expected = sha256sum(&exe);
    let mut child = spawn(&exe);
    let pid = child.id();
    wait_exec(pid, &exe);
    let identity = FileIdentity::of_path(&exe).unwrap();
    let mut h = hasher();
    let got = hash_now(
        &mut h,
        req_for(pid, Path::new("/no/such/dir/sleep"), identity),
    );
    // Another file at the path: /proc still wins.
    let mut h2 = hasher();
    let got2 = hash_now(&mut h2, req_for(pid, Path::new("/usr/bin/true"), identity));
    // Deleting the file changes its ctime (link count): no longer provably
    // the same bytes, since mtime alone can be forged.
    fs::remove_file(&exe).unwrap();
    let mut h3 = hasher();
    let got3 = hash_now(&mut h3, req_for(pid, &exe, identity));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(hex(got), expected);
    assert_eq!(hex(got2), expected);
    assert_eq!(got3, HashOutcome::Skipped(SkipReason::Changed));
}

#[test]
fn a_gone_process_with_a_deleted_file_is_gone() {
    let dir = TempDir::new("gone");
    let exe = own_sleep(&dir.0);
    let identity = FileIdentity::of_path(&exe).unwrap();
    let mut child = spawn(&exe);
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    fs::remove_file(&exe).unwrap();
    let mut h = hasher();
    assert_eq!(
        hash_now(&mut h, req_for(pid, &exe, identity)),
        HashOutcome::Skipped(SkipReason::Gone)
    );
    assert_eq!(h.stats().gone, 1);
}

#[test]
fn a_file_larger_than_the_limit_is_too_large() {
    let dir = TempDir::new("large");
    let p = dir.0.join("big");
    write_file(&p, &vec![7u8; (1 << 20) + 1]);
    let id = FileIdentity::of_path(&p).unwrap();
    let mut h = Hasher::new(HashConfig {
        max_size: 1 << 20,
        ..HashConfig::default()
    })
    .unwrap();
    // Known from the identity alone: no job, no wait.
    assert_eq!(
        h.request(req_for(0, &p, id)),
        Requested::Ready(HashOutcome::Skipped(SkipReason::TooLarge))
    );
    assert_eq!(h.in_flight(), 0);
    // Exactly at the limit is hashed.
    fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let id = FileIdentity::of_path(&p).unwrap();
    assert_eq!(hex(hash_now(&mut h, req_for(0, &p, id))), sha256sum(&p));
}

#[test]
fn a_directory_is_unreadable() {
    let dir = TempDir::new("dir");
    let id = FileIdentity::of_path(&dir.0).unwrap();
    let mut h = hasher();
    assert_eq!(
        hash_now(&mut h, req_for(0, &dir.0, id)),
        HashOutcome::Skipped(SkipReason::Unreadable)
    );
    assert_eq!(h.stats().unreadable, 1);
}

#[test]
fn a_file_the_daemon_may_not_read_is_unreadable() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test switches one thread to uid 65534 and must run as root");
    }
    let dir = TempDir::new("perm");
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();
    let p = dir.0.join("secret");
    write_file(&p, b"secret");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o000)).unwrap();
    let id = FileIdentity::of_path(&p).unwrap();
    let req = req_for(0, &p, id);
    // Drop privileges in one thread only: the raw syscalls change the calling
    // thread's credentials (glibc's wrappers would change every thread's).
    let outcome = std::thread::spawn(move || {
        // SAFETY: plain syscalls with integer arguments (and a null list for
        // setgroups with size 0); they only change this thread's credentials.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                0
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
        }
        let mut buf = vec![0u8; 1 << 16];
        hash_verified(&req, u64::MAX, &mut buf, &AtomicBool::new(false)).0
    })
    .join()
    .unwrap();
    assert_eq!(outcome, HashOutcome::Skipped(SkipReason::Unreadable));
    // Root in this thread reads it: the reason was the permission.
    let mut buf = vec![0u8; 1 << 16];
    let (o, _) = hash_verified(
        &req_for(0, &p, id),
        u64::MAX,
        &mut buf,
        &AtomicBool::new(false),
    );
    assert_eq!(hex(o), sha256sum(&p));
}

/// A binary that ran, its identity, and a FIFO put in its place since.
fn fifo_in_place_of_a_binary(name: &str) -> (TempDir, PathBuf, FileIdentity) {
    let dir = TempDir::new(name);
    let p = dir.0.join("tool");
    write_file(&p, b"bytes");
    let id = FileIdentity::of_path(&p).unwrap();
    fs::remove_file(&p).unwrap();
    nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    (dir, p, id)
}

#[test]
fn a_fifo_in_place_of_the_binary_does_not_block() {
    let (_dir, p, id) = fifo_in_place_of_a_binary("fifo");
    let mut h = hasher();
    assert_eq!(
        hash_now(&mut h, req_for(0, &p, id)),
        HashOutcome::Skipped(SkipReason::Changed)
    );
}

/// The daemon runs as root: whatever was put at the path after the exec
/// must not even be opened. A FIFO shows an open: its writer's open returns
/// only once a reader opens it.
#[test]
fn nothing_put_in_place_of_the_binary_is_opened() {
    let (_dir, p, id) = fifo_in_place_of_a_binary("fifo-open");
    let (opened, rx) = std::sync::mpsc::channel();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let writer_path = p.clone();
    std::thread::spawn(move || {
        let _ = tid_tx.send(nix::unistd::gettid());
        let f = fs::OpenOptions::new().write(true).open(&writer_path);
        let _ = opened.send(f.is_ok());
    });
    // The writer is waiting in its open before the hasher runs.
    let tid = tid_rx.recv().unwrap();
    let in_open = format!("{} ", libc::SYS_openat);
    let until = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
        .is_ok_and(|s| s.starts_with(&in_open))
    {
        assert!(Instant::now() < until, "the writer never waited in open");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut h = hasher();
    assert_eq!(
        hash_now(&mut h, req_for(0, &p, id)),
        HashOutcome::Skipped(SkipReason::Changed)
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "the hasher opened the FIFO"
    );
    // A reader of our own lets the writer go: it was waiting for one.
    let _reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
}

/// A file system that stops answering holds the worker on its file, not
/// the hasher: another worker takes the queue, and that device is not
/// tried again.
#[test]
fn a_file_system_that_never_answers_holds_one_worker_not_the_hasher() {
    let mut fuse = SilentFuse::mount();
    let mut h = Hasher::new(HashConfig {
        stuck_after: Duration::from_millis(300),
        ..HashConfig::default()
    })
    .unwrap();
    let silent = FileIdentity {
        dev: fuse.dev,
        ino: 2,
        size: 10,
        mtime_sec: 0,
        mtime_nsec: 0,
        ctime_sec: 0,
        ctime_nsec: 0,
    };
    let Requested::Pending(stuck) = h.request(req_for(0, &fuse.at.join("tool"), silent)) else {
        panic!("a new file is a job");
    };
    // A file queued behind it is hashed once another worker takes over.
    let dir = TempDir::new("after-stall");
    let p = dir.0.join("tool");
    write_file(&p, b"bytes");
    let id = FileIdentity::of_path(&p).unwrap();
    assert_eq!(hex(hash_now(&mut h, req_for(0, &p, id))), sha256sum(&p));
    // Another file of the silent device: not tried.
    let other = FileIdentity { ino: 3, ..silent };
    assert_eq!(
        h.request(req_for(0, &fuse.at.join("other"), other)),
        Requested::Ready(HashOutcome::Skipped(SkipReason::Unreadable))
    );
    // The server goes away: the stuck worker's job ends, unread.
    fuse.abort();
    let until = Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        if let Some(o) = h.take(stuck) {
            break o;
        }
        assert!(Instant::now() < until, "the stuck job never ended");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(outcome, HashOutcome::Skipped(SkipReason::Unreadable));
    // No longer stuck: the device may be tried again (and now fails at once).
    h.poll_ready();
    let third = FileIdentity { ino: 4, ..silent };
    assert!(matches!(
        h.request(req_for(0, &fuse.at.join("third"), third)),
        Requested::Pending(_)
    ));
}

/// The path of a file that ran, not on FUSE, may lead through a user's FUSE
/// mount in the daemon's mount table (the process ran in a namespace of its
/// own, with a file system over that mount, and has exited). The hasher
/// stops at the mount, before its server is asked anything: `changed` at
/// once, and the worker stays free. Over and over, as a user could.
#[test]
fn a_path_into_a_users_fuse_mount_is_not_entered() {
    let dir = TempDir::new("user-fuse");
    let on_dir = dir.0.join("mnt");
    fs::create_dir(&on_dir).unwrap();
    let on_file = dir.0.join("tool");
    write_file(&on_file, b"");
    let _d = SilentFuse::mount_on(&on_dir, 0o40000, 4242);
    let _f = SilentFuse::mount_on(&on_file, 0o100644, 4242);
    let elsewhere = dir.0.join("ran");
    write_file(&elsewhere, b"the file that ran");
    let ran = FileIdentity::of_path(&elsewhere).unwrap();
    let mut h = Hasher::new(HashConfig {
        stuck_after: Duration::from_millis(300),
        ..HashConfig::default()
    })
    .unwrap();
    let t0 = Instant::now();
    for i in 0..40 {
        for path in [on_dir.join(format!("bin/tool{i}")), on_file.clone()] {
            let id = FileIdentity {
                ino: ran.ino + i,
                ..ran
            };
            assert_eq!(
                hash_now(&mut h, req_for(0, &path, id)),
                HashOutcome::Skipped(SkipReason::Changed),
                "{path:?}"
            );
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // No worker is stuck: a file elsewhere is hashed.
    assert_eq!(
        hex(hash_now(&mut h, req_for(0, &elsewhere, ran))),
        sha256sum(&elsewhere)
    );
}

/// A path that now goes through a symlink is not the path that ran, even
/// when the link leads to the same file: it is not followed (openat2, 5.6+;
/// without it only a last component that is a link is refused).
#[test]
fn a_symlink_on_the_path_is_not_followed() {
    let dir = TempDir::new("symlink");
    let real = dir.0.join("real");
    write_file(&real, b"bytes");
    let id = FileIdentity::of_path(&real).unwrap();
    let link = dir.0.join("tool");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let linked_dir = dir.0.join("d");
    std::os::unix::fs::symlink(&dir.0, &linked_dir).unwrap();
    let mut h = hasher();
    for path in [&link, &linked_dir.join("real")] {
        assert_eq!(
            hash_now(&mut h, req_for(0, path, id)),
            HashOutcome::Skipped(SkipReason::Changed),
            "{path:?}"
        );
    }
    // The file itself is hashed (last: a hash is cached by identity).
    assert_eq!(
        hex(hash_now(&mut h, req_for(0, &real, id))),
        sha256sum(&real)
    );
}

#[test]
fn many_events_for_one_new_file_share_one_job_and_keep_their_order() {
    let dir = TempDir::new("hold");
    let big = dir.0.join("big");
    write_file(&big, &vec![1u8; 8 << 20]);
    let small = dir.0.join("small");
    write_file(&small, b"small");
    let big_id = FileIdentity::of_path(&big).unwrap();
    let small_id = FileIdentity::of_path(&small).unwrap();
    let mut h = hasher();
    let mut hold = OrderedHold::new(Duration::from_secs(1), 10_000);
    let t0 = Instant::now();
    for i in 0..300u32 {
        let r = match i % 3 {
            0 => Some(h.request(req_for(0, &big, big_id))),
            1 => Some(h.request(req_for(0, &small, small_id))),
            _ => None,
        };
        hold.push(i, r, Instant::now());
    }
    assert!(h.in_flight() <= 2, "one job per file");
    let mut out = Vec::new();
    while !hold.is_empty() {
        h.poll_ready();
        hold.release(&mut h, Instant::now(), |e, o| out.push((e, o)));
        std::thread::sleep(Duration::from_millis(1));
        assert!(t0.elapsed() < Duration::from_secs(5), "hold stuck");
    }
    assert_eq!(
        out.iter().map(|o| o.0).collect::<Vec<_>>(),
        (0..300).collect::<Vec<_>>()
    );
    let big_hex = sha256sum(&big);
    let small_hex = sha256sum(&small);
    for (i, o) in &out {
        match (i % 3, o) {
            (0, Some(HashOutcome::Hash(d))) => assert_eq!(d.to_string(), big_hex),
            (1, Some(HashOutcome::Hash(d))) => assert_eq!(d.to_string(), small_hex),
            (2, None) => {}
            other => panic!("event {i}: {other:?}"),
        }
    }
    assert_eq!(h.stats().hashed, 2);
    assert_eq!(hold.stats().ready, 300);
}

#[test]
fn a_full_queue_answers_busy_and_the_hold_releases_at_the_deadline() {
    let dir = TempDir::new("busy");
    let mut h = Hasher::new(HashConfig {
        queue_len: 1,
        workers: 1,
        ..HashConfig::default()
    })
    .unwrap();
    let mut reqs = Vec::new();
    for i in 0..8 {
        let p = dir.0.join(format!("f{i}"));
        write_file(&p, &vec![i as u8; 16 << 20]);
        reqs.push(req_for(0, &p, FileIdentity::of_path(&p).unwrap()));
    }
    let mut hold = OrderedHold::new(Duration::from_millis(200), 100);
    let t0 = Instant::now();
    let mut busy_at_request = 0;
    for (i, r) in reqs.iter().enumerate() {
        let a = h.request(r.clone());
        if a == Requested::Ready(HashOutcome::Skipped(SkipReason::Busy)) {
            busy_at_request += 1;
        }
        hold.push(i, Some(a), t0);
    }
    assert!(
        busy_at_request >= 5,
        "queue of 1 + 1 worker: {busy_at_request}"
    );
    let mut out = Vec::new();
    let deadline = t0 + Duration::from_millis(200);
    // Real time up to the deadline, then one release at the deadline itself:
    // everything is out by then, however late this thread runs.
    while !hold.is_empty() && Instant::now() < deadline {
        let now = Instant::now().min(deadline);
        hold.release(&mut h, now, |e, o| out.push((e, o, now)));
        std::thread::sleep(Duration::from_millis(2));
    }
    hold.release(&mut h, deadline, |e, o| out.push((e, o, deadline)));
    assert!(hold.is_empty(), "all released at the deadline");
    assert_eq!(
        out.iter().map(|o| o.0).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    for (_, o, at) in &out {
        assert!(o.is_some());
        assert!(*at <= deadline);
    }
    assert!(h.wait_idle(Duration::from_secs(30)));
    assert_eq!(h.stats().busy, busy_at_request);
}
