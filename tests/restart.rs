//! Restart and upgrade with --bpf-pin-dir, for real: two daemons one after
//! the other on a private bpffs while a steady exec loop runs. Every exec of
//! the loop is delivered exactly once across the two outputs, the sequence
//! carries on with no gap, and `execwatch detach` leaves nothing attached.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{assert_all_gone, bpf_ids, has_arg, marker, still_there, Daemon, ExecLoop, Stopped};
use serde_json::Value;

/// A bpffs of its own, mounted on a temporary directory for one test.
struct BpfFs {
    dir: PathBuf,
}

impl BpfFs {
    fn mount(name: &str) -> BpfFs {
        common::require_root();
        let dir =
            std::env::temp_dir().join(format!("execwatch-bpffs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        nix::mount::mount(
            Some("bpf"),
            &dir,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount a bpffs");
        BpfFs { dir }
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The loop index of an event of the loop (argv: true MARKER i).
fn loop_index(v: &Value) -> Option<u64> {
    v["process"]["args"]
        .as_array()?
        .get(2)?
        .as_str()?
        .parse()
        .ok()
}

fn seq(v: &Value) -> u64 {
    v["event"]["sequence"]
        .as_u64()
        .expect("every event has a sequence")
}

fn detach(dir: &Path) -> std::process::Output {
    Command::new(common::BIN)
        .args(["detach", "--bpf-pin-dir"])
        .arg(dir)
        .output()
        .unwrap()
}

/// Every loop exec in `outputs` exactly once, indices 0..n.
fn assert_each_exec_once(outputs: &[&Stopped], m: &str, n: u64) {
    let mut seen = vec![0u32; n as usize];
    for out in outputs {
        for v in out.events.iter().filter(|v| has_arg(v, m)) {
            let i = loop_index(v).unwrap_or_else(|| panic!("no loop index: {v}"));
            seen[i as usize] += 1;
        }
    }
    let missing: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] == 0).collect();
    let twice: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "of {n} execs, missing {missing:?}, delivered more than once {twice:?}"
    );
}

/// Sequence numbers of all events: no duplicate, and no gap when nothing
/// was lost.
fn assert_sequence_contiguous(outputs: &[&Stopped]) -> (u64, u64) {
    let mut seqs: Vec<u64> = outputs
        .iter()
        .flat_map(|o| o.events.iter().map(seq))
        .collect();
    let n = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), n, "a sequence number was delivered twice");
    let (first, last) = (seqs[0], *seqs.last().unwrap());
    let gaps: Vec<u64> = seqs
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| w[0] + 1)
        .collect();
    assert!(gaps.is_empty(), "sequence gaps after {gaps:?}");
    (first, last)
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

/// The summary's accounting: seen = events_before + events + lost +
/// decode_errors_before + decode_errors + pending.
fn assert_accounting(s: &Value) {
    let pending = s["pending"].as_i64().unwrap();
    assert!(pending >= 0, "{s}");
    assert_eq!(
        u(s, "seen"),
        u(s, "events_before")
            + u(s, "events")
            + u(s, "lost_total")
            + u(s, "decode_errors_before")
            + u(s, "decode_errors")
            + pending as u64,
        "{s}"
    );
}

#[test]
fn second_daemon_on_the_pin_dir_takes_over_with_no_gap_and_no_duplicate() {
    let fs = BpfFs::mount("takeover");
    let dir = fs.dir.join("execwatch");
    let dir_arg = dir.to_str().unwrap();
    let m = marker("restart");
    let a = Daemon::start(&["--bpf-pin-dir", dir_arg]);
    let execs = ExecLoop::start(&m);
    execs.wait_for_more(30);
    let a = a.stop();
    assert!(a.status.success(), "{}", a.stderr);
    // Nobody reads for a while: the loop's execs wait in the kept buffer.
    execs.wait_for_more(30);
    let b = Daemon::start(&["--bpf-pin-dir", dir_arg]);
    execs.wait_for_more(30);
    let ids = bpf_ids(b.pid());
    let n = execs.stop();
    let last = n - 1;
    b.wait_for(1, Duration::from_secs(20), |v| {
        has_arg(v, &m) && loop_index(v) == Some(last)
    });
    let b = b.stop();
    assert!(b.status.success(), "{}", b.stderr);

    assert_each_exec_once(&[&a, &b], &m, n);
    let in_b = b.events.iter().filter(|v| has_arg(v, &m)).count();
    assert!(
        in_b > 30,
        "the second daemon delivered the gap's execs too ({in_b})"
    );
    let (_, last_seq_a) = assert_sequence_contiguous(&[&a]);
    let (first_seq_b, _) = assert_sequence_contiguous(&[&b]);
    assert_eq!(first_seq_b, last_seq_a + 1, "the sequence carries on");
    assert_sequence_contiguous(&[&a, &b]);

    // It drained the kept buffer first, and said so.
    assert!(
        b.stderr.contains(
            "taking over the ring buffer: draining what the previous execwatch left first"
        ),
        "{}",
        b.stderr
    );
    let drained = b
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "drained the records the previous execwatch left")
        .expect("a drain report");
    assert!(u(&drained, "records") >= 30, "{drained}");

    let (sa, sb) = (a.summary(), b.summary());
    assert_eq!(u(&sa, "lost_total"), 0, "{sa}");
    assert_eq!(u(&sb, "lost_total"), 0, "{sb}");
    assert_eq!(u(&sa, "events_before"), 0, "{sa}");
    assert_eq!(u(&sb, "events_before"), u(&sa, "events"), "{sb}");
    assert_accounting(&sa);
    assert_accounting(&sb);

    // The pins keep everything alive after both daemons exited...
    assert!(!ids.links.is_empty() && !ids.progs.is_empty(), "{ids:?}");
    assert!(still_there(&ids).len() >= ids.links.len(), "{ids:?}");
    // ... until detach.
    let out = detach(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.exists());
    assert_all_gone(&ids);
}

#[test]
fn detach_refuses_while_a_daemon_uses_the_directory() {
    let fs = BpfFs::mount("busy");
    let dir = fs.dir.join("execwatch");
    let d = Daemon::start(&["--bpf-pin-dir", dir.to_str().unwrap()]);
    let out = detach(&dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("an execwatch daemon is running with this directory"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    let ids = bpf_ids(d.pid());
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let out = detach(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_all_gone(&ids);
}

#[test]
fn a_pin_dir_off_bpffs_is_refused_with_one_line() {
    common::require_root();
    let dir = std::env::temp_dir().join(format!("execwatch-not-bpffs-{}", std::process::id()));
    let out = Command::new(common::BIN)
        .args(["--format", "json", "--bpf-pin-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not on a BPF filesystem (bpffs)"), "{err}");
    assert!(err.contains("mount -t bpf bpf /sys/fs/bpf"), "{err}");
}
