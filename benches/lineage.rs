//! Daemon-side cost of lineage and hashing, without the kernel:
//! `cargo bench --bench lineage`. Prints ns per operation, and the time to
//! hash a 64 MiB executable from the page cache and from disk.

use std::hint::black_box;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use execwatch::entity_id::{BootId, EntityIds};
use execwatch::exe_hash::{
    hash_verified, FileIdentity, HashConfig, HashOutcome, HashRequest, Hasher, OrderedHold,
    Requested, DEFAULT_MAX_SIZE,
};
use execwatch::process_table::{ExecRecord, Limits, ProcessTable};

fn bench(name: &str, iters: u32, mut f: impl FnMut(u32)) {
    for i in 0..iters / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..iters {
        f(i);
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(iters);
    println!("{name:<48} {ns:>10.0} ns/op");
}

fn main() {
    let ids = EntityIds::new(BootId([3; 16]));
    bench("entity id", 1_000_000, |i| {
        black_box(ids.from_ticks(black_box(i), 12_345));
    });

    // One process's life in the table, bash-like: fork, exec, exit.
    let mut t = ProcessTable::new(ids, Limits::default());
    let shell = ExecRecord {
        pid: 1000,
        ppid: 1,
        start_boot_ns: 10_000_000,
        parent_start_boot_ns: None,
        session_leader: 1000,
        group_leader: 1000,
        boot_ns: 1,
        executable: b"/usr/bin/bash",
        name: b"bash",
    };
    t.on_exec(&shell, [b"bash".as_slice(), b"-c", b"loop"]);
    let args: [&[u8]; 4] = [b"worker", b"--config", b"/etc/tool/a.conf", b"--id=42"];
    // A few thousand live processes around, as on a busy host.
    for pid in 5000..8000u32 {
        let rec = ExecRecord {
            pid,
            ppid: 1000,
            start_boot_ns: 20_000_000,
            ..shell
        };
        t.on_exec(&rec, args);
    }
    // A worker started by the shell (pid 1000) at `start`.
    let worker = |pid: u32, start: u64| ExecRecord {
        pid,
        ppid: 1000,
        start_boot_ns: start,
        parent_start_boot_ns: Some(10_000_000),
        session_leader: 1000,
        group_leader: pid,
        boot_ns: start,
        executable: b"/usr/lib/tool/bin/worker",
        name: b"worker",
    };
    let mut start = 100_000_000u64;
    bench("table: fork + exec + exit (4 args)", 1_000_000, |i| {
        let pid = 10_000 + (i % 100_000);
        start += 10_000_000;
        t.on_fork(pid, 1000, start, Some(10_000_000));
        let rec = worker(pid, start);
        black_box(t.on_exec(&rec, args));
        black_box(t.on_exit(pid, start));
    });
    bench("table: exec + exit, no fork record", 1_000_000, |i| {
        let pid = 10_000 + (i % 100_000);
        start += 10_000_000;
        let rec = worker(pid, start);
        black_box(t.on_exec(&rec, args));
        black_box(t.on_exit(pid, start));
    });

    // Hash cache hit and the hold queue with nothing pending.
    let dir = std::env::temp_dir().join(format!("execwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let small = dir.join("small");
    std::fs::write(&small, b"#!/bin/sh\n").unwrap();
    let mut h = Hasher::new(HashConfig::default()).unwrap();
    let small_id = FileIdentity::of_path(&small).unwrap();
    let req = HashRequest {
        pid: 0,
        path: Some(small.clone()),
        identity: small_id,
    };
    if let Requested::Pending(_) = h.request(req.clone()) {
        assert!(h.wait_idle(Duration::from_secs(10)));
    }
    // Fill the cache with other entries so the lookup is not alone.
    for ino in 0..8000u64 {
        let _ = h.request(HashRequest {
            identity: FileIdentity { ino, ..small_id },
            ..req.clone()
        });
    }
    h.wait_idle(Duration::from_secs(60));
    assert!(h.lookup(&small_id).is_some());
    bench("hash cache hit (lookup)", 5_000_000, |_| {
        black_box(h.lookup(black_box(&small_id)));
    });
    let mut hold = OrderedHold::new(Duration::from_secs(1), 100_000);
    bench("hold: push + release, hash known", 2_000_000, |i| {
        let now = Instant::now();
        hold.push(
            i,
            Some(Requested::Ready(HashOutcome::Skipped(
                execwatch::exe_hash::SkipReason::TooLarge,
            ))),
            now,
        );
        hold.release(&mut h, now, |e, o| {
            black_box((e, o));
        });
    });

    // A 64 MiB executable: warm (page cache) and cold (pages dropped).
    let big = dir.join("big");
    let mut f = std::fs::File::create(&big).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|n: u32| (n * 31) as u8).collect();
    for _ in 0..(DEFAULT_MAX_SIZE >> 20) {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let big_req = HashRequest {
        pid: 0,
        path: Some(big.clone()),
        identity: FileIdentity::of_path(&big).unwrap(),
    };
    let mut buf = vec![0u8; 256 << 10];
    let stop = AtomicBool::new(false);
    for round in 0..3 {
        let t0 = Instant::now();
        let (o, n) = hash_verified(&big_req, DEFAULT_MAX_SIZE, &mut buf, &stop);
        assert!(matches!(o, HashOutcome::Hash(_)) && n == DEFAULT_MAX_SIZE);
        let el = t0.elapsed();
        println!(
            "hash 64 MiB, page cache (round {round})           {:>10.1} ms  ({:.0} MiB/s)",
            el.as_secs_f64() * 1e3,
            64.0 / el.as_secs_f64()
        );
    }
    evict_from_page_cache(&big);
    let t0 = Instant::now();
    let (o, _) = hash_verified(&big_req, DEFAULT_MAX_SIZE, &mut buf, &stop);
    assert!(matches!(o, HashOutcome::Hash(_)));
    println!(
        "hash 64 MiB, from disk                          {:>10.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    // Through the worker: request to answer.
    let mut h = Hasher::new(HashConfig::default()).unwrap();
    let t0 = Instant::now();
    let Requested::Pending(_) = h.request(big_req.clone()) else {
        panic!("a new file must be pending")
    };
    assert!(h.wait_idle(Duration::from_secs(60)));
    println!(
        "hash 64 MiB via worker, request to cached       {:>10.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Drop this one file's pages (not the whole machine's cache).
fn evict_from_page_cache(path: &Path) {
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: posix_fadvise on an open descriptor with integer arguments.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise failed");
}
