//! Restart and upgrade with --bpf-pin-dir, for real: two daemons one after
//! the other on a private bpffs while a steady exec loop runs. Every exec of
//! the loop is delivered exactly once across the two outputs, the sequence
//! carries on with no gap, and `execwatch detach` leaves nothing attached.

mod common;
mod spawned;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_all_gone, bpf_ids, has_arg, marker, run_quiet, still_there, BpfIds, Daemon, ExecLoop,
    Stopped,
};
use serde_json::Value;
use spawned::{complete_lines, Spawned};

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

/// A pin directory (not yet made) in a bpffs of its own.
struct PinDir {
    dir: PathBuf,
    _fs: BpfFs,
}

impl PinDir {
    fn new(name: &str) -> PinDir {
        let fs = BpfFs::mount(name);
        PinDir {
            dir: fs.dir.join("execwatch"),
            _fs: fs,
        }
    }

    /// `execwatch detach`, which must succeed, and the kernel then frees
    /// `ids`: the pins held them.
    fn detach_frees(&self, ids: &BpfIds) {
        let out = detach(&self.dir);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!self.dir.exists());
        assert_all_gone(ids);
    }

    /// The daemon's arguments to use it, and `more`.
    fn args<'a>(&'a self, more: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["--bpf-pin-dir", self.dir.to_str().unwrap()];
        args.extend(more);
        args
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
    let seen = times_delivered(outputs, m, n);
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

/// The summary's accounting: seen + seen_upgrade = events_before + events +
/// lost + decode_errors_before + decode_errors + pending (`seen_upgrade`:
/// records of another layout's buffer, delivered translated or lost).
fn assert_accounting(s: &Value) {
    assert_eq!(
        u(s, "seen") + u(s, "seen_upgrade"),
        u(s, "events_before")
            + u(s, "events")
            + u(s, "lost_total")
            + u(s, "decode_errors_before")
            + u(s, "decode_errors")
            + u(s, "pending"),
        "{s}"
    );
    assert!(u(s, "seen_upgrade") >= u(s, "lost_upgrade"), "{s}");
}

/// How many times each loop exec (indices 0..n) is in `outputs`.
fn times_delivered(outputs: &[&Stopped], m: &str, n: u64) -> Vec<u32> {
    let mut seen = vec![0u32; n as usize];
    for out in outputs {
        for v in out.events.iter().filter(|v| has_arg(v, m)) {
            let i = loop_index(v).unwrap_or_else(|| panic!("no loop index: {v}"));
            seen[i as usize] += 1;
        }
    }
    seen
}

/// What [`through_daemons`] leaves: each daemon's output in turn, the BPF
/// ids the last one held, and how many execs the loop ran.
struct HandedOver<const N: usize> {
    outputs: [Stopped; N],
    ids: BpfIds,
    n: u64,
}

/// The exec loop (marker `m`) runs through the daemons `starts` make, one
/// after the other: 30 execs while each runs, and 30 before the next one
/// starts, which none reads. `end` ends each but the last; the last is
/// stopped once it delivered the loop's last exec.
fn through_daemons<const N: usize>(
    m: &str,
    starts: [&dyn Fn() -> Daemon; N],
    end: fn(Daemon) -> Stopped,
) -> HandedOver<N> {
    let mut d = starts[0]();
    let execs = ExecLoop::start(m);
    let mut outputs = Vec::new();
    for start in &starts[1..] {
        execs.wait_for_more(30);
        outputs.push(end(d));
        // Nobody reads for a while: the loop's execs wait in the kept buffer.
        execs.wait_for_more(30);
        d = start();
    }
    execs.wait_for_more(30);
    let ids = bpf_ids(d.pid());
    let n = execs.stop();
    d.wait_for(1, Duration::from_secs(20), |v| {
        has_arg(v, m) && loop_index(v) == Some(n - 1)
    });
    outputs.push(d.stop());
    HandedOver {
        outputs: outputs.try_into().unwrap_or_else(|_| unreachable!()),
        ids,
        n,
    }
}

#[test]
fn second_daemon_on_the_pin_dir_takes_over_with_no_gap_and_no_duplicate() {
    let pins = PinDir::new("takeover");
    let m = marker("restart");
    let start = || Daemon::start(&pins.args(&[]));
    let HandedOver {
        outputs: [a, b],
        ids,
        n,
    } = through_daemons(&m, [&start, &start], Daemon::stop);
    assert!(a.status.success(), "{}", a.stderr);
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
    let drained = b.diagnostic("drain report", |v| {
        v["message"] == "drained the records the previous execwatch left"
    });
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
    pins.detach_frees(&ids);
}

#[test]
fn what_a_daemon_leaves_at_stop_is_pending_and_the_next_one_delivers_it() {
    let pins = PinDir::new("pending");
    let m = marker("pending");
    // Records wait in the buffer (long poll), and the stop writes none of
    // them (no drain time): they stay for the next daemon.
    let a = Daemon::start(&pins.args(&["--poll-interval", "10000", "--drain-timeout", "0"]));
    for i in 0..20 {
        assert!(Command::new("/bin/true")
            .arg(&m)
            .arg(i.to_string())
            .status()
            .unwrap()
            .success());
    }
    let a = a.stop();
    assert!(a.status.success(), "{}", a.stderr);
    let sa = a.summary();
    let in_a = a.events.iter().filter(|v| has_arg(v, &m)).count();
    assert!(in_a < 20, "the first daemon wrote every exec: {sa}");
    assert!(u(&sa, "pending") >= (20 - in_a) as u64, "{sa}");
    assert_eq!(u(&sa, "lost_total"), 0, "not lost: {sa}");
    assert_accounting(&sa);

    let b = Daemon::start(&pins.args(&[]));
    let ids = bpf_ids(b.pid());
    b.wait_for(20 - in_a, Duration::from_secs(20), |v| has_arg(v, &m));
    let b = b.stop();
    assert!(b.status.success(), "{}", b.stderr);
    assert_each_exec_once(&[&a, &b], &m, 20);
    let sb = b.summary();
    assert_eq!(u(&sb, "events_before"), u(&sa, "events"), "{sb}");
    assert_accounting(&sb);
    pins.detach_frees(&ids);
}

#[test]
fn a_takeover_after_a_crash_delivers_the_rest_once_and_says_the_count_may_be_off() {
    let pins = PinDir::new("crash");
    let m = marker("crash");
    let start = || Daemon::start(&pins.args(&[]));
    // The first is killed: no drain, no final count, the programs stay
    // pinned.
    let HandedOver {
        outputs: [a, b],
        ids,
        n,
    } = through_daemons(&m, [&start, &start], Daemon::kill);
    assert!(b.status.success(), "{}", b.stderr);
    assert!(
        b.stderr
            .contains("the previous execwatch did not exit cleanly"),
        "{}",
        b.stderr
    );
    // Nothing twice; b has every exec from where a stopped reading (what a
    // read and had not written when it died is the only possible loss).
    let per_index = times_delivered(&[&a, &b], &m, n);
    assert!(per_index.iter().all(|&k| k <= 1), "an exec delivered twice");
    let first_in_b = b
        .events
        .iter()
        .filter(|v| has_arg(v, &m))
        .filter_map(loop_index)
        .min()
        .expect("b delivered loop execs");
    let missing_after: Vec<usize> = (first_in_b as usize..n as usize)
        .filter(|&i| per_index[i] == 0)
        .collect();
    assert!(missing_after.is_empty(), "missing {missing_after:?}");
    assert!(n - first_in_b > 30, "b delivered what came while none ran");
    assert_sequence_contiguous(&[&b]);
    pins.detach_frees(&ids);
}

/// A daemon killed while its output is stalled dies holding what it took
/// from the ring buffer (its queue, its buffer). The next one counts those
/// as lost, reason crash, from the progress the dead one kept in the map:
/// exactly the sequence numbers neither delivered, give or take the events
/// of the one write the kill cut short (delivered, not yet counted).
#[test]
fn what_a_killed_daemon_held_is_counted_as_lost_by_the_next_one() {
    let pins = PinDir::new("held");
    let m = marker("held");
    let (rd, wr) = nix::unistd::pipe().unwrap();
    // Nobody reads a's output until it is dead: its writer blocks once the
    // pipe is full, and its queue fills behind it. A pipe of one page, so
    // that what a holds does not depend on how many events fit in 64 KiB.
    nix::fcntl::fcntl(&wr, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    let a = Daemon::start_with_stdout("json", &pins.args(&[]), Stdio::from(wr), &[]);
    let execs = ExecLoop::start(&m);
    execs.wait_for_more(150);
    assert!(!a.kill().status.success(), "killed");
    let mut a_out = Vec::new();
    std::fs::File::from(rd).read_to_end(&mut a_out).unwrap();
    let b = Daemon::start(&pins.args(&[]));
    execs.wait_for_more(30);
    let n = execs.stop();
    b.wait_for(1, Duration::from_secs(20), |v| {
        has_arg(v, &m) && loop_index(v) == Some(n - 1)
    });
    let b = b.stop();
    assert!(b.status.success(), "{}", b.stderr);
    let sb = b.summary();
    assert_accounting(&sb);
    assert_eq!(u(&sb, "lost_ringbuf_full"), 0, "{sb}");

    let complete = &a_out[..a_out.iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1)];
    let a_seqs: Vec<u64> = complete
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| seq(&serde_json::from_slice(l).unwrap()))
        .collect();
    let first_a = *a_seqs
        .iter()
        .min()
        .expect("a delivered before its output stalled");
    let first_b = b.events.iter().map(seq).min().expect("b delivered");
    // What a had taken and never delivered lies between the two.
    let delivered_between = a_seqs.iter().filter(|&&s| s < first_b).count() as u64;
    let missing = first_b - first_a - delivered_between;
    assert!(missing > 100, "a held records when it died ({missing})");
    let lost = u(&sb, "lost_crash");
    // The write the kill cut short: at most one piece (64 KiB) of a's output.
    let tail = &complete[complete.len().saturating_sub(64 << 10)..];
    let in_last_piece = tail.iter().filter(|&&c| c == b'\n').count() as u64;
    assert!(
        missing <= lost && lost <= missing + in_last_piece,
        "lost (crash) {lost}, missing {missing}, events in a's last piece {in_last_piece}: {sb}"
    );
    assert!(
        b.stderr.contains("counted as lost (reason crash)"),
        "{}",
        b.stderr
    );
}

#[test]
fn detach_refuses_while_a_daemon_uses_the_directory() {
    let pins = PinDir::new("busy");
    let d = Daemon::start(&pins.args(&[]));
    let out = detach(&pins.dir);
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
    pins.detach_frees(&ids);
}

#[test]
fn the_root_of_a_bpffs_is_refused_as_a_pin_dir() {
    let fs = BpfFs::mount("root");
    for args in [&["--format", "json"][..], &["detach"][..]] {
        // timeout: a daemon that wrongly starts must not hang the test.
        let out = Command::new("timeout")
            .args(["20", common::BIN])
            .args(args)
            .arg("--bpf-pin-dir")
            .arg(&fs.dir)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("the root of a bpffs mount"), "{err}");
    }
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

/// The earlier-build tests share a target directory (their dependencies
/// are built once): one build and copy at a time.
static BUILDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Build execwatch from the sources in `src`, with `env`, in the shared
/// target directory, and copy the binary to target/`name`.
fn build_execwatch(src: &Path, env: &[(&str, &str)], name: &str) -> PathBuf {
    let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = manifest.join("target/layout-test");
    let status = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args(["build", "--locked", "--bin", "execwatch", "--target-dir"])
        .arg(&target)
        .envs(env.iter().copied())
        .current_dir(src)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building {name} failed");
    let bin = manifest.join("target").join(name);
    std::fs::copy(target.join("debug/execwatch"), &bin).unwrap();
    bin
}

/// A second build of execwatch with another record layout (build.rs reads
/// EXECWATCH_TEST_LAYOUT).
fn other_layout_build() -> PathBuf {
    build_execwatch(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &[("EXECWATCH_TEST_LAYOUT", "1")],
        "execwatch-other-layout",
    )
}

/// The report of a daemon that translated a previous ring buffer of another
/// layout: (records, first seq, last seq).
fn upgrade_translated(stopped: &Stopped) -> (u64, u64, u64) {
    let report = stopped.diagnostic("translated drain report", |v| {
        v["message"]
            == "drained the previous execwatch's ring buffer: records of another layout translated and delivered"
    });
    (
        u(&report, "records"),
        u(&report, "first_seq"),
        u(&report, "last_seq"),
    )
}

#[test]
#[ignore = "builds execwatch a second time (slow): scripts/test runs it with --ignored"]
fn upgrade_and_downgrade_between_layouts_translate_the_old_buffer_and_deliver_every_exec_once() {
    let other = other_layout_build();
    let pins = PinDir::new("upgrade");
    let m = marker("upgrade");

    // Default layout, then the other one, then back, with a loop running
    // through both hand-overs and a gap before each, which only the old
    // buffer holds.
    let start = || Daemon::start(&pins.args(&[]));
    let start_other = || Daemon::start_bin(&other, &pins.args(&[]));
    let HandedOver {
        outputs: [a, b, c],
        ids,
        n,
    } = through_daemons(&m, [&start, &start_other, &start], Daemon::stop);
    for s in [&a, &b, &c] {
        assert!(s.status.success(), "{}", s.stderr);
        let summary = s.summary();
        assert_eq!(u(&summary, "lost_total"), 0, "{summary}");
        assert_eq!(u(&summary, "lost_upgrade"), 0, "{summary}");
        // A wrong translation would misplace the lengths: decode errors.
        assert_eq!(u(&summary, "decode_errors"), 0, "{summary}");
        assert_accounting(&summary);
    }
    assert_eq!(u(&a.summary(), "seen_upgrade"), 0);
    for (s, from) in [(&b, 1), (&c, 1001)] {
        // It said so, with the layout it read ...
        let said = format!(
            "reading the previous execwatch's ring buffer first (layout {from}, translated"
        );
        assert!(s.stderr.contains(&said), "{}", s.stderr);
        assert!(
            !s.stderr.contains("counted as lost (reason upgrade)"),
            "{}",
            s.stderr
        );
        // ... neither counters nor buffer of the other layout were taken
        // over, and what it translated is what its counters could not see.
        let summary = s.summary();
        assert_eq!(u(&summary, "events_before"), 0, "{summary}");
        let (records, first, last) = upgrade_translated(s);
        assert!(records > 0, "the gap's records were in the old buffer");
        assert_eq!(u(&summary, "seen_upgrade"), records, "{summary}");
        // The old buffer comes first. Its numbers need not be one run: a
        // hook not yet swapped writes there while a swapped one writes to
        // the new buffer.
        let firsts: Vec<u64> = s.events.iter().take(records as usize).map(seq).collect();
        assert_eq!(firsts.iter().min(), Some(&first), "old buffer first");
        assert_eq!(firsts.iter().max(), Some(&last), "old buffer first");
    }

    // Every exec of the loop exactly once, one sequence with no gap.
    assert_each_exec_once(&[&a, &b, &c], &m, n);
    assert_sequence_contiguous(&[&a, &b, &c]);
    pins.detach_frees(&ids);
}

/// The last build with one ring buffer shared by every CPU (before a ring
/// buffer per CPU), built from this repository's history in a target
/// directory of its own.
const SINGLE_RING_COMMIT: &str = "927180f";

fn single_ring_build() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = manifest.join("target/single-ring-src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).unwrap();
    let archive = Command::new("git")
        .args([
            "-C",
            manifest.to_str().unwrap(),
            "archive",
            SINGLE_RING_COMMIT,
        ])
        .output()
        .expect("run git");
    assert!(
        archive.status.success(),
        "this test builds commit {SINGLE_RING_COMMIT} and needs it in the repository's history (a full clone): {}",
        String::from_utf8_lossy(&archive.stderr)
    );
    let mut tar = Command::new("tar")
        .args(["-x", "-C", src.to_str().unwrap()])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run tar");
    std::io::Write::write_all(&mut tar.stdin.take().unwrap(), &archive.stdout).unwrap();
    assert!(
        tar.wait().unwrap().success(),
        "unpacking {SINGLE_RING_COMMIT}"
    );
    build_execwatch(&src, &[], "execwatch-single-ring")
}

#[test]
#[ignore = "builds an earlier execwatch (slow): scripts/test runs it with --ignored"]
fn an_upgrade_from_the_single_ring_build_reads_its_buffer_and_loses_nothing() {
    let old = single_ring_build();
    let pins = PinDir::new("single");
    let m = marker("single");
    let start_old = || Daemon::start_bin(&old, &pins.args(&[]));
    let start = || Daemon::start(&pins.args(&[]));
    let HandedOver {
        outputs: [a, b],
        ids,
        n,
    } = through_daemons(&m, [&start_old, &start], Daemon::stop);
    assert!(b.status.success(), "{}", b.stderr);
    // Its one ring buffer, read before the rings per CPU.
    assert!(
        b.stderr
            .contains("draining the previous execwatch's ring buffer first"),
        "{}",
        b.stderr
    );
    let (sa, sb) = (a.summary(), b.summary());
    assert_eq!(u(&sb, "lost_total"), 0, "{sb}");
    assert_eq!(u(&sb, "events_before"), u(&sa, "events"), "{sb}");
    assert_accounting(&sb);
    assert_each_exec_once(&[&a, &b], &m, n);
    assert_sequence_contiguous(&[&a, &b]);
    pins.detach_frees(&ids);
}

#[test]
fn a_new_ring_buffer_size_drains_the_old_buffer_first_and_decodes_it() {
    let pins = PinDir::new("resize");
    let m = marker("resize");
    let start = || Daemon::start(&pins.args(&[]));
    // Same layout, another size: counters and sequence kept, the old
    // buffer read to its end before the new one.
    let start_resized = || Daemon::start(&pins.args(&["--ring-buffer-size", "16MiB"]));
    let HandedOver {
        outputs: [a, b],
        ids,
        n,
    } = through_daemons(&m, [&start, &start_resized], Daemon::stop);
    assert!(b.status.success(), "{}", b.stderr);
    assert!(
        b.stderr.contains(
            "draining the previous execwatch's ring buffer first (another size, same layout)"
        ),
        "{}",
        b.stderr
    );
    assert_each_exec_once(&[&a, &b], &m, n);
    assert_sequence_contiguous(&[&a, &b]);
    let (sa, sb) = (a.summary(), b.summary());
    assert_eq!(u(&sb, "lost_total"), 0, "{sb}");
    assert_eq!(
        u(&sb, "events_before"),
        u(&sa, "events"),
        "counters kept: {sb}"
    );
    assert_accounting(&sb);
    pins.detach_frees(&ids);
}

/// While no daemon runs, the kept ring buffer fills and the kernel counts
/// what it drops: the next daemon reports those losses, and its summary and
/// the sequence numbers account for every exec.
#[test]
fn ring_buffer_losses_while_no_daemon_runs_are_reported_by_the_next_one() {
    let pins = PinDir::new("gapfull");
    let m = marker("gapfull");
    // The smallest buffers that hold one largest record.
    let ring = common::small_ring();
    let small = ["--ring-buffer-size", ring.as_str()];
    let a = Daemon::start(&pins.args(&small));
    let exec = |i: u64, more: &str| {
        assert!(run_quiet(
            Command::new("/bin/true")
                .arg(&m)
                .arg(i.to_string())
                .arg(more)
        )
        .success());
    };
    for i in 0..5 {
        exec(i, "");
    }
    a.wait_for(5, Duration::from_secs(20), |v| has_arg(v, &m));
    let a = a.stop();
    assert!(a.status.success(), "{}", a.stderr);

    // About 4 KiB of arguments each: 200 of them are far more than 64 KiB.
    const N: u64 = 200;
    let big = "x".repeat(4000);
    for i in 5..N {
        exec(i, &big);
    }

    let b = Daemon::start(&pins.args(&small));
    let ids = bpf_ids(b.pid());
    // The first loss check reports what was dropped while none ran.
    b.wait_for_stderr("the ring buffer was full", Duration::from_secs(20));
    // One exec after the losses, delivered: its number closes the span, so
    // the numbers lost while none ran are gaps inside it even on a host
    // where nothing else execs before the stop.
    let after = marker("gapfull-after");
    assert!(run_quiet(Command::new("/bin/true").arg(&after)).success());
    b.wait_for(1, Duration::from_secs(20), |v| has_arg(v, &after));
    let b = b.stop();
    assert!(b.status.success(), "{}", b.stderr);
    let warning = b.diagnostic("loss warning", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("exec events lost"))
    });
    assert!(u(&warning, "lost_ringbuf_full") > 0, "{warning}");

    let sb = b.summary();
    let lost = u(&sb, "lost_ringbuf_full");
    assert!(lost > 0, "{sb}");
    assert_eq!(
        u(&sb, "lost_total"),
        lost,
        "only the full buffer lost: {sb}"
    );
    assert_eq!(u(&sb, "events_before"), u(&a.summary(), "events"), "{sb}");
    assert_accounting(&sb);

    // Nothing twice; the loop's missing execs are among the counted losses,
    // and so are the gaps in the sequence (a lost record's number is skipped).
    let per_index = times_delivered(&[&a, &b], &m, N);
    assert!(per_index.iter().all(|&k| k <= 1), "an exec delivered twice");
    let missing = per_index.iter().filter(|&&k| k == 0).count() as u64;
    let mut seqs: Vec<u64> = [&a, &b]
        .iter()
        .flat_map(|o| o.events.iter().map(seq))
        .collect();
    let delivered = seqs.len() as u64;
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len() as u64, delivered, "a sequence number twice");
    let span = seqs.last().unwrap() - seqs[0] + 1;
    let gaps = span - delivered;
    assert!(missing > 0, "the buffer overflowed");
    assert!(
        missing <= gaps && gaps <= lost,
        "{missing} loop execs missing, {gaps} sequence numbers missing, {lost} counted lost"
    );
    pins.detach_frees(&ids);
}

/// A stop while the previous buffer is being read into an output nobody
/// reads: the daemon still ends within the drain timeout, and every record
/// of that buffer it could not write is counted.
#[test]
fn sigterm_while_the_previous_buffer_drains_into_a_stalled_output_ends_in_time() {
    let pins = PinDir::new("prevstop");
    let m = marker("prevstop");
    Daemon::start(&pins.args(&[])).stop();
    // About 2.5 MB that nobody reads wait in the kept buffer: more than the
    // pipe and the output queue hold.
    let big = "x".repeat(4000);
    for _ in 0..600 {
        assert!(run_quiet(Command::new("/bin/true").arg(&m).arg(&big)).success());
    }
    let (mut out, w) = std::io::pipe().unwrap();
    let args = pins.args(&["--ring-buffer-size", "16MiB", "--drain-timeout", "1"]);
    let mut b = Spawned::start(&args, Stdio::from(w), &[]);
    b.wait_stderr(
        "draining the previous execwatch's ring buffer first",
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(500));
    let ids = bpf_ids(b.pid());
    let t0 = Instant::now();
    b.sigterm();
    let status = b.wait_exit(Duration::from_secs(20));
    let took = t0.elapsed();
    assert!(status.success(), "{status}: {}", b.stderr());
    assert!(
        took < Duration::from_secs(4),
        "SIGTERM to exit took {took:?} with --drain-timeout 1"
    );
    let mut written = Vec::new();
    out.read_to_end(&mut written).unwrap();
    // With the pin dir, what is left in this daemon's own buffer (other
    // tests' execs) is pending, not lost: the accounting says so.
    let s = b.summary();
    assert_accounting(&s);
    assert!(u(&s, "lost_shutdown") > 0, "{s}");
    assert_eq!(u(&s, "events"), complete_lines(&written), "{s}");
    pins.detach_frees(&ids);
}

#[test]
fn bpffs_is_mounted_at_sys_fs_bpf_when_absent_and_the_daemon_says_so() {
    common::require_root();
    // A mount namespace of its own, where /sys/fs/bpf is surely empty: the
    // daemon mounts bpffs there, and it all goes with the namespace.
    let script = format!(
        "umount -l /sys/fs/bpf 2>/dev/null; \
         exec {} --format json --bpf-pin-dir /sys/fs/bpf/execwatch-test",
        common::BIN
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let d = Daemon::start_cmd(cmd);
    d.wait_for_stderr("mounted bpffs at /sys/fs/bpf", Duration::from_secs(10));
    let ids = bpf_ids(d.pid());
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // The pins went with the namespace's bpffs.
    assert_all_gone(&ids);
}

/// systemd's fd store too small for the objects (an older unit on a host
/// with many CPUs): the daemon says so and keeps nothing, so its stop
/// detaches everything instead of leaving programs attached for a store
/// that does not hold them.
#[test]
fn an_fd_store_too_small_for_the_objects_keeps_nothing_and_says_so() {
    let d = Daemon::start_with_stdout("json", &[], Stdio::piped(), &[("FDSTORE", "4")]);
    let ids = bpf_ids(d.pid());
    let stopped = d.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains("too many BPF objects for systemd's fd store"),
        "{}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("leaving the programs attached"),
        "{}",
        stopped.stderr
    );
    assert_all_gone(&ids);
}
